//! HTTP in, HTTP out: the callback logic lives in `shared::api::CallbackService`.

use lambda_http::{Body, Error, Request, Response};
use shared::api::CallbackService;
use shared::lambda::{body_bytes, json_response, path_param};

pub async fn handle(service: &CallbackService, request: Request) -> Result<Response<Body>, Error> {
    let token = path_param(&request, "token");
    let answer = service
        .receive(token.as_deref(), body_bytes(&request))
        .await;
    Ok(json_response(answer.status, &answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::daraja::secret::Secret;
    use shared::daraja::time::SystemClock;
    use shared::payment::{NewPayment, PaymentStatus};
    use shared::store::{MemoryStore, PaymentStore};
    use std::sync::Arc;

    /// The token the sample events carry (events/env.json sets the same).
    const TOKEN: &str = "local-callback-token-4f9c2b7e1d";

    async fn deliver(event: &str, store: Arc<MemoryStore>) -> (u16, serde_json::Value) {
        let service = CallbackService {
            store,
            clock: Arc::new(SystemClock),
            callback_token: Secret::new(TOKEN),
        };
        let request = lambda_http::request::from_str(event).unwrap();
        let response = handle(&service, request).await.unwrap();
        let body = match response.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("unexpected body {other:?}"),
        };
        (response.status().as_u16(), body)
    }

    async fn pending(store: &MemoryStore, checkout_request_id: &str, amount: u32) {
        store
            .record_pending(&NewPayment {
                checkout_request_id: checkout_request_id.to_string(),
                merchant_request_id: "29115-34620561-1".to_string(),
                amount,
                phone: "254708374149".to_string(),
                reference: "INV-1001".to_string(),
                description: Some("Order 1001".to_string()),
                created_at: chrono::Utc::now(),
            })
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn success_event_completes_the_payment() {
        let store = Arc::new(MemoryStore::default());
        pending(&store, "ws_CO_27112026090000123708374149", 100).await;
        let (status, body) = deliver(
            include_str!("../../../events/callback-success.json"),
            store.clone(),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(
            body,
            serde_json::json!({"ResultCode": 0, "ResultDesc": "Accepted"})
        );
        let record = store
            .get("ws_CO_27112026090000123708374149")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, PaymentStatus::Completed);
        assert_eq!(record.receipt.as_deref(), Some("TKR7PQ2X9M"));
        assert_eq!(record.transaction_date.as_deref(), Some("20261127090012"));
    }

    #[tokio::test]
    async fn failure_events_fail_the_payment_with_their_category() {
        for (event, id, code, outcome) in [
            (
                include_str!("../../../events/callback-cancelled-1032.json"),
                "ws_CO_27112026090100456708374149",
                "1032",
                "cancelled",
            ),
            (
                include_str!("../../../events/callback-unreachable-1037.json"),
                "ws_CO_27112026090200789708374149",
                "1037",
                "unreachable",
            ),
            (
                include_str!("../../../events/callback-wrong-pin-2001.json"),
                "ws_CO_27112026090300012708374149",
                "2001",
                "wrong_pin",
            ),
        ] {
            let store = Arc::new(MemoryStore::default());
            pending(&store, id, 100).await;
            let (status, _) = deliver(event, store.clone()).await;
            assert_eq!(status, 200);
            let record = store.get(id).await.unwrap().unwrap();
            assert_eq!(record.status, PaymentStatus::Failed, "{id}");
            assert_eq!(record.result_code.as_deref(), Some(code));
            assert_eq!(record.outcome.as_deref(), Some(outcome));
            assert_eq!(record.receipt, None);
        }
    }

    #[tokio::test]
    async fn wrong_token_event_is_a_404_and_writes_nothing() {
        let store = Arc::new(MemoryStore::default());
        pending(&store, "ws_CO_27112026090400345708374149", 100).await;
        let (status, body) = deliver(
            include_str!("../../../events/callback-wrong-token.json"),
            store.clone(),
        )
        .await;
        assert_eq!(status, 404);
        assert_eq!(body["message"], "Not Found");
        let record = store
            .get("ws_CO_27112026090400345708374149")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, PaymentStatus::Pending);
    }
}
