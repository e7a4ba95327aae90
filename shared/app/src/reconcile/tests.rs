//! Rounds over the in-memory store, a fixed clock and a scripted Daraja stand-in on loopback.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::TimeZone;
use serde_json::{json, Value};

use super::*;
use daraja::{
    DarajaClient, DarajaConfig, FixedClock, NoSharedTokens, Secret, ShortCode, TransactionKind,
};
use payments::conformance::success;
use payments::payment::{NewPayment, PaymentRecord, PaymentStatus};
use payments::MemoryStore;

/// One scripted answer of the query endpoint.
#[derive(Clone)]
enum Answer {
    Final(&'static str),
    Processing,
    Transient4999,
    RateLimited,
    SpikeArrest,
    InvalidCheckout,
}

impl Answer {
    fn reply(&self, id: &str) -> (StatusCode, Json<Value>) {
        let (status, body) = match self {
            Answer::Final(code) => (
                200,
                json!({"ResponseCode": "0", "ResponseDescription": "accepted",
                       "MerchantRequestID": "m-1", "CheckoutRequestID": id,
                       "ResultCode": code, "ResultDesc": "as scripted"}),
            ),
            Answer::Transient4999 => (
                200,
                json!({"ResponseCode": "0", "MerchantRequestID": "m-1", "CheckoutRequestID": id,
                       "ResultCode": "4999", "ResultDesc": "still processing"}),
            ),
            Answer::Processing => (
                500,
                json!({"requestId": "r", "errorCode": "500.001.1001",
                       "errorMessage": "The transaction is being processed"}),
            ),
            Answer::RateLimited => (
                429,
                json!({"fault": {"faultstring": "Rate limit quota violation"}}),
            ),
            Answer::SpikeArrest => (
                500,
                json!({"requestId": "r", "errorCode": "500.003.02",
                       "errorMessage": "System is busy. Spike arrest violation"}),
            ),
            Answer::InvalidCheckout => (
                400,
                json!({"requestId": "r", "errorCode": "400.002.02",
                       "errorMessage": "Bad Request - Invalid CheckoutRequestID"}),
            ),
        };
        (
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            Json(body),
        )
    }
}

/// A result written to the store just before the query is answered: the callback winning a race.
type Race = (Arc<MemoryStore>, PaymentResult);

#[derive(Default)]
struct Stub {
    queries: AtomicU64,
    /// Per checkout id, answers in order; the last one repeats.
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
    race: Mutex<HashMap<String, Race>>,
}

impl Stub {
    fn script(&self, id: &str, answers: Vec<Answer>) {
        self.script
            .lock()
            .unwrap()
            .insert(id.to_owned(), answers.into());
    }

    fn queries(&self) -> u64 {
        self.queries.load(Ordering::SeqCst)
    }
}

async fn token() -> Json<Value> {
    Json(json!({"access_token": "stub-token", "expires_in": "3599"}))
}

async fn query(
    State(stub): State<Arc<Stub>>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    stub.queries.fetch_add(1, Ordering::SeqCst);
    let id = body["CheckoutRequestID"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let race = stub.race.lock().unwrap().remove(&id);
    if let Some((store, result)) = race {
        store.apply_result(&result).await.unwrap();
    }
    let answer = {
        let mut script = stub.script.lock().unwrap();
        let answers = script.entry(id.clone()).or_default();
        if answers.len() > 1 {
            answers.pop_front()
        } else {
            answers.front().cloned()
        }
    };
    answer.unwrap_or(Answer::InvalidCheckout).reply(&id)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 10, 0, 0).unwrap()
}

struct Fixture {
    stub: Arc<Stub>,
    store: Arc<MemoryStore>,
    clock: Arc<FixedClock>,
    daraja: DarajaClient,
    reconciler: Reconciler,
}

impl Fixture {
    async fn new(settings: ReconcileSettings) -> Self {
        let stub: Arc<Stub> = Arc::default();
        let app = Router::new()
            .route("/oauth/v1/generate", get(token))
            .route("/mpesa/stkpushquery/v1/query", post(query))
            .with_state(stub.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let clock = Arc::new(FixedClock::new(t0()));
        let config = DarajaConfig::new(
            format!("http://{addr}"),
            ShortCode::parse("174379").unwrap(),
            TransactionKind::PayBill,
            Secret::from("key"),
            Secret::from("secret"),
            Secret::from("passkey"),
        );
        let no_roots: [&[u8]; 0] = [];
        let daraja =
            DarajaClient::new(config, clock.clone(), Arc::new(NoSharedTokens), no_roots).unwrap();
        Self {
            stub,
            store: Arc::new(MemoryStore::new()),
            clock,
            daraja,
            reconciler: Reconciler::new(settings),
        }
    }

    /// A pending payment created `secs_ago` seconds before now.
    async fn pending(&self, id: &str, secs_ago: i64) {
        let payment = NewPayment {
            checkout_request_id: id.to_owned(),
            merchant_request_id: "m-1".to_owned(),
            charge: daraja::Charge::parse("254708374149", 100, "INV-1", None)
                .expect("a valid charge"),
            created_at: self.clock.now() - chrono::Duration::seconds(secs_ago),
        };
        self.store.record_pending(&payment).await.unwrap();
    }

    async fn round(&self) -> RoundReport {
        self.reconciler
            .run_round(self.store.as_ref(), &self.daraja, self.clock.as_ref())
            .await
            .unwrap()
    }

    async fn record(&self, id: &str) -> PaymentRecord {
        self.store.get(id).await.unwrap().unwrap()
    }

    fn advance(&self, secs: i64) {
        self.clock.advance(chrono::Duration::seconds(secs));
    }
}

fn settings() -> ReconcileSettings {
    ReconcileSettings {
        grace: Duration::from_secs(90),
        max_age: Duration::from_secs(900),
        max_queries_per_minute: 5,
    }
}

#[tokio::test]
async fn lost_success_callback_is_completed_by_query() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_1", 120).await;
    f.stub.script("ws_CO_1", vec![Answer::Final("0")]);

    let report = f.round().await;

    let record = f.record("ws_CO_1").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.reconciled_by, Some(ResultSource::Query));
    assert_eq!(record.query_attempts, 1);
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.merchant_request_id.as_deref(), Some("m-1"));
    assert_eq!((report.due, report.queried, report.resolved), (1, 1, 1));
    assert!(f
        .store
        .pending_older_than(f.clock.now(), 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn lost_cancel_callback_fails_the_payment_with_its_outcome() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_1", 120).await;
    f.stub.script("ws_CO_1", vec![Answer::Final("1032")]);

    f.round().await;

    let record = f.record("ws_CO_1").await;
    assert_eq!(record.status, PaymentStatus::Failed);
    assert_eq!(record.outcome.as_deref(), Some("cancelled"));
    assert_eq!(record.reconciled_by, Some(ResultSource::Query));
}

#[tokio::test]
async fn payments_within_the_grace_period_are_left_to_their_callback() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_young", 30).await;
    f.stub.script("ws_CO_young", vec![Answer::Final("0")]);

    let report = f.round().await;

    assert_eq!(report.due, 0);
    assert_eq!(f.stub.queries(), 0);
    assert_eq!(f.record("ws_CO_young").await.status, PaymentStatus::Pending);
}

#[tokio::test]
async fn answers_that_are_not_final_count_an_attempt_and_leave_the_payment_pending() {
    let f = Fixture::new(settings()).await;
    for (id, answer) in [
        ("ws_CO_processing", Answer::Processing),
        ("ws_CO_4999", Answer::Transient4999),
        ("ws_CO_too_early", Answer::InvalidCheckout),
    ] {
        f.pending(id, 120).await;
        f.stub.script(id, vec![answer, Answer::Final("0")]);
    }

    let report = f.round().await;

    assert_eq!(
        (report.queried, report.not_final, report.resolved),
        (3, 3, 0)
    );
    for id in ["ws_CO_processing", "ws_CO_4999", "ws_CO_too_early"] {
        let record = f.record(id).await;
        assert_eq!(record.status, PaymentStatus::Pending, "{id}");
        assert_eq!(record.query_attempts, 1, "{id}");
    }

    f.advance(60);
    let report = f.round().await;

    assert_eq!(report.resolved, 3);
    for id in ["ws_CO_processing", "ws_CO_4999", "ws_CO_too_early"] {
        let record = f.record(id).await;
        assert_eq!(record.status, PaymentStatus::Completed, "{id}");
        assert_eq!(record.query_attempts, 2, "{id}");
    }
}

#[tokio::test]
async fn payment_still_processing_after_the_maximum_age_expires() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_1", 130).await;
    f.stub.script("ws_CO_1", vec![Answer::Processing]);

    let mut rounds = 0;
    while f.record("ws_CO_1").await.status == PaymentStatus::Pending {
        let report = f.round().await;
        rounds += 1;
        assert!(rounds <= 14, "still pending after {rounds} rounds");
        if report.expired == 1 {
            break;
        }
        f.advance(60);
    }

    let record = f.record("ws_CO_1").await;
    assert_eq!(record.status, PaymentStatus::Expired);
    // Created 130 s before the first round: the 14th round (910 s) is the first past the
    // maximum age, and it still queried once more before expiring.
    assert_eq!(rounds, 14);
    assert_eq!(record.query_attempts, 14);
    assert!(f
        .store
        .pending_older_than(f.clock.now(), 10)
        .await
        .unwrap()
        .is_empty());

    // A result that arrives after all is still taken: EXPIRED was only our conclusion.
    let mut late = success("ws_CO_1", "100", Some(100));
    late.received_at = f.clock.now();
    f.store.apply_result(&late).await.unwrap();
    let record = f.record("ws_CO_1").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
}

#[tokio::test]
async fn rate_limit_answer_stops_the_round() {
    let f = Fixture::new(settings()).await;
    for (i, id) in ["ws_CO_a", "ws_CO_b", "ws_CO_c"].iter().enumerate() {
        f.pending(id, 300 - i as i64).await;
        f.stub
            .script(id, vec![Answer::RateLimited, Answer::Final("0")]);
    }

    let report = f.round().await;

    assert_eq!(f.stub.queries(), 1);
    assert_eq!(report.stopped, Some(StopReason::RateLimited));
    assert_eq!(f.record("ws_CO_a").await.query_attempts, 1);
    assert_eq!(f.record("ws_CO_b").await.query_attempts, 0);

    f.advance(60);
    let report = f.round().await;
    // The oldest was rate limited once and answers now; the next two still hit their 429.
    assert_eq!(report.resolved, 1);
    assert_eq!(report.stopped, Some(StopReason::RateLimited));
    assert_eq!(f.record("ws_CO_a").await.status, PaymentStatus::Completed);
}

#[tokio::test]
async fn server_errors_stop_the_round_and_are_retried_next_round() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_a", 200).await;
    f.pending("ws_CO_b", 100).await;
    f.stub
        .script("ws_CO_a", vec![Answer::SpikeArrest, Answer::Final("0")]);
    f.stub.script("ws_CO_b", vec![Answer::Final("1")]);

    let report = f.round().await;
    assert_eq!(report.stopped, Some(StopReason::DarajaUnavailable));
    assert_eq!(f.stub.queries(), 1);

    f.advance(60);
    let report = f.round().await;
    assert_eq!(report.resolved, 2);
    assert_eq!(f.record("ws_CO_a").await.status, PaymentStatus::Completed);
    assert_eq!(f.record("ws_CO_b").await.status, PaymentStatus::Failed);
    assert_eq!(f.record("ws_CO_a").await.query_attempts, 2);
}

#[tokio::test]
async fn queries_stay_within_the_budget_of_each_minute() {
    let f = Fixture::new(ReconcileSettings {
        max_queries_per_minute: 2,
        ..settings()
    })
    .await;
    let ids = ["ws_CO_1", "ws_CO_2", "ws_CO_3", "ws_CO_4", "ws_CO_5"];
    for (i, id) in ids.iter().enumerate() {
        f.pending(id, 300 - i as i64).await;
        f.stub.script(id, vec![Answer::Final("0")]);
    }

    let report = f.round().await;
    assert_eq!((report.queried, report.resolved), (2, 2));
    assert_eq!(report.stopped, Some(StopReason::BudgetSpent));
    // Oldest first.
    assert_eq!(f.record("ws_CO_1").await.status, PaymentStatus::Completed);
    assert_eq!(f.record("ws_CO_3").await.status, PaymentStatus::Pending);

    // A second run within the same minute shares its budget.
    f.advance(1);
    let report = f.round().await;
    assert_eq!(report.queried, 0);
    assert_eq!(f.stub.queries(), 2);

    f.advance(60);
    let report = f.round().await;
    assert_eq!(report.queried, 2);
    assert_eq!(f.stub.queries(), 4);
}

#[tokio::test]
async fn payments_past_the_maximum_age_expire_even_when_the_budget_is_spent() {
    let f = Fixture::new(ReconcileSettings {
        max_queries_per_minute: 1,
        ..settings()
    })
    .await;
    f.pending("ws_CO_old_1", 1000).await;
    f.pending("ws_CO_old_2", 950).await;
    f.pending("ws_CO_young", 100).await;
    for id in ["ws_CO_old_1", "ws_CO_old_2", "ws_CO_young"] {
        f.stub.script(id, vec![Answer::Processing]);
    }

    let report = f.round().await;

    assert_eq!((report.queried, report.expired), (1, 2));
    assert_eq!(f.record("ws_CO_old_1").await.query_attempts, 1);
    assert_eq!(f.record("ws_CO_old_2").await.query_attempts, 0);
    assert_eq!(f.record("ws_CO_old_2").await.status, PaymentStatus::Expired);
    assert_eq!(f.record("ws_CO_young").await.status, PaymentStatus::Pending);
}

#[tokio::test]
async fn callback_winning_the_race_keeps_its_result_over_a_contrary_query() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_1", 120).await;
    // The callback (success) lands after the round read the index, before the query answers
    // that the customer cancelled (the sandbox has been seen contradicting its callbacks).
    f.stub.race.lock().unwrap().insert(
        "ws_CO_1".to_owned(),
        (f.store.clone(), success("ws_CO_1", "100", Some(100))),
    );
    f.stub.script("ws_CO_1", vec![Answer::Final("1032")]);

    let report = f.round().await;

    assert_eq!((report.resolved, report.already_final), (0, 1));
    let record = f.record("ws_CO_1").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.reconciled_by, Some(ResultSource::Callback));
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
}

#[test]
fn minute_budget_resets_with_the_clock_minute() {
    let mut budget = MinuteBudget::default();
    let start = t0();
    assert!(budget.take(start, 2));
    assert!(budget.take(start + chrono::Duration::seconds(59), 2));
    assert!(!budget.take(start + chrono::Duration::seconds(59), 2));
    assert!(budget.take(start + chrono::Duration::seconds(60), 2));
}

#[test]
fn query_result_carries_the_code_and_its_outcome_only() {
    let result = query_result(
        "ws_CO_1",
        &ResultCode::from_text("2001"),
        "wrong PIN".to_owned(),
        String::new(),
        t0(),
    );
    assert_eq!(result.outcome(), "wrong_pin");
    assert!(!result.is_success());
    assert_eq!(result.source, ResultSource::Query);
    assert_eq!(result.receipt, None);
}
