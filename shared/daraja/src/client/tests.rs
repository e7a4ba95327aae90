//! The client against a small scripted Daraja stand-in on loopback. The full simulator is
//! exercised by the `e2e` package; these tests cover what needs exact control: token timing,
//! concurrency, retries and logs.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use chrono::{TimeZone, Utc};
use serde_json::{json, Value};

use super::*;
use crate::observe::{CallObserver, Endpoint};
use crate::result_code::ResultCode;
use crate::stk::Charge;
use crate::time::FixedClock;
use crate::token::{Lease, NoSharedTokens};
use crate::values::{AccountReference, Amount, PhoneNumber, TillNumber, TransactionDesc};

const KEY: &str = "consumer-key-123";
const SECRET: &str = "consumer-secret-456";
const PASSKEY: &str = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919";
const PHONE: &str = "254708374149";

#[derive(Default)]
struct Stub {
    token_calls: AtomicU64,
    push_calls: AtomicU64,
    query_calls: AtomicU64,
    valid: Mutex<HashSet<String>>,
    /// Answers for the next API calls (push and query), in order; then a success.
    script: Mutex<VecDeque<(u16, Value)>>,
    token_answer: Mutex<Option<(u16, Value)>>,
    /// When set, every API call answers 404.001.03 whatever the token.
    reject_all_tokens: Mutex<bool>,
    delay: Mutex<Duration>,
    pushes: Mutex<Vec<(HeaderMap, Value)>>,
}

type Shared = Arc<Stub>;

fn reply(status: u16, body: Value) -> (StatusCode, Json<Value>) {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
}

fn invalid_token() -> (StatusCode, Json<Value>) {
    reply(
        404,
        json!({"requestId": "r-1", "errorCode": "404.001.03", "errorMessage": "Invalid Access Token"}),
    )
}

async fn token(State(stub): State<Shared>, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let n = stub.token_calls.fetch_add(1, Ordering::SeqCst) + 1;
    // Long enough that concurrent callers pile up behind the first fetch.
    tokio::time::sleep(Duration::from_millis(50)).await;
    if let Some((status, body)) = stub.token_answer.lock().unwrap().clone() {
        return reply(status, body);
    }
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}"))
    );
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(expected.as_str()) {
        return reply(
            400,
            json!({"errorCode": "400.008.01", "errorMessage": "Invalid Authentication passed"}),
        );
    }
    let value = format!("token-{n}");
    stub.valid.lock().unwrap().insert(value.clone());
    reply(200, json!({"access_token": value, "expires_in": "3599"}))
}

async fn api(stub: &Stub, headers: &HeaderMap) -> Option<(StatusCode, Json<Value>)> {
    let delay = *stub.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default()
        .to_owned();
    if *stub.reject_all_tokens.lock().unwrap() || !stub.valid.lock().unwrap().contains(&bearer) {
        return Some(invalid_token());
    }
    let next = stub.script.lock().unwrap().pop_front();
    next.map(|(status, body)| reply(status, body))
}

async fn push(
    State(stub): State<Shared>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    stub.push_calls.fetch_add(1, Ordering::SeqCst);
    stub.pushes.lock().unwrap().push((headers.clone(), body));
    if let Some(answer) = api(&stub, &headers).await {
        return answer;
    }
    reply(
        200,
        json!({"MerchantRequestID": "29115-34620561-1", "CheckoutRequestID": "ws_CO_191220191020363925",
               "ResponseCode": "0", "ResponseDescription": "Success. Request accepted for processing",
               "CustomerMessage": "Success. Request accepted for processing"}),
    )
}

async fn query(
    State(stub): State<Shared>,
    headers: HeaderMap,
    Json(_body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    stub.query_calls.fetch_add(1, Ordering::SeqCst);
    if let Some(answer) = api(&stub, &headers).await {
        return answer;
    }
    reply(
        200,
        json!({"ResponseCode": "0", "MerchantRequestID": "29115-34620561-1",
               "CheckoutRequestID": "ws_CO_191220191020363925", "ResultCode": "0",
               "ResultDesc": "The service request is processed successfully."}),
    )
}

async fn serve() -> (Shared, String) {
    let stub: Shared = Arc::default();
    let app = Router::new()
        .route("/oauth/v1/generate", get(token))
        .route("/mpesa/stkpush/v1/processrequest", post(push))
        .route("/mpesa/stkpushquery/v1/query", post(query))
        .with_state(stub.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (stub, format!("http://{addr}"))
}

fn config(base_url: &str) -> DarajaConfig {
    DarajaConfig {
        base_url: base_url.to_owned(),
        consumer_key: Secret::from(KEY),
        consumer_secret: Secret::from(SECRET),
        passkey: Secret::from(PASSKEY),
        shortcode: ShortCode::parse("174379").unwrap(),
        kind: TransactionKind::PayBill,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

fn start_time() -> chrono::DateTime<Utc> {
    Utc.with_ymd_and_hms(2019, 12, 19, 7, 21, 15).unwrap()
}

/// Counts the token requests one client sends, through the observer every client reports to.
#[derive(Default)]
struct TokenFetches(AtomicU64);

impl CallObserver for TokenFetches {
    fn call_finished(&self, endpoint: Endpoint, _latency: Duration) {
        if endpoint == Endpoint::Oauth {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// A client and the count of its own token requests.
struct Counted {
    client: DarajaClient,
    fetches: Arc<TokenFetches>,
}

impl Counted {
    fn token_fetches(&self) -> u64 {
        self.fetches.0.load(Ordering::SeqCst)
    }
}

impl std::ops::Deref for Counted {
    type Target = DarajaClient;
    fn deref(&self) -> &DarajaClient {
        &self.client
    }
}

/// Loopback stubs speak plain HTTP: no trust roots needed.
const NO_ROOTS: [&[u8]; 0] = [];

fn client_with(
    config: DarajaConfig,
    clock: Arc<FixedClock>,
    tokens: Arc<dyn TokenStore>,
) -> Counted {
    let fetches = Arc::new(TokenFetches::default());
    let client = DarajaClient::new(config, clock, tokens, NO_ROOTS)
        .unwrap()
        .observed_by(fetches.clone());
    Counted { client, fetches }
}

fn client(base_url: &str) -> (Counted, Arc<FixedClock>) {
    let clock = Arc::new(FixedClock::new(start_time()));
    (
        client_with(config(base_url), clock.clone(), Arc::new(NoSharedTokens)),
        clock,
    )
}

fn push_request(phone: &str) -> PushRequest {
    PushRequest {
        charge: Charge {
            phone: PhoneNumber::parse(phone).unwrap(),
            amount: Amount::new(1).unwrap(),
            reference: AccountReference::parse("INV-001").unwrap(),
            description: TransactionDesc::default(),
        },
        callback_url: "https://example.com/callback/s3cr3t".to_owned(),
        deadline: crate::Deadline::after(std::time::Duration::from_secs(30)),
    }
}

#[tokio::test]
async fn push_sends_the_documented_body_with_one_timestamp() {
    let (stub, base) = serve().await;
    let (client, _) = client(&format!("{base}/"));
    let ack = client.stk_push(&push_request("0708374149")).await.unwrap();
    assert_eq!(ack.checkout_request_id, "ws_CO_191220191020363925");
    assert_eq!(ack.response_code, "0");

    let pushes = stub.pushes.lock().unwrap();
    let (headers, body) = &pushes[0];
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["BusinessShortCode"], "174379");
    assert_eq!(body["Timestamp"], "20191219102115");
    let expected_password =
        base64::engine::general_purpose::STANDARD.encode(format!("174379{PASSKEY}20191219102115"));
    assert_eq!(body["Password"], expected_password.as_str());
    assert_eq!(body["TransactionType"], "CustomerPayBillOnline");
    assert_eq!(body["Amount"], 1);
    assert_eq!(body["PartyA"], PHONE);
    assert_eq!(body["PartyB"], "174379");
    assert_eq!(body["PhoneNumber"], PHONE);
    assert_eq!(body["CallBackURL"], "https://example.com/callback/s3cr3t");
    assert_eq!(body["AccountReference"], "INV-001");
    assert_eq!(body["TransactionDesc"], "Payment");
}

#[test]
fn till_push_names_the_till_as_party_b_and_the_store_as_shortcode() {
    let mut config = config("http://127.0.0.1:9");
    config.kind = TransactionKind::Till(TillNumber::parse("5432100").unwrap());
    let clock = Arc::new(FixedClock::new(start_time()));
    let client = client_with(config, clock, Arc::new(NoSharedTokens));
    let body = client.push_body(&push_request("0708374149"));
    assert_eq!(body.transaction_type, "CustomerBuyGoodsOnline");
    assert_eq!(body.business_short_code, "174379");
    assert_eq!(body.party_b, "5432100");
    assert_eq!(body.party_a, PHONE);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pushes_share_one_token_fetch() {
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    let client = Arc::new(client);
    let pushes = (0..40).map(|i| {
        let client = client.clone();
        tokio::spawn(async move { client.stk_push(&push_request(&format!("07{:08}", i))).await })
    });
    for push in pushes {
        push.await.unwrap().unwrap();
    }
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(client.token_fetches(), 1);
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 40);
}

#[tokio::test]
async fn token_is_replaced_a_minute_before_it_expires() {
    let (stub, base) = serve().await;
    let (client, clock) = client(&base);
    client.stk_push(&push_request("0708374149")).await.unwrap();
    clock.advance(chrono::Duration::seconds(3599 - 61));
    client.stk_push(&push_request("0708374150")).await.unwrap();
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 1, "still fresh");
    clock.advance(chrono::Duration::seconds(2));
    client.stk_push(&push_request("0708374151")).await.unwrap();
    assert_eq!(
        stub.token_calls.load(Ordering::SeqCst),
        2,
        "inside the margin"
    );
}

#[tokio::test]
async fn invalid_token_is_refreshed_once_and_the_push_retried_once() {
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    client.stk_push(&push_request("0708374149")).await.unwrap();
    stub.valid.lock().unwrap().clear();

    let ack = client.stk_push(&push_request("0708374150")).await.unwrap();
    assert_eq!(ack.response_code, "0");
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 2);
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_second_invalid_token_answer_is_returned_not_retried() {
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    *stub.reject_all_tokens.lock().unwrap() = true;
    let err = client
        .stk_push(&push_request("0708374149"))
        .await
        .unwrap_err();
    assert_eq!(err.error_code(), Some("404.001.03"));
    assert!(
        matches!(
            err,
            DarajaError::Rejected {
                http_status: 404,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 2);
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn daraja_errors_map_to_typed_errors() {
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    type Check = fn(&DarajaError) -> bool;
    let cases: Vec<((u16, Value), Check)> = vec![
        (
            (
                400,
                json!({"requestId": "a", "errorCode": "400.002.02", "errorMessage": "Bad Request - Invalid PhoneNumber"}),
            ),
            |e| matches!(e, DarajaError::Rejected { http_status: 400, error_code: Some(c), request_id: Some(r), .. } if c == "400.002.02" && r == "a"),
        ),
        (
            (
                500,
                json!({"errorCode": "500.001.1001", "errorMessage": "Unable to lock subscriber, a transaction is already in process for the current subscriber"}),
            ),
            |e| {
                e.is_subscriber_busy()
                    && matches!(
                        e,
                        DarajaError::Rejected {
                            http_status: 500,
                            ..
                        }
                    )
            },
        ),
        (
            (
                500,
                json!({"errorCode": "500.001.1001", "errorMessage": "Wrong credentials"}),
            ),
            |e| !e.is_subscriber_busy() && matches!(e, DarajaError::Rejected { .. }),
        ),
        (
            (
                500,
                json!({"errorCode": "500.003.02", "errorMessage": "System is busy"}),
            ),
            |e| {
                matches!(
                    e,
                    DarajaError::Unavailable {
                        http_status: Some(500),
                        ..
                    }
                ) && e.error_code() == Some("500.003.02")
                    && !e.is_outcome_unknown()
            },
        ),
        ((429, json!({"fault": "rate"})), |e| {
            matches!(e, DarajaError::RateLimited)
        }),
        ((200, json!({"unexpected": true})), |e| {
            matches!(
                e,
                DarajaError::BadResponse {
                    http_status: 200,
                    ..
                }
            ) && e.is_outcome_unknown()
        }),
        (
            (
                200,
                json!({"MerchantRequestID": "m", "CheckoutRequestID": "c", "ResponseCode": "1", "ResponseDescription": "no"}),
            ),
            |e| {
                matches!(
                    e,
                    DarajaError::Rejected {
                        http_status: 200,
                        ..
                    }
                ) && e.error_code() == Some("1")
            },
        ),
        ((504, json!("gateway timeout")), |e| {
            matches!(
                e,
                DarajaError::Unavailable {
                    http_status: Some(504),
                    ..
                }
            ) && e.is_outcome_unknown()
        }),
        // A 5xx to the push itself without a Daraja code, or an internal error after
        // forwarding: Daraja may have acted.
        ((500, json!("internal")), |e| {
            matches!(
                e,
                DarajaError::Unavailable {
                    http_status: Some(500),
                    error_code: None,
                    ..
                }
            ) && e.is_outcome_unknown()
        }),
        ((503, json!({"errorCode": "", "errorMessage": ""})), |e| {
            matches!(
                e,
                DarajaError::Unavailable {
                    http_status: Some(503),
                    error_code: None,
                    ..
                }
            ) && e.is_outcome_unknown()
        }),
        (
            (
                500,
                json!({"errorCode": "500.003.1001", "errorMessage": "Internal Server Error"}),
            ),
            |e| e.error_code() == Some("500.003.1001") && e.is_outcome_unknown(),
        ),
        // The gateway's own refusal, without a Daraja error: nothing went further.
        ((403, json!("forbidden")), |e| {
            matches!(
                e,
                DarajaError::Unavailable {
                    http_status: Some(403),
                    error_code: None,
                    ..
                }
            ) && e.kind() == crate::FailureKind::Retryable
        }),
    ];
    for ((status, body), check) in cases {
        stub.script
            .lock()
            .unwrap()
            .push_back((status, body.clone()));
        let err = client
            .stk_push(&push_request("0708374149"))
            .await
            .unwrap_err();
        assert!(check(&err), "{status} {body} gave {err:?}");
    }
}

#[tokio::test]
async fn a_hung_push_is_timed_out_with_outcome_unknown() {
    let (stub, base) = serve().await;
    let mut config = config(&base);
    config.request_timeout = Duration::from_millis(300);
    let client = client_with(
        config,
        Arc::new(FixedClock::new(start_time())),
        Arc::new(NoSharedTokens),
    );
    *stub.delay.lock().unwrap() = Duration::from_secs(3);
    let err = client
        .stk_push(&push_request("0708374149"))
        .await
        .unwrap_err();
    assert_eq!(err, DarajaError::TimedOut);
    assert!(err.is_outcome_unknown());
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refused_connection_is_unavailable_and_not_sent() {
    // Bind then drop, so the port is (almost certainly) closed.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let (client, _) = client(&format!("http://127.0.0.1:{port}"));
    let err = client
        .stk_push(&push_request("0708374149"))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DarajaError::Unavailable {
                http_status: None,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_outcome_unknown());
}

#[tokio::test]
async fn token_refusal_is_an_auth_error_and_nothing_is_pushed() {
    let (stub, base) = serve().await;
    let mut config = config(&base);
    config.consumer_secret = Secret::from("wrong");
    let client = client_with(
        config,
        Arc::new(FixedClock::new(start_time())),
        Arc::new(NoSharedTokens),
    );
    let err = client
        .stk_push(&push_request("0708374149"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DarajaError::Auth { error_code: Some(c), .. } if c == "400.008.01"),
        "{err:?}"
    );
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn query_reports_processing_and_final_answers() {
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    let id = "ws_CO_191220191020363925";
    stub.script.lock().unwrap().extend([
        (500, json!({"requestId": "q", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"})),
        (200, json!({"ResponseCode": "0", "ResultCode": "4999", "ResultDesc": "still processing"})),
        (200, json!({"ResponseCode": "0", "MerchantRequestID": "m-1", "CheckoutRequestID": id,
                     "ResultCode": "1032", "ResultDesc": "Request cancelled by user"})),
        (429, json!({})),
    ]);
    assert_eq!(
        client
            .stk_query(id, crate::Deadline::after(Duration::from_secs(30)))
            .await
            .unwrap(),
        QueryAnswer::Processing
    );
    assert_eq!(
        client
            .stk_query(id, crate::Deadline::after(Duration::from_secs(30)))
            .await
            .unwrap(),
        QueryAnswer::Processing
    );
    assert_eq!(
        client
            .stk_query(id, crate::Deadline::after(Duration::from_secs(30)))
            .await
            .unwrap(),
        QueryAnswer::Final {
            result_code: ResultCode::from_number(1032),
            result_desc: "Request cancelled by user".to_owned(),
            merchant_request_id: "m-1".to_owned(),
        }
    );
    assert_eq!(
        client
            .stk_query(id, crate::Deadline::after(Duration::from_secs(30)))
            .await
            .unwrap_err(),
        DarajaError::RateLimited
    );
    match client
        .stk_query(id, crate::Deadline::after(Duration::from_secs(30)))
        .await
        .unwrap()
    {
        QueryAnswer::Final { result_code, .. } => assert!(result_code.is_success()),
        other => panic!("expected success, got {other:?}"),
    }
}

/// A store as another container would see it: one token, shared.
#[derive(Default)]
struct MemoryStore {
    token: Mutex<Option<AccessToken>>,
    saves: AtomicU64,
    invalidations: AtomicU64,
}

#[async_trait]
impl TokenStore for MemoryStore {
    async fn load(&self) -> Option<AccessToken> {
        self.token.lock().unwrap().clone()
    }
    async fn save(&self, token: &AccessToken) {
        self.saves.fetch_add(1, Ordering::SeqCst);
        *self.token.lock().unwrap() = Some(token.clone());
    }
    async fn invalidate(&self, token: &AccessToken) {
        self.invalidations.fetch_add(1, Ordering::SeqCst);
        let mut stored = self.token.lock().unwrap();
        if stored.as_ref().is_some_and(|t| t.value == token.value) {
            *stored = None;
        }
    }
}

#[tokio::test]
async fn a_token_saved_by_another_container_is_reused_and_invalidated_when_refused() {
    let (stub, base) = serve().await;
    let store = Arc::new(MemoryStore::default());
    let clock = Arc::new(FixedClock::new(start_time()));
    let first = client_with(config(&base), clock.clone(), store.clone());
    first.stk_push(&push_request("0708374149")).await.unwrap();
    assert_eq!(store.saves.load(Ordering::SeqCst), 1);

    let second = client_with(config(&base), clock.clone(), store.clone());
    second.stk_push(&push_request("0708374150")).await.unwrap();
    assert_eq!(
        stub.token_calls.load(Ordering::SeqCst),
        1,
        "second container reused the token"
    );
    assert_eq!(second.token_fetches(), 0);

    stub.valid.lock().unwrap().clear();
    second.stk_push(&push_request("0708374151")).await.unwrap();
    assert_eq!(store.invalidations.load(Ordering::SeqCst), 1);
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 2);
    assert_eq!(store.saves.load(Ordering::SeqCst), 2);
}

/// A shared store with a refresh lease, as the DynamoDB one has: one holder at a time.
#[derive(Default)]
struct LeasingStore {
    token: Mutex<Option<AccessToken>>,
    leased: Mutex<bool>,
    leases_granted: AtomicU64,
    /// How often a container was told to wait for another's fetch.
    busy: AtomicU64,
}

#[async_trait]
impl TokenStore for LeasingStore {
    async fn load(&self) -> Option<AccessToken> {
        self.token.lock().unwrap().clone()
    }
    async fn save(&self, token: &AccessToken) {
        *self.token.lock().unwrap() = Some(token.clone());
        *self.leased.lock().unwrap() = false;
    }
    async fn invalidate(&self, token: &AccessToken) {
        let mut stored = self.token.lock().unwrap();
        if stored.as_ref().is_some_and(|t| t.value == token.value) {
            *stored = None;
        }
    }
    async fn try_lease(&self) -> Lease {
        let mut leased = self.leased.lock().unwrap();
        if *leased {
            self.busy.fetch_add(1, Ordering::SeqCst);
            return Lease::Busy;
        }
        *leased = true;
        self.leases_granted.fetch_add(1, Ordering::SeqCst);
        Lease::Granted
    }
    async fn release(&self) {
        *self.leased.lock().unwrap() = false;
    }
}

/// `containers` clients, each with its own memory, over one shared store.
fn containers(base: &str, store: &Arc<LeasingStore>, containers: usize) -> Vec<Arc<Counted>> {
    let clock = Arc::new(FixedClock::new(start_time()));
    (0..containers)
        .map(|_| Arc::new(client_with(config(base), clock.clone(), store.clone())))
        .collect()
}

async fn push_from_all(clients: &[Arc<Counted>], per_client: usize, first_phone: usize) {
    let mut pushes = Vec::new();
    for (c, client) in clients.iter().enumerate() {
        for i in 0..per_client {
            let client = client.clone();
            let phone = format!("07{:08}", first_phone + c * per_client + i);
            pushes.push(tokio::spawn(async move {
                client.stk_push(&push_request(&phone)).await
            }));
        }
    }
    for push in pushes {
        push.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_sharing_a_store_fetch_one_token_between_them() {
    let (stub, base) = serve().await;
    let store = Arc::new(LeasingStore::default());
    let clients = containers(&base, &store, 3);

    push_from_all(&clients, 10, 0).await;

    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 30);
    let fetched: u64 = clients.iter().map(|c| c.token_fetches()).sum();
    assert_eq!(fetched, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_shared_token_costs_one_refresh_across_containers() {
    let (stub, base) = serve().await;
    let store = Arc::new(LeasingStore::default());
    let clients = containers(&base, &store, 3);
    push_from_all(&clients, 1, 0).await;
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 1);

    // Daraja stops accepting the token every container holds in memory.
    stub.valid.lock().unwrap().clear();
    push_from_all(&clients, 5, 100).await;

    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 2);
    assert_eq!(store.leases_granted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_failed_fetch_gives_the_lease_back() {
    let (stub, base) = serve().await;
    let store = Arc::new(LeasingStore::default());
    let clients = containers(&base, &store, 2);
    *stub.token_answer.lock().unwrap() = Some((
        500,
        json!({"errorCode": "500.003.02", "errorMessage": "System is busy"}),
    ));
    let refused = clients[0].stk_push(&push_request("0708374149")).await;
    assert!(
        matches!(refused, Err(DarajaError::Unavailable { .. })),
        "{refused:?}"
    );
    // No push was sent: a token failure is never "outcome unknown", whatever its status.
    assert!(!refused.as_ref().unwrap_err().is_outcome_unknown());
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 0);
    assert!(!*store.leased.lock().unwrap());

    *stub.token_answer.lock().unwrap() = None;
    clients[1]
        .stk_push(&push_request("0708374150"))
        .await
        .unwrap();
    assert_eq!(
        store.busy.load(Ordering::SeqCst),
        0,
        "waited for a released lease"
    );
    assert_eq!(clients[1].token_fetches(), 1);
}

/// Collects everything the client logs.
#[derive(Clone, Default)]
struct LogSink(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_carry_the_call_facts_but_no_secret_or_phone() {
    let sink = LogSink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .finish();
    // With a single live dispatcher, tracing caches each callsite's interest from whichever
    // thread hits it first, which may be a parallel test's thread with no subscriber. A second,
    // silent dispatcher makes it consult every live dispatcher instead.
    let _silent = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let _guard = tracing::subscriber::set_default(subscriber);

    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    client.stk_push(&push_request("0708374149")).await.unwrap();
    stub.valid.lock().unwrap().clear();
    client.stk_push(&push_request("0708374149")).await.unwrap();
    client
        .stk_query(
            "ws_CO_191220191020363925254708374149",
            crate::Deadline::after(Duration::from_secs(30)),
        )
        .await
        .unwrap();

    let logs = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
    for needle in [
        "token-1",
        "token-2",
        PASSKEY,
        KEY,
        SECRET,
        PHONE,
        "s3cr3t",
        // The id embeds the phone: never logged in full (its time part may show).
        "ws_CO_191220191020363925254708374149",
    ] {
        assert!(!logs.contains(needle), "logs contain {needle}:\n{logs}");
    }
    assert!(logs.contains("endpoint=\"stk_push\""), "{logs}");
    assert!(logs.contains("http_status=404"), "{logs}");
    assert!(logs.contains("error_code=\"404.001.03\""), "{logs}");
    assert!(logs.contains("latency_ms="), "{logs}");
    assert!(logs.contains("2547•••••149"), "{logs}");
}

#[test]
fn config_debug_redacts_every_secret() {
    let debug = format!("{:?}", config("http://127.0.0.1:9"));
    for secret in [KEY, SECRET, PASSKEY] {
        assert!(!debug.contains(secret), "{debug}");
    }
    assert!(debug.contains("<redacted>"));
    assert!(debug.contains("174379"));
}

#[test]
fn push_request_debug_hides_phone_and_callback_path() {
    let debug = format!("{:?}", push_request("0708374149"));
    assert!(!debug.contains(PHONE), "{debug}");
    assert!(!debug.contains("s3cr3t"), "{debug}");
}

#[test]
fn base_url_must_be_http() {
    for bad in ["", "sandbox.safaricom.co.ke", "ftp://x", "not a url"] {
        let err = DarajaClient::new(
            config(bad),
            Arc::new(FixedClock::new(start_time())),
            Arc::new(NoSharedTokens),
            NO_ROOTS,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                DarajaError::Unavailable {
                    http_status: None,
                    ..
                }
            ),
            "{bad}"
        );
    }
}

#[test]
fn mask_id_hides_digit_runs_but_keeps_the_tail() {
    assert_eq!(
        mask_id("ws_CO_191220191020363925"),
        "ws_CO_191220191••••••925"
    );
    assert_eq!(
        mask_id("ws_CO_20231219102115254708374149"),
        "ws_CO_20231219102115254••••••149"
    );
    assert_eq!(mask_id("29115-34620561-1"), "29115-34620561-1");
    assert_eq!(mask_id("254708374149"), "254••••••149");
    assert_eq!(mask_id("0708374149"), "0••••••149");
    assert_eq!(mask_id("abc"), "abc");
    assert!(!mask_id("ws_CO_254708374149_x").contains("2547083"));
}

#[test]
fn only_lock_subscriber_is_subscriber_busy() {
    let busy = DarajaError::Rejected {
        http_status: 500,
        error_code: Some("500.001.1001".into()),
        error_message: "Unable to lock subscriber, a transaction is already in process for the current subscriber".into(),
        request_id: None,
    };
    assert!(busy.is_subscriber_busy());
    assert!(!busy.is_outcome_unknown());
    let other = DarajaError::Rejected {
        http_status: 400,
        error_code: Some("400.002.02".into()),
        error_message: "Unable to lock subscriber".into(),
        request_id: None,
    };
    assert!(!other.is_subscriber_busy());
}

fn push_by(phone: &str, left: Duration) -> PushRequest {
    PushRequest {
        deadline: crate::Deadline::after(left),
        ..push_request(phone)
    }
}

#[tokio::test]
async fn a_push_with_less_than_the_minimum_left_is_not_sent() {
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    client
        .prepare(crate::Deadline::after(Duration::from_secs(5)))
        .await
        .unwrap();
    let err = client
        .stk_push(&push_by(
            "0708374149",
            MIN_CALL_TIME - Duration::from_millis(100),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::FailureKind::Retryable, "{err:?}");
    assert!(!err.is_outcome_unknown());
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 0);
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_push_is_cut_off_at_its_deadline_not_at_the_longer_request_timeout() {
    // The request timeout is 60 s and Daraja answers (a success) after 20 s; the deadline
    // leaves 2.5 s. Only the deadline can end the call before the answer: it ends then, as an
    // unknown outcome (it was sent), not as the success that would have come.
    let (stub, base) = serve().await;
    let mut config = config(&base);
    config.request_timeout = Duration::from_secs(60);
    let client = client_with(
        config,
        Arc::new(FixedClock::new(start_time())),
        Arc::new(NoSharedTokens),
    );
    client
        .prepare(crate::Deadline::after(Duration::from_secs(5)))
        .await
        .unwrap();
    *stub.delay.lock().unwrap() = Duration::from_secs(20);
    let deadline = crate::Deadline::after(MIN_CALL_TIME + Duration::from_millis(500));
    let err = client
        .stk_push(&PushRequest {
            deadline,
            ..push_request("0708374149")
        })
        .await
        .unwrap_err();
    assert_eq!(err, DarajaError::TimedOut);
    assert!(deadline.has_passed());
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn no_token_is_fetched_without_time_for_the_call_after_it() {
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    let err = client
        .stk_push(&push_by(
            "0708374149",
            MIN_CALL_TIME + Duration::from_millis(500),
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), crate::FailureKind::Retryable, "{err:?}");
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 0);
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_lease_wait_ends_in_time_for_the_deadline() {
    // Another container holds the lease and never saves: the waiter gives up when only the
    // time for its own fetch and the call is left, fetches, and pushes. Had it waited its whole
    // 10 s limit, the 6 s deadline would have left no time to send anything: the push would
    // have failed unsent.
    let (stub, base) = serve().await;
    let store = Arc::new(LeasingStore::default());
    *store.leased.lock().unwrap() = true;
    let client = client_with(
        config(&base),
        Arc::new(FixedClock::new(start_time())),
        store.clone(),
    );
    let deadline = crate::Deadline::after(Duration::from_secs(6));
    client
        .stk_push(&PushRequest {
            deadline,
            ..push_request("0708374149")
        })
        .await
        .unwrap();
    assert!(store.busy.load(Ordering::SeqCst) > 0);
    assert_eq!(stub.token_calls.load(Ordering::SeqCst), 1);
    assert_eq!(stub.push_calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn gateway_refusals_without_a_daraja_error_are_retryable() {
    // An HTML 401/403 from the gateway, and 404.001.03 twice in a row: nothing reached M-Pesa,
    // so these are not answers to keep for a day.
    for (status, body) in [(401, json!("<html>Unauthorized</html>")), (403, json!({}))] {
        let (stub, base) = serve().await;
        let (client, _) = client(&base);
        stub.script.lock().unwrap().push_back((status, body));
        let err = client
            .stk_push(&push_request("0708374149"))
            .await
            .unwrap_err();
        assert_eq!(
            err.kind(),
            crate::FailureKind::Retryable,
            "{status}: {err:?}"
        );
        assert!(!err.is_outcome_unknown());
    }
    let (stub, base) = serve().await;
    let (client, _) = client(&base);
    *stub.reject_all_tokens.lock().unwrap() = true;
    let err = client
        .stk_push(&push_request("0708374149"))
        .await
        .unwrap_err();
    assert!(err.is_token_refused());
    assert_eq!(err.kind(), crate::FailureKind::Retryable);
}
