//! The simulator over real loopback HTTP: a reqwest client plays the merchant's backend and
//! a small axum server receives the callbacks.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{FixedOffset, Utc};
use daraja_sim::{
    start, Delivery, Endpoint, Fault, Outcome, Quirk, SimConfig, SimHandle, SANDBOX_PASSKEY,
};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const PHONE: &str = "254708374149";
const WAIT: Duration = Duration::from_secs(3);

// ---------- harness ----------

struct Receiver {
    url: String,
    rx: mpsc::UnboundedReceiver<Value>,
    max_in_flight: Arc<AtomicUsize>,
    /// Callbacks whose answer is ready to go back to the simulator.
    answered: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct ReceiverState {
    tx: mpsc::UnboundedSender<Value>,
    answer_after: Duration,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

async fn receive(State(st): State<ReceiverState>, Json(body): Json<Value>) -> Json<Value> {
    let now = st.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    st.max_in_flight.fetch_max(now, Ordering::SeqCst);
    // Sent before answering, so "delivered before the push answer" is observable.
    let _ = st.tx.send(body);
    // A slow merchant backend, which is what the tests using it are about (callbacks that
    // overlap, or that the simulator must wait for): not a wait for anything.
    tokio::time::sleep(st.answer_after).await;
    st.in_flight.fetch_sub(1, Ordering::SeqCst);
    st.answered.fetch_add(1, Ordering::SeqCst);
    Json(json!({"ResultCode": 0, "ResultDesc": "Accepted"}))
}

async fn receiver(answer_after: Duration) -> Receiver {
    let (tx, rx) = mpsc::unbounded_channel();
    let max_in_flight = Arc::new(AtomicUsize::new(0));
    let answered = Arc::new(AtomicUsize::new(0));
    let state = ReceiverState {
        tx,
        answer_after,
        in_flight: Arc::new(AtomicUsize::new(0)),
        max_in_flight: max_in_flight.clone(),
        answered: answered.clone(),
    };
    let app = Router::new()
        .route("/hooks/stk", post(receive))
        .with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver {
        url: format!("http://{addr}/hooks/stk"),
        rx,
        max_in_flight,
        answered,
    }
}

impl Receiver {
    async fn next(&mut self) -> Value {
        tokio::time::timeout(WAIT, self.rx.recv())
            .await
            .expect("a callback within the wait")
            .expect("receiver open")
    }

    async fn nothing_within(&mut self, d: Duration) {
        if let Ok(Some(body)) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("unexpected callback {body}");
        }
    }
}

struct Env {
    sim: SimHandle,
    http: reqwest::Client,
    cb: Receiver,
}

fn fast_config() -> SimConfig {
    SimConfig {
        callback_delay: Duration::from_millis(50),
        ..SimConfig::default()
    }
}

async fn env_with(config: SimConfig) -> Env {
    let sim = start("127.0.0.1:0".parse().unwrap(), config).await.unwrap();
    Env {
        sim,
        http: reqwest::Client::new(),
        cb: receiver(Duration::ZERO).await,
    }
}

async fn env() -> Env {
    env_with(fast_config()).await
}

fn eat_timestamp(offset_secs: i64) -> String {
    let eat = FixedOffset::east_opt(3 * 3600).unwrap();
    (Utc::now() + chrono::Duration::seconds(offset_secs))
        .with_timezone(&eat)
        .format("%Y%m%d%H%M%S")
        .to_string()
}

fn password(shortcode: &str, timestamp: &str) -> String {
    BASE64.encode(format!("{shortcode}{SANDBOX_PASSKEY}{timestamp}"))
}

fn push_body(phone: &str, amount: u64, callback: &str) -> Value {
    let ts = eat_timestamp(0);
    json!({
        "BusinessShortCode": "174379",
        "Password": password("174379", &ts),
        "Timestamp": ts,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": phone,
        "PartyB": "174379",
        "PhoneNumber": phone,
        "CallBackURL": callback,
        "AccountReference": "INV-001",
        "TransactionDesc": "Order 1",
    })
}

fn query_body(checkout: &str) -> Value {
    let ts = eat_timestamp(0);
    json!({
        "BusinessShortCode": "174379",
        "Password": password("174379", &ts),
        "Timestamp": ts,
        "CheckoutRequestID": checkout,
    })
}

impl Env {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.base_url())
    }

    async fn token(&self) -> String {
        let res = self
            .http
            .get(self.url("/oauth/v1/generate?grant_type=client_credentials"))
            .basic_auth("key", Some("secret"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body: Value = res.json().await.unwrap();
        body["access_token"].as_str().unwrap().to_owned()
    }

    async fn post(&self, path: &str, token: &str, body: &Value) -> (StatusCode, Value) {
        let res = self
            .http
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn push(&self, token: &str, body: &Value) -> (StatusCode, Value) {
        self.post("/mpesa/stkpush/v1/processrequest", token, body)
            .await
    }

    async fn query(&self, token: &str, checkout: &str) -> (StatusCode, Value) {
        self.post("/mpesa/stkpushquery/v1/query", token, &query_body(checkout))
            .await
    }

    /// Queries until the prompt has closed (the query answers with a `ResultCode`), and
    /// returns that answer.
    async fn closed(&self, token: &str, checkout: &str) -> Value {
        eventually_async(
            &format!("the prompt of {checkout} to close"),
            || async move {
                let (status, body) = self.query(token, checkout).await;
                (status == StatusCode::OK && body.get("ResultCode").is_some()).then_some(body)
            },
        )
        .await
    }

    /// Pushes `amount` to `phone` and returns the CheckoutRequestID; the push must be accepted.
    async fn push_ok(&self, token: &str, phone: &str, amount: u64) -> String {
        let (status, body) = self
            .push(token, &push_body(phone, amount, &self.cb.url))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["CheckoutRequestID"].as_str().unwrap().to_owned()
    }
}

/// The simulator records a callback once its answer arrives, just after the receiver saw it.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Checks `check` until it gives `Some`, and returns that; panics once `WAIT` has passed.
async fn eventually_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(found) = check().await {
            return found;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A change made to a valid push body.
type Mutation = Box<dyn Fn(&mut Value)>;

fn stk(callback: &Value) -> &Value {
    &callback["Body"]["stkCallback"]
}

fn item<'a>(callback: &'a Value, name: &str) -> Option<&'a Value> {
    stk(callback)["CallbackMetadata"]["Item"]
        .as_array()?
        .iter()
        .find(|i| i["Name"] == name)
}

fn assert_daraja_error(got: &(StatusCode, Value), status: u16, code: &str, message: &str) {
    let (s, body) = got;
    assert_eq!(s.as_u16(), status, "{body}");
    assert_eq!(body["errorCode"], code, "{body}");
    assert_eq!(body["errorMessage"], message, "{body}");
    assert!(
        body["requestId"].as_str().is_some_and(|r| !r.is_empty()),
        "{body}"
    );
}

// ---------- OAuth ----------

#[tokio::test]
async fn oauth_issues_token_with_string_expiry() {
    let env = env().await;
    let res = env
        .http
        .get(env.url("/oauth/v1/generate?grant_type=client_credentials"))
        .basic_auth("key", Some("secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["expires_in"], json!("3599"));
    assert!(body["access_token"].as_str().is_some_and(|t| t.len() >= 20));
}

#[tokio::test]
async fn oauth_rejects_bad_auth_and_grant_type() {
    let env = env_with(SimConfig {
        consumer_key: Some("key".into()),
        consumer_secret: Some("secret".into()),
        ..fast_config()
    })
    .await;
    let get = |query: &str, auth: Option<String>| {
        let mut req = env.http.get(env.url(&format!("/oauth/v1/generate{query}")));
        if let Some(auth) = auth {
            req = req.header("Authorization", auth);
        }
        async move {
            let res = req.send().await.unwrap();
            (res.status(), res.json::<Value>().await.unwrap())
        }
    };
    let basic = |creds: &str| Some(format!("Basic {}", BASE64.encode(creds)));
    let good = basic("key:secret");
    let grant = "?grant_type=client_credentials";
    let invalid_auth = ("400.008.01", "Invalid Authentication passed");
    let invalid_grant = ("400.008.02", "Invalid grant type passed");
    for (query, auth, expected) in [
        (grant, None, invalid_auth),
        (grant, Some("Basic !!notbase64".to_owned()), invalid_auth),
        (grant, Some("Bearer abc".to_owned()), invalid_auth),
        (grant, basic("key:nope"), invalid_auth),
        (grant, basic("key"), invalid_auth),
        (
            "?grant_type=client_credentials%20",
            good.clone(),
            invalid_grant,
        ),
        ("?grant_type=password", good.clone(), invalid_grant),
        ("", good.clone(), invalid_grant),
    ] {
        let got = get(query, auth).await;
        assert_daraja_error(&got, 400, expected.0, expected.1);
    }
    let (status, _) = get(grant, good).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn expired_token_is_refused_with_404_001_03() {
    let env = env_with(SimConfig {
        token_ttl: Duration::from_millis(150),
        ..fast_config()
    })
    .await;
    let token = env.token().await;
    // Waits out the token's lifetime, the thing under test: a sleep lasts at least as long as
    // asked, and the simulator tells expiry by the same monotonic clock.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let got = env.push(&token, &push_body(PHONE, 1, &env.cb.url)).await;
    assert_daraja_error(&got, 404, "404.001.03", "Invalid Access Token");
    let fresh = env.token().await;
    env.push_ok(&fresh, PHONE, 1).await;
}

#[tokio::test]
async fn expire_tokens_invalidates_every_issued_token() {
    let env = env().await;
    let token = env.token().await;
    env.sim.expire_tokens();
    let got = env.push(&token, &push_body(PHONE, 1, &env.cb.url)).await;
    assert_daraja_error(&got, 404, "404.001.03", "Invalid Access Token");
    let got = env.push("", &push_body(PHONE, 1, &env.cb.url)).await;
    assert_daraja_error(&got, 404, "404.001.03", "Invalid Access Token");
}

#[tokio::test]
async fn new_token_invalidates_previous_only_when_configured() {
    let env = env_with(SimConfig {
        invalidate_previous_tokens: true,
        ..fast_config()
    })
    .await;
    let first = env.token().await;
    let second = env.token().await;
    let got = env.query(&first, "ws_CO_unknown").await;
    assert_daraja_error(&got, 404, "404.001.03", "Invalid Access Token");
    let got = env.query(&second, "ws_CO_unknown").await;
    assert_eq!(got.1["errorCode"], "400.002.02");

    let lenient = env_with(fast_config()).await;
    let first = lenient.token().await;
    let _second = lenient.token().await;
    let got = lenient.query(&first, "ws_CO_unknown").await;
    assert_eq!(
        got.1["errorCode"], "400.002.02",
        "old token still valid by default"
    );
}

// ---------- STK push ----------

#[tokio::test]
async fn push_is_answered_in_daraja_shape_with_fresh_ids() {
    let env = env().await;
    let token = env.token().await;
    let (status, first) = env.push(&token, &push_body(PHONE, 10, &env.cb.url)).await;
    assert_eq!(status, StatusCode::OK);
    let mut keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "CheckoutRequestID",
            "CustomerMessage",
            "MerchantRequestID",
            "ResponseCode",
            "ResponseDescription"
        ]
    );
    assert_eq!(first["ResponseCode"], json!("0"));
    assert_eq!(
        first["ResponseDescription"],
        "Success. Request accepted for processing"
    );
    assert_eq!(
        first["CustomerMessage"],
        "Success. Request accepted for processing"
    );
    assert!(first["CheckoutRequestID"]
        .as_str()
        .unwrap()
        .starts_with("ws_CO_"));
    let (_, second) = env
        .push(&token, &push_body("254111222333", 10, &env.cb.url))
        .await;
    assert_ne!(first["CheckoutRequestID"], second["CheckoutRequestID"]);
    assert_ne!(first["MerchantRequestID"], second["MerchantRequestID"]);
}

/// One rule broken at a time, each answered with Daraja's body.
#[tokio::test]
async fn push_validation_rejects_each_rule_like_daraja() {
    let env = env().await;
    let token = env.token().await;
    let utc = Utc::now().format("%Y%m%d%H%M%S").to_string();
    let invalid = |field: &str| (400, "400.002.02", format!("Bad Request - Invalid {field}"));
    let cases: Vec<(&str, Mutation, (u16, &str, String))> = vec![
        (
            "short shortcode",
            Box::new(|b| b["BusinessShortCode"] = json!("1743")),
            invalid("BusinessShortCode"),
        ),
        (
            "long shortcode",
            Box::new(|b| b["BusinessShortCode"] = json!("17437900")),
            invalid("BusinessShortCode"),
        ),
        (
            "unknown shortcode",
            Box::new(|b| {
                let ts = b["Timestamp"].as_str().unwrap().to_owned();
                b["BusinessShortCode"] = json!("600000");
                b["Password"] = json!(password("600000", &ts));
            }),
            (500, "500.001.1001", "Merchant does not exist".into()),
        ),
        (
            "wrong password",
            Box::new(|b| b["Password"] = json!(BASE64.encode("nope"))),
            (500, "500.001.1001", "Wrong credentials".into()),
        ),
        (
            "UTC timestamp",
            Box::new(move |b| {
                b["Timestamp"] = json!(utc);
                b["Password"] = json!(password("174379", &utc));
            }),
            invalid("Timestamp"),
        ),
        (
            "stale timestamp",
            Box::new(|b| {
                let ts = eat_timestamp(-600);
                b["Password"] = json!(password("174379", &ts));
                b["Timestamp"] = json!(ts);
            }),
            invalid("Timestamp"),
        ),
        (
            "malformed timestamp",
            Box::new(|b| b["Timestamp"] = json!("2024-01-01 10:00")),
            invalid("Timestamp"),
        ),
        (
            "unknown transaction type",
            Box::new(|b| b["TransactionType"] = json!("CustomerPayBill")),
            invalid("TransactionType"),
        ),
        (
            "zero amount",
            Box::new(|b| b["Amount"] = json!(0)),
            invalid("Amount"),
        ),
        (
            "amount above 250000",
            Box::new(|b| b["Amount"] = json!(250_001)),
            invalid("Amount"),
        ),
        (
            "fractional amount",
            Box::new(|b| b["Amount"] = json!(10.5)),
            invalid("Amount"),
        ),
        (
            "non-numeric amount",
            Box::new(|b| b["Amount"] = json!("ten")),
            invalid("Amount"),
        ),
        (
            "missing amount",
            Box::new(|b| {
                b.as_object_mut().unwrap().remove("Amount");
            }),
            invalid("Amount"),
        ),
        (
            "local PartyA",
            Box::new(|b| b["PartyA"] = json!("0708374149")),
            invalid("PartyA"),
        ),
        (
            "PartyB not a shortcode",
            Box::new(|b| b["PartyB"] = json!("17")),
            invalid("PartyB"),
        ),
        (
            "landline PhoneNumber",
            Box::new(|b| b["PhoneNumber"] = json!("254208374149")),
            invalid("PhoneNumber"),
        ),
        (
            "short PhoneNumber",
            Box::new(|b| b["PhoneNumber"] = json!("25470837414")),
            invalid("PhoneNumber"),
        ),
        (
            "plus PhoneNumber",
            Box::new(|b| b["PhoneNumber"] = json!("+254708374149")),
            invalid("PhoneNumber"),
        ),
        (
            "ftp callback",
            Box::new(|b| b["CallBackURL"] = json!("ftp://example.com/cb")),
            invalid("CallBackURL"),
        ),
        (
            "callback with mpesa",
            Box::new(|b| b["CallBackURL"] = json!("https://example.com/mpesa/cb")),
            invalid("CallBackURL"),
        ),
        (
            "callback with M-Pesa",
            Box::new(|b| b["CallBackURL"] = json!("https://example.com/M-PESA")),
            invalid("CallBackURL"),
        ),
        (
            "callback with query",
            Box::new(|b| b["CallBackURL"] = json!("https://example.com/cb?query=1")),
            invalid("CallBackURL"),
        ),
        (
            "callback with exec",
            Box::new(|b| b["CallBackURL"] = json!("https://example.com/exec")),
            invalid("CallBackURL"),
        ),
        (
            "callback on ngrok",
            Box::new(|b| b["CallBackURL"] = json!("https://ab12.ngrok-free.app/cb")),
            invalid("CallBackURL"),
        ),
        (
            "callback without host",
            Box::new(|b| b["CallBackURL"] = json!("https:///cb")),
            invalid("CallBackURL"),
        ),
        (
            "long AccountReference",
            Box::new(|b| b["AccountReference"] = json!("ABCDEFGHIJKLM")),
            invalid("AccountReference"),
        ),
        (
            "empty AccountReference",
            Box::new(|b| b["AccountReference"] = json!("")),
            invalid("AccountReference"),
        ),
        (
            "long TransactionDesc",
            Box::new(|b| b["TransactionDesc"] = json!("ABCDEFGHIJKLMN")),
            invalid("TransactionDesc"),
        ),
    ];
    for (name, mutate, (status, code, message)) in cases {
        let mut body = push_body(PHONE, 10, &env.cb.url);
        mutate(&mut body);
        let got = env.push(&token, &body).await;
        assert_eq!(got.0.as_u16(), status, "{name}: {}", got.1);
        assert_eq!(got.1["errorCode"], code, "{name}: {}", got.1);
        assert_eq!(got.1["errorMessage"], message.as_str(), "{name}");
    }
    assert_eq!(env.sim.callbacks().len(), 0);
    assert_eq!(env.sim.counts().stk_push, 28);
}

#[tokio::test]
async fn push_without_json_content_type_reads_as_invalid_shortcode() {
    let env = env().await;
    let token = env.token().await;
    let res = env
        .http
        .post(env.url("/mpesa/stkpush/v1/processrequest"))
        .bearer_auth(&token)
        .header("Content-Type", "text/plain")
        .body(push_body(PHONE, 1, &env.cb.url).to_string())
        .send()
        .await
        .unwrap();
    let got = (res.status(), res.json().await.unwrap());
    assert_daraja_error(
        &got,
        400,
        "400.002.02",
        "Bad Request - Invalid BusinessShortCode",
    );
}

#[tokio::test]
async fn push_accepts_daraja_leniencies() {
    let mut env = env().await;
    let token = env.token().await;
    let phones = [
        "254700000001",
        "254700000002",
        "254700000003",
        "254110000004",
        "254700000005",
        "254700000006",
    ];
    // The callback URLs here are not ours: nothing may be sent to them.
    env.sim
        .script(None, vec![Outcome::success().lost(); phones.len()]);
    let mutations: [Mutation; 6] = [
        Box::new(|b| b["Amount"] = json!("250000")),
        Box::new(|b| b["Amount"] = json!(1.0)),
        Box::new(|b| {
            b["PhoneNumber"] = json!(254700000003_u64);
            b["BusinessShortCode"] = json!(174379);
        }),
        Box::new(|b| {
            b.as_object_mut().unwrap().remove("TransactionDesc");
            b["AccountReference"] = json!("ABCDEFGHIJKL");
        }),
        Box::new(|b| {
            b["TransactionDesc"] = json!("ABCDEFGHIJKLM");
            b["CallBackURL"] = json!("https://merchant.example.com:8443/hooks/stk");
        }),
        // Two minutes of clock drift is inside the 5-minute window.
        Box::new(|b| {
            let ts = eat_timestamp(-120);
            b["Password"] = json!(password("174379", &ts));
            b["Timestamp"] = json!(ts);
        }),
    ];
    let mut checkouts = Vec::new();
    for (phone, mutate) in phones.iter().zip(mutations) {
        let mut body = push_body(phone, 1, &env.cb.url);
        mutate(&mut body);
        let (status, answer) = env.push(&token, &body).await;
        assert_eq!(status, StatusCode::OK, "{phone}: {answer}");
        checkouts.push(answer["CheckoutRequestID"].as_str().unwrap().to_owned());
    }
    // Every prompt has closed, which is when a callback would have gone out.
    for checkout in &checkouts {
        env.closed(&token, checkout).await;
    }
    env.cb.nothing_within(Duration::from_millis(100)).await;
    assert_eq!(env.sim.counts().callbacks_sent, 0);
}

#[tokio::test]
async fn second_push_to_an_open_prompt_is_locked() {
    let mut env = env().await;
    env.sim.script(
        Some(PHONE),
        vec![Outcome::success().delay(Duration::from_secs(30))],
    );
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 5).await;
    let got = env.push(&token, &push_body(PHONE, 5, &env.cb.url)).await;
    assert_daraja_error(
        &got,
        500,
        "500.001.1001",
        "Unable to lock subscriber, a transaction is already in process for the current subscriber",
    );
    env.push_ok(&token, "254711000111", 5).await;
    env.sim.complete_now(&checkout);
    let first = env.cb.next().await;
    let second = env.cb.next().await;
    let ids = [
        stk(&first)["CheckoutRequestID"].clone(),
        stk(&second)["CheckoutRequestID"].clone(),
    ];
    assert!(ids.contains(&json!(checkout)));
    env.push_ok(&token, PHONE, 5).await;
}

// ---------- callbacks ----------

#[tokio::test]
async fn success_callback_carries_daraja_metadata() {
    let mut env = env().await;
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 1234).await;
    let cb = env.cb.next().await;
    let s = stk(&cb);
    assert_eq!(s["CheckoutRequestID"], json!(checkout));
    assert_eq!(s["ResultCode"], json!(0));
    assert_eq!(
        s["ResultDesc"],
        "The service request is processed successfully."
    );
    assert_eq!(item(&cb, "Amount").unwrap()["Value"], json!(1234));
    let receipt = item(&cb, "MpesaReceiptNumber").unwrap()["Value"]
        .as_str()
        .unwrap();
    assert_eq!(receipt.len(), 10);
    assert!(receipt
        .chars()
        .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    assert!(item(&cb, "Balance").is_some());
    let date = item(&cb, "TransactionDate").unwrap()["Value"]
        .as_u64()
        .unwrap();
    assert_eq!(date.to_string().len(), 14);
    // Nairobi wall-clock: within a minute of now in UTC+3.
    let expected: u64 = eat_timestamp(0).parse().unwrap();
    assert!(expected.abs_diff(date) < 100, "{date} vs {expected}");
    assert_eq!(
        item(&cb, "PhoneNumber").unwrap()["Value"],
        json!(254708374149_u64)
    );
    eventually("callback recorded", || env.sim.callbacks().len() == 1).await;
    let sent = env.sim.callbacks();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].status, Some(200));
    assert_eq!(sent[0].url, env.cb.url);
}

#[tokio::test]
async fn scripted_failure_callback_has_header_fields_only() {
    let mut env = env().await;
    env.sim
        .script(Some("0708374149"), vec![Outcome::code(1032)]);
    let token = env.token().await;
    env.push_ok(&token, PHONE, 10).await;
    let cb = env.cb.next().await;
    let s = stk(&cb).as_object().unwrap();
    assert_eq!(s["ResultCode"], json!(1032));
    assert_eq!(s["ResultDesc"], "Request cancelled by user");
    let mut keys: Vec<&str> = s.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "CheckoutRequestID",
            "MerchantRequestID",
            "ResultCode",
            "ResultDesc"
        ]
    );
}

#[tokio::test]
async fn per_phone_script_wins_over_global_and_default_follows() {
    let mut env = env().await;
    env.sim.script(None, vec![Outcome::code(1)]);
    env.sim.script(Some(PHONE), vec![Outcome::code(2001)]);
    let token = env.token().await;
    env.push_ok(&token, PHONE, 10).await;
    assert_eq!(stk(&env.cb.next().await)["ResultCode"], json!(2001));
    env.push_ok(&token, PHONE, 10).await;
    assert_eq!(stk(&env.cb.next().await)["ResultCode"], json!(1));
    env.push_ok(&token, PHONE, 10).await;
    assert_eq!(stk(&env.cb.next().await)["ResultCode"], json!(0));
}

#[tokio::test]
async fn each_quirk_shapes_the_callback() {
    let mut env = env().await;
    let token = env.token().await;
    let cases = [
        Quirk::AmountAsString,
        Quirk::AmountAsFloat,
        Quirk::BalanceWithoutValue,
        Quirk::ResultCodeAsString,
        Quirk::PhoneMasked,
        Quirk::PhoneMissing,
        Quirk::NoMetadata,
    ];
    for quirk in cases {
        env.sim
            .script(Some(PHONE), vec![Outcome::success().with_quirk(quirk)]);
        env.push_ok(&token, PHONE, 150).await;
        let cb = env.cb.next().await;
        match quirk {
            Quirk::AmountAsString => {
                assert_eq!(item(&cb, "Amount").unwrap()["Value"], json!("150"))
            }
            Quirk::AmountAsFloat => {
                let v = &item(&cb, "Amount").unwrap()["Value"];
                assert!(v.is_f64() && v.as_f64() == Some(150.0), "{v}");
            }
            Quirk::BalanceWithoutValue => {
                assert_eq!(item(&cb, "Balance").unwrap(), &json!({"Name": "Balance"}));
            }
            Quirk::ResultCodeAsString => assert_eq!(stk(&cb)["ResultCode"], json!("0")),
            Quirk::PhoneMasked => {
                let v = item(&cb, "PhoneNumber").unwrap()["Value"].as_str().unwrap();
                assert!(v.contains('*') && !v.contains("374149"), "{v}");
            }
            Quirk::PhoneMissing => {
                assert!(item(&cb, "PhoneNumber").is_none());
                assert!(item(&cb, "MpesaReceiptNumber").is_some());
            }
            Quirk::NoMetadata => {
                assert_eq!(stk(&cb)["ResultCode"], json!(0));
                assert!(stk(&cb).get("CallbackMetadata").is_none());
            }
        }
    }
}

#[tokio::test]
async fn amount_paid_overrides_the_callback_amount() {
    let mut env = env().await;
    env.sim
        .script(None, vec![Outcome::success().amount_paid(json!(1))]);
    let token = env.token().await;
    env.push_ok(&token, PHONE, 500).await;
    assert_eq!(
        item(&env.cb.next().await, "Amount").unwrap()["Value"],
        json!(1)
    );
}

#[tokio::test]
async fn till_and_paybill_mixups_fail_in_the_callback() {
    let mut env = env().await;
    let token = env.token().await;
    let mut body = push_body(PHONE, 10, &env.cb.url);
    body["PartyB"] = json!("600100");
    assert_eq!(env.push(&token, &body).await.0, StatusCode::OK);
    let cb = env.cb.next().await;
    assert_eq!(stk(&cb)["ResultCode"], json!(2028));

    let mut body = push_body(PHONE, 10, &env.cb.url);
    body["TransactionType"] = json!("CustomerBuyGoodsOnline");
    assert_eq!(env.push(&token, &body).await.0, StatusCode::OK);
    let cb = env.cb.next().await;
    assert_eq!(stk(&cb)["ResultCode"], json!("SFC_IC0003"));
    assert_eq!(stk(&cb)["ResultDesc"], "The operator does not exist");

    let mut body = push_body(PHONE, 10, &env.cb.url);
    body["TransactionType"] = json!("CustomerBuyGoodsOnline");
    body["PartyB"] = json!("600100");
    assert_eq!(env.push(&token, &body).await.0, StatusCode::OK);
    assert_eq!(stk(&env.cb.next().await)["ResultCode"], json!(0));
}

#[tokio::test]
async fn duplicated_callback_is_delivered_sequentially_with_the_same_receipt() {
    let sim = start("127.0.0.1:0".parse().unwrap(), fast_config())
        .await
        .unwrap();
    let mut env = Env {
        sim,
        http: reqwest::Client::new(),
        cb: receiver(Duration::from_millis(100)).await,
    };
    env.sim
        .script(None, vec![Outcome::success().duplicated(3, false)]);
    let token = env.token().await;
    env.push_ok(&token, PHONE, 10).await;
    let bodies = [
        env.cb.next().await,
        env.cb.next().await,
        env.cb.next().await,
    ];
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    assert_eq!(env.cb.max_in_flight.load(Ordering::SeqCst), 1);
    env.cb.nothing_within(Duration::from_millis(200)).await;
    eventually("callbacks recorded", || {
        env.sim.counts().callbacks_sent == 3
    })
    .await;
}

#[tokio::test]
async fn duplicated_callback_can_arrive_concurrently() {
    let sim = start("127.0.0.1:0".parse().unwrap(), fast_config())
        .await
        .unwrap();
    let mut env = Env {
        sim,
        http: reqwest::Client::new(),
        cb: receiver(Duration::from_millis(300)).await,
    };
    env.sim
        .script(None, vec![Outcome::success().duplicated(3, true)]);
    let token = env.token().await;
    env.push_ok(&token, PHONE, 10).await;
    for _ in 0..3 {
        env.cb.next().await;
    }
    assert!(env.cb.max_in_flight.load(Ordering::SeqCst) >= 2);
}

#[tokio::test]
async fn lost_callback_is_never_sent_but_query_knows_the_outcome() {
    let mut env = env().await;
    env.sim.script(None, vec![Outcome::code(1037).lost()]);
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    let body = env.closed(&token, &checkout).await;
    assert_eq!(body["ResultCode"], json!("1037"), "{body}");
    // The prompt has closed, when the callback would have gone: none comes.
    env.cb.nothing_within(Duration::from_millis(300)).await;
    assert_eq!(env.sim.counts().callbacks_sent, 0);
    // The prompt closed when the callback would have gone.
    env.push_ok(&token, PHONE, 10).await;
}

#[tokio::test]
async fn late_callback_arrives_after_the_query_turns_final() {
    let mut env = env().await;
    env.sim.script(
        None,
        vec![Outcome::success().late(Duration::from_millis(600))],
    );
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    let body = env.closed(&token, &checkout).await;
    assert_eq!(body["ResultCode"], json!("0"), "{body}");
    assert!(env.cb.rx.try_recv().is_err(), "callback not yet sent");
    let cb = env.cb.next().await;
    assert_eq!(stk(&cb)["CheckoutRequestID"], json!(checkout));
}

#[tokio::test]
async fn before_response_callback_is_answered_before_the_push_answer() {
    let sim = start("127.0.0.1:0".parse().unwrap(), fast_config())
        .await
        .unwrap();
    let mut env = Env {
        sim,
        http: reqwest::Client::new(),
        cb: receiver(Duration::from_millis(200)).await,
    };
    env.sim
        .script(None, vec![Outcome::success().before_response()]);
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    // The receiver takes 200 ms to answer, and had answered before the push answer came.
    assert_eq!(env.cb.answered.load(Ordering::SeqCst), 1);
    let cb = env.cb.rx.try_recv().expect("callback already delivered");
    assert_eq!(stk(&cb)["CheckoutRequestID"], json!(checkout));
    assert_eq!(env.sim.callbacks()[0].status, Some(200));
}

#[tokio::test]
async fn unreachable_callback_counts_as_failed() {
    let env = env().await;
    let token = env.token().await;
    // Port 9 (discard) is closed on loopback: connection refused.
    let (status, _) = env
        .push(&token, &push_body(PHONE, 10, "http://127.0.0.1:9/hooks"))
        .await;
    assert_eq!(status, StatusCode::OK);
    eventually("callback attempted", || {
        env.sim.counts().callbacks_sent == 1
    })
    .await;
    let counts = env.sim.counts();
    assert_eq!((counts.callbacks_sent, counts.callbacks_failed), (1, 1));
    assert_eq!(env.sim.callbacks()[0].status, None);
}

// ---------- STK query ----------

#[tokio::test]
async fn query_moves_from_processing_through_4999_to_final() {
    let mut env = env().await;
    env.sim.script(
        None,
        vec![Outcome::code(1032)
            .transient_4999()
            .delay(Duration::from_millis(300))],
    );
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    let got = env.query(&token, &checkout).await;
    assert_daraja_error(
        &got,
        500,
        "500.001.1001",
        "The transaction is being processed",
    );
    env.cb.next().await;
    let (status, body) = env.query(&token, &checkout).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ResultCode"], json!("4999"));
    let (status, body) = env.query(&token, &checkout).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ResponseCode"], json!("0"));
    assert_eq!(body["ResultCode"], json!("1032"));
    assert_eq!(body["ResultDesc"], "Request cancelled by user");
    assert_eq!(body["CheckoutRequestID"], json!(checkout));
    assert!(body["MerchantRequestID"].is_string());
}

#[tokio::test]
async fn query_of_string_result_code_keeps_it() {
    let mut env = env().await;
    env.sim
        .script(None, vec![Outcome::result(json!("SFC_IC0003"))]);
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    env.cb.next().await;
    assert_eq!(
        env.query(&token, &checkout).await.1["ResultCode"],
        json!("SFC_IC0003")
    );
}

#[tokio::test]
async fn never_final_query_keeps_processing_after_the_callback() {
    let mut env = env().await;
    env.sim.script(None, vec![Outcome::success().never_final()]);
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    env.cb.next().await;
    for _ in 0..2 {
        let got = env.query(&token, &checkout).await;
        assert_daraja_error(
            &got,
            500,
            "500.001.1001",
            "The transaction is being processed",
        );
    }
}

#[tokio::test]
async fn query_rejects_unknown_id_and_bad_credentials() {
    let env = env().await;
    let token = env.token().await;
    let got = env.query(&token, "ws_CO_000000000000000").await;
    assert_daraja_error(
        &got,
        400,
        "400.002.02",
        "Bad Request - Invalid CheckoutRequestID",
    );
    let mut body = query_body("ws_CO_1");
    body["Password"] = json!("wrong");
    let got = env
        .post("/mpesa/stkpushquery/v1/query", &token, &body)
        .await;
    assert_daraja_error(&got, 500, "500.001.1001", "Wrong credentials");
    let got = env.query("stale", "ws_CO_1").await;
    assert_daraja_error(&got, 404, "404.001.03", "Invalid Access Token");
}

#[tokio::test]
async fn query_rate_limit_answers_429() {
    let env = env_with(SimConfig {
        query_rate_limit_per_minute: Some(2),
        ..fast_config()
    })
    .await;
    let token = env.token().await;
    for _ in 0..2 {
        assert_eq!(
            env.query(&token, "ws_CO_x").await.0,
            StatusCode::BAD_REQUEST
        );
    }
    let (status, body) = env.query(&token, "ws_CO_x").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        body["fault"]["detail"]["errorcode"],
        "policies.ratelimit.QuotaViolation"
    );
    assert_eq!(env.sim.counts().stk_query, 3);
}

// ---------- faults, latency, control ----------

#[tokio::test]
async fn faults_replace_answers_for_the_given_number_of_requests() {
    let env = env().await;
    let token = env.token().await;
    let cases = [
        (
            Fault::Status {
                http: 503,
                error_code: "503.001.01".into(),
                error_message: "Service Unavailable".into(),
            },
            503,
            Some("503.001.01"),
        ),
        (Fault::SpikeArrest, 500, Some("500.003.02")),
        (Fault::InternalError, 500, Some("500.003.1001")),
        (Fault::RateLimited, 429, None),
        (Fault::Garbage, 200, None),
    ];
    for (fault, status, code) in cases {
        env.sim.fault(Endpoint::StkPush, fault.clone(), 2);
        for _ in 0..2 {
            let res = env
                .http
                .post(env.url("/mpesa/stkpush/v1/processrequest"))
                .bearer_auth(&token)
                .json(&push_body(PHONE, 1, &env.cb.url))
                .send()
                .await
                .unwrap();
            assert_eq!(res.status().as_u16(), status, "{fault:?}");
            let text = res.text().await.unwrap();
            let parsed = serde_json::from_str::<Value>(&text);
            match (&fault, code) {
                (Fault::Garbage, _) => assert!(parsed.is_err(), "{text}"),
                (_, Some(code)) => assert_eq!(parsed.unwrap()["errorCode"], code),
                (_, None) => assert!(parsed.is_ok()),
            }
        }
    }
    // Faults used up: the next push goes through.
    env.push_ok(&token, PHONE, 1).await;
    assert_eq!(env.sim.counts().stk_push, 11);
}

#[tokio::test]
async fn hang_fault_never_answers_and_oauth_faults_too() {
    let env = env().await;
    env.sim.fault(Endpoint::OAuth, Fault::Hang, 1);
    let res = env
        .http
        .get(env.url("/oauth/v1/generate?grant_type=client_credentials"))
        .basic_auth("k", Some("s"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(res.unwrap_err().is_timeout());
    env.sim.fault(Endpoint::OAuth, Fault::SpikeArrest, 1);
    let res = env
        .http
        .get(env.url("/oauth/v1/generate?grant_type=client_credentials"))
        .basic_auth("k", Some("s"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::INTERNAL_SERVER_ERROR);
    env.token().await;
    let requests = env.sim.requests();
    assert_eq!(requests.len(), 3);
    assert_eq!(requests[0].status, None, "hung request never answered");
    assert_eq!(requests[1].status, Some(500));
    assert_eq!(requests[2].status, Some(200));
}

#[tokio::test]
async fn latency_delays_every_daraja_answer() {
    let env = env().await;
    env.sim.set_latency(Duration::from_millis(250));
    let started = Instant::now();
    env.token().await;
    // The latency is what is under test; the answer cannot come sooner than it.
    assert!(started.elapsed() >= Duration::from_millis(250));
    // Zero removes it: after an hour (which no answer within the wait could have waited out)
    // it is set to zero, and the answer comes within the wait.
    env.sim.set_latency(Duration::from_secs(3600));
    env.sim.set_latency(Duration::ZERO);
    tokio::time::timeout(WAIT, env.token())
        .await
        .expect("answered without the latency once it is zero");
}

#[tokio::test]
async fn counts_and_request_log_follow_traffic() {
    let mut env = env().await;
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    env.cb.next().await;
    eventually("callback recorded", || env.sim.counts().callbacks_sent == 1).await;
    env.query(&token, &checkout).await;
    let bad = env.push("nope", &push_body(PHONE, 10, &env.cb.url)).await;
    assert_eq!(bad.0, StatusCode::NOT_FOUND);
    let counts = env.sim.counts();
    assert_eq!(
        (
            counts.oauth,
            counts.stk_push,
            counts.stk_query,
            counts.callbacks_sent,
            counts.callbacks_failed
        ),
        (1, 2, 1, 1, 0)
    );
    let log = env.sim.requests();
    let summary: Vec<(Endpoint, Option<u16>)> =
        log.iter().map(|r| (r.endpoint, r.status)).collect();
    assert_eq!(
        summary,
        [
            (Endpoint::OAuth, Some(200)),
            (Endpoint::StkPush, Some(200)),
            (Endpoint::StkQuery, Some(200)),
            (Endpoint::StkPush, Some(404)),
        ]
    );
    assert_eq!(log[1].body["Amount"], json!(10));
    assert_eq!(log[1].body["Password"], "<redacted>");
    assert_eq!(log[1].response["CheckoutRequestID"], json!(checkout));
}

#[tokio::test]
async fn reset_clears_scripts_prompts_counts_and_pending_callbacks() {
    let mut env = env().await;
    let token = env.token().await;
    env.sim.script(
        None,
        vec![Outcome::code(1).delay(Duration::from_millis(300))],
    );
    env.sim.script(None, vec![Outcome::code(1)]);
    env.sim.fault(Endpoint::StkQuery, Fault::InternalError, 5);
    let checkout = env.push_ok(&token, PHONE, 10).await;
    env.sim.reset();
    assert_eq!(env.sim.counts(), daraja_sim::Counts::default());
    assert!(env.sim.requests().is_empty());
    env.cb.nothing_within(Duration::from_millis(500)).await;
    // Prompt gone, scripts gone, fault gone, token still valid.
    env.push_ok(&token, PHONE, 10).await;
    assert_eq!(stk(&env.cb.next().await)["ResultCode"], json!(0));
    let got = env.query(&token, &checkout).await;
    assert_daraja_error(
        &got,
        400,
        "400.002.02",
        "Bad Request - Invalid CheckoutRequestID",
    );
}

#[tokio::test]
async fn control_api_over_http_mirrors_the_handle() {
    let mut env = env().await;
    let http = env.http.clone();
    let base = env.sim.base_url();
    let sim = |path: &str| format!("{base}{path}");
    assert_eq!(
        http.get(sim("/sim/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
    let res = http
        .post(sim("/sim/script"))
        .json(&json!({"phone": "0708374149", "outcomes": [
            {"result_code": 2001, "quirks": ["no_metadata"], "delivery": {"duplicate": {"times": 2, "concurrent": false}}}
        ]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let res = http
        .post(sim("/sim/fault"))
        .json(&json!({"endpoint": "oauth", "fault": {"status": {"http": 400, "error_code": "400.008.01", "error_message": "Invalid Authentication passed"}}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    let faulted = http
        .get(sim("/oauth/v1/generate?grant_type=client_credentials"))
        .basic_auth("k", Some("s"))
        .send()
        .await
        .unwrap();
    assert_eq!(faulted.status(), StatusCode::BAD_REQUEST);
    let token = env.token().await;
    env.push_ok(&token, PHONE, 10).await;
    for _ in 0..2 {
        assert_eq!(stk(&env.cb.next().await)["ResultCode"], json!(2001));
    }
    eventually("callbacks recorded", || {
        env.sim.counts().callbacks_sent == 2
    })
    .await;
    let counts: Value = http
        .get(sim("/sim/counts"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts["oauth"], 2);
    assert_eq!(counts["callbacks_sent"], 2);
    let callbacks: Value = http
        .get(sim("/sim/callbacks"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(callbacks.as_array().unwrap().len(), 2);
    let requests: Value = http
        .get(sim("/sim/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["endpoint"], "oauth");
    assert_eq!(requests[0]["status"], 400);

    http.post(sim("/sim/latency"))
        .json(&json!({"latency_ms": 200}))
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    env.token().await;
    // The latency set over HTTP is what is under test; the answer cannot come sooner than it.
    assert!(started.elapsed() >= Duration::from_millis(200));

    http.post(sim("/sim/expire-tokens")).send().await.unwrap();
    let got = env.query(&token, "ws_CO_x").await;
    assert_eq!(got.1["errorCode"], "404.001.03");

    http.post(sim("/sim/reset")).send().await.unwrap();
    assert_eq!(env.sim.counts(), daraja_sim::Counts::default());
}

#[tokio::test]
async fn complete_now_over_http_skips_the_delay() {
    let mut env = env().await;
    env.sim.script(
        None,
        vec![Outcome::success().delay(Duration::from_secs(60))],
    );
    let token = env.token().await;
    let checkout = env.push_ok(&token, PHONE, 10).await;
    let res = env
        .http
        .post(env.url(&format!("/sim/complete/{checkout}")))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        stk(&env.cb.next().await)["CheckoutRequestID"],
        json!(checkout)
    );
}

#[tokio::test]
async fn unknown_path_and_wrong_method_answer_like_daraja() {
    let env = env().await;
    let res = env
        .http
        .get(env.url("/mpesa/nothing"))
        .send()
        .await
        .unwrap();
    let got = (res.status(), res.json().await.unwrap());
    assert_daraja_error(&got, 404, "404.001.01", "Resource not found");
    let res = env
        .http
        .get(env.url("/mpesa/stkpush/v1/processrequest"))
        .send()
        .await
        .unwrap();
    let got = (res.status(), res.json().await.unwrap());
    assert_daraja_error(&got, 405, "405.001", "Method not allowed");
}

#[tokio::test]
async fn shutdown_releases_hung_requests() {
    let env = env().await;
    env.sim.fault(Endpoint::StkQuery, Fault::Hang, 1);
    let http = env.http.clone();
    let url = env.url("/mpesa/stkpushquery/v1/query");
    let hung = tokio::spawn(async move { http.post(url).json(&json!({})).send().await });
    eventually("the query to reach the simulator", || {
        env.sim
            .requests()
            .iter()
            .any(|r| r.endpoint == Endpoint::StkQuery)
    })
    .await;
    tokio::time::timeout(WAIT, env.sim.clone().shutdown())
        .await
        .expect("shutdown does not wait for the hung request forever");
    let _ = tokio::time::timeout(WAIT, hung)
        .await
        .expect("hung request released");
}

#[test]
fn outcome_json_defaults_to_success_and_round_trips() {
    let outcome: Outcome = serde_json::from_str("{}").unwrap();
    assert_eq!(outcome, Outcome::success());
    let late = Outcome::code(1032)
        .late(Duration::from_millis(1500))
        .with_quirk(Quirk::PhoneMasked);
    let json = serde_json::to_value(&late).unwrap();
    assert_eq!(json["delivery"], json!({"late": 1500}));
    assert_eq!(json["quirks"], json!(["phone_masked"]));
    assert_eq!(serde_json::from_value::<Outcome>(json).unwrap(), late);
    assert_eq!(serde_json::to_value(Delivery::Lost).unwrap(), json!("lost"));
    assert_eq!(
        serde_json::to_value(Fault::SpikeArrest).unwrap(),
        json!("spike_arrest")
    );
    assert_eq!(
        serde_json::to_value(Endpoint::StkQuery).unwrap(),
        json!("stk_query")
    );
}
