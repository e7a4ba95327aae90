//! HTTP in, HTTP out: the payment logic lives in `app::api::PushService`.

use app::api::{PushService, DEFAULT_INVOCATION_TIME};
use app::lambda::{body_bytes, caller, deadline, error_response, json_response, request_base_url};
use lambda_http::http::HeaderValue;
use lambda_http::{Body, Error, Request, Response};

/// Stripe's header names: the caller's key, and the mark on a replayed answer.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

pub async fn handle(service: &PushService, request: Request) -> Result<Response<Body>, Error> {
    let base_url = request_base_url(&request);
    let key = request
        .headers()
        .get(IDEMPOTENCY_KEY)
        .map(HeaderValue::as_bytes);
    let caller = caller(&request);
    Ok(
        match service
            .start_as(
                caller.as_deref(),
                body_bytes(&request),
                base_url.as_deref(),
                key,
                deadline(&request, DEFAULT_INVOCATION_TIME),
            )
            .await
        {
            Ok(answer) => {
                let mut response = json_response(answer.status(), &answer.body());
                if answer.is_replay() {
                    response
                        .headers_mut()
                        .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
                }
                response
            }
            Err(error) => error_response(&error),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use daraja::fake::FakeDaraja;
    use daraja::time::SystemClock;
    use payments::intent::IntentKey;
    use payments::{MemoryLedger, MemoryStore, PaymentStore};

    /// A service over the counting fake Daraja, which sends nothing: a push that reaches it is
    /// counted and answered "unavailable" (503, nothing sent).
    fn service(store: Arc<MemoryStore>) -> (PushService, Arc<FakeDaraja>) {
        let daraja = Arc::new(FakeDaraja::new());
        let service = PushService {
            daraja: daraja.clone(),
            ledger: Arc::new(MemoryLedger::new(store)),
            clock: Arc::new(SystemClock),
            callback_keys: app::api::CallbackKeys::parse("a-key-of-thirty-two-characters!!")
                .unwrap(),
            callback_base_url: None,
            phone_lock: app::api::DEFAULT_PHONE_LOCK,
        };
        (service, daraja)
    }

    async fn answer(event: &str, store: Arc<MemoryStore>) -> (u16, serde_json::Value) {
        answer_from(&service(store).0, event).await
    }

    async fn answer_from(service: &PushService, event: &str) -> (u16, serde_json::Value) {
        let request = lambda_http::request::from_str(event).unwrap();
        let response = handle(service, request).await.unwrap();
        let status = response.status().as_u16();
        let body = match response.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("unexpected body {other:?}"),
        };
        (status, body)
    }

    #[tokio::test]
    async fn invalid_phone_event_is_refused_without_a_record() {
        let store = Arc::new(MemoryStore::default());
        let (status, body) = answer(
            include_str!("../../../events/push-invalid-phone.json"),
            store.clone(),
        )
        .await;
        assert_eq!(status, 422);
        assert_eq!(body["error"]["code"], "invalid_phone");
        assert!(store
            .pending_older_than(chrono::Utc::now(), 10)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test]
    async fn bad_json_event_is_a_400() {
        let (status, body) = answer(
            include_str!("../../../events/push-bad-json.json"),
            Arc::new(MemoryStore::default()),
        )
        .await;
        assert_eq!(status, 400);
        assert_eq!(body["error"]["code"], "invalid_json");
    }

    #[tokio::test]
    async fn valid_event_reaches_daraja() {
        // Daraja answers "unavailable" here, so a valid request gets as far as the Daraja call
        // and no further: proof that validation let it through and that the failure is a 503.
        let (service, daraja) = service(Arc::new(MemoryStore::default()));
        let (status, body) =
            answer_from(&service, include_str!("../../../events/push-valid.json")).await;
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"]["code"], "daraja_unavailable");
        assert_eq!(daraja.pushes(), 1);
    }

    #[tokio::test]
    async fn idempotency_key_header_reaches_the_ledger() {
        // Daraja is unavailable, so the intent is released (503, no prompt was sent) and a
        // retry with the same key is free to try again; the ledger saw the header's key.
        let (service, daraja) = service(Arc::new(MemoryStore::default()));
        let event = include_str!("../../../events/push-idempotent.json");
        let (status, body) = answer_from(&service, event).await;
        assert_eq!(status, 503, "{body}");
        let key = IntentKey::idempotency("order-1001-attempt-1");
        assert_eq!(
            service
                .ledger
                .intent(&key, chrono::Utc::now())
                .await
                .unwrap(),
            None
        );
        assert_eq!(daraja.pushes(), 1);
        let (status, _) = answer_from(&service, event).await;
        assert_eq!(status, 503);
        assert_eq!(daraja.pushes(), 2);
    }

    #[tokio::test]
    async fn a_blank_idempotency_key_is_a_400_before_any_daraja_call() {
        let (service, daraja) = service(Arc::new(MemoryStore::default()));
        let event = include_str!("../../../events/push-idempotent.json")
            .replace("order-1001-attempt-1", "has space");
        let (status, body) = answer_from(&service, &event).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "invalid_idempotency_key");
        assert_eq!(daraja.pushes(), 0);
    }
}
