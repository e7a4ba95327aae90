//! Where payment records live: the [`PaymentStore`] trait, DynamoDB and in-memory.
//!
//! The pending write (after Daraja's acknowledgement) and the result (callback or STK
//! query) race: a callback can beat the pending write, and callbacks can be delivered
//! twice. Both writes therefore commute — either order ends in the same record — and
//! each is a single conditional write in the common path, never read-then-write.
//! Which write does what is decided by [`plan_pending`](crate::payment::plan_pending)
//! and [`plan_result`](crate::payment::plan_result), shared by both implementations;
//! [`conformance`](crate::conformance) holds the behaviour both must show.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::payment::{
    HeldCallback, NewPayment, PaymentRecord, PaymentResult, PaymentStatus, ReviewReason,
};

type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the store could not answer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Throttling, a 5xx, the network, or a table that cannot be reached: worth retrying.
    #[error("payment store unavailable: {0}")]
    Unavailable(#[source] BoxError),
    /// A stored item that does not decode into a [`PaymentRecord`].
    #[error("stored payment {pk} cannot be read: {detail}")]
    Corrupt { pk: String, detail: String },
}

impl StoreError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// What a pending write found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PendingWrite {
    /// The record is pending (created now, or already pending from an earlier write).
    Created(PaymentRecord),
    /// The result had arrived first: the details were added to the final record, whose
    /// status stays.
    ResultAlreadyKnown(PaymentRecord),
    /// A success for another amount had arrived first, or a result delivered to another
    /// payment's callback URL: the details were added and this write turned the record
    /// `NEEDS_REVIEW` (`review_reason` says which).
    FlaggedForReview(PaymentRecord),
}

impl PendingWrite {
    pub fn record(&self) -> &PaymentRecord {
        match self {
            PendingWrite::Created(record)
            | PendingWrite::ResultAlreadyKnown(record)
            | PendingWrite::FlaggedForReview(record) => record,
        }
    }
}

/// What applying a result did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The record became final, or (`enriched`) a payment an STK query completed gained its
    /// callback's receipt. What the write recorded is known without the record: a write that
    /// claims a receipt is a transaction, and a transaction answers no item.
    Transitioned(Settled),
    /// The record was final, and this result says money may have moved where it said
    /// otherwise: it is `NEEDS_REVIEW` now (`review_reason` says why), the result is in
    /// history, and its first result stays.
    Flagged(PaymentRecord),
    /// The record was already final with the same result; counted, nothing else changed.
    Duplicate(PaymentRecord),
    /// The record was already final with another result; the new one went to history.
    Conflict(PaymentRecord),
    /// The result was delivered to another payment's callback URL: nothing was written.
    Unbound(PaymentRecord),
}

/// What a transition recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settled {
    pub status: PaymentStatus,
    pub review_reason: Option<ReviewReason>,
    /// No pending write was known: the record was created from the result alone and is
    /// listed in [`PaymentStore::orphans`].
    pub orphan: bool,
    /// The success callback of a payment an STK query had completed added its receipt,
    /// amount paid and paying phone (and may have turned it `NEEDS_REVIEW`): the record
    /// changed as a transition changes it, though its result stays the query's.
    pub enriched: bool,
}

/// What [`PaymentStore::hold_for_confirmation`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hold {
    /// Kept on the open payment, which is due for a query now.
    Held,
    /// The payment is not open (final), the callback is another payment's, or there is no
    /// payment yet (`None`): nothing was written, and the result is applied as it is, since
    /// it cannot complete a payment that an unconfirmed success could.
    NotOpen(Option<Box<PaymentRecord>>),
}

#[async_trait]
pub trait PaymentStore: Send + Sync {
    /// Records the request details once Daraja has acknowledged the push.
    ///
    /// Commutes with [`apply_result`](Self::apply_result): if the result came first the
    /// record stays final, gains the details, stops being an orphan, and turns
    /// `NEEDS_REVIEW` if the amount paid differs from the amount requested.
    async fn record_pending(&self, payment: &NewPayment) -> Result<PendingWrite, StoreError>;

    /// Applies a final result. Only an open record (`PENDING`, or `EXPIRED` because we
    /// gave up waiting) changes status; a final one only counts duplicates and keeps
    /// contradicting results in its history. One exception: a success callback for a
    /// payment an STK query completed fills in the receipt the query could not report
    /// (see [`ResultPlan::Enrich`](crate::payment::ResultPlan::Enrich)).
    ///
    /// A receipt is recorded on one payment only: the write that records it claims it, and
    /// a receipt another payment holds turns this one `NEEDS_REVIEW` (`receipt_reused`).
    async fn apply_result(&self, result: &PaymentResult) -> Result<Applied, StoreError>;

    /// Keeps a success callback on its payment until an STK query confirms it, when the
    /// payment is open (`PENDING` or `EXPIRED`) and the callback was delivered to its URL: the
    /// payment's status stays, and it is put at the head of its query queue (`Retry` or
    /// `Expired`, due at the callback's `received_at`). One conditional write.
    async fn hold_for_confirmation(
        &self,
        checkout_request_id: &str,
        held: &HeldCallback,
    ) -> Result<Hold, StoreError>;

    async fn get(&self, checkout_request_id: &str) -> Result<Option<PaymentRecord>, StoreError>;

    /// Results that matched no pending write, oldest first.
    async fn orphans(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError>;

    /// The same, newest first.
    async fn recent_orphans(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError>;

    /// Checkout ids still pending and never scheduled for a retry ([`QueryQueue::New`]) that
    /// were created before `cutoff`, oldest first.
    async fn pending_older_than(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// The payments recorded with the merchant's `reference` (a pending write was made), newest
    /// first, at most `limit`.
    async fn by_reference(
        &self,
        reference: &str,
        limit: u32,
    ) -> Result<Vec<PaymentRecord>, StoreError>;

    /// Checkout ids waiting in `queue` ([`QueryQueue::Retry`] or [`QueryQueue::Expired`])
    /// whose next query is due by `now`, earliest first. (`New` is
    /// [`pending_older_than`](Self::pending_older_than).)
    async fn due_for_query(
        &self,
        queue: QueryQueue,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError>;

    /// Counts one STK query made for a `PENDING` or `EXPIRED` payment and answers the record
    /// as it is now; `None` (nothing counted) once it is otherwise final or unknown.
    async fn record_query_attempt(
        &self,
        checkout_request_id: &str,
    ) -> Result<Option<PaymentRecord>, StoreError>;

    /// Puts a payment that is still `PENDING` (for [`QueryQueue::Retry`]) or `EXPIRED` (for
    /// [`QueryQueue::Expired`]) in that queue, due at `next`, or in no queue at all when
    /// `next` is `None`. Returns whether the payment was in that status.
    async fn schedule_query(
        &self,
        checkout_request_id: &str,
        queue: QueryQueue,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;

    /// Marks a pending payment `EXPIRED`, to be queried again at `requery_at` (in the
    /// [`QueryQueue::Expired`] queue), or never when `None`. Returns whether it was pending.
    async fn expire(
        &self,
        checkout_request_id: &str,
        at: DateTime<Utc>,
        requery_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;
}

/// Where a payment waits for its next STK query. Each is read in its own order, so payments
/// never queried come first and one stuck payment cannot take every query of a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryQueue {
    /// `PENDING`, never queried: by creation time.
    New,
    /// `PENDING`, queried without a final answer: by the time its back-off ends.
    Retry,
    /// `EXPIRED`: queried again now and then while a late answer is still worth having.
    Expired,
}

impl QueryQueue {
    /// The partition of the pending index holding this queue.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryQueue::New => "PENDING",
            QueryQueue::Retry => "RETRY",
            QueryQueue::Expired => "EXPIRED",
        }
    }

    /// The status a payment in this queue has.
    pub fn status(self) -> PaymentStatus {
        match self {
            QueryQueue::New | QueryQueue::Retry => PaymentStatus::Pending,
            QueryQueue::Expired => PaymentStatus::Expired,
        }
    }
}
