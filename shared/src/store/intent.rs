//! The push ledger: what `POST /payments` writes before and after it calls Daraja, so that
//! a retry never sends a second prompt and no accepted push is lost.
//!
//! Two kinds of item sit next to the payments in the one table:
//!
//! | `pk` | what |
//! |---|---|
//! | `IDEM#<sha256 of the Idempotency-Key>` or `INTENT#<generated id>` | the intent: request fingerprint and details, `intent_status` (`IN_PROGRESS`, `ACCEPTED`, `REFUSED`, `OUTCOME_UNKNOWN`), the first answer for replay, the checkout id; TTL `expires_at` = 24 h |
//! | `PHONE#<msisdn>` | the phone lock: owner intent, `locked_until` (epoch seconds), the open checkout id; TTL `expires_at` = `locked_until` |
//!
//! A push costs two DynamoDB requests in the common path: [`PushLedger::begin`] writes the
//! intent and takes the phone lock in one conditional transaction (a failed condition hands
//! back the item it found, so no read is needed), and [`PushLedger::accepted`] writes the
//! pending payment, completes the intent and tags the lock with the checkout id in a second
//! one. TTL deletion lags by hours, so every condition and every read treats an item past
//! its expiry as absent.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, ReturnValuesOnConditionCheckFailure,
    TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::item::{self, n, s, time, Item};
use super::{DynamoStore, MemoryStore, PaymentStore, StoreError};
use crate::payment::{timestamp, NewPayment, PaymentStatus};

/// How long an Idempotency-Key is remembered (Stripe's rule).
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);

const IDEM_PREFIX: &str = "IDEM#";
const INTENT_PREFIX: &str = "INTENT#";
const PHONE_PREFIX: &str = "PHONE#";

const RECORD_TYPE: &str = "record_type";
const INTENT_TYPE: &str = "PUSH_INTENT";
const LOCK_TYPE: &str = "PHONE_LOCK";
const INTENT_STATUS: &str = "intent_status";
const FINGERPRINT: &str = "request_fingerprint";
const ANSWER_STATUS: &str = "answer_status";
const ANSWER_BODY: &str = "answer_body";
const INTENT_PK: &str = "intent_pk";
const LOCKED_UNTIL: &str = "locked_until";
const EXPIRES_AT: &str = "expires_at";

/// Which intent item a push writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntentKey {
    /// The caller's `Idempotency-Key`, stored only as its SHA-256 (hex).
    Idempotency(String),
    /// No key was sent: a fresh random id, so the write-ahead rule still holds.
    Generated(String),
}

impl IntentKey {
    pub fn idempotency(key: &str) -> Self {
        Self::Idempotency(hex::encode(Sha256::digest(key.as_bytes())))
    }

    pub fn generated() -> Self {
        Self::Generated(random_id())
    }

    pub fn pk(&self) -> String {
        match self {
            Self::Idempotency(hash) => format!("{IDEM_PREFIX}{hash}"),
            Self::Generated(id) => format!("{INTENT_PREFIX}{id}"),
        }
    }

    /// Short enough for a log line, and no use to anyone who reads it.
    pub fn log_id(&self) -> String {
        let pk = self.pk();
        pk.chars()
            .take(pk.find('#').map_or(0, |i| i + 13))
            .collect()
    }
}

/// 128 random bits from the OS-seeded keys of std's `RandomState`, plus the time: unique
/// across Lambda containers without another dependency.
fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digest = Sha256::new();
    digest.update(RandomState::new().hash_one(count).to_be_bytes());
    digest.update(RandomState::new().hash_one(count).to_be_bytes());
    digest.update(
        Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_be_bytes(),
    );
    hex::encode(&digest.finalize()[..16])
}

fn phone_pk(phone: &str) -> String {
    format!("{PHONE_PREFIX}{phone}")
}

/// What a push is about to do, written before Daraja is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntent {
    pub key: IntentKey,
    /// SHA-256 of the normalised request: the same key with another request is refused.
    pub fingerprint: String,
    /// Normalised MSISDN.
    pub phone: String,
    pub amount: u32,
    pub reference: String,
    pub description: Option<String>,
    pub at: DateTime<Utc>,
    /// How long the phone stays locked after a push that may have reached it.
    pub phone_lock: Duration,
}

impl NewIntent {
    fn expires_at(&self) -> i64 {
        (self.at + IDEMPOTENCY_TTL).timestamp()
    }
}

/// An answer kept for replay: its status and body exactly as first sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Value,
}

/// What [`PushLedger::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The intent is written and the phone locked: call Daraja.
    Started,
    /// The same key and request were answered before: send that answer again.
    Replay(StoredAnswer),
    /// The same key and request are being handled by another call right now.
    InProgress,
    /// The key was used with a different request.
    KeyReused,
    /// Another push holds the phone; its checkout id once Daraja accepted it.
    PhoneBusy { checkout_request_id: Option<String> },
}

/// How a push that Daraja did not accept ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Daraja refused it: nothing is on the phone. The answer is kept for replay and the
    /// phone is released.
    Refused(StoredAnswer),
    /// No prompt was sent and a retry may succeed (Daraja down, throttling, our credentials,
    /// another prompt on the phone): the intent is forgotten and the phone released, so a
    /// retry with the same key tries again.
    Retryable,
    /// Daraja may have sent the prompt: the answer is kept for replay and the phone stays
    /// locked for the whole window, so nothing can prompt it twice.
    OutcomeUnknown(StoredAnswer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    InProgress,
    Accepted,
    Refused,
    OutcomeUnknown,
}

impl IntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Accepted => "ACCEPTED",
            Self::Refused => "REFUSED",
            Self::OutcomeUnknown => "OUTCOME_UNKNOWN",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [
            Self::InProgress,
            Self::Accepted,
            Self::Refused,
            Self::OutcomeUnknown,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An intent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRecord {
    pub pk: String,
    pub status: IntentStatus,
    pub fingerprint: String,
    pub phone: String,
    pub amount: u32,
    pub reference: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Epoch seconds (the TTL attribute).
    pub expires_at: i64,
    pub answer: Option<StoredAnswer>,
    pub checkout_request_id: Option<String>,
    pub merchant_request_id: Option<String>,
}

/// A phone lock as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneLock {
    pub intent_pk: String,
    /// Epoch seconds; the lock is free from then on.
    pub locked_until: i64,
    pub checkout_request_id: Option<String>,
}

/// Where `POST /payments` keeps its intents and phone locks, and writes the pending payment.
#[async_trait]
pub trait PushLedger: Send + Sync {
    /// Writes the intent and takes the phone lock, both or neither.
    async fn begin(&self, intent: &NewIntent) -> Result<Begin, StoreError>;

    /// Daraja accepted the push: records the pending payment (with
    /// [`PaymentStore::record_pending`]'s rules, so it commutes with the callback), completes
    /// the intent with `answer` and tags the phone lock with the checkout id.
    async fn accepted(
        &self,
        intent: &NewIntent,
        payment: &NewPayment,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError>;

    /// Daraja did not accept the push; `at` is when that became known.
    async fn failed(
        &self,
        intent: &NewIntent,
        failure: &Failure,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The intent under `key`, unless absent or expired at `now`.
    async fn intent(
        &self,
        key: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError>;

    /// The lock on `phone`, unless absent or expired at `now`.
    async fn phone_lock(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PhoneLock>, StoreError>;
}

/// How long an intent may stay `IN_PROGRESS` before its push is taken for dead: the push
/// function's timeout (25 s in `template.yaml`) plus a margin for clock skew between
/// containers. A push running longer than its timeout was stopped by Lambda between
/// writing the intent and settling it, so nothing will ever settle it; without this bound
/// its key would answer `idempotency_in_progress` for the whole 24 h.
pub const ABANDONED_AFTER: Duration = Duration::seconds(60);

/// The answer for a key whose push was abandoned mid-flight. Daraja may have been called,
/// so it is the outcome-unknown timeout (`504 daraja_timeout`, `"outcome": "unknown"`), and
/// it is replayed, never retried: a second Daraja call could prompt the customer twice.
pub fn abandoned_answer() -> StoredAnswer {
    StoredAnswer {
        status: 504,
        body: serde_json::json!({ "error": {
            "code": "daraja_timeout",
            "message": "The request with this key stopped before Daraja's answer was recorded. The outcome is unknown: the customer may get a prompt. Do not push again to this phone before its prompt window has passed.",
            "outcome": "unknown",
        }}),
    }
}

/// What an existing intent means for a new `begin` with the same key.
///
/// An abandoned intent is answered without being rewritten: if its push was only slow,
/// not dead, its own settlement still lands and later replays give that answer.
fn begin_on_existing(existing: &IntentRecord, intent: &NewIntent) -> Result<Begin, StoreError> {
    if existing.fingerprint != intent.fingerprint {
        return Ok(Begin::KeyReused);
    }
    match (existing.status, &existing.answer) {
        (IntentStatus::InProgress, _) if intent.at - existing.created_at >= ABANDONED_AFTER => {
            Ok(Begin::Replay(abandoned_answer()))
        }
        (IntentStatus::InProgress, _) => Ok(Begin::InProgress),
        (_, Some(answer)) => Ok(Begin::Replay(answer.clone())),
        (_, None) => Err(StoreError::Corrupt {
            pk: existing.pk.clone(),
            detail: "a settled intent without its answer".into(),
        }),
    }
}

fn new_record(intent: &NewIntent) -> IntentRecord {
    IntentRecord {
        pk: intent.key.pk(),
        status: IntentStatus::InProgress,
        fingerprint: intent.fingerprint.clone(),
        phone: intent.phone.clone(),
        amount: intent.amount,
        reference: intent.reference.clone(),
        description: intent.description.clone(),
        created_at: timestamp::truncate(intent.at),
        updated_at: timestamp::truncate(intent.at),
        expires_at: intent.expires_at(),
        answer: None,
        checkout_request_id: None,
        merchant_request_id: None,
    }
}

// ---------------------------------------------------------------------------------------
// In memory

/// The in-memory ledger, with the payments in a [`MemoryStore`]. One lock over both maps
/// gives the all-or-nothing of a DynamoDB transaction.
#[derive(Debug)]
pub struct MemoryLedger {
    payments: Arc<MemoryStore>,
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    intents: HashMap<String, IntentRecord>,
    locks: HashMap<String, PhoneLock>,
}

impl MemoryLedger {
    pub fn new(payments: Arc<MemoryStore>) -> Self {
        Self {
            payments,
            state: Mutex::new(MemoryState::default()),
        }
    }

    pub fn payments(&self) -> &Arc<MemoryStore> {
        &self.payments
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // Every change below is a whole-value insert or remove: a panic leaves no half-write.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MemoryState {
    fn live_intent(&self, pk: &str, now: i64) -> Option<&IntentRecord> {
        self.intents.get(pk).filter(|i| i.expires_at > now)
    }

    fn live_lock(&self, phone: &str, now: i64) -> Option<&PhoneLock> {
        self.locks.get(phone).filter(|l| l.locked_until > now)
    }

    fn release(&mut self, intent: &NewIntent) {
        let pk = intent.key.pk();
        if self.locks.get(&intent.phone).map(|l| &l.intent_pk) == Some(&pk) {
            self.locks.remove(&intent.phone);
        }
    }

    fn settle(&mut self, intent: &NewIntent, status: IntentStatus, answer: &StoredAnswer) {
        if let Some(record) = self.intents.get_mut(&intent.key.pk()) {
            if record.status == IntentStatus::InProgress {
                record.status = status;
                record.answer = Some(answer.clone());
                record.updated_at = timestamp::truncate(Utc::now());
            }
        }
    }
}

#[async_trait]
impl PushLedger for MemoryLedger {
    async fn begin(&self, intent: &NewIntent) -> Result<Begin, StoreError> {
        let now = intent.at.timestamp();
        let mut state = self.state();
        if let Some(existing) = state.live_intent(&intent.key.pk(), now) {
            return begin_on_existing(existing, intent);
        }
        if let Some(lock) = state.live_lock(&intent.phone, now) {
            return Ok(Begin::PhoneBusy {
                checkout_request_id: lock.checkout_request_id.clone(),
            });
        }
        state.intents.insert(intent.key.pk(), new_record(intent));
        state.locks.insert(
            intent.phone.clone(),
            PhoneLock {
                intent_pk: intent.key.pk(),
                locked_until: (intent.at + intent.phone_lock).timestamp(),
                checkout_request_id: None,
            },
        );
        Ok(Begin::Started)
    }

    async fn accepted(
        &self,
        intent: &NewIntent,
        payment: &NewPayment,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        self.payments.record_pending(payment).await?;
        let mut state = self.state();
        state.settle(intent, IntentStatus::Accepted, answer);
        let pk = intent.key.pk();
        if let Some(record) = state.intents.get_mut(&pk) {
            record.checkout_request_id = Some(payment.checkout_request_id.clone());
            record.merchant_request_id = Some(payment.merchant_request_id.clone());
        }
        if let Some(lock) = state.locks.get_mut(&intent.phone) {
            if lock.intent_pk == pk {
                lock.checkout_request_id = Some(payment.checkout_request_id.clone());
                lock.locked_until = (payment.created_at + intent.phone_lock).timestamp();
            }
        }
        Ok(())
    }

    async fn failed(
        &self,
        intent: &NewIntent,
        failure: &Failure,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let pk = intent.key.pk();
        match failure {
            Failure::Refused(answer) => {
                state.settle(intent, IntentStatus::Refused, answer);
                state.release(intent);
            }
            Failure::Retryable => {
                if state.intents.get(&pk).map(|i| i.status) == Some(IntentStatus::InProgress) {
                    state.intents.remove(&pk);
                }
                state.release(intent);
            }
            Failure::OutcomeUnknown(answer) => {
                state.settle(intent, IntentStatus::OutcomeUnknown, answer);
                if let Some(lock) = state.locks.get_mut(&intent.phone) {
                    if lock.intent_pk == pk {
                        lock.locked_until = (at + intent.phone_lock).timestamp();
                    }
                }
            }
        }
        Ok(())
    }

    async fn intent(
        &self,
        key: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        Ok(self
            .state()
            .live_intent(&key.pk(), now.timestamp())
            .cloned())
    }

    async fn phone_lock(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PhoneLock>, StoreError> {
        Ok(self.state().live_lock(phone, now.timestamp()).cloned())
    }
}

// ---------------------------------------------------------------------------------------
// DynamoDB

/// The DynamoDB ledger, in the payments table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: Client,
    table: String,
    payments: DynamoStore,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let table = table.into();
        Self {
            payments: DynamoStore::new(client.clone(), table.clone()),
            client,
            table,
        }
    }

    pub fn payments(&self) -> &DynamoStore {
        &self.payments
    }

    /// One transaction. `Ok(Err(reasons))`: it was cancelled, one reason per item in order.
    async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<CancellationReason>>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(SdkError::ServiceError(failure)) => match failure.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    Ok(Err(cancelled.cancellation_reasons().to_vec()))
                }
                _ => Err(unavailable(SdkError::ServiceError(failure))),
            },
            Err(other) => Err(unavailable(other)),
        }
    }

    /// The rare path after a cancelled settle: each write on its own. A failed condition
    /// means the item is already past the state this write expects, which is fine.
    async fn each(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        for item in items {
            match self.transact(vec![item]).await? {
                Ok(()) => {}
                Err(reasons) if reasons.iter().all(condition_failed) => {}
                Err(reasons) => return Err(cancelled("a settle write", &reasons)),
            }
        }
        Ok(())
    }

    async fn settle(
        &self,
        items: Vec<TransactWriteItem>,
        payment: Option<&NewPayment>,
    ) -> Result<(), StoreError> {
        match self.transact(items.clone()).await? {
            Ok(()) => Ok(()),
            Err(reasons) => {
                tracing::warn!(
                    reasons = %codes(&reasons),
                    "push ledger transaction cancelled; writing its parts one by one"
                );
                let mut rest = items;
                if let Some(payment) = payment {
                    // The payment is the first item; the store's own rules handle a callback
                    // that came first.
                    rest.remove(0);
                    self.payments.record_pending(payment).await?;
                }
                self.each(rest).await
            }
        }
    }

    async fn get(&self, pk: String) -> Result<Option<Item>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(item::PK, s(pk))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item)
    }

    fn put(&self, item: Item, expr: Expr) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(expr.condition)
            .set_expression_attribute_names(expr.names.into_option())
            .set_expression_attribute_values(expr.values.into_option())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }

    fn update(&self, pk: String, expr: Expr) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(&self.table)
            .key(item::PK, s(pk))
            .update_expression(expr.update_expression())
            .set_condition_expression(expr.condition)
            .set_expression_attribute_names(expr.names.into_option())
            .set_expression_attribute_values(expr.values.into_option())
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    fn delete(&self, pk: String, expr: Expr) -> TransactWriteItem {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(item::PK, s(pk))
            .set_condition_expression(expr.condition)
            .set_expression_attribute_names(expr.names.into_option())
            .set_expression_attribute_values(expr.values.into_option())
            .build()
            .expect("table and key are set");
        TransactWriteItem::builder().delete(delete).build()
    }

    /// Updates the intent only while it is in progress.
    fn settle_intent(
        &self,
        intent: &NewIntent,
        status: IntentStatus,
        answer: &StoredAnswer,
        payment: Option<&NewPayment>,
    ) -> TransactWriteItem {
        let mut expr = Expr::default();
        expr.set(INTENT_STATUS, s(status.as_str()));
        expr.set(ANSWER_STATUS, n(answer.status));
        expr.set(ANSWER_BODY, s(answer.body.to_string()));
        expr.set(item::UPDATED_AT, time(Utc::now()));
        if let Some(payment) = payment {
            expr.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
            expr.set(item::MERCHANT_REQUEST_ID, s(&payment.merchant_request_id));
        }
        let st = expr.name(INTENT_STATUS);
        let open = expr.value("open", s(IntentStatus::InProgress.as_str()));
        expr.condition = Some(format!("{st} = {open}"));
        self.update(intent.key.pk(), expr)
    }

    /// Keeps the phone locked until `until`, only while this intent owns the lock.
    fn extend_lock(
        &self,
        intent: &NewIntent,
        until: DateTime<Utc>,
        checkout_request_id: Option<&str>,
    ) -> TransactWriteItem {
        let mut expr = Expr::default();
        expr.set(LOCKED_UNTIL, n(until.timestamp()));
        expr.set(EXPIRES_AT, n(until.timestamp()));
        expr.set(item::UPDATED_AT, time(Utc::now()));
        if let Some(id) = checkout_request_id {
            expr.set(item::CHECKOUT_REQUEST_ID, s(id));
        }
        expr.condition = Some(owned_by(&mut expr, intent));
        self.update(phone_pk(&intent.phone), expr)
    }

    fn release_lock(&self, intent: &NewIntent) -> TransactWriteItem {
        let mut expr = Expr::default();
        expr.condition = Some(owned_by(&mut expr, intent));
        self.delete(phone_pk(&intent.phone), expr)
    }

    /// The pending payment, written as [`PaymentStore::record_pending`] writes it when no
    /// item exists yet; any other case cancels the transaction and goes to that method.
    fn pending_payment(&self, payment: &NewPayment) -> TransactWriteItem {
        let mut expr = Expr::default();
        expr.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
        expr.set(item::MERCHANT_REQUEST_ID, s(&payment.merchant_request_id));
        expr.set(item::AMOUNT, n(payment.amount));
        expr.set(item::PHONE, s(&payment.phone));
        expr.set(item::REFERENCE, s(&payment.reference));
        if let Some(description) = &payment.description {
            expr.set(item::DESCRIPTION, s(description));
        }
        expr.set(item::CREATED_AT, time(payment.created_at));
        expr.set(item::UPDATED_AT, time(Utc::now()));
        expr.set(item::DETAILS_RECORDED, AttributeValue::Bool(true));
        expr.set(item::STATUS, s(PaymentStatus::Pending.as_str()));
        expr.set(item::PENDING_PK, s(item::PENDING_PARTITION));
        expr.set(
            item::PENDING_SK,
            s(item::index_sk(
                payment.created_at,
                &payment.checkout_request_id,
            )),
        );
        let pk = expr.name(item::PK);
        expr.condition = Some(format!("attribute_not_exists({pk})"));
        self.update(item::pk(&payment.checkout_request_id), expr)
    }
}

fn owned_by(expr: &mut Expr, intent: &NewIntent) -> String {
    let owner = expr.name(INTENT_PK);
    let mine = expr.value("mine", s(intent.key.pk()));
    format!("{owner} = {mine}")
}

#[async_trait]
impl PushLedger for DynamoLedger {
    async fn begin(&self, intent: &NewIntent) -> Result<Begin, StoreError> {
        let now = intent.at.timestamp();
        let record = new_record(intent);
        let mut intent_expr = Expr::default();
        let pk = intent_expr.name(item::PK);
        let expires = intent_expr.name(EXPIRES_AT);
        let now_value = intent_expr.value("now", n(now));
        intent_expr.condition = Some(format!(
            "attribute_not_exists({pk}) OR {expires} <= {now_value}"
        ));

        let until = (intent.at + intent.phone_lock).timestamp();
        let lock_item = HashMap::from([
            (item::PK.to_owned(), s(phone_pk(&intent.phone))),
            (RECORD_TYPE.to_owned(), s(LOCK_TYPE)),
            (INTENT_PK.to_owned(), s(intent.key.pk())),
            (LOCKED_UNTIL.to_owned(), n(until)),
            (EXPIRES_AT.to_owned(), n(until)),
            (item::CREATED_AT.to_owned(), time(intent.at)),
            (item::UPDATED_AT.to_owned(), time(intent.at)),
        ]);
        let mut lock_expr = Expr::default();
        let pk = lock_expr.name(item::PK);
        let locked = lock_expr.name(LOCKED_UNTIL);
        let now_value = lock_expr.value("now", n(now));
        lock_expr.condition = Some(format!(
            "attribute_not_exists({pk}) OR {locked} <= {now_value}"
        ));

        let items = vec![
            self.put(intent_item(&record), intent_expr),
            self.put(lock_item, lock_expr),
        ];
        let reasons = match self.transact(items).await? {
            Ok(()) => return Ok(Begin::Started),
            Err(reasons) => reasons,
        };
        let reason = |i: usize| reasons.get(i).and_then(CancellationReason::code);
        match reason(0) {
            Some(CONDITION_FAILED) => {
                let old = reasons[0].item().ok_or_else(|| StoreError::Corrupt {
                    pk: intent.key.pk(),
                    detail: "condition failed without the item".into(),
                })?;
                if let IntentKey::Generated(_) = intent.key {
                    return Err(StoreError::Corrupt {
                        pk: intent.key.pk(),
                        detail: "generated intent id already taken".into(),
                    });
                }
                return begin_on_existing(&intent_from_item(old)?, intent);
            }
            // Real DynamoDB cancels a transaction that races another on the same item.
            Some(TRANSACTION_CONFLICT) => return Ok(Begin::InProgress),
            _ => {}
        }
        match reason(1) {
            Some(CONDITION_FAILED) => Ok(Begin::PhoneBusy {
                checkout_request_id: reasons[1]
                    .item()
                    .and_then(|old| string(old, item::CHECKOUT_REQUEST_ID)),
            }),
            Some(TRANSACTION_CONFLICT) => Ok(Begin::PhoneBusy {
                checkout_request_id: None,
            }),
            _ => Err(cancelled("the intent write", &reasons)),
        }
    }

    async fn accepted(
        &self,
        intent: &NewIntent,
        payment: &NewPayment,
        answer: &StoredAnswer,
    ) -> Result<(), StoreError> {
        let items = vec![
            self.pending_payment(payment),
            self.settle_intent(intent, IntentStatus::Accepted, answer, Some(payment)),
            self.extend_lock(
                intent,
                payment.created_at + intent.phone_lock,
                Some(&payment.checkout_request_id),
            ),
        ];
        self.settle(items, Some(payment)).await
    }

    async fn failed(
        &self,
        intent: &NewIntent,
        failure: &Failure,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let items = match failure {
            Failure::Refused(answer) => vec![
                self.settle_intent(intent, IntentStatus::Refused, answer, None),
                self.release_lock(intent),
            ],
            Failure::Retryable => {
                let mut expr = Expr::default();
                let st = expr.name(INTENT_STATUS);
                let open = expr.value("open", s(IntentStatus::InProgress.as_str()));
                expr.condition = Some(format!("{st} = {open}"));
                vec![
                    self.delete(intent.key.pk(), expr),
                    self.release_lock(intent),
                ]
            }
            Failure::OutcomeUnknown(answer) => vec![
                self.settle_intent(intent, IntentStatus::OutcomeUnknown, answer, None),
                self.extend_lock(intent, at + intent.phone_lock, None),
            ],
        };
        self.settle(items, None).await
    }

    async fn intent(
        &self,
        key: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        match self.get(key.pk()).await? {
            Some(found) => {
                Ok(Some(intent_from_item(&found)?).filter(|i| i.expires_at > now.timestamp()))
            }
            None => Ok(None),
        }
    }

    async fn phone_lock(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PhoneLock>, StoreError> {
        let Some(found) = self.get(phone_pk(phone)).await? else {
            return Ok(None);
        };
        let lock = PhoneLock {
            intent_pk: string(&found, INTENT_PK).unwrap_or_default(),
            locked_until: number(&found, LOCKED_UNTIL).unwrap_or_default(),
            checkout_request_id: string(&found, item::CHECKOUT_REQUEST_ID),
        };
        Ok(Some(lock).filter(|l| l.locked_until > now.timestamp()))
    }
}

const CONDITION_FAILED: &str = "ConditionalCheckFailed";
const TRANSACTION_CONFLICT: &str = "TransactionConflict";

fn condition_failed(reason: &CancellationReason) -> bool {
    matches!(reason.code(), Some(CONDITION_FAILED | "None") | None)
}

fn codes(reasons: &[CancellationReason]) -> String {
    reasons
        .iter()
        .map(|r| r.code().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(",")
}

fn cancelled(what: &str, reasons: &[CancellationReason]) -> StoreError {
    StoreError::Unavailable(format!("{what} was cancelled ({})", codes(reasons)).into())
}

fn unavailable<E>(error: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Unavailable(DisplayErrorContext(&error).to_string().into())
}

fn intent_item(record: &IntentRecord) -> Item {
    let mut item = HashMap::from([
        (item::PK.to_owned(), s(&record.pk)),
        (RECORD_TYPE.to_owned(), s(INTENT_TYPE)),
        (INTENT_STATUS.to_owned(), s(record.status.as_str())),
        (FINGERPRINT.to_owned(), s(&record.fingerprint)),
        (item::PHONE.to_owned(), s(&record.phone)),
        (item::AMOUNT.to_owned(), n(record.amount)),
        (item::REFERENCE.to_owned(), s(&record.reference)),
        (item::CREATED_AT.to_owned(), time(record.created_at)),
        (item::UPDATED_AT.to_owned(), time(record.updated_at)),
        (EXPIRES_AT.to_owned(), n(record.expires_at)),
    ]);
    if let Some(description) = &record.description {
        item.insert(item::DESCRIPTION.to_owned(), s(description));
    }
    item
}

fn intent_from_item(found: &Item) -> Result<IntentRecord, StoreError> {
    let pk = string(found, item::PK).unwrap_or_default();
    let corrupt = |detail: &str| StoreError::Corrupt {
        pk: pk.clone(),
        detail: detail.to_owned(),
    };
    let required = |name: &str| string(found, name).ok_or_else(|| corrupt(name));
    let at = |name: &str| {
        required(name).and_then(|text| timestamp::parse(&text).map_err(|_| corrupt(name)))
    };
    let status = IntentStatus::parse(&required(INTENT_STATUS)?)
        .ok_or_else(|| corrupt("unknown intent_status"))?;
    let answer = match (
        number::<u16>(found, ANSWER_STATUS),
        string(found, ANSWER_BODY),
    ) {
        (Some(status), Some(body)) => Some(StoredAnswer {
            status,
            body: serde_json::from_str(&body).map_err(|_| corrupt(ANSWER_BODY))?,
        }),
        _ => None,
    };
    Ok(IntentRecord {
        status,
        fingerprint: required(FINGERPRINT)?,
        phone: required(item::PHONE)?,
        amount: number(found, item::AMOUNT).ok_or_else(|| corrupt(item::AMOUNT))?,
        reference: required(item::REFERENCE)?,
        description: string(found, item::DESCRIPTION),
        created_at: at(item::CREATED_AT)?,
        updated_at: at(item::UPDATED_AT)?,
        expires_at: number(found, EXPIRES_AT).ok_or_else(|| corrupt(EXPIRES_AT))?,
        answer,
        checkout_request_id: string(found, item::CHECKOUT_REQUEST_ID),
        merchant_request_id: string(found, item::MERCHANT_REQUEST_ID),
        pk: pk.clone(),
    })
}

fn string(found: &Item, name: &str) -> Option<String> {
    match found.get(name) {
        Some(AttributeValue::S(text)) => Some(text.clone()),
        _ => None,
    }
}

fn number<T: std::str::FromStr>(found: &Item, name: &str) -> Option<T> {
    match found.get(name) {
        Some(AttributeValue::N(text)) => text.parse().ok(),
        _ => None,
    }
}

/// Expression placeholders, registered only when used (DynamoDB rejects unused ones).
#[derive(Debug, Default)]
struct Expr {
    set: Vec<String>,
    condition: Option<String>,
    names: Placeholders<String>,
    values: Placeholders<AttributeValue>,
}

#[derive(Debug)]
struct Placeholders<T>(HashMap<String, T>);

impl<T> Default for Placeholders<T> {
    fn default() -> Self {
        Self(HashMap::new())
    }
}

impl<T> Placeholders<T> {
    fn into_option(self) -> Option<HashMap<String, T>> {
        Some(self.0).filter(|map| !map.is_empty())
    }
}

impl Expr {
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.0.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    fn value(&mut self, key: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{key}");
        self.values.0.insert(placeholder.clone(), value);
        placeholder
    }

    fn set(&mut self, attr: &str, value: AttributeValue) {
        let name = self.name(attr);
        let value = self.value(attr, value);
        self.set.push(format!("{name} = {value}"));
    }

    fn update_expression(&self) -> String {
        format!("SET {}", self.set.join(", "))
    }
}

/// The behaviour every [`PushLedger`] must show, run against the in-memory ledger in this
/// crate's unit tests and against DynamoDB in the integration tests. Use
/// [`push_ledger_conformance!`](crate::push_ledger_conformance) with an async function that
/// returns a fresh ledger and the payment store it writes to.
pub mod conformance {
    use std::sync::Arc;

    use chrono::{DateTime, Duration, Utc};
    use serde_json::json;

    use super::{
        abandoned_answer, Begin, Failure, IntentKey, IntentStatus, NewIntent, PushLedger,
        StoredAnswer, ABANDONED_AFTER,
    };
    use crate::payment::{timestamp, NewPayment, PaymentStatus};
    use crate::store::conformance::success;
    use crate::store::PaymentStore;

    /// Expands to one `#[tokio::test]` per rule, each on a ledger from `$make` (an async fn
    /// returning `(Arc<dyn PushLedger>, Arc<dyn PaymentStore>)`, fresh and empty).
    #[macro_export]
    macro_rules! push_ledger_conformance {
        ($make:path) => {
            $crate::push_ledger_conformance!(@rules $make;
                same_key_while_in_progress_is_in_progress,
                accepted_answer_is_replayed_with_its_records,
                same_key_with_another_request_is_key_reused,
                expired_key_is_forgotten,
                busy_phone_reports_the_open_checkout_id,
                phone_lock_frees_after_its_window,
                refusal_keeps_the_answer_and_frees_the_phone,
                retryable_failure_forgets_the_key_and_frees_the_phone,
                outcome_unknown_keeps_the_phone_locked,
                abandoned_in_progress_key_answers_outcome_unknown,
                concurrent_begins_with_one_key_start_once,
                concurrent_begins_on_one_phone_start_once,
                accepted_after_the_callback_keeps_the_result,
            );
        };
        (@rules $make:path; $($rule:ident),* $(,)?) => {
            $(
                #[tokio::test]
                async fn $rule() {
                    let (ledger, payments) = $make().await;
                    $crate::store::intent::conformance::$rule(ledger, payments).await;
                }
            )*
        };
    }

    type Ledger = Arc<dyn PushLedger>;
    type Payments = Arc<dyn PaymentStore>;

    const WINDOW: i64 = 120;

    fn now() -> DateTime<Utc> {
        timestamp::truncate(Utc::now())
    }

    /// An intent for `key` (`None`: generated) on `phone`, at `at`.
    pub fn intent(key: Option<&str>, phone: &str, at: DateTime<Utc>) -> NewIntent {
        NewIntent {
            key: key.map_or_else(IntentKey::generated, IntentKey::idempotency),
            fingerprint: format!("fp-{phone}-100"),
            phone: phone.to_owned(),
            amount: 100,
            reference: "INV001".to_owned(),
            description: Some("Order 1".to_owned()),
            at,
            phone_lock: Duration::seconds(WINDOW),
        }
    }

    fn payment(id: &str, intent: &NewIntent) -> NewPayment {
        NewPayment {
            checkout_request_id: id.to_owned(),
            merchant_request_id: "29115-34620561-1".to_owned(),
            amount: intent.amount,
            phone: intent.phone.clone(),
            reference: intent.reference.clone(),
            description: intent.description.clone(),
            created_at: intent.at + Duration::seconds(1),
        }
    }

    fn answer(status: u16, code: &str) -> StoredAnswer {
        StoredAnswer {
            status,
            body: json!({ "code": code, "n": [1, 2] }),
        }
    }

    async fn begin(ledger: &Ledger, intent: &NewIntent) -> Begin {
        ledger
            .begin(intent)
            .await
            .unwrap_or_else(|e| panic!("begin: {e}"))
    }

    pub async fn same_key_while_in_progress_is_in_progress(ledger: Ledger, _: Payments) {
        let first = intent(Some("k1"), "254708000001", now());
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        assert_eq!(begin(&ledger, &first).await, Begin::InProgress);
        let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
        assert_eq!(stored.status, IntentStatus::InProgress);
        assert_eq!(stored.fingerprint, first.fingerprint);
        assert_eq!(
            stored.expires_at,
            (first.at + Duration::hours(24)).timestamp()
        );
    }

    pub async fn accepted_answer_is_replayed_with_its_records(ledger: Ledger, payments: Payments) {
        let first = intent(Some("k1"), "254708000002", now());
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        let accepted = answer(202, "ok");
        ledger
            .accepted(&first, &payment("ws_CO_A1", &first), &accepted)
            .await
            .unwrap();
        assert_eq!(
            begin(&ledger, &first).await,
            Begin::Replay(accepted.clone())
        );
        let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
        assert_eq!(stored.status, IntentStatus::Accepted);
        assert_eq!(stored.answer, Some(accepted));
        assert_eq!(stored.checkout_request_id.as_deref(), Some("ws_CO_A1"));
        let lock = ledger
            .phone_lock(&first.phone, now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lock.checkout_request_id.as_deref(), Some("ws_CO_A1"));
        assert_eq!(lock.intent_pk, first.key.pk());
        let record = payments.get("ws_CO_A1").await.unwrap().unwrap();
        assert_eq!(record.status, PaymentStatus::Pending);
        assert_eq!(record.amount, Some(100));
        assert_eq!(record.phone.as_deref(), Some("254708000002"));
        assert!(record.details_recorded);
    }

    pub async fn same_key_with_another_request_is_key_reused(ledger: Ledger, _: Payments) {
        let first = intent(Some("k1"), "254708000003", now());
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        let mut other = first.clone();
        other.fingerprint = "another".into();
        assert_eq!(begin(&ledger, &other).await, Begin::KeyReused);
        ledger
            .failed(&first, &Failure::Refused(answer(502, "no")), now())
            .await
            .unwrap();
        assert_eq!(begin(&ledger, &other).await, Begin::KeyReused);
    }

    pub async fn expired_key_is_forgotten(ledger: Ledger, _: Payments) {
        let old = intent(Some("k1"), "254708000004", now() - Duration::hours(25));
        assert_eq!(begin(&ledger, &old).await, Begin::Started);
        ledger
            .failed(&old, &Failure::Refused(answer(502, "no")), old.at)
            .await
            .unwrap();
        // TTL deletion lags: the item may still be there, but it counts as gone.
        assert_eq!(ledger.intent(&old.key, now()).await.unwrap(), None);
        let mut again = intent(Some("k1"), "254708000004", now());
        again.fingerprint = "a new request".into();
        assert_eq!(begin(&ledger, &again).await, Begin::Started);
    }

    pub async fn busy_phone_reports_the_open_checkout_id(ledger: Ledger, _: Payments) {
        let t = now();
        let first = intent(Some("k1"), "254708000005", t);
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        let second = intent(Some("k2"), "254708000005", t + Duration::seconds(1));
        assert_eq!(
            begin(&ledger, &second).await,
            Begin::PhoneBusy {
                checkout_request_id: None
            }
        );
        ledger
            .accepted(&first, &payment("ws_CO_B1", &first), &answer(202, "ok"))
            .await
            .unwrap();
        let third = intent(None, "254708000005", t + Duration::seconds(2));
        assert_eq!(
            begin(&ledger, &third).await,
            Begin::PhoneBusy {
                checkout_request_id: Some("ws_CO_B1".into())
            }
        );
        // Nothing was written for the refused ones: the key is still free.
        assert_eq!(ledger.intent(&second.key, t).await.unwrap(), None);
        let elsewhere = intent(Some("k2"), "254708000006", t + Duration::seconds(3));
        assert_eq!(begin(&ledger, &elsewhere).await, Begin::Started);
    }

    pub async fn phone_lock_frees_after_its_window(ledger: Ledger, _: Payments) {
        let t = now() - Duration::seconds(2 * WINDOW);
        let first = intent(Some("k1"), "254708000007", t);
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        ledger
            .accepted(&first, &payment("ws_CO_C1", &first), &answer(202, "ok"))
            .await
            .unwrap();
        // The window counts from the acceptance (one second after the intent).
        let inside = intent(None, "254708000007", t + Duration::seconds(WINDOW));
        assert!(matches!(
            begin(&ledger, &inside).await,
            Begin::PhoneBusy { .. }
        ));
        let after = intent(None, "254708000007", t + Duration::seconds(WINDOW + 1));
        assert_eq!(begin(&ledger, &after).await, Begin::Started);
    }

    pub async fn refusal_keeps_the_answer_and_frees_the_phone(ledger: Ledger, _: Payments) {
        let first = intent(Some("k1"), "254708000008", now());
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        let refused = answer(502, "daraja_rejected");
        ledger
            .failed(&first, &Failure::Refused(refused.clone()), now())
            .await
            .unwrap();
        assert_eq!(begin(&ledger, &first).await, Begin::Replay(refused));
        assert_eq!(ledger.phone_lock(&first.phone, now()).await.unwrap(), None);
        let next = intent(Some("k2"), "254708000008", now());
        assert_eq!(begin(&ledger, &next).await, Begin::Started);
        let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
        assert_eq!(stored.status, IntentStatus::Refused);
    }

    pub async fn retryable_failure_forgets_the_key_and_frees_the_phone(
        ledger: Ledger,
        _: Payments,
    ) {
        let first = intent(Some("k1"), "254708000009", now());
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        ledger
            .failed(&first, &Failure::Retryable, now())
            .await
            .unwrap();
        assert_eq!(ledger.intent(&first.key, now()).await.unwrap(), None);
        assert_eq!(ledger.phone_lock(&first.phone, now()).await.unwrap(), None);
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
    }

    pub async fn outcome_unknown_keeps_the_phone_locked(ledger: Ledger, _: Payments) {
        let t = now() - Duration::seconds(3 * WINDOW);
        let first = intent(Some("k1"), "254708000010", t);
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        let unknown = answer(504, "daraja_timeout");
        let known_at = t + Duration::seconds(15);
        ledger
            .failed(&first, &Failure::OutcomeUnknown(unknown.clone()), known_at)
            .await
            .unwrap();
        assert_eq!(begin(&ledger, &first).await, Begin::Replay(unknown));
        let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
        assert_eq!(stored.status, IntentStatus::OutcomeUnknown);
        // Locked for a whole window from when the timeout was seen, not from the start.
        let inside = intent(
            None,
            "254708000010",
            known_at + Duration::seconds(WINDOW - 1),
        );
        assert_eq!(
            begin(&ledger, &inside).await,
            Begin::PhoneBusy {
                checkout_request_id: None
            }
        );
        let after = intent(None, "254708000010", known_at + Duration::seconds(WINDOW));
        assert_eq!(begin(&ledger, &after).await, Begin::Started);
    }

    pub async fn abandoned_in_progress_key_answers_outcome_unknown(ledger: Ledger, _: Payments) {
        let t = now() - Duration::seconds(3 * WINDOW);
        let first = intent(Some("k1"), "254708000014", t);
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        // The push that wrote the intent never settled it (its process died).
        let mut retry = first.clone();
        retry.at = t + ABANDONED_AFTER - Duration::seconds(1);
        assert_eq!(begin(&ledger, &retry).await, Begin::InProgress);
        retry.at = t + ABANDONED_AFTER;
        let Begin::Replay(replayed) = begin(&ledger, &retry).await else {
            panic!("an abandoned key must replay an answer, never start a second push");
        };
        assert_eq!(replayed, abandoned_answer());
        assert_eq!(replayed.status, 504);
        assert_eq!(replayed.body["error"]["code"], "daraja_timeout");
        assert_eq!(replayed.body["error"]["outcome"], "unknown");
        // Another request under the key is still refused as such.
        let mut other = retry.clone();
        other.fingerprint = "fp-other".to_owned();
        assert_eq!(begin(&ledger, &other).await, Begin::KeyReused);
        // The phone stays protected by its own lock, whatever the key answers.
        let elsewhere = intent(Some("k2"), "254708000014", retry.at);
        assert_eq!(
            begin(&ledger, &elsewhere).await,
            Begin::PhoneBusy {
                checkout_request_id: None
            }
        );
        // The intent itself is not rewritten: a push that was only slow still settles it,
        // and its own answer is replayed from then on.
        let stored = ledger.intent(&first.key, retry.at).await.unwrap().unwrap();
        assert_eq!(stored.status, IntentStatus::InProgress);
        let accepted = answer(202, "ok");
        ledger
            .accepted(&first, &payment("ws_CO_E1", &first), &accepted)
            .await
            .unwrap();
        retry.at += Duration::seconds(1);
        assert_eq!(begin(&ledger, &retry).await, Begin::Replay(accepted));
    }

    pub async fn concurrent_begins_with_one_key_start_once(ledger: Ledger, _: Payments) {
        let one = intent(Some("k1"), "254708000011", now());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (ledger, one) = (ledger.clone(), one.clone());
                tokio::spawn(async move { ledger.begin(&one).await })
            })
            .collect();
        let mut started = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Begin::Started => started += 1,
                Begin::InProgress => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(started, 1);
    }

    pub async fn concurrent_begins_on_one_phone_start_once(ledger: Ledger, _: Payments) {
        let t = now();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let ledger = ledger.clone();
                let each = intent(None, "254708000012", t);
                tokio::spawn(async move { ledger.begin(&each).await })
            })
            .collect();
        let mut started = 0;
        for task in tasks {
            match task.await.unwrap().unwrap() {
                Begin::Started => started += 1,
                Begin::PhoneBusy { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(started, 1);
    }

    pub async fn accepted_after_the_callback_keeps_the_result(ledger: Ledger, payments: Payments) {
        let first = intent(Some("k1"), "254708000013", now());
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        payments
            .apply_result(&success("ws_CO_D1", "100.00", Some(100)))
            .await
            .unwrap();
        let accepted = answer(202, "ok");
        ledger
            .accepted(&first, &payment("ws_CO_D1", &first), &accepted)
            .await
            .unwrap();
        let record = payments.get("ws_CO_D1").await.unwrap().unwrap();
        assert_eq!(record.status, PaymentStatus::Completed);
        assert_eq!(record.amount, Some(100));
        assert!(record.details_recorded);
        assert!(payments.orphans(10).await.unwrap().is_empty());
        assert_eq!(begin(&ledger, &first).await, Begin::Replay(accepted));
        let lock = ledger
            .phone_lock(&first.phone, now())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(lock.checkout_request_id.as_deref(), Some("ws_CO_D1"));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{MemoryLedger, PushLedger};
    use crate::store::{MemoryStore, PaymentStore};

    async fn ledger() -> (Arc<dyn PushLedger>, Arc<dyn PaymentStore>) {
        let payments = Arc::new(MemoryStore::new());
        (Arc::new(MemoryLedger::new(payments.clone())), payments)
    }

    crate::push_ledger_conformance!(ledger);

    #[test]
    fn abandoned_answer_is_the_outcome_unknown_timeout() {
        let timeout = crate::api::ApiError::from_daraja(&crate::daraja::DarajaError::TimedOut);
        let answer = super::abandoned_answer();
        assert_eq!(answer.status, timeout.status);
        assert_eq!(
            answer.body["error"]["code"],
            timeout.body()["error"]["code"]
        );
        assert_eq!(
            answer.body["error"]["outcome"],
            timeout.body()["error"]["outcome"]
        );
    }

    #[test]
    fn keys_are_stored_hashed_and_ids_are_unique() {
        let key = super::IntentKey::idempotency("order-1001");
        assert!(!key.pk().contains("order-1001"));
        assert!(key.pk().starts_with("IDEM#"));
        assert_eq!(key, super::IntentKey::idempotency("order-1001"));
        assert_ne!(super::IntentKey::generated(), super::IntentKey::generated());
    }
}
