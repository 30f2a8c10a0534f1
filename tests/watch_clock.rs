//! The watch loop on tokio's paused clock: when it wakes, without waiting for it. A fleet
//! without hosts keeps every cycle free of host processes (a child process is I/O that
//! tokio's auto-advance would skip time over), so what is tested is the loop itself: the
//! first cycle at once, then nothing until the drift check is due, however often the branch
//! is looked at, then a cycle right on time; and a new commit starts a cycle at once.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::TestFleet;
use flotilla::clock::Clock;
use flotilla::watch::{Follower, Note, Origin, Settings, Shared, Watch, WatchView};

/// Records each note with the (paused) time it was made at.
struct Notes {
    clock: Clock,
    seen: Mutex<Vec<(jiff::Timestamp, Note)>>,
}

impl Notes {
    /// The times of the cycles done so far, and the revision each one ran.
    fn cycles(&self) -> Vec<(jiff::Timestamp, String)> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter_map(|(at, n)| match n {
                Note::CycleDone { revision, .. } => Some((*at, revision.clone())),
                _ => None,
            })
            .collect()
    }
}

impl WatchView for Notes {
    fn plan(&self, _revision: &str, _plan: &flotilla::plan::Plan) {}
    fn note(&self, note: &Note) {
        self.seen.lock().unwrap().push((self.clock.now(), note.clone()));
    }
    fn events(
        &self,
        _revision: &str,
    ) -> (
        tokio::sync::mpsc::UnboundedSender<flotilla::rollout::Event>,
        tokio::task::JoinHandle<()>,
    ) {
        common::discard_events()
    }
}

fn hostless_fleet() -> TestFleet {
    let f = TestFleet::new();
    f.write(
        "flotilla.toml",
        "[fleet]\nname = \"acme\"\n\n[defaults]\ntransport = \"local\"\n\n[trust]\nrequire_signatures = false\n",
    );
    f.write("environments/prod.toml", "auto_apply = true\n");
    f.commit("a fleet without hosts");
    f
}

#[tokio::test(start_paused = true)]
async fn the_loop_sleeps_until_the_drift_check_and_wakes_at_once_for_a_commit() {
    let f = hostless_fleet();
    let state = tempfile::tempdir().unwrap();
    let store =
        flotilla::store::open(&flotilla::store::Location::Dir(state.path().to_owned())).expect("store");
    let start = jiff::Timestamp::from_second(1_800_000_000).unwrap();
    let clock = Clock::following_tokio(start);
    let view = Notes {
        clock,
        seen: Mutex::new(Vec::new()),
    };
    let (stopper, cancel) = flotilla::cancel::channel();
    let watch = Watch {
        store: store.as_ref(),
        follower: Follower::new(Origin::Local {
            fleet_dir: f.path().to_owned(),
            branch: None,
        }),
        settings: Settings {
            interval: Duration::from_secs(60),
            drift_interval: Duration::from_secs(15 * 60),
            parallel: 4,
            pinned_keys: None,
            actor: "watch:test".into(),
            identity_file: None,
            known_hosts: None,
        },
        clock,
        cancel,
        shared: Arc::new(Shared::default()),
        view: &view,
        listener: None,
    };
    let minutes = |m: i64| start + jiff::SignedDuration::from_mins(m);
    let drive = async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let first = view.cycles();
        assert_eq!(first.len(), 1, "the first cycle runs at once: {first:?}");
        assert!(first[0].0 <= minutes(1));

        // Fourteen minutes of looking at the branch every minute: no cycle.
        tokio::time::sleep(Duration::from_secs(14 * 60)).await;
        assert_eq!(view.cycles().len(), 1, "no cycle before the drift check is due");

        // The drift check, on time.
        tokio::time::sleep(Duration::from_secs(2 * 60)).await;
        let cycles = view.cycles();
        assert_eq!(cycles.len(), 2, "{cycles:?}");
        assert!(
            cycles[1].0 >= minutes(15) && cycles[1].0 <= minutes(16),
            "the drift check came at {}",
            cycles[1].0
        );

        // A commit: a cycle of the new revision within the look at the branch (inotify, or
        // the one-minute poll), long before the next drift check.
        f.write("environments/prod.toml", "auto_apply = false\n");
        let new = f.commit("turn auto_apply off");
        let before = view.cycles().len();
        for _ in 0..120 {
            tokio::time::sleep(Duration::from_secs(1)).await;
            if view.cycles().len() > before {
                break;
            }
        }
        let cycles = view.cycles();
        let (at, revision) = cycles.last().cloned().expect("a cycle");
        assert_eq!(revision, new, "the new commit's cycle: {cycles:?}");
        assert!(at <= minutes(19), "the commit's cycle came at {at}");
        stopper.escalate();
    };
    let (outcome, ()) = tokio::join!(watch.run(false), drive);
    outcome.expect("watch stops cleanly");
}
