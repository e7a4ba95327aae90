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
use payments::conformance::{receipt_of, success};
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
    ledger: payments::MemoryLedger,
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
        let store = Arc::new(MemoryStore::with_clock(clock.clone()));
        Self {
            stub,
            ledger: payments::MemoryLedger::new(store.clone()),
            store,
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
            callback_nonce: None,
            created_by: None,
        };
        self.store.record_pending(&payment).await.unwrap();
    }

    async fn round(&self) -> RoundReport {
        self.round_by(Deadline::after(Duration::from_secs(50)))
            .await
    }

    async fn round_by(&self, deadline: Deadline) -> RoundReport {
        self.reconciler
            .run_round(
                self.store.as_ref(),
                &self.ledger,
                &self.daraja,
                self.clock.as_ref(),
                deadline,
            )
            .await
            .unwrap()
    }

    async fn due(&self, queue: QueryQueue, at: DateTime<Utc>) -> Vec<String> {
        self.store.due_for_query(queue, at, 100).await.unwrap()
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
        retry_after: Duration::from_secs(30),
        min_attempts: 3,
        expired_retry_after: Duration::from_secs(900),
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
    // Created 130 s before the first round, queried with a back-off of 30, 60, 120, 240 and
    // 300 s: the round at 780 s (910 s old) is the first past the maximum age, and its query
    // still says "being processed". Six queries instead of one a minute.
    assert_eq!(rounds, 14);
    assert_eq!(record.query_attempts, 6);
    assert!(f
        .store
        .pending_older_than(f.clock.now(), 10)
        .await
        .unwrap()
        .is_empty());
    // It waits in the expired queue for another look in 15 minutes.
    let now = f.clock.now();
    assert!(f.due(QueryQueue::Expired, now).await.is_empty());
    assert_eq!(
        f.due(QueryQueue::Expired, now + chrono::Duration::seconds(900))
            .await,
        ["ws_CO_1"]
    );

    // A result that arrives after all is still taken: EXPIRED was only our conclusion.
    let mut late = success("ws_CO_1", "100", Some(100));
    late.received_at = f.clock.now();
    f.store.apply_result(&late).await.unwrap();
    let record = f.record("ws_CO_1").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt, Some(receipt_of("ws_CO_1")));
    assert!(f
        .due(QueryQueue::Expired, now + chrono::Duration::days(2))
        .await
        .is_empty());
}

#[tokio::test]
async fn rate_limit_answer_stops_the_round_and_the_next_round_starts_with_the_others() {
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

    // The least recently queried go first: b and c have never been, so a waits its turn.
    f.advance(60);
    let report = f.round().await;
    assert_eq!(report.stopped, Some(StopReason::RateLimited));
    assert_eq!(f.record("ws_CO_b").await.query_attempts, 1);
    assert_eq!(f.record("ws_CO_a").await.query_attempts, 1);
    f.advance(60);
    f.round().await;
    assert_eq!(f.record("ws_CO_c").await.query_attempts, 1);
    assert_eq!(f.record("ws_CO_a").await.query_attempts, 1);
    // Then everyone gets the answer that follows the 429.
    f.advance(60);
    let report = f.round().await;
    assert_eq!((report.resolved, report.stopped), (3, None));
    for id in ["ws_CO_a", "ws_CO_b", "ws_CO_c"] {
        assert_eq!(f.record(id).await.status, PaymentStatus::Completed, "{id}");
    }
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
async fn a_spent_budget_never_expires_a_payment_that_was_not_queried() {
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

    // Before, both old payments were expired, one of them without any query.
    assert_eq!((report.queried, report.expired), (1, 1));
    assert_eq!(f.record("ws_CO_old_1").await.status, PaymentStatus::Expired);
    assert_eq!(f.record("ws_CO_old_2").await.query_attempts, 0);
    assert_eq!(f.record("ws_CO_old_2").await.status, PaymentStatus::Pending);
    assert_eq!(f.record("ws_CO_young").await.status, PaymentStatus::Pending);

    f.advance(60);
    let report = f.round().await;
    assert_eq!((report.queried, report.expired), (1, 1));
    assert_eq!(f.record("ws_CO_old_2").await.status, PaymentStatus::Expired);
    assert_eq!(f.record("ws_CO_old_2").await.query_attempts, 1);
}

#[tokio::test]
async fn without_a_processing_answer_a_payment_expires_only_after_the_minimum_attempts() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_1", 1000).await;
    // Refused as "invalid checkout" (too early, or not yet known): no word on the payment.
    f.stub.script("ws_CO_1", vec![Answer::InvalidCheckout]);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let report = f.round().await;
        assert_eq!(report.queried, 1);
        statuses.push(f.record("ws_CO_1").await.status);
        f.advance(300);
    }
    assert_eq!(
        statuses,
        [
            PaymentStatus::Pending,
            PaymentStatus::Pending,
            PaymentStatus::Expired
        ]
    );
    assert_eq!(f.record("ws_CO_1").await.query_attempts, 3);
}

#[tokio::test]
async fn expired_payments_are_queried_again_at_growing_intervals_for_a_day() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_late", 1000).await;
    f.pending("ws_CO_never", 1000).await;
    f.stub.script(
        "ws_CO_late",
        vec![Answer::Processing, Answer::Processing, Answer::Final("0")],
    );
    f.stub.script("ws_CO_never", vec![Answer::Processing]);
    let report = f.round().await;
    assert_eq!(report.expired, 2);

    // Then a round a minute for two days: the expired ones are queried again after 15, 30, 60
    // minutes …, at most every 4 hours, until a day after their creation.
    let mut late_completed_after = None;
    for minute in 1..=(2 * 24 * 60) {
        f.advance(60);
        f.round().await;
        if late_completed_after.is_none()
            && f.record("ws_CO_late").await.status == PaymentStatus::Completed
        {
            late_completed_after = Some(minute);
        }
    }
    // Queried 15 min after its expiry (processing), then 15 min later (success).
    assert_eq!(late_completed_after, Some(30));
    let late = f.record("ws_CO_late").await;
    assert_eq!(late.reconciled_by, Some(ResultSource::Query));
    assert_eq!(late.query_attempts, 3);
    let never = f.record("ws_CO_never").await;
    assert_eq!(never.status, PaymentStatus::Expired);
    // At the expiry, then 15 m, 30 m, 1 h, 2 h, 4 h, 8 h, 12 h, 16 h and 20 h after it; the
    // next (24 h) would be more than a day after its creation.
    assert_eq!(never.query_attempts, 10);
    assert!(f
        .due(
            QueryQueue::Expired,
            f.clock.now() + chrono::Duration::days(30)
        )
        .await
        .is_empty());
}

#[tokio::test]
async fn stuck_payments_do_not_take_every_query_of_every_minute() {
    // Two payments that stay "being processed", a budget of two a minute, and new payments
    // arriving: every new payment is queried within two minutes of its grace period ending.
    let f = Fixture::new(ReconcileSettings {
        max_queries_per_minute: 2,
        ..settings()
    })
    .await;
    f.pending("ws_CO_stuck_1", 400).await;
    f.pending("ws_CO_stuck_2", 390).await;
    for id in ["ws_CO_stuck_1", "ws_CO_stuck_2"] {
        f.stub.script(id, vec![Answer::Processing]);
    }
    for minute in 0..10 {
        let id = format!("ws_CO_new_{minute}");
        f.pending(&id, 91).await;
        f.stub.script(&id, vec![Answer::Final("0")]);
        f.round().await;
        f.advance(60);
    }
    for minute in 0..9 {
        let id = format!("ws_CO_new_{minute}");
        assert_eq!(f.record(&id).await.status, PaymentStatus::Completed, "{id}");
    }
    // The stuck ones were still asked, at their back-off.
    assert!(f.record("ws_CO_stuck_1").await.query_attempts >= 2);
    assert!(f.record("ws_CO_stuck_2").await.query_attempts >= 2);
}

#[tokio::test]
async fn a_round_stops_before_its_deadline() {
    let f = Fixture::new(settings()).await;
    f.pending("ws_CO_1", 120).await;
    f.stub.script("ws_CO_1", vec![Answer::Final("0")]);
    let report = f
        .round_by(Deadline::after(
            ROUND_RESERVE + MIN_CALL_TIME - Duration::from_millis(500),
        ))
        .await;
    assert_eq!(report.stopped, Some(StopReason::DeadlineNear));
    assert_eq!((report.due, report.queried), (1, 0));
    assert_eq!(f.stub.queries(), 0);
    assert_eq!(f.record("ws_CO_1").await.status, PaymentStatus::Pending);
}

#[test]
fn back_off_doubles_up_to_its_cap() {
    let s = settings();
    let secs = |attempts| s.retry_after(attempts).as_secs();
    assert_eq!(
        [secs(1), secs(2), secs(3), secs(4), secs(5), secs(9)],
        [30, 60, 120, 240, 300, 300]
    );
    let expired = |minutes: u64| {
        s.expired_retry_after(Duration::from_secs(minutes * 60))
            .as_secs()
            / 60
    };
    assert_eq!(
        [
            expired(0),
            expired(15),
            expired(30),
            expired(200),
            expired(900)
        ],
        [15, 15, 30, 200, 240]
    );
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
    assert_eq!(record.receipt, Some(receipt_of("ws_CO_1")));
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

#[tokio::test]
async fn an_orphan_that_came_while_its_push_still_ran_is_linked_by_the_next_round() {
    use payments::intent::{IntentKey, IntentStatus, NewIntent, PushLedger};
    let f = Fixture::new(settings()).await;
    // A push whose acceptance was never recorded, and whose function's deadline has passed.
    let charge = daraja::Charge::parse("254708374149", 100, "INV-7", None).unwrap();
    let start = f.clock.now() - chrono::Duration::seconds(120);
    let intent = NewIntent::new(
        IntentKey::idempotency("order-7"),
        charge,
        start,
        chrono::Duration::seconds(120),
    )
    .settled_by(start + chrono::Duration::seconds(25));
    assert_eq!(
        f.ledger.begin(&intent).await.unwrap(),
        payments::intent::Begin::Started
    );
    // Its callback came while the push still ran: kept as an orphan, not linked then.
    let mut result = success("ws_CO_26112026090000123708374149", "100", Some(100));
    result.received_at = start + chrono::Duration::seconds(5);
    let applied = f.store.apply_result(&result).await.unwrap();
    assert!(matches!(
        applied,
        Applied::Transitioned(payments::Settled { orphan: true, .. })
    ));

    let report = f.round().await;

    assert_eq!(report.linked, 1);
    let record = f.record("ws_CO_26112026090000123708374149").await;
    assert!(record.details_recorded);
    assert_eq!(record.reference.as_deref(), Some("INV-7"));
    assert_eq!(record.status, PaymentStatus::Completed);
    assert!(f.store.orphans(10).await.unwrap().is_empty());
    let settled = f
        .ledger
        .intent(&IntentKey::idempotency("order-7"), f.clock.now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settled.status, IntentStatus::Accepted);
    // Nothing left to link.
    assert_eq!(f.round().await.linked, 0);
}
