//! HTTP in, HTTP out: the lookups live in `app::api::get_payment` and `find_payments`.

use app::api::{find_payments, get_payment, payment_json, Lookup, Phones};
use app::lambda::{caller, error_response, json_response, path_param};
use daraja::Clock;
use lambda_http::{Body, Error, Request, RequestExt, Response};
use payments::intent::PushLedger;
use payments::PaymentStore;

/// What the status function reads: the payments, and the push intents for a lookup by key.
pub struct Deps<'a> {
    pub store: &'a dyn PaymentStore,
    pub ledger: &'a dyn PushLedger,
    pub clock: &'a dyn Clock,
}

/// `GET /payments/{checkout_request_id}`, or `GET /payments?idempotency_key=…|reference=…`.
pub async fn handle(deps: &Deps<'_>, request: Request) -> Result<Response<Body>, Error> {
    let caller = caller(&request);
    let caller = caller.as_deref();
    let query = request.query_string_parameters_ref();
    let param = |name: &str| query.and_then(|q| q.first(name)).map(str::to_owned);
    let phones = match Phones::parse(param("reveal").as_deref()) {
        Ok(phones) => phones,
        Err(error) => return Ok(error_response(&error)),
    };
    if let Some(id) = path_param(&request, "checkout_request_id") {
        return Ok(match get_payment(deps.store, Some(&id), caller).await {
            Ok(record) => json_response(200, &payment_json(&record, phones)),
            Err(error) => error_response(&error),
        });
    }
    let found = match Lookup::parse(
        caller,
        param("idempotency_key").as_deref(),
        param("reference").as_deref(),
    ) {
        Ok(lookup) => {
            let now = deps.clock.now();
            find_payments(deps.store, deps.ledger, &lookup, caller, phones, now).await
        }
        Err(error) => Err(error),
    };
    Ok(match found {
        Ok(body) => json_response(200, &body),
        Err(error) => error_response(&error),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use payments::payment::NewPayment;
    use payments::MemoryStore;

    const EVENT: &str = include_str!("../../../events/status.json");
    const ID: &str = "ws_CO_27112026090000123708374149";

    async fn answer(store: &MemoryStore) -> (u16, serde_json::Value) {
        answer_to(store, EVENT).await
    }

    async fn answer_to(store: &MemoryStore, event: &str) -> (u16, serde_json::Value) {
        let ledger = payments::MemoryLedger::new(std::sync::Arc::new(MemoryStore::default()));
        let deps = Deps {
            store,
            ledger: &ledger,
            clock: &daraja::SystemClock,
        };
        let response = handle(&deps, lambda_http::request::from_str(event).unwrap())
            .await
            .unwrap();
        let body = match response.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("unexpected body {other:?}"),
        };
        (response.status().as_u16(), body)
    }

    #[tokio::test]
    async fn unknown_payment_is_a_404() {
        let (status, body) = answer(&MemoryStore::default()).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["code"], "payment_not_found");
    }

    #[tokio::test]
    async fn known_payment_is_returned_with_its_request_details() {
        let store = MemoryStore::default();
        store
            .record_pending(&NewPayment {
                checkout_request_id: ID.to_string(),
                merchant_request_id: "29115-34620561-1".to_string(),
                charge: daraja::Charge::parse("254708374149", 100, "INV-1001", None)
                    .expect("a valid charge"),
                created_at: chrono::Utc::now(),
                callback_nonce: None,
                created_by: None,
            })
            .await
            .unwrap();
        let (status, body) = answer(&store).await;
        assert_eq!(status, 200);
        assert_eq!(body["checkout_request_id"], ID);
        assert_eq!(body["status"], "PENDING");
        assert_eq!(body["amount"], 100);
        assert_eq!(body["reference"], "INV-1001");
    }

    const BY_REFERENCE: &str = include_str!("../../../events/status-by-reference.json");

    fn pending(id: &str, reference: &str, secs_ago: i64) -> NewPayment {
        NewPayment {
            checkout_request_id: id.to_string(),
            merchant_request_id: "29115-34620561-1".to_string(),
            charge: daraja::Charge::parse("254708374149", 100, reference, None)
                .expect("a valid charge"),
            created_at: chrono::Utc::now() - chrono::Duration::seconds(secs_ago),
            callback_nonce: None,
            created_by: None,
        }
    }

    #[tokio::test]
    async fn payments_are_found_by_reference_newest_first() {
        let store = MemoryStore::default();
        for (id, reference, age) in [
            ("ws_CO_older", "INV-1001", 60),
            ("ws_CO_newer", "INV-1001", 10),
            ("ws_CO_other", "INV-2002", 5),
        ] {
            store
                .record_pending(&pending(id, reference, age))
                .await
                .unwrap();
        }
        let (status, body) = answer_to(&store, BY_REFERENCE).await;
        assert_eq!(status, 200, "{body}");
        let ids: Vec<_> = body["payments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["checkout_request_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["ws_CO_newer", "ws_CO_older"]);
        assert!(body.get("request").is_none());
    }

    /// The sample lookup event with `params` as its query (already decoded, as API Gateway
    /// hands them over).
    fn lookup(params: &[(&str, &str)]) -> String {
        with_query(BY_REFERENCE, params)
    }

    /// `event` with `params` as its query.
    fn with_query(event: &str, params: &[(&str, &str)]) -> String {
        let mut event: serde_json::Value = serde_json::from_str(event).unwrap();
        let encode = |v: &str| -> String {
            v.bytes()
                .map(|b| match b {
                    b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect()
        };
        let raw: Vec<String> = params
            .iter()
            .map(|(k, v)| format!("{k}={}", encode(v)))
            .collect();
        event["rawQueryString"] = raw.join("&").into();
        let map: serde_json::Map<String, serde_json::Value> = params
            .iter()
            .map(|(k, v)| (k.to_string(), (*v).into()))
            .collect();
        event["queryStringParameters"] = map.into();
        event.to_string()
    }

    #[tokio::test]
    async fn phone_numbers_are_masked_unless_revealed() {
        let store = MemoryStore::default();
        let mut payment = pending(ID, "INV-1001", 0);
        payment.charge = daraja::Charge::parse("0708374149", 100, "INV-1001", None).unwrap();
        store.record_pending(&payment).await.unwrap();
        let (status, body) = answer(&store).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["phone"], "2547•••••149");
        let (_, body) = answer_to(&store, &with_query(EVENT, &[("reveal", "phone")])).await;
        assert_eq!(body["phone"], "254708374149");
        let (_, found) = answer_to(&store, &lookup(&[("reference", "INV-1001")])).await;
        assert_eq!(found["payments"][0]["phone"], "2547•••••149", "{found}");
        let (_, found) = answer_to(
            &store,
            &lookup(&[("reference", "INV-1001"), ("reveal", "phone")]),
        )
        .await;
        assert_eq!(found["payments"][0]["phone"], "254708374149", "{found}");
        for event in [EVENT, BY_REFERENCE] {
            let (status, body) = answer_to(&store, &with_query(event, &[("reveal", "all")])).await;
            assert_eq!(
                (status, body["error"]["code"].as_str()),
                (400, Some("invalid_reveal"))
            );
        }
    }

    #[tokio::test]
    async fn a_lookup_needs_exactly_one_valid_parameter() {
        let store = MemoryStore::default();
        type Query<'a> = &'a [(&'a str, &'a str)];
        let cases: [(Query, u16, &str); 5] = [
            (&[], 400, "invalid_lookup"),
            (
                &[("reference", "INV-1"), ("idempotency_key", "k1")],
                400,
                "invalid_lookup",
            ),
            (
                &[("idempotency_key", "has space")],
                400,
                "invalid_idempotency_key",
            ),
            (&[("reference", "<script>")], 422, "invalid_reference"),
            (
                &[("idempotency_key", "never-sent")],
                404,
                "payment_not_found",
            ),
        ];
        for (params, status, code) in cases {
            let (got, body) = answer_to(&store, &lookup(params)).await;
            assert_eq!(
                (got, body["error"]["code"].as_str()),
                (status, Some(code)),
                "{params:?}: {body}"
            );
        }
    }

    #[tokio::test]
    async fn a_key_finds_its_request_and_its_payment() {
        use payments::intent::{accepted_answer, IntentKey, NewIntent, PushLedger};
        let store = std::sync::Arc::new(MemoryStore::default());
        let ledger = payments::MemoryLedger::new(store.clone());
        let now = chrono::Utc::now();
        let charge = daraja::Charge::parse("254708374149", 100, "INV-1001", None).unwrap();
        // The caller the sample events carry: its key is its own.
        let caller = "arn:aws:iam::123456789012:user/merchant-backend";
        let intent = NewIntent::new(
            IntentKey::idempotency_for(Some(caller), "order-7"),
            charge,
            now,
            chrono::Duration::seconds(120),
        )
        .created_by(Some(caller.to_owned()));
        ledger.begin(&intent).await.unwrap();
        let payment = pending("ws_CO_KEYED", "INV-1001", 0);
        let answer = accepted_answer("ws_CO_KEYED", "m", "ok");
        ledger.accepted(&intent, &payment, &answer).await.unwrap();
        let deps = Deps {
            store: store.as_ref(),
            ledger: &ledger,
            clock: &daraja::SystemClock,
        };
        let request =
            lambda_http::request::from_str(&lookup(&[("idempotency_key", "order-7")])).unwrap();
        let response = handle(&deps, request).await.unwrap();
        assert_eq!(response.status().as_u16(), 200);
        let body: serde_json::Value = match response.body() {
            Body::Text(t) => serde_json::from_str(t).unwrap(),
            other => panic!("unexpected body {other:?}"),
        };
        assert_eq!(body["request"]["status"], "accepted");
        assert_eq!(body["request"]["checkout_request_id"], "ws_CO_KEYED");
        assert_eq!(body["request"]["answer_status"], 202);
        assert_eq!(body["payments"][0]["checkout_request_id"], "ws_CO_KEYED");
        assert_eq!(body["payments"][0]["status"], "PENDING");
    }
}
