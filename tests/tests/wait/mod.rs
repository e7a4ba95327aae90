//! Waiting for something to happen, always with a deadline: a test checks its condition, and
//! while it does not hold yet calls [`Deadline::not_yet`], which panics once the deadline has
//! passed, naming what was awaited and what was last seen, and otherwise pauses before the next
//! check. No test sleeps a fixed time in the hope that something has happened by then.

// Not every test file uses every helper.
#![allow(dead_code)]

use std::fmt::Display;
use std::time::{Duration, Instant};

/// Long enough for anything the local stack does, on a loaded two-core machine too.
pub const WAIT: Duration = Duration::from_secs(20);

/// How long to pause between two checks, unless [`Deadline::every`] says otherwise.
const POLL: Duration = Duration::from_millis(50);

/// The deadline of one wait.
pub struct Deadline {
    at: Instant,
    within: Duration,
    what: String,
    every: Duration,
}

impl Deadline {
    /// A wait for `what` (said in the panic message: "… waiting for {what}") of at most `within`.
    pub fn after(within: Duration, what: impl Into<String>) -> Self {
        Self {
            at: Instant::now() + within,
            within,
            what: what.into(),
            every: POLL,
        }
    }

    /// Pauses `every` between checks (for a check that is itself costly, such as a round).
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// The condition does not hold yet, and `last` is what the check saw: panics if the
    /// deadline has passed, otherwise pauses before the caller checks again.
    pub async fn not_yet(&self, last: impl Display) {
        assert!(
            Instant::now() < self.at,
            "timed out after {:?} waiting for {}; last seen: {last}",
            self.within,
            self.what
        );
        tokio::time::sleep(self.every).await;
    }
}
