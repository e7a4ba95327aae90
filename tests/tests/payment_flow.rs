//! The payment slice over the real local stack, through the API Gateway stand-in: the
//! functions under the Lambda runtime emulator, the DynamoDB emulator, the Daraja simulator.
//! Also every sample event in `events/` through the same runtime emulator `sam local invoke`
//! uses, and the logs of all of it checked for secrets and phone numbers.
//!
//! Needs the function binaries: `cargo build -p stk-push -p stk-callback -p payment-status`.

mod wait;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;
use daraja_sim::{Endpoint, Outcome, SimConfig};
use dynamo::DynamoStore;
use local_stack::{
    env_vars, events, EventsOptions, Function, LocalStack, StackOptions, WebhookOptions,
};
use serde_json::{json, Value};

use wait::{Deadline, WAIT};

type Item = HashMap<String, AttributeValue>;

async fn start(extra_env: &[(&str, &str)]) -> LocalStack {
    LocalStack::start(StackOptions {
        pool_size: 2,
        sim: SimConfig {
            callback_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        extra_env: env_vars(extra_env),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"))
}

struct Client {
    http: reqwest::Client,
    api: String,
}

impl Client {
    fn new(stack: &LocalStack) -> Self {
        Self {
            http: reqwest::Client::new(),
            api: stack.api_url(),
        }
    }

    async fn answer(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn pay_raw(&self, body: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/payments", self.api))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("POST /payments");
        Self::answer(response).await
    }

    async fn pay(&self, phone: &str, amount: u32, reference: &str) -> String {
        let body = json!({"phone": phone, "amount": amount, "reference": reference});
        let (status, answer) = self.pay_raw(&body.to_string()).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["status"], "PENDING");
        answer["checkout_request_id"]
            .as_str()
            .expect("checkout_request_id")
            .to_string()
    }

    async fn get(&self, id: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/payments/{id}", self.api))
            .send()
            .await
            .expect("GET /payments/{id}");
        Self::answer(response).await
    }

    /// Polls `GET /payments/{id}` until the payment is no longer pending.
    async fn final_state(&self, id: &str) -> Value {
        let deadline = Deadline::after(WAIT, format!("{id} to leave PENDING"));
        loop {
            let (status, shown) = self.get(id).await;
            assert_eq!(status, 200, "{shown}");
            if shown["status"] != "PENDING" {
                return shown;
            }
            deadline.not_yet(&shown).await;
        }
    }

    async fn callback(&self, token: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/callbacks/stk/{token}", self.api))
            .header("content-type", "application/json")
            .header("x-local-source-ip", "196.201.214.200")
            .body(body.to_string())
            .send()
            .await
            .expect("POST callback");
        Self::answer(response).await
    }
}

async fn scan(stack: &LocalStack) -> BTreeMap<String, Item> {
    let mut items = BTreeMap::new();
    let mut start = None;
    loop {
        let page = stack
            .dynamo()
            .scan()
            .table_name(stack.table())
            .consistent_read(true)
            .set_exclusive_start_key(start.take())
            .send()
            .await
            .expect("scan");
        for item in page.items.unwrap_or_default() {
            let pk = format!("{:?}", item.get("pk"));
            items.insert(pk, item);
        }
        match page.last_evaluated_key {
            Some(key) if !key.is_empty() => start = Some(key),
            _ => return items,
        }
    }
}

fn msisdn(local: &str) -> String {
    format!("254{}", &local[1..])
}

#[tokio::test]
async fn successful_payment_is_completed_with_receipt_amount_phone_and_date() {
    let stack = start(&[]).await;
    let client = Client::new(&stack);
    let phone = "0712345678";
    stack.sim().script(Some(phone), vec![Outcome::success()]);
    let id = client.pay(phone, 150, "INV-2001").await;
    let shown = client.final_state(&id).await;
    assert_eq!(shown["status"], "COMPLETED", "{shown}");
    assert_eq!(shown["checkout_request_id"], id.as_str());
    assert_eq!(shown["amount"], 150);
    assert_eq!(shown["reference"], "INV-2001");
    // Phone numbers are masked unless asked for.
    assert_eq!(shown["phone"], "2547•••••678");
    assert_eq!(shown["paying_phone"], "2547•••••678");
    let (status, revealed) = client.get(&format!("{id}?reveal=phone")).await;
    assert_eq!(status, 200, "{revealed}");
    assert_eq!(revealed["phone"], msisdn(phone));
    assert_eq!(revealed["paying_phone"], msisdn(phone));
    assert_eq!(shown["amount_paid"], "150");
    assert_eq!(shown["result_code"], "0");
    assert_eq!(shown["outcome"], "success");
    let receipt = shown["receipt"].as_str().expect("receipt");
    assert!(
        receipt.len() == 10 && receipt.bytes().all(|b| b.is_ascii_alphanumeric()),
        "{receipt}"
    );
    let date = shown["transaction_date"]
        .as_str()
        .expect("transaction_date");
    assert!(
        date.len() == 14 && date.bytes().all(|b| b.is_ascii_digit()),
        "{date}"
    );
    // The receipt is the one Safaricom sent. The simulator logs a callback once our answer
    // reaches it, which can be just after the record is readable.
    let deadline = Deadline::after(WAIT, format!("the simulator to log the callback for {id}"));
    let sent = loop {
        let logged = stack.sim().callbacks();
        if let Some(sent) = logged.iter().find(|c| c.checkout_request_id == id) {
            break sent.clone();
        }
        deadline
            .not_yet(format!("{} other callback(s)", logged.len()))
            .await;
    };
    let items = &sent.body["Body"]["stkCallback"]["CallbackMetadata"]["Item"];
    assert!(items.to_string().contains(receipt), "{items}");
    stack.shutdown().await;
}

#[tokio::test]
async fn each_failure_code_fails_the_payment_with_its_outcome() {
    let stack = start(&[]).await;
    let client = Client::new(&stack);
    let cases = [
        (1032, "cancelled"),
        (1037, "unreachable"),
        (2001, "wrong_pin"),
        (1, "insufficient_funds"),
        (1019, "expired"),
    ];
    let mut started = Vec::new();
    for (n, (code, outcome)) in cases.iter().enumerate() {
        let phone = format!("071234570{n}");
        stack.sim().script(Some(&phone), vec![Outcome::code(*code)]);
        started.push((client.pay(&phone, 100, "FAIL").await, code, outcome));
    }
    for (id, code, outcome) in started {
        let shown = client.final_state(&id).await;
        assert_eq!(shown["status"], "FAILED", "{code}: {shown}");
        assert_eq!(shown["result_code"], code.to_string(), "{shown}");
        assert_eq!(shown["outcome"], *outcome, "{shown}");
        assert!(shown["receipt"].is_null(), "{shown}");
        assert!(shown["amount_paid"].is_null(), "{shown}");
        assert_eq!(shown["amount"], 100);
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn invalid_requests_are_refused_without_a_push_or_a_write() {
    let stack = start(&[]).await;
    let client = Client::new(&stack);
    for (body, status, code) in [
        (
            r#"{"phone": "0812345678", "amount": 100, "reference": "INV-1"}"#,
            422,
            "invalid_phone",
        ),
        (
            r#"{"phone": "0712345678", "amount": 100,"#,
            400,
            "invalid_json",
        ),
        (
            r#"{"phone": "0712345678", "amount": 0, "reference": "INV-1"}"#,
            422,
            "invalid_amount",
        ),
        (
            r#"{"phone": "0712345678", "amount": 100}"#,
            422,
            "missing_field",
        ),
    ] {
        let (got, answer) = client.pay_raw(body).await;
        assert_eq!(got, status, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], code, "{body}");
        assert!(!answer["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    let pushes = stack
        .sim()
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::StkPush)
        .count();
    assert_eq!(pushes, 0);
    assert_eq!(stack.sim().counts().stk_push, 0);
    assert!(scan(&stack).await.is_empty(), "an invalid request wrote");
    stack.shutdown().await;
}

#[tokio::test]
async fn wrong_callback_token_writes_nothing() {
    let stack = start(&[]).await;
    let client = Client::new(&stack);
    let phone = "0712345679";
    stack
        .sim()
        .script(Some(phone), vec![Outcome::success().lost()]);
    let id = client.pay(phone, 100, "INV-3").await;
    let body = json!({"Body": {"stkCallback": {"MerchantRequestID": "1", "CheckoutRequestID": id,
        "ResultCode": 1032, "ResultDesc": "Request cancelled by user"}}});
    let before = scan(&stack).await;
    let (status, answer) = client.callback("not-the-token", &body).await;
    assert_eq!((status, answer), (404, json!({"message": "Not Found"})));
    assert_eq!(scan(&stack).await, before);
    let (_, shown) = client.get(&id).await;
    assert_eq!(shown["status"], "PENDING");
    stack.shutdown().await;
}

/// Every event in `events/` through the runtime emulator, checked against the table that
/// `local-stack sam-local` also checks `sam local invoke` against (`local_stack::events`).
#[tokio::test]
async fn every_sample_event_answers_as_documented() {
    let events_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../events");
    let files = events::event_files(&events_dir).expect("events/");
    let unexpected: Vec<&String> = files
        .iter()
        .filter(|f| events::sample_event(f).is_none())
        .collect();
    assert!(
        unexpected.is_empty(),
        "events without an expected answer (add them to local_stack::events): {unexpected:?}"
    );

    // With the event bus and the webhook queues, as `sam-deps` makes them for `sam local`.
    let stack = LocalStack::start(StackOptions {
        extra_env: env_vars(&[("CALLBACK_TOKEN", events::EVENTS_KEY)]),
        events: Some(EventsOptions {
            webhook: Some(WebhookOptions::local(
                "http://127.0.0.1:9/webhooks".into(),
                "local-webhook-secret".into(),
                Duration::from_secs(86_400),
            )),
        }),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    events::seed_event_payments(&store)
        .await
        .expect("pending records");
    stack
        .events()
        .expect("events enabled")
        .seed_dead_letter(events::EVENT_PAYMENTS[1], events::PARKED_WEBHOOK)
        .await
        .expect("a parked webhook");

    let mut checked = 0;
    for sample in events::SAMPLE_EVENTS {
        if sample.function == Function::Reconcile {
            // A round's report depends on the clock; the reconciliation tests check rounds.
            eprintln!(
                "{}: not invoked here, checked by tests/reconciliation.rs",
                sample.file
            );
            continue;
        }
        let file = sample.file;
        let text = std::fs::read_to_string(events_dir.join(file)).expect("event file");
        let event: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        let answer = stack
            .invoke(sample.function, &event)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        if let Err(e) = sample.answer.check(&answer) {
            panic!("{file}: {e}: {answer}");
        }
        if let Err(e) = events::check_leaves(&store, sample.leaves, &answer).await {
            panic!("{file}: {e}");
        }
        checked += 1;
    }
    assert_eq!(checked, events::SAMPLE_EVENTS.len() - 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn no_secret_or_full_phone_in_any_log_line() {
    let stack = start(&[]).await;
    let client = Client::new(&stack);
    let phones = ["0712345678", "0798765432", "0711223344", "0722334455"];
    stack.sim().script(
        Some(phones[0]),
        vec![Outcome::success().duplicated(2, true)],
    );
    stack
        .sim()
        .script(Some(phones[1]), vec![Outcome::code(1032)]);
    stack
        .sim()
        .script(Some(phones[2]), vec![Outcome::success().before_response()]);
    stack.sim().script(
        Some(phones[3]),
        vec![Outcome::success().amount_paid(json!(1))],
    );
    let mut ids = Vec::new();
    for phone in phones {
        ids.push(client.pay(phone, 100, "LOGS").await);
    }
    for id in &ids {
        client.final_state(id).await;
    }
    // A busy phone, a bad request, a status miss, a wrong token, an orphan, junk.
    let busy_phone = "0700112233";
    stack.sim().script(
        Some(busy_phone),
        vec![Outcome::success().lost().delay(Duration::from_secs(5))],
    );
    client.pay(busy_phone, 100, "LOGS").await;
    let (busy, _) = client
        .pay_raw(&json!({"phone": busy_phone, "amount": 100, "reference": "LOGS"}).to_string())
        .await;
    assert_eq!(busy, 409);
    client
        .pay_raw(r#"{"phone": "0812345678", "amount": 100, "reference": "X"}"#)
        .await;
    client.get("ws_CO_27112026093000123712345699").await;
    let orphan = json!({"Body": {"stkCallback": {"MerchantRequestID": "1",
        "CheckoutRequestID": "ws_CO_27112026093000123722334499", "ResultCode": 0, "ResultDesc": "ok",
        "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": 5},
            {"Name": "MpesaReceiptNumber", "Value": "TKR7PQ2LOG"},
            {"Name": "PhoneNumber", "Value": 254722334499u64}]}}}});
    let token = stack.callback_token_for("ws_CO_27112026093000123722334499");
    assert_eq!(client.callback(&token, &orphan).await.0, 200);
    assert_eq!(client.callback("wrong", &orphan).await.0, 404);
    let junk = json!({"phone": "254733445566", "note": "not a callback"});
    assert_eq!(client.callback(&token, &junk).await.0, 400);

    let mut forbidden: Vec<(String, &str)> = stack
        .secrets()
        .iter()
        .map(|s| (s.clone(), "a secret"))
        .collect();
    let shortcode = SimConfig::default().shortcode;
    let passkey = SimConfig::default().passkey;
    for request in stack.sim().requests() {
        if let Some(token) = request.response["access_token"].as_str() {
            forbidden.push((token.to_string(), "a bearer token"));
        }
        // A push's callback URL token settles that payment: as secret as a token.
        if let Some(url) = request.body["CallBackURL"].as_str() {
            let token = url.rsplit('/').next().unwrap_or_default().to_string();
            forbidden.push((token, "a callback URL token"));
        }
        if let Some(timestamp) = request.body["Timestamp"].as_str() {
            forbidden.push((
                daraja::password(&shortcode, &passkey, timestamp),
                "a password",
            ));
        }
    }
    assert!(
        forbidden.iter().any(|(_, what)| *what == "a bearer token"),
        "no token issued?"
    );
    let all_phones =
        phones
            .iter()
            .copied()
            .chain([busy_phone, "0812345678", "0722334499", "0733445566"]);
    for phone in all_phones {
        forbidden.push((msisdn(phone), "a full phone number"));
        forbidden.push((phone.to_string(), "a full phone number"));
    }
    let logs = stack.logs();
    assert!(logs.len() > 20, "too few log lines: {}", logs.len());
    for line in &logs {
        for (value, what) in &forbidden {
            assert!(
                !line.contains(value.as_str()),
                "{what} in a log line: {line}"
            );
        }
    }
    let masked = "2547•••••678";
    assert!(
        logs.iter().any(|l| l.contains(masked)),
        "no masked phone ({masked}) in the logs"
    );
    stack.shutdown().await;
}
