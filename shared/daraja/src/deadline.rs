//! The instant by which a piece of work must be over: a Lambda invocation's deadline, less what
//! the caller keeps for itself afterwards.
//!
//! The client clips every wait and every request to it, and starts no request with less than a
//! minimum left, so a call never outlives the function that made it.

use std::time::{Duration, Instant, SystemTime};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Deadline(Instant);

impl Deadline {
    pub fn at(instant: Instant) -> Self {
        Self(instant)
    }

    /// `time` from now.
    pub fn after(time: Duration) -> Self {
        Self(Instant::now() + time)
    }

    /// A wall-clock deadline, such as the one Lambda gives each invocation.
    pub fn at_system_time(when: SystemTime) -> Self {
        let left = when
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO);
        Self::after(left)
    }

    pub fn instant(self) -> Instant {
        self.0
    }

    /// What is left, zero once past.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    pub fn has_passed(self) -> bool {
        self.remaining().is_zero()
    }

    /// `margin` sooner: what remains for the work before a step that needs `margin`.
    #[must_use]
    pub fn earlier_by(self, margin: Duration) -> Self {
        // An instant before the process started is simply past.
        Self(
            self.0
                .checked_sub(margin)
                .unwrap_or_else(Instant::now)
                .min(self.0),
        )
    }

    /// `limit`, shortened to end by the deadline; `None` when less than `at_least` is left, so
    /// the step should not start at all.
    pub fn clip(self, limit: Duration, at_least: Duration) -> Option<Duration> {
        let left = self.remaining();
        (left >= at_least && !left.is_zero()).then(|| limit.min(left))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_to_what_is_left_and_refuses_below_the_minimum() {
        let deadline = Deadline::after(Duration::from_secs(10));
        let clipped = deadline
            .clip(Duration::from_secs(15), Duration::from_secs(2))
            .unwrap();
        assert!(clipped <= Duration::from_secs(10) && clipped > Duration::from_secs(9));
        assert_eq!(
            deadline.clip(Duration::from_secs(3), Duration::from_secs(2)),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            deadline.clip(Duration::from_secs(3), Duration::from_secs(11)),
            None
        );
        assert!(Deadline::after(Duration::ZERO).has_passed());
        assert_eq!(
            Deadline::after(Duration::ZERO).clip(Duration::from_secs(1), Duration::ZERO),
            None
        );
    }

    #[test]
    fn earlier_by_more_than_is_left_is_past() {
        let deadline = Deadline::after(Duration::from_secs(1));
        assert!(deadline.earlier_by(Duration::from_secs(5)).has_passed());
        assert!(deadline.earlier_by(Duration::from_millis(1)) < deadline);
        let past = SystemTime::now() - Duration::from_secs(3);
        assert!(Deadline::at_system_time(past).has_passed());
    }
}
