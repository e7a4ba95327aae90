//! HTTP in, HTTP out: the callback logic lives in `app::api::CallbackService`.

use app::api::CallbackService;
use app::lambda::{body_bytes, json_response, path_param, source_ip};
use lambda_http::{Body, Error, Request, Response};

pub async fn handle(service: &CallbackService, request: Request) -> Result<Response<Body>, Error> {
    let token = path_param(&request, "token");
    let source = source_ip(&request);
    let answer = service
        .receive(token.as_deref(), source.as_deref(), body_bytes(&request))
        .await;
    Ok(json_response(answer.status, &answer.body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use app::api::SourceAllowList;
    use daraja::time::SystemClock;
    use payments::payment::{NewPayment, PaymentStatus};
    use payments::raw::RawCallbackStore;
    use payments::MemoryRawStore;
    use payments::{MemoryStore, PaymentStore};
    use std::sync::Arc;

    /// The callback key events/env.json sets; the sample events carry a URL token it signed.
    const KEY: &str = "local-callback-token-4f9c2b7e1d";

    async fn deliver(event: &str, store: Arc<MemoryStore>) -> (u16, serde_json::Value) {
        deliver_to(event, store, Arc::default(), SourceAllowList::default()).await
    }

    async fn deliver_to(
        event: &str,
        store: Arc<MemoryStore>,
        raw: Arc<MemoryRawStore>,
        allowed_sources: SourceAllowList,
    ) -> (u16, serde_json::Value) {
        let service = CallbackService {
            ledger: Arc::new(payments::MemoryLedger::new(store.clone())),
            store,
            raw,
            clock: Arc::new(SystemClock),
            callback_keys: app::api::CallbackKeys::parse(KEY).unwrap(),
            allowed_sources,
            confirmation: Default::default(),
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
                charge: daraja::Charge::parse(
                    "254708374149",
                    amount.into(),
                    "INV-1001",
                    Some("Order 1001"),
                )
                .expect("a valid charge"),
                created_at: chrono::Utc::now(),
                callback_nonce: None,
                created_by: None,
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

    #[tokio::test]
    async fn unknown_id_event_is_accepted_and_kept_as_an_orphan_with_its_source() {
        let (store, raw) = (
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryRawStore::new()),
        );
        let (status, _) = deliver_to(
            include_str!("../../../events/callback-unknown-id.json"),
            store.clone(),
            raw.clone(),
            SourceAllowList::default(),
        )
        .await;
        assert_eq!(status, 200);
        let orphans = store.orphans(10).await.unwrap();
        assert_eq!(orphans.len(), 1);
        let id = &orphans[0].checkout_request_id;
        assert_eq!(orphans[0].status, PaymentStatus::Completed);
        assert!(orphans[0]
            .raw_callback
            .as_deref()
            .unwrap()
            .contains(id.as_str()));
        assert_eq!(
            raw.source_of(id).await.unwrap().as_deref(),
            Some("196.201.214.206")
        );
    }

    #[tokio::test]
    async fn unreadable_body_events_are_kept_raw_and_refused_with_their_code() {
        for (event, code, body_start) in [
            (
                include_str!("../../../events/callback-bad-body.json"),
                "invalid_json",
                "<html>",
            ),
            (
                include_str!("../../../events/callback-not-daraja.json"),
                "invalid_callback",
                "{\"Body\"",
            ),
        ] {
            let (store, raw) = (
                Arc::new(MemoryStore::default()),
                Arc::new(MemoryRawStore::new()),
            );
            let (status, body) = deliver_to(
                event,
                store.clone(),
                raw.clone(),
                SourceAllowList::default(),
            )
            .await;
            assert_eq!(status, 400, "{code}");
            assert_eq!(body["error"]["code"], code);
            let kept = raw.unreadable(10).await.unwrap();
            assert_eq!(kept.len(), 1, "{code}");
            assert_eq!(kept[0].reason, code);
            assert_eq!(kept[0].source_ip.as_deref(), Some("196.201.214.200"));
            assert!(kept[0].body.starts_with(body_start.as_bytes()), "{code}");
            assert!(store.orphans(10).await.unwrap().is_empty());
        }
    }

    #[tokio::test]
    async fn a_source_outside_the_allow_list_is_refused_like_a_wrong_token() {
        let (store, raw) = (
            Arc::new(MemoryStore::default()),
            Arc::new(MemoryRawStore::new()),
        );
        pending(&store, "ws_CO_27112026090000123708374149", 100).await;
        let event = include_str!("../../../events/callback-success.json");
        let only_other = SourceAllowList::parse("196.201.214.206").unwrap();
        let (status, body) = deliver_to(event, store.clone(), raw.clone(), only_other).await;
        assert_eq!(
            (status, body),
            (404, serde_json::json!({"message": "Not Found"}))
        );
        let record = store
            .get("ws_CO_27112026090000123708374149")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(record.status, PaymentStatus::Pending);

        let safaricom = SourceAllowList::parse("safaricom").unwrap();
        let (status, _) = deliver_to(event, store.clone(), raw, safaricom).await;
        assert_eq!(status, 200);
    }
}
