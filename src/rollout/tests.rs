//! The driver against fake sessions and fake records, on tokio's paused clock: each rollout
//! rule as the operator would notice it (which hosts changed, which wait, what was rolled back),
//! without a host or a real hour of bake.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use jiff::{SignedDuration, Timestamp};
use tokio::io::AsyncRead;

use super::*;
use crate::cancel::{self, Cancel};
use crate::clock::Clock;
use crate::load::LoadedFleet;
use crate::observe::Observation;
use crate::plan::{Action, Change, Kind};
use crate::schedule::window::Freeze;
use crate::transaction::Context;
use crate::transport::{Output, Pool, Script, Session, TransportError};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Behave {
    Ok,
    /// The transaction fails and rolls back on the host.
    Fail,
    /// The task panics (a bug).
    Panic,
    /// Applies, then fails its re-check after a bake.
    Unhealthy,
    /// Another transaction holds the host's lock.
    Locked,
    /// `state.json` changed since the plan (here: a later transaction wrote it).
    Stale,
}

/// What the fake hosts saw: (host, mode) per command, and the most commands in flight at once
/// per mode.
#[derive(Default)]
struct Lab {
    behave: HashMap<String, Behave>,
    took: Duration,
    calls: Mutex<Vec<(String, String)>>,
    in_flight: Mutex<HashMap<String, usize>>,
    most: Mutex<HashMap<String, usize>>,
    /// A person pauses the environment once this many hosts were changed.
    pause_after: Option<usize>,
    /// What a busy host's usage read again says ("LOAD CPUS MEMTOTAL MEMAVAILABLE").
    usage_now: Option<String>,
}

struct Fake {
    host: String,
    lab: Arc<Lab>,
}

#[async_trait]
impl Session for Fake {
    async fn run(&mut self, script: &Script<'_>) -> Result<Output, TransportError> {
        if script.env.iter().any(|(k, _)| k == "FLOTILLA_PROBE_FULL") {
            // A busy host's usage, read again: what the lab says it is now.
            let usage = self.lab.usage_now.as_deref().unwrap_or("- 0 - -");
            self.lab
                .calls
                .lock()
                .unwrap()
                .push((self.host.clone(), "usage".into()));
            return Ok(Output {
                status: 0,
                stdout: format!(
                    "flotilla-probe 1\nusage {}\n{usage}\nflotilla-probe end\n",
                    usage.len()
                )
                .into_bytes(),
                stderr: Vec::new(),
            });
        }
        let mode = script
            .env
            .iter()
            .find(|(k, _)| k == "FLOTILLA_MODE")
            .map_or("?", |(_, v)| v.as_str())
            .to_owned();
        {
            let mut f = self.lab.in_flight.lock().unwrap();
            let n = f.entry(mode.clone()).or_default();
            *n += 1;
            let mut most = self.lab.most.lock().unwrap();
            let m = most.entry(mode.clone()).or_default();
            *m = (*m).max(*n);
        }
        tokio::time::sleep(self.lab.took).await;
        *self.lab.in_flight.lock().unwrap().get_mut(&mode).unwrap() -= 1;
        self.lab
            .calls
            .lock()
            .unwrap()
            .push((self.host.clone(), mode.clone()));
        let behave = self.lab.behave.get(&self.host).copied().unwrap_or(Behave::Ok);
        let result = match (behave, mode.as_str()) {
            (Behave::Panic, "apply") => panic!("boom on {}", self.host),
            (Behave::Fail, "apply") => "rolled-back activate app 2.0.0: exit 1",
            (Behave::Unhealthy, "health") => "unhealthy health check of app 2.0.0 failed",
            (Behave::Locked, "apply") => "locked another transaction holds /var/lib/flotilla/lock",
            (Behave::Stale, "apply") => "stale state.json was written by a later transaction",
            _ => "ok",
        };
        Ok(Output {
            status: 0,
            stdout: format!("flotilla-txn {result}\n").into_bytes(),
            stderr: Vec::new(),
        })
    }

    async fn upload(
        &mut self,
        _: &mut (dyn AsyncRead + Unpin + Send),
        _: &str,
    ) -> Result<u64, TransportError> {
        Ok(0)
    }

    async fn close(self: Box<Self>) -> Result<(), TransportError> {
        Ok(())
    }
}

#[derive(Default)]
struct Rec {
    promotion_asked: Mutex<Vec<String>>,
    changed: Mutex<Vec<String>>,
    ended: Mutex<Vec<(String, bool, Option<Halt>)>>,
    /// A person pauses the environment once this many hosts were changed.
    pause_after: Option<usize>,
}

impl Records for Rec {
    fn promotion_waits(&self, env: &str, jobs: &[HostJob]) -> Vec<Option<String>> {
        self.promotion_asked.lock().unwrap().push(env.to_owned());
        vec![None; jobs.len()]
    }
    fn host_changed(&self, _: &str, t: &Touched) {
        self.changed.lock().unwrap().push(t.desired.name.to_string());
    }
    fn wave_done(&self, _: &str, _: usize, _: Option<Timestamp>) {}
    fn paused(&self, _: &str) -> Option<String> {
        let changed = self.changed.lock().unwrap().len();
        self.pause_after
            .is_some_and(|n| changed >= n)
            .then(|| "INC-7 (by alice@ops1)".to_owned())
    }
    fn finished(&self, env: &str, end: &EnvEnd<'_>) {
        self.ended
            .lock()
            .unwrap()
            .push((env.to_owned(), end.completed, end.halt.cloned()));
    }
}

/// A fleet of `hosts` in one environment with `rollout` settings, loaded from real manifests.
fn fleet(hosts: usize, rollout: &str) -> (tempfile::TempDir, LoadedFleet) {
    let dir = tempfile::tempdir().unwrap();
    let w = |p: &str, s: &str| {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, s).unwrap();
    };
    w(
        "flotilla.toml",
        "[fleet]\nname = \"t\"\n[defaults]\ntransport = \"local\"\nroot = \"roots\"\n[trust]\nrequire_signatures = false\n",
    );
    w(
        "environments/staging.toml",
        &format!("[runtimes]\napp = \"2.0.0\"\n[rollout]\n{rollout}\n"),
    );
    let sha = "0".repeat(64);
    w(
        "runtimes/app.toml",
        &format!(
            "[[version]]\nversion = \"1.0.0\"\nartifact = \"https://example.invalid/1.tgz\"\nsha256 = \"{sha}\"\n\
             [[version]]\nversion = \"2.0.0\"\nartifact = \"https://example.invalid/2.tgz\"\nsha256 = \"{sha}\"\n"
        ),
    );
    let mut h = String::new();
    for i in 1..=hosts {
        h.push_str(&format!(
            "[[host]]\nname = \"h{i}\"\nenvironment = \"staging\"\nroot = \"roots/h{i}\"\n"
        ));
    }
    w("hosts/all.toml", &h);
    let repo = crate::repo::FleetRepo::open(dir.path(), None).unwrap();
    let loaded = match crate::load::load(&repo) {
        Ok(l) => l,
        Err(crate::load::LoadError::Invalid { diagnostics, .. }) => panic!("{diagnostics:?}"),
        Err(e) => panic!("{e}"),
    };
    (dir, loaded)
}

fn upgrade() -> Vec<Change> {
    vec![Change {
        action: Action::Update,
        kind: Kind::Runtime,
        name: "app".into(),
        before: Some("1.0.0".into()),
        after: Some("2.0.0".into()),
        diff: None,
        drift: false,
        notes: Vec::new(),
        template: None,
    }]
}

/// Jobs for hosts h1..hN, `waves[i]` the wave of host i+1.
fn jobs(loaded: &LoadedFleet, waves: &[usize]) -> Vec<HostJob> {
    waves
        .iter()
        .enumerate()
        .map(|(i, &wave)| HostJob {
            desired: loaded
                .desired
                .iter()
                .find(|d| d.name.as_str() == format!("h{}", i + 1))
                .unwrap()
                .clone(),
            observed: Observation::default(),
            changes: upgrade(),
            wave,
            blocked: None,
            no_room: None,
            busy: None,
        })
        .collect()
}

const START: &str = "2026-12-19T12:00:00Z";

struct Run {
    summary: Summary,
    lab: Arc<Lab>,
    rec: Rec,
    events: Vec<Event>,
}

async fn run(loaded: &LoadedFleet, env: EnvRun, lab: Lab, cancel: Cancel) -> Run {
    let rec = Rec {
        pause_after: lab.pause_after,
        ..Rec::default()
    };
    let lab = Arc::new(lab);
    let pool = Arc::new(Pool::new());
    for d in &loaded.desired {
        let fake = Fake {
            host: d.name.to_string(),
            lab: lab.clone(),
        };
        pool.put(d.name.as_str(), Box::new(fake)).await;
    }
    let artifacts = Default::default();
    let clock = Clock::following_tokio(START.parse().unwrap());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let spec = RunSpec {
        fleet: &loaded.fleet,
        fleet_dir: std::path::Path::new("/nonexistent"),
        txn: Context {
            fleet: &loaded.fleet,
            revision: Some("abc"),
            store_id: "store",
            epoch: 1,
            now: clock.now(),
            artifacts: &artifacts,
            detail: Default::default(),
        },
        environments: vec![env],
        parallel: 64,
        cancel,
        pool,
        clock,
        records: &rec,
    };
    let summary = execute(spec, tx).await;
    let mut events = Vec::new();
    while let Ok(e) = rx.try_recv() {
        events.push(e);
    }
    Run {
        summary,
        lab,
        rec,
        events,
    }
}

fn env_run(jobs: Vec<HostJob>) -> EnvRun {
    EnvRun {
        name: "staging".into(),
        jobs,
        gate: Gate::default(),
        failed_before: 0,
        earlier: Vec::new(),
        bake_until: None,
        started_at: None,
    }
}

fn outcome<'a>(s: &'a Summary, host: &str) -> &'a HostOutcome {
    &s.results
        .iter()
        .rfind(|r| r.host == host)
        .unwrap_or_else(|| panic!("no result for {host}"))
        .outcome
}

fn calls(lab: &Lab, mode: &str) -> Vec<String> {
    lab.calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, m)| m == mode)
        .map(|(h, _)| h.clone())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_freeze_that_begins_mid_wave_leaves_the_hosts_not_yet_started_untouched() {
    let (_dir, loaded) = fleet(3, "waves = [\"100%\"]\nmax_parallel = 1");
    let start: Timestamp = START.parse().unwrap();
    let mut env = env_run(jobs(&loaded, &[1, 1, 1]));
    // Each host takes 10 minutes; the freeze starts 5 minutes in, while h1 is in flight.
    env.gate.freezes = vec![Freeze {
        from: start + SignedDuration::from_mins(5),
        until: start + SignedDuration::from_hours(2),
        reason: "holiday".into(),
    }];
    let lab = Lab {
        took: Duration::from_secs(600),
        ..Lab::default()
    };
    let r = run(&loaded, env, lab, Cancel::never()).await;
    assert_eq!(calls(&r.lab, "apply"), ["h1"], "only the host in flight finished");
    assert!(r.summary.results[0].applied());
    for h in ["h2", "h3"] {
        assert!(
            matches!(
                outcome(&r.summary, h),
                HostOutcome::Waiting {
                    hold: Hold::Schedule { .. }
                }
            ),
            "{h}: {:?}",
            outcome(&r.summary, h)
        );
    }
    let (_, hold) = &r.summary.holds[0];
    assert_eq!(hold.until(), Some(start + SignedDuration::from_hours(2)));
    assert!(!r.rec.ended.lock().unwrap()[0].1, "the rollout is not complete");
}

#[tokio::test(start_paused = true)]
async fn a_halts_rollback_goes_ahead_when_the_window_has_closed_or_a_freeze_began() {
    // DESIGN §6.3: rollbacks ignore windows and freezes. h1 and h2 start together and take 10
    // minutes; 5 minutes in, the window closes (or a freeze begins); h2 fails, the rollout
    // halts, and h1 is rolled back all the same.
    use crate::schedule::window::{Window, WindowLength};
    let start: Timestamp = START.parse().unwrap();
    let closing = Window {
        days: None,
        start: jiff::civil::time(11, 0, 0, 0),
        length: WindowLength::Duration(SignedDuration::from_mins(65)),
        timezone: jiff::tz::TimeZone::UTC,
    };
    let freezing = Freeze {
        from: start + SignedDuration::from_mins(5),
        until: start + SignedDuration::from_hours(2),
        reason: "holiday".into(),
    };
    let gates = [
        Gate {
            windows: vec![closing],
            ..Gate::default()
        },
        Gate {
            freezes: vec![freezing],
            ..Gate::default()
        },
    ];
    for gate in gates {
        let (_dir, loaded) = fleet(
            2,
            "waves = [\"100%\"]\nmax_parallel = 2\non_failure = \"rollback\"",
        );
        let mut env = env_run(jobs(&loaded, &[1, 1]));
        env.gate = gate.clone();
        let lab = Lab {
            behave: [("h2".to_owned(), Behave::Fail)].into(),
            took: Duration::from_secs(600),
            ..Lab::default()
        };
        let r = run(&loaded, env, lab, Cancel::never()).await;
        assert!(
            gate.hold(start + SignedDuration::from_mins(10)).is_some(),
            "the gate is shut when the halt comes: {gate:?}"
        );
        assert_eq!(r.summary.halts.len(), 1, "{gate:?}");
        assert_eq!(calls(&r.lab, "recover"), ["h1"], "{gate:?}");
        assert!(
            matches!(outcome(&r.summary, "h1"), HostOutcome::Reverted { .. }),
            "{gate:?}: {:?}",
            outcome(&r.summary, "h1")
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_pause_made_mid_wave_holds_the_hosts_not_yet_started() {
    let (_dir, loaded) = fleet(3, "waves = [\"100%\"]\nmax_parallel = 1");
    let lab = Lab {
        took: Duration::from_secs(60),
        pause_after: Some(1),
        ..Lab::default()
    };
    let r = run(&loaded, env_run(jobs(&loaded, &[1, 1, 1])), lab, Cancel::never()).await;
    assert_eq!(
        calls(&r.lab, "apply"),
        ["h1"],
        "only the host started before the pause ran"
    );
    for h in ["h2", "h3"] {
        match outcome(&r.summary, h) {
            HostOutcome::Waiting {
                hold: Hold::Paused { why },
            } => assert!(why.contains("INC-7"), "{why}"),
            o => panic!("{h}: {o:?}"),
        }
    }
    let (_, hold) = &r.summary.holds[0];
    assert_eq!(hold.until(), None, "a pause has no end of its own");
    assert!(!r.rec.ended.lock().unwrap()[0].1, "the rollout is not complete");
}

#[tokio::test(start_paused = true)]
async fn a_rollout_past_max_duration_halts_before_its_next_host() {
    let (_dir, loaded) = fleet(
        3,
        "waves = [\"100%\"]\nmax_parallel = 1\nmax_duration = \"1h\"\non_failure = \"halt\"",
    );
    let start: Timestamp = START.parse().unwrap();
    let mut env = env_run(jobs(&loaded, &[1, 1, 1]));
    // Started 50 minutes ago (an earlier run); each host takes 10 minutes.
    env.started_at = Some(start - SignedDuration::from_mins(50));
    let lab = Lab {
        took: Duration::from_secs(600),
        ..Lab::default()
    };
    let r = run(&loaded, env, lab, Cancel::never()).await;
    assert_eq!(calls(&r.lab, "apply"), ["h1"], "h2 would start 60 minutes in");
    let (_, halt) = &r.summary.halts[0];
    assert!(halt.reason.starts_with("max_duration:"), "{}", halt.reason);
    for h in ["h2", "h3"] {
        assert!(
            matches!(
                outcome(&r.summary, h),
                HostOutcome::Skipped {
                    kind: SkipKind::Halted,
                    ..
                }
            ),
            "{h}: {:?}",
            outcome(&r.summary, h)
        );
    }
}

async fn busy_run(usage_now: &str) -> Run {
    let (_dir, loaded) = fleet(
        3,
        "waves = [\"100%\"]\nmax_parallel = 1\nhost_limits = { memory = \"80%\" }",
    );
    let mut jobs = jobs(&loaded, &[1, 1, 1]);
    jobs[0].busy = Some("busy: memory 95% is over host_limits.memory 80%".into());
    let lab = Lab {
        took: Duration::from_secs(1),
        usage_now: Some(usage_now.into()),
        ..Lab::default()
    };
    run(&loaded, env_run(jobs), lab, Cancel::never()).await
}

#[tokio::test(start_paused = true)]
async fn a_busy_host_waits_for_the_rest_of_its_wave_then_starts_when_no_longer_busy() {
    // 50% of memory in use when read again: under the limit.
    let r = busy_run("0.1 2 1000 500").await;
    let order: Vec<(String, String)> = r.lab.calls.lock().unwrap().clone();
    let order: Vec<String> = order.into_iter().map(|(h, m)| format!("{h}:{m}")).collect();
    assert_eq!(order, ["h2:apply", "h3:apply", "h1:usage", "h1:apply"]);
    assert!(
        r.summary.results.iter().all(|x| x.applied()),
        "{:?}",
        r.summary.results
    );
    assert!(r.rec.ended.lock().unwrap()[0].1, "the rollout completed");
}

#[tokio::test(start_paused = true)]
async fn a_host_still_busy_after_its_wave_waits_and_the_rollout_is_not_complete() {
    let r = busy_run("0.1 2 1000 100").await;
    assert_eq!(calls(&r.lab, "apply"), ["h2", "h3"]);
    match outcome(&r.summary, "h1") {
        HostOutcome::Waiting {
            hold: Hold::Busy { why },
        } => assert_eq!(why, "busy: memory 90% is over host_limits.memory 80%"),
        o => panic!("{o:?}"),
    }
    assert!(
        !r.rec.ended.lock().unwrap()[0].1,
        "not complete while a host waits"
    );
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e, Event::HostBusy { host, .. } if host == "h1")),
        "the wait is reported as it happens"
    );
}

#[tokio::test(start_paused = true)]
async fn a_panicking_host_is_a_failed_host_and_the_others_finish() {
    let (_dir, loaded) = fleet(3, "max_failures = 1\nwaves = [\"100%\"]");
    let lab = Lab {
        behave: [("h2".to_owned(), Behave::Panic)].into(),
        took: Duration::from_secs(1),
        ..Lab::default()
    };
    let r = run(&loaded, env_run(jobs(&loaded, &[1, 1, 1])), lab, Cancel::never()).await;
    assert!(matches!(
        outcome(&r.summary, "h2"),
        HostOutcome::Failed {
            kind: FailureKind::Panicked,
            ..
        }
    ));
    assert!(outcome(&r.summary, "h1") == &HostOutcome::Applied { warning: None });
    assert!(outcome(&r.summary, "h3") == &HostOutcome::Applied { warning: None });
    assert!(
        r.summary.halts.is_empty(),
        "one failure is within max_failures = 1"
    );
}

#[tokio::test(start_paused = true)]
async fn a_locked_or_stale_host_counts_against_the_budget_and_halts_the_rollout() {
    // DESIGN §6.3: a stale host, one refused by a higher epoch, and one whose lock another
    // transaction holds are failed hosts; with max_failures = 0 the rollout halts there.
    // h1 is wave 1, h2 then h3 wave 2; h2 behaves as `behave`.
    async fn with_budget(max_failures: u32, behave: Behave) -> Run {
        let rollout = format!("max_failures = {max_failures}\nmax_parallel = 1\nwaves = [1, \"100%\"]");
        let (_dir, loaded) = fleet(3, &rollout);
        let lab = Lab {
            behave: [("h2".to_owned(), behave)].into(),
            took: Duration::from_secs(1),
            ..Lab::default()
        };
        run(&loaded, env_run(jobs(&loaded, &[1, 2, 2])), lab, Cancel::never()).await
    }
    for (behave, kind) in [
        (Behave::Locked, FailureKind::Locked),
        (Behave::Stale, FailureKind::Stale),
    ] {
        let r = with_budget(0, behave).await;
        assert!(
            matches!(outcome(&r.summary, "h2"), HostOutcome::Failed { kind: k, .. } if *k == kind),
            "{kind:?}: {:?}",
            outcome(&r.summary, "h2")
        );
        // on_failure = "rollback" (the default): the canary the rollout changed goes back.
        assert!(
            matches!(outcome(&r.summary, "h1"), HostOutcome::Reverted { .. }),
            "{kind:?}: {:?}",
            outcome(&r.summary, "h1")
        );
        assert!(
            matches!(outcome(&r.summary, "h3"), HostOutcome::Skipped { .. }),
            "{kind:?}: no new host starts past the budget: {:?}",
            outcome(&r.summary, "h3")
        );
        assert_eq!(r.summary.halts.len(), 1, "{kind:?}");
        assert_eq!(r.summary.halts[0].1.wave, 2, "{kind:?}");

        // Within a budget of one, the rollout goes on.
        let r = with_budget(1, behave).await;
        assert!(
            outcome(&r.summary, "h3") == &HostOutcome::Applied { warning: None },
            "{kind:?}"
        );
        assert!(r.summary.halts.is_empty(), "{kind:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_halt_rolls_back_last_wave_first_at_most_max_parallel_at_once() {
    // Wave 1: h1-h4 apply; wave 2: h5 fails and the rollout halts.
    let (_dir, loaded) = fleet(
        5,
        "waves = [4, \"100%\"]\nmax_parallel = 2\non_failure = \"rollback\"",
    );
    let lab = Lab {
        behave: [("h5".to_owned(), Behave::Fail)].into(),
        took: Duration::from_secs(5),
        ..Lab::default()
    };
    let r = run(
        &loaded,
        env_run(jobs(&loaded, &[1, 1, 1, 1, 2])),
        lab,
        Cancel::never(),
    )
    .await;
    let (env, halt) = &r.summary.halts[0];
    assert_eq!((env.as_str(), halt.wave), ("staging", 2));
    for h in ["h1", "h2", "h3", "h4"] {
        assert!(
            matches!(outcome(&r.summary, h), HostOutcome::Reverted { .. }),
            "{h}"
        );
    }
    assert_eq!(calls(&r.lab, "recover").len(), 4);
    assert!(
        r.lab.most.lock().unwrap()["recover"] <= 2,
        "rollbacks respect max_parallel"
    );
    assert!(r.lab.most.lock().unwrap()["apply"] <= 2);
}

#[tokio::test(start_paused = true)]
async fn bake_rechecks_include_hosts_an_earlier_run_changed() {
    let (_dir, loaded) = fleet(3, "waves = [1, 2, 3]\nbake = \"1h\"\nmax_failures = 0");
    let start: Timestamp = START.parse().unwrap();
    // h1 was changed by an earlier, interrupted run of this rollout, which was killed in its
    // bake; h1 turns out unhealthy when the bake ends.
    let mut env = env_run(jobs(&loaded, &[0, 2, 3]).split_off(1));
    env.earlier = vec![Touched {
        desired: loaded.desired[0].clone(),
        wave: 1,
        txn: "1-00".into(),
    }];
    env.bake_until = Some(start + SignedDuration::from_mins(30));
    let lab = Lab {
        behave: [("h1".to_owned(), Behave::Unhealthy)].into(),
        took: Duration::from_secs(1),
        ..Lab::default()
    };
    let r = run(&loaded, env, lab, Cancel::never()).await;
    assert_eq!(calls(&r.lab, "health"), ["h1"], "the earlier host is re-checked");
    assert!(calls(&r.lab, "apply").is_empty(), "the halt came before wave 2");
    assert!(matches!(
        outcome(&r.summary, "h1"),
        HostOutcome::Reverted { .. } | HostOutcome::Failed { .. }
    ));
    assert_eq!(
        calls(&r.lab, "recover"),
        ["h1"],
        "and rolled back with the halted rollout"
    );
    assert!(matches!(
        outcome(&r.summary, "h2"),
        HostOutcome::Skipped {
            kind: SkipKind::Halted,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_drain_starts_no_host_and_an_abort_stops_waiting_for_in_flight_ones() {
    let (_dir, loaded) = fleet(2, "waves = [\"100%\"]");
    let (stop, cancel) = cancel::channel();
    stop.escalate();
    let r = run(&loaded, env_run(jobs(&loaded, &[1, 1])), Lab::default(), cancel).await;
    assert!(r.lab.calls.lock().unwrap().is_empty());
    assert!(r.summary.interrupted);
    assert!(matches!(
        outcome(&r.summary, "h1"),
        HostOutcome::Skipped {
            kind: SkipKind::Interrupted,
            ..
        }
    ));

    let (stop, cancel) = cancel::channel();
    let lab = Lab {
        took: Duration::from_secs(3600),
        ..Lab::default()
    };
    let stopper = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        stop.escalate();
        stop.escalate();
    });
    let r = run(&loaded, env_run(jobs(&loaded, &[1, 1])), lab, cancel).await;
    stopper.await.unwrap();
    assert!(matches!(
        outcome(&r.summary, "h1"),
        HostOutcome::Failed {
            kind: FailureKind::Aborted,
            ..
        }
    ));
}

#[tokio::test(start_paused = true)]
async fn promotion_is_asked_once_per_environment_and_hosts_changed_are_recorded_as_they_go() {
    let (_dir, loaded) = fleet(4, "waves = [1, \"100%\"]");
    let r = run(
        &loaded,
        env_run(jobs(&loaded, &[1, 2, 2, 2])),
        Lab::default(),
        Cancel::never(),
    )
    .await;
    assert_eq!(*r.rec.promotion_asked.lock().unwrap(), ["staging"]);
    assert_eq!(r.rec.changed.lock().unwrap().len(), 4);
    assert!(r.rec.ended.lock().unwrap()[0].1, "completed");
    assert!(
        r.events
            .iter()
            .any(|e| matches!(e, Event::WaveStarted { wave: 2, .. }))
    );
}
