//! Where an invocation's time goes: the DynamoDB and Daraja requests it waited for, and the
//! rest, the function's own part.
//!
//! Every DynamoDB operation is a `DynamoDbLatency` metric (dimension `Operation`), as every
//! Daraja call is a `DarajaLatency` one. [`timed`] wraps one invocation and logs one
//! `invocation` line with its total and both parts, which the bench reads. Lambda runs one
//! invocation at a time in an execution environment, so process-wide totals, reset when an
//! invocation starts, are that invocation's own.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::metrics::{self, Metric};

/// Requests of one kind made by the running invocation, and the time spent waiting on them.
struct Totals {
    nanos: AtomicU64,
    requests: AtomicU64,
}

impl Totals {
    const fn new() -> Self {
        Self {
            nanos: AtomicU64::new(0),
            requests: AtomicU64::new(0),
        }
    }

    fn add(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The totals so far, and zero from now on.
    fn take(&self) -> (Duration, u64) {
        (
            Duration::from_nanos(self.nanos.swap(0, Ordering::Relaxed)),
            self.requests.swap(0, Ordering::Relaxed),
        )
    }
}

static DYNAMODB: Totals = Totals::new();
static DARAJA: Totals = Totals::new();

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One DynamoDB operation finished (the [`dynamo::Observer`] of the functions' clients).
pub fn dynamodb_request(operation: &str, latency: Duration) {
    DYNAMODB.add(latency);
    metrics::emit(
        Metric::DynamoDbLatency,
        ms(latency),
        Some(("Operation", operation)),
    );
}

/// One Daraja HTTP call finished (told by [`metrics::DarajaCalls`]).
pub(crate) fn daraja_request(latency: Duration) {
    DARAJA.add(latency);
}

/// What one invocation spent, as [`timed`] logs it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spent {
    pub total: Duration,
    pub dynamodb: Duration,
    pub dynamodb_requests: u64,
    pub daraja: Duration,
    pub daraja_requests: u64,
}

impl Spent {
    /// The function's own part: the total less the requests it waited for (sequential, so
    /// the difference is what its own code took, with the runtime's).
    pub fn own(&self) -> Duration {
        self.total.saturating_sub(self.dynamodb + self.daraja)
    }
}

/// Runs one invocation and logs where its time went (one `invocation` line at INFO).
pub async fn timed<F: Future>(invocation: F) -> F::Output {
    DYNAMODB.take();
    DARAJA.take();
    let started = Instant::now();
    let output = invocation.await;
    let total = started.elapsed();
    let (dynamodb, dynamodb_requests) = DYNAMODB.take();
    let (daraja, daraja_requests) = DARAJA.take();
    let spent = Spent {
        total,
        dynamodb,
        dynamodb_requests,
        daraja,
        daraja_requests,
    };
    tracing::info!(
        total_ms = ms(spent.total),
        own_ms = ms(spent.own()),
        dynamodb_ms = ms(spent.dynamodb),
        dynamodb_requests,
        daraja_ms = ms(spent.daraja),
        daraja_requests,
        "invocation"
    );
    output
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_part_is_the_total_less_the_requests() {
        let spent = Spent {
            total: Duration::from_millis(30),
            dynamodb: Duration::from_millis(8),
            dynamodb_requests: 2,
            daraja: Duration::from_millis(20),
            daraja_requests: 1,
        };
        assert_eq!(spent.own(), Duration::from_millis(2));
        let overlapping = Spent {
            total: Duration::from_millis(5),
            ..spent
        };
        assert_eq!(overlapping.own(), Duration::ZERO);
    }

    #[test]
    fn totals_are_taken_once() {
        let totals = Totals::new();
        totals.add(Duration::from_millis(2));
        totals.add(Duration::from_millis(3));
        assert_eq!(totals.take(), (Duration::from_millis(5), 2));
        assert_eq!(totals.take(), (Duration::ZERO, 0));
    }
}
