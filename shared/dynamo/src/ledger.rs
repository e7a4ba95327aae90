//! The DynamoDB [`PushLedger`], in the payments table, next to the payments.
//!
//! | `pk` | what |
//! |---|---|
//! | `IDEM#<sha256 of the Idempotency-Key>` or `INTENT#<generated id>` | the intent: request fingerprint and details, `intent_status`, the first answer for replay, the checkout id; TTL `expires_at` = 24 h |
//! | `PHONE#<msisdn>` | the phone lock: owner intent, `locked_until` (epoch seconds), the open checkout id; TTL `expires_at` = `locked_until` |

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{CancellationReason, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use payments::intent::{
    begin_on_existing, new_record, phone_pk, Begin, Failure, IntentKey, IntentRecord, IntentStatus,
    NewIntent, PhoneLock, PushLedger, Recorded, StoredAnswer, DEFAULT_SETTLE_TIME,
};
use payments::payment::NewPayment;
use payments::{PaymentStore, PendingWrite, StoreError};

use crate::error::{cancelled, codes, condition_failed, CONDITION_FAILED, TRANSACTION_CONFLICT};
use crate::expr::Expr;
use crate::item::{self, n, s, time, Item, Reader, EXPIRES_AT};
use crate::payments::DynamoStore;
use crate::table::Table;

const RECORD_TYPE: &str = "record_type";
const INTENT_TYPE: &str = "PUSH_INTENT";
const LOCK_TYPE: &str = "PHONE_LOCK";
const INTENT_STATUS: &str = "intent_status";
const FINGERPRINT: &str = "request_fingerprint";
const ANSWER_STATUS: &str = "answer_status";
const ANSWER_BODY: &str = "answer_body";
const INTENT_PK: &str = "intent_pk";
const LOCKED_UNTIL: &str = "locked_until";
const SETTLE_BY: &str = "settle_by";

/// The DynamoDB ledger, in the payments table.
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    table: Table,
    payments: DynamoStore,
}

impl DynamoLedger {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        let table = Table::new(client.clone(), table);
        Self {
            payments: DynamoStore::new(client, table.name()),
            table,
        }
    }

    /// Dates the payment writes of its rare path (a cancelled transaction) with `clock`; the
    /// transaction itself is dated by the intent and the payment it writes.
    #[must_use]
    pub fn with_clock(mut self, clock: std::sync::Arc<dyn daraja::Clock>) -> Self {
        self.payments = self.payments.with_clock(clock);
        self
    }

    /// The rare path after a cancelled settle: each write on its own. A failed condition
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

    /// Writes `items` in one transaction; `payment`, when given, is the first of them. Says what
    /// the pending write found (`Pending` too when there is no payment).
    async fn settle(
        &self,
        items: Vec<TransactWriteItem>,
        payment: Option<&NewPayment>,
    ) -> Result<Recorded, StoreError> {
        match self.table.transact(items.clone()).await? {
            Ok(()) => Ok(Recorded::Pending),
            Err(reasons) => {
                tracing::warn!(
                    reasons = %codes(&reasons),
                    "push ledger transaction cancelled; writing its parts one by one"
                );
                let mut rest = items;
                let Some(payment) = payment else {
                    self.each(rest).await?;
                    return Ok(Recorded::Pending);
                };
                // The payment is the first item, the intent the second. The intent goes first:
                // it holds Daraja's answer with the full checkout id, which a retry with the key
                // then replays. Then the payment, by the store's own rules (a callback may have
                // come first), then the lock.
                rest.remove(0);
                let intent = rest.remove(0);
                self.each(vec![intent]).await?;
                let known = Recorded::from(&self.payments.record_pending(payment).await?);
                self.each(rest).await?;
                Ok(known)
            }
        }
    }

    /// Updates the intent only while it is in progress.
    fn settle_intent(
        &self,
        intent: &NewIntent,
        status: IntentStatus,
        answer: &StoredAnswer,
        payment: Option<&NewPayment>,
        at: DateTime<Utc>,
    ) -> TransactWriteItem {
        let mut expr = Expr::new();
        expr.set(INTENT_STATUS, s(status.as_str()));
        expr.set(ANSWER_STATUS, n(answer.status));
        expr.set(ANSWER_BODY, s(answer.body.to_string()));
        expr.set(item::UPDATED_AT, time(at));
        if let Some(payment) = payment {
            expr.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
            expr.set(item::MERCHANT_REQUEST_ID, s(&payment.merchant_request_id));
        }
        let st = expr.name(INTENT_STATUS);
        let open = expr.value("open", s(IntentStatus::InProgress.as_str()));
        expr.condition(format!("{st} = {open}"));
        self.table.update_item(intent.key.pk(), expr)
    }

    /// Keeps the phone locked until `until`, only while this intent owns the lock.
    fn extend_lock(
        &self,
        intent: &NewIntent,
        until: DateTime<Utc>,
        checkout_request_id: Option<&str>,
        at: DateTime<Utc>,
    ) -> TransactWriteItem {
        let mut expr = Expr::new();
        expr.set(LOCKED_UNTIL, n(until.timestamp()));
        expr.set(EXPIRES_AT, n(until.timestamp()));
        expr.set(item::UPDATED_AT, time(at));
        if let Some(id) = checkout_request_id {
            expr.set(item::CHECKOUT_REQUEST_ID, s(id));
        }
        let owned = owned_by(&mut expr, intent);
        expr.condition(owned);
        self.table.update_item(phone_pk(intent.phone()), expr)
    }

    fn release_lock(&self, intent: &NewIntent) -> TransactWriteItem {
        let mut expr = Expr::new();
        let owned = owned_by(&mut expr, intent);
        expr.condition(owned);
        self.table.delete(phone_pk(intent.phone()), expr)
    }

    /// The pending payment, written as [`PaymentStore::record_pending`] writes it when no
    /// item exists yet; any other case cancels the transaction and goes to that method.
    fn pending_payment(&self, payment: &NewPayment) -> TransactWriteItem {
        let mut expr = crate::payments::open_pending(payment, payment.created_at);
        let absent = expr.absent(item::PK);
        expr.condition(absent);
        self.table
            .update_item(item::pk(&payment.checkout_request_id), expr)
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
        let mut intent_expr = Expr::new();
        let pk = intent_expr.name(item::PK);
        let expires = intent_expr.name(EXPIRES_AT);
        let now_value = intent_expr.value("now", n(now));
        intent_expr.condition(format!(
            "attribute_not_exists({pk}) OR {expires} <= {now_value}"
        ));

        let until = (intent.at + intent.phone_lock).timestamp();
        let lock_item = HashMap::from([
            (item::PK.to_owned(), s(phone_pk(intent.phone()))),
            (RECORD_TYPE.to_owned(), s(LOCK_TYPE)),
            (INTENT_PK.to_owned(), s(intent.key.pk())),
            (LOCKED_UNTIL.to_owned(), n(until)),
            (EXPIRES_AT.to_owned(), n(until)),
            (item::CREATED_AT.to_owned(), time(intent.at)),
            (item::UPDATED_AT.to_owned(), time(intent.at)),
        ]);
        let mut lock_expr = Expr::new();
        let pk = lock_expr.name(item::PK);
        let locked = lock_expr.name(LOCKED_UNTIL);
        let now_value = lock_expr.value("now", n(now));
        lock_expr.condition(format!(
            "attribute_not_exists({pk}) OR {locked} <= {now_value}"
        ));

        let items = vec![
            self.table.put(intent_item(&record), intent_expr),
            self.table.put(lock_item, lock_expr),
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
                checkout_request_id: match reasons[1].item() {
                    Some(old) => Reader::new(old).string(item::CHECKOUT_REQUEST_ID)?,
                    None => None,
                },
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
    ) -> Result<Recorded, StoreError> {
        let items = vec![
            self.pending_payment(payment),
            self.settle_intent(
                intent,
                IntentStatus::Accepted,
                answer,
                Some(payment),
                payment.created_at,
            ),
            self.extend_lock(
                intent,
                payment.created_at + intent.phone_lock,
                Some(&payment.checkout_request_id),
                payment.created_at,
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
                self.settle_intent(intent, IntentStatus::Refused, answer, None, at),
                self.release_lock(intent),
            ],
            Failure::Retryable => {
                let mut expr = Expr::new();
                let st = expr.name(INTENT_STATUS);
                let open = expr.value("open", s(IntentStatus::InProgress.as_str()));
                expr.condition(format!("{st} = {open}"));
                vec![
                    self.table.delete(intent.key.pk(), expr),
                    self.release_lock(intent),
                ]
            }
            Failure::OutcomeUnknown(answer) => vec![
                self.settle_intent(intent, IntentStatus::OutcomeUnknown, answer, None, at),
                self.extend_lock(intent, at + intent.phone_lock, None, at),
            ],
        };
        self.settle(items, None).await.map(|_| ())
    }

    async fn intent(
        &self,
        key: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        match self.table.get(key.pk(), &[]).await? {
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
        let Some(found) = self.table.get(phone_pk(phone), &[]).await? else {
            return Ok(None);
        };
        let found = Reader::new(&found);
        // Strict: a lock that cannot be read is corrupt, never "free".
        let lock = PhoneLock {
            intent_pk: found.required(INTENT_PK)?,
            locked_until: found.required_number(LOCKED_UNTIL)?,
            checkout_request_id: found.string(item::CHECKOUT_REQUEST_ID)?,
        };
        Ok(Some(lock).filter(|l| l.locked_until > now.timestamp()))
    }

    async fn release_phone(
        &self,
        phone: &str,
        checkout_request_id: &str,
    ) -> Result<bool, StoreError> {
        let mut expr = Expr::new();
        let names = expr.name(item::CHECKOUT_REQUEST_ID);
        let this = expr.value("checkout", s(checkout_request_id));
        expr.condition(format!("{names} = {this}"));
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
        let owner: String = Reader::new(&lock).required(INTENT_PK)?;
        let Some(found) = self.table.get(owner, &[]).await? else {
            return Ok(None);
        };
        Ok(Some(intent_from_item(&found)?).filter(|intent| intent.is_in_doubt(now)))
    }

    async fn link(
        &self,
        intent: &IntentRecord,
        payment: &NewPayment,
        answer: &StoredAnswer,
        at: DateTime<Utc>,
    ) -> Result<Option<PendingWrite>, StoreError> {
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
        expr.condition(format!(
            "{status} = {was} AND {updated} = {read_at} AND attribute_not_exists({checkout})"
        ));
        if self.table.update(intent.pk.clone(), expr).await?.is_err() {
            return Ok(None);
        }
        let written = self.payments.record_pending(payment).await?;
        let mut lock = Expr::new();
        lock.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
        let owner = lock.name(INTENT_PK);
        let mine = lock.value("mine", s(&intent.pk));
        lock.condition(format!("{owner} = {mine}"));
        // Another push owns the lock by now: it keeps its own checkout id.
        let _ = self.table.update(phone_pk(&intent.phone), lock).await?;
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
    Ok(IntentRecord {
        pk: reader.pk().to_owned(),
        status,
        fingerprint: reader.required(FINGERPRINT)?,
        phone: reader.required(item::PHONE)?,
        amount: reader.required_number(item::AMOUNT)?,
        reference: reader.required(item::REFERENCE)?,
        description: reader.string(item::DESCRIPTION)?,
        created_at,
        updated_at: reader.required_time(item::UPDATED_AT)?,
        expires_at: reader.required_number(EXPIRES_AT)?,
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
