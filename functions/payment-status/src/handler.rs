//! HTTP in, HTTP out: the lookup lives in `app::api::get_payment`.

use app::api::get_payment;
use app::lambda::{error_response, json_response, path_param};
use lambda_http::{Body, Error, Request, Response};
use payments::PaymentStore;

pub async fn handle(store: &dyn PaymentStore, request: Request) -> Result<Response<Body>, Error> {
    let id = path_param(&request, "checkout_request_id");
    Ok(match get_payment(store, id.as_deref()).await {
        Ok(record) => json_response(200, &serde_json::to_value(record)?),
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
        let response = handle(store, lambda_http::request::from_str(EVENT).unwrap())
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
}
