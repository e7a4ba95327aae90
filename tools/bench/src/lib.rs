//! Benchmark helpers shared by the `bench` runner, the `startup` probe and the criterion
//! benches: statistics, API Gateway events, a DynamoDB request counter, a constant Daraja stub
//! and process memory readings.
//!
//! Nothing here asserts on timing: the benchmarks print figures, the tests stay deterministic.

pub mod events;
pub mod procs;
pub mod stats;
pub mod stub;
pub mod timing;

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

/// Deletes every item of `table` except the shared Daraja token, outside any measurement.
///
/// moto's `TransactWriteItems` deep-copies each table it touches (its rollback copy), so on
/// moto a push gets slower with every item in the table, which DynamoDB does not; the
/// benchmarks empty the table every few pushes to keep moto's cost flat.
pub async fn empty_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<usize, String> {
    use aws_sdk_dynamodb::types::{DeleteRequest, WriteRequest};

    let mut keys = Vec::new();
    scan_pages(
        client,
        table,
        |scan| scan.projection_expression("pk"),
        |page| {
            keys.extend(page.items.unwrap_or_default().into_iter().filter(|item| {
                item.get("pk")
                    .and_then(|pk| pk.as_s().ok())
                    .map(String::as_str)
                    != Some(dynamo::token::TOKEN_PK)
            }))
        },
    )
    .await?;
    let deleted = keys.len();
    for chunk in keys.chunks(25) {
        let mut requests: Vec<WriteRequest> = Vec::with_capacity(chunk.len());
        for key in chunk {
            let delete = DeleteRequest::builder()
                .set_key(Some(key.clone()))
                .build()
                .map_err(|e| e.to_string())?;
            requests.push(WriteRequest::builder().delete_request(delete).build());
        }
        while !requests.is_empty() {
            let out = client
                .batch_write_item()
                .request_items(table, requests)
                .send()
                .await
                .map_err(|e| {
                    format!(
                        "delete from {table}: {}",
                        aws_sdk_dynamodb::error::DisplayErrorContext(e)
                    )
                })?;
            requests = out
                .unprocessed_items
                .and_then(|mut left| left.remove(table))
                .unwrap_or_default();
        }
    }
    Ok(deleted)
}

/// How many items `table` holds (a counting scan, outside any measurement).
pub async fn count_items(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<usize, String> {
    let mut count = 0;
    scan_pages(
        client,
        table,
        |scan| scan.select(aws_sdk_dynamodb::types::Select::Count),
        |page| count += usize::try_from(page.count).unwrap_or(0),
    )
    .await?;
    Ok(count)
}

/// Scans all of `table`, the request shaped by `shape`, handing each page to `each`.
async fn scan_pages(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    shape: impl Fn(
        aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder,
    ) -> aws_sdk_dynamodb::operation::scan::builders::ScanFluentBuilder,
    mut each: impl FnMut(aws_sdk_dynamodb::operation::scan::ScanOutput),
) -> Result<(), String> {
    let mut start = None;
    loop {
        let page = shape(client.scan().table_name(table))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(|e| {
                format!(
                    "scan {table}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(e)
                )
            })?;
        start = page.last_evaluated_key.clone();
        each(page);
        if start.is_none() {
            return Ok(());
        }
    }
}
