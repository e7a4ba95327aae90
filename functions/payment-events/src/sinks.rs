//! Where events go: the event bus, and the webhook queue.

use async_trait::async_trait;
use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use aws_sdk_sqs::types::SendMessageBatchRequestEntry;
use aws_smithy_types::DateTime;

use payments::event::{PaymentEvent, SOURCE};

/// Events not taken: the index of the first one refused (those before it were taken), and why.
#[derive(Debug)]
pub struct Refused {
    pub first: usize,
    pub reason: String,
}

/// Takes events in order, in batches its service allows.
#[async_trait]
pub trait Sink: Send + Sync {
    async fn put(&self, events: &[PaymentEvent]) -> Result<(), Refused>;
}

/// EventBridge's `PutEvents` takes 10 entries per call.
const BATCH: usize = 10;

/// One custom event bus.
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus: String) -> Self {
        Self { client, bus }
    }

    fn entry(&self, event: &PaymentEvent) -> PutEventsRequestEntry {
        PutEventsRequestEntry::builder()
            .event_bus_name(&self.bus)
            .source(SOURCE)
            .detail_type(event.detail_type())
            .detail(serde_json::to_string(event).expect("an event always serialises"))
            .time(DateTime::from_millis(event.changed_at.timestamp_millis()))
            .build()
    }
}

#[async_trait]
impl Sink for EventBridgeBus {
    async fn put(&self, events: &[PaymentEvent]) -> Result<(), Refused> {
        for (chunk_index, chunk) in events.chunks(BATCH).enumerate() {
            let offset = chunk_index * BATCH;
            let refused = |at: usize, reason: String| Refused {
                first: offset + at,
                reason,
            };
            let answer = self
                .client
                .put_events()
                .set_entries(Some(chunk.iter().map(|e| self.entry(e)).collect()))
                .send()
                .await
                .map_err(|e| {
                    refused(
                        0,
                        aws_sdk_eventbridge::error::DisplayErrorContext(e).to_string(),
                    )
                })?;
            if answer.failed_entry_count() > 0 {
                let (at, entry) = answer
                    .entries()
                    .iter()
                    .enumerate()
                    .find(|(_, entry)| entry.error_code().is_some())
                    .map(|(at, entry)| (at, Some(entry)))
                    .unwrap_or((0, None));
                let reason = entry.map_or("an entry failed".to_string(), |entry| {
                    format!(
                        "{}: {}",
                        entry.error_code().unwrap_or_default(),
                        entry.error_message().unwrap_or_default()
                    )
                });
                return Err(refused(at, reason));
            }
        }
        Ok(())
    }
}

/// The webhook queue (FIFO): each payment is a message group, each event id the deduplication
/// id, so a change sent twice within SQS's five-minute window is queued once.
pub struct WebhookQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl WebhookQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self { client, url }
    }
}

#[async_trait]
impl Sink for WebhookQueue {
    async fn put(&self, events: &[PaymentEvent]) -> Result<(), Refused> {
        for (chunk_index, chunk) in events.chunks(BATCH).enumerate() {
            let offset = chunk_index * BATCH;
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, event)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(app::webhook::body(event))
                        .message_group_id(&event.checkout_request_id)
                        .message_deduplication_id(&event.event_id)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let answer = self
                .client
                .send_message_batch()
                .queue_url(&self.url)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| Refused {
                    first: offset,
                    reason: aws_sdk_sqs::error::DisplayErrorContext(e).to_string(),
                })?;
            if let Some(first) = answer
                .failed()
                .iter()
                .filter_map(|failed| failed.id().parse::<usize>().ok().map(|i| (i, failed)))
                .min_by_key(|(i, _)| *i)
            {
                return Err(Refused {
                    first: offset + first.0,
                    reason: format!("{}: {}", first.1.code(), first.1.message().unwrap_or("")),
                });
            }
        }
        Ok(())
    }
}
