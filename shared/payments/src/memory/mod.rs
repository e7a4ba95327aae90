//! Every store trait in memory, with the semantics of DynamoDB, for fast tests and the
//! local demo. [`MemoryStore`] is the [`PaymentStore`].

mod ledger;
mod raw;

pub use ledger::MemoryLedger;
pub use raw::MemoryRawStore;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use daraja::{Clock, SystemClock};

use crate::payment::{
    plan_pending, plan_result, timestamp, HeldCallback, NewPayment, PaymentRecord, PaymentResult,
    PaymentStatus, PendingPlan, ResultPlan, ResultSource, Verdict,
};
use crate::store::{Applied, Hold, PaymentStore, PendingWrite, QueryQueue, Settled, StoreError};

#[derive(Debug, Clone)]
struct Stored {
    record: PaymentRecord,
    /// When the result of an orphan was received; `None` once its pending write came.
    orphan_since: Option<DateTime<Utc>>,
    /// The query queue other than [`QueryQueue::New`] the payment waits in, and when it is
    /// due there; `None` for a new pending payment (and for every final one).
    queued: Option<(QueryQueue, DateTime<Utc>)>,
}

/// Every write holds one lock, which gives the per-item atomicity DynamoDB gives.
pub struct MemoryStore {
    items: Mutex<HashMap<String, Stored>>,
    /// Which payment each receipt was first recorded on. Locked only while `items` is.
    receipts: Mutex<HashMap<String, String>>,
    /// When a write happens (`updated_at`).
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("items", &self.items().len())
            .finish_non_exhaustive()
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// Claims the receipt `result` records (if any) for its payment, and says what a write
    /// giving `status` then records. Called with `items` locked.
    fn claim_receipt(&self, result: &PaymentResult, status: PaymentStatus) -> Written {
        let mut receipts = self
            .receipts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let holder = result.receipt.as_ref().and_then(|receipt| {
            let holder = receipts
                .entry(receipt.clone())
                .or_insert_with(|| result.checkout_request_id.clone());
            (*holder != result.checkout_request_id).then(|| holder.clone())
        });
        Written {
            verdict: result.verdict(status, holder.as_deref()),
            holder,
        }
    }

    /// A store that dates its writes with the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            items: Mutex::new(HashMap::new()),
            receipts: Mutex::new(HashMap::new()),
            clock,
        }
    }

    fn now(&self) -> DateTime<Utc> {
        timestamp::truncate(self.clock.now())
    }

    fn items(&self) -> MutexGuard<'_, HashMap<String, Stored>> {
        // A panic while holding the lock leaves whole records (every write replaces a
        // record in one assignment), so the map is still consistent.
        self.items
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The rules planned a change of a stored record that is not there: only a bug in the rules
/// can do that, and it is answered as an error, never a panic.
fn unplanned(checkout_request_id: &str) -> StoreError {
    StoreError::Corrupt {
        pk: checkout_request_id.to_owned(),
        detail: "the rules planned a change to a record that is not stored".to_owned(),
    }
}

/// The queue a write leaves the payment in: the one it was in while it stays `PENDING` or
/// `EXPIRED`, none once it is final (the DynamoDB writes remove the index keys alike).
fn queue_kept(
    items: &HashMap<String, Stored>,
    checkout_request_id: &str,
    record: &PaymentRecord,
) -> Option<(QueryQueue, DateTime<Utc>)> {
    let queued = items.get(checkout_request_id).and_then(|s| s.queued)?;
    (record.status == queued.0.status()).then_some(queued)
}

fn with_details(
    mut record: PaymentRecord,
    payment: &NewPayment,
    now: DateTime<Utc>,
) -> PaymentRecord {
    record.merchant_request_id = Some(payment.merchant_request_id.clone());
    record.amount = Some(payment.amount());
    record.phone = Some(payment.charge.phone.as_str().to_owned());
    record.reference = Some(payment.charge.reference.as_str().to_owned());
    record.description = Some(payment.charge.description.as_str().to_owned());
    record.created_at = Some(timestamp::truncate(payment.created_at));
    record.updated_at = now;
    record.details_recorded = true;
    if record.callback_nonce.is_none() {
        record.callback_nonce.clone_from(&payment.callback_nonce);
    }
    if payment.created_by.is_some() {
        record.created_by.clone_from(&payment.created_by);
    }
    record
}

fn new_pending(payment: &NewPayment, now: DateTime<Utc>) -> PaymentRecord {
    with_details(
        PaymentRecord::blank(&payment.checkout_request_id, PaymentStatus::Pending, now),
        payment,
        now,
    )
}

/// The verdict a result's write records, and the payment holding its receipt when that is
/// another one.
struct Written {
    verdict: Verdict,
    holder: Option<String>,
}

impl Written {
    fn apply(&self, record: &mut PaymentRecord) {
        record.status = self.verdict.status;
        record.review_reason = self.verdict.review_reason;
        if self.holder.is_some() {
            record.receipt_holder.clone_from(&self.holder);
        }
    }

    fn settled(&self, orphan: bool, enriched: bool) -> Applied {
        Applied::Transitioned(Settled {
            status: self.verdict.status,
            review_reason: self.verdict.review_reason,
            orphan,
            enriched,
        })
    }
}

/// Mirrors the DynamoDB transition write: result fields are set when present, the
/// merchant id from the request wins, request details stay.
fn with_result(
    existing: Option<PaymentRecord>,
    result: &PaymentResult,
    written: &Written,
    now: DateTime<Utc>,
) -> PaymentRecord {
    let mut record = existing.unwrap_or_else(|| {
        // An orphan keeps the nonce of the URL it came to, for its pending write to check.
        let mut orphan =
            PaymentRecord::blank(&result.checkout_request_id, written.verdict.status, now);
        orphan.callback_nonce.clone_from(&result.callback_nonce);
        orphan
    });
    if record.merchant_request_id.is_none() {
        record.merchant_request_id = Some(result.merchant_request_id.clone());
    }
    written.apply(&mut record);
    record.completed_at = Some(timestamp::truncate(result.received_at));
    record.updated_at = now;
    record.result_code = Some(result.result_code.code().to_owned());
    record.result_desc = Some(result.result_desc.clone());
    record.outcome = Some(result.outcome().to_owned());
    let keep = |new: &Option<String>, old: &mut Option<String>| {
        if new.is_some() {
            old.clone_from(new);
        }
    };
    keep(&result.receipt, &mut record.receipt);
    keep(&result.amount_paid, &mut record.amount_paid);
    keep(&result.paying_phone, &mut record.paying_phone);
    keep(&result.transaction_date, &mut record.transaction_date);
    keep(&result.raw, &mut record.raw_callback);
    if result.amount_paid_whole.is_some() {
        record.amount_paid_whole = result.amount_paid_whole;
    }
    record.reconciled_by = Some(result.source);
    record
}

/// Mirrors the DynamoDB enrichment write: the callback's details join a record an STK
/// query completed; the result, its time and `reconciled_by` stay the query's.
fn with_receipt(
    mut record: PaymentRecord,
    result: &PaymentResult,
    written: &Written,
    now: DateTime<Utc>,
) -> PaymentRecord {
    written.apply(&mut record);
    record.updated_at = now;
    record.receipt.clone_from(&result.receipt);
    record.amount_paid.clone_from(&result.amount_paid);
    record.amount_paid_whole = result.amount_paid_whole;
    record.paying_phone.clone_from(&result.paying_phone);
    record.transaction_date.clone_from(&result.transaction_date);
    record.raw_callback.clone_from(&result.raw);
    record
}

#[async_trait]
impl PaymentStore for MemoryStore {
    async fn record_pending(&self, payment: &NewPayment) -> Result<PendingWrite, StoreError> {
        let now = self.now();
        let mut items = self.items();
        let stored = items.get(&payment.checkout_request_id);
        let existing = stored.map(|s| with_details(s.record.clone(), payment, now));
        let outcome = match (plan_pending(payment, stored.map(|s| &s.record)), existing) {
            (PendingPlan::Open, existing) => {
                PendingWrite::Created(existing.unwrap_or_else(|| new_pending(payment, now)))
            }
            (PendingPlan::AddDetails(status), Some(mut record)) => {
                record.status = status;
                PendingWrite::ResultAlreadyKnown(record)
            }
            (plan @ (PendingPlan::FlagForReview | PendingPlan::Unbound), Some(mut record)) => {
                record.status = PaymentStatus::NeedsReview;
                record.review_reason = plan.review_reason();
                PendingWrite::FlaggedForReview(record)
            }
            (
                PendingPlan::AddDetails(_) | PendingPlan::FlagForReview | PendingPlan::Unbound,
                None,
            ) => return Err(unplanned(&payment.checkout_request_id)),
        };
        // Pending again (back among the payments never queried), or final: in no other queue.
        items.insert(
            payment.checkout_request_id.clone(),
            Stored {
                record: outcome.record().clone(),
                orphan_since: None,
                queued: None,
            },
        );
        Ok(outcome)
    }

    async fn apply_result(&self, result: &PaymentResult) -> Result<Applied, StoreError> {
        let now = self.now();
        let mut items = self.items();
        let stored = items.get(&result.checkout_request_id).cloned();
        let plan = plan_result(result, stored.as_ref().map(|s| &s.record));
        let written = |status| self.claim_receipt(result, status);
        let (applied, record) = match (plan, stored.map(|s| s.record)) {
            (ResultPlan::Transition(status), existing) => {
                let written = written(status);
                let record = with_result(existing, result, &written, now);
                (written.settled(false, false), record)
            }
            (ResultPlan::CreateOrphan(status), _) => {
                let written = written(status);
                let record = with_result(None, result, &written, now);
                (written.settled(true, false), record)
            }
            (ResultPlan::Enrich(status), Some(record)) => {
                let written = written(status);
                let record = with_receipt(record, result, &written, now);
                (written.settled(false, true), record)
            }
            // A replay changes nothing, and writes nothing.
            (ResultPlan::Duplicate, Some(record)) => (Applied::Duplicate(record.clone()), record),
            (ResultPlan::Review(reason), Some(mut record)) => {
                record.history.push(result.history_entry());
                if result.source == ResultSource::Callback {
                    record.conflicting_callbacks += 1;
                }
                record.status = PaymentStatus::NeedsReview;
                record.review_reason = Some(reason);
                record.updated_at = now;
                (Applied::Flagged(record.clone()), record)
            }
            (ResultPlan::Unbound, Some(record)) => (Applied::Unbound(record.clone()), record),
            (
                ResultPlan::Enrich(_)
                | ResultPlan::Review(_)
                | ResultPlan::Duplicate
                | ResultPlan::Conflict
                | ResultPlan::Unbound,
                None,
            ) => return Err(unplanned(&result.checkout_request_id)),
            (ResultPlan::Conflict, Some(mut record)) => {
                record.history.push(result.history_entry());
                if result.source == ResultSource::Callback {
                    record.conflicting_callbacks += 1;
                }
                (Applied::Conflict(record.clone()), record)
            }
        };
        let orphan_since = match &applied {
            Applied::Transitioned(Settled { orphan: true, .. }) => {
                Some(timestamp::truncate(result.received_at))
            }
            _ => items
                .get(&result.checkout_request_id)
                .and_then(|s| s.orphan_since),
        };
        let queued = queue_kept(&items, &result.checkout_request_id, &record);
        items.insert(
            result.checkout_request_id.clone(),
            Stored {
                record,
                orphan_since,
                queued,
            },
        );
        Ok(applied)
    }

    async fn hold_for_confirmation(
        &self,
        checkout_request_id: &str,
        held: &HeldCallback,
    ) -> Result<Hold, StoreError> {
        let mut items = self.items();
        let Some(stored) = items.get_mut(checkout_request_id) else {
            return Ok(Hold::NotOpen(None));
        };
        let queue = match stored.record.status {
            PaymentStatus::Pending => QueryQueue::Retry,
            PaymentStatus::Expired => QueryQueue::Expired,
            _ => return Ok(Hold::NotOpen(Some(Box::new(stored.record.clone())))),
        };
        if !held.is_bound_to(&stored.record) {
            return Ok(Hold::NotOpen(Some(Box::new(stored.record.clone()))));
        }
        let mut held = held.clone();
        held.received_at = timestamp::truncate(held.received_at);
        stored.queued = Some((queue, held.received_at));
        stored.record.held_callback = Some(held);
        Ok(Hold::Held)
    }

    async fn get(&self, checkout_request_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        Ok(self
            .items()
            .get(checkout_request_id)
            .map(|s| s.record.clone()))
    }

    async fn orphans(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError> {
        let items = self.items();
        let mut orphans: Vec<_> = items
            .values()
            .filter_map(|s| s.orphan_since.map(|at| (at, &s.record)))
            .collect();
        orphans
            .sort_by(|a, b| (a.0, &a.1.checkout_request_id).cmp(&(b.0, &b.1.checkout_request_id)));
        Ok(orphans
            .into_iter()
            .take(limit as usize)
            .map(|(_, record)| record.clone())
            .collect())
    }

    async fn recent_orphans(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError> {
        let mut all = self.orphans(u32::MAX).await?;
        all.reverse();
        all.truncate(limit as usize);
        Ok(all)
    }

    async fn pending_older_than(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let cutoff = timestamp::truncate(cutoff);
        let items = self.items();
        let mut pending: Vec<_> = items
            .values()
            .filter(|s| s.record.status == PaymentStatus::Pending && s.queued.is_none())
            .filter_map(|s| {
                s.record
                    .created_at
                    .map(|at| (at, &s.record.checkout_request_id))
            })
            .filter(|(at, _)| *at < cutoff)
            .collect();
        pending.sort();
        Ok(pending
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id.clone())
            .collect())
    }

    async fn by_reference(
        &self,
        reference: &str,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError> {
        let items = self.items();
        let mut found: Vec<_> = items
            .values()
            .map(|s| &s.record)
            .filter(|r| r.details_recorded && r.reference.as_deref() == Some(reference))
            .collect();
        found.sort_by(|a, b| {
            (b.created_at, &b.checkout_request_id).cmp(&(a.created_at, &a.checkout_request_id))
        });
        Ok(found.into_iter().take(limit as usize).cloned().collect())
    }

    async fn due_for_query(
        &self,
        queue: QueryQueue,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let now = timestamp::truncate(now);
        let items = self.items();
        let mut due: Vec<_> = items
            .values()
            .filter_map(|s| match s.queued {
                Some((q, at)) if q == queue && at <= now => {
                    Some((at, s.record.checkout_request_id.clone()))
                }
                _ => None,
            })
            .collect();
        due.sort();
        Ok(due
            .into_iter()
            .take(limit as usize)
            .map(|(_, id)| id)
            .collect())
    }

    async fn record_query_attempt(
        &self,
        checkout_request_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError> {
        let now = self.now();
        Ok(match self.items().get_mut(checkout_request_id) {
            Some(stored)
                if matches!(
                    stored.record.status,
                    PaymentStatus::Pending | PaymentStatus::Expired
                ) =>
            {
                stored.record.query_attempts += 1;
                stored.record.last_queried_at = Some(now);
                Some(stored.record.clone())
            }
            _ => None,
        })
    }

    async fn schedule_query(
        &self,
        checkout_request_id: &str,
        queue: QueryQueue,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        Ok(match self.items().get_mut(checkout_request_id) {
            Some(stored) if stored.record.status == queue.status() => {
                stored.queued = next.map(|at| (queue, timestamp::truncate(at)));
                true
            }
            _ => false,
        })
    }

    async fn expire(
        &self,
        checkout_request_id: &str,
        at: DateTime<Utc>,
        requery_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        match self.items().get_mut(checkout_request_id) {
            Some(stored) if stored.record.status == PaymentStatus::Pending => {
                stored.record.status = PaymentStatus::Expired;
                stored.record.updated_at = timestamp::truncate(at);
                stored.queued =
                    requery_at.map(|next| (QueryQueue::Expired, timestamp::truncate(next)));
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::MemoryStore;

    async fn store() -> MemoryStore {
        MemoryStore::new()
    }

    crate::payment_store_conformance!(store);

    /// Every write is dated by the clock the store was given, never the machine's own.
    #[tokio::test]
    async fn writes_are_dated_by_the_stores_clock() {
        use crate::conformance::{payment, success};
        use crate::store::PaymentStore;
        let at = crate::payment::timestamp::parse("2030-01-01T09:30:00.000Z").unwrap();
        let store = MemoryStore::with_clock(std::sync::Arc::new(daraja::FixedClock::new(at)));
        let written = store
            .record_pending(&payment("ws_CO_dated", 100))
            .await
            .unwrap();
        assert_eq!(written.record().updated_at, at);
        store
            .apply_result(&success("ws_CO_dated", "100", Some(100)))
            .await
            .unwrap();
        let applied = store.get("ws_CO_dated").await.unwrap().unwrap();
        assert_eq!(applied.updated_at, at);
    }
}
