//! What `watch` knows about itself, shared with its HTTP endpoints: the revision in force, the
//! last cycle, each environment's state and why changes wait, and the Prometheus metrics.
//! Written by the loop after every cycle or problem; read by `/status`, `/readyz`, `/plan` and
//! `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use jiff::Timestamp;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;

/// `/status`: one JSON document.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchStatus {
    /// The revision in force: the newest valid one followed.
    pub revision: Option<String>,
    /// The newest revision seen on the branch, when it differs (invalid, or force-pushed).
    pub latest: Option<String>,
    /// Why the latest revision is not in force, if it is not.
    pub latest_problem: Option<String>,
    /// The last problem reaching the repository (fetch failed, branch deleted), if the last
    /// attempt failed.
    pub source_problem: Option<String>,
    /// Another process holds the store's lock; watch waits for it.
    pub store_problem: Option<String>,
    pub last_cycle: Option<Cycle>,
    /// When a cycle last succeeded (planned and applied without an error of its own).
    pub last_success: Option<Timestamp>,
    /// When the branch was last looked at successfully (a poll that found nothing new, too).
    pub last_poll: Option<Timestamp>,
    pub environments: Vec<EnvironmentState>,
    /// When the next cycle is due at the latest.
    pub next_wake: Option<Timestamp>,
    /// A stop was requested: no new host starts.
    pub stopping: bool,
}

impl WatchStatus {
    /// `/readyz` (DESIGN §10): ready when the last cycle succeeded and watch did something
    /// successfully — a cycle, or a look at the branch that found nothing new — within
    /// `stale_after` (three intervals). Between drift checks a fleet at rest runs no cycle,
    /// and that is not a reason to be taken out of service.
    pub fn readiness(&self, now: Timestamp, stale_after: std::time::Duration) -> Result<(), String> {
        let Some(cycle) = &self.last_cycle else {
            return Err("no cycle has finished yet".into());
        };
        if let Some(e) = &cycle.error {
            return Err(format!("the last cycle failed: {e}"));
        }
        let latest = self.last_success.max(self.last_poll);
        let fresh = latest.is_some_and(|t| {
            now.duration_since(t)
                .try_into()
                .is_ok_and(|age: std::time::Duration| age <= stale_after)
        });
        if fresh {
            return Ok(());
        }
        Err(match &self.source_problem {
            Some(p) => format!("nothing succeeded within {}s: {p}", stale_after.as_secs()),
            None => format!("nothing succeeded within {}s", stale_after.as_secs()),
        })
    }
}

/// How a cycle went.
#[derive(Debug, Clone, Serialize)]
pub struct Cycle {
    pub revision: String,
    pub started: Timestamp,
    pub seconds: f64,
    /// "success", "failure" or "waiting" (apply's outcomes), or "error".
    pub outcome: String,
    pub error: Option<String>,
    pub applied: usize,
    pub failed: usize,
    pub drifted: usize,
}

/// One environment as of the last cycle.
#[derive(Debug, Clone, Serialize)]
pub struct EnvironmentState {
    pub name: String,
    pub auto_apply: bool,
    pub window_open: bool,
    /// Hosts per status: converged, changes, unreachable, refused.
    pub hosts: BTreeMap<String, usize>,
    /// Why its changes wait (window, freeze, promotion, pause), if they do.
    pub waiting: Option<String>,
    pub halted: Option<String>,
    pub paused: Option<String>,
    /// Changes only a person may apply (`auto_apply = false`, or guarded settings changed).
    pub needs_person: Option<String>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EnvLabel {
    environment: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HostsLabel {
    environment: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    revision: String,
}

/// The Prometheus metrics (`flotilla_` prefix).
struct Metrics {
    registry: Registry,
    revision: Family<RevisionLabel, Gauge>,
    hosts: Family<HostsLabel, Gauge>,
    window_open: Family<EnvLabel, Gauge>,
    applies: Counter,
    failures: Counter,
    cycles: Counter,
    drift: Gauge,
    last_sync: Gauge<f64, AtomicU64>,
    cycle_seconds: Histogram,
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("flotilla");
        let m = Metrics {
            revision: Family::default(),
            hosts: Family::default(),
            window_open: Family::default(),
            applies: Counter::default(),
            failures: Counter::default(),
            cycles: Counter::default(),
            drift: Gauge::default(),
            last_sync: Gauge::default(),
            cycle_seconds: Histogram::new(exponential_buckets(0.05, 2.0, 14)),
            registry: Registry::default(),
        };
        registry.register(
            "revision_info",
            "The revision in force (value 1)",
            m.revision.clone(),
        );
        registry.register(
            "hosts",
            "Hosts per environment and status, as of the last cycle",
            m.hosts.clone(),
        );
        registry.register(
            "window_open",
            "1 while the environment may start changes",
            m.window_open.clone(),
        );
        registry.register("host_applies", "Host changes applied", m.applies.clone());
        registry.register("host_failures", "Host changes that failed", m.failures.clone());
        registry.register("cycles", "Reconcile cycles run", m.cycles.clone());
        registry.register(
            "drifted_hosts",
            "Hosts changed outside Flotilla, as of the last cycle",
            m.drift.clone(),
        );
        registry.register(
            "last_sync_timestamp_seconds",
            "When the last cycle ended (Unix time)",
            m.last_sync.clone(),
        );
        registry.register(
            "cycle_duration_seconds",
            "How long cycles take",
            m.cycle_seconds.clone(),
        );
        Metrics { registry, ..m }
    }
}

/// The state and metrics, behind one lock each.
pub struct Shared {
    status: Mutex<WatchStatus>,
    plan: Mutex<Option<String>>,
    /// A digest of the last plan's hosts, to log a plan only when it changed.
    plan_digest: Mutex<Option<String>>,
    metrics: Metrics,
}

impl Default for Shared {
    fn default() -> Self {
        Shared {
            status: Mutex::new(WatchStatus::default()),
            plan: Mutex::new(None),
            plan_digest: Mutex::new(None),
            metrics: Metrics::new(),
        }
    }
}

impl Shared {
    /// A copy of the status.
    pub fn status(&self) -> WatchStatus {
        self.status.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut WatchStatus)) {
        f(&mut self.status.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// The latest plan as JSON (`/plan`).
    pub fn plan(&self) -> Option<String> {
        self.plan.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether `digest` differs from the last plan's (and remembers it).
    pub(super) fn plan_changed(&self, digest: &str) -> bool {
        let mut last = self.plan_digest.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_deref() == Some(digest) {
            return false;
        }
        *last = Some(digest.to_owned());
        true
    }

    pub(super) fn set_plan(&self, json: String) {
        *self.plan.lock().unwrap_or_else(|e| e.into_inner()) = Some(json);
    }

    /// Records a finished cycle: status and metrics.
    pub(super) fn cycle_done(&self, cycle: Cycle, environments: Vec<EnvironmentState>, ended: Timestamp) {
        // The status first: /status never lags behind /metrics.
        self.update(|s| {
            if cycle.error.is_none() {
                s.last_success = Some(ended);
            }
            s.revision = Some(cycle.revision.clone());
            s.last_cycle = Some(cycle.clone());
            s.environments = environments.clone();
        });
        let m = &self.metrics;
        m.cycles.inc();
        m.applies.inc_by(cycle.applied as u64);
        m.failures.inc_by(cycle.failed as u64);
        m.drift.set(cycle.drifted as i64);
        m.cycle_seconds.observe(cycle.seconds);
        m.last_sync.set(ended.as_millisecond() as f64 / 1000.0);
        m.revision.clear();
        m.revision
            .get_or_create(&RevisionLabel {
                revision: cycle.revision.clone(),
            })
            .set(1);
        m.hosts.clear();
        m.window_open.clear();
        for env in &environments {
            for (status, n) in &env.hosts {
                m.hosts
                    .get_or_create(&HostsLabel {
                        environment: env.name.clone(),
                        status: status.clone(),
                    })
                    .set(*n as i64);
            }
            m.window_open
                .get_or_create(&EnvLabel {
                    environment: env.name.clone(),
                })
                .set(i64::from(env.window_open));
        }
    }

    /// `/metrics` in the Prometheus text format.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.metrics.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cycle(error: Option<&str>) -> Cycle {
        Cycle {
            revision: "abc".into(),
            started: ts("2026-12-01T10:00:00Z"),
            seconds: 1.0,
            outcome: "success".into(),
            error: error.map(str::to_owned),
            applied: 0,
            failed: 0,
            drifted: 0,
        }
    }

    #[test]
    fn ready_while_cycles_or_polls_succeed_and_not_after_a_failed_cycle() {
        let minute = std::time::Duration::from_secs(60);
        let stale = minute * 3;
        let mut s = WatchStatus::default();
        assert_eq!(
            s.readiness(ts("2026-12-01T10:00:00Z"), stale).unwrap_err(),
            "no cycle has finished yet"
        );
        s.last_cycle = Some(cycle(None));
        s.last_success = Some(ts("2026-12-01T10:00:00Z"));
        assert!(s.readiness(ts("2026-12-01T10:03:00Z"), stale).is_ok());
        assert!(s.readiness(ts("2026-12-01T10:03:01Z"), stale).is_err(), "stale");
        s.last_poll = Some(ts("2026-12-01T10:10:00Z"));
        assert!(
            s.readiness(ts("2026-12-01T10:12:00Z"), stale).is_ok(),
            "polls keep it fresh"
        );
        s.source_problem = Some("cannot fetch".into());
        let why = s.readiness(ts("2026-12-01T10:20:00Z"), stale).unwrap_err();
        assert!(why.ends_with("cannot fetch"), "{why}");
        s.last_cycle = Some(cycle(Some("store unreadable")));
        assert_eq!(
            s.readiness(ts("2026-12-01T10:12:00Z"), stale).unwrap_err(),
            "the last cycle failed: store unreadable"
        );
    }
}
