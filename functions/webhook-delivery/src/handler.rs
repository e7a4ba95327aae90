//! One batch of queued webhooks → one attempt each, payments side by side, each payment's in
//! order: after a payment's webhook fails, its later ones in the batch wait (reported failed
//! without an attempt), so a merchant never receives a payment's events out of order.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use app::batch::BatchResponse;
use app::config::ConfigError;
use app::metrics::{self, Metric};
use app::webhook::{backoff, describe, Attempt, Delivery, SigningSecrets};
use lambda_runtime::{Error, LambdaEvent};
use serde::Deserialize;
use serde_json::Value;

use crate::config::SecretCache;
use crate::queue::WebhookQueues;

/// Where the signing secrets come from (the cache in production, fixed ones in tests).
#[async_trait::async_trait]
pub trait Secrets: Send + Sync {
    async fn secrets(&self) -> Result<SigningSecrets, ConfigError>;
}

#[async_trait::async_trait]
impl Secrets for SecretCache {
    async fn secrets(&self) -> Result<SigningSecrets, ConfigError> {
        self.get().await
    }
}

pub struct Deps<S = SecretCache> {
    pub delivery: Delivery,
    pub secrets: S,
    pub queue: Arc<dyn WebhookQueues>,
    /// How long after it was queued a failing webhook is still retried.
    pub retry_for: Duration,
}

/// One SQS message of Lambda's event, with what a delivery reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SqsRecord {
    message_id: String,
    receipt_handle: String,
    body: String,
    #[serde(default)]
    attributes: HashMap<String, String>,
}

/// A queued webhook.
#[derive(Debug, Clone)]
pub struct QueuedWebhook {
    pub message_id: String,
    pub receipt_handle: String,
    pub body: String,
    /// The payment (the message group).
    pub group: String,
    /// This attempt's number (SQS's receive count).
    pub attempt: u32,
    /// When it was queued, unix milliseconds.
    pub queued_at_ms: i64,
}

impl From<SqsRecord> for QueuedWebhook {
    fn from(record: SqsRecord) -> Self {
        let number = |name: &str| {
            record
                .attributes
                .get(name)
                .and_then(|v| v.parse::<i64>().ok())
        };
        Self {
            attempt: number("ApproximateReceiveCount").map_or(1, |n| n.max(1) as u32),
            queued_at_ms: number("SentTimestamp").unwrap_or(0),
            group: record
                .attributes
                .get("MessageGroupId")
                .cloned()
                .unwrap_or_else(|| record.message_id.clone()),
            message_id: record.message_id,
            receipt_handle: record.receipt_handle,
            body: record.body,
        }
    }
}

#[derive(Debug, Deserialize)]
struct SqsEvent {
    #[serde(rename = "Records", default)]
    records: Vec<SqsRecord>,
}

/// `{"replay_dead_letters": {"max": N}}` (README, "Payment events and webhooks"): moves up to
/// `N` (default 100) parked webhooks back onto the queue, where they are delivered as new.
#[derive(Debug, Deserialize)]
struct Replay {
    #[serde(default = "default_replay")]
    max: usize,
}

fn default_replay() -> usize {
    100
}

pub async fn handle<S: Secrets>(deps: &Deps<S>, event: LambdaEvent<Value>) -> Result<Value, Error> {
    if let Some(replay) = event.payload.get("replay_dead_letters") {
        let replay: Replay = serde_json::from_value(replay.clone())?;
        let replayed = deps.queue.replay(replay.max).await?;
        tracing::info!(replayed, "parked webhooks moved back onto the queue");
        return Ok(serde_json::json!({ "replayed": replayed }));
    }
    let event: SqsEvent = serde_json::from_value(event.payload)?;
    let webhooks: Vec<QueuedWebhook> = event.records.into_iter().map(Into::into).collect();
    let secrets = deps.secrets.secrets().await?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    Ok(serde_json::to_value(
        deliver_all(deps, &secrets, webhooks, now_ms).await,
    )?)
}

/// Delivers each payment's webhooks in order, payments concurrently.
pub async fn deliver_all<S>(
    deps: &Deps<S>,
    secrets: &SigningSecrets,
    webhooks: Vec<QueuedWebhook>,
    now_ms: i64,
) -> BatchResponse {
    let mut groups: Vec<(String, Vec<QueuedWebhook>)> = Vec::new();
    for webhook in webhooks {
        match groups.iter_mut().find(|(group, _)| *group == webhook.group) {
            Some((_, queued)) => queued.push(webhook),
            None => groups.push((webhook.group.clone(), vec![webhook])),
        }
    }
    let results = futures_util::future::join_all(
        groups
            .iter()
            .map(|(_, queued)| deliver_group(deps, secrets, queued, now_ms)),
    )
    .await;
    BatchResponse::failing(results.into_iter().flatten())
}

/// One payment's webhooks, in order; answers the message ids left on the queue.
async fn deliver_group<S>(
    deps: &Deps<S>,
    secrets: &SigningSecrets,
    queued: &[QueuedWebhook],
    now_ms: i64,
) -> Vec<String> {
    for (index, webhook) in queued.iter().enumerate() {
        if deliver_one(deps, secrets, webhook, now_ms).await {
            continue;
        }
        // The rest wait behind it: visible again at once, but its group stays locked by the
        // failed one, so they come after it.
        let mut left = vec![webhook.message_id.clone()];
        for later in &queued[index + 1..] {
            if let Err(e) = deps.queue.retry_after(later, Duration::ZERO).await {
                tracing::warn!(error = %e, "a waiting webhook keeps its visibility timeout");
            }
            left.push(later.message_id.clone());
        }
        return left;
    }
    Vec::new()
}

/// One attempt; `true` when the webhook is done with (delivered, or parked).
async fn deliver_one<S>(
    deps: &Deps<S>,
    secrets: &SigningSecrets,
    webhook: &QueuedWebhook,
    now_ms: i64,
) -> bool {
    let (event_id, kind) = describe(&webhook.body);
    let event_id = event_id.unwrap_or_else(|| webhook.message_id.clone());
    let answer = deps
        .delivery
        .attempt(&event_id, &webhook.body, secrets, now_ms / 1000)
        .await;
    let (status, reason) = match answer {
        Attempt::Delivered { status } => {
            metrics::count(Metric::WebhookDelivered);
            tracing::info!(
                event_id,
                kind,
                status,
                attempt = webhook.attempt,
                "webhook delivered"
            );
            return true;
        }
        Attempt::Failed { status, reason } => (status, reason),
    };
    metrics::count(Metric::WebhookFailed);
    let age = Duration::from_millis(now_ms.saturating_sub(webhook.queued_at_ms).max(0) as u64);
    if age >= deps.retry_for {
        return match deps.queue.park(webhook).await {
            Ok(()) => {
                metrics::count(Metric::WebhookParked);
                tracing::error!(
                    event_id,
                    kind,
                    status,
                    reason,
                    attempt = webhook.attempt,
                    queued_for_s = age.as_secs(),
                    "webhook parked in the dead-letter queue: replay it once the endpoint answers"
                );
                true
            }
            Err(e) => {
                tracing::error!(event_id, error = %e, "webhook not parked: it stays queued");
                false
            }
        };
    }
    let settings = deps.delivery.settings();
    let delay = backoff(webhook.attempt, settings.backoff_base, settings.backoff_cap);
    tracing::warn!(
        event_id,
        kind,
        status,
        reason,
        attempt = webhook.attempt,
        retry_in_s = delay.as_secs(),
        "webhook failed: retried"
    );
    if let Err(e) = deps.queue.retry_after(webhook, delay).await {
        tracing::warn!(error = %e, "the back-off was not set: the queue's visibility timeout applies");
    }
    false
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    use app::webhook::{verify, WebhookSettings, SIGNATURE_HEADER};
    use axum::http::{HeaderMap, StatusCode};
    use daraja::Secret;

    use super::*;

    /// Records what the function asked of the queues.
    #[derive(Default)]
    struct Queues {
        retries: Mutex<Vec<(String, u64)>>,
        parked: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl WebhookQueues for Queues {
        async fn retry_after(&self, w: &QueuedWebhook, delay: Duration) -> Result<(), String> {
            let entry = (w.message_id.clone(), delay.as_secs());
            self.retries.lock().unwrap().push(entry);
            Ok(())
        }
        async fn park(&self, w: &QueuedWebhook) -> Result<(), String> {
            self.parked.lock().unwrap().push(w.message_id.clone());
            Ok(())
        }
        async fn replay(&self, _max: usize) -> Result<usize, String> {
            Ok(0)
        }
    }

    struct Fixed(SigningSecrets);

    #[async_trait::async_trait]
    impl Secrets for Fixed {
        async fn secrets(&self) -> Result<SigningSecrets, ConfigError> {
            Ok(self.0.clone())
        }
    }

    /// A receiver that verifies each signature and answers 500 to bodies containing `fail`.
    async fn receiver() -> (String, Arc<Mutex<Vec<String>>>, Arc<AtomicUsize>) {
        let received = Arc::new(Mutex::new(Vec::new()));
        let forged = Arc::new(AtomicUsize::new(0));
        let (kept, refused) = (received.clone(), forged.clone());
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |headers: HeaderMap, body: String| {
                let (kept, refused) = (kept.clone(), refused.clone());
                async move {
                    let header = headers[SIGNATURE_HEADER].to_str().unwrap();
                    let now = chrono::Utc::now().timestamp();
                    if verify(header, body.as_bytes(), "whsec_test", now).is_err() {
                        refused.fetch_add(1, Ordering::SeqCst);
                        return StatusCode::BAD_REQUEST;
                    }
                    if body.contains("fail") {
                        return StatusCode::INTERNAL_SERVER_ERROR;
                    }
                    kept.lock().unwrap().push(body);
                    StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        (url, received, forged)
    }

    fn deps(url: String, queues: &Arc<Queues>) -> Deps<Fixed> {
        Deps {
            delivery: Delivery::new(WebhookSettings {
                url,
                timeout: Duration::from_secs(5),
                backoff_base: Duration::from_secs(30),
                backoff_cap: Duration::from_secs(43_200),
            })
            .unwrap(),
            secrets: Fixed(secrets()),
            queue: queues.clone(),
            retry_for: Duration::from_secs(86_400),
        }
    }

    fn secrets() -> SigningSecrets {
        SigningSecrets {
            current: Secret::new("whsec_test"),
            previous: None,
        }
    }

    const NOW_MS: i64 = 1_800_000_000_000;

    fn webhook(
        id: &str,
        group: &str,
        body: &str,
        attempt: u32,
        queued_at_ms: i64,
    ) -> QueuedWebhook {
        QueuedWebhook {
            message_id: id.into(),
            receipt_handle: format!("rh-{id}"),
            body: format!(r#"{{"id":"evt_{id}","type":"payment.completed","note":"{body}"}}"#),
            group: group.into(),
            attempt,
            queued_at_ms,
        }
    }

    #[tokio::test]
    async fn a_failing_payment_waits_in_order_and_never_holds_up_another() {
        let (url, received, forged) = receiver().await;
        let queues = Arc::new(Queues::default());
        let deps = deps(url, &queues);
        let batch = vec![
            webhook("a1", "a", "fail", 3, NOW_MS),
            webhook("b1", "b", "ok", 1, NOW_MS),
            webhook("a2", "a", "ok", 3, NOW_MS),
            webhook("b2", "b", "ok", 1, NOW_MS),
        ];
        let now = chrono::Utc::now().timestamp_millis();
        let answer = deliver_all(&deps, &secrets(), batch, now.min(NOW_MS)).await;
        let left: Vec<_> = answer
            .failures
            .iter()
            .map(|f| f.item_identifier.as_str())
            .collect();
        assert_eq!(left, ["a1", "a2"]);
        let bodies = received.lock().unwrap().clone();
        assert_eq!(bodies.len(), 2);
        assert!(bodies[0].contains("evt_b1") && bodies[1].contains("evt_b2"));
        // The failed one waits its back-off (third attempt: 120 s); the one behind it is visible
        // at once, behind it in its group.
        assert_eq!(
            *queues.retries.lock().unwrap(),
            [("a1".to_string(), 120), ("a2".to_string(), 0)]
        );
        assert_eq!(forged.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_webhook_failing_for_the_whole_retry_period_is_parked_and_taken_off_the_queue() {
        let (url, _, _) = receiver().await;
        let queues = Arc::new(Queues::default());
        let deps = deps(url, &queues);
        let day_ago = NOW_MS - 86_400_000;
        let answer = deliver_all(
            &deps,
            &secrets(),
            vec![webhook("a1", "a", "fail", 13, day_ago)],
            NOW_MS,
        )
        .await;
        assert_eq!(answer, BatchResponse::default());
        assert_eq!(*queues.parked.lock().unwrap(), ["a1"]);
        assert!(queues.retries.lock().unwrap().is_empty());
    }
}
