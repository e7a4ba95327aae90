//! The DynamoDB [`PushLedger`], in the payments table, next to the payments.
//!
//! | `pk` | what |
//! |---|---|
//! | `PHONE#<msisdn>` | the phone lock: owner `intent_pk`, `locked_until` (epoch seconds), the push's `callback_nonce`; TTL `expires_at` = `locked_until`. Without a key it is the intent too (`intent_pk` = `INTENT#<generated id>`, the intent's attributes) |
//! | `IDEM#<sha256 of the Idempotency-Key>` | the intent of a keyed push: request fingerprint and details, `intent_status`, the answer for replay, the checkout id; TTL `expires_at` = 24 h |
//!
//! An accepted push writes only its payment, with `push_intent` (the owner's key) and
//! `answer_body`: the `intent-index` leads from an intent still in progress to it.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use payments::intent::{
    begin_on_existing, new_record, phone_pk, Begin, Failure, IntentKey, IntentRecord, IntentStatus,
    NewIntent, PhoneLock, PushLedger, Recorded, StoredAnswer, DEFAULT_SETTLE_TIME, IDEMPOTENCY_TTL,
};
use payments::payment::NewPayment;
use payments::{PaymentStore, PendingWrite, StoreError};

use crate::error::{cancelled, codes, condition_failed, CONDITION_FAILED, TRANSACTION_CONFLICT};
use crate::expr::Expr;
use crate::item::{self, n, s, time, Item, Reader, ANSWER_BODY, EXPIRES_AT};
use crate::payments::{DynamoStore, PushTag};
use crate::table::Table;

const RECORD_TYPE: &str = "record_type";
const INTENT_TYPE: &str = "PUSH_INTENT";
const LOCK_TYPE: &str = "PHONE_LOCK";
const INTENT_STATUS: &str = "intent_status";
const FINGERPRINT: &str = "request_fingerprint";
const ANSWER_STATUS: &str = "answer_status";
const INTENT_PK: &str = "intent_pk";
const LOCKED_UNTIL: &str = "locked_until";
const SETTLE_BY: &str = "settle_by";

/// The DynamoDB ledger, in the payments table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    table: Table,
    payments: DynamoStore,
}

/// Whether the intent `intent_pk` is stored on its phone's lock (a push without a key) rather
/// than in an item of its own.
fn on_lock(intent_pk: &str) -> bool {
    intent_pk.starts_with("INTENT#")
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let table = Table::new(client.clone(), table);
        Self {
            payments: DynamoStore::new(client, table.name()),
            table,
        }
    }

    /// Dates the payment writes with `clock` (their `updated_at`); the payment's `created_at`
    /// is the acceptance time the push gives it.
    #[must_use]
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn daraja::Clock>) -> Self {
        self.payments = self.payments.with_clock(clock);
        self
    }

    /// The rare path after a cancelled transaction: each write on its own. A failed condition
    /// means the item is already past the state this write expects, which is fine.
    async fn each(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        for item in items {
            match self.table.transact(vec![item]).await? {
                Ok(()) => {}
                Err(reasons) if reasons.iter().all(condition_failed) => {}
                Err(reasons) => return Err(cancelled("a settle write", &reasons)),
            }
        }
        Ok(())
    }

    /// Writes `items` (a keyed push's intent and its lock) in one transaction, or one by one
    /// when it is cancelled.
    async fn settle(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        if let Err(reasons) = self.table.transact(items.clone()).await? {
            tracing::warn!(
                reasons = %codes(&reasons),
                "push ledger transaction cancelled; writing its parts one by one"
            );
            self.each(items).await?;
        }
        Ok(())
    }

    /// The intent's settlement, only while it is in progress (and, on a lock, while it is this
    /// intent's).
    fn settle_expr(
        intent: &NewIntent,
        status: IntentStatus,
        answer: &StoredAnswer,
        at: DateTime<Utc>,
    ) -> Expr {
        let mut expr = Expr::new();
        expr.set(INTENT_STATUS, s(status.as_str()));
        expr.set(ANSWER_STATUS, n(answer.status));
        expr.set(ANSWER_BODY, s(answer.body.to_string()));
        expr.set(item::UPDATED_AT, time(at));
        let st = expr.name(INTENT_STATUS);
        let open = expr.value("open", s(IntentStatus::InProgress.as_str()));
        let mut condition = format!("{st} = {open}");
        if let IntentKey::Generated(_) = intent.key {
            condition = format!("{condition} AND {}", owned_by(&mut expr, intent));
        }
        expr.condition(condition);
        expr
    }

    /// Keeps the phone locked until `until`, only while this intent owns the lock.
    fn extend(expr: &mut Expr, until: DateTime<Utc>) {
        expr.set(LOCKED_UNTIL, n(until.timestamp()));
        expr.set(EXPIRES_AT, n(until.timestamp()));
    }

    /// The payment an accepted push wrote for the intent `intent_pk`, as the intent-index
    /// projects it.
    async fn accepted_payment(&self, intent_pk: &str) -> Result<Option<Item>, StoreError> {
        let found = self
            .table
            .query_partition(item::INTENT_INDEX, (item::PUSH_INTENT, intent_pk), None, 1)
            .await?;
        Ok(found.into_iter().next())
    }

    /// The intent as it stands: one still in progress without a checkout id is accepted when
    /// a payment names it (the push wrote only that).
    async fn resolved(&self, mut intent: IntentRecord) -> Result<IntentRecord, StoreError> {
        if intent.status != IntentStatus::InProgress || intent.checkout_request_id.is_some() {
            return Ok(intent);
        }
        let Some(payment) = self.accepted_payment(&intent.pk).await? else {
            return Ok(intent);
        };
        let payment = Reader::new(&payment);
        intent.status = IntentStatus::Accepted;
        intent.checkout_request_id = payment.string(item::CHECKOUT_REQUEST_ID)?;
        intent.merchant_request_id = payment.string(item::MERCHANT_REQUEST_ID)?;
        intent.answer = Some(StoredAnswer {
            status: 202,
            body: serde_json::from_str(&payment.required(ANSWER_BODY)?)
                .map_err(|_| payment.corrupt("answer_body is not JSON"))?,
        });
        Ok(intent)
    }

    /// The checkout id of the push holding `lock`: on the lock once linked, else on the
    /// payment that push wrote.
    async fn open_checkout(&self, lock: &Item) -> Result<Option<String>, StoreError> {
        let lock = Reader::new(lock);
        if let Some(id) = lock.string(item::CHECKOUT_REQUEST_ID)? {
            return Ok(Some(id));
        }
        let Some(owner) = lock.string(INTENT_PK)? else {
            return Ok(None);
        };
        match self.accepted_payment(&owner).await? {
            Some(payment) => Reader::new(&payment).string(item::CHECKOUT_REQUEST_ID),
            None => Ok(None),
        }
    }

    /// The answer to a `begin` that found the phone locked by `old` (or, when the item is not
    /// handed back, by a concurrent push).
    async fn busy(&self, old: Option<&Item>) -> Result<Begin, StoreError> {
        let checkout_request_id = match old {
            Some(old) => self.open_checkout(old).await?,
            None => None,
        };
        Ok(Begin::PhoneBusy {
            checkout_request_id,
        })
    }
}

fn owned_by(expr: &mut Expr, intent: &NewIntent) -> String {
    let owner = expr.name(INTENT_PK);
    let mine = expr.value("mine", s(intent.key.pk()));
    format!("{owner} = {mine}")
}

/// The condition that the item is this very call's write: the same key is not enough (a retry
/// with the key is another call), its callback URL's nonce, minted per call, is. `None` for an
/// intent without a nonce.
fn this_call(expr: &mut Expr, intent: &NewIntent) -> Option<String> {
    let nonce = intent.callback_nonce.as_ref()?;
    Some(expr.equals(item::CALLBACK_NONCE, "this_call", s(nonce)))
}

/// What only the call that took the lock may free: owned by its intent, and by this call.
fn release_lock(intent: &NewIntent) -> Expr {
    let mut expr = Expr::new();
    let mut owned = owned_by(&mut expr, intent);
    if let Some(call) = this_call(&mut expr, intent) {
        owned = format!("{owned} AND {call}");
    }
    expr.condition(owned);
    expr
}

/// The phone lock `begin` puts: without a key, the intent itself.
fn lock_item(intent: &NewIntent) -> Item {
    let until = intent.lock_until().timestamp();
    let mut lock = match intent.key {
        IntentKey::Generated(_) => intent_item(&new_record(intent)),
        IntentKey::Idempotency(_) => Item::new(),
    };
    lock.extend([
        (item::PK.to_owned(), s(phone_pk(intent.phone()))),
        (RECORD_TYPE.to_owned(), s(LOCK_TYPE)),
        (INTENT_PK.to_owned(), s(intent.key.pk())),
        (LOCKED_UNTIL.to_owned(), n(until)),
        (EXPIRES_AT.to_owned(), n(until)),
        (item::CREATED_AT.to_owned(), time(intent.at)),
        (item::UPDATED_AT.to_owned(), time(intent.at)),
    ]);
    written_by(&mut lock, intent);
    lock
}

/// Marks `written` as this call's (its callback URL's nonce): what [`this_call`] checks.
fn written_by(written: &mut Item, intent: &NewIntent) {
    if let Some(nonce) = &intent.callback_nonce {
        written.insert(item::CALLBACK_NONCE.to_owned(), s(nonce));
    }
}

/// The condition on the lock `begin` puts: free, or past its time.
fn lock_free(now: i64) -> Expr {
    let mut expr = Expr::new();
    let pk = expr.name(item::PK);
    let locked = expr.name(LOCKED_UNTIL);
    let now_value = expr.value("now", n(now));
    expr.condition(format!(
        "attribute_not_exists({pk}) OR {locked} <= {now_value}"
    ));
    expr
}

#[async_trait]
impl PushLedger for DynamoLedger {
    async fn begin(&self, intent: &NewIntent) -> Result<Begin, StoreError> {
        let now = intent.at.timestamp();
        if let IntentKey::Generated(_) = intent.key {
            // One item to reserve, the phone: no transaction.
            return match self.table.put_if(lock_item(intent), lock_free(now)).await? {
                Ok(_) => Ok(Begin::Started),
                Err(old) => self.busy(old.as_ref()).await,
            };
        }
        let mut intent_expr = Expr::new();
        let pk = intent_expr.name(item::PK);
        let expires = intent_expr.name(EXPIRES_AT);
        let now_value = intent_expr.value("now", n(now));
        intent_expr.condition(format!(
            "attribute_not_exists({pk}) OR {expires} <= {now_value}"
        ));
        // The intent carries this call's nonce, so that only this call takes it back.
        let mut record = intent_item(&new_record(intent));
        written_by(&mut record, intent);
        let items = vec![
            self.table.put(record, intent_expr),
            self.table.put(lock_item(intent), lock_free(now)),
        ];
        let reasons = match self.table.transact(items).await? {
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
                let existing = self.resolved(intent_from_item(old)?).await?;
                return begin_on_existing(&existing, intent);
            }
            // Real DynamoDB cancels a transaction that races another on the same item.
            Some(TRANSACTION_CONFLICT) => return Ok(Begin::InProgress),
            _ => {}
        }
        match reason(1) {
            Some(CONDITION_FAILED) => self.busy(reasons[1].item()).await,
            Some(TRANSACTION_CONFLICT) => self.busy(None).await,
            _ => Err(cancelled("the intent write", &reasons)),
        }
    }

    async fn accepted(
        &self,
        intent: &NewIntent,
        payment: &NewPayment,
        answer: &StoredAnswer,
    ) -> Result<Recorded, StoreError> {
        let push = PushTag {
            intent_pk: intent.key.pk(),
            answer_body: answer.body.to_string(),
        };
        let written = self
            .payments
            .record_pending_for(payment, Some(&push))
            .await?;
        Ok(Recorded::from(&written))
    }

    async fn failed(
        &self,
        intent: &NewIntent,
        failure: &Failure,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let lock = phone_pk(intent.phone());
        if let IntentKey::Generated(_) = intent.key {
            // The lock is the intent: one write, nothing kept for a replay nobody can ask for.
            match failure {
                Failure::Refused(_) | Failure::Retryable => {
                    self.table.delete_if(lock, release_lock(intent)).await?;
                }
                Failure::OutcomeUnknown(answer) => {
                    let mut expr =
                        Self::settle_expr(intent, IntentStatus::OutcomeUnknown, answer, at);
                    Self::extend(&mut expr, at + intent.phone_lock);
                    self.table.write(lock, expr).await?;
                }
            }
            return Ok(());
        }
        let pk = intent.key.pk();
        let items = match failure {
            Failure::Refused(answer) => vec![
                self.table.update_item(
                    pk,
                    Self::settle_expr(intent, IntentStatus::Refused, answer, at),
                ),
                self.table.delete(lock, release_lock(intent)),
            ],
            Failure::Retryable => {
                // Only this call's intent: a retry with the key whose own write failed must
                // never take back the intent of the call that pushed.
                let mut expr = Expr::new();
                let st = expr.name(INTENT_STATUS);
                let open = expr.value("open", s(IntentStatus::InProgress.as_str()));
                let mut condition = format!("{st} = {open}");
                if let Some(call) = this_call(&mut expr, intent) {
                    condition = format!("{condition} AND {call}");
                }
                expr.condition(condition);
                vec![
                    self.table.delete(pk, expr),
                    self.table.delete(lock, release_lock(intent)),
                ]
            }
            Failure::OutcomeUnknown(answer) => {
                let mut extend = Expr::new();
                Self::extend(&mut extend, at + intent.phone_lock);
                extend.set(item::UPDATED_AT, time(at));
                let owned = owned_by(&mut extend, intent);
                extend.condition(owned);
                vec![
                    self.table.update_item(
                        pk,
                        Self::settle_expr(intent, IntentStatus::OutcomeUnknown, answer, at),
                    ),
                    self.table.update_item(lock, extend),
                ]
            }
        };
        self.settle(items).await
    }

    async fn intent(
        &self,
        key: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        if let IntentKey::Generated(_) = key {
            return Ok(None);
        }
        let Some(found) = self.table.get(key.pk(), &[]).await? else {
            return Ok(None);
        };
        let found = intent_from_item(&found)?;
        if found.expires_at <= now.timestamp() {
            return Ok(None);
        }
        self.resolved(found).await.map(Some)
    }

    async fn phone_lock(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PhoneLock>, StoreError> {
        let Some(found) = self.table.get(phone_pk(phone), &[]).await? else {
            return Ok(None);
        };
        let reader = Reader::new(&found);
        // Strict: a lock that cannot be read is corrupt, never "free".
        let locked_until = reader.required_number(LOCKED_UNTIL)?;
        if locked_until <= now.timestamp() {
            return Ok(None);
        }
        Ok(Some(PhoneLock {
            intent_pk: reader.required(INTENT_PK)?,
            locked_until,
            checkout_request_id: self.open_checkout(&found).await?,
            callback_nonce: reader.string(item::CALLBACK_NONCE)?,
        }))
    }

    async fn release_phone(
        &self,
        phone: &str,
        checkout_request_id: &str,
        callback_nonce: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut expr = Expr::new();
        let mut owned = expr.equals(
            item::CHECKOUT_REQUEST_ID,
            "checkout",
            s(checkout_request_id),
        );
        if let Some(nonce) = callback_nonce {
            let same = expr.equals(item::CALLBACK_NONCE, "nonce", s(nonce));
            owned = format!("{owned} OR {same}");
        }
        expr.condition(owned);
        self.table.delete_if(phone_pk(phone), expr).await
    }

    async fn in_doubt_for_phone(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        let Some(lock) = self.table.get(phone_pk(phone), &[]).await? else {
            return Ok(None);
        };
        let reader = Reader::new(&lock);
        // A lock of a push without a key is its intent; a keyed push's names it.
        let intent = if reader.string(INTENT_STATUS)?.is_some() {
            intent_from_item(&lock)?
        } else {
            match self.table.get(reader.required(INTENT_PK)?, &[]).await? {
                Some(found) => intent_from_item(&found)?,
                None => return Ok(None),
            }
        };
        if !intent.is_in_doubt(now) {
            return Ok(None);
        }
        Ok(Some(self.resolved(intent).await?).filter(|intent| intent.is_in_doubt(now)))
    }

    async fn link(
        &self,
        intent: &IntentRecord,
        payment: &NewPayment,
        answer: &StoredAnswer,
        at: DateTime<Utc>,
    ) -> Result<Option<PendingWrite>, StoreError> {
        let on_lock = on_lock(&intent.pk);
        let home = if on_lock {
            phone_pk(&intent.phone)
        } else {
            intent.pk.clone()
        };
        let mut expr = Expr::new();
        expr.set(INTENT_STATUS, s(IntentStatus::Accepted.as_str()));
        expr.set(ANSWER_STATUS, n(answer.status));
        expr.set(ANSWER_BODY, s(answer.body.to_string()));
        expr.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
        expr.set(item::MERCHANT_REQUEST_ID, s(&payment.merchant_request_id));
        expr.set(item::UPDATED_AT, time(at));
        // Unchanged since it was read and found in doubt: a push that settles meanwhile wins.
        let status = expr.name(INTENT_STATUS);
        let was = expr.value("was", s(intent.status.as_str()));
        let updated = expr.name(item::UPDATED_AT);
        let read_at = expr.value("read_at", time(intent.updated_at));
        let checkout = expr.name(item::CHECKOUT_REQUEST_ID);
        let mut condition = format!(
            "{status} = {was} AND {updated} = {read_at} AND attribute_not_exists({checkout})"
        );
        if on_lock {
            let owner = expr.equals(INTENT_PK, "mine", s(&intent.pk));
            condition = format!("{condition} AND {owner}");
        }
        expr.condition(condition);
        if self.table.update(home, expr).await?.is_err() {
            return Ok(None);
        }
        let written = self.payments.record_pending(payment).await?;
        if !on_lock {
            let mut lock = Expr::new();
            lock.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
            let owner = lock.equals(INTENT_PK, "mine", s(&intent.pk));
            lock.condition(owner);
            // Another push owns the lock by now: it keeps its own checkout id.
            let _ = self.table.update(phone_pk(&intent.phone), lock).await?;
        }
        Ok(Some(written))
    }
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
        (SETTLE_BY.to_owned(), time(record.settle_by)),
    ]);
    if let Some(description) = &record.description {
        item.insert(item::DESCRIPTION.to_owned(), s(description));
    }
    if let Some(caller) = &record.created_by {
        item.insert(item::CREATED_BY.to_owned(), s(caller));
    }
    item
}

fn intent_from_item(found: &Item) -> Result<IntentRecord, StoreError> {
    let reader = Reader::new(found);
    let status = IntentStatus::parse(&reader.required(INTENT_STATUS)?)
        .ok_or_else(|| reader.corrupt("unknown intent_status"))?;
    let answer = match (
        reader.number::<u16>(ANSWER_STATUS)?,
        reader.string(ANSWER_BODY)?,
    ) {
        (Some(status), Some(body)) => Some(StoredAnswer {
            status,
            body: serde_json::from_str(&body)
                .map_err(|_| reader.corrupt("answer_body is not JSON"))?,
        }),
        _ => None,
    };
    let created_at = reader.required_time(item::CREATED_AT)?;
    // A lock that is the intent: named by its owner key, remembered as long as an intent.
    let on_lock = reader.string(RECORD_TYPE)?.as_deref() == Some(LOCK_TYPE);
    let (pk, expires_at) = if on_lock {
        let owner = reader.required(INTENT_PK)?;
        (owner, (created_at + IDEMPOTENCY_TTL).timestamp())
    } else {
        (reader.pk().to_owned(), reader.required_number(EXPIRES_AT)?)
    };
    Ok(IntentRecord {
        pk,
        status,
        fingerprint: reader.required(FINGERPRINT)?,
        phone: reader.required(item::PHONE)?,
        amount: reader.required_number(item::AMOUNT)?,
        reference: reader.required(item::REFERENCE)?,
        description: reader.string(item::DESCRIPTION)?,
        created_at,
        updated_at: reader.required_time(item::UPDATED_AT)?,
        expires_at,
        // Intents written before deadlines were recorded.
        settle_by: reader
            .time(SETTLE_BY)?
            .unwrap_or(created_at + DEFAULT_SETTLE_TIME),
        answer,
        checkout_request_id: reader.string(item::CHECKOUT_REQUEST_ID)?,
        merchant_request_id: reader.string(item::MERCHANT_REQUEST_ID)?,
        created_by: reader.string(item::CREATED_BY)?,
    })
}
