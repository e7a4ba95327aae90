//! The CloudWatch metrics the functions write (Embedded Metric Format lines on stdout), over the
//! real local stack: every line is a valid EMF document, and each decision is counted once.
//!
//! Needs the function binaries:
//! `cargo build -p stk-push -p stk-callback -p payment-status -p reconcile`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use daraja_sim::{Outcome, SimConfig};
use local_stack::{LocalStack, StackOptions};
use serde_json::{json, Value};

/// The units CloudWatch accepts in an EMF directive.
const UNITS: &[&str] = &[
    "Seconds",
    "Microseconds",
    "Milliseconds",
    "Bytes",
    "Kilobytes",
    "Megabytes",
    "Gigabytes",
    "Terabytes",
    "Bits",
    "Kilobits",
    "Megabits",
    "Gigabits",
    "Terabits",
    "Percent",
    "Count",
    "Bytes/Second",
    "Kilobytes/Second",
    "Megabytes/Second",
    "Gigabytes/Second",
    "Terabytes/Second",
    "Bits/Second",
    "Kilobits/Second",
    "Megabits/Second",
    "Gigabits/Second",
    "Terabits/Second",
    "Count/Second",
    "None",
];

/// One metric value read from an EMF line.
#[derive(Debug, Clone)]
struct Sample {
    function: String,
    name: String,
    value: f64,
    /// Every dimension of the line except `Function`.
    dimensions: BTreeMap<String, String>,
}

/// Splits `[stk-push#0] {...}` into the function's name and the rest.
fn split_prefix(line: &str) -> Option<(&str, &str)> {
    let rest = line.strip_prefix('[')?;
    let (tag, payload) = rest.split_once("] ")?;
    let (function, _instance) = tag.split_once('#')?;
    Some((function, payload))
}

/// Checks one EMF document against the specification and returns its samples.
fn validate(function: &str, doc: &Value, line: &str) -> Vec<Sample> {
    let root = doc
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {line}"));
    let aws = &root["_aws"];
    assert!(
        aws["Timestamp"].as_i64().is_some_and(|t| t > 0),
        "Timestamp must be epoch milliseconds: {line}"
    );
    let directives = aws["CloudWatchMetrics"]
        .as_array()
        .unwrap_or_else(|| panic!("CloudWatchMetrics must be an array: {line}"));
    assert!(!directives.is_empty(), "no directive: {line}");
    let mut samples = Vec::new();
    for directive in directives {
        assert_eq!(directive["Namespace"], "MpesaExpress", "{line}");
        let sets = directive["Dimensions"]
            .as_array()
            .unwrap_or_else(|| panic!("Dimensions must be an array of arrays: {line}"));
        assert!(!sets.is_empty(), "{line}");
        let mut names = Vec::new();
        for set in sets {
            let set = set
                .as_array()
                .unwrap_or_else(|| panic!("a dimension set must be an array: {line}"));
            assert!(
                !set.is_empty() && set.len() <= 30,
                "dimension set size: {line}"
            );
            assert_eq!(set[0], "Function", "every set starts with Function: {line}");
            for name in set {
                let name = name.as_str().expect("dimension name is a string");
                let value = root
                    .get(name)
                    .and_then(Value::as_str)
                    .unwrap_or_else(|| panic!("dimension {name} is not a root string: {line}"));
                assert!(!value.is_empty(), "empty dimension {name}: {line}");
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        assert_eq!(
            root["Function"], function,
            "the Function dimension is the function's name: {line}"
        );
        let metrics = directive["Metrics"]
            .as_array()
            .unwrap_or_else(|| panic!("Metrics must be an array: {line}"));
        assert!(!metrics.is_empty() && metrics.len() <= 100, "{line}");
        for metric in metrics {
            let name = metric["Name"].as_str().expect("metric Name");
            let unit = metric["Unit"].as_str().expect("metric Unit");
            assert!(UNITS.contains(&unit), "invalid unit {unit}: {line}");
            let value = root
                .get(name)
                .and_then(Value::as_f64)
                .unwrap_or_else(|| panic!("metric {name} is not a root number: {line}"));
            let dimensions = names
                .iter()
                .filter(|n| **n != "Function")
                .map(|n| (n.to_string(), root[*n].as_str().unwrap_or("").to_string()))
                .collect();
            samples.push(Sample {
                function: function.to_string(),
                name: name.to_string(),
                value,
                dimensions,
            });
        }
    }
    samples
}

/// Every metric in the stack's logs. A line that mentions `_aws` but is not one whole JSON
/// document (an interleaved or cut line) fails the test.
fn samples(stack: &LocalStack) -> Vec<Sample> {
    let mut all = Vec::new();
    for line in stack.logs() {
        if !line.contains("\"_aws\"") {
            continue;
        }
        let (function, payload) =
            split_prefix(&line).unwrap_or_else(|| panic!("EMF line without prefix: {line}"));
        let doc: Value = serde_json::from_str(payload.trim())
            .unwrap_or_else(|e| panic!("EMF line is not one JSON document ({e}): {line}"));
        all.extend(validate(function, &doc, &line));
    }
    all
}

fn count(samples: &[Sample], name: &str, dimension: Option<(&str, &str)>) -> usize {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| match dimension {
            Some((k, v)) => s.dimensions.get(k).map(String::as_str) == Some(v),
            None => true,
        })
        .count()
}

async fn post(http: &reqwest::Client, url: String, body: &Value) -> (u16, Value) {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-local-source-ip", "196.201.214.200")
        .body(body.to_string())
        .send()
        .await
        .expect("POST");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn final_status(http: &reqwest::Client, api: &str, id: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown: Value = http
            .get(format!("{api}/payments/{id}"))
            .send()
            .await
            .expect("GET /payments/{id}")
            .json()
            .await
            .unwrap_or(Value::Null);
        let status = shown["status"].as_str().unwrap_or("").to_string();
        if !status.is_empty() && status != "PENDING" {
            return status;
        }
        assert!(Instant::now() < deadline, "{id} still pending: {shown}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn each_decision_is_counted_once_in_valid_embedded_metric_format() {
    let stack = LocalStack::start(StackOptions {
        pool_size: 1,
        sim: SimConfig {
            callback_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let http = reqwest::Client::new();
    let api = stack.api_url();
    let callback_url = |id: &str| format!("{api}/callbacks/stk/{}", stack.callback_token_for(id));

    // A payment that succeeds and one the customer cancels.
    let (paid_phone, cancel_phone) = ("0712345678", "0712345679");
    stack
        .sim()
        .script(Some(paid_phone), vec![Outcome::success()]);
    stack
        .sim()
        .script(Some(cancel_phone), vec![Outcome::code(1032)]);
    let mut ids = Vec::new();
    for phone in [paid_phone, cancel_phone] {
        let body = json!({"phone": phone, "amount": 100, "reference": "INV-1"});
        let (status, answer) = post(&http, format!("{api}/payments"), &body).await;
        assert_eq!(status, 202, "{answer}");
        ids.push(
            answer["checkout_request_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    assert_eq!(final_status(&http, &api, &ids[0]).await, "COMPLETED");
    assert_eq!(final_status(&http, &api, &ids[1]).await, "FAILED");

    // An invalid push: refused before Daraja.
    let bad = json!({"phone": "12345", "amount": 100, "reference": "INV-2"});
    let (status, answer) = post(&http, format!("{api}/payments"), &bad).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (422, &json!("invalid_phone"))
    );

    // Safaricom's success callback delivered a second time.
    let first = stack
        .sim()
        .callbacks()
        .into_iter()
        .find(|c| c.checkout_request_id == ids[0])
        .expect("the success callback was sent");
    // The same callback again, to the payment's own URL.
    assert_eq!(post(&http, first.url.clone(), &first.body).await.0, 200);

    // A result for a payment we never issued.
    let orphan = json!({"Body": {"stkCallback": {"MerchantRequestID": "1",
        "CheckoutRequestID": "ws_CO_27112026091500999999999999",
        "ResultCode": 1037, "ResultDesc": "DS timeout user cannot be reached"}}});
    assert_eq!(
        post(
            &http,
            callback_url("ws_CO_27112026091500999999999999"),
            &orphan
        )
        .await
        .0,
        200
    );

    // Logs arrive asynchronously: wait for the last decision's metric, then a little more so
    // that an extra (double-counted) line would show.
    let deadline = Instant::now() + Duration::from_secs(10);
    while count(&samples(&stack), "CallbackOrphan", None) == 0 {
        assert!(Instant::now() < deadline, "no CallbackOrphan metric");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = samples(&stack);

    let expect = [
        ("PushAccepted", None, 2),
        ("PushRejected", None, 1),
        ("PushRejected", Some(("ErrorCode", "invalid_phone")), 1),
        ("CallbackReceived", None, 4),
        ("CallbackDuplicate", None, 1),
        ("CallbackConflict", None, 0),
        ("CallbackOrphan", None, 1),
        ("CallbackOrphan", Some(("Reason", "unknown_payment")), 1),
        ("PaymentCompleted", None, 1),
        ("PaymentFailed", Some(("Outcome", "cancelled")), 1),
        ("PaymentFailed", Some(("Outcome", "unreachable")), 1),
        ("PaymentFailed", None, 2),
        ("PaymentNeedsReview", None, 0),
        ("PaymentExpired", None, 0),
        ("DarajaError", None, 0),
    ];
    for (name, dimension, n) in expect {
        assert_eq!(
            count(&got, name, dimension),
            n,
            "{name} {dimension:?}: {:#?}",
            got.iter().filter(|s| s.name == name).collect::<Vec<_>>()
        );
    }
    // Each function counts only its own decisions.
    for sample in &got {
        let owner = match sample.name.as_str() {
            "PushAccepted" | "PushRejected" => "stk-push",
            n if n.starts_with("Callback") || n.starts_with("Payment") => "stk-callback",
            _ => continue,
        };
        assert_eq!(sample.function, owner, "{sample:?}");
    }
    // One latency per Daraja call: two pushes (and the token fetches), each with its endpoint.
    let pushes = got
        .iter()
        .filter(|s| s.name == "DarajaLatency")
        .filter(|s| s.dimensions.get("Endpoint").map(String::as_str) == Some("stk_push"))
        .collect::<Vec<_>>();
    assert_eq!(pushes.len(), 2, "{pushes:#?}");
    assert!(pushes
        .iter()
        .all(|s| s.value >= 0.0 && s.function == "stk-push"));
    assert!(count(&got, "DarajaLatency", Some(("Endpoint", "oauth"))) >= 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn metrics_reach_cloudwatch_with_the_log_level_at_error() {
    // The functions run with `ApplicationLogLevel: ERROR` (Lambda passes it as
    // AWS_LAMBDA_LOG_LEVEL). What Lambda would keep of their output, by its own rule, still has
    // every metric line; before, a metric line had no level, counted as INFO, and was dropped,
    // silencing every alarm on a custom metric.
    let stack = LocalStack::start(StackOptions {
        pool_size: 1,
        sim: SimConfig {
            callback_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        extra_env: local_stack::env_vars(&[("AWS_LAMBDA_LOG_LEVEL", "ERROR")]),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let http = reqwest::Client::new();
    let api = stack.api_url();
    stack
        .sim()
        .script(Some("0712345680"), vec![Outcome::success()]);
    let body = json!({"phone": "0712345680", "amount": 100, "reference": "INV-1"});
    let (status, answer) = post(&http, format!("{api}/payments"), &body).await;
    assert_eq!(status, 202, "{answer}");
    let id = answer["checkout_request_id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert_eq!(final_status(&http, &api, &id).await, "COMPLETED");

    let kept: Vec<Value> = stack
        .logs()
        .iter()
        .filter_map(|line| split_prefix(line))
        .filter_map(|(_, payload)| serde_json::from_str::<Value>(payload.trim()).ok())
        .filter(|doc| app::metrics::lambda_keeps(doc, "ERROR"))
        .collect();
    let metric = |name: &str| kept.iter().filter(|d| d.get(name).is_some()).count();
    assert_eq!(metric("PushAccepted"), 1, "kept: {kept:#?}");
    assert_eq!(metric("PaymentCompleted"), 1);
    assert!(metric("DarajaLatency") >= 1);
    // The INFO lines themselves are dropped at that level, as they should be.
    assert!(kept
        .iter()
        .all(|d| d.get("_aws").is_some() || d["level"] != "INFO"));
    stack.shutdown().await;
}
