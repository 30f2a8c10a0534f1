//! Room on the host (DESIGN §5, §6.1): whether a host has the free space its installs need.
//! A transaction uploads each artifact it installs into `<state_dir>/staging/` and unpacks it
//! into `<runtimes_dir>/<runtime>/`, all before the first change, so a host needs the uploads'
//! bytes free where the state lives and the unpacked bytes free where runtimes unpack — their
//! sum when both are on one filesystem. The plan warns about a host that lacks it; apply
//! refuses that host before uploading anything.
//!
//! Free space is what the probe saw, and sizes are what the controller's inspection counted
//! (regular files' bytes; blocks, directories and inodes take a little more), so this catches
//! the host that cannot fit the artifact at all. Space used up after the probe still makes the
//! unpack fail on the host, and then the transaction says so and leaves nothing behind.

use std::collections::BTreeMap;

use crate::artifact::ArtifactSize;
use crate::observe::Observation;
use crate::plan::{Action, Change, Kind};
use crate::resolve::DesiredHost;

/// (runtime, version) → the artifact's sizes, for the artifacts whose sizes are known.
pub type ArtifactSizes = BTreeMap<(String, String), ArtifactSize>;

/// Why `desired` lacks room for the artifacts its `changes` install, or `None`: there is room,
/// nothing is installed, or the free space or every size is unknown. Only versions the host
/// does not have yet count (switching to one already unpacked needs no room).
pub fn shortfall(
    desired: &DesiredHost,
    observed: &Observation,
    changes: &[Change],
    sizes: &ArtifactSizes,
) -> Option<String> {
    let free = observed.free_space?;
    let installs: Vec<(&str, &str, ArtifactSize)> = changes
        .iter()
        .filter(|c| c.kind == Kind::Runtime && matches!(c.action, Action::Create | Action::Update))
        .filter_map(|c| {
            let v = c.after.as_deref()?;
            let have = observed
                .runtimes
                .get(&c.name)
                .is_some_and(|r| r.versions.contains(v));
            let size = sizes.get(&(c.name.clone(), v.to_owned()))?;
            (!have).then_some((c.name.as_str(), v, *size))
        })
        .collect();
    if installs.is_empty() {
        return None;
    }
    let upload: u64 = installs
        .iter()
        .map(|(_, _, s)| s.upload)
        .fold(0, u64::saturating_add);
    let unpacked: u64 = installs
        .iter()
        .map(|(_, _, s)| s.unpacked)
        .fold(0, u64::saturating_add);
    let what = installs
        .iter()
        .map(|(rt, v, _)| format!("{rt} {v}"))
        .collect::<Vec<_>>()
        .join(", ");
    let what = format!("runtime{} {what}", if installs.len() == 1 { "" } else { "s" });
    let s = &desired.settings;
    let (runtimes_dir, state_dir) = (&s.runtimes_dir.value, &s.state_dir.value);
    let host = desired.name.as_str();
    let fix = "free space there or make the artifact smaller";
    if free.shared {
        let need = upload.saturating_add(unpacked);
        return (need > free.runtimes).then(|| {
            format!(
                "host {host} has {} free in {runtimes_dir}, needs {} for {what} ({} upload into {state_dir}/staging and {} unpacked, one filesystem); {fix}",
                mib_down(free.runtimes),
                mib_up(need),
                mib_up(upload),
                mib_up(unpacked),
            )
        });
    }
    if unpacked > free.runtimes {
        return Some(format!(
            "host {host} has {} free in {runtimes_dir}, needs {} for {what} (unpacked); {fix}",
            mib_down(free.runtimes),
            mib_up(unpacked),
        ));
    }
    (upload > free.state).then(|| {
        format!(
            "host {host} has {} free in {state_dir}, needs {} for {what} (the upload into {state_dir}/staging); {fix}",
            mib_down(free.state),
            mib_up(upload),
        )
    })
}

const MIB: u64 = 1 << 20;

/// Free space, rounded down: never claims more room than there is.
fn mib_down(bytes: u64) -> String {
    format!("{} MiB", bytes / MIB)
}

/// Space needed, rounded up: never claims less than is needed.
fn mib_up(bytes: u64) -> String {
    format!("{} MiB", bytes.div_ceil(MIB))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{FreeSpace, ObservedRuntime};

    fn host() -> DesiredHost {
        let dir = tempfile::tempdir().unwrap();
        let w = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        w(
            "flotilla.toml",
            "[fleet]\nname = \"f\"\n[defaults]\ntransport = \"local\"\n",
        );
        w("environments/prod.toml", "[runtimes]\nbig = \"1.0.0\"\n");
        w(
            "runtimes/big.toml",
            &format!(
                "[[version]]\nversion = \"1.0.0\"\nartifact = \"https://example.invalid/a.tgz\"\nsha256 = \"{}\"\n",
                "1".repeat(64)
            ),
        );
        w(
            "hosts/h.toml",
            "[[host]]\nname = \"h1\"\nenvironment = \"prod\"\nroot = \"r\"\n",
        );
        let repo = crate::repo::FleetRepo::open(dir.path(), None).unwrap();
        crate::load::load(&repo).unwrap().desired.remove(0)
    }

    fn install(v: &str) -> Change {
        Change {
            action: Action::Create,
            kind: Kind::Runtime,
            name: "big".into(),
            before: None,
            after: Some(v.into()),
            diff: None,
            drift: false,
            notes: Vec::new(),
            template: None,
        }
    }

    fn sizes(upload: u64, unpacked: u64) -> ArtifactSizes {
        [(
            ("big".to_owned(), "1.0.0".to_owned()),
            ArtifactSize { upload, unpacked },
        )]
        .into_iter()
        .collect()
    }

    fn observed(runtimes: u64, state: u64, shared: bool) -> Observation {
        Observation {
            free_space: Some(FreeSpace {
                runtimes,
                state,
                shared,
                runtimes_used_percent: None,
            }),
            ..Observation::default()
        }
    }

    #[test]
    fn one_filesystem_must_hold_the_upload_and_the_unpacked_files_together() {
        let d = host();
        let thirty = sizes(30 * MIB, 30 * MIB);
        let why = shortfall(
            &d,
            &observed(40 * MIB, 40 * MIB, true),
            &[install("1.0.0")],
            &thirty,
        )
        .expect("60 MiB do not fit in 40");
        assert_eq!(
            why,
            "host h1 has 40 MiB free in /opt/flotilla/runtimes, needs 60 MiB for runtime big 1.0.0 (30 MiB upload into /var/lib/flotilla/staging and 30 MiB unpacked, one filesystem); free space there or make the artifact smaller"
        );
        // On two filesystems each holds its own part.
        assert_eq!(
            shortfall(
                &d,
                &observed(40 * MIB, 40 * MIB, false),
                &[install("1.0.0")],
                &thirty
            ),
            None
        );
        let why = shortfall(
            &d,
            &observed(40 * MIB, 10 * MIB, false),
            &[install("1.0.0")],
            &thirty,
        )
        .unwrap();
        assert!(
            why.starts_with("host h1 has 10 MiB free in /var/lib/flotilla, needs 30 MiB"),
            "{why}"
        );
        let why = shortfall(
            &d,
            &observed(MIB / 2, 40 * MIB, false),
            &[install("1.0.0")],
            &thirty,
        )
        .unwrap();
        assert!(
            why.starts_with("host h1 has 0 MiB free in /opt/flotilla/runtimes, needs 30 MiB"),
            "{why}"
        );
    }

    #[test]
    fn no_warning_without_an_install_a_size_or_a_free_space_figure() {
        let d = host();
        let thirty = sizes(30 * MIB, 30 * MIB);
        let full = observed(0, 0, true);
        // Unknown free space, unknown size, a version already on the host: nothing to say.
        assert_eq!(
            shortfall(&d, &Observation::default(), &[install("1.0.0")], &thirty),
            None
        );
        assert_eq!(shortfall(&d, &full, &[install("2.0.0")], &thirty), None);
        let mut has = full.clone();
        has.runtimes.insert(
            "big".into(),
            ObservedRuntime {
                versions: ["1.0.0".to_owned()].into_iter().collect(),
                current: None,
            },
        );
        assert_eq!(shortfall(&d, &has, &[install("1.0.0")], &thirty), None);
        let mut delete = install("1.0.0");
        delete.action = Action::Delete;
        assert_eq!(shortfall(&d, &full, &[delete], &thirty), None);
        // Sizes near u64::MAX saturate instead of overflowing.
        let huge = sizes(u64::MAX, u64::MAX);
        let almost = observed(u64::MAX - 1, u64::MAX - 1, true);
        assert!(shortfall(&d, &almost, &[install("1.0.0")], &huge).is_some());
    }
}
