//! The rollout rules as pure decisions (DESIGN §6.2–6.4): whether a host may start now, the
//! failure budget and when it halts, bake deadlines, and whether a halted rollout may start
//! again. Everything here is a function of state, the moment and configuration: no I/O, no
//! clock. The driver in `executor` asks these questions at every host start and after every
//! result; the unit tests below pin each rule.

use std::time::Duration;

use jiff::Timestamp;
use serde::Serialize;

use crate::cancel::Stop;
use crate::manifest::model::CountOrPercent;
use crate::schedule::window::{Freeze, Window, availability, describe};

/// When an environment's hosts may start: its windows and freezes (empty when overridden),
/// and a pause, if one is in force.
#[derive(Debug, Clone, Default)]
pub struct Gate {
    pub windows: Vec<Window>,
    pub freezes: Vec<Freeze>,
    /// Why changes are paused (`flotilla pause`), if they are.
    pub paused: Option<String>,
    /// `min_interval`: a new rollout may not start before this moment (and why).
    pub not_before: Option<(Timestamp, String)>,
}

/// Why a host that could otherwise start waits, and until when if that is known.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Hold {
    /// No window is open, or a freeze covers the moment; `until` is the next moment both allow.
    Schedule { why: String, until: Option<Timestamp> },
    /// Changes are paused until someone resumes them.
    Paused { why: String },
    /// An earlier environment in the promotion order has not promoted this version yet.
    Promotion { why: String },
    /// The host is over its environment's `host_limits`; only this host waits.
    Busy { why: String },
}

impl Hold {
    /// The sentence shown to the operator.
    pub fn why(&self) -> String {
        match self {
            Hold::Schedule { why, .. } => why.clone(),
            Hold::Paused { why } => format!("paused: {why}"),
            Hold::Promotion { why } | Hold::Busy { why } => why.clone(),
        }
    }

    /// When the hold ends by itself, if it does at a known moment.
    pub fn until(&self) -> Option<Timestamp> {
        match self {
            Hold::Schedule { until, .. } => *until,
            Hold::Paused { .. } | Hold::Promotion { .. } | Hold::Busy { .. } => None,
        }
    }
}

impl Gate {
    /// Whether a host change may start at `now`: no pause, a window open (or none configured)
    /// and no freeze. Asked before **every** host start, so a freeze that begins in the middle
    /// of a wave holds the hosts of that wave not yet started.
    pub fn hold(&self, now: Timestamp) -> Option<Hold> {
        if let Some(why) = &self.paused {
            return Some(Hold::Paused { why: why.clone() });
        }
        if let Some((until, why)) = &self.not_before
            && now < *until
        {
            return Some(Hold::Schedule {
                why: why.clone(),
                until: Some(*until),
            });
        }
        let a = availability(&self.windows, &self.freezes, now);
        if a.open {
            return None;
        }
        Some(Hold::Schedule {
            why: describe(&self.windows, &self.freezes, &a, now),
            until: a.next_open,
        })
    }
}

/// How many failed hosts `max_failures` tolerates among `hosts` (a share rounds down).
pub fn allowed_failures(max: CountOrPercent, hosts: usize) -> usize {
    match max {
        CountOrPercent::Count(n) => n as usize,
        CountOrPercent::Percent(p) => hosts * usize::from(p) / 100,
    }
}

/// An environment's failure budget (DESIGN §6.3): hosts that failed before the first wave
/// (unreachable, stale, refused) count, and so does every host that fails during the rollout.
/// Past the budget the rollout halts, once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budget {
    allowed: usize,
    failed: usize,
    halt: Option<String>,
}

impl Budget {
    /// `taking_part` hosts change in this rollout; `failed_before` more already failed. The
    /// budget's base is both together. A budget already exceeded halts at once.
    pub fn new(max: CountOrPercent, taking_part: usize, failed_before: usize) -> Budget {
        let allowed = allowed_failures(max, taking_part + failed_before);
        let halt = (failed_before > allowed).then(|| {
            format!(
                "{failed_before} host(s) failed before the first wave (unreachable, stale or refused), more than max_failures allows ({allowed})"
            )
        });
        Budget {
            allowed,
            failed: failed_before,
            halt,
        }
    }

    /// Counts one failed host. Returns why the rollout halts when this failure is the one that
    /// takes it past the budget; `None` otherwise (also when it had halted already).
    pub fn fail(&mut self) -> Option<String> {
        self.failed += 1;
        if self.halt.is_some() || self.failed <= self.allowed {
            return None;
        }
        let why = format!(
            "{} failed host(s), more than max_failures allows ({})",
            self.failed, self.allowed
        );
        self.halt = Some(why.clone());
        Some(why)
    }

    /// Halts for a reason other than failures (`max_duration`). Returns the reason when this
    /// is what halts the rollout; `None` when it had halted already.
    pub fn halt_for(&mut self, why: String) -> Option<String> {
        if self.halt.is_some() {
            return None;
        }
        self.halt = Some(why.clone());
        Some(why)
    }

    /// Why the rollout halted, if it did.
    pub fn halted(&self) -> Option<&str> {
        self.halt.as_deref()
    }

    /// Failed hosts so far, the ones before the first wave included.
    pub fn failed(&self) -> usize {
        self.failed
    }
}

/// Why a host of a wave does not start at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipKind {
    /// Its environment's rollout halted.
    Halted,
    /// A stop was requested (Ctrl-C, SIGTERM) before it started.
    Interrupted,
    /// An artifact it needs failed its checks.
    Blocked,
    /// A host was found broken: nothing else starts anywhere.
    Broken,
    /// The host changed since the saved plan (`apply --plan`).
    Stale,
    /// The host's `state.json` says it is not this store's to change.
    Refused,
}

/// Whether a host that ended with `kind` counts against the failure budget. Every failed
/// host does (DESIGN §6.3: its change failed, or it was unreachable, stale, or refused by a
/// higher epoch; a lock held by another transaction is the same news: someone else is
/// changing the host right now), except one without room for the artifacts it installs: that
/// is a capacity gate checked before anything is uploaded, like `host_limits` (where the rest
/// of the wave goes on), and says nothing about the version or about who else is at work.
pub fn counts_against_budget(kind: crate::rollout::FailureKind) -> bool {
    use crate::rollout::FailureKind::*;
    match kind {
        NoRoom => false,
        Locked | Stale | RolledBack | Broken | Unhealthy | Connection | Panicked | Aborted => true,
    }
}

/// The decision for the next host of a wave, taken the moment it would start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Start {
    Go,
    /// It waits, and so does every host after it in this environment.
    Hold(Hold),
    /// It does not start; `Blocked` counts against the budget.
    Skip(SkipKind, String),
}

/// Whether the next host may start now. In order: a stop request, a halted rollout, a host
/// found broken elsewhere, a blocked artifact, then the gate (pause, window, freeze).
pub fn next_start(
    budget: &Budget,
    stop: Stop,
    broken: Option<&str>,
    blocked: Option<&str>,
    gate: &Gate,
    now: Timestamp,
) -> Start {
    if stop >= Stop::Drain {
        return Start::Skip(SkipKind::Interrupted, "interrupted before it started".into());
    }
    if let Some(why) = broken {
        return Start::Skip(SkipKind::Broken, why.to_owned());
    }
    if budget.halted().is_some() {
        return Start::Skip(SkipKind::Halted, "its rollout halted".into());
    }
    if let Some(why) = blocked {
        return Start::Skip(SkipKind::Blocked, why.to_owned());
    }
    match gate.hold(now) {
        Some(h) => Start::Hold(h),
        None => Start::Go,
    }
}

/// `host_limits` (DESIGN §6.4): why a host is too busy to start now, naming each limit it is
/// over; `None` when it may start. A usage the host could not report holds nothing.
pub fn busy(
    limits: &crate::manifest::model::HostLimits,
    usage: Option<crate::observe::Usage>,
    disk_used: Option<u8>,
) -> Option<String> {
    let mut over = Vec::new();
    let mut check = |what: &str, limit: Option<u32>, value: Option<u32>| {
        if let (Some(l), Some(v)) = (limit, value)
            && v > l
        {
            over.push(format!("{what} {v}% is over host_limits.{what} {l}%"));
        }
    };
    check("cpu", limits.cpu, usage.and_then(|u| u.cpu));
    check(
        "memory",
        limits.memory.map(u32::from),
        usage.and_then(|u| u.memory).map(u32::from),
    );
    check("disk", limits.disk.map(u32::from), disk_used.map(u32::from));
    (!over.is_empty()).then(|| format!("busy: {}", over.join(", ")))
}

/// `min_interval` (DESIGN §6.4): when a new rollout of an environment may start, given when
/// its last rollout ended (completed or halted). `None`: at once.
pub fn next_rollout_at(
    last_ended: Option<Timestamp>,
    min_interval: Duration,
    now: Timestamp,
) -> Option<(Timestamp, String)> {
    let ended = last_ended?;
    let at = crate::duration::saturating_add(ended, min_interval);
    (now < at).then(|| {
        (
            at,
            format!(
                "min_interval: the last rollout ended at {}; the next may start {} later",
                ended.strftime("%Y-%m-%d %H:%M:%S UTC"),
                crate::duration::format_duration(min_interval),
            ),
        )
    })
}

/// `max_duration` (DESIGN §6.4): why a rollout that started at `started` halts at `now`, if
/// it ran longer than `max`.
pub fn past_max_duration(started: Timestamp, max: Option<Duration>, now: Timestamp) -> Option<String> {
    let max = max?;
    let deadline = crate::duration::saturating_add(started, max);
    (now >= deadline).then(|| {
        format!(
            "max_duration: the rollout started at {} and is still running after {}",
            started.strftime("%Y-%m-%d %H:%M:%S UTC"),
            crate::duration::format_duration(max)
        )
    })
}

/// When the bake after a wave ends, or `None` when there is nothing to bake: no `bake`, no
/// host changed yet, or the rollout is halting anyway. Saturates instead of overflowing.
pub fn bake_until(bake: Duration, budget: &Budget, changed: usize, now: Timestamp) -> Option<Timestamp> {
    if bake.is_zero() || changed == 0 || budget.halted().is_some() {
        return None;
    }
    Some(crate::duration::saturating_add(now, bake))
}

/// Why an environment's rollout may not start at `revision` (DESIGN §6.3): a rollout halted at
/// this same revision stays halted until a person retries it (`apply --retry REASON`). A new
/// revision is a new rollout.
pub fn halted_at_revision(
    halted: Option<&str>,
    halted_revision: Option<&str>,
    revision: Option<&str>,
    retry: bool,
) -> Option<String> {
    let why = halted?;
    if retry || revision.is_none() || halted_revision != revision {
        return None;
    }
    Some(format!(
        "its rollout halted at this revision ({why}); run `flotilla apply --retry REASON` to start it again"
    ))
}

/// The earliest moment one of `holds` ends by itself.
pub fn next_wake<'a>(holds: impl IntoIterator<Item = &'a Hold>) -> Option<Timestamp> {
    holds.into_iter().filter_map(Hold::until).min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::window::WindowLength;
    use jiff::SignedDuration;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn freeze(from: &str, until: &str) -> Freeze {
        Freeze {
            from: ts(from),
            until: ts(until),
            reason: "year-end".into(),
        }
    }

    fn night_window() -> Window {
        Window {
            days: None,
            start: jiff::civil::time(2, 0, 0, 0),
            length: WindowLength::Duration(SignedDuration::from_hours(3)),
            timezone: jiff::tz::TimeZone::UTC,
        }
    }

    #[test]
    fn a_freeze_that_begins_mid_wave_holds_the_next_host_start() {
        let gate = Gate {
            freezes: vec![freeze("2026-12-20T00:00:00Z", "2027-01-04T00:00:00Z")],
            ..Gate::default()
        };
        let budget = Budget::new(CountOrPercent::Count(0), 3, 0);
        let before = ts("2026-12-19T23:59:59Z");
        assert_eq!(
            next_start(&budget, Stop::Run, None, None, &gate, before),
            Start::Go
        );
        let during = ts("2026-12-20T00:00:01Z");
        match next_start(&budget, Stop::Run, None, None, &gate, during) {
            Start::Hold(h @ Hold::Schedule { .. }) => {
                assert_eq!(h.until(), Some(ts("2027-01-04T00:00:00Z")));
                assert!(h.why().contains("year-end"), "{}", h.why());
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_host_over_any_limit_is_busy_and_unknown_usage_holds_nothing() {
        use crate::manifest::model::HostLimits;
        use crate::observe::Usage;
        let limits = HostLimits {
            cpu: Some(90),
            memory: Some(85),
            disk: None,
        };
        let usage = |cpu, memory| Some(Usage { cpu, memory });
        assert_eq!(
            busy(&limits, usage(Some(90), Some(85)), Some(99)),
            None,
            "at the limit is fine"
        );
        assert_eq!(
            busy(&limits, usage(Some(150), Some(90)), None).as_deref(),
            Some("busy: cpu 150% is over host_limits.cpu 90%, memory 90% is over host_limits.memory 85%")
        );
        assert_eq!(
            busy(&limits, None, None),
            None,
            "a host that cannot tell is not held"
        );
        assert_eq!(
            busy(&HostLimits::default(), usage(Some(900), Some(100)), Some(100)),
            None
        );
        let disk = HostLimits {
            disk: Some(80),
            ..HostLimits::default()
        };
        assert!(busy(&disk, None, Some(81)).unwrap().contains("disk 81%"));
    }

    #[test]
    fn min_interval_holds_a_new_rollout_until_the_interval_after_the_last_one_ended() {
        let ended = ts("2026-12-01T10:00:00Z");
        let hour = Duration::from_secs(3600);
        assert_eq!(next_rollout_at(None, hour, ended), None, "no earlier rollout");
        assert_eq!(next_rollout_at(Some(ended), Duration::ZERO, ended), None);
        let (at, why) = next_rollout_at(Some(ended), hour, ts("2026-12-01T10:30:00Z")).unwrap();
        assert_eq!(at, ts("2026-12-01T11:00:00Z"));
        assert!(
            why.starts_with("min_interval: the last rollout ended at 2026-12-01 10:00:00 UTC"),
            "{why}"
        );
        assert_eq!(
            next_rollout_at(Some(ended), hour, ts("2026-12-01T11:00:00Z")),
            None
        );
        let gate = Gate {
            not_before: Some((at, why)),
            ..Gate::default()
        };
        let h = gate.hold(ts("2026-12-01T10:30:00Z")).unwrap();
        assert_eq!(h.until(), Some(at));
        assert_eq!(gate.hold(at), None);
    }

    #[test]
    fn max_duration_counts_from_the_rollouts_start_and_saturates() {
        let start = ts("2026-12-01T10:00:00Z");
        let hour = Some(Duration::from_secs(3600));
        assert_eq!(past_max_duration(start, None, ts("2099-01-01T00:00:00Z")), None);
        assert_eq!(past_max_duration(start, hour, ts("2026-12-01T10:59:59Z")), None);
        assert!(past_max_duration(start, hour, ts("2026-12-01T11:00:00Z")).is_some());
        let huge = Some(Duration::from_secs(u64::MAX));
        assert_eq!(past_max_duration(start, huge, ts("2099-01-01T00:00:00Z")), None);
        let mut budget = Budget::new(CountOrPercent::Count(0), 3, 0);
        assert_eq!(
            budget.halt_for("max_duration".into()).as_deref(),
            Some("max_duration")
        );
        assert_eq!(budget.halt_for("again".into()), None, "halts once");
        assert_eq!(budget.halted(), Some("max_duration"));
    }

    #[test]
    fn a_closed_window_holds_until_it_opens_and_a_pause_holds_without_end() {
        let gate = Gate {
            windows: vec![night_window()],
            ..Gate::default()
        };
        assert_eq!(gate.hold(ts("2026-12-01T03:00:00Z")), None);
        let h = gate.hold(ts("2026-12-01T06:00:00Z")).unwrap();
        assert_eq!(h.until(), Some(ts("2026-12-02T02:00:00Z")));
        let paused = Gate {
            paused: Some("INC-7".into()),
            ..gate
        };
        let h = paused.hold(ts("2026-12-01T03:00:00Z")).unwrap();
        assert_eq!(h, Hold::Paused { why: "INC-7".into() });
        assert_eq!(h.until(), None);
    }

    #[test]
    fn every_failed_host_counts_against_the_budget_but_one_without_room() {
        use crate::rollout::FailureKind;
        assert!(counts_against_budget(FailureKind::Locked));
        assert!(counts_against_budget(FailureKind::Stale));
        assert!(!counts_against_budget(FailureKind::NoRoom));
        assert!(counts_against_budget(FailureKind::RolledBack));
        assert!(counts_against_budget(FailureKind::Connection));
        assert!(counts_against_budget(FailureKind::Panicked));
    }

    #[test]
    fn the_budget_halts_once_past_max_failures() {
        let mut b = Budget::new(CountOrPercent::Count(1), 4, 0);
        assert_eq!(b.fail(), None, "one failure is within the budget");
        let why = b.fail().expect("the second failure halts");
        assert!(why.contains("2 failed host(s)"), "{why}");
        assert_eq!(b.fail(), None, "halting happens once");
        assert_eq!(b.failed(), 3);
        assert!(b.halted().is_some());
    }

    #[test]
    fn hosts_failed_before_the_first_wave_count_and_can_halt_at_once() {
        // 10% of 9 + 1 = 1 allowed: the one unreachable host uses it up, a second would halt.
        let mut b = Budget::new(CountOrPercent::Percent(10), 9, 1);
        assert_eq!(b.halted(), None);
        assert!(b.fail().is_some());
        let b = Budget::new(CountOrPercent::Count(0), 3, 1);
        assert!(b.halted().unwrap().contains("before the first wave"));
    }

    #[test]
    fn shares_round_down() {
        assert_eq!(allowed_failures(CountOrPercent::Percent(10), 19), 1);
        assert_eq!(allowed_failures(CountOrPercent::Percent(10), 9), 0);
        assert_eq!(allowed_failures(CountOrPercent::Count(3), 1), 3);
    }

    #[test]
    fn start_decisions_put_stop_and_halt_before_the_gate() {
        let closed = Gate {
            paused: Some("x".into()),
            ..Gate::default()
        };
        let now = ts("2026-12-01T00:00:00Z");
        let ok = Budget::new(CountOrPercent::Count(0), 1, 0);
        let mut halted = ok.clone();
        halted.fail();
        assert!(matches!(
            next_start(&ok, Stop::Drain, None, None, &closed, now),
            Start::Skip(SkipKind::Interrupted, _)
        ));
        assert!(matches!(
            next_start(&halted, Stop::Run, None, None, &closed, now),
            Start::Skip(SkipKind::Halted, _)
        ));
        assert!(matches!(
            next_start(&ok, Stop::Run, Some("h1 broke"), None, &closed, now),
            Start::Skip(SkipKind::Broken, _)
        ));
        assert!(matches!(
            next_start(&ok, Stop::Run, None, Some("bad sig"), &Gate::default(), now),
            Start::Skip(SkipKind::Blocked, _)
        ));
        assert!(matches!(
            next_start(&ok, Stop::Run, None, None, &closed, now),
            Start::Hold(Hold::Paused { .. })
        ));
    }

    #[test]
    fn bakes_saturate_and_are_skipped_when_there_is_nothing_to_bake() {
        let now = ts("2026-12-01T00:00:00Z");
        let b = Budget::new(CountOrPercent::Count(0), 2, 0);
        assert_eq!(bake_until(Duration::ZERO, &b, 2, now), None);
        assert_eq!(bake_until(Duration::from_secs(60), &b, 0, now), None);
        assert_eq!(
            bake_until(Duration::from_secs(60), &b, 1, now),
            Some(ts("2026-12-01T00:01:00Z"))
        );
        assert_eq!(
            bake_until(Duration::MAX, &b, 1, now),
            Some(Timestamp::MAX),
            "an absurd bake saturates, it does not panic"
        );
        let mut halted = b.clone();
        halted.fail();
        assert_eq!(bake_until(Duration::from_secs(60), &halted, 1, now), None);
    }

    #[test]
    fn a_halted_rollout_stays_halted_for_its_revision_until_retried() {
        let why = Some("2 failed host(s)");
        assert!(
            halted_at_revision(why, Some("abc"), Some("abc"), false)
                .unwrap()
                .contains("--retry")
        );
        assert_eq!(halted_at_revision(why, Some("abc"), Some("abc"), true), None);
        assert_eq!(halted_at_revision(why, Some("abc"), Some("def"), false), None);
        assert_eq!(halted_at_revision(None, Some("abc"), Some("abc"), false), None);
    }

    #[test]
    fn the_next_wake_is_the_earliest_known_end() {
        let holds = [
            Hold::Paused { why: "x".into() },
            Hold::Schedule {
                why: "closed".into(),
                until: Some(ts("2026-12-02T02:00:00Z")),
            },
            Hold::Schedule {
                why: "frozen".into(),
                until: Some(ts("2026-12-01T05:00:00Z")),
            },
        ];
        assert_eq!(next_wake(&holds), Some(ts("2026-12-01T05:00:00Z")));
        assert_eq!(next_wake(&holds[..1]), None);
    }
}
