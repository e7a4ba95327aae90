//! The DynamoDB [`PaymentStore`]: one table, defined in `template.yaml`.
//!
//! Every state change is one `UpdateItem` whose condition states the state it expects; a
//! write that records an M-Pesa receipt is one `TransactWriteItems` that also claims the
//! receipt (`RCPT#<receipt>`), so one receipt settles one payment.
//! When the guess is wrong, DynamoDB hands back the item as it was
//! (`ReturnValuesOnConditionCheckFailure::AllOld`), the shared rules pick the right
//! write, and that write is tried under its own condition. States only move forward
//! (absent → pending → final), so this settles in a few rounds.

use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue, CancellationReason, TransactWriteItem};
use aws_sdk_dynamodb::Client;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use daraja::{Clock, SystemClock};
use payments::payment::{
    plan_pending, plan_result, HeldCallback, NewPayment, PaymentRecord, PaymentResult,
    PaymentStatus, PendingPlan, ResultPlan, ResultSource, ReviewReason, Verdict,
};
use payments::{Applied, Hold, PaymentStore, PendingWrite, QueryQueue, Settled, StoreError};

use crate::error::{cancelled, contention, CONDITION_FAILED, TRANSACTION_CONFLICT};
use crate::expr::Expr;
use crate::item::{self, n, s, time, Item, Reader};
use crate::table::Table;

/// What a result's write did.
enum Written {
    Done,
    /// The payment's condition failed: the record as it was (`None`: there was none).
    Found(Option<Box<PaymentRecord>>),
    /// The receipt is recorded on this other payment.
    ReceiptHeld(String),
    /// Real DynamoDB cancelled the transaction for a concurrent one on the same item.
    Raced,
}

fn settled(verdict: Verdict, orphan: bool, enriched: bool) -> Option<Settled> {
    Some(Settled {
        status: verdict.status,
        review_reason: verdict.review_reason,
        orphan,
        enriched,
    })
}

/// More rounds than the forward-only state machine can need; reaching it means another
/// writer keeps changing the item, which only a bug can do.
const MAX_ROUNDS: usize = 6;

#[derive(Clone)]
pub struct DynamoStore {
    table: Table,
    /// When a write happens (`updated_at`).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for DynamoStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoStore")
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

impl DynamoStore {
    /// A store that dates its writes with the system clock.
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table),
            clock: Arc::new(SystemClock),
        }
    }

    /// Dates the writes with `clock`.
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn table(&self) -> &str {
        self.table.name()
    }

    /// Runs one conditional update. `Ok(Err(old))` means the condition failed; `old` is
    /// the record as it was (`None`: there was none).
    /// The pending payment as a conditional `PutItem`, only where no item exists: the record
    /// written, or the one found.
    async fn create_pending(
        &self,
        payment: &NewPayment,
        push: &PushTag,
    ) -> Result<Result<PaymentRecord, Option<PaymentRecord>>, StoreError> {
        let open = open_pending(payment, self.now(), Some(push));
        let mut created = open
            .created_item()
            .expect("a pending write only assigns attributes");
        let pk = item::pk(&payment.checkout_request_id);
        created.insert(item::PK.to_owned(), s(&pk));
        let mut absent = Expr::new();
        let condition = absent.absent(item::PK);
        absent.condition(condition);
        match self.table.put_if(created.clone(), absent).await? {
            Ok(_) => item::record_from_item(&created).map(Ok),
            Err(old) => old
                .as_ref()
                .map(item::record_from_item)
                .transpose()
                .map(Err),
        }
    }

    async fn update(
        &self,
        checkout_request_id: &str,
        update: Expr,
    ) -> Result<Result<PaymentRecord, Option<PaymentRecord>>, StoreError> {
        match self
            .table
            .update(item::pk(checkout_request_id), update)
            .await?
        {
            Ok(new) => item::record_from_item(&new).map(Ok),
            Err(old) => old
                .as_ref()
                .map(item::record_from_item)
                .transpose()
                .map(Err),
        }
    }

    /// Writes `update` of `result`'s payment. When the write records a receipt no other payment
    /// is known to hold (`holder` is `None`), the receipt is claimed in the same transaction:
    /// one request either way. `holder` names the payment that holds it otherwise.
    async fn write_result(
        &self,
        result: &PaymentResult,
        mut update: Expr,
        holder: Option<&str>,
    ) -> Result<Written, StoreError> {
        let id = &result.checkout_request_id;
        if let Some(holder) = holder {
            update.set(item::RECEIPT_HOLDER, s(holder));
        }
        let Some(receipt) = result.receipt.as_deref().filter(|_| holder.is_none()) else {
            return Ok(match self.update(id, update).await? {
                Ok(_) => Written::Done,
                Err(found) => Written::Found(found.map(Box::new)),
            });
        };
        let items = vec![
            self.table.update_item(item::pk(id), update),
            self.claim(receipt, id),
        ];
        let reasons = match self.table.transact(items).await? {
            Ok(()) => return Ok(Written::Done),
            Err(reasons) => reasons,
        };
        let code = |i: usize| reasons.get(i).and_then(CancellationReason::code);
        match (code(0), code(1)) {
            (Some(CONDITION_FAILED), _) => Ok(Written::Found(
                reasons[0]
                    .item()
                    .filter(|old| !old.is_empty())
                    .map(|old| item::record_from_item(old).map(Box::new))
                    .transpose()?,
            )),
            (_, Some(CONDITION_FAILED)) => {
                let holder = reasons[1]
                    .item()
                    .map(|claim| Reader::new(claim).string(item::CHECKOUT_REQUEST_ID))
                    .transpose()?
                    .flatten();
                match holder {
                    Some(holder) => Ok(Written::ReceiptHeld(holder)),
                    None => Err(StoreError::Corrupt {
                        pk: item::receipt_pk(receipt),
                        detail: "receipt claim without the payment holding it".into(),
                    }),
                }
            }
            (Some(TRANSACTION_CONFLICT), _) | (_, Some(TRANSACTION_CONFLICT)) => Ok(Written::Raced),
            _ => Err(cancelled("the result write", &reasons)),
        }
    }

    /// The transaction item claiming `receipt` for payment `id`: it succeeds when no payment
    /// holds the receipt yet, or this one does.
    fn claim(&self, receipt: &str, id: &str) -> TransactWriteItem {
        let claim = Item::from([
            (item::PK.to_owned(), s(item::receipt_pk(receipt))),
            (item::CHECKOUT_REQUEST_ID.to_owned(), s(id)),
            (item::CLAIMED_AT.to_owned(), time(self.now())),
        ]);
        let mut expr = Expr::new();
        let pk = expr.name(item::PK);
        let holder = expr.name(item::CHECKOUT_REQUEST_ID);
        let this = expr.value("claimant", s(id));
        expr.condition(format!("attribute_not_exists({pk}) OR {holder} = {this}"));
        self.table.put(claim, expr)
    }

    async fn transition(
        &self,
        result: &PaymentResult,
        verdict: Verdict,
        holder: Option<&str>,
    ) -> Result<Written, StoreError> {
        let mut update = result_update(result, verdict, self.now());
        let open = format!(
            "({st} = {pending} OR {st} = {expired})",
            st = update.name(item::STATUS),
            pending = update.value("open_pending", s(PaymentStatus::Pending.as_str())),
            expired = update.value("open_expired", s(PaymentStatus::Expired.as_str())),
        );
        let amount_check = amount_check(&mut update, verdict, result);
        let binding_check = binding_check(&mut update, result.callback_nonce.as_deref());
        update.condition(format!("{open}{amount_check}{binding_check}"));
        self.write_result(result, update, holder).await
    }

    /// Adds a success callback's details to a record an STK query completed. The
    /// condition is the whole rule ([`PaymentResult::enriches`]), so a failed record, a
    /// record with a receipt, or a race lost to another callback is never touched.
    async fn enrich(
        &self,
        result: &PaymentResult,
        verdict: Verdict,
        holder: Option<&str>,
    ) -> Result<Written, StoreError> {
        let mut update = Expr::new();
        set_verdict(&mut update, verdict);
        update.set(item::UPDATED_AT, time(self.now()));
        set_result_details(&mut update, result);
        let condition = format!(
            "{st} = {completed} AND {code} = {same_code} AND {by} = {query} AND attribute_not_exists({receipt})",
            st = update.name(item::STATUS),
            completed = update.value("completed", s(PaymentStatus::Completed.as_str())),
            code = update.name(item::RESULT_CODE),
            same_code = update.value("same_code", s(result.result_code.code())),
            by = update.name(item::RECONCILED_BY),
            query = update.value("by_query", s(ResultSource::Query.as_str())),
            receipt = update.name(item::RECEIPT),
        );
        let amount_check = amount_check(&mut update, verdict, result);
        let binding_check = binding_check(&mut update, result.callback_nonce.as_deref());
        update.condition(format!("{condition}{amount_check}{binding_check}"));
        self.write_result(result, update, holder).await
    }

    async fn create_orphan(
        &self,
        result: &PaymentResult,
        verdict: Verdict,
        holder: Option<&str>,
    ) -> Result<Written, StoreError> {
        let mut update = result_update(result, verdict, self.now());
        update.set_some(item::CALLBACK_NONCE, result.callback_nonce.as_deref());
        update.set(item::ORPHAN_PK, s(item::ORPHAN_PARTITION));
        update.set(
            item::ORPHAN_SK,
            s(item::index_sk(
                result.received_at,
                &result.checkout_request_id,
            )),
        );
        let pk = update.name(item::PK);
        update.condition(format!("attribute_not_exists({pk})"));
        self.write_result(result, update, holder).await
    }

    /// Turns the final `stored` record `NEEDS_REVIEW` for `reason`, keeping `result` in its
    /// history, on condition that it is still as read (status, result code and receipt).
    async fn flag(
        &self,
        result: &PaymentResult,
        reason: ReviewReason,
        stored: &PaymentRecord,
    ) -> Result<Result<PaymentRecord, Option<PaymentRecord>>, StoreError> {
        let mut update = Expr::new();
        update.set(item::STATUS, s(PaymentStatus::NeedsReview.as_str()));
        update.set(item::REVIEW_REASON, s(reason.as_str()));
        update.set(item::UPDATED_AT, time(self.now()));
        update.append(
            item::HISTORY,
            vec![item::history_entry(&result.history_entry())],
        );
        if result.source == ResultSource::Callback {
            update.add(item::CONFLICTING_CALLBACKS, 1);
        }
        let status = update.name(item::STATUS);
        let was = update.value("was", s(stored.status.as_str()));
        let code = update.name(item::RESULT_CODE);
        let receipt = update.name(item::RECEIPT);
        let mut condition = format!("{status} = {was}");
        match &stored.result_code {
            Some(stored_code) => {
                let same = update.value("stored_code", s(stored_code));
                condition.push_str(&format!(" AND {code} = {same}"));
            }
            None => condition.push_str(&format!(" AND attribute_not_exists({code})")),
        }
        match &stored.receipt {
            Some(stored_receipt) => {
                let same = update.value("stored_receipt", s(stored_receipt));
                condition.push_str(&format!(" AND {receipt} = {same}"));
            }
            None => condition.push_str(&format!(" AND attribute_not_exists({receipt})")),
        }
        update.condition(condition);
        self.update(&result.checkout_request_id, update).await
    }

    /// The checkout ids in `queue`'s partition of the pending index whose sort key (`time#id`)
    /// is below `below`, in key order.
    async fn queue_below(
        &self,
        queue: QueryQueue,
        below: AttributeValue,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let items = self
            .table
            .query_partition(
                item::PENDING_INDEX,
                (item::PENDING_PK, queue.as_str()),
                Some((item::PENDING_SK, below)),
                limit,
            )
            .await?;
        items
            .iter()
            .map(|found| match found.get(item::PK) {
                Some(AttributeValue::S(pk)) if pk.starts_with(item::PK_PREFIX) => {
                    Ok(pk[item::PK_PREFIX.len()..].to_owned())
                }
                _ => Err(StoreError::Corrupt {
                    pk: String::from("<pending-index entry>"),
                    detail: String::from("index entry without a payment key"),
                }),
            })
            .collect()
    }

    /// Puts the payment in `queue` due at `next` (or in no queue) as part of `update`.
    fn enqueue(
        update: &mut Expr,
        checkout_request_id: &str,
        queue: QueryQueue,
        next: Option<DateTime<Utc>>,
    ) {
        match next {
            Some(at) => {
                update.set(item::PENDING_PK, s(queue.as_str()));
                update.set(item::PENDING_SK, s(item::index_sk(at, checkout_request_id)));
            }
            None => {
                update.remove(item::PENDING_PK);
                update.remove(item::PENDING_SK);
            }
        }
    }

    /// Keeps a contradicting result of a final record in its history. The record's status
    /// and result fields never change once final, so no condition beyond existence.
    async fn note_conflict(&self, result: &PaymentResult) -> Result<Applied, StoreError> {
        let mut update = Expr::new();
        update.append(
            item::HISTORY,
            vec![item::history_entry(&result.history_entry())],
        );
        if result.source == ResultSource::Callback {
            update.add(item::CONFLICTING_CALLBACKS, 1);
        }
        let pk = update.name(item::PK);
        update.condition(format!("attribute_exists({pk})"));
        match self.update(&result.checkout_request_id, update).await? {
            Ok(record) => Ok(Applied::Conflict(record)),
            Err(_) => Err(contention(&result.checkout_request_id)),
        }
    }
}

/// The amount check of a write recording `verdict` from `result`, as a condition suffix. It
/// lives in the condition, so a pending write that lands between our guess and this write
/// cannot slip a wrong amount past it. A success that cannot be checked, or whose receipt
/// another payment holds, needs review whatever was asked: no condition.
fn amount_check(update: &mut Expr, verdict: Verdict, result: &PaymentResult) -> String {
    if !result.is_checkable() {
        return String::new();
    }
    match (
        verdict.status,
        verdict.review_reason,
        result.amount_paid_whole,
    ) {
        (PaymentStatus::Completed, _, Some(paid)) => {
            let amount = update.name(item::AMOUNT);
            let paid = update.value("paid", n(paid));
            format!(" AND (attribute_not_exists({amount}) OR {amount} = {paid})")
        }
        (PaymentStatus::NeedsReview, Some(ReviewReason::AmountMismatch), Some(paid)) => {
            let amount = update.name(item::AMOUNT);
            let paid = update.value("paid", n(paid));
            format!(" AND attribute_exists({amount}) AND {amount} <> {paid}")
        }
        _ => String::new(),
    }
}

/// The binding check of a callback's write, as a condition suffix: the stored nonce, when
/// there is one, is the URL's. Nothing for a result without a nonce (an STK query).
fn binding_check(update: &mut Expr, nonce: Option<&str>) -> String {
    match nonce {
        Some(nonce) => {
            let stored = update.name(item::CALLBACK_NONCE);
            let given = update.value("nonce", s(nonce));
            format!(" AND (attribute_not_exists({stored}) OR {stored} = {given})")
        }
        None => String::new(),
    }
}

/// What a result says of the payment (receipt, amount paid, paying phone, date, raw callback):
/// written by a transition, an orphan creation and an enrichment alike.
fn set_result_details(update: &mut Expr, result: &PaymentResult) {
    update.set_some(item::RECEIPT, result.receipt.as_deref());
    update.set_some(item::AMOUNT_PAID, result.amount_paid.as_deref());
    if let Some(paid) = result.amount_paid_whole {
        update.set(item::AMOUNT_PAID_WHOLE, n(paid));
    }
    update.set_some(item::PAYING_PHONE, result.paying_phone.as_deref());
    update.set_some(item::TRANSACTION_DATE, result.transaction_date.as_deref());
    update.set_some(item::RAW_CALLBACK, result.raw.as_deref());
}

/// The status and, when there is one, the review reason.
fn set_verdict(update: &mut Expr, verdict: Verdict) {
    update.set(item::STATUS, s(verdict.status.as_str()));
    update.set_some(
        item::REVIEW_REASON,
        verdict.review_reason.map(ReviewReason::as_str),
    );
}

/// The writes shared by a transition and an orphan creation.
fn result_update(result: &PaymentResult, verdict: Verdict, now: DateTime<Utc>) -> Expr {
    let mut update = Expr::new();
    set_verdict(&mut update, verdict);
    update.set(item::CHECKOUT_REQUEST_ID, s(&result.checkout_request_id));
    // The request's merchant id wins whichever write comes first.
    update.set_if_absent(item::MERCHANT_REQUEST_ID, s(&result.merchant_request_id));
    update.set(item::COMPLETED_AT, time(result.received_at));
    update.set(item::UPDATED_AT, time(now));
    update.set(item::RESULT_CODE, s(result.result_code.code()));
    update.set(item::RESULT_DESC, s(&result.result_desc));
    update.set(item::OUTCOME, s(result.outcome()));
    set_result_details(&mut update, result);
    update.set(item::RECONCILED_BY, s(result.source.as_str()));
    update.set_if_absent(item::DETAILS_RECORDED, AttributeValue::Bool(false));
    update.remove(item::PENDING_PK);
    update.remove(item::PENDING_SK);
    update
}

/// The request details, written by both pending-write variants.
fn details_update(payment: &NewPayment, now: DateTime<Utc>, push: Option<&PushTag>) -> Expr {
    let mut update = Expr::new();
    if let Some(push) = push {
        // The intent-index entry: the intent's key finds this payment and its answer.
        update.set(item::PUSH_INTENT, s(&push.intent_pk));
        update.set(item::ANSWER_BODY, s(&push.answer_body));
    }
    update.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
    update.set(item::MERCHANT_REQUEST_ID, s(&payment.merchant_request_id));
    update.set(item::AMOUNT, n(payment.amount()));
    update.set(item::PHONE, s(payment.charge.phone.as_str()));
    update.set(item::REFERENCE, s(payment.charge.reference.as_str()));
    update.set(item::DESCRIPTION, s(payment.charge.description.as_str()));
    update.set(item::CREATED_AT, time(payment.created_at));
    update.set(item::UPDATED_AT, time(now));
    update.set(item::DETAILS_RECORDED, AttributeValue::Bool(true));
    if let Some(nonce) = &payment.callback_nonce {
        // A result that came first keeps the nonce it came with: a different one is the
        // `Unbound` plan's to judge.
        update.set_if_absent(item::CALLBACK_NONCE, s(nonce));
    }
    update.set_some(item::CREATED_BY, payment.created_by.as_deref());
    // The reference-index entry: a merchant whose answer was lost finds the payment by it.
    update.set(item::REF_PK, s(payment.charge.reference.as_str()));
    update.set(
        item::REF_SK,
        s(item::index_sk(
            payment.created_at,
            &payment.checkout_request_id,
        )),
    );
    update
}

/// A pending payment's writes (no condition): the details, the `PENDING` status and its
/// pending-index entry in the queue of payments never queried (a repeated pending write puts
/// it back there: it is queried sooner, never later). The push ledger writes the same inside
/// its transaction.
fn open_pending(payment: &NewPayment, now: DateTime<Utc>, push: Option<&PushTag>) -> Expr {
    let mut update = details_update(payment, now, push);
    update.set(item::STATUS, s(PaymentStatus::Pending.as_str()));
    update.set(item::PENDING_PK, s(QueryQueue::New.as_str()));
    update.set(
        item::PENDING_SK,
        s(item::index_sk(
            payment.created_at,
            &payment.checkout_request_id,
        )),
    );
    update
}

/// The push a payment was written by: its intent's key and the `202` that key replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PushTag {
    pub intent_pk: String,
    pub answer_body: String,
}

impl DynamoStore {
    /// [`PaymentStore::record_pending`], the payment naming the push that wrote it (`push`):
    /// one `UpdateItem` in the common path, whatever a result that came first left.
    pub(crate) async fn record_pending_for(
        &self,
        payment: &NewPayment,
        push: Option<&PushTag>,
    ) -> Result<PendingWrite, StoreError> {
        // Common path first: nothing stored yet. A push's payment is put whole, the item the
        // open update would create (one conditional `PutItem`: DynamoDB charges the same, moto
        // answers it several times faster than an update of twenty attributes); anything there
        // already goes to the plans below. Without a push (linking an orphan, which exists),
        // the open update comes first.
        let mut plan = match push {
            Some(push) => match self.create_pending(payment, push).await? {
                Ok(created) => return Ok(PendingWrite::Created(created)),
                Err(stored) => plan_pending(payment, stored.as_ref()),
            },
            None => PendingPlan::Open,
        };
        for _ in 0..MAX_ROUNDS {
            let written = match plan {
                PendingPlan::Open => {
                    let mut update = open_pending(payment, self.now(), push);
                    let pk = update.name(item::PK);
                    let status = update.name(item::STATUS);
                    let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
                    update.condition(format!(
                        "attribute_not_exists({pk}) OR {status} = {pending}"
                    ));
                    self.update(&payment.checkout_request_id, update)
                        .await?
                        .map(PendingWrite::Created)
                }
                PendingPlan::Unbound => {
                    let mut update = details_update(payment, self.now(), push);
                    update.remove(item::ORPHAN_PK);
                    update.remove(item::ORPHAN_SK);
                    set_verdict(
                        &mut update,
                        Verdict {
                            status: PaymentStatus::NeedsReview,
                            review_reason: plan.review_reason(),
                        },
                    );
                    // The stored nonce never changes once set, and the record is final.
                    let status = update.name(item::STATUS);
                    let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
                    let pk = update.name(item::PK);
                    update.condition(format!("attribute_exists({pk}) AND {status} <> {pending}"));
                    self.update(&payment.checkout_request_id, update)
                        .await?
                        .map(PendingWrite::FlaggedForReview)
                }
                plan @ (PendingPlan::AddDetails(_) | PendingPlan::FlagForReview) => {
                    let mut update = details_update(payment, self.now(), push);
                    update.remove(item::ORPHAN_PK);
                    update.remove(item::ORPHAN_SK);
                    let status = update.name(item::STATUS);
                    let paid = update.name(item::AMOUNT_PAID_WHOLE);
                    let completed = update.value("completed", s(PaymentStatus::Completed.as_str()));
                    let asked = update.value("asked", n(payment.amount()));
                    // The two conditions split "final" exactly: a success for another
                    // amount, and everything else, which keeps its status.
                    let mismatch = format!(
                        "{status} = {completed} AND attribute_exists({paid}) AND {paid} <> {asked}"
                    );
                    if plan == PendingPlan::FlagForReview {
                        set_verdict(
                            &mut update,
                            Verdict {
                                status: PaymentStatus::NeedsReview,
                                review_reason: plan.review_reason(),
                            },
                        );
                        update.condition(mismatch);
                    } else {
                        let pk = update.name(item::PK);
                        let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
                        update.condition(format!(
                            "attribute_exists({pk}) AND {status} <> {pending} AND NOT ({mismatch})"
                        ));
                    }
                    let flagged = plan == PendingPlan::FlagForReview;
                    self.update(&payment.checkout_request_id, update)
                        .await?
                        .map(|record| {
                            if flagged {
                                PendingWrite::FlaggedForReview(record)
                            } else {
                                PendingWrite::ResultAlreadyKnown(record)
                            }
                        })
                }
            };
            match written {
                Ok(outcome) => return Ok(outcome),
                Err(stored) => plan = plan_pending(payment, stored.as_ref()),
            }
        }
        Err(contention(&payment.checkout_request_id))
    }
}

#[async_trait]
impl PaymentStore for DynamoStore {
    async fn record_pending(&self, payment: &NewPayment) -> Result<PendingWrite, StoreError> {
        self.record_pending_for(payment, None).await
    }

    async fn apply_result(&self, result: &PaymentResult) -> Result<Applied, StoreError> {
        // Common path first: the pending write is there and the amount matches.
        let mut plan = ResultPlan::Transition(result.final_status(None));
        let mut stored: Option<PaymentRecord> = None;
        // The payment holding the result's receipt, once a claim found it is another one.
        let mut holder: Option<String> = None;
        for _ in 0..MAX_ROUNDS {
            let held = holder.as_deref();
            let verdict = |status| result.verdict(status, held);
            let (written, settled) = match (plan, &stored) {
                (ResultPlan::Transition(status), _) => (
                    self.transition(result, verdict(status), held).await?,
                    settled(verdict(status), false, false),
                ),
                (ResultPlan::CreateOrphan(status), _) => (
                    self.create_orphan(result, verdict(status), held).await?,
                    settled(verdict(status), true, false),
                ),
                (ResultPlan::Enrich(status), _) => (
                    self.enrich(result, verdict(status), held).await?,
                    settled(verdict(status), false, true),
                ),
                (ResultPlan::Review(reason), Some(final_record)) => {
                    match self.flag(result, reason, final_record).await? {
                        Ok(record) => return Ok(Applied::Flagged(record)),
                        Err(found) => (Written::Found(found.map(Box::new)), None),
                    }
                }
                // Planned below, from a stored record, and answered there.
                (
                    ResultPlan::Review(_)
                    | ResultPlan::Duplicate
                    | ResultPlan::Conflict
                    | ResultPlan::Unbound,
                    _,
                ) => break,
            };
            let found = match (written, settled) {
                (Written::Done, Some(settled)) => return Ok(Applied::Transitioned(settled)),
                (Written::ReceiptHeld(by), _) => {
                    holder = Some(by);
                    continue;
                }
                (Written::Found(found), _) => found.map(|record| *record),
                // The same write again: another result for this payment, or for this receipt,
                // was being written.
                (Written::Raced | Written::Done, _) => continue,
            };
            plan = plan_result(result, found.as_ref());
            match (plan, found) {
                // A replay (Safaricom's duplicate delivery, or someone resending what they
                // saw) writes nothing: its failed condition was the only request.
                (ResultPlan::Duplicate, Some(found)) => return Ok(Applied::Duplicate(found)),
                (ResultPlan::Conflict, Some(_)) => return self.note_conflict(result).await,
                (ResultPlan::Unbound, Some(found)) => return Ok(Applied::Unbound(found)),
                (_, found) => stored = found,
            }
        }
        Err(contention(&result.checkout_request_id))
    }

    async fn get(&self, checkout_request_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let found = self.table.get(item::pk(checkout_request_id), &[]).await?;
        found.as_ref().map(item::record_from_item).transpose()
    }

    async fn orphans(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError> {
        let items = self
            .table
            .query_partition(
                item::ORPHAN_INDEX,
                (item::ORPHAN_PK, item::ORPHAN_PARTITION),
                None,
                limit,
            )
            .await?;
        items.iter().map(item::record_from_item).collect()
    }

    async fn recent_orphans(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError> {
        let items = self
            .table
            .query_partition_newest_first(
                item::ORPHAN_INDEX,
                (item::ORPHAN_PK, item::ORPHAN_PARTITION),
                limit,
            )
            .await?;
        items.iter().map(item::record_from_item).collect()
    }

    async fn pending_older_than(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // `created_at#id` sorts after `created_at`, so a payment created exactly at the
        // cutoff is not older than it.
        self.queue_below(QueryQueue::New, time(cutoff), limit).await
    }

    async fn by_reference(
        &self,
        reference: &str,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        let keys = self
            .table
            .query_partition_newest_first(item::REFERENCE_INDEX, (item::REF_PK, reference), limit)
            .await?;
        let mut records = Vec::with_capacity(keys.len());
        for key in &keys {
            let Some(AttributeValue::S(pk)) = key.get(item::PK) else {
                continue;
            };
            if let Some(found) = self.table.get(pk.clone(), &[]).await? {
                records.push(item::record_from_item(&found)?);
            }
        }
        Ok(records)
    }

    async fn due_for_query(
        &self,
        queue: QueryQueue,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // `~` sorts after every character of a checkout id: a payment due exactly now is due.
        self.queue_below(queue, s(item::index_sk(now, "~")), limit)
            .await
    }

    async fn record_query_attempt(
        &self,
        checkout_request_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let mut update = Expr::new();
        update.add(item::QUERY_ATTEMPTS, 1);
        update.set(item::LAST_QUERIED_AT, time(self.now()));
        let status = update.name(item::STATUS);
        let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
        let expired = update.value("expired", s(PaymentStatus::Expired.as_str()));
        update.condition(format!("{status} = {pending} OR {status} = {expired}"));
        // A failed condition means the payment is final (or unknown): nothing to count.
        Ok(self.update(checkout_request_id, update).await?.ok())
    }

    async fn schedule_query(
        &self,
        checkout_request_id: &str,
        queue: QueryQueue,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let mut update = Expr::new();
        Self::enqueue(&mut update, checkout_request_id, queue, next);
        let status = update.name(item::STATUS);
        let expected = update.value("expected", s(queue.status().as_str()));
        update.condition(format!("{status} = {expected}"));
        Ok(self.update(checkout_request_id, update).await?.is_ok())
    }

    async fn hold_for_confirmation(
        &self,
        checkout_request_id: &str,
        held: &HeldCallback,
    ) -> Result<Hold, StoreError> {
        // Pending first (the common case), then expired; each write states the one it expects.
        for queue in [QueryQueue::Retry, QueryQueue::Expired] {
            let mut update = Expr::new();
            update.set(item::HELD_CALLBACK, item::held_callback(held));
            Self::enqueue(
                &mut update,
                checkout_request_id,
                queue,
                Some(held.received_at),
            );
            let status = update.name(item::STATUS);
            let open = update.value("open", s(queue.status().as_str()));
            let binding = binding_check(&mut update, held.callback_nonce.as_deref());
            update.condition(format!("{status} = {open}{binding}"));
            match self.update(checkout_request_id, update).await? {
                Ok(_) => return Ok(Hold::Held),
                Err(Some(found))
                    if found.status == PaymentStatus::Expired
                        && queue == QueryQueue::Retry
                        && held.is_bound_to(&found) => {}
                Err(found) => return Ok(Hold::NotOpen(found.map(Box::new))),
            }
        }
        // Each round above answers unless a pending payment expired between the two writes
        // and then closed: not open either way.
        Ok(Hold::NotOpen(None))
    }

    async fn expire(
        &self,
        checkout_request_id: &str,
        at: DateTime<Utc>,
        requery_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let mut update = Expr::new();
        update.set(item::STATUS, s(PaymentStatus::Expired.as_str()));
        update.set(item::UPDATED_AT, time(at));
        Self::enqueue(
            &mut update,
            checkout_request_id,
            QueryQueue::Expired,
            requery_at,
        );
        let status = update.name(item::STATUS);
        let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
        update.condition(format!("{status} = {pending}"));
        Ok(self.update(checkout_request_id, update).await?.is_ok())
    }
}
