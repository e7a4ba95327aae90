//! One batch of stream records → the events they produced, published in order; the first record
//! not fully published is reported, so the stream retries from it (Lambda's partial batch
//! response for streams: `batchItemFailures` names one sequence number).

use std::sync::Arc;

use app::batch::BatchResponse;
use app::metrics::{self, Metric};
use daraja::mask_id;
use dynamo::stream::StreamRecord;
use lambda_runtime::{Error, LambdaEvent};
use payments::event::PaymentEvent;
use serde::Deserialize;
use serde_json::Value;

use crate::sinks::Sink;

/// What the function needs, built once at cold start.
pub struct Deps {
    pub bus: Arc<dyn Sink>,
    /// `None` when no webhook is configured.
    pub webhooks: Option<Arc<dyn Sink>>,
    /// Where a record that does not decode is kept whole (the on-failure queue).
    pub quarantine: Arc<dyn Quarantine>,
}

/// Keeps a stream record that can never produce an event, with why.
#[async_trait::async_trait]
pub trait Quarantine: Send + Sync {
    async fn keep(&self, record: &Value, reason: &str) -> Result<(), String>;
}

#[derive(Debug, Deserialize)]
struct StreamEvent {
    #[serde(rename = "Records", default)]
    records: Vec<Value>,
}

pub async fn handle(deps: &Deps, event: LambdaEvent<Value>) -> Result<BatchResponse, Error> {
    let event: StreamEvent = serde_json::from_value(event.payload)?;
    let mut records = Vec::with_capacity(event.records.len());
    for value in event.records {
        // A record without a sequence number cannot be named: the whole batch fails, and the
        // stream's bisection isolates it.
        records.push((
            serde_json::from_value::<StreamRecord>(value.clone())?,
            value,
        ));
    }
    Ok(publish(deps, &records).await)
}

/// Publishes the events of `records` (each with its raw JSON), in order, and reports the first
/// record not published.
pub async fn publish(deps: &Deps, records: &[(StreamRecord, Value)]) -> BatchResponse {
    // Each event, and the index of the record it came from.
    let mut events: Vec<PaymentEvent> = Vec::new();
    let mut sources: Vec<usize> = Vec::new();
    let mut failed_at: Option<usize> = None;
    for (index, (record, raw)) in records.iter().enumerate() {
        match record.payment_event() {
            Ok(Some(event)) => {
                events.push(event);
                sources.push(index);
            }
            Ok(None) => {}
            Err(e) => {
                // No retry can decode it: kept whole for a person (alarmed), and the stream
                // goes on. Only if it cannot be kept is it reported, and retried.
                metrics::count(Metric::EventUndecodable);
                let reason = e.to_string();
                let kept = deps.quarantine.keep(raw, &reason).await;
                tracing::error!(
                    sequence_number = %record.dynamodb.sequence_number,
                    error = %reason,
                    kept = kept.is_ok(),
                    "stream record does not decode: kept in the on-failure queue"
                );
                if kept.is_err() {
                    failed_at = Some(index);
                    break;
                }
            }
        }
    }
    let mut taken = events.len();
    let sinks = std::iter::once(("event bus", &deps.bus))
        .chain(deps.webhooks.iter().map(|q| ("webhook queue", q)));
    for (name, sink) in sinks {
        if let Err(refused) = sink.put(&events[..taken]).await {
            tracing::error!(sink = name, reason = %refused.reason, "events not published: retried from the first");
            taken = taken.min(refused.first);
        }
    }
    for event in &events[..taken] {
        tracing::info!(
            event_id = %event.event_id,
            checkout_request_id = %mask_id(&event.checkout_request_id),
            previous_status = %event.previous_status,
            status = %event.status,
            "payment event published"
        );
    }
    if taken > 0 {
        metrics::emit(Metric::EventPublished, taken as f64, None);
    }
    if taken < events.len() {
        failed_at = Some(failed_at.map_or(sources[taken], |at| at.min(sources[taken])));
    }
    tracing::info!(
        records = records.len(),
        events = taken,
        failed = failed_at.is_some(),
        "stream batch"
    );
    BatchResponse::failing(failed_at.map(|at| records[at].0.dynamodb.sequence_number.clone()))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::sinks::Refused;

    /// Keeps what it took; refuses from the `refuse_from`-th event of a call.
    #[derive(Default)]
    struct Taken {
        events: Mutex<Vec<PaymentEvent>>,
        refuse_from: Option<usize>,
    }

    #[async_trait]
    impl Sink for Taken {
        async fn put(&self, events: &[PaymentEvent]) -> Result<(), Refused> {
            let take = self.refuse_from.unwrap_or(usize::MAX).min(events.len());
            self.events
                .lock()
                .unwrap()
                .extend_from_slice(&events[..take]);
            match self.refuse_from {
                Some(first) if first < events.len() => Err(Refused {
                    first,
                    reason: "throttled".into(),
                }),
                _ => Ok(()),
            }
        }
    }

    fn image(id: &str, status: &str, at: &str) -> Value {
        json!({
            "pk": {"S": format!("PAY#{id}")}, "checkout_request_id": {"S": id},
            "status": {"S": status}, "updated_at": {"S": at}, "details_recorded": {"BOOL": true},
        })
    }

    /// Keeps what it is given.
    #[derive(Default)]
    struct Kept(Mutex<Vec<String>>);

    #[async_trait]
    impl Quarantine for Kept {
        async fn keep(&self, record: &Value, _reason: &str) -> Result<(), String> {
            let seq = record["dynamodb"]["SequenceNumber"]
                .as_str()
                .unwrap_or_default();
            self.0.lock().unwrap().push(seq.to_owned());
            Ok(())
        }
    }

    fn change(seq: u32, id: &str, from: Option<&str>, to: &str) -> (StreamRecord, Value) {
        let raw = json!({
            "eventID": seq.to_string(), "eventName": if from.is_some() { "MODIFY" } else { "INSERT" },
            "dynamodb": {
                "Keys": {"pk": {"S": format!("PAY#{id}")}},
                "OldImage": from.map(|s| image(id, s, "2026-12-01T10:00:00.000Z")),
                "NewImage": image(id, to, &format!("2026-12-01T10:00:{seq:02}.000Z")),
                "SequenceNumber": format!("{seq:021}"),
            }
        });
        (serde_json::from_value(raw.clone()).unwrap(), raw)
    }

    fn deps(bus: &Arc<Taken>, queue: &Arc<Taken>) -> Deps {
        Deps {
            bus: bus.clone(),
            webhooks: Some(queue.clone()),
            quarantine: Arc::new(Kept::default()),
        }
    }

    #[tokio::test]
    async fn each_status_change_is_published_once_to_the_bus_and_the_webhook_queue() {
        let (bus, queue) = (Arc::new(Taken::default()), Arc::new(Taken::default()));
        let records = [
            change(1, "a", None, "PENDING"),
            change(2, "a", Some("PENDING"), "COMPLETED"),
            change(3, "b", Some("PENDING"), "FAILED"),
            change(4, "b", Some("FAILED"), "FAILED"),
        ];
        let answer = publish(&deps(&bus, &queue), &records).await;
        assert_eq!(answer, BatchResponse::default());
        for sink in [&bus, &queue] {
            let taken = sink.events.lock().unwrap();
            let ids: Vec<_> = taken
                .iter()
                .map(|e| (e.checkout_request_id.as_str(), e.status.as_str()))
                .collect();
            assert_eq!(ids, [("a", "COMPLETED"), ("b", "FAILED")]);
        }
    }

    #[tokio::test]
    async fn a_refused_event_reports_its_record_and_nothing_after_it_is_queued() {
        let bus = Arc::new(Taken {
            refuse_from: Some(1),
            ..Taken::default()
        });
        let queue = Arc::new(Taken::default());
        let records = [
            change(1, "a", Some("PENDING"), "COMPLETED"),
            change(2, "b", None, "PENDING"),
            change(3, "c", Some("PENDING"), "FAILED"),
        ];
        let answer = publish(&deps(&bus, &queue), &records).await;
        assert_eq!(answer.failures[0].item_identifier, format!("{:021}", 3));
        assert_eq!(queue.events.lock().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn an_undecodable_record_is_kept_whole_and_the_stream_goes_on() {
        let (bus, queue) = (Arc::new(Taken::default()), Arc::new(Taken::default()));
        let kept = Arc::new(Kept::default());
        let mut poison = change(2, "b", Some("PENDING"), "COMPLETED");
        poison
            .0
            .dynamodb
            .new_image
            .as_mut()
            .unwrap()
            .insert("status".into(), json!({"S": "PAID"}));
        let records = [
            change(1, "a", Some("PENDING"), "COMPLETED"),
            poison,
            change(3, "c", Some("PENDING"), "FAILED"),
        ];
        let deps = Deps {
            quarantine: kept.clone(),
            ..deps(&bus, &queue)
        };
        let answer = publish(&deps, &records).await;
        assert_eq!(answer, BatchResponse::default());
        assert_eq!(*kept.0.lock().unwrap(), [format!("{:021}", 2)]);
        assert_eq!(bus.events.lock().unwrap().len(), 2);
        assert_eq!(queue.events.lock().unwrap().len(), 2);
    }
}
