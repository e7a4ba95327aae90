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

/// The on-failure queue, also where a record that does not decode is kept.
pub struct FailedQueue {
    client: aws_sdk_sqs::Client,
    url: String,
}

impl FailedQueue {
    pub fn new(client: aws_sdk_sqs::Client, url: String) -> Self {
        Self { client, url }
    }
}

#[async_trait]
impl crate::handler::Quarantine for FailedQueue {
    async fn keep(&self, record: &serde_json::Value, reason: &str) -> Result<(), String> {
        let body =
            serde_json::json!({"condition": "Undecodable", "reason": reason, "record": record});
        self.client
            .send_message()
            .queue_url(&self.url)
            .message_body(body.to_string())
            .send()
            .await
            .map(|_| ())
            .map_err(|e| aws_sdk_sqs::error::DisplayErrorContext(e).to_string())
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

/// Consecutive runs of at most [`BATCH`] events, each payment at most once per run: SQS takes
/// a batch entry by entry, and a later event of a payment accepted while its earlier one was
/// refused would be queued ahead of it.
fn runs(events: &[PaymentEvent]) -> Vec<(usize, &[PaymentEvent])> {
    let mut runs = Vec::new();
    let mut start = 0;
    for (i, event) in events.iter().enumerate() {
        let run = &events[start..i];
        let repeats = run
            .iter()
            .any(|e| e.checkout_request_id == event.checkout_request_id);
        if run.len() == BATCH || repeats {
            runs.push((start, run));
            start = i;
        }
    }
    if start < events.len() {
        runs.push((start, &events[start..]));
    }
    runs
}

#[async_trait]
impl Sink for WebhookQueue {
    async fn put(&self, events: &[PaymentEvent]) -> Result<(), Refused> {
        for (offset, chunk) in runs(events) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use payments::event::change_event;
    use payments::{PaymentRecord, PaymentStatus};

    fn event(id: &str, status: PaymentStatus) -> PaymentEvent {
        let at = payments::timestamp::parse("2026-12-01T10:00:00.000Z").unwrap();
        let mut record = PaymentRecord::blank(id, status, at);
        record.details_recorded = true;
        change_event(None, Some(&record)).unwrap()
    }

    #[test]
    fn a_payment_appears_once_per_webhook_batch_and_batches_keep_the_order() {
        use PaymentStatus::{Completed, NeedsReview};
        let events = [
            event("a", Completed),
            event("b", Completed),
            event("a", NeedsReview),
            event("c", Completed),
        ];
        let runs: Vec<(usize, Vec<&str>)> = runs(&events)
            .into_iter()
            .map(|(at, run)| {
                (
                    at,
                    run.iter().map(|e| e.checkout_request_id.as_str()).collect(),
                )
            })
            .collect();
        assert_eq!(runs, [(0, vec!["a", "b"]), (2, vec!["a", "c"])]);
        let many: Vec<_> = (0..25).map(|i| event(&i.to_string(), Completed)).collect();
        let sizes: Vec<usize> = super::runs(&many).iter().map(|(_, r)| r.len()).collect();
        assert_eq!(sizes, [10, 10, 5]);
    }
}
