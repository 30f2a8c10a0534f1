//! What watch remembers of each host's files between drift checks, so that an unchanged
//! file is not hashed again (the rule is in probe.sh, next to the hashing it skips).

use std::collections::BTreeMap;

use super::{Observation, ObservedFile};
use crate::manifest::model::HostPath;

/// What the last probe of each host saw of its files, kept by a long-running caller (watch)
/// across drift checks: the next probe sends each file's sha256 and identity, and the host
/// hashes the file again only if its identity changed (probe.sh has the rule). A one-shot
/// `plan` or `apply` has none, and hashes every file.
/// How long what a probe saw may spare later probes the hashing: every file is hashed at
/// least this often, whatever its identity says (a write through a shared mapping may leave a
/// file's ctime as it was; see probe.sh).
const MAX_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

#[derive(Debug, Default)]
pub struct Memo {
    hosts: std::sync::Mutex<std::collections::HashMap<String, Seen>>,
}

#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// When the controller kept it: older than [`MAX_AGE`], it is not used.
    taken: std::time::Instant,
    /// The host's clock when it hashed the files.
    pub(super) clock: i64,
    /// sha256 and identity of each regular file.
    pub(super) files: BTreeMap<HostPath, (String, String)>,
}

impl Memo {
    pub fn new() -> Memo {
        Memo::default()
    }

    pub(super) fn seen(&self, host: &str) -> Option<Seen> {
        self.lock()
            .get(host)
            .filter(|s| s.taken.elapsed() < MAX_AGE)
            .cloned()
    }

    /// Keeps what `obs` saw of `host`'s files; forgets the host when `obs` is `None` (a failed
    /// probe) or has no clock.
    pub(super) fn remember(&self, host: &str, obs: Option<&Observation>) {
        let seen = obs.and_then(|o| {
            let files = o
                .file_keys
                .iter()
                .filter_map(|(p, key)| match o.files.get(p) {
                    Some(ObservedFile::Regular { sha256, .. }) => {
                        Some((p.clone(), (sha256.clone(), key.clone())))
                    }
                    _ => None,
                })
                .collect();
            Some(Seen {
                taken: std::time::Instant::now(),
                clock: o.clock?,
                files,
            })
        });
        let mut hosts = self.lock();
        match seen {
            Some(s) => hosts.insert(host.to_owned(), s),
            None => hosts.remove(host),
        };
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Seen>> {
        self.hosts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::super::{PROBE, parse};
    use crate::manifest::model::HostPath;

    /// Runs the probe with the real `sh`, `stat` and `sha256sum` over `root`, one request line.
    fn probe(root: &std::path::Path, request: &str) -> super::Observation {
        probe_with_path(root, request, None)
    }

    /// [`probe`], with `bin` first on the probe's `PATH`.
    fn probe_with_path(
        root: &std::path::Path,
        request: &str,
        bin: Option<&std::path::Path>,
    ) -> super::Observation {
        use std::io::Write as _;
        let mut cmd = std::process::Command::new("sh");
        if let Some(bin) = bin {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![bin.to_path_buf()];
            dirs.extend(std::env::split_paths(&path));
            cmd.env("PATH", std::env::join_paths(dirs).unwrap());
        }
        let mut child = cmd
            .args(["-c", PROBE])
            .env("FLOTILLA_ROOT", root)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("sh");
        child.stdin.take().unwrap().write_all(request.as_bytes()).unwrap();
        let out = child.wait_with_output().expect("probe");
        let path = HostPath::new("/etc/app.conf").unwrap();
        parse(&out.stdout, &[&path]).expect("well-formed")
    }

    /// Whether this test runs as root (it may then hand the file to another user).
    fn nix_is_root() -> bool {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(2) == Some("0"))
            })
            .unwrap_or(false)
    }

    fn sha_of(o: &super::Observation) -> String {
        match o.files.values().next() {
            Some(super::ObservedFile::Regular { sha256, .. }) => sha256.clone(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_unchanged_file_is_not_hashed_again_unless_it_changed_or_was_racily_clean() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        let file = root.path().join("etc/app.conf");
        std::fs::write(&file, "x = 1\n").unwrap();
        let real = crate::resolve::sha256_hex(b"x = 1\n");
        let first = probe(root.path(), "S /etc/app.conf\n");
        assert_eq!(sha_of(&first), real);
        let key = first
            .file_keys
            .values()
            .next()
            .expect("the probe reports the file's identity")
            .clone();
        let now = jiff::Timestamp::now().as_second();
        // A stand-in digest the host can only report if it did not read the file.
        let remembered = "ab".repeat(32);

        // Same identity, hashed long after its last change: taken as it was.
        let o = probe(
            root.path(),
            &format!("I {} {remembered} {key} /etc/app.conf\n", now + 100),
        );
        assert_eq!(sha_of(&o), remembered, "an unchanged file is not read again");
        assert_eq!(o.file_keys.values().next(), Some(&key));

        // Same identity, but the earlier probe ran within two seconds of the file's change (a
        // write in the same clock tick could have kept its ctime): read again.
        let o = probe(
            root.path(),
            &format!("I {now} {remembered} {key} /etc/app.conf\n"),
        );
        assert_eq!(sha_of(&o), real, "a racily clean file is hashed again");

        // Any write changes the identity: read again, whatever the memory says.
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(&file, "x = 2\n").unwrap();
        let o = probe(
            root.path(),
            &format!("I {} {remembered} {key} /etc/app.conf\n", now + 100),
        );
        assert_eq!(sha_of(&o), crate::resolve::sha256_hex(b"x = 2\n"));
        assert_ne!(o.file_keys.values().next(), Some(&key));

        // Only files no one but root (or the probe's own user) can write are spared: a write
        // through a shared mapping may leave the ctime as it was.
        let key_now = |o: &super::Observation| o.file_keys.values().next().cloned().expect("key");
        let hint = |key: &str| format!("I {} {remembered} {key} /etc/app.conf\n", now + 100);
        let x2 = crate::resolve::sha256_hex(b"x = 2\n");
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let k = key_now(&probe(root.path(), "S /etc/app.conf\n"));
        assert_eq!(
            sha_of(&probe(root.path(), &hint(&k))),
            x2,
            "group-writable: hashed"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(root.path().join("etc"), std::fs::Permissions::from_mode(0o777)).unwrap();
        let k = key_now(&probe(root.path(), "S /etc/app.conf\n"));
        assert_eq!(
            sha_of(&probe(root.path(), &hint(&k))),
            x2,
            "in a world-writable directory: hashed"
        );
        std::fs::set_permissions(root.path().join("etc"), std::fs::Permissions::from_mode(0o755)).unwrap();
        if nix_is_root() {
            std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
            let k = key_now(&probe(root.path(), "S /etc/app.conf\n"));
            assert_eq!(
                sha_of(&probe(root.path(), &hint(&k))),
                x2,
                "another user's file: hashed"
            );
            std::os::unix::fs::chown(&file, Some(0), None).unwrap();
        }
        let k = key_now(&probe(root.path(), "S /etc/app.conf\n"));
        assert_eq!(
            sha_of(&probe(root.path(), &hint(&k))),
            remembered,
            "back to root's alone: spared"
        );

        // Malformed memories are ignored, never trusted.
        for bad in [
            format!("I {} {} {k} /etc/app.conf\n", now + 100, "zz".repeat(32)),
            format!("I x{} {remembered} {k} /etc/app.conf\n", now + 100),
            format!("I {} short {k} /etc/app.conf\n", now + 100),
        ] {
            let o = probe(root.path(), &bad);
            assert_eq!(sha_of(&o), crate::resolve::sha256_hex(b"x = 2\n"), "{bad}");
        }
    }

    /// A directory holding a `stat` that runs the real one and pipes its output through
    /// `filter` (a shell command; `stat` fails when the filter does).
    fn fake_stat(filter: &str) -> tempfile::TempDir {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = tempfile::tempdir().unwrap();
        let fake = bin.path().join("stat");
        let real = ["/usr/bin/stat", "/bin/stat"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("coreutils stat");
        std::fs::write(&fake, format!("#!/bin/sh\n{real} \"$@\" | {filter}\n")).unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        bin
    }

    /// A name with a newline (directory services allow one) adds a line to `stat`'s output
    /// and would shift every number after it; a `stat` that fails (the file went away after
    /// the probe saw it) leaves nothing to read. Either way the file is reported for what it
    /// is and the host's observation parses (`probe` expects it to): no number is read from
    /// the wrong line, nothing is hashed on trust, and no malformed record fails the host.
    #[test]
    fn a_name_with_a_newline_or_a_failing_stat_costs_the_file_not_the_host() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/app.conf"), "x = 1\n").unwrap();
        for (filter, why) in [
            (
                "awk 'NR == 2 { print \"jane\"; print \"644 0\"; next } { print }'",
                "owner or group name",
            ),
            ("awk 'END { exit 1 }'", "changed while it was read"),
        ] {
            let bin = fake_stat(filter);
            let o = probe_with_path(root.path(), "S /etc/app.conf\n", Some(bin.path()));
            match o.files.values().next() {
                Some(super::ObservedFile::Other { what }) => assert!(what.contains(why), "{filter}: {what}"),
                other => panic!("{filter}: {other:?}"),
            }
        }
    }

    /// Host user and group names may hold spaces (directory services: "domain users", "jane
    /// doe"). Reported on a line each, an owner's name with a space is unknown and shifts
    /// neither the group's name nor the numbers. The names come from the real `stat`,
    /// rewritten on their way out: no such user can be made here without editing
    /// /etc/passwd.
    #[test]
    fn an_owner_name_with_a_space_is_unknown_and_shifts_nothing() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/app.conf"), "x = 1\n").unwrap();
        let plain = probe(root.path(), "S /etc/app.conf\n");
        let (owner, group) = match plain.files.values().next() {
            Some(super::ObservedFile::Regular { owner, group, .. }) => (owner.clone(), group.clone()),
            other => panic!("{other:?}"),
        };
        assert!(owner.is_some() && group.is_some(), "{owner:?} {group:?}");

        // `stat` whose owner names (the second line of each path's three) have a space.
        let bin = fake_stat("awk 'NR % 3 == 2 { print \"jane doe\"; next } { print }'");
        let o = probe_with_path(root.path(), "S /etc/app.conf\n", Some(bin.path()));
        match o.files.values().next() {
            Some(super::ObservedFile::Regular {
                sha256,
                owner: seen_owner,
                group: seen_group,
                size,
                mode,
                ..
            }) => {
                assert_eq!(sha256, &crate::resolve::sha256_hex(b"x = 1\n"));
                assert_eq!(
                    seen_owner, &None,
                    "an owner with a space is unknown, not \"jane\""
                );
                assert_eq!(seen_group, &group, "the group's name is not shifted");
                assert_eq!((*size, *mode), (6, Some(0o644)));
            }
            other => panic!("{other:?}"),
        }
    }
}
