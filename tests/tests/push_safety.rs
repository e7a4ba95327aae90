//! Money safety on the push path (`POST /payments`): idempotency keys, one prompt per phone,
//! the intent written before Daraja is called, and a clear answer for every Daraja fault.
//!
//! Two layers:
//! - the push ledger's rules and the push service in-process, against the DynamoDB emulator
//!   and the Daraja simulator (request counts measured with an SDK interceptor);
//! - the deployed shape over the local stack: the push function under the Lambda runtime
//!   emulator behind the API Gateway stand-in. Each such test starts its own stack (its own
//!   simulator and table; one DynamoDB emulator serves the whole file), so the simulator's
//!   counts are that test's alone.
//!
//! Needs the function binaries:
//! `cargo build -p stk-push -p stk-callback -p payment-status -p reconcile`.

mod common;
mod faulty;
mod wait;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use app::api::PushService;
use aws_sdk_dynamodb::types::AttributeValue;
use bench::CountRequests;
use daraja::{
    Clock, DarajaConfig, NoSharedTokens, Secret, ShortCode, SystemClock, TransactionKind,
};
use daraja_sim::{Endpoint, Fault, SimConfig, SimHandle, SANDBOX_PASSKEY, SANDBOX_SHORTCODE};
use dynamo::DynamoLedger;
use dynamo::DynamoStore;
use local_stack::{env_vars, gateway, LocalStack, StackOptions};
use payments::intent::{IntentKey, IntentStatus, PushLedger};
use payments::payment::PaymentStatus;
use payments::PaymentStore;
use serde_json::{json, Value};

use common::{fresh_table, moto_endpoint};
use faulty::FaultyDynamo;
use wait::Deadline;

async fn ledger() -> (Arc<dyn PushLedger>, Arc<dyn PaymentStore>) {
    let (client, table) = fresh_table("push").await;
    (
        Arc::new(DynamoLedger::new(client.clone(), table.clone())),
        Arc::new(DynamoStore::new(client, table)),
    )
}

// The same rules the in-memory ledger passes in `shared`'s unit tests, on DynamoDB.
payments::push_ledger_conformance!(ledger);

// ---------------------------------------------------------------------------------------
// In-process: the push service with the DynamoDB ledger and the simulator.

struct InProcess {
    service: PushService,
    sim: SimHandle,
    requests: CountRequests,
    store: DynamoStore,
    ledger: DynamoLedger,
}

async fn in_process() -> InProcess {
    let sim = daraja_sim::start(
        "127.0.0.1:0".parse().expect("loopback"),
        SimConfig {
            callback_delay: Duration::from_secs(30),
            ..SimConfig::default()
        },
    )
    .await
    .expect("simulator starts");
    let (client, table) = fresh_table("push").await;
    let requests = CountRequests::default();
    let counted = requests.attach(&client);
    let config = DarajaConfig {
        base_url: sim.base_url(),
        consumer_key: Secret::from("test-consumer-key"),
        consumer_secret: Secret::from("test-consumer-secret"),
        passkey: Secret::from(SANDBOX_PASSKEY),
        shortcode: ShortCode::parse(SANDBOX_SHORTCODE).expect("sandbox shortcode"),
        kind: TransactionKind::PayBill,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    };
    let clock = Arc::new(SystemClock);
    let service = PushService {
        daraja: Arc::new(
            app::daraja_client(config, clock.clone(), Arc::new(NoSharedTokens)).expect("client"),
        ),
        ledger: Arc::new(DynamoLedger::new(counted, table.clone())),
        clock,
        callback_keys: app::api::CallbackKeys::parse("a-key-of-thirty-two-characters!!").unwrap(),
        callback_base_url: Some("http://127.0.0.1:9".into()),
        phone_lock: app::api::DEFAULT_PHONE_LOCK,
    };
    InProcess {
        service,
        sim,
        requests,
        store: DynamoStore::new(client.clone(), table.clone()),
        ledger: DynamoLedger::new(client, table),
    }
}

fn body(phone: &str, amount: u32) -> Vec<u8> {
    json!({"phone": phone, "amount": amount, "reference": "INV-1", "description": "Order 1"})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn an_accepted_push_costs_two_dynamodb_requests_one_transaction_only_with_a_key() {
    let p = in_process().await;
    let answer = p
        .service
        .start(
            &body("0708374149", 100),
            None,
            Some(b"order-1"),
            daraja::Deadline::after(std::time::Duration::from_secs(25)),
        )
        .await
        .expect("accepted");
    assert_eq!(answer.status(), 202);
    assert_eq!(p.requests.total(), 2);
    // The key's intent and the phone lock change together; after Daraja, only the payment.
    assert_eq!(
        p.requests.by_operation(),
        [
            ("TransactWriteItems".to_owned(), 1),
            ("PutItem".to_owned(), 1)
        ]
    );
    let id = answer.body()["checkout_request_id"]
        .as_str()
        .expect("checkout id")
        .to_owned();
    let record = p.store.get(&id).await.unwrap().expect("pending record");
    assert_eq!(record.status, PaymentStatus::Pending);
    // Without a key the phone lock is the intent, still written first: one item, no
    // transaction.
    p.service
        .start(
            &body("0708374150", 100),
            None,
            None,
            daraja::Deadline::after(std::time::Duration::from_secs(25)),
        )
        .await
        .expect("accepted");
    assert_eq!(p.requests.total(), 4);
    assert_eq!(
        p.requests.by_operation(),
        [
            ("TransactWriteItems".to_owned(), 1),
            ("PutItem".to_owned(), 3)
        ]
    );
    assert_eq!(p.sim.counts().stk_push, 2);
}

#[tokio::test]
async fn a_refused_push_costs_two_dynamodb_requests_and_is_replayed() {
    let p = in_process().await;
    p.sim.fault(
        Endpoint::StkPush,
        Fault::Status {
            http: 400,
            error_code: "400.002.02".into(),
            error_message: "Bad Request - Invalid Amount".into(),
        },
        1,
    );
    let error = p
        .service
        .start(
            &body("0708374149", 100),
            None,
            Some(b"order-1"),
            daraja::Deadline::after(std::time::Duration::from_secs(25)),
        )
        .await
        .expect_err("refused");
    assert_eq!(
        (error.status(), error.code.as_str()),
        (502, "daraja_rejected")
    );
    assert_eq!(p.requests.total(), 2);
    let again = p
        .service
        .start(
            &body("0708374149", 100),
            None,
            Some(b"order-1"),
            daraja::Deadline::after(std::time::Duration::from_secs(25)),
        )
        .await
        .expect("replayed");
    assert_eq!((again.status(), again.body()), (502, error.body()));
    assert_eq!(p.sim.counts().stk_push, 1);
    // Refused: nothing is on the phone, so it is free for the next payment.
    assert_eq!(
        p.ledger
            .phone_lock("254708374149", SystemClock.now())
            .await
            .unwrap(),
        None
    );
}

#[tokio::test]
async fn ledger_pending_write_is_the_store_s_own() {
    // The ledger writes the pending record inside its transaction; it must read back exactly
    // as the store's own pending write does.
    let p = in_process().await;
    let answer = p
        .service
        .start(
            &body("0708374149", 100),
            None,
            None,
            daraja::Deadline::after(std::time::Duration::from_secs(25)),
        )
        .await
        .expect("accepted");
    let id = answer.body()["checkout_request_id"]
        .as_str()
        .expect("checkout id")
        .to_owned();
    let via_ledger = p.store.get(&id).await.unwrap().expect("record");
    let mut payment = payments::conformance::payment("ws_CO_via_store", 100);
    payment.merchant_request_id = via_ledger.merchant_request_id.clone().expect("merchant id");
    payment.charge = daraja::Charge::parse("254708374149", 100, "INV-1", Some("Order 1"))
        .expect("a valid charge");
    payment.created_at = via_ledger.created_at.expect("created");
    // The push's callback URL nonce is written with it, as by the store.
    assert!(via_ledger.callback_nonce.is_some());
    payment
        .callback_nonce
        .clone_from(&via_ledger.callback_nonce);
    p.store.record_pending(&payment).await.unwrap();
    let mut via_store = p
        .store
        .get("ws_CO_via_store")
        .await
        .unwrap()
        .expect("record");
    via_store.checkout_request_id = id.clone();
    via_store.updated_at = via_ledger.updated_at;
    assert_eq!(via_store, via_ledger);
    let pending = p
        .store
        .pending_older_than(SystemClock.now() + Duration::from_secs(1), 10)
        .await
        .unwrap();
    assert!(pending.contains(&id), "{pending:?}");
}

// ---------------------------------------------------------------------------------------
// Over the local stack.

struct Stack {
    stack: LocalStack,
    http: reqwest::Client,
    store: DynamoStore,
    ledger: DynamoLedger,
}

struct Answer {
    status: u16,
    replayed: bool,
    body: Value,
}

async fn start(pool_size: usize, extra_env: &[(&str, &str)]) -> Stack {
    let stack = LocalStack::start(StackOptions {
        pool_size,
        sim: SimConfig {
            // Long enough that a prompt is still open on the simulated phone during a test.
            callback_delay: Duration::from_secs(20),
            ..SimConfig::default()
        },
        dynamodb_endpoint: Some(moto_endpoint().await),
        extra_env: env_vars(extra_env),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    Stack {
        store: DynamoStore::new(stack.dynamo(), stack.table()),
        ledger: DynamoLedger::new(stack.dynamo(), stack.table()),
        http: reqwest::Client::new(),
        stack,
    }
}

/// `POST /payments` through the gateway, with an `Idempotency-Key` when given.
async fn post(http: reqwest::Client, api_url: String, body: Value, key: Option<&str>) -> Answer {
    post_as(http, api_url, None, body, key).await
}

/// `POST /payments` as the IAM `caller` (the gateway's one local user when `None`).
async fn post_as(
    http: reqwest::Client,
    api_url: String,
    caller: Option<&str>,
    body: Value,
    key: Option<&str>,
) -> Answer {
    let mut request = http.post(format!("{api_url}/payments")).json(&body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    if let Some(caller) = caller {
        request = request.header(gateway::CALLER_HEADER, caller);
    }
    let response = request.send().await.expect("POST /payments");
    Answer {
        status: response.status().as_u16(),
        replayed: response
            .headers()
            .get("idempotent-replayed")
            .is_some_and(|v| v == "true"),
        body: response.json().await.unwrap_or(Value::Null),
    }
}

impl Stack {
    async fn pay(&self, body: Value, key: Option<&str>) -> Answer {
        post(self.http.clone(), self.stack.api_url(), body, key).await
    }

    /// `GET /payments?{query}` through the gateway: its 200 body.
    async fn find(&self, query: &str) -> Value {
        self.get_as(gateway::LOCAL_CALLER, &format!("?{query}"))
            .await
            .1
    }

    /// `GET /payments{rest}` as the IAM `caller`: the status and body.
    async fn get_as(&self, caller: &str, rest: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}/payments{rest}", self.stack.api_url()))
            .header(gateway::CALLER_HEADER, caller)
            .send()
            .await
            .expect("GET /payments");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON"))
    }

    fn pushes(&self) -> u64 {
        self.stack.sim().counts().stk_push
    }

    async fn intent_status(&self, key: &str) -> Option<IntentStatus> {
        self.ledger
            .intent(
                &IntentKey::idempotency_for(Some(gateway::LOCAL_CALLER), key),
                SystemClock.now(),
            )
            .await
            .expect("read intent")
            .map(|i| i.status)
    }

    /// Every item of the table, keyed by `pk`.
    async fn items(&self) -> HashMap<String, HashMap<String, AttributeValue>> {
        self.stack
            .dynamo()
            .scan()
            .table_name(self.stack.table())
            .send()
            .await
            .expect("scan")
            .items
            .unwrap_or_default()
            .into_iter()
            .filter_map(|item| match item.get("pk") {
                Some(AttributeValue::S(pk)) => Some((pk.clone(), item.clone())),
                _ => None,
            })
            .collect()
    }

    async fn shutdown(self) {
        self.stack.shutdown().await;
    }
}

fn payment(phone: &str, amount: u32) -> Value {
    json!({"phone": phone, "amount": amount, "reference": "INV-1001", "description": "Order 1001"})
}

fn code(answer: &Answer) -> &str {
    answer.body["error"]["code"].as_str().unwrap_or("")
}

fn with_prefix<'a>(
    items: &'a HashMap<String, HashMap<String, AttributeValue>>,
    prefix: &str,
) -> Vec<&'a String> {
    items.keys().filter(|pk| pk.starts_with(prefix)).collect()
}

#[tokio::test]
async fn a_retry_with_the_same_key_replays_the_first_answer_with_one_push() {
    let s = start(1, &[]).await;
    let first = s.pay(payment("0708374149", 100), Some("order-1001")).await;
    assert_eq!(first.status, 202, "{}", first.body);
    assert!(!first.replayed);
    let again = s
        .pay(payment("+254708374149", 100), Some("order-1001"))
        .await;
    assert_eq!((again.status, &again.body), (202, &first.body));
    assert!(again.replayed);
    assert_eq!(s.pushes(), 1);
    let id = first.body["checkout_request_id"].as_str().expect("id");
    let record = s.store.get(id).await.unwrap().expect("pending record");
    assert_eq!(record.status, PaymentStatus::Pending);
    assert_eq!(
        s.intent_status("order-1001").await,
        Some(IntentStatus::Accepted)
    );
    let items = s.items().await;
    assert_eq!(with_prefix(&items, "PAY#").len(), 1);
    assert_eq!(with_prefix(&items, "IDEM#").len(), 1);
    // The push wrote only the payment after Daraja's answer: the payment names the intent.
    let pay = &items[&format!("PAY#{id}")];
    let intent_pk = with_prefix(&items, "IDEM#")[0].clone();
    assert_eq!(pay["push_intent"], AttributeValue::S(intent_pk));
    assert_eq!(
        s.ledger
            .phone_lock("254708374149", SystemClock.now())
            .await
            .unwrap()
            .and_then(|l| l.checkout_request_id)
            .as_deref(),
        Some(id)
    );
    // The key is stored hashed only.
    assert!(items.keys().all(|pk| !pk.contains("order-1001")));
    s.shutdown().await;
}

#[tokio::test]
async fn two_callers_with_one_key_are_two_requests_and_see_only_their_own_payments() {
    // IAM principals of one merchant's two systems, using the same Idempotency-Key. Before, the
    // second got the first one's answer (or 422), and could read the first one's payment.
    const SHOP: &str = "arn:aws:sts::123456789012:assumed-role/shop/i-0abc";
    const SHOP_LATER: &str = "arn:aws:sts::123456789012:assumed-role/shop/i-0def";
    const BILLING: &str = "arn:aws:iam::123456789012:user/billing";
    let s = start(1, &[]).await;
    let as_caller =
        |caller, body, key| post_as(s.http.clone(), s.stack.api_url(), Some(caller), body, key);
    let shop = as_caller(SHOP, payment("0708374149", 100), Some("order-2001")).await;
    assert_eq!(shop.status, 202, "{}", shop.body);
    let billing = as_caller(BILLING, payment("0708374150", 250), Some("order-2001")).await;
    assert_eq!(billing.status, 202, "{}", billing.body);
    assert!(!billing.replayed);
    assert_eq!(s.pushes(), 2);
    // Another session of the same role is the same caller: its retry replays.
    let again = as_caller(SHOP_LATER, payment("0708374149", 100), Some("order-2001")).await;
    assert_eq!((again.status, again.replayed), (202, true));
    assert_eq!(again.body, shop.body);
    assert_eq!(s.pushes(), 2);

    let shop_id = shop.body["checkout_request_id"].as_str().expect("id");
    let billing_id = billing.body["checkout_request_id"].as_str().expect("id");
    assert_eq!(s.get_as(SHOP, &format!("/{shop_id}")).await.0, 200);
    let (status, body) = s.get_as(BILLING, &format!("/{shop_id}")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("payment_not_found"))
    );
    let ids = |found: &Value| -> Vec<String> {
        found["payments"]
            .as_array()
            .expect("payments")
            .iter()
            .map(|p| {
                p["checkout_request_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    };
    for (caller, own) in [(SHOP, shop_id), (BILLING, billing_id)] {
        let (_, by_key) = s.get_as(caller, "?idempotency_key=order-2001").await;
        assert_eq!(ids(&by_key), [own], "{caller}");
        let (_, by_reference) = s.get_as(caller, "?reference=INV-1001").await;
        assert_eq!(ids(&by_reference), [own], "{caller}");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn the_same_key_with_another_body_is_refused_with_422() {
    let s = start(1, &[]).await;
    let first = s.pay(payment("0708374149", 100), Some("order-1002")).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let other = s.pay(payment("0708374149", 250), Some("order-1002")).await;
    assert_eq!(other.status, 422, "{}", other.body);
    assert_eq!(code(&other), "idempotency_key_reused");
    let bad = s.pay(payment("0708374149", 250), Some("two words")).await;
    assert_eq!((bad.status, code(&bad)), (400, "invalid_idempotency_key"));
    assert_eq!(s.pushes(), 1);
    assert_eq!(with_prefix(&s.items().await, "PAY#").len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn concurrent_retries_with_one_key_make_one_push() {
    let s = start(4, &[]).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (http, url) = (s.http.clone(), s.stack.api_url());
        tasks.spawn(post(
            http,
            url,
            payment("0708374149", 100),
            Some("order-1003"),
        ));
    }
    let answers = tasks.join_all().await;
    assert_eq!(s.pushes(), 1);
    let accepted: Vec<_> = answers.iter().filter(|a| a.status == 202).collect();
    assert!(!accepted.is_empty());
    let id = &accepted[0].body["checkout_request_id"];
    for answer in &answers {
        match answer.status {
            // The first, or a replay of it.
            202 => assert_eq!(&answer.body["checkout_request_id"], id),
            409 => assert_eq!(code(answer), "idempotency_in_progress", "{}", answer.body),
            other => panic!("unexpected {other}: {}", answer.body),
        }
    }
    assert_eq!(with_prefix(&s.items().await, "PAY#").len(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn a_second_push_to_a_busy_phone_is_409_with_the_open_id_and_no_daraja_call() {
    let s = start(1, &[]).await;
    let first = s.pay(payment("0708374149", 100), None).await;
    assert_eq!(first.status, 202, "{}", first.body);
    let second = s
        .pay(payment("0708 374 149", 300), Some("order-1004"))
        .await;
    assert_eq!(second.status, 409, "{}", second.body);
    assert_eq!(code(&second), "phone_busy");
    assert_eq!(
        second.body["error"]["checkout_request_id"],
        first.body["checkout_request_id"]
    );
    assert_eq!(s.pushes(), 1);
    // Refused before any write: the second key is still free, and one payment exists.
    assert_eq!(s.intent_status("order-1004").await, None);
    let items = s.items().await;
    assert_eq!(with_prefix(&items, "PAY#").len(), 1);
    // Without a key the phone lock is the whole intent: no intent item of its own.
    assert_eq!(with_prefix(&items, "PHONE#").len(), 1);
    assert_eq!(with_prefix(&items, "INTENT#").len(), 0);
    // Another phone is not held up.
    let elsewhere = s.pay(payment("0711000001", 300), Some("order-1004")).await;
    assert_eq!(elsewhere.status, 202, "{}", elsewhere.body);
    s.shutdown().await;
}

#[tokio::test]
async fn daraja_unable_to_lock_subscriber_is_409_phone_busy_and_frees_the_key() {
    let s = start(1, &[]).await;
    s.stack.sim().fault(
        Endpoint::StkPush,
        Fault::Status {
            http: 500,
            error_code: "500.001.1001".into(),
            error_message:
                "Unable to lock subscriber, a transaction is already in process for the current subscriber"
                    .into(),
        },
        1,
    );
    let busy = s.pay(payment("0708374149", 100), Some("order-1005")).await;
    assert_eq!(busy.status, 409, "{}", busy.body);
    assert_eq!(code(&busy), "phone_busy");
    assert_eq!(busy.body["error"]["daraja_error_code"], "500.001.1001");
    assert_eq!(s.pushes(), 1);
    // No prompt of ours is on the phone: key and phone are free, so the retry goes through.
    assert_eq!(s.intent_status("order-1005").await, None);
    assert_eq!(
        s.ledger
            .phone_lock("254708374149", SystemClock.now())
            .await
            .unwrap(),
        None
    );
    let retry = s.pay(payment("0708374149", 100), Some("order-1005")).await;
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(s.pushes(), 2);
    s.shutdown().await;
}

#[tokio::test]
async fn dynamodb_down_before_the_push_is_503_and_nothing_is_sent() {
    let s = start(1, &[("AWS_ENDPOINT_URL_DYNAMODB", "http://127.0.0.1:1")]).await;
    let answer = s.pay(payment("0708374149", 100), Some("order-1006")).await;
    assert_eq!(answer.status, 503, "{}", answer.body);
    assert_eq!(code(&answer), "storage_unavailable");
    // The token is got before the intent is written (so that an unsettled intent means a push
    // was sent); no push is sent without the intent.
    assert_eq!(s.stack.sim().counts().stk_push, 0);
    assert!(s.items().await.is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn a_daraja_hang_is_504_outcome_unknown_and_the_phone_stays_locked() {
    let s = start(1, &[("DARAJA_REQUEST_TIMEOUT_MS", "800")]).await;
    s.stack.sim().fault(Endpoint::StkPush, Fault::Hang, 1);
    let hung = s.pay(payment("0708374149", 100), Some("order-1007")).await;
    assert_eq!(hung.status, 504, "{}", hung.body);
    assert_eq!(code(&hung), "daraja_timeout");
    assert_eq!(hung.body["error"]["outcome"], "unknown");
    assert_eq!(
        s.intent_status("order-1007").await,
        Some(IntentStatus::OutcomeUnknown)
    );
    // The same key gets the same answer; another key for the phone is held off. No second push.
    let again = s.pay(payment("0708374149", 100), Some("order-1007")).await;
    assert_eq!((again.status, &again.body), (504, &hung.body));
    let other = s.pay(payment("0708374149", 100), Some("order-1008")).await;
    assert_eq!((other.status, code(&other)), (409, "phone_busy"));
    assert_eq!(s.pushes(), 1);
    let lock = s
        .ledger
        .phone_lock("254708374149", SystemClock.now())
        .await
        .unwrap()
        .expect("phone still locked");
    assert!(lock.locked_until >= SystemClock.now().timestamp() + 100);
    assert!(with_prefix(&s.items().await, "PAY#").is_empty());
    s.shutdown().await;
}

#[tokio::test]
async fn spike_arrest_is_503_and_a_retry_may_push() {
    let s = start(1, &[]).await;
    s.stack
        .sim()
        .fault(Endpoint::StkPush, Fault::SpikeArrest, 1);
    let busy = s.pay(payment("0708374149", 100), Some("order-1009")).await;
    assert_eq!(busy.status, 503, "{}", busy.body);
    assert_eq!(code(&busy), "daraja_unavailable");
    assert_eq!(busy.body["error"]["daraja_error_code"], "500.003.02");
    assert_eq!(s.intent_status("order-1009").await, None);
    assert!(s.items().await.keys().all(|pk| pk.starts_with("TOKEN#")));
    let retry = s.pay(payment("0708374149", 100), Some("order-1009")).await;
    assert_eq!(retry.status, 202, "{}", retry.body);
    assert_eq!(s.pushes(), 2);
    s.shutdown().await;
}

/// A 5xx to the push itself without a Daraja error code, or `500.003.1001` after forwarding:
/// Daraja may have sent the prompt, so the outcome is unknown and nothing is pushed again.
/// (Before, both were "503, safe to retry", and a retry could prompt the customer twice.)
#[tokio::test]
async fn a_server_error_after_sending_is_504_outcome_unknown_and_never_retried() {
    let s = start(1, &[]).await;
    let faults = [
        ("order-1020", "0708374149", Fault::InternalError),
        (
            "order-1021",
            "0708374150",
            Fault::Status {
                http: 503,
                error_code: String::new(),
                error_message: String::new(),
            },
        ),
    ];
    for (key, phone, fault) in faults {
        s.stack.sim().fault(Endpoint::StkPush, fault, 1);
        let pushes = s.pushes();
        let failed = s.pay(payment(phone, 100), Some(key)).await;
        assert_eq!(failed.status, 504, "{key}: {}", failed.body);
        assert_eq!(code(&failed), "daraja_timeout", "{key}");
        assert_eq!(failed.body["error"]["outcome"], "unknown", "{key}");
        assert_eq!(
            s.intent_status(key).await,
            Some(IntentStatus::OutcomeUnknown),
            "{key}"
        );
        // The same key replays the answer; another key for the phone is held off.
        let again = s.pay(payment(phone, 100), Some(key)).await;
        assert_eq!((again.status, &again.body), (504, &failed.body), "{key}");
        let other = s.pay(payment(phone, 100), None).await;
        assert_eq!((other.status, code(&other)), (409, "phone_busy"), "{key}");
        assert_eq!(s.pushes(), pushes + 1, "{key}: one push, never a second");
    }
    s.shutdown().await;
}

#[tokio::test]
async fn a_garbage_answer_is_502_with_the_outcome_unknown() {
    let s = start(1, &[]).await;
    s.stack.sim().fault(Endpoint::StkPush, Fault::Garbage, 1);
    let garbage = s.pay(payment("0708374149", 100), Some("order-1010")).await;
    assert_eq!(garbage.status, 502, "{}", garbage.body);
    assert_eq!(code(&garbage), "daraja_bad_response");
    // A 200 that cannot be read may have been an acceptance: treated like a timeout.
    assert_eq!(garbage.body["error"]["outcome"], "unknown");
    assert_eq!(
        s.intent_status("order-1010").await,
        Some(IntentStatus::OutcomeUnknown)
    );
    let other = s.pay(payment("0708374149", 100), None).await;
    assert_eq!((other.status, code(&other)), (409, "phone_busy"));
    assert_eq!(s.pushes(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_push_accepted() {
    let s = start(1, &[]).await;
    let first = s.pay(payment("0708374149", 100), Some("order-1011")).await;
    assert_eq!(first.status, 202, "{}", first.body);
    s.stack.sim().expire_tokens();
    let second = s.pay(payment("0711000002", 100), Some("order-1012")).await;
    assert_eq!(second.status, 202, "{}", second.body);
    let counts = s.stack.sim().counts();
    // One refused push with the stale token, one retry: a single prompt reached the phone.
    assert_eq!((counts.oauth, counts.stk_push), (2, 3));
    assert_eq!(
        s.intent_status("order-1012").await,
        Some(IntentStatus::Accepted)
    );
    assert_eq!(with_prefix(&s.items().await, "PAY#").len(), 2);
    s.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// The function's deadline, and a store that fails after Daraja accepted.

/// A stack whose functions reach moto through a [`FaultyDynamo`].
async fn start_faulty(
    fail: std::ops::Range<usize>,
    extra_env: &[(&str, &str)],
) -> (Stack, Arc<FaultyDynamo>) {
    let (faults, url) = FaultyDynamo::start(moto_endpoint().await, fail).await;
    let mut env = vec![("AWS_ENDPOINT_URL_DYNAMODB", url.as_str())];
    env.extend_from_slice(extra_env);
    (start(1, &env).await, faults)
}

#[tokio::test]
async fn a_daraja_answer_held_past_the_function_timeout_is_recorded_as_unknown_before_the_end() {
    // Before deadlines, the 15 s push outlived the 10 s function: Lambda stopped it with the
    // intent unsettled and no answer recorded. Now the push is cut off in time to record it.
    let s = start(1, &[("AWS_LAMBDA_FUNCTION_TIMEOUT", "10")]).await;
    s.stack.sim().fault(Endpoint::StkPush, Fault::Hang, 1);
    let hung = s.pay(payment("0708374149", 100), Some("order-2001")).await;
    assert_eq!(hung.status, 504, "{}", hung.body);
    assert_eq!(code(&hung), "daraja_timeout");
    assert_eq!(hung.body["error"]["outcome"], "unknown");
    assert_eq!(
        s.intent_status("order-2001").await,
        Some(IntentStatus::OutcomeUnknown)
    );
    let again = s.pay(payment("0708374149", 100), Some("order-2001")).await;
    assert_eq!((again.status, &again.body), (504, &hung.body));
    assert!(again.replayed);
    assert_eq!(s.pushes(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn an_accepted_write_that_fails_for_a_while_is_retried_and_lands() {
    // Write 1 is the intent; 2 to 5, the pending payment (the SDK's three attempts and one
    // more), fail.
    let (s, faults) = start_faulty(2..6, &[]).await;
    let answer = s.pay(payment("0708374149", 100), Some("order-2002")).await;
    assert_eq!(answer.status, 202, "{}", answer.body);
    assert_eq!(faults.failed(), 4);
    let id = answer.body["checkout_request_id"].as_str().expect("id");
    let record = s.store.get(id).await.unwrap().expect("pending record");
    assert_eq!(record.status, PaymentStatus::Pending);
    assert_eq!(
        s.intent_status("order-2002").await,
        Some(IntentStatus::Accepted)
    );
    let again = s.pay(payment("0708374149", 100), Some("order-2002")).await;
    assert_eq!((again.status, &again.body), (202, &answer.body));
    assert_eq!(s.pushes(), 1);
    s.shutdown().await;
}

#[tokio::test]
async fn an_accepted_push_the_store_never_records_is_in_doubt_counted_and_never_contradicted() {
    // Every write after the intent fails: Daraja's acceptance cannot be recorded.
    let (s, faults) = start_faulty(2..usize::MAX, &[("AWS_LAMBDA_FUNCTION_TIMEOUT", "10")]).await;
    let first = s.pay(payment("0708374149", 100), Some("order-2003")).await;
    assert_eq!(first.status, 504, "{}", first.body);
    assert_eq!(code(&first), "push_in_doubt");
    assert_eq!(first.body["error"]["outcome"], "unknown");
    let id = first.body["error"]["checkout_request_id"]
        .as_str()
        .expect("the checkout id is in the answer")
        .to_owned();
    assert!(faults.failed() >= 4, "retried: {}", faults.failed());
    assert_eq!(s.pushes(), 1);
    // Counted for the alarm, and the full checkout id is in the one log line that says so.
    let logs = s.stack.logs();
    assert!(
        logs.iter().any(|l| l.contains("\"PushInDoubt\":1")),
        "no PushInDoubt metric"
    );
    assert!(
        logs.iter()
            .any(|l| l.contains("push in doubt") && l.contains(&id)),
        "no in-doubt line with the checkout id"
    );
    // The store recovers. The intent is unsettled and the phone locked: another key for the
    // phone is refused.
    faults.heal();
    assert_eq!(
        s.intent_status("order-2003").await,
        Some(IntentStatus::InProgress)
    );
    let other = s.pay(payment("0708374149", 100), Some("order-2004")).await;
    assert_eq!((other.status, code(&other)), (409, "phone_busy"));
    // The key says "in progress" until the function's deadline (and the clock margin) has
    // passed, then the same code as the first answer: never a 202, never a second push.
    let wait = Deadline::after(Duration::from_secs(30), "the key to leave in progress");
    loop {
        let answer = s.pay(payment("0708374149", 100), Some("order-2003")).await;
        if answer.status != 409 {
            break;
        }
        assert_eq!(code(&answer), "idempotency_in_progress");
        wait.not_yet(answer.body).await;
    }
    let again = s.pay(payment("0708374149", 100), Some("order-2003")).await;
    assert_eq!((again.status, code(&again)), (504, "push_in_doubt"));
    assert!(again.replayed);
    assert_eq!(s.pushes(), 1);

    // The merchant can look the request up by its key: in doubt, no payment known yet.
    let found = s.find("idempotency_key=order-2003").await;
    assert_eq!(found["request"]["status"], "in_doubt", "{found}");
    assert_eq!(found["payments"], json!([]));

    // Then Safaricom's callback arrives for a checkout id no record holds. Its phone's push is
    // in doubt, so it is that push's result: linked, not left an orphan.
    let wait = Deadline::after(
        Duration::from_secs(40),
        "the callback to link the push in doubt",
    );
    // The link writes the intent, then the payment's details, then the lock: wait for the lock.
    loop {
        let lock = s
            .ledger
            .phone_lock("254708374149", SystemClock.now())
            .await
            .unwrap();
        if lock.as_ref().and_then(|l| l.checkout_request_id.as_deref()) == Some(id.as_str()) {
            break;
        }
        wait.not_yet(format!("{lock:?}")).await;
    }
    assert_eq!(
        s.intent_status("order-2003").await,
        Some(IntentStatus::Accepted)
    );
    let record = s.store.get(&id).await.unwrap().expect("the payment");
    assert_eq!(record.status, PaymentStatus::Completed);
    assert!(record.details_recorded, "{record:?}");
    assert_eq!(record.reference.as_deref(), Some("INV-1001"));
    assert_eq!(record.amount, Some(100));
    assert!(s.store.orphans(10).await.unwrap().is_empty());
    // The key now replays the real answer: 202 with the same checkout id as the first answer.
    let linked = s.pay(payment("0708374149", 100), Some("order-2003")).await;
    assert_eq!(linked.status, 202, "{}", linked.body);
    assert!(linked.replayed);
    assert_eq!(linked.body["checkout_request_id"], id.as_str());
    assert_eq!(s.pushes(), 1);
    // And the lookups find it: by key with its request, by reference.
    let found = s.find("idempotency_key=order-2003").await;
    assert_eq!(found["request"]["status"], "accepted", "{found}");
    assert_eq!(found["request"]["checkout_request_id"], id.as_str());
    assert_eq!(found["payments"][0]["status"], "COMPLETED");
    let found = s.find("reference=INV-1001").await;
    assert_eq!(
        found["payments"][0]["checkout_request_id"],
        id.as_str(),
        "{found}"
    );
    assert!(
        s.stack
            .logs()
            .iter()
            .any(|l| l.contains("\"PushInDoubtLinked\":1")),
        "no PushInDoubtLinked metric"
    );
    s.shutdown().await;
}
