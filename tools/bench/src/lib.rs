//! Benchmark helpers shared by the `bench` runner, the `startup` probe and the criterion
//! benches: statistics, API Gateway events, a DynamoDB request counter, a constant Daraja stub
//! and process memory readings.
//!
//! Nothing here asserts on timing: the benchmarks print figures, the tests stay deterministic.

pub mod events;
pub mod procs;
pub mod stats;
pub mod stub;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::{ConfigBag, Intercept, RuntimeComponents};

/// Counts every request a DynamoDB client transmits (each attempt, retries included), by
/// operation, from the `X-Amz-Target` header (`DynamoDB_20120810.UpdateItem` → `UpdateItem`).
#[derive(Debug, Clone, Default)]
pub struct CountRequests {
    total: Arc<AtomicUsize>,
    by_operation: Arc<Mutex<Vec<(String, usize)>>>,
}

impl CountRequests {
    pub fn total(&self) -> usize {
        self.total.load(Ordering::SeqCst)
    }

    /// `(operation, requests)` in the order each operation was first seen.
    pub fn by_operation(&self) -> Vec<(String, usize)> {
        self.by_operation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn reset(&self) {
        self.total.store(0, Ordering::SeqCst);
        self.by_operation
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }

    /// `client` with this counter attached.
    pub fn attach(&self, client: &aws_sdk_dynamodb::Client) -> aws_sdk_dynamodb::Client {
        aws_sdk_dynamodb::Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(self.clone())
                .build(),
        )
    }
}

impl Intercept for CountRequests {
    fn name(&self) -> &'static str {
        "CountRequests"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        self.total.fetch_add(1, Ordering::SeqCst);
        let operation = context
            .request()
            .headers()
            .get("x-amz-target")
            .and_then(|target| target.rsplit('.').next())
            .unwrap_or("?")
            .to_string();
        let mut seen = self
            .by_operation
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match seen.iter_mut().find(|(op, _)| *op == operation) {
            Some((_, n)) => *n += 1,
            None => seen.push((operation, 1)),
        }
        Ok(())
    }
}
