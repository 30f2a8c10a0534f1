//! The settings `watch` never changes on its own (DESIGN §10): `[trust]`, how hosts are
//! reached (transport, address, port, user, identity, known_hosts, become, root) and what runs
//! on them (hooks, `on_change`, health checks). A person's apply records their digests per
//! environment ([`crate::store::Approval`]); `watch` applies an environment unattended only
//! while they are unchanged, so a merged commit cannot point the controller's credentials at
//! new machines or run new commands as root without someone running `flotilla apply`.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::manifest::model::Fleet;
use crate::resolve::{DesiredHost, sha256_hex};
use crate::store::Approval;

/// The three digests of one environment's guarded settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Guarded {
    pub trust: String,
    pub connection: String,
    pub commands: String,
}

impl Guarded {
    /// Computes them for `env` from the fleet and its hosts' desired state.
    pub fn of(fleet: &Fleet, desired: &[DesiredHost], env: &str) -> Guarded {
        let mut trust = format!("require_signatures={}\n", fleet.trust.require_signatures);
        let mut keys = fleet.trust.keys.clone();
        keys.sort();
        for k in keys {
            let _ = writeln!(trust, "key {k}");
        }
        let hosts: Vec<&DesiredHost> = desired.iter().filter(|d| d.environment.as_str() == env).collect();
        let mut connection = String::new();
        let mut commands = String::new();
        let mut runtimes = BTreeSet::new();
        for h in &hosts {
            let s = &h.settings;
            // Debug forms: exact and unambiguous (strings quoted and escaped).
            let _ = writeln!(
                connection,
                "{:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?} {:?}",
                h.name.as_str(),
                h.address,
                s.transport.value,
                s.port.value,
                s.user.value,
                s.become_.value,
                s.root.value,
                s.identity_file.value,
                s.known_hosts.value,
            );
            for (path, f) in &h.files {
                if let Some(cmd) = &f.value.on_change {
                    let _ = writeln!(
                        commands,
                        "on_change {:?} {:?} {cmd:?}",
                        h.name.as_str(),
                        path.as_str()
                    );
                }
            }
            runtimes.extend(h.runtimes.keys().map(|r| r.as_str().to_owned()));
        }
        for name in runtimes {
            let Some(rt) = fleet
                .runtimes
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, r)| r)
            else {
                continue;
            };
            let _ = writeln!(
                commands,
                "runtime {name:?} activate {:?} remove {:?} health {:?}",
                rt.hooks.activate,
                rt.hooks.remove,
                rt.health.as_ref().map(|h| &h.command)
            );
        }
        if let Some(e) = fleet
            .environments
            .iter()
            .find(|(n, _)| n.as_str() == env)
            .map(|(_, e)| e)
        {
            let _ = writeln!(commands, "health_command {:?}", e.rollout.health_command);
        }
        Guarded {
            trust: sha256_hex(trust.as_bytes()),
            connection: sha256_hex(connection.as_bytes()),
            commands: sha256_hex(commands.as_bytes()),
        }
    }

    /// What changed since `approved` (None: nothing), as the operator reads it:
    /// "\[trust\] and commands changed since a person last applied staging (alice@ops1, …)".
    pub fn unapproved(&self, env: &str, approved: Option<&Approval>) -> Option<String> {
        let Some(a) = approved else {
            return Some(format!(
                "no person has applied {env} yet: its connection settings and commands wait for `flotilla apply --env {env}`"
            ));
        };
        let changed: Vec<&str> = [
            ("[trust]", a.trust != self.trust),
            ("connection settings", a.connection != self.connection),
            ("commands (hooks, on_change, health)", a.commands != self.commands),
        ]
        .into_iter()
        .filter_map(|(what, differs)| differs.then_some(what))
        .collect();
        if changed.is_empty() {
            return None;
        }
        Some(format!(
            "{} changed since a person last applied {env} ({}, {}): waits for `flotilla apply --env {env}`",
            changed.join(" and "),
            a.actor,
            a.at.strftime("%Y-%m-%d %H:%M UTC")
        ))
    }

    /// The record a person's apply writes.
    pub fn approval(&self, revision: Option<&str>, actor: &str, at: jiff::Timestamp) -> Approval {
        Approval {
            trust: self.trust.clone(),
            connection: self.connection.clone(),
            commands: self.commands.clone(),
            revision: revision.map(str::to_owned),
            actor: actor.to_owned(),
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::load::testing::load_files as load;

    const FLEET: &str =
        "[fleet]\nname = \"t\"\n[defaults]\ntransport = \"local\"\n[trust]\nrequire_signatures = false\n";
    const HOSTS: &str = "[[host]]\nname = \"a\"\nenvironment = \"prod\"\nroot = \"r/a\"\n";

    fn guarded(env_toml: &str, hosts: &str, fleet: &str) -> Guarded {
        let l = load(&[
            ("flotilla.toml", fleet),
            ("environments/prod.toml", env_toml),
            ("hosts/h.toml", hosts),
        ]);
        Guarded::of(&l.fleet, &l.desired, "prod")
    }

    #[test]
    fn a_content_change_is_not_guarded_but_commands_connections_and_trust_are() {
        let base = guarded("[[file]]\npath = \"/etc/x\"\ncontent = \"1\"\n", HOSTS, FLEET);
        let content = guarded("[[file]]\npath = \"/etc/x\"\ncontent = \"2\"\n", HOSTS, FLEET);
        assert_eq!(base, content, "file content is what watch is for");
        let on_change = guarded(
            "[[file]]\npath = \"/etc/x\"\ncontent = \"1\"\non_change = \"reboot\"\n",
            HOSTS,
            FLEET,
        );
        assert_ne!(base.commands, on_change.commands);
        assert_eq!(base.connection, on_change.connection);
        let root = guarded(
            "[[file]]\npath = \"/etc/x\"\ncontent = \"1\"\n",
            &HOSTS.replace("r/a", "r/b"),
            FLEET,
        );
        assert_ne!(base.connection, root.connection);
        let trust = guarded(
            "[[file]]\npath = \"/etc/x\"\ncontent = \"1\"\n",
            HOSTS,
            &FLEET.replace("false", "true"),
        );
        assert_ne!(base.trust, trust.trust);
        assert_eq!(base.commands, trust.commands);
    }

    #[test]
    fn unapproved_names_what_changed_and_who_applied_last() {
        let g = guarded("", HOSTS, FLEET);
        let at: jiff::Timestamp = "2026-12-01T09:00:00Z".parse().unwrap();
        assert!(
            g.unapproved("prod", None)
                .unwrap()
                .contains("no person has applied prod yet")
        );
        let same = g.approval(Some("abc"), "alice@ops1", at);
        assert_eq!(g.unapproved("prod", Some(&same)), None);
        let mut old = same.clone();
        old.commands = "x".into();
        old.trust = "y".into();
        let why = g.unapproved("prod", Some(&old)).unwrap();
        assert!(
            why.starts_with("[trust] and commands (hooks, on_change, health) changed"),
            "{why}"
        );
        assert!(why.contains("alice@ops1, 2026-12-01 09:00 UTC"), "{why}");
    }
}
