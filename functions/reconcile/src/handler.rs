//! Turns a scheduled invocation into one reconciliation round.

use std::sync::Arc;

use app::reconcile::{Reconciler, RoundReport};
use daraja::{Clock, Daraja, Deadline};
use lambda_runtime::{Error, LambdaEvent};
use payments::intent::PushLedger;
use payments::PaymentStore;
use serde::Deserialize;
use serde_json::Value;

/// What the function needs, built once at cold start.
pub struct Deps {
    pub daraja: Arc<dyn Daraja>,
    pub store: Arc<dyn PaymentStore>,
    /// The push intents, for the orphan results that belong to a push in doubt.
    pub ledger: Arc<dyn PushLedger>,
    pub clock: Arc<dyn Clock>,
    pub reconciler: Reconciler,
}

/// The fields of EventBridge's scheduled event worth a log line. Any other JSON (a manual
/// `{}` invocation) runs a round too.
#[derive(Debug, Default, Deserialize)]
pub struct ScheduledEvent {
    pub id: Option<String>,
    #[serde(rename = "detail-type")]
    pub detail_type: Option<String>,
    pub time: Option<String>,
}

/// Runs one round and answers its report. Fails (so the invocation shows as an error) only when
/// the pending payments cannot be read; the next scheduled round is the retry.
pub async fn handle(deps: &Deps, event: LambdaEvent<Value>) -> Result<RoundReport, Error> {
    let schedule: ScheduledEvent = serde_json::from_value(event.payload).unwrap_or_default();
    tracing::info!(
        event_id = schedule.id.as_deref(),
        detail_type = schedule.detail_type.as_deref(),
        scheduled_at = schedule.time.as_deref(),
        "reconciliation round starts"
    );
    let report = deps
        .reconciler
        .run_round(
            deps.store.as_ref(),
            deps.ledger.as_ref(),
            deps.daraja.as_ref(),
            deps.clock.as_ref(),
            Deadline::at_system_time(event.context.deadline()),
        )
        .await?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    use app::reconcile::ReconcileSettings;
    use daraja::fake::FakeDaraja;
    use daraja::FixedClock;
    use lambda_runtime::Context;
    use payments::payment::{NewPayment, PaymentStatus};
    use payments::MemoryStore;

    const SCHEDULE: &str = include_str!("../../../events/reconcile-schedule.json");

    fn deps(store: Arc<MemoryStore>, clock: Arc<FixedClock>, settings: ReconcileSettings) -> Deps {
        // The fake sends nothing: every query fails as unavailable.
        Deps {
            daraja: Arc::new(FakeDaraja::new()),
            ledger: Arc::new(payments::MemoryLedger::new(store.clone())),
            store,
            clock,
            reconciler: Reconciler::new(settings),
        }
    }

    /// The sample event, with the 50 s the template gives an invocation.
    fn scheduled_event() -> LambdaEvent<Value> {
        let payload: Value = serde_json::from_str(SCHEDULE).expect("sample event is JSON");
        let mut context = Context::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970");
        context.deadline = u64::try_from((now + std::time::Duration::from_secs(50)).as_millis())
            .expect("a deadline in milliseconds");
        LambdaEvent::new(payload, context)
    }

    #[test]
    fn sample_event_is_an_eventbridge_schedule() {
        let payload: Value = serde_json::from_str(SCHEDULE).expect("sample event is JSON");
        let event: ScheduledEvent = serde_json::from_value(payload).expect("schedule fields");
        assert_eq!(event.detail_type.as_deref(), Some("Scheduled Event"));
        assert!(event.id.is_some() && event.time.is_some());
    }

    #[tokio::test]
    async fn scheduled_event_runs_a_round_and_an_unreachable_daraja_expires_nothing() {
        let clock = Arc::new(FixedClock::new(
            "2026-11-27T09:00:00Z".parse().expect("timestamp"),
        ));
        let store = Arc::new(MemoryStore::new());
        store
            .record_pending(&NewPayment {
                checkout_request_id: "ws_CO_old".to_owned(),
                merchant_request_id: "m-1".to_owned(),
                charge: daraja::Charge::parse("254708374149", 10, "INV-1", None)
                    .expect("a valid charge"),
                created_at: clock.now() - chrono::Duration::minutes(20),
                callback_nonce: None,
                created_by: None,
            })
            .await
            .expect("pending write");
        let deps = deps(store.clone(), clock, ReconcileSettings::default());

        let report = handle(&deps, scheduled_event()).await.expect("round runs");

        // Daraja is unreachable: the one query is not sent and stops the round. The payment is
        // past the maximum age, but nothing has said it is still open: it stays pending, in
        // its place, for the next round.
        assert_eq!((report.due, report.queried, report.expired), (1, 1, 0));
        let record = store.get("ws_CO_old").await.expect("read").expect("stored");
        assert_eq!(record.status, PaymentStatus::Pending);
        assert_eq!(record.query_attempts, 0);
        let json = serde_json::to_value(&report).expect("report serialises");
        assert_eq!(json["stopped"], "daraja_unavailable");
    }

    #[tokio::test]
    async fn any_json_runs_a_round() {
        let clock = Arc::new(FixedClock::new(
            "2026-11-27T09:00:00Z".parse().expect("timestamp"),
        ));
        let deps = deps(
            Arc::new(MemoryStore::new()),
            clock,
            ReconcileSettings::default(),
        );
        let event = LambdaEvent::new(serde_json::json!({}), Context::default());
        let report = handle(&deps, event).await.expect("round runs");
        assert_eq!(report, RoundReport::default());
    }
}
