//! Payment events end to end: the table's stream, the stream consumer, EventBridge, the webhook
//! queue and the delivery function, with a merchant's webhook endpoint on loopback that checks
//! every signature (`webhook-receiver`). What stands in for what: `local_stack::pipeline`.
//!
//! Needs the function binaries: `make build`.

mod wait;

use std::collections::{BTreeMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use daraja_sim::{Outcome, SimConfig};
use local_stack::{env_vars, EventsOptions, Function, LocalStack, StackOptions, WebhookOptions};
use serde_json::{json, Value};
use webhook_receiver::Receiver;

use wait::{Deadline, WAIT};

const SECRET: &str = "whsec_local_4b1f0c9a7e";

struct Stack {
    stack: LocalStack,
    receiver: Receiver,
    http: reqwest::Client,
}

async fn start(retry_for: Duration, extra_env: &[(&str, &str)]) -> Stack {
    let receiver =
        webhook_receiver::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), SECRET, false)
            .await
            .expect("webhook receiver");
    let stack = LocalStack::start(StackOptions {
        sim: SimConfig {
            callback_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        extra_env: env_vars(extra_env),
        events: Some(EventsOptions {
            webhook: Some(WebhookOptions::local(
                receiver.url(),
                SECRET.into(),
                retry_for,
            )),
        }),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    Stack {
        stack,
        receiver,
        http: reqwest::Client::new(),
    }
}

/// A success callback for `id`, paid 100 with `receipt`.
fn success(id: &str, receipt: &str) -> Value {
    json!({"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": id, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 100},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "TransactionDate", "Value": 20261201120000_u64}
        ]}
    }}})
}

impl Stack {
    /// A push of 100 to `phone` whose outcome the simulator is scripted with; its checkout id.
    async fn pay(&self, phone: &str, outcome: Outcome) -> String {
        self.stack.sim().script(Some(phone), vec![outcome]);
        let answer = self
            .http
            .post(format!("{}/payments", self.stack.api_url()))
            .json(&json!({"phone": phone, "amount": 100, "reference": format!("INV-{}", &phone[4..])}))
            .send()
            .await
            .expect("POST /payments");
        assert_eq!(answer.status().as_u16(), 202);
        let body: Value = answer.json().await.expect("JSON");
        body["checkout_request_id"].as_str().expect("id").to_owned()
    }

    /// Posts `body` to the callback URL of `id`'s push; answers the status.
    async fn callback(&self, id: &str, body: &Value) -> u16 {
        let token = self.stack.callback_token_for(id);
        self.http
            .post(format!("{}/callbacks/stk/{token}", self.stack.api_url()))
            .json(body)
            .send()
            .await
            .expect("callback")
            .status()
            .as_u16()
    }

    async fn status(&self, id: &str) -> String {
        let body: Value = self
            .http
            .get(format!("{}/payments/{id}", self.stack.api_url()))
            .send()
            .await
            .expect("GET /payments/{id}")
            .json()
            .await
            .expect("JSON");
        body["status"].as_str().unwrap_or_default().to_owned()
    }

    async fn wait_status(&self, id: &str, want: &str) {
        let deadline = Deadline::after(WAIT, format!("{id} to be {want}"));
        loop {
            let status = self.status(id).await;
            if status == want {
                return;
            }
            deadline.not_yet(status).await;
        }
    }

    /// Waits until the bus has delivered `n` events, and answers them.
    async fn bus_events(&self, n: usize) -> Vec<Value> {
        let deadline = Deadline::after(WAIT, format!("{n} events on the bus"));
        loop {
            let events = self
                .stack
                .events()
                .expect("events enabled")
                .bus_events()
                .await;
            if events.len() >= n {
                return events;
            }
            deadline.not_yet(events.len()).await;
        }
    }

    /// Waits until the receiver has accepted `n` webhooks, and answers their bodies.
    async fn webhooks(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Deadline::after(within, format!("{n} webhooks accepted"));
        loop {
            let received = self.receiver.received();
            if received.len() >= n {
                return received.into_iter().map(|r| r.body).collect();
            }
            deadline.not_yet(received.len()).await;
        }
    }

    fn counted(&self, metric: &str) -> usize {
        let needle = format!("\"{metric}\":1");
        self.stack
            .logs()
            .iter()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

/// (checkout id, previous status, status) of a bus event or a webhook body.
fn change(event: &Value) -> (String, String, String) {
    let detail = if event.get("detail").is_some() {
        &event["detail"]
    } else {
        &event["data"]
    };
    let text = |name: &str| detail[name].as_str().unwrap_or_default().to_owned();
    (
        text("checkout_request_id"),
        text("previous_status"),
        text("status"),
    )
}

fn event_id(event: &Value) -> String {
    event
        .get("detail")
        .map_or(&event["id"], |d| &d["event_id"])
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// Validates every event detail against `schemas/payment-event.v1.json` with the venv's
/// jsonschema (a JSON Schema implementation the template linter already brings).
fn assert_valid_against_schema(details: &[Value]) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = root.join(".venv/bin/python");
    let script = "import json, sys, jsonschema\n\
                  schema = json.load(open(sys.argv[1]))\n\
                  v = jsonschema.Draft7Validator(schema)\n\
                  errors = [e.message for d in json.load(sys.stdin) for e in v.iter_errors(d)]\n\
                  print('\\n'.join(errors)); sys.exit(1 if errors else 0)\n";
    let mut child = std::process::Command::new(python)
        .arg("-c")
        .arg(script)
        .arg(root.join("schemas/payment-event.v1.json"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python from .venv (make setup)");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::from(details.to_vec()).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "events not valid against the schema: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn each_transition_is_one_event_and_one_signed_webhook_and_a_duplicate_callback_none() {
    let s = start(Duration::from_secs(60), &[]).await;
    let paid = s.pay("0712100001", Outcome::success()).await;
    let cancelled = s.pay("0712100002", Outcome::code(1032)).await;
    s.wait_status(&paid, "COMPLETED").await;
    s.wait_status(&cancelled, "FAILED").await;
    let first = s.bus_events(2).await;

    // Safaricom's second delivery of the same result: the record does not change.
    let sent = s
        .stack
        .sim()
        .callbacks()
        .into_iter()
        .find(|c| c.checkout_request_id == paid)
        .expect("the simulator's callback");
    assert_eq!(s.callback(&paid, &sent.body).await, 200);
    // A later change: once its event is out, the stream has passed the duplicate.
    let later = s.pay("0712100003", Outcome::code(2001)).await;
    s.wait_status(&later, "FAILED").await;
    let events = s.bus_events(3).await;

    let changes: Vec<_> = events.iter().map(change).collect();
    let want = |id: &str, to: &str| (id.to_owned(), "PENDING".to_owned(), to.to_owned());
    let expected = HashSet::from([
        want(&paid, "COMPLETED"),
        want(&cancelled, "FAILED"),
        want(&later, "FAILED"),
    ]);
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert_eq!(changes.iter().cloned().collect::<HashSet<_>>(), expected);
    assert_eq!(first.len(), 2);
    for event in &events {
        assert_eq!(event["source"], "mpesa-express.payments");
        let status = event["detail"]["status"].as_str().unwrap();
        let kind = if status == "COMPLETED" {
            "Payment Completed"
        } else {
            "Payment Failed"
        };
        assert_eq!(event["detail-type"], kind);
        assert!(
            event["detail"]["phone"].as_str().unwrap().contains('•'),
            "{event}"
        );
    }
    let paid_event = events.iter().find(|e| change(e).0 == paid).unwrap();
    assert_eq!(paid_event["detail"]["amount"], 100);
    assert!(paid_event["detail"]["receipt"].is_string());
    let details: Vec<Value> = events.iter().map(|e| e["detail"].clone()).collect();
    assert_valid_against_schema(&details);

    // The same three, signed (the receiver refuses a bad signature), once each.
    let webhooks = s.webhooks(3, WAIT).await;
    let ids: HashSet<String> = webhooks.iter().map(event_id).collect();
    assert_eq!(ids, events.iter().map(event_id).collect::<HashSet<_>>());
    assert_eq!(webhooks.len(), 3);
    assert_eq!(s.receiver.rejected(), 0);
    assert_eq!(s.counted("CallbackDuplicate"), 1);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_late_change_after_expiry_is_its_own_event_in_order() {
    let s = start(
        Duration::from_secs(60),
        &[
            ("RECONCILE_GRACE_SECONDS", "0"),
            ("RECONCILE_MAX_AGE_SECONDS", "2"),
            ("RECONCILE_RETRY_SECONDS", "0"),
            ("RECONCILE_MAX_QUERIES_PER_MINUTE", "100"),
        ],
    )
    .await;
    let id = s
        .pay("0712100011", Outcome::success().never_final().lost())
        .await;
    let deadline =
        Deadline::after(WAIT, format!("{id} to expire")).every(Duration::from_millis(500));
    loop {
        s.stack
            .invoke(Function::Reconcile, &json!({}))
            .await
            .expect("round");
        let status = s.status(&id).await;
        if status == "EXPIRED" {
            break;
        }
        deadline.not_yet(status).await;
    }
    assert_eq!(s.callback(&id, &success(&id, "TLP1000011")).await, 200);
    s.wait_status(&id, "COMPLETED").await;

    let events = s.bus_events(2).await;
    let changes: Vec<_> = events.iter().map(change).collect();
    assert_eq!(
        changes,
        [
            (id.clone(), "PENDING".into(), "EXPIRED".into()),
            (id.clone(), "EXPIRED".into(), "COMPLETED".into()),
        ]
    );
    assert_ne!(event_id(&events[0]), event_id(&events[1]));
    let webhooks = s.webhooks(2, WAIT).await;
    assert_eq!(webhooks.iter().map(change).collect::<Vec<_>>(), changes);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_failing_for_a_while_gets_every_event_once_it_recovers_in_order_per_payment() {
    let s = start(Duration::from_secs(120), &[]).await;
    s.receiver.fail(500, None);
    let mut ids = Vec::new();
    for (i, phone) in ["0712100021", "0712100022"].into_iter().enumerate() {
        let id = s.pay(phone, Outcome::success()).await;
        s.wait_status(&id, "COMPLETED").await;
        // A second receipt for the same payment: it may have been paid twice.
        let second = success(&id, &format!("TLQ200002{i}"));
        assert_eq!(s.callback(&id, &second).await, 200);
        s.wait_status(&id, "NEEDS_REVIEW").await;
        ids.push(id);
    }
    let events = s.bus_events(4).await;
    // Failing: attempts are made (and retried) while nothing is accepted.
    let deadline = Deadline::after(WAIT, "retried webhook attempts");
    while s.receiver.attempts() < 4 {
        deadline.not_yet(s.receiver.attempts()).await;
    }
    assert!(s.receiver.received().is_empty());
    s.receiver.recover();

    let webhooks = s.webhooks(4, Duration::from_secs(40)).await;
    let mut by_payment: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for webhook in &webhooks {
        let (id, _, status) = change(webhook);
        by_payment.entry(id).or_default().push(status);
    }
    for id in &ids {
        assert_eq!(
            by_payment[id],
            ["COMPLETED", "NEEDS_REVIEW"],
            "webhooks of {id} out of order"
        );
    }
    let delivered: HashSet<String> = webhooks.iter().map(event_id).collect();
    assert_eq!(
        delivered,
        events.iter().map(event_id).collect::<HashSet<_>>()
    );
    assert_eq!(webhooks.len(), 4, "a webhook delivered twice");
    assert!(s.counted("WebhookFailed") >= 4);
    assert_eq!(s.stack.events().unwrap().dead_letters().await.len(), 0);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_receiver_that_never_recovers_fills_the_dead_letter_queue_and_a_replay_delivers_it() {
    // Retried for 3 s here (24 h deployed).
    let s = start(Duration::from_secs(3), &[]).await;
    s.receiver.fail(503, None);
    let id = s.pay("0712100031", Outcome::success()).await;
    s.wait_status(&id, "COMPLETED").await;
    let events = s.bus_events(1).await;
    let pipeline = s.stack.events().unwrap();

    let deadline = Deadline::after(WAIT, "the webhook parked in the dead-letter queue");
    let parked = loop {
        let parked = pipeline.dead_letters().await;
        if !parked.is_empty() {
            break parked;
        }
        deadline.not_yet(s.receiver.attempts()).await;
    };
    assert_eq!(parked.len(), 1);
    assert_eq!(event_id(&parked[0]), event_id(&events[0]));
    assert!(s.receiver.attempts() >= 2, "parked before a retry");
    assert_eq!(s.counted("WebhookParked"), 1);
    // The alarm watches that queue: any message in it for 5 minutes.
    let template: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap(),
    )
    .unwrap();
    let alarm = &template["Resources"]["WebhookDeadLetterAlarm"]["Properties"];
    assert_eq!(alarm["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(alarm["Threshold"], 1);

    // The endpoint is back: the README's replay event sends it again, and it is delivered.
    s.receiver.recover();
    let replay: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../events/webhook-replay.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let answer = s
        .stack
        .invoke(Function::WebhookDelivery, &replay)
        .await
        .unwrap();
    assert_eq!(answer["replayed"], 1, "{answer}");
    let webhooks = s.webhooks(1, WAIT).await;
    assert_eq!(event_id(&webhooks[0]), event_id(&events[0]));
    assert!(pipeline.dead_letters().await.is_empty());
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_poison_record_goes_to_the_on_failure_queue_and_the_stream_goes_on() {
    let s = start(Duration::from_secs(60), &[]).await;
    // A payment item no code of ours would write: its status does not decode.
    let mut item = std::collections::HashMap::new();
    for (name, value) in [
        ("pk", "PAY#ws_CO_poison"),
        ("checkout_request_id", "ws_CO_poison"),
        ("status", "PAID"),
        ("updated_at", "2026-12-01T10:00:00.000Z"),
    ] {
        item.insert(
            name.to_string(),
            aws_sdk_dynamodb::types::AttributeValue::S(value.into()),
        );
    }
    s.stack
        .dynamo()
        .put_item()
        .table_name(s.stack.table())
        .set_item(Some(item))
        .send()
        .await
        .expect("put the poison item");
    let id = s.pay("0712100041", Outcome::success()).await;
    s.wait_status(&id, "COMPLETED").await;
    let events = s.bus_events(1).await;
    assert_eq!(change(&events[0]).0, id);

    let pipeline = s.stack.events().unwrap();
    // Kept whole, with why, for a person (the queue is alarmed); no retry could decode it.
    let failures = pipeline.stream_failures().await;
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["condition"], "Undecodable");
    assert_eq!(
        failures[0]["record"]["dynamodb"]["NewImage"]["status"]["S"],
        "PAID"
    );
    assert!(failures[0]["reason"].as_str().unwrap().contains("PAID"));
    assert_eq!(s.counted("EventUndecodable"), 1);
    s.stack.shutdown().await;
}

/// The README's verification snippet (between its markers), run by Python as a receiver would.
fn readme_verifier() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let start = readme
        .find("<!-- verify-snippet:start -->")
        .expect("start marker");
    let end = readme
        .find("<!-- verify-snippet:end -->")
        .expect("end marker");
    let block = &readme[start..end];
    let code = block
        .split_once("```python\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .expect("a python block between the markers");
    code.to_owned()
}

#[test]
fn the_readmes_verifier_accepts_a_signed_webhook_and_rejects_a_forged_or_replayed_one() {
    let body = r#"{"id":"evt_1","type":"payment.completed","data":{"amount":100}}"#;
    let now = chrono::Utc::now().timestamp();
    let signed = app::webhook::sign(&["whsec_new", "whsec_old"], now, body.as_bytes());
    let old = app::webhook::sign(&["whsec_new"], now - 301, body.as_bytes());
    let forged = body.replace("100", "1000");
    // (header, body, secret, expected)
    let cases = json!([
        [signed, body, "whsec_new", true],
        [signed, body, "whsec_old", true],
        [signed, forged, "whsec_new", false],
        [signed, body, "whsec_other", false],
        [old, body, "whsec_new", false],
        [format!("t={now}"), body, "whsec_new", false],
    ]);
    let script = format!(
        "{}\nimport json, sys\nfor header, body, secret, want in json.load(sys.stdin):\n    \
         got = verify(header, body.encode(), secret)\n    print(got == want, got, want)\n",
        readme_verifier()
    );
    let mut child = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(cases.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines.iter().all(|l| l.starts_with("True")), "{text}");
    // And the Rust receiver agrees with it.
    assert!(app::webhook::verify(&signed, body.as_bytes(), "whsec_old", now).is_ok());
    assert!(app::webhook::verify(&signed, forged.as_bytes(), "whsec_new", now).is_err());
}
