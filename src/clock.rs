//! Where time comes from. The pure core takes time as an argument; the effectful parts (the
//! rollout driver, `apply --wait`, `watch`) ask a [`Clock`], which is the wall clock in the
//! binary and a clock that follows tokio's pausable time in tests, so a three-hour bake or a
//! freeze that starts mid-wave is tested in milliseconds with `tokio::time::pause()`.

use jiff::{SignedDuration, Timestamp};

/// A source of "now" and a way to sleep until a moment.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// The system clock.
    Wall,
    /// `start` at the tokio instant `at`, advancing with tokio's (possibly paused) time.
    Tokio {
        start: Timestamp,
        at: tokio::time::Instant,
    },
}

impl Clock {
    /// The system clock.
    pub fn wall() -> Clock {
        Clock::Wall
    }

    /// A clock that reads `start` now and then follows tokio's time: under
    /// `tokio::time::pause()` it only moves when the test (or an idle runtime) advances it.
    /// Call it inside a tokio runtime.
    pub fn following_tokio(start: Timestamp) -> Clock {
        Clock::Tokio {
            start,
            at: tokio::time::Instant::now(),
        }
    }

    /// The current moment.
    pub fn now(&self) -> Timestamp {
        match self {
            Clock::Wall => Timestamp::now(),
            Clock::Tokio { start, at } => {
                let elapsed = SignedDuration::try_from(at.elapsed()).unwrap_or(SignedDuration::MAX);
                start.checked_add(elapsed).unwrap_or(Timestamp::MAX)
            }
        }
    }

    /// Sleeps until `deadline` (returns at once when it has passed).
    pub async fn sleep_until(&self, deadline: Timestamp) {
        let left = deadline.duration_since(self.now());
        if left > SignedDuration::ZERO {
            tokio::time::sleep(left.unsigned_abs()).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_tokio_clock_moves_only_with_tokio_time() {
        let start: Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let clock = Clock::following_tokio(start);
        assert_eq!(clock.now(), start);
        clock.sleep_until(start + SignedDuration::from_hours(3)).await;
        assert_eq!(clock.now(), start + SignedDuration::from_hours(3));
        // A moment in the past returns at once.
        clock.sleep_until(start).await;
        assert_eq!(clock.now(), start + SignedDuration::from_hours(3));
    }
}
