//! `preview --against manifests`: every host is assumed to be at base's desired state. The
//! assumption is an [`Observation`] made from a [`DesiredHost`], so the plan of a pull
//! request is built by exactly the code that plans real hosts (`plan::build`). Pure.

use std::collections::{BTreeMap, BTreeSet};

use crate::hoststate::{FileState, HostState, RuntimeState};
use crate::manifest::model::Pin;
use crate::observe::{Observation, ObservedFile, ObservedRuntime};
use crate::resolve::DesiredHost;

/// What a host would report had Flotilla applied `base` there: every pinned runtime installed
/// and active, every managed file with its content, mode, owner and group, and a `state.json`
/// of `fleet` written by `store_id` that lists them. A decommissioned host has nothing.
/// Content of `sensitive` files is left out, as a probe would leave it out. `None` for a host
/// that base does not name: it is assumed empty (a new host).
pub fn observation(base: Option<&DesiredHost>, fleet: &str, store_id: &str) -> Observation {
    let Some(d) = base else {
        return Observation::default();
    };
    let mut runtimes = BTreeMap::new();
    let mut files = BTreeMap::new();
    let mut state = HostState {
        format_version: 1,
        fleet: fleet.to_owned(),
        host: d.name.to_string(),
        revision: None,
        applied_at: String::new(),
        store_id: store_id.to_owned(),
        epoch: 0,
        runtimes: BTreeMap::new(),
        files: BTreeMap::new(),
        pending: None,
    };
    if !d.decommission {
        for (name, pin) in &d.runtimes {
            let Pin::Version(v) = &pin.value else { continue };
            runtimes.insert(
                name.to_string(),
                ObservedRuntime {
                    versions: BTreeSet::from([v.to_string()]),
                    current: Some(v.to_string()),
                },
            );
            state.runtimes.insert(
                name.to_string(),
                RuntimeState {
                    active: v.to_string(),
                    previous: None,
                    sha256: String::new(),
                },
            );
        }
        for (path, f) in &d.files {
            let f = &f.value;
            let mode = Some(f.mode);
            files.insert(
                path.clone(),
                ObservedFile::Regular {
                    sha256: f.sha256.clone(),
                    mode,
                    owner: f.owner.clone(),
                    group: f.group.clone(),
                    size: f.content.len() as u64,
                    content: (!f.sensitive).then(|| f.content.to_vec()),
                },
            );
            state.files.insert(
                path.to_string(),
                FileState {
                    sha256: f.sha256.clone(),
                    mode: f.mode,
                    owner: f.owner.clone(),
                    group: f.group.clone(),
                    took_over: false,
                },
            );
        }
    }
    Observation {
        state: Some(state),
        runtimes,
        files,
        ..Observation::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Action, HostInput, Kind, PlanInput};

    fn load(env: &str) -> crate::load::LoadedFleet {
        let files = [
            (
                "flotilla.toml",
                "[fleet]\nname = \"t\"\n[defaults]\ntransport = \"local\"\n",
            ),
            ("environments/prod.toml", env),
            (
                "hosts/h.toml",
                "[[host]]\nname = \"a\"\nenvironment = \"prod\"\nroot = \"r/a\"\n",
            ),
            (
                "runtimes/app.toml",
                "[[version]]\nversion = \"1\"\nartifact = \"https://x.invalid/1.tgz\"\nsha256 = \"1111111111111111111111111111111111111111111111111111111111111111\"\n[[version]]\nversion = \"2\"\nartifact = \"https://x.invalid/2.tgz\"\nsha256 = \"2222222222222222222222222222222222222222222222222222222222222222\"\n",
            ),
        ];
        crate::load::testing::load_files(&files)
    }

    fn plan(base: &str, head: &str) -> crate::plan::Plan {
        let (base, head) = (load(base), load(head));
        let obs = observation(base.desired.first(), "t", "s");
        let now = jiff::Timestamp::UNIX_EPOCH;
        crate::plan::build(&PlanInput {
            fleet: &head.fleet,
            revision: None,
            hosts: vec![HostInput {
                desired: &head.desired[0],
                observed: Ok(&obs),
                refused: None,
                take_over: false,
            }],
            at: now,
            observed_at: now,
            all_desired: &head.desired,
            promotions: &[],
            halts: &Default::default(),
        })
    }

    const FILE: &str = "[[file]]\npath = \"/etc/x\"\ncontent = \"a\\nb\\n\"\n";

    #[test]
    fn a_host_at_base_has_nothing_to_change_when_head_is_the_same() {
        let env = format!("[runtimes]\napp = \"1\"\n{FILE}");
        let p = plan(&env, &env);
        assert!(p.hosts[0].changes.is_empty(), "{:?}", p.hosts[0].changes);
    }

    #[test]
    fn head_against_base_gives_upgrades_diffs_and_removals() {
        let base = format!("[runtimes]\napp = \"1\"\n{FILE}");
        let head =
            "[runtimes]\napp = \"2\"\n[[file]]\npath = \"/etc/x\"\ncontent = \"a\\nc\\n\"\nmode = \"0600\"\n";
        let c = &plan(&base, head).hosts[0].changes;
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].kind, c[0].action), (Kind::Runtime, Action::Update));
        assert_eq!(c[0].before.as_deref(), Some("1"));
        let diff = c[1].diff.as_deref().unwrap();
        assert!(diff.contains("-b\n+c\n"), "{diff}");
        assert!(
            c[1].notes.iter().any(|n| n == "mode 0644 -> 0600"),
            "{:?}",
            c[1].notes
        );
        let gone = &plan(&base, "").hosts[0].changes;
        assert!(
            gone.iter().all(|c| c.action == Action::Delete) && gone.len() == 2,
            "{gone:?}"
        );
    }

    #[test]
    fn a_host_new_in_head_installs_everything() {
        let obs = observation(None, "t", "s");
        assert!(obs.state.is_none() && obs.runtimes.is_empty() && obs.files.is_empty());
    }
}
