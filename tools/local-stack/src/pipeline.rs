//! Payment events on loopback: the bus, the queues, and the two event sources Lambda would run.
//!
//! What stands in for what:
//! - moto's DynamoDB Streams is the table's stream; moto's EventBridge the bus (with a rule, as a
//!   merchant on AWS would add, routing every payment event to a queue the tests read); moto's
//!   SQS the webhook queue, its dead-letter queue and the stream's on-failure queue.
//! - moto runs no event source mapping without Docker (and a mapping on a stream empties it
//!   after each write), so the two pollers here do what Lambda's do, with the settings the
//!   template gives them: the stream poller reads the shard from the oldest record
//!   (`TRIM_HORIZON`), drops records the `FilterCriteria` pattern does not match, invokes the
//!   consumer with batches of up to `BatchSize` gathered for up to
//!   `MaximumBatchingWindowInSeconds` in Lambda's event shape, retries from the record a
//!   partial batch response names, splits a batch that fails the function in two
//!   (`BisectBatchOnFunctionError`), and once its retries are spent (`MaximumRetryAttempts`, or
//!   with -1 `MaximumRecordAgeInSeconds`) sends the batch's place in the stream to the
//!   on-failure queue and moves on. The SQS poller receives up to `BatchSize` messages with their attributes, invokes
//!   the delivery function, and deletes the messages its answer does not name.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_sdk_sqs::types::{MessageSystemAttributeName, QueueAttributeName};
use serde_json::{json, Value};
use tokio::task::JoinHandle;

use crate::rie::RiePool;
use crate::template::Template;
use crate::Function;

/// Payment events in the stack: the bus and the stream consumer, and optionally a webhook.
#[derive(Debug, Clone, Default)]
pub struct EventsOptions {
    pub webhook: Option<WebhookOptions>,
}

/// Where the stack's webhooks go and how they are retried (shorter than the deployed defaults,
/// so a test sees a retry, or a webhook parked, in seconds).
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    pub url: String,
    pub secret: String,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub retry_for: Duration,
    pub timeout: Duration,
}

impl WebhookOptions {
    /// Retries after 1 s, 2 s, 2 s …, for `retry_for`; an attempt waits 2 s at most.
    pub fn local(url: String, secret: String, retry_for: Duration) -> Self {
        Self {
            url,
            secret,
            backoff_base: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(2),
            retry_for,
            timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("payment events: {0}")]
pub struct PipelineError(String);

fn failed(what: &str) -> impl Fn(String) -> PipelineError + '_ {
    move |detail| PipelineError(format!("{what}: {detail}"))
}

fn sdk_error<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_sqs::error::SdkError<E, R>,
) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(e).to_string()
}

/// What the pollers did, for tests and the bench.
#[derive(Debug, Default)]
pub struct PipelineStats {
    /// Stream records read (before filtering).
    pub stream_records: AtomicU64,
    /// Invocations of the stream consumer (retries included).
    pub consumer_invocations: AtomicU64,
    /// Batches handed to the on-failure queue.
    pub stream_failures: AtomicU64,
    /// Invocations of the delivery function.
    pub delivery_invocations: AtomicU64,
}

/// The running pipeline. Its pollers stop when it is dropped.
pub struct Pipeline {
    sqs: aws_sdk_sqs::Client,
    pub bus: String,
    tap_queue: String,
    pub failure_queue: String,
    pub webhook_queue: Option<String>,
    pub dead_letter_queue: Option<String>,
    tapped: Mutex<Vec<Value>>,
    stats: Arc<PipelineStats>,
    pollers: Vec<JoinHandle<()>>,
}

async fn create_queue(
    sqs: &aws_sdk_sqs::Client,
    name: &str,
    attributes: &[(QueueAttributeName, String)],
) -> Result<(String, String), PipelineError> {
    let created = sqs
        .create_queue()
        .queue_name(name)
        .set_attributes(Some(attributes.iter().cloned().collect()))
        .send()
        .await
        .map_err(|e| failed("CreateQueue")(sdk_error(e)))?;
    let url = created.queue_url().unwrap_or_default().to_owned();
    let arn = sqs
        .get_queue_attributes()
        .queue_url(&url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await
        .map_err(|e| failed("GetQueueAttributes")(sdk_error(e)))?
        .attributes()
        .and_then(|a| a.get(&QueueAttributeName::QueueArn))
        .cloned()
        .unwrap_or_default();
    Ok((url, arn))
}

/// An integer property of a template value, as text (SQS attributes are strings).
fn number(properties: &Option<serde_yaml::Value>, key: &str, default: u64) -> u64 {
    properties
        .as_ref()
        .and_then(|p| p.get(key))
        .and_then(serde_yaml::Value::as_u64)
        .unwrap_or(default)
}

impl Pipeline {
    /// Creates the bus, its rule and the queues in moto at `endpoint`; answers the pipeline
    /// and the variables the functions need.
    pub async fn create(
        endpoint: &str,
        suffix: &str,
        template: &Template,
        options: &EventsOptions,
    ) -> Result<(Pipeline, Vec<(String, String)>), PipelineError> {
        let config = crate::dynamo::sdk_config(endpoint).await;
        let sqs = aws_sdk_sqs::Client::new(&config);
        let bus_client = aws_sdk_eventbridge::Client::new(&config);
        let bus = format!("payments-{suffix}");
        let events_error = |what: &'static str| {
            move |e: &dyn std::error::Error| PipelineError(format!("{what}: {e}"))
        };
        bus_client
            .create_event_bus()
            .name(&bus)
            .send()
            .await
            .map_err(|e| events_error("CreateEventBus")(&e))?;
        let (tap_queue, tap_arn) = create_queue(&sqs, &format!("bus-tap-{suffix}"), &[]).await?;
        bus_client
            .put_rule()
            .event_bus_name(&bus)
            .name("every-payment-event")
            .event_pattern(json!({"source": [payments::event::SOURCE]}).to_string())
            .send()
            .await
            .map_err(|e| events_error("PutRule")(&e))?;
        bus_client
            .put_targets()
            .event_bus_name(&bus)
            .rule("every-payment-event")
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("tap")
                    .arn(tap_arn)
                    .build()
                    .map_err(|e| events_error("PutTargets")(&e))?,
            )
            .send()
            .await
            .map_err(|e| events_error("PutTargets")(&e))?;
        let failure_retention = number(
            &template.resource_properties("PaymentEventsFailedQueue"),
            "MessageRetentionPeriod",
            1_209_600,
        );
        let (failure_queue, _) = create_queue(
            &sqs,
            &format!("stream-failures-{suffix}"),
            &[(
                QueueAttributeName::MessageRetentionPeriod,
                failure_retention.to_string(),
            )],
        )
        .await?;
        let mut env = vec![
            ("EVENT_BUS_NAME".to_string(), bus.clone()),
            ("EVENTS_FAILED_QUEUE_URL".to_string(), failure_queue.clone()),
            (
                "AWS_ENDPOINT_URL_EVENTBRIDGE".to_string(),
                endpoint.to_string(),
            ),
            ("AWS_ENDPOINT_URL_SQS".to_string(), endpoint.to_string()),
        ];
        let (mut webhook_queue, mut dead_letter_queue) = (None, None);
        if let Some(webhook) = &options.webhook {
            let fifo = (QueueAttributeName::FifoQueue, "true".to_string());
            let (dlq_url, dlq_arn) = create_queue(
                &sqs,
                &format!("webhooks-dead-{suffix}.fifo"),
                std::slice::from_ref(&fifo),
            )
            .await?;
            let queue = template.resource_properties("WebhookQueue");
            let max_receive = queue
                .as_ref()
                .and_then(|q| q.get("RedrivePolicy"))
                .and_then(|r| r.get("maxReceiveCount"))
                .and_then(serde_yaml::Value::as_u64)
                .unwrap_or(100);
            let redrive = json!({"deadLetterTargetArn": dlq_arn, "maxReceiveCount": max_receive});
            let (url, _) = create_queue(
                &sqs,
                &format!("webhooks-{suffix}.fifo"),
                &[
                    fifo,
                    (
                        QueueAttributeName::VisibilityTimeout,
                        number(&queue, "VisibilityTimeout", 30).to_string(),
                    ),
                    (QueueAttributeName::RedrivePolicy, redrive.to_string()),
                ],
            )
            .await?;
            let seconds = |d: Duration| d.as_secs().to_string();
            env.extend(
                [
                    ("WEBHOOK_QUEUE_URL", url.clone()),
                    ("WEBHOOK_DEAD_LETTER_QUEUE_URL", dlq_url.clone()),
                    ("WEBHOOK_URL", webhook.url.clone()),
                    ("WEBHOOK_SIGNING_SECRET", webhook.secret.clone()),
                    (
                        "WEBHOOK_BACKOFF_BASE_SECONDS",
                        seconds(webhook.backoff_base),
                    ),
                    ("WEBHOOK_BACKOFF_CAP_SECONDS", seconds(webhook.backoff_cap)),
                    ("WEBHOOK_RETRY_FOR_SECONDS", seconds(webhook.retry_for)),
                    (
                        "WEBHOOK_TIMEOUT_MS",
                        webhook.timeout.as_millis().to_string(),
                    ),
                ]
                .map(|(name, value)| (name.to_string(), value)),
            );
            webhook_queue = Some(url);
            dead_letter_queue = Some(dlq_url);
        }
        Ok((
            Pipeline {
                sqs,
                bus,
                tap_queue,
                failure_queue,
                webhook_queue,
                dead_letter_queue,
                tapped: Mutex::new(Vec::new()),
                stats: Arc::default(),
                pollers: Vec::new(),
            },
            env,
        ))
    }

    /// Starts the stream poller on `stream_arn` and, with a webhook, the SQS pollers.
    pub fn start_pollers(
        &mut self,
        endpoint: &str,
        stream_arn: String,
        template: &Template,
        consumer: RiePool,
        delivery: Option<RiePool>,
    ) {
        let source = template.event_source(Function::PaymentEvents.name(), "DynamoDB");
        let stream = StreamPoller {
            // moto's server drops idle connections: a new one per call, and a deadline.
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .pool_max_idle_per_host(0)
                .build()
                .expect("an HTTP client without TLS builds"),
            endpoint: endpoint.to_string(),
            stream_arn,
            batch_size: number(&source, "BatchSize", 100) as usize,
            window: Duration::from_secs(number(&source, "MaximumBatchingWindowInSeconds", 0)),
            // -1: no limit but the records' age.
            max_retries: source
                .as_ref()
                .and_then(|s| s.get("MaximumRetryAttempts"))
                .and_then(serde_yaml::Value::as_i64)
                .and_then(|n| u32::try_from(n).ok()),
            max_age: source
                .as_ref()
                .and_then(|s| s.get("MaximumRecordAgeInSeconds"))
                .and_then(serde_yaml::Value::as_i64)
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_secs),
            bisect: source
                .as_ref()
                .and_then(|s| s.get("BisectBatchOnFunctionError"))
                .and_then(serde_yaml::Value::as_bool)
                .unwrap_or(false),
            filters: filter_patterns(&source),
            consumer,
            sqs: self.sqs.clone(),
            failure_queue: self.failure_queue.clone(),
            stats: self.stats.clone(),
        };
        self.pollers.push(tokio::spawn(stream.run()));
        if let (Some(queue), Some(delivery)) = (&self.webhook_queue, delivery) {
            let source = template.event_source(Function::WebhookDelivery.name(), "SQS");
            // Lambda polls a queue with several pollers at once; two keep a slow payment from
            // holding up the next batch.
            for _ in 0..2 {
                let poller = SqsPoller {
                    sqs: self.sqs.clone(),
                    queue: queue.clone(),
                    batch_size: number(&source, "BatchSize", 10).min(10) as i32,
                    function: delivery.clone(),
                    stats: self.stats.clone(),
                };
                self.pollers.push(tokio::spawn(poller.run()));
            }
        }
    }

    pub fn stats(&self) -> &PipelineStats {
        &self.stats
    }

    /// Every event the bus's rule delivered so far (EventBridge's envelope: `id`, `source`,
    /// `detail-type`, `detail` …), in arrival order.
    pub async fn bus_events(&self) -> Vec<Value> {
        let fresh = drain(&self.sqs, &self.tap_queue).await;
        let mut tapped = self.tapped.lock().unwrap_or_else(PoisonError::into_inner);
        tapped.extend(
            fresh
                .iter()
                .filter_map(|body| serde_json::from_str::<Value>(body).ok()),
        );
        tapped.clone()
    }

    /// The bodies in the webhook dead-letter queue (read, then made visible again).
    pub async fn dead_letters(&self) -> Vec<Value> {
        match &self.dead_letter_queue {
            Some(queue) => peek(&self.sqs, queue).await,
            None => Vec::new(),
        }
    }

    /// The batch descriptions in the stream's on-failure queue (read, then visible again).
    pub async fn stream_failures(&self) -> Vec<Value> {
        peek(&self.sqs, &self.failure_queue).await
    }

    /// Puts `body` in the webhook dead-letter queue, as the delivery function parks a webhook.
    pub async fn seed_dead_letter(&self, group: &str, body: &str) -> Result<(), PipelineError> {
        let queue = self
            .dead_letter_queue
            .as_ref()
            .ok_or_else(|| PipelineError("no webhook queues".into()))?;
        self.sqs
            .send_message()
            .queue_url(queue)
            .message_body(body)
            .message_group_id(group)
            .message_deduplication_id(format!("seed-{group}"))
            .send()
            .await
            .map(|_| ())
            .map_err(|e| failed("SendMessage")(sdk_error(e)))
    }

    pub fn stop(&mut self) {
        for poller in self.pollers.drain(..) {
            poller.abort();
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Receives every message now in `queue`, each kept invisible for 30 s.
async fn receive_all(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<aws_sdk_sqs::types::Message> {
    let mut messages = Vec::new();
    while let Ok(answer) = sqs
        .receive_message()
        .queue_url(queue)
        .max_number_of_messages(10)
        .visibility_timeout(30)
        .send()
        .await
    {
        if answer.messages().is_empty() {
            break;
        }
        messages.extend_from_slice(answer.messages());
    }
    messages
}

/// Receives and deletes every message now in `queue`; answers their bodies.
async fn drain(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<String> {
    let mut bodies = Vec::new();
    for message in receive_all(sqs, queue).await {
        bodies.push(message.body().unwrap_or_default().to_owned());
        if let Some(handle) = message.receipt_handle() {
            let _ = sqs
                .delete_message()
                .queue_url(queue)
                .receipt_handle(handle)
                .send()
                .await;
        }
    }
    bodies
}

/// Reads every message now in `queue` and makes each visible again.
async fn peek(sqs: &aws_sdk_sqs::Client, queue: &str) -> Vec<Value> {
    let mut seen = Vec::new();
    for message in receive_all(sqs, queue).await {
        seen.push(serde_json::from_str(message.body().unwrap_or_default()).unwrap_or(Value::Null));
        if let Some(handle) = message.receipt_handle() {
            let _ = sqs
                .change_message_visibility()
                .queue_url(queue)
                .receipt_handle(handle)
                .visibility_timeout(0)
                .send()
                .await;
        }
    }
    seen
}

/// The `FilterCriteria` patterns of an event source, as JSON.
fn filter_patterns(source: &Option<serde_yaml::Value>) -> Vec<Value> {
    source
        .as_ref()
        .and_then(|s| s.get("FilterCriteria"))
        .and_then(|f| f.get("Filters"))
        .and_then(serde_yaml::Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(|filter| filter.get("Pattern")?.as_str())
        .filter_map(|pattern| serde_json::from_str(pattern).ok())
        .collect()
}

/// Whether `record` matches an event filter `pattern`: every key of the pattern present, a
/// list of allowed values (a string, or `{"prefix": …}`) at its leaves. Only the forms the
/// template uses are known; any other leaf matches nothing.
fn matches(pattern: &Value, record: &Value) -> bool {
    match pattern {
        Value::Object(keys) => keys
            .iter()
            .all(|(key, inner)| record.get(key).is_some_and(|value| matches(inner, value))),
        Value::Array(allowed) => allowed.iter().any(|allowed| match allowed {
            Value::String(_) => allowed == record,
            Value::Object(rule) => match (rule.get("prefix"), record.as_str()) {
                (Some(Value::String(prefix)), Some(value)) => value.starts_with(prefix.as_str()),
                _ => false,
            },
            _ => false,
        }),
        _ => false,
    }
}

/// Lambda's event source for the table's stream.
struct StreamPoller {
    http: reqwest::Client,
    endpoint: String,
    stream_arn: String,
    batch_size: usize,
    /// How long a batch may wait for more records (`MaximumBatchingWindowInSeconds`).
    window: Duration,
    /// `None`: retried until the records are older than `max_age`.
    max_retries: Option<u32>,
    max_age: Option<Duration>,
    bisect: bool,
    filters: Vec<Value>,
    consumer: RiePool,
    sqs: aws_sdk_sqs::Client,
    failure_queue: String,
    stats: Arc<PipelineStats>,
}

const IDLE: Duration = Duration::from_millis(50);

impl StreamPoller {
    async fn call(&self, operation: &str, body: Value) -> Result<Value, String> {
        let answer = self
            .http
            .post(&self.endpoint)
            .header(
                "X-Amz-Target",
                format!("DynamoDBStreams_20120810.{operation}"),
            )
            .header("Content-Type", "application/x-amz-json-1.0")
            .header(
                "Authorization",
                "AWS4-HMAC-SHA256 Credential=test/20261201/us-east-1/dynamodb/aws4_request, \
                 SignedHeaders=host, Signature=0",
            )
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = answer.status();
        let text = answer.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{operation}: {status} {text}"));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    /// An iterator after `last` (the last sequence number read), or from the oldest record.
    async fn iterator(&self, last: Option<&str>) -> Result<String, String> {
        let stream = self
            .call("DescribeStream", json!({"StreamArn": self.stream_arn}))
            .await?;
        let shard = stream["StreamDescription"]["Shards"][0]["ShardId"]
            .as_str()
            .ok_or("the stream has no shard")?
            .to_owned();
        let position = match last {
            Some(sequence) => json!({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER",
                                     "SequenceNumber": sequence}),
            None => json!({"ShardIteratorType": "TRIM_HORIZON"}),
        };
        let mut request = json!({"StreamArn": self.stream_arn, "ShardId": shard});
        request
            .as_object_mut()
            .expect("an object")
            .extend(position.as_object().expect("an object").clone());
        let iterator = self.call("GetShardIterator", request).await?;
        iterator["ShardIterator"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| "no shard iterator".to_string())
    }

    async fn run(self) {
        let mut last: Option<String> = None;
        let mut iterator: Option<String> = None;
        // Records read but not yet handed over, and when the batching window closes.
        let mut batch: Vec<Value> = Vec::new();
        let mut window_ends = tokio::time::Instant::now();
        loop {
            // Taken again after the last record read when a call failed (moto restarted, an
            // iterator it no longer keeps).
            let current = match iterator.take() {
                Some(current) => Ok(current),
                None => self.iterator(last.as_deref()).await,
            };
            let room = self.batch_size - batch.len();
            let page = match current {
                Ok(current) => {
                    self.call(
                        "GetRecords",
                        json!({"ShardIterator": current, "Limit": room}),
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            let records: Vec<Value> = match page {
                Ok(page) => {
                    iterator = page["NextShardIterator"].as_str().map(str::to_owned);
                    page["Records"].as_array().cloned().unwrap_or_default()
                }
                Err(_) => Vec::new(),
            };
            if let Some(sequence) = records
                .last()
                .and_then(|r| r["dynamodb"]["SequenceNumber"].as_str())
            {
                last = Some(sequence.to_owned());
            }
            self.stats
                .stream_records
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            let matching = records
                .into_iter()
                .map(|mut record| {
                    record["eventSourceARN"] = Value::String(self.stream_arn.clone());
                    record
                })
                .filter(|record| {
                    self.filters.is_empty() || self.filters.iter().any(|p| matches(p, record))
                });
            for record in matching {
                if batch.is_empty() {
                    window_ends = tokio::time::Instant::now() + self.window;
                }
                batch.push(record);
            }
            // Handed over when full or when the window (MaximumBatchingWindowInSeconds) since
            // its first record has passed, as Lambda does.
            let full = batch.len() >= self.batch_size;
            if !batch.is_empty() && (full || tokio::time::Instant::now() >= window_ends) {
                self.deliver(std::mem::take(&mut batch)).await;
                continue;
            }
            if !full {
                tokio::time::sleep(IDLE).await;
            }
        }
    }

    /// One batch to its end: published, or handed to the on-failure queue.
    async fn deliver(&self, batch: Vec<Value>) {
        let mut work: VecDeque<(Vec<Value>, u32)> = VecDeque::from([(batch, 0)]);
        while let Some((batch, retries)) = work.pop_front() {
            self.stats
                .consumer_invocations
                .fetch_add(1, Ordering::Relaxed);
            let answer = self
                .consumer
                .invoke(&json!({"Records": batch}))
                .await
                .unwrap_or_else(|e| Value::String(e.to_string()));
            let failed_at = match answer.get("batchItemFailures").and_then(Value::as_array) {
                Some(failures) => failures
                    .iter()
                    .filter_map(|f| f["itemIdentifier"].as_str())
                    .filter_map(|seq| {
                        batch
                            .iter()
                            .position(|r| r["dynamodb"]["SequenceNumber"].as_str() == Some(seq))
                    })
                    .min(),
                // A function error, a timeout, or an answer that is not a batch response:
                // the whole batch failed.
                None => Some(0),
            };
            let Some(at) = failed_at else { continue };
            let function_error = answer.get("batchItemFailures").is_none();
            let rest: Vec<Value> = batch[at..].to_vec();
            if self.exhausted(retries, &rest) {
                if self.bisect && rest.len() > 1 {
                    // Out of retries: split until the failing record stands alone.
                    let (first, second) = rest.split_at(rest.len() / 2);
                    work.push_front((second.to_vec(), retries));
                    work.push_front((first.to_vec(), retries));
                } else {
                    self.give_up(&rest, retries + 1).await;
                }
                continue;
            }
            tokio::time::sleep(Duration::from_millis(20) * (retries + 1)).await;
            if function_error && self.bisect && rest.len() > 1 {
                let (first, second) = rest.split_at(rest.len() / 2);
                work.push_front((second.to_vec(), retries + 1));
                work.push_front((first.to_vec(), retries + 1));
            } else {
                work.push_front((rest, retries + 1));
            }
        }
    }

    /// Whether a failing batch has had its retries: their number, or its first record's age.
    fn exhausted(&self, retries: u32, batch: &[Value]) -> bool {
        let too_many = self.max_retries.is_some_and(|max| retries >= max);
        let created = batch
            .first()
            .and_then(|r| r["dynamodb"]["ApproximateCreationDateTime"].as_f64());
        let now = chrono::Utc::now().timestamp() as f64;
        let too_old = match (self.max_age, created) {
            (Some(age), Some(created)) => now - created > age.as_secs_f64(),
            _ => false,
        };
        too_many || too_old
    }

    /// What Lambda sends the on-failure destination: the batch's place in the stream.
    async fn give_up(&self, batch: &[Value], invocations: u32) {
        let seq = |record: Option<&Value>| record.map(|r| r["dynamodb"]["SequenceNumber"].clone());
        let description = json!({
            "requestContext": {
                "condition": "RetryAttemptsExhausted",
                "approximateInvokeCount": invocations,
            },
            "version": "1.0",
            "timestamp": chrono::Utc::now().to_rfc3339(),
            "DDBStreamBatchInfo": {
                "streamArn": self.stream_arn,
                "startSequenceNumber": seq(batch.first()),
                "endSequenceNumber": seq(batch.last()),
                "batchSize": batch.len(),
            },
        });
        self.stats.stream_failures.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sqs
            .send_message()
            .queue_url(&self.failure_queue)
            .message_body(description.to_string())
            .send()
            .await;
    }
}

/// Lambda's event source for the webhook queue.
struct SqsPoller {
    sqs: aws_sdk_sqs::Client,
    queue: String,
    batch_size: i32,
    function: RiePool,
    stats: Arc<PipelineStats>,
}

impl SqsPoller {
    async fn run(self) {
        loop {
            let received = self
                .sqs
                .receive_message()
                .queue_url(&self.queue)
                .max_number_of_messages(self.batch_size)
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await;
            let messages = match received {
                Ok(answer) => answer.messages().to_vec(),
                Err(_) => Vec::new(),
            };
            if messages.is_empty() {
                tokio::time::sleep(IDLE).await;
                continue;
            }
            let records: Vec<Value> = messages
                .iter()
                .map(|m| {
                    let attributes: serde_json::Map<String, Value> = m
                        .attributes()
                        .into_iter()
                        .flatten()
                        .map(|(k, v)| (k.as_str().to_owned(), Value::String(v.clone())))
                        .collect();
                    json!({
                        "messageId": m.message_id(),
                        "receiptHandle": m.receipt_handle(),
                        "body": m.body(),
                        "attributes": attributes,
                        "messageAttributes": {},
                        "md5OfBody": m.md5_of_body(),
                        "eventSource": "aws:sqs",
                        "awsRegion": "us-east-1",
                    })
                })
                .collect();
            self.stats
                .delivery_invocations
                .fetch_add(1, Ordering::Relaxed);
            let answer = self
                .function
                .invoke(&json!({"Records": records}))
                .await
                .unwrap_or(Value::Null);
            // A function error leaves every message to its visibility timeout, as Lambda does.
            let Some(failures) = answer.get("batchItemFailures").and_then(Value::as_array) else {
                continue;
            };
            let left: Vec<&str> = failures
                .iter()
                .filter_map(|f| f["itemIdentifier"].as_str())
                .collect();
            for message in &messages {
                if left.contains(&message.message_id().unwrap_or_default()) {
                    continue;
                }
                if let Some(handle) = message.receipt_handle() {
                    let _ = self
                        .sqs
                        .delete_message()
                        .queue_url(&self.queue)
                        .receipt_handle(handle)
                        .send()
                        .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_templates_filter_passes_payment_items_only() {
        let pattern: Value =
            serde_json::from_str(r#"{"dynamodb": {"Keys": {"pk": {"S": [{"prefix": "PAY#"}]}}}}"#)
                .unwrap();
        let record = |pk: &str| json!({"dynamodb": {"Keys": {"pk": {"S": pk}}}});
        assert!(matches(&pattern, &record("PAY#ws_CO_1")));
        assert!(!matches(&pattern, &record("PHONE#254708374149")));
        assert!(!matches(&pattern, &json!({"dynamodb": {}})));
    }
}
