//! Money safety on the callback path, over the real local stack: the functions under the
//! Lambda runtime emulator behind the API Gateway stand-in, the DynamoDB emulator, and the
//! Daraja simulator with its scripted deliveries. Each test starts its own stack, so a table
//! scan before and after a request sees only that test's writes.
//!
//! Needs the function binaries: `cargo build -p stk-push -p stk-callback -p payment-status`.

mod common;
mod faulty;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use daraja::mask_id;
use daraja_sim::{Outcome, SimConfig};
use dynamo::DynamoStore;
use local_stack::{env_vars, LocalStack, StackOptions};
use payments::payment::{PaymentRecord, PaymentStatus, ReviewReason};
use payments::PaymentStore;
use serde_json::{json, Value};

const LIMIT: usize = 64 * 1024;

type Item = std::collections::HashMap<String, AttributeValue>;

struct Stack {
    stack: LocalStack,
    http: reqwest::Client,
    store: DynamoStore,
}

async fn start(pool_size: usize, extra_env: &[(&str, &str)]) -> Stack {
    let stack = LocalStack::start(StackOptions {
        pool_size,
        sim: SimConfig {
            callback_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        extra_env: env_vars(extra_env),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    Stack {
        stack,
        http: reqwest::Client::new(),
        store,
    }
}

impl Stack {
    /// `POST /payments` through the gateway; returns the status and the body.
    async fn pay(&self, phone: &str, amount: u32, reference: &str) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{}/payments", self.stack.api_url()))
            .json(&json!({"phone": phone, "amount": amount, "reference": reference}))
            .send()
            .await
            .expect("POST /payments");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Starts a payment that Daraja accepts; returns its checkout id.
    /// Scripts the simulator's answer for `phone`, then a push of 100 that Daraja accepts.
    async fn accepted_with(&self, phone: &str, outcome: Outcome, reference: &str) -> String {
        self.stack.sim().script(Some(phone), vec![outcome]);
        self.accepted(phone, 100, reference).await
    }

    async fn accepted(&self, phone: &str, amount: u32, reference: &str) -> String {
        let (status, body) = self.pay(phone, amount, reference).await;
        assert_eq!(status, 202, "{body}");
        body["checkout_request_id"]
            .as_str()
            .expect("checkout_request_id")
            .to_string()
    }

    /// `POST /callbacks/stk/{token}` through the gateway, as if sent from `source_ip`.
    async fn callback(&self, token: &str, source_ip: &str, body: Vec<u8>) -> (u16, Value) {
        post_callback(
            self.http.clone(),
            format!("{}/callbacks/stk/{token}", self.stack.api_url()),
            source_ip.to_string(),
            body,
        )
        .await
    }

    /// `GET /payments/{id}` through the gateway, which must answer `200`.
    async fn status(&self, id: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/payments/{id}", self.stack.api_url()))
            .send()
            .await
            .expect("GET /payments/{id}");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("status JSON")
    }

    /// Whether a function emitted the metric `name` with the value 1.
    fn counted(&self, name: &str) -> bool {
        let line = format!("\"{name}\":1");
        self.stack.logs().iter().any(|l| l.contains(&line))
    }

    async fn record(&self, id: &str) -> PaymentRecord {
        self.store
            .get(id)
            .await
            .expect("read record")
            .unwrap_or_else(|| panic!("no record for {id}"))
    }

    /// Waits until the simulator has had `n` answers to its callbacks for `id`.
    async fn delivered(&self, id: &str, n: usize) -> Vec<daraja_sim::SentCallback> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let sent: Vec<_> = self
                .stack
                .sim()
                .callbacks()
                .into_iter()
                .filter(|c| c.checkout_request_id == id && c.status.is_some())
                .collect();
            if sent.len() >= n {
                return sent;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {n} callbacks for {id} answered",
                sent.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Every item of the table, by key.
    async fn scan(&self) -> BTreeMap<String, Item> {
        let mut items = BTreeMap::new();
        let mut start = None;
        loop {
            let page = self
                .stack
                .dynamo()
                .scan()
                .table_name(self.stack.table())
                .consistent_read(true)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .expect("scan");
            for item in page.items.unwrap_or_default() {
                let pk = match item.get("pk") {
                    Some(AttributeValue::S(pk)) => pk.clone(),
                    other => panic!("item without a string pk: {other:?}"),
                };
                items.insert(pk, item);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => return items,
            }
        }
    }

    /// The `fields` of every function log event with this `decision`.
    fn decisions(&self, decision: &str) -> Vec<Value> {
        self.stack
            .logs()
            .iter()
            .filter_map(|line| serde_json::from_str::<Value>(line.split_once("] ")?.1).ok())
            .filter_map(|event| event.get("fields").cloned())
            .filter(|fields| fields["decision"] == decision)
            .collect()
    }

    /// How many times the record of `id` became final (one log event per transition).
    fn transitions(&self, id: &str) -> usize {
        let masked = mask_id(id);
        ["transitioned", "orphan"]
            .iter()
            .flat_map(|d| self.decisions(d))
            .filter(|f| f["checkout_request_id"] == masked.as_str())
            .count()
    }

    async fn shutdown(self) {
        self.stack.shutdown().await;
    }
}

async fn post_callback(
    http: reqwest::Client,
    url: String,
    source_ip: String,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = http
        .post(url)
        .header("content-type", "application/json")
        .header("x-local-source-ip", source_ip)
        .body(body)
        .send()
        .await
        .expect("POST callback");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A Daraja callback body, as the simulator sends it.
fn callback_body(id: &str, code: i64, receipt: &str, amount: u32, phone: u64) -> Vec<u8> {
    let mut callback = json!({
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": id,
        "ResultCode": code,
        "ResultDesc": if code == 0 { "The service request is processed successfully." } else { "Request cancelled by user" },
    });
    if code == 0 {
        callback["CallbackMetadata"] = json!({"Item": [
            {"Name": "Amount", "Value": amount},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20261127090012u64},
            {"Name": "PhoneNumber", "Value": phone},
        ]});
    }
    json!({"Body": {"stkCallback": callback}})
        .to_string()
        .into_bytes()
}

fn epoch_millis() -> i64 {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since.as_millis()).expect("millis fit in i64")
}

fn changed(before: &BTreeMap<String, Item>, after: &BTreeMap<String, Item>) -> Vec<String> {
    let mut keys: Vec<String> = after
        .iter()
        .filter(|(pk, item)| before.get(*pk) != Some(item))
        .map(|(pk, _)| pk.clone())
        .collect();
    keys.extend(before.keys().filter(|pk| !after.contains_key(*pk)).cloned());
    keys
}

#[tokio::test]
async fn duplicate_and_replayed_callbacks_change_nothing() {
    let stack = start(4, &[]).await;
    let mut cases = Vec::new();
    for (i, times) in (2..=5u32).enumerate() {
        for concurrent in [false, true] {
            let phone = format!("07123450{}{}", i, u8::from(concurrent));
            stack.stack.sim().script(
                Some(&phone),
                vec![Outcome::success().duplicated(times, concurrent)],
            );
            let id = stack.accepted(&phone, 100, "DUP").await;
            cases.push((id, times, concurrent));
        }
    }
    for (id, times, concurrent) in &cases {
        let sent = stack.delivered(id, *times as usize).await;
        assert!(sent.iter().all(|c| c.status == Some(200)), "{sent:?}");
        let record = stack.record(id).await;
        let case = format!("{times} deliveries, concurrent: {concurrent}");
        assert_eq!(record.status, PaymentStatus::Completed, "{case}");
        assert_eq!(record.conflicting_callbacks, 0, "{case}");
        assert!(record.history.is_empty(), "{case}");
        assert_eq!(stack.transitions(id), 1, "{case}");
    }
    // Every delivery is answered: replaying a URL with the same body after settlement, one at a
    // time and all at once, is answered as Safaricom expects and writes nothing, not an
    // attribute of any item.
    for (id, times, concurrent) in &cases {
        let case = format!("{times} deliveries, concurrent: {concurrent}");
        let sent = stack.delivered(id, *times as usize).await;
        let record = stack.record(id).await;
        let before = stack.scan().await;
        let body = serde_json::to_vec(&sent[0].body).unwrap();
        let token = stack.stack.callback_token_for(id);
        let (status, _) = stack
            .callback(&token, "196.201.214.200", body.clone())
            .await;
        assert_eq!(status, 200);
        let url = format!("{}/callbacks/stk/{token}", stack.stack.api_url());
        let replays: Vec<_> = (0..4)
            .map(|_| {
                tokio::spawn(post_callback(
                    stack.http.clone(),
                    url.clone(),
                    "196.201.214.200".to_string(),
                    body.clone(),
                ))
            })
            .collect();
        for replay in replays {
            let (status, answer) = replay.await.expect("replay task");
            assert_eq!(status, 200, "{answer}");
        }
        assert_eq!(
            changed(&before, &stack.scan().await),
            Vec::<String>::new(),
            "{case}"
        );
        let again = stack.record(id).await;
        assert_eq!(again, record, "{case}");
        assert_eq!(
            again.updated_at, record.updated_at,
            "{case}: updated_at moved"
        );
        assert_eq!(again.receipt, record.receipt, "{case}");
        assert_eq!(again.completed_at, record.completed_at, "{case}");
        assert_eq!(stack.transitions(id), 1, "{case}");
    }
    stack.shutdown().await;
}

#[tokio::test]
async fn different_second_callback_is_kept_and_a_second_receipt_needs_review() {
    let stack = start(2, &[]).await;
    let phone = "0712345601";
    let id = stack
        .accepted_with(phone, Outcome::success(), "CONFLICT")
        .await;
    stack.delivered(&id, 1).await;
    let first = stack.record(&id).await;
    assert_eq!(first.status, PaymentStatus::Completed);

    let token = stack.stack.callback_token_for(&id);
    // A cancellation after the success says nothing about money: kept in history only.
    let (status, answer) = stack
        .callback(
            &token,
            "196.201.214.200",
            callback_body(&id, 1032, "", 100, 254712345601),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let record = stack.record(&id).await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt, first.receipt);
    assert_eq!(record.updated_at, first.updated_at);
    assert_eq!(record.conflicting_callbacks, 1);
    assert_eq!(record.review_reason, None);
    // A success with another receipt: the customer may have paid twice. The first result
    // stays, the record turns NEEDS_REVIEW with its reason, the new receipt goes to history.
    let (status, answer) = stack
        .callback(
            &token,
            "196.201.214.200",
            callback_body(&id, 0, "ZZZ9999999", 100, 254712345601),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let record = stack.record(&id).await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.review_reason, Some(ReviewReason::SecondReceipt));
    assert_eq!(record.receipt, first.receipt);
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.amount_paid, first.amount_paid);
    assert_eq!(record.conflicting_callbacks, 2);
    assert_eq!(record.history[0].result_code, "1032");
    assert_eq!(record.history[1].receipt.as_deref(), Some("ZZZ9999999"));
    assert_eq!(stack.transitions(&id), 1);
    assert_eq!(stack.decisions("conflict").len(), 1);
    assert_eq!(stack.decisions("flagged").len(), 1);
    assert!(
        stack.counted("PaymentNeedsReview"),
        "no PaymentNeedsReview metric"
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_receipt_already_recorded_on_another_payment_needs_review() {
    // One M-Pesa receipt settles one payment. A success for a second pending payment that
    // carries the first one's receipt (a replayed or forged callback) must not mark it paid.
    // Before, it completed the second payment too.
    let stack = start(2, &[]).await;
    let first = stack
        .accepted_with("0712345603", Outcome::success(), "FIRSTPAID")
        .await;
    stack.delivered(&first, 1).await;
    let paid = stack.record(&first).await;
    assert_eq!(paid.status, PaymentStatus::Completed);
    let receipt = paid.receipt.clone().expect("the simulator's receipt");
    let before = stack.scan().await;
    let claim = format!("RCPT#{receipt}");
    assert_eq!(
        before[&claim]["checkout_request_id"].as_s().ok(),
        Some(&first),
        "the receipt names the payment it settled"
    );

    let second = stack
        .accepted_with("0712345604", Outcome::code(1037).lost(), "SECONDPAY")
        .await;
    let token = stack.stack.callback_token_for(&second);
    let (status, answer) = stack
        .callback(
            &token,
            "196.201.214.200",
            callback_body(&second, 0, &receipt, 100, 254712345604),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let record = stack.record(&second).await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.review_reason, Some(ReviewReason::ReceiptReused));
    assert_eq!(record.receipt_holder.as_deref(), Some(first.as_str()));
    assert_eq!(record.receipt.as_deref(), Some(receipt.as_str()));
    // The first payment and the claim are untouched.
    assert_eq!(stack.record(&first).await, paid);
    let after = stack.scan().await;
    assert_eq!(after[&claim], before[&claim]);
    assert_eq!(stack.decisions("receipt_reused").len(), 1);
    assert!(
        stack.counted("PaymentNeedsReview"),
        "no PaymentNeedsReview metric"
    );
    // The status API says why, and which payment the receipt settled.
    let body = stack.status(&second).await;
    assert_eq!(body["status"], "NEEDS_REVIEW");
    assert_eq!(body["review_reason"], "receipt_reused");
    assert_eq!(body["receipt_holder"], first.as_str());
    stack.shutdown().await;
}

#[tokio::test]
async fn a_receipt_after_a_cancellation_needs_review() {
    // Safaricom said cancelled, then sent a success with a receipt: the customer may have
    // paid. Before, the first result stuck and the payment stayed FAILED.
    let stack = start(1, &[]).await;
    let id = stack
        .accepted_with("0712345602", Outcome::code(1032), "LATEPAID")
        .await;
    stack.delivered(&id, 1).await;
    assert_eq!(stack.record(&id).await.status, PaymentStatus::Failed);
    let token = stack.stack.callback_token_for(&id);
    let (status, answer) = stack
        .callback(
            &token,
            "196.201.214.200",
            callback_body(&id, 0, "LATE123456", 100, 254712345602),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let record = stack.record(&id).await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(
        record.review_reason,
        Some(ReviewReason::SuccessAfterFailure)
    );
    assert_eq!(record.result_code.as_deref(), Some("1032"));
    assert_eq!(record.history.len(), 1);
    assert_eq!(record.history[0].receipt.as_deref(), Some("LATE123456"));
    // The status API says why.
    let body = stack.status(&id).await;
    assert_eq!(body["status"], "NEEDS_REVIEW");
    assert_eq!(body["review_reason"], "success_after_failure");
    stack.shutdown().await;
}

#[tokio::test]
async fn callback_before_pending_write_converges() {
    let stack = start(2, &[]).await;
    for (code, status, outcome) in [
        (0, PaymentStatus::Completed, "success"),
        (1037, PaymentStatus::Failed, "unreachable"),
    ] {
        let scripted = || {
            if code == 0 {
                Outcome::success()
            } else {
                Outcome::code(code)
            }
        };
        let (normal_phone, early_phone) = if code == 0 {
            ("0712345611", "0712345612")
        } else {
            ("0712345621", "0712345622")
        };
        stack
            .stack
            .sim()
            .script(Some(normal_phone), vec![scripted()]);
        stack
            .stack
            .sim()
            .script(Some(early_phone), vec![scripted().before_response()]);
        let normal = stack.accepted(normal_phone, 250, "ORDER-7").await;
        let early = stack.accepted(early_phone, 250, "ORDER-7").await;
        stack.delivered(&normal, 1).await;
        stack.delivered(&early, 1).await;
        let (normal, early) = (stack.record(&normal).await, stack.record(&early).await);

        let case = format!("result {code}");
        for record in [&normal, &early] {
            assert_eq!(record.status, status, "{case}");
            assert_eq!(record.amount, Some(250), "{case}");
            assert_eq!(record.reference.as_deref(), Some("ORDER-7"), "{case}");
            assert_eq!(
                record.result_code.as_deref(),
                Some(code.to_string().as_str())
            );
            assert_eq!(record.outcome.as_deref(), Some(outcome), "{case}");
            assert!(record.details_recorded, "{case}");
            assert!(record.merchant_request_id.is_some(), "{case}");
            assert!(record.created_at.is_some() && record.completed_at.is_some());
        }
        let msisdn = |local: &str| format!("254{}", &local[1..]);
        assert_eq!(normal.phone, Some(msisdn(normal_phone)), "{case}");
        assert_eq!(early.phone, Some(msisdn(early_phone)), "{case}");
        // Everything that does not name the payment, its customer or its moment is the
        // same; those are present on both.
        let same = |r: &PaymentRecord| {
            let mut shown = serde_json::to_value(r).expect("record as JSON");
            let fields = shown.as_object_mut().expect("an object");
            for volatile in [
                "checkout_request_id",
                "merchant_request_id",
                "phone",
                "paying_phone",
                "receipt",
                "transaction_date",
                "created_at",
                "updated_at",
                "completed_at",
            ] {
                let present = fields.remove(volatile).is_some_and(|v| !v.is_null());
                fields.insert(volatile.to_string(), json!(present));
            }
            shown
        };
        assert_eq!(same(&normal), same(&early), "{case}");
        if code == 0 {
            assert_eq!(early.amount_paid.as_deref(), Some("250"));
            assert_eq!(early.paying_phone, Some(msisdn(early_phone)));
            assert!(early.receipt.is_some());
        }
        assert_eq!(stack.transitions(&early.checkout_request_id), 1, "{case}");
    }
    // Once the pending write came, nothing is an orphan any more.
    assert!(stack.store.orphans(50).await.unwrap().is_empty());
    stack.shutdown().await;
}

#[tokio::test]
async fn unknown_checkout_id_is_kept_as_orphan() {
    let stack = start(1, &[]).await;
    let id = "ws_CO_27112026093000123712345699";
    let body = callback_body(id, 0, "TKR7PQ2ORP", 420, 254712345699);
    let token = stack.stack.callback_token_for(id);
    let sent_at = epoch_millis();
    let (status, answer) = stack
        .callback(&token, "196.201.214.207", body.clone())
        .await;
    assert_eq!(
        (status, answer),
        (200, json!({"ResultCode": 0, "ResultDesc": "Accepted"}))
    );

    let orphans = stack.store.orphans(10).await.unwrap();
    assert_eq!(orphans.len(), 1);
    let orphan = &orphans[0];
    assert_eq!(orphan.checkout_request_id, id);
    assert_eq!(orphan.status, PaymentStatus::Completed);
    assert_eq!(orphan.receipt.as_deref(), Some("TKR7PQ2ORP"));
    assert!(!orphan.details_recorded);
    assert_eq!(
        orphan.raw_callback.as_deref().map(str::as_bytes),
        Some(&body[..])
    );
    let received = orphan
        .completed_at
        .expect("received time")
        .timestamp_millis();
    assert!(
        (sent_at - 1_000..=epoch_millis()).contains(&received),
        "received at {received}, sent at {sent_at}"
    );

    // The query the README documents, with the source address.
    let listed = stack
        .stack
        .dynamo()
        .query()
        .table_name(stack.stack.table())
        .index_name("orphan-index")
        .key_condition_expression("orphan_pk = :o")
        .expression_attribute_values(":o", AttributeValue::S("ORPHAN".into()))
        .send()
        .await
        .expect("orphan-index query")
        .items
        .unwrap_or_default();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        listed[0].get("source_ip"),
        Some(&AttributeValue::S("196.201.214.207".into()))
    );
    assert_eq!(
        listed[0].get("pk"),
        Some(&AttributeValue::S(format!("PAY#{id}")))
    );

    let counted = stack.decisions("orphan");
    assert_eq!(counted.len(), 1, "{counted:?}");
    assert_eq!(counted[0]["source_ip"], "196.201.214.207");
    assert_eq!(counted[0]["checkout_request_id"], mask_id(id).as_str());
    stack.shutdown().await;
}

#[tokio::test]
async fn unparseable_body_behind_valid_token_is_stored_raw() {
    let stack = start(1, &[]).await;
    let phone = "0712345631";
    let pending = stack
        .accepted_with(phone, Outcome::success().lost(), "RAW")
        .await;
    let token = stack.stack.callback_token_for(&pending);

    let mut junk = b"<html>".to_vec();
    junk.resize(LIMIT, b'x');
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (b"<html>Service Unavailable</html>".to_vec(), "invalid_json"),
        (b"".to_vec(), "invalid_json"),
        (vec![0xff, 0xfe, 0x00, 0x7b, 0x80], "invalid_json"),
        (junk, "invalid_json"),
        (
            json!({"Body": {"result": "ok", "CheckoutRequestID": pending}})
                .to_string()
                .into_bytes(),
            "invalid_callback",
        ),
        (
            json!({"Body": {"stkCallback": {"CheckoutRequestID": pending}}})
                .to_string()
                .into_bytes(),
            "invalid_callback",
        ),
        (b"[1,2,3]".to_vec(), "invalid_callback"),
    ];
    for (n, (body, code)) in cases.into_iter().enumerate() {
        let source = format!("196.201.212.{}", 10 + n);
        let before = stack.scan().await;
        let (status, answer) = stack.callback(&token, &source, body.clone()).await;
        assert_eq!(status, 400, "case {n}: {answer}");
        assert_eq!(answer["error"]["code"], code, "case {n}");
        let kept_as = answer["error"]["kept_as"].as_str().expect("kept_as");

        let after = stack.scan().await;
        assert_eq!(
            changed(&before, &after),
            vec![kept_as.to_string()],
            "case {n}"
        );
        let item = &after[kept_as];
        assert!(kept_as.starts_with("RAW#"), "{kept_as}");
        let s = |name: &str| match item.get(name) {
            Some(AttributeValue::S(text)) => text.clone(),
            other => panic!("case {n}: {name} is {other:?}"),
        };
        assert_eq!(s("reason"), code, "case {n}");
        assert_eq!(s("source_ip"), source, "case {n}");
        assert_eq!(s("orphan_pk"), "UNREADABLE", "case {n}");
        assert!(!s("received_at").is_empty());
        let stored = match item.get("raw_body") {
            Some(AttributeValue::S(text)) => text.clone().into_bytes(),
            Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
            other => panic!("case {n}: raw_body is {other:?}"),
        };
        assert_eq!(stored, body, "case {n}");
        assert_eq!(
            item.get("body_bytes"),
            Some(&AttributeValue::N(body.len().to_string()))
        );
    }
    // Listed through the index, next to (not among) the orphan results.
    let listed = stack
        .stack
        .dynamo()
        .query()
        .table_name(stack.stack.table())
        .index_name("orphan-index")
        .key_condition_expression("orphan_pk = :o")
        .expression_attribute_values(":o", AttributeValue::S("UNREADABLE".into()))
        .send()
        .await
        .expect("orphan-index query");
    assert_eq!(listed.items.unwrap_or_default().len(), 7);
    assert!(stack.store.orphans(10).await.unwrap().is_empty());
    assert_eq!(stack.record(&pending).await.status, PaymentStatus::Pending);
    assert_eq!(stack.decisions("unreadable").len(), 7);
    stack.shutdown().await;
}

#[tokio::test]
async fn another_payments_callback_url_settles_nothing() {
    // Each push has its own callback URL. Someone who saw one (in a log, at a proxy) holds a
    // valid token, but it settles that payment only. Before, one static token settled any.
    let stack = start(1, &[]).await;
    let seen = stack
        .accepted_with("0712345642", Outcome::success().lost(), "SEEN")
        .await;
    let target = stack
        .accepted_with("0712345643", Outcome::success().lost(), "TARGET")
        .await;
    let forged = callback_body(&target, 0, "TKR7PQ2FRG", 100, 254712345643);
    let before = stack.scan().await;
    for token in [
        stack.stack.callback_token_for(&seen),
        // Valid, but sent by no push.
        stack.stack.unsent_callback_token(),
    ] {
        let (status, answer) = stack
            .callback(&token, "196.201.214.200", forged.clone())
            .await;
        assert_eq!(
            (status, answer),
            (404, json!({"message": "Not Found"})),
            "{token}"
        );
    }
    let after = stack.scan().await;
    assert!(
        changed(&before, &after).is_empty(),
        "{:?}",
        changed(&before, &after)
    );
    assert_eq!(stack.decisions("refused_binding").len(), 2);
    let refused = stack
        .stack
        .logs()
        .iter()
        .filter(|l| l.contains("\"CallbackRefused\":1") && l.contains("\"Reason\":\"binding\""))
        .count();
    assert_eq!(refused, 2);
    // Its own URL settles it.
    let (status, _) = stack
        .callback(
            &stack.stack.callback_token_for(&target),
            "196.201.214.200",
            forged,
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(stack.record(&target).await.status, PaymentStatus::Completed);
    assert_eq!(stack.record(&seen).await.status, PaymentStatus::Pending);
    stack.shutdown().await;
}

#[tokio::test]
async fn rotating_the_callback_key_mid_flight_loses_no_callback() {
    // The README's procedure, each step a new `callback_token` and a redeploy, with pushes
    // whose callbacks are still to come across every step.
    const OLD: &str = "old-callback-key-0123456789abcdef";
    const NEW: &str = "new-callback-key-0123456789abcdef";
    let mut stack = start(1, &[("CALLBACK_TOKEN", OLD)]).await;
    let held = || Outcome::success().delay(Duration::from_secs(120));
    let a = stack.accepted_with("0712345651", held(), "ROT-A").await;
    stack
        .stack
        .redeploy(&[("CALLBACK_TOKEN", &format!("0:{OLD},1:{NEW}"))])
        .await
        .expect("step 1: the new key is accepted");
    let b = stack.accepted_with("0712345652", held(), "ROT-B").await;
    stack
        .stack
        .redeploy(&[("CALLBACK_TOKEN", &format!("1:{NEW},0:{OLD}"))])
        .await
        .expect("step 2: the new key signs");
    let c = stack.accepted_with("0712345653", held(), "ROT-C").await;
    for (id, key_id) in [(&a, "0."), (&b, "0."), (&c, "1.")] {
        assert!(
            stack.stack.callback_token_for(id).starts_with(key_id),
            "{id}"
        );
    }
    // Now the customers answer: every callback, whichever key signed its URL, settles.
    for id in [&a, &b, &c] {
        stack.stack.sim().complete_now(id);
    }
    for id in [&a, &b, &c] {
        let sent = stack.delivered(id, 1).await;
        assert_eq!(sent[0].status, Some(200), "{id}");
        assert_eq!(
            stack.record(id).await.status,
            PaymentStatus::Completed,
            "{id}"
        );
    }

    // Step 3, once no URL the old key signed can be called back any more.
    stack
        .stack
        .redeploy(&[("CALLBACK_TOKEN", &format!("1:{NEW}"))])
        .await
        .expect("step 3: the old key is dropped");
    let d = stack
        .accepted_with("0712345654", Outcome::success(), "ROT-D")
        .await;
    stack.delivered(&d, 1).await;
    assert_eq!(stack.record(&d).await.status, PaymentStatus::Completed);
    // A URL the old key signed settles nothing now.
    let (status, _) = stack
        .callback(
            &stack.stack.callback_token_for(&a),
            "196.201.214.200",
            callback_body(&a, 1032, "", 100, 254712345651),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(stack.record(&a).await.conflicting_callbacks, 0);
    stack.shutdown().await;
}

#[tokio::test]
async fn wrong_or_missing_token_writes_nothing() {
    let stack = start(1, &[]).await;
    let phone = "0712345641";
    let id = stack
        .accepted_with(phone, Outcome::success().lost(), "TOKEN")
        .await;
    let token = stack.stack.callback_token_for(&id);
    let body = callback_body(&id, 0, "TKR7PQ2TOK", 100, 254712345641);
    let mut flipped = token.clone().into_bytes();
    flipped[0] = if flipped[0] == b'a' { b'b' } else { b'a' };
    let flipped = String::from_utf8(flipped).unwrap();

    let before = stack.scan().await;
    let reaching_the_function = [
        flipped,
        token.to_uppercase(),
        format!("{token}0"),
        token[..token.len() - 1].to_string(),
        "x".to_string(),
        "local-callback-token-4f9c2b7e1d".to_string(),
    ];
    for wrong in &reaching_the_function {
        let (status, answer) = stack.callback(wrong, "196.201.214.200", body.clone()).await;
        assert_eq!(
            (status, answer),
            (404, json!({"message": "Not Found"})),
            "{wrong}"
        );
    }
    // Each refusal that reached the function is counted, for the probing alarm.
    let refused = stack
        .stack
        .logs()
        .iter()
        .filter(|l| l.contains("\"CallbackRefused\":1") && l.contains("\"Reason\":\"token\""))
        .count();
    assert_eq!(refused, reaching_the_function.len());
    // No token at all: the route does not match, API Gateway itself answers.
    for path in [
        "/callbacks/stk/",
        "/callbacks/stk",
        &format!("/callbacks/stk/{token}/x"),
    ] {
        let response = stack
            .http
            .post(format!("{}{path}", stack.stack.api_url()))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{path}");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"message": "Not Found"})
        );
    }
    let after = stack.scan().await;
    assert!(
        changed(&before, &after).is_empty(),
        "{:?}",
        changed(&before, &after)
    );
    assert_eq!(
        stack.decisions("refused_token").len(),
        reaching_the_function.len()
    );
    assert_eq!(stack.record(&id).await.status, PaymentStatus::Pending);

    // The right token still works afterwards.
    let (status, _) = stack.callback(&token, "196.201.214.200", body).await;
    assert_eq!(status, 200);
    assert_eq!(stack.record(&id).await.status, PaymentStatus::Completed);
    stack.shutdown().await;
}

#[tokio::test]
async fn source_ip_allow_list() {
    let stack = start(
        1,
        &[
            ("CALLBACK_ALLOWED_IPS", "safaricom, 10.20.0.0/16"),
            ("CALLBACK_SOURCE_MODE", "enforce"),
        ],
    )
    .await;
    let phone = "0712345651";
    let id = stack
        .accepted_with(phone, Outcome::success(), "ALLOW")
        .await;
    // The simulator calls from 127.0.0.1, which the list does not hold.
    let sent = stack.delivered(&id, 1).await;
    assert_eq!(sent[0].status, Some(404));
    assert_eq!(stack.record(&id).await.status, PaymentStatus::Pending);

    let token = stack.stack.callback_token_for(&id);
    let body = serde_json::to_vec(&sent[0].body).unwrap();
    let before = stack.scan().await;
    for foreign in ["8.8.8.8", "196.201.214.201", "10.21.0.1", "::1"] {
        let (status, answer) = stack.callback(&token, foreign, body.clone()).await;
        assert_eq!(
            (status, answer),
            (404, json!({"message": "Not Found"})),
            "{foreign}"
        );
    }
    assert!(changed(&before, &stack.scan().await).is_empty());
    let refused: Vec<Value> = stack
        .decisions("refused_source")
        .into_iter()
        .map(|f| f["source_ip"].clone())
        .collect();
    assert_eq!(
        refused,
        vec![
            json!("127.0.0.1"),
            json!("8.8.8.8"),
            json!("196.201.214.201"),
            json!("10.21.0.1"),
            json!("::1")
        ]
    );
    let warned = stack
        .stack
        .logs()
        .iter()
        .filter(|l| l.contains("refused_source") && l.contains("\"WARN\""))
        .count();
    assert_eq!(warned, 5);

    // From a listed block, and from one of Safaricom's published addresses.
    let (status, _) = stack.callback(&token, "10.20.7.9", body.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(stack.record(&id).await.status, PaymentStatus::Completed);
    let before = stack.record(&id).await;
    let (status, _) = stack.callback(&token, "196.201.212.69", body).await;
    assert_eq!(status, 200);
    assert_eq!(
        stack.record(&id).await,
        before,
        "a duplicate changes nothing"
    );
    assert_eq!(stack.decisions("duplicate").len(), 1);
    stack.shutdown().await;
}

#[tokio::test]
async fn report_mode_accepts_and_counts_an_unlisted_source() {
    // The default: no official list of Safaricom's addresses exists, so a callback from an
    // address the list lacks is applied, and counted and logged for the operator.
    let stack = start(1, &[("CALLBACK_ALLOWED_IPS", "safaricom")]).await;
    let id = stack
        .accepted_with("0712345652", Outcome::success(), "REPORT")
        .await;
    // The simulator calls from 127.0.0.1, which the list does not hold.
    let sent = stack.delivered(&id, 1).await;
    assert_eq!(sent[0].status, Some(200));
    assert_eq!(stack.record(&id).await.status, PaymentStatus::Completed);
    // From a listed address: applied, and not counted as unlisted.
    let body = serde_json::to_vec(&sent[0].body).unwrap();
    let token = stack.stack.callback_token_for(&id);
    let (status, _) = stack.callback(&token, "196.201.214.200", body).await;
    assert_eq!(status, 200);
    let unlisted: Vec<String> = stack
        .stack
        .logs()
        .into_iter()
        .filter(|l| l.contains("\"CallbackUnlistedSource\":1"))
        .collect();
    assert_eq!(unlisted.len(), 1, "{unlisted:?}");
    let warned = stack
        .stack
        .logs()
        .iter()
        .filter(|l| l.contains("outside CALLBACK_ALLOWED_IPS accepted") && l.contains("127.0.0.1"))
        .count();
    assert_eq!(warned, 1);
    assert!(stack.decisions("refused_source").is_empty());
    // A wrong token from an unlisted source is still refused, and not counted as unlisted.
    let (status, _) = stack
        .callback(
            "0.00000000000000000000000000000000.00000000000000000000000000000000",
            "8.8.8.8",
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, 404);
    assert_eq!(
        stack
            .stack
            .logs()
            .iter()
            .filter(|l| l.contains("\"CallbackUnlistedSource\":1"))
            .count(),
        1
    );
    stack.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_prompt_frees_the_phone_at_once() {
    // The customer cancels, then wants to pay: before, the phone answered 409 phone_busy for
    // PHONE_LOCK_SECONDS after the push.
    let stack = start(1, &[]).await;
    let phone = "0712345681";
    let first = stack
        .accepted_with(phone, Outcome::code(1032), "CANCEL-1")
        .await;
    let sent = stack.delivered(&first, 1).await;
    assert_eq!(sent[0].status, Some(200));
    assert_eq!(stack.record(&first).await.status, PaymentStatus::Failed);
    let second = stack.accepted(phone, 100, "CANCEL-2").await;
    assert_ne!(second, first);
    // A late copy of the first push's failure does not free the second push's phone.
    let (status, _) = stack
        .callback(
            &stack.stack.callback_token_for(&first),
            "196.201.214.200",
            serde_json::to_vec(&sent[0].body).unwrap(),
        )
        .await;
    assert_eq!(status, 200);
    let (status, answer) = stack.pay(phone, 100, "CANCEL-3").await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "phone_busy");
    stack.shutdown().await;
}

#[tokio::test]
async fn amount_mismatch_needs_review() {
    let stack = start(1, &[]).await;
    let phone = "0712345661";
    let id = stack
        .accepted_with(phone, Outcome::success().amount_paid(json!(99)), "MISMATCH")
        .await;
    stack.delivered(&id, 1).await;
    let response = stack
        .http
        .get(format!("{}/payments/{id}", stack.stack.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let shown: Value = response.json().await.unwrap();
    assert_eq!(shown["status"], "NEEDS_REVIEW");
    assert_eq!(shown["review_reason"], "amount_mismatch");
    assert_eq!(shown["amount"], 100);
    assert_eq!(shown["amount_paid"], "99");
    assert!(shown["receipt"].is_string());
    let record = stack.record(&id).await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.amount_paid_whole, Some(99));
    stack.shutdown().await;
}

#[tokio::test]
async fn oversized_body_is_refused() {
    let stack = start(1, &[]).await;
    let phone = "0712345671";
    let id = stack
        .accepted_with(phone, Outcome::success().lost(), "BIG")
        .await;
    let token = stack.stack.callback_token_for(&id);
    // A genuine callback padded past the limit, and plain junk.
    let mut padded = callback_body(&id, 0, "TKR7PQ2BIG", 100, 254712345671);
    padded.resize(LIMIT + 1, b' ');
    let before = stack.scan().await;
    for body in [padded, vec![b'x'; 5 * LIMIT]] {
        let (status, answer) = stack.callback(&token, "196.201.214.200", body).await;
        assert_eq!(status, 413, "{answer}");
        assert_eq!(answer["error"]["code"], "payload_too_large");
    }
    assert!(changed(&before, &stack.scan().await).is_empty());
    assert_eq!(stack.record(&id).await.status, PaymentStatus::Pending);
    assert_eq!(stack.decisions("oversized").len(), 2);
    stack.shutdown().await;
}

#[tokio::test]
async fn a_callback_the_store_refuses_is_503_counted_logged_and_can_be_replayed() {
    // DynamoDB fails every request while the callback arrives (a fault proxy between the
    // functions and the emulator). Safaricom does not resend: the answer is 503, the failure
    // is counted for the alarm, the log line holds the result, and posting it again once
    // DynamoDB answers settles the payment.
    let (faults, proxy) = faulty::FaultyDynamo::start(common::moto_endpoint().await, 0..0).await;
    let stack = LocalStack::start(StackOptions {
        pool_size: 1,
        sim: SimConfig {
            callback_delay: Duration::from_millis(50),
            ..SimConfig::default()
        },
        dynamodb_endpoint: Some(proxy),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    let s = Stack {
        stack,
        http: reqwest::Client::new(),
        store,
    };
    let id = s
        .accepted_with("0712345690", Outcome::success().lost(), "STOREFAIL")
        .await;
    let token = s.stack.callback_token_for(&id);
    let body = callback_body(&id, 0, "SFR1234567", 100, 254712345690);

    faults.down(true);
    let (status, answer) = s.callback(&token, "196.201.214.200", body.clone()).await;
    faults.down(false);
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "storage_unavailable");
    assert!(
        s.counted("CallbackStoreFailed"),
        "no CallbackStoreFailed metric"
    );
    let failed = s.decisions("store_failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["receipt"], "SFR1234567");
    assert_eq!(failed[0]["result_code"], "0");
    assert_eq!(s.record(&id).await.status, PaymentStatus::Pending);

    // The replay: the same body, once DynamoDB answers.
    let (status, answer) = s.callback(&token, "196.201.214.200", body).await;
    assert_eq!(status, 200, "{answer}");
    let record = s.record(&id).await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt.as_deref(), Some("SFR1234567"));
    s.stack.shutdown().await;
}
