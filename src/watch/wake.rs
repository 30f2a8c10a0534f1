//! When `watch` acts: pure functions of the moment and the loop's state, so the rules are
//! tested without a clock, a repository or hosts.

use std::time::Duration;

use jiff::{SignedDuration, Timestamp};

/// The longest wait between attempts to reach a failing repository or a held store.
pub const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Whether a cycle is due at `now`: a new revision came into force, the drift check is due,
/// or something that waited may go.
pub fn cycle_due(
    new_revision: bool,
    now: Timestamp,
    drift_due: Timestamp,
    requeue_at: Option<Timestamp>,
) -> bool {
    new_revision || now >= drift_due || requeue_at.is_some_and(|t| now >= t)
}

/// When to wake next: the next look at the branch, the drift check, or the moment something
/// that waits may go — whichever comes first, never in the past.
pub fn next_wake(
    now: Timestamp,
    next_look_in: Duration,
    drift_due: Timestamp,
    requeue_at: Option<Timestamp>,
) -> Timestamp {
    let mut wake = now.saturating_add(signed(next_look_in)).unwrap_or(Timestamp::MAX);
    wake = wake.min(drift_due.max(now));
    if let Some(t) = requeue_at {
        wake = wake.min(t.max(now));
    }
    wake
}

/// How long to wait after `failures` consecutive failures: the interval doubled per failure,
/// at least the interval (and a second), at most [`MAX_BACKOFF`] unless the interval is longer.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let doubled = interval.saturating_mul(1 << failures.min(16));
    doubled.min(MAX_BACKOFF).max(interval).max(Duration::from_secs(1))
}

/// A std duration as jiff's, saturating.
pub fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn a_cycle_runs_for_a_new_revision_a_due_drift_check_or_a_waiting_change_that_may_go() {
        let now = ts("2026-12-01T10:00:00Z");
        let later = ts("2026-12-01T10:15:00Z");
        assert!(!cycle_due(false, now, later, None), "nothing to do: no cycle");
        assert!(cycle_due(true, now, later, None));
        assert!(cycle_due(false, later, later, None));
        assert!(cycle_due(false, now, later, Some(now)));
        assert!(!cycle_due(false, now, later, Some(later)));
    }

    #[test]
    fn watch_sleeps_until_the_first_of_its_events() {
        let now = ts("2026-12-01T10:00:00Z");
        let minute = Duration::from_secs(60);
        let drift = ts("2026-12-01T10:15:00Z");
        assert_eq!(next_wake(now, minute, drift, None), ts("2026-12-01T10:01:00Z"));
        let window = ts("2026-12-01T10:00:30Z");
        assert_eq!(
            next_wake(now, minute, drift, Some(window)),
            window,
            "a window opens first"
        );
        assert_eq!(
            next_wake(now, Duration::from_secs(3600), drift, None),
            drift,
            "the drift check comes before the next poll"
        );
        let past = ts("2026-12-01T09:00:00Z");
        assert_eq!(
            next_wake(now, minute, drift, Some(past)),
            now,
            "never in the past"
        );
        assert_eq!(
            next_wake(now, Duration::MAX, Timestamp::MAX, None),
            Timestamp::MAX,
            "saturates"
        );
    }

    #[test]
    fn backoff_doubles_from_the_interval_up_to_ten_minutes() {
        let s = Duration::from_secs;
        assert_eq!(backoff(s(60), 1), s(120));
        assert_eq!(backoff(s(60), 2), s(240));
        assert_eq!(backoff(s(60), 30), s(600));
        assert_eq!(backoff(s(3600), 3), s(3600), "never shorter than the interval");
        assert_eq!(backoff(Duration::ZERO, 1), s(1));
    }
}
