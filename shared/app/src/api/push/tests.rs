use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde_json::json;

use super::*;
use crate::api::DEFAULT_PHONE_LOCK;
use daraja::fake::FakeDaraja;
use daraja::time::FixedClock;
use payments::intent::{IntentRecord, PhoneLock, CLOCK_SKEW};
use payments::timestamp;
use payments::{MemoryLedger, MemoryStore, StoreError};

const BODY: &[u8] = br#"{"phone":"0708374149","amount":100,"reference":"INV-1"}"#;

fn now() -> DateTime<Utc> {
    timestamp::truncate(Utc::now())
}

/// A service over the counting fake Daraja, which sends nothing: a push that gets as far as
/// Daraja is counted and answered "unavailable" (a 503), so `daraja.pushes() == 0` proves
/// Daraja was never called.
fn service(ledger: Arc<dyn PushLedger>) -> (PushService, Arc<FakeDaraja>) {
    let daraja = Arc::new(FakeDaraja::new());
    let service = PushService {
        daraja: daraja.clone(),
        ledger,
        clock: Arc::new(FixedClock::new(now())),
        callback_keys: CallbackKeys::parse("a-key-of-thirty-two-characters!!").unwrap(),
        callback_base_url: Some("https://api.example.com".into()),
        phone_lock: DEFAULT_PHONE_LOCK,
    };
    (service, daraja)
}

/// A whole invocation, as the template's timeout gives it.
fn invocation() -> Deadline {
    Deadline::after(DEFAULT_INVOCATION_TIME)
}

fn memory() -> Arc<MemoryLedger> {
    Arc::new(MemoryLedger::new(Arc::new(MemoryStore::new())))
}

fn intent_for(service: &PushService, body: &[u8], key: Option<&str>) -> NewIntent {
    NewIntent::new(
        key.map_or_else(IntentKey::generated, IntentKey::idempotency),
        parse_payment_request(body).unwrap(),
        service.clock.now(),
        chrono::Duration::from_std(DEFAULT_PHONE_LOCK).unwrap(),
    )
}

struct StoreDown;

#[async_trait]
impl PushLedger for StoreDown {
    async fn begin(&self, _: &NewIntent) -> Result<Begin, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn accepted(
        &self,
        _: &NewIntent,
        _: &NewPayment,
        _: &StoredAnswer,
    ) -> Result<Recorded, StoreError> {
        unreachable!("nothing is accepted without an intent")
    }
    async fn failed(&self, _: &NewIntent, _: &Failure, _: DateTime<Utc>) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn intent(
        &self,
        _: &IntentKey,
        _: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        Ok(None)
    }
    async fn phone_lock(&self, _: &str, _: DateTime<Utc>) -> Result<Option<PhoneLock>, StoreError> {
        Ok(None)
    }
    async fn in_doubt_for_phone(
        &self,
        _: &str,
        _: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        Ok(None)
    }
    async fn link(
        &self,
        _: &IntentRecord,
        _: &NewPayment,
        _: &StoredAnswer,
        _: DateTime<Utc>,
    ) -> Result<Option<payments::PendingWrite>, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn release_phone(&self, _: &str, _: &str, _: Option<&str>) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

#[test]
fn idempotency_keys_are_1_to_255_visible_ascii() {
    assert_eq!(parse_idempotency_key(b"order-1001").unwrap(), "order-1001");
    assert!(parse_idempotency_key(&[b'k'; 255]).is_ok());
    for bad in [
        &b""[..],
        &[b'k'; 256][..],
        b"has space",
        b"tab\there",
        "caf\u{e9}".as_bytes(),
        b"nul\0",
    ] {
        let error = parse_idempotency_key(bad).unwrap_err();
        assert_eq!(
            (error.status(), error.code.as_str()),
            (400, "invalid_idempotency_key")
        );
    }
}

#[test]
fn the_same_payment_in_another_spelling_has_the_same_fingerprint() {
    use payments::intent::fingerprint;
    let one = parse_payment_request(BODY).unwrap();
    let same = parse_payment_request(
        br#"{"phone":"+254 708-374 149","amount":100,"reference":"INV-1","description":"Payment"}"#,
    )
    .unwrap();
    let other =
        parse_payment_request(br#"{"phone":"0708374149","amount":101,"reference":"INV-1"}"#)
            .unwrap();
    assert_eq!(fingerprint(&one), fingerprint(&same));
    assert_ne!(fingerprint(&one), fingerprint(&other));
}

#[tokio::test]
async fn store_down_before_the_push_is_a_503_and_nothing_is_sent() {
    let (service, daraja) = service(Arc::new(StoreDown));
    let error = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap_err();
    assert_eq!(
        (error.status(), error.code.as_str()),
        (503, "storage_unavailable")
    );
    assert!(
        error.message.contains("no prompt was sent"),
        "{}",
        error.message
    );
    assert_eq!(daraja.pushes(), 0);
}

#[tokio::test]
async fn a_settled_key_replays_its_first_answer_without_calling_daraja() {
    let ledger = memory();
    let (service, daraja) = service(ledger.clone());
    let first = intent_for(&service, BODY, Some("k1"));
    assert_eq!(ledger.begin(&first).await.unwrap(), Begin::Started);
    let refused = StoredAnswer {
        status: 502,
        body: json!({"error": {"code": "daraja_rejected", "message": "Invalid Amount"}}),
    };
    ledger
        .failed(&first, &Failure::Refused(refused.clone()), now())
        .await
        .unwrap();
    let answer = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap();
    assert_eq!(answer, PushAnswer::Replayed(refused.clone()));
    assert_eq!((answer.status(), answer.body()), (502, refused.body));
    assert_eq!(daraja.pushes(), 0);
}

#[tokio::test]
async fn a_key_with_another_body_or_still_running_is_refused_without_calling_daraja() {
    let ledger = memory();
    let (service, daraja) = service(ledger.clone());
    let first = intent_for(&service, BODY, Some("k1"));
    assert_eq!(ledger.begin(&first).await.unwrap(), Begin::Started);
    let error = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap_err();
    assert_eq!(
        (error.status(), error.code.as_str()),
        (409, "idempotency_in_progress")
    );
    let other = br#"{"phone":"0708374149","amount":5,"reference":"INV-1"}"#;
    let error = service
        .start(other, None, Some(b"k1"), invocation())
        .await
        .unwrap_err();
    assert_eq!(
        (error.status(), error.code.as_str()),
        (422, "idempotency_key_reused")
    );
    assert_eq!(daraja.pushes(), 0);
}

#[tokio::test]
async fn a_busy_phone_is_a_409_with_the_open_checkout_id() {
    let ledger = memory();
    let (service, daraja) = service(ledger.clone());
    let first = intent_for(&service, BODY, None);
    assert_eq!(ledger.begin(&first).await.unwrap(), Begin::Started);
    let payment = NewPayment {
        checkout_request_id: "ws_CO_OPEN".into(),
        merchant_request_id: "m-1".into(),
        charge: daraja::Charge::parse(first.phone(), 100, "INV-1", None).expect("a valid charge"),
        created_at: now(),
        callback_nonce: None,
        created_by: None,
    };
    let accepted = StoredAnswer {
        status: 202,
        body: json!({}),
    };
    ledger.accepted(&first, &payment, &accepted).await.unwrap();
    let error = service
        .start(BODY, None, Some(b"k2"), invocation())
        .await
        .unwrap_err();
    assert_eq!((error.status(), error.code.as_str()), (409, "phone_busy"));
    assert_eq!(error.body()["error"]["checkout_request_id"], "ws_CO_OPEN");
    assert_eq!(daraja.pushes(), 0);
    // Refused before any write: the key is still free for a later attempt.
    let key = IntentKey::idempotency("k2");
    assert_eq!(ledger.intent(&key, now()).await.unwrap(), None);
}

#[tokio::test]
async fn daraja_unreachable_frees_the_key_and_the_phone() {
    let ledger = memory();
    let (service, daraja) = service(ledger.clone());
    let error = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap_err();
    assert_eq!(
        (error.status(), error.code.as_str()),
        (503, "daraja_unavailable")
    );
    assert_eq!(
        ledger
            .intent(&IntentKey::idempotency("k1"), now())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ledger.phone_lock("254708374149", now()).await.unwrap(),
        None
    );
    // A retry with the same key tries Daraja again.
    let error = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::DarajaUnavailable);
    assert_eq!(daraja.pushes(), 2);
}

/// A key whose push stopped mid-flight is answered "in doubt" once its function's deadline has
/// passed, and never pushed again.
#[tokio::test]
async fn an_abandoned_key_replays_push_in_doubt_without_calling_daraja() {
    let ledger = memory();
    let (service, daraja) = service(ledger.clone());
    let (service, clock) = with_clock(service);
    let first = intent_for(&service, BODY, Some("k1"))
        .settled_by(service.clock.now() + chrono::Duration::seconds(20));
    assert_eq!(ledger.begin(&first).await.unwrap(), Begin::Started);
    // Before its deadline (and the clock skew) it is still in progress.
    let error = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap_err();
    assert_eq!(error.code, ErrorCode::IdempotencyInProgress);
    clock.advance(chrono::Duration::seconds(20) + CLOCK_SKEW);
    let answer = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap();
    assert!(answer.is_replay());
    assert_eq!(answer.status(), 504);
    assert_eq!(answer.body()["error"]["code"], "push_in_doubt");
    assert_eq!(answer.body()["error"]["outcome"], "unknown");
    assert_eq!(daraja.pushes(), 0);
}

/// Fails `accepted` the first `failures` times (every time with `usize::MAX`).
struct FlakyAccept {
    inner: MemoryLedger,
    failures: usize,
    attempts: std::sync::atomic::AtomicUsize,
}

impl FlakyAccept {
    fn new(failures: usize) -> Self {
        Self {
            inner: MemoryLedger::new(Arc::new(MemoryStore::new())),
            failures,
            attempts: Default::default(),
        }
    }

    fn attempts(&self) -> usize {
        self.attempts.load(std::sync::atomic::Ordering::SeqCst)
    }
}

#[async_trait]
impl PushLedger for FlakyAccept {
    async fn begin(&self, intent: &NewIntent) -> Result<Begin, StoreError> {
        self.inner.begin(intent).await
    }
    async fn accepted(
        &self,
        intent: &NewIntent,
        payment: &NewPayment,
        answer: &StoredAnswer,
    ) -> Result<Recorded, StoreError> {
        let n = self
            .attempts
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n < self.failures {
            return Err(StoreError::Unavailable("throttled".into()));
        }
        self.inner.accepted(intent, payment, answer).await
    }
    async fn failed(
        &self,
        i: &NewIntent,
        f: &Failure,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.inner.failed(i, f, at).await
    }
    async fn intent(
        &self,
        k: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        self.inner.intent(k, now).await
    }
    async fn phone_lock(
        &self,
        p: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PhoneLock>, StoreError> {
        self.inner.phone_lock(p, now).await
    }
    async fn in_doubt_for_phone(
        &self,
        p: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        self.inner.in_doubt_for_phone(p, now).await
    }
    async fn link(
        &self,
        i: &IntentRecord,
        p: &NewPayment,
        a: &StoredAnswer,
        at: DateTime<Utc>,
    ) -> Result<Option<payments::PendingWrite>, StoreError> {
        self.inner.link(i, p, a, at).await
    }
    async fn release_phone(
        &self,
        phone: &str,
        id: &str,
        nonce: Option<&str>,
    ) -> Result<bool, StoreError> {
        self.inner.release_phone(phone, id, nonce).await
    }
}

/// `service` on a clock the test moves.
fn with_clock(service: PushService) -> (PushService, Arc<FixedClock>) {
    let clock = Arc::new(FixedClock::new(service.clock.now()));
    (
        PushService {
            clock: clock.clone(),
            ..service
        },
        clock,
    )
}

fn accepting(ledger: Arc<dyn PushLedger>) -> (PushService, Arc<FakeDaraja>) {
    let daraja = Arc::new(FakeDaraja::accepting());
    let (service, _) = service(ledger);
    (
        PushService {
            daraja: daraja.clone(),
            ..service
        },
        daraja,
    )
}

#[tokio::test]
async fn a_failing_accepted_write_is_retried_until_it_lands() {
    let ledger = Arc::new(FlakyAccept::new(3));
    let (service, daraja) = accepting(ledger.clone());
    let answer = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    assert_eq!(answer.body()["checkout_request_id"], "ws_CO_FAKE_1");
    assert_eq!(ledger.attempts(), 4);
    assert_eq!(daraja.pushes(), 1);
    let intent = ledger
        .intent(&IntentKey::idempotency("k1"), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(intent.checkout_request_id.as_deref(), Some("ws_CO_FAKE_1"));
    // The retry replays the 202.
    let again = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap();
    assert!(again.is_replay());
    assert_eq!((again.status(), again.body()), (202, answer.body()));
}

#[tokio::test]
async fn an_accepted_push_that_cannot_be_recorded_is_in_doubt_and_its_key_never_says_otherwise() {
    let ledger = Arc::new(FlakyAccept::new(usize::MAX));
    let (service, daraja) = accepting(ledger.clone());
    let (service, clock) = with_clock(service);
    let deadline = Deadline::after(REPLY_TIME + std::time::Duration::from_millis(700));
    let error = service
        .start(BODY, None, Some(b"k1"), deadline)
        .await
        .unwrap_err();
    assert_eq!(
        (error.status(), error.code.as_str()),
        (504, "push_in_doubt")
    );
    let body = error.body();
    assert_eq!(body["error"]["outcome"], "unknown");
    assert_eq!(body["error"]["checkout_request_id"], "ws_CO_FAKE_1");
    assert!(ledger.attempts() >= 2, "retried: {}", ledger.attempts());
    // The intent is written and unsettled, the phone stays locked.
    let intent = ledger
        .intent(&IntentKey::idempotency("k1"), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(intent.status, payments::intent::IntentStatus::InProgress);
    assert!(ledger
        .phone_lock("254708374149", now())
        .await
        .unwrap()
        .is_some());
    // Past the invocation's deadline the key answers the same code, and pushes nothing.
    clock.advance(chrono::Duration::seconds(1) + CLOCK_SKEW);
    let replay = service
        .start(BODY, None, Some(b"k1"), invocation())
        .await
        .unwrap();
    assert!(replay.is_replay());
    assert_eq!(replay.status(), error.status());
    assert_eq!(replay.body()["error"]["code"], "push_in_doubt");
    assert_eq!(daraja.pushes(), 1);
}

#[tokio::test]
async fn an_intent_records_its_function_s_deadline() {
    let ledger = memory();
    let (service, _) = service(ledger.clone());
    let _ = service
        .start(
            BODY,
            None,
            Some(b"k1"),
            Deadline::after(std::time::Duration::from_secs(10)),
        )
        .await;
    // Daraja was unavailable: the key is free again, nothing left behind.
    assert_eq!(
        ledger
            .intent(&IntentKey::idempotency("k1"), now())
            .await
            .unwrap(),
        None
    );
    let (accepting_service, _) = accepting(ledger.clone());
    accepting_service
        .start(
            BODY,
            None,
            Some(b"k2"),
            Deadline::after(std::time::Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let intent = ledger
        .intent(&IntentKey::idempotency("k2"), now())
        .await
        .unwrap()
        .unwrap();
    let settle_in = intent.settle_by - intent.created_at;
    assert!(
        (9..=10).contains(&settle_in.num_seconds()),
        "settle_by {settle_in} after the start"
    );
}

#[tokio::test]
async fn phone_lock_setting_defaults_to_two_minutes_and_must_be_positive() {
    use crate::config::PushConfig;
    let base = [
        ("TABLE_NAME", "t"),
        ("DARAJA_SHORTCODE", "174379"),
        ("DARAJA_CONSUMER_KEY", "k"),
        ("DARAJA_CONSUMER_SECRET", "s"),
        ("DARAJA_PASSKEY", "p"),
        ("CALLBACK_TOKEN", "a-key-of-thirty-two-characters!!"),
        ("PHONE_LOCK_SECONDS", ""),
    ];
    let config = PushConfig::load(&base, None).await.unwrap();
    assert_eq!(config.phone_lock, DEFAULT_PHONE_LOCK);
    let mut set = base;
    set[6].1 = "45";
    let config = PushConfig::load(&set, None).await.unwrap();
    assert_eq!(config.phone_lock, Duration::from_secs(45));
    set[6].1 = "0";
    let error = PushConfig::load(&set, None).await.unwrap_err().to_string();
    assert!(error.contains("PHONE_LOCK_SECONDS"), "{error}");
}
