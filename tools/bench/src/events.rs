//! API Gateway HTTP API (payload 2.0) events, shaped like `events/*.json`, and Daraja
//! callback bodies.

use serde_json::{json, Value};

const DOMAIN: &str = "abc123.execute-api.us-east-1.amazonaws.com";
/// One of Safaricom's published callback addresses.
pub const SAFARICOM_IP: &str = "196.201.214.200";

fn request_context(method: &str, path: &str, route: &str, source_ip: &str, iam: bool) -> Value {
    let mut context = json!({
        "accountId": "123456789012",
        "apiId": "abc123",
        "domainName": DOMAIN,
        "domainPrefix": "abc123",
        "http": {
            "method": method,
            "path": path,
            "protocol": "HTTP/1.1",
            "sourceIp": source_ip,
            "userAgent": "bench/1.0"
        },
        "requestId": "bench",
        "routeKey": route,
        "stage": "$default",
        "time": "27/Nov/2026:09:00:00 +0000",
        "timeEpoch": 1_795_770_000_000u64
    });
    if iam {
        context["authorizer"] = json!({"iam": {
            "accessKey": "AKIAIOSFODNN7EXAMPLE",
            "accountId": "123456789012",
            "callerId": "AIDACKCEVSQ6C2EXAMPLE",
            "principalOrgId": null,
            "userArn": "arn:aws:iam::123456789012:user/merchant-backend",
            "userId": "AIDACKCEVSQ6C2EXAMPLE"
        }});
    }
    context
}

/// A `POST /payments` body.
pub fn push_body(phone: &str, amount: u32) -> String {
    json!({"phone": phone, "amount": amount, "reference": "INV-1001", "description": "Order 1001"})
        .to_string()
}

/// `POST /payments` for `phone`.
pub fn push(phone: &str, amount: u32) -> Value {
    json!({
        "version": "2.0",
        "routeKey": "POST /payments",
        "rawPath": "/payments",
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": DOMAIN},
        "requestContext": request_context("POST", "/payments", "POST /payments", "203.0.113.10", true),
        "isBase64Encoded": false,
        "body": push_body(phone, amount)
    })
}

/// A successful Daraja STK callback body for `checkout_request_id`.
pub fn callback_body(checkout_request_id: &str, amount: u32, receipt: &str) -> String {
    json!({"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": checkout_request_id,
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": f64::from(amount)},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20_261_127_090_012u64},
            {"Name": "PhoneNumber", "Value": 254_708_374_149u64}
        ]}
    }}})
    .to_string()
}

/// A cancelled prompt's callback body (result 1032) for `checkout_request_id`.
pub fn failure_body(checkout_request_id: &str) -> String {
    json!({"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": checkout_request_id,
        "ResultCode": 1032,
        "ResultDesc": "Request cancelled by user"
    }}})
    .to_string()
}

/// `POST /callbacks/stk/{token}` carrying a success for `checkout_request_id`.
pub fn callback(token: &str, checkout_request_id: &str, amount: u32, receipt: &str) -> Value {
    let path = format!("/callbacks/stk/{token}");
    json!({
        "version": "2.0",
        "routeKey": "POST /callbacks/stk/{token}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"content-type": "application/json", "host": DOMAIN},
        "requestContext": request_context("POST", &path, "POST /callbacks/stk/{token}", SAFARICOM_IP, false),
        "isBase64Encoded": false,
        "pathParameters": {"token": token},
        "body": callback_body(checkout_request_id, amount, receipt)
    })
}

/// `GET /payments/{checkout_request_id}`.
pub fn status(checkout_request_id: &str) -> Value {
    let path = format!("/payments/{checkout_request_id}");
    json!({
        "version": "2.0",
        "routeKey": "GET /payments/{checkout_request_id}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {"host": DOMAIN},
        "requestContext": request_context("GET", &path, "GET /payments/{checkout_request_id}", "203.0.113.10", true),
        "isBase64Encoded": false,
        "pathParameters": {"checkout_request_id": checkout_request_id}
    })
}

/// EventBridge's scheduled event, as the reconcile function receives it.
pub fn schedule() -> Value {
    json!({
        "version": "0",
        "id": "89d1a02d-5ec7-412e-82f5-13505f849b41",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-11-27T09:01:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/bench"],
        "detail": {}
    })
}

/// The HTTP status of a function's answer (`statusCode`), `None` for a function error or the
/// emulator's timeout text.
pub fn status_code(answer: &Value) -> Option<u16> {
    answer
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
}

/// The JSON body of a function's answer.
pub fn body(answer: &Value) -> Option<Value> {
    answer
        .get("body")
        .and_then(Value::as_str)
        .and_then(|b| serde_json::from_str(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_event_carries_the_token_in_its_path_and_parameters() {
        let event = callback("tok", "ws_CO_1", 100, "R1");
        assert_eq!(event["pathParameters"]["token"], "tok");
        assert_eq!(event["rawPath"], "/callbacks/stk/tok");
        let body: Value = serde_json::from_str(event["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["Body"]["stkCallback"]["CheckoutRequestID"], "ws_CO_1");
    }

    #[test]
    fn answer_status_and_body_are_read_from_the_proxy_response() {
        let answer = json!({"statusCode": 202, "body": "{\"status\":\"PENDING\"}"});
        assert_eq!(status_code(&answer), Some(202));
        assert_eq!(body(&answer).unwrap()["status"], "PENDING");
        assert_eq!(status_code(&json!({"errorType": "x"})), None);
    }
}
