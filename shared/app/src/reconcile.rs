//! Reconciliation: learning the outcome of payments whose callback never came.
//!
//! Safaricom does not resend a callback it could not deliver; the STK query is the only way to
//! learn such a payment's outcome. A scheduled round reads three queues from the sparse
//! pending-index (no scan): payments never queried, a grace period after their creation, oldest
//! first; payments queried before without a final answer, whose back-off has ended, earliest
//! first; and `EXPIRED` payments due for another look. It queries them in that order within
//! Daraja's rate limit and before its own deadline, so the least recently queried go first and a
//! few stuck payments cannot take every query of every minute. A final answer is applied with
//! the same conditional write as a callback, so a callback and a query racing for one payment
//! make one transition, and a query never overwrites a final state. A payment without a final
//! answer waits a growing back-off; past the maximum age it becomes `EXPIRED`, but only after a
//! "being processed" answer or a number of attempts, never for want of budget; and an `EXPIRED`
//! payment is still queried, at growing intervals, for a day: a late answer moves it to its
//! real outcome.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::metrics::{self, Metric};
use daraja::client::MIN_CALL_TIME;
use daraja::{mask_id, Clock, Daraja, DarajaError, Deadline, QueryAnswer, ResultCode};
use payments::intent::PushLedger;
use payments::link::{link_to_push_in_doubt, Link};
use payments::payment::{HeldCallback, PaymentRecord, PaymentResult, PaymentStatus, ResultSource};
use payments::{Applied, PaymentStore, QueryQueue, StoreError};

/// How many payments one round reads from each queue: more than the queries a round may make.
const ROUND_BATCH: u32 = 100;

/// The longest back-off between two queries of a pending payment.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// The longest interval between two queries of an expired payment.
const MAX_EXPIRED_RETRY_AFTER: Duration = Duration::from_secs(4 * 3600);

/// How long after its creation an expired payment is still queried: a day, as long as
/// Daraja is known to answer a query for a push.
pub const EXPIRED_QUERIED_FOR: Duration = Duration::from_secs(24 * 3600);

/// How many of the newest orphan results a round tries to link to a push in doubt, and how
/// recent they must be: a push is in doubt at most a minute or so after its result can come.
const LINK_BATCH: u32 = 50;
const LINK_WINDOW: chrono::Duration = chrono::Duration::minutes(15);

/// What a round keeps at the end of its invocation: no query starts with less left (the
/// query's own minimum, and time to record its answer).
const ROUND_RESERVE: Duration = Duration::from_secs(3);

/// The knobs of a round, read from the environment at cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// How long after its creation a payment is left to its callback before it is queried.
    /// The customer has about 90 s to answer the prompt.
    pub grace: Duration,
    /// How long after its creation a payment with no final answer may become `EXPIRED`.
    pub max_age: Duration,
    /// STK queries allowed per clock minute (the sandbox allows about 5 per 60 s).
    pub max_queries_per_minute: u32,
    /// The first back-off after a query without a final answer; it doubles after each, up to
    /// five minutes.
    pub retry_after: Duration,
    /// Queries a payment past the maximum age must have had, none of them answered "being
    /// processed", before it becomes `EXPIRED` (one "being processed" answer is enough).
    pub min_attempts: u32,
    /// The first interval before an `EXPIRED` payment is queried again; then each interval is
    /// as long as the payment has been expired (they double), up to four hours, for
    /// [`EXPIRED_QUERIED_FOR`] after its creation.
    pub expired_retry_after: Duration,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(90),
            max_age: Duration::from_secs(900),
            max_queries_per_minute: 5,
            retry_after: Duration::from_secs(30),
            min_attempts: 3,
            expired_retry_after: Duration::from_secs(900),
        }
    }
}

impl ReconcileSettings {
    /// The back-off after the `attempts`-th query of a pending payment.
    fn retry_after(&self, attempts: u32) -> Duration {
        doubled(self.retry_after, attempts, MAX_RETRY_AFTER)
    }

    /// The interval before the next query of a payment expired `since` ago: as long as it has
    /// been expired (so the intervals double), at least the first interval, at most four hours.
    fn expired_retry_after(&self, since: Duration) -> Duration {
        since
            .max(self.expired_retry_after)
            .min(MAX_EXPIRED_RETRY_AFTER.max(self.expired_retry_after))
    }
}

/// `first`, doubled for each attempt after the first, at most `cap` (and at least `first`).
fn doubled(first: Duration, attempts: u32, cap: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    first.saturating_mul(1 << doublings).min(cap.max(first))
}

/// Why a round stopped querying before it had queried every due payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    /// This minute's query budget is spent.
    BudgetSpent,
    /// Daraja answered HTTP 429.
    RateLimited,
    /// Daraja answered 5xx, could not be reached or did not answer in time.
    DarajaUnavailable,
    /// The token endpoint refused the credentials: every query would fail.
    AuthFailed,
    /// The invocation's deadline is near: the next round goes on.
    DeadlineNear,
}

/// What one round did; the function returns it and logs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoundReport {
    /// Pending payments due for a query that the round read: never queried and past the grace
    /// period, or queried before and past their back-off.
    pub due: u32,
    /// `EXPIRED` payments due for another query (queried after the pending ones).
    pub expired_due: u32,
    /// STK queries sent.
    pub queried: u32,
    /// Payments a query made final (`COMPLETED`, `FAILED` or `NEEDS_REVIEW`).
    pub resolved: u32,
    /// Payments whose callback got there first; the query changed nothing.
    pub already_final: u32,
    /// Queries that brought no final answer (processing, 4999, refused, 429, 5xx).
    pub not_final: u32,
    /// Payments marked `EXPIRED`.
    pub expired: u32,
    /// Payments queried without a final answer and given their next query time.
    pub deferred: u32,
    /// Orphan results linked to the push in doubt on their phone (they came while it still ran).
    pub linked: u32,
    /// Store writes that failed; the payment is tried again next round.
    pub store_errors: u32,
    pub stopped: Option<StopReason>,
}

/// STK queries spent in the current clock minute. Kept across invocations of one container,
/// so runs within the same minute (a retry, a manual run) share one minute's budget.
#[derive(Debug, Default)]
struct MinuteBudget {
    minute: i64,
    used: u32,
}

impl MinuteBudget {
    fn take(&mut self, now: DateTime<Utc>, limit: u32) -> bool {
        let minute = now.timestamp().div_euclid(60);
        if minute != self.minute {
            self.minute = minute;
            self.used = 0;
        }
        if self.used >= limit {
            return false;
        }
        self.used += 1;
        true
    }
}

/// Runs reconciliation rounds. Build one per process and call [`Reconciler::run_round`] on each
/// scheduled invocation.
#[derive(Debug)]
pub struct Reconciler {
    settings: ReconcileSettings,
    budget: Mutex<MinuteBudget>,
}

/// What one query led to.
enum Step {
    Resolved,
    AlreadyFinal,
    /// No final answer; the payment keeps its place (nothing was sent or counted).
    NotFinal,
    /// No final answer; the payment waits for its next query time.
    Deferred,
    /// No final answer past the maximum age: the payment is `EXPIRED` now.
    Expired,
    StoreError,
}

impl Reconciler {
    pub fn new(settings: ReconcileSettings) -> Self {
        Self {
            settings,
            budget: Mutex::new(MinuteBudget::default()),
        }
    }

    pub fn settings(&self) -> &ReconcileSettings {
        &self.settings
    }

    fn take_query(&self, now: DateTime<Utc>) -> bool {
        // A plain counter: still valid after a panic elsewhere.
        self.budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take(now, self.settings.max_queries_per_minute)
    }

    /// One round: query the due payments (never queried first, then those whose back-off has
    /// ended, then expired ones) while the minute's budget and the invocation's `deadline`
    /// last. Fails only if the queues cannot be read; a failed write for one payment is counted
    /// and the payment is tried again in a later round.
    pub async fn run_round(
        &self,
        store: &dyn PaymentStore,
        ledger: &dyn PushLedger,
        daraja: &dyn Daraja,
        clock: &dyn Clock,
        deadline: Deadline,
    ) -> Result<RoundReport, StoreError> {
        let linked = link_recent_orphans(store, ledger, clock).await;
        let now = clock.now();
        let new = store
            .pending_older_than(before(now, self.settings.grace), ROUND_BATCH)
            .await?;
        let retry = store
            .due_for_query(QueryQueue::Retry, now, ROUND_BATCH)
            .await?;
        let expired = store
            .due_for_query(QueryQueue::Expired, now, ROUND_BATCH)
            .await?;
        let count = |ids: &[String]| u32::try_from(ids.len()).unwrap_or(u32::MAX);
        let mut report = RoundReport {
            due: count(&new).saturating_add(count(&retry)),
            expired_due: count(&expired),
            linked,
            ..RoundReport::default()
        };
        for id in new.iter().chain(&retry).chain(&expired) {
            if deadline.remaining() < ROUND_RESERVE + MIN_CALL_TIME {
                report.stopped = Some(StopReason::DeadlineNear);
                break;
            }
            if !self.take_query(clock.now()) {
                report.stopped = Some(StopReason::BudgetSpent);
                tracing::info!(
                    max_queries_per_minute = self.settings.max_queries_per_minute,
                    "query budget for this minute spent"
                );
                break;
            }
            report.queried += 1;
            let by = deadline.earlier_by(ROUND_RESERVE);
            let (step, stop) = self.query_one(store, daraja, clock, id, by).await;
            match step {
                Step::Resolved => report.resolved += 1,
                Step::AlreadyFinal => report.already_final += 1,
                Step::NotFinal => report.not_final += 1,
                Step::Deferred => {
                    report.not_final += 1;
                    report.deferred += 1;
                }
                Step::Expired => {
                    report.not_final += 1;
                    report.expired += 1;
                }
                Step::StoreError => report.store_errors += 1,
            }
            if stop.is_some() {
                report.stopped = stop;
                break;
            }
        }
        tracing::info!(
            due = report.due,
            expired_due = report.expired_due,
            queried = report.queried,
            resolved = report.resolved,
            already_final = report.already_final,
            not_final = report.not_final,
            deferred = report.deferred,
            linked = report.linked,
            expired = report.expired,
            store_errors = report.store_errors,
            stopped = ?report.stopped,
            "reconciliation round"
        );
        Ok(report)
    }

    /// After a query without a final answer for `record` (as counted): its next query time, or
    /// `EXPIRED` when it is past the maximum age and a "being processed" answer or enough
    /// attempts say waiting longer will not help.
    async fn reschedule(
        &self,
        store: &dyn PaymentStore,
        clock: &dyn Clock,
        record: &PaymentRecord,
        processing: bool,
    ) -> Step {
        let now = clock.now();
        let id = record.checkout_request_id.as_str();
        let masked = mask_id(id);
        let created = record.created_at.unwrap_or(now);
        let age = (now - created).to_std().unwrap_or_default();
        let attempts = record.query_attempts;
        let written = match record.status {
            PaymentStatus::Pending
                if age >= self.settings.max_age
                    && (processing || attempts >= self.settings.min_attempts) =>
            {
                let requery = after(now, self.settings.expired_retry_after(Duration::ZERO));
                match store.expire(id, now, requery).await {
                    Ok(true) => {
                        metrics::count(Metric::PaymentExpired);
                        tracing::warn!(
                            checkout_request_id = %masked,
                            max_age_secs = self.settings.max_age.as_secs(),
                            query_attempts = attempts,
                            "payment expired: outcome unknown — check the M-Pesa portal"
                        );
                        return Step::Expired;
                    }
                    other => other,
                }
            }
            PaymentStatus::Pending => {
                let next = after(now, self.settings.retry_after(attempts));
                store.schedule_query(id, QueryQueue::Retry, next).await
            }
            PaymentStatus::Expired => {
                // `updated_at` of an expired payment is when it expired.
                let since = (now - record.updated_at).to_std().unwrap_or_default();
                let next = after(now, self.settings.expired_retry_after(since))
                    .filter(|next| *next < created + chrono_duration(EXPIRED_QUERIED_FOR));
                if next.is_none() {
                    tracing::warn!(
                        checkout_request_id = %masked,
                        query_attempts = attempts,
                        "expired payment no longer queried: no answer within a day — check the M-Pesa portal"
                    );
                }
                store.schedule_query(id, QueryQueue::Expired, next).await
            }
            // Final meanwhile: nothing to schedule.
            _ => return Step::NotFinal,
        };
        match written {
            Ok(true) => Step::Deferred,
            // A result arrived meanwhile.
            Ok(false) => Step::NotFinal,
            Err(error) => {
                tracing::error!(checkout_request_id = %masked, error = %error, "next query could not be scheduled");
                Step::StoreError
            }
        }
    }

    /// Queries one payment and applies what it learns. Returns the step and, when Daraja said
    /// to stop for this round, why.
    async fn query_one(
        &self,
        store: &dyn PaymentStore,
        daraja: &dyn Daraja,
        clock: &dyn Clock,
        id: &str,
        by: Deadline,
    ) -> (Step, Option<StopReason>) {
        let masked = mask_id(id);
        metrics::count(Metric::ReconciliationQuery);
        let answer = daraja.stk_query(id, by).await;
        let (sent, stop) = match &answer {
            Ok(_) => (true, None),
            Err(DarajaError::RateLimited) => (true, Some(StopReason::RateLimited)),
            Err(DarajaError::Auth { .. }) => (false, Some(StopReason::AuthFailed)),
            Err(DarajaError::Unavailable { http_status, .. }) => {
                (http_status.is_some(), Some(StopReason::DarajaUnavailable))
            }
            Err(DarajaError::TimedOut) => (true, Some(StopReason::DarajaUnavailable)),
            Err(DarajaError::Rejected { .. } | DarajaError::BadResponse { .. }) => (true, None),
        };
        // The record as counted: what the next query time depends on. `None` when nothing was
        // sent, the payment is final already, or the count failed (it stays where it is).
        let counted = if sent {
            match store.record_query_attempt(id).await {
                Ok(record) => record,
                Err(error) => {
                    tracing::warn!(checkout_request_id = %masked, error = %error, "query attempt not counted");
                    None
                }
            }
        } else {
            None
        };
        let held = counted.as_ref().and_then(|r| r.held_callback.clone());
        let not_final = |processing: bool| async move {
            match &counted {
                Some(record) => self.reschedule(store, clock, record, processing).await,
                None => Step::NotFinal,
            }
        };
        let (result_code, result_desc, merchant_request_id) = match answer {
            Ok(QueryAnswer::Final {
                result_code,
                result_desc,
                merchant_request_id,
            }) => (result_code, result_desc, merchant_request_id),
            Ok(QueryAnswer::Processing) => {
                tracing::info!(checkout_request_id = %masked, "payment still being processed");
                return (not_final(true).await, None);
            }
            Err(error) => {
                metrics::daraja_error(&error);
                tracing::warn!(
                    checkout_request_id = %masked,
                    error = %error,
                    error_code = error.error_code(),
                    stops_round = stop.is_some(),
                    "query brought no answer"
                );
                return (not_final(false).await, stop);
            }
        };
        let result = query_result(
            id,
            &result_code,
            result_desc,
            merchant_request_id,
            clock.now(),
        );
        let step = match store.apply_result(&result).await {
            Ok(Applied::Transitioned(settled)) => {
                metrics::payment_final(settled.status, result.outcome());
                tracing::info!(
                    checkout_request_id = %masked,
                    status = settled.status.as_str(),
                    result_code = %result.result_code,
                    outcome = result.outcome(),
                    "payment reconciled by query"
                );
                (Step::Resolved, None)
            }
            // A query carries no receipt, so it never flags a final payment; were it to, the
            // record is under review and counted like any other.
            Ok(Applied::Flagged(record)) => {
                metrics::count(Metric::PaymentNeedsReview);
                tracing::warn!(
                    checkout_request_id = %masked,
                    review_reason = record.review_reason.map(|r| r.as_str()),
                    "query result contradicts a final payment; it needs review"
                );
                (Step::Resolved, None)
            }
            Ok(
                Applied::Duplicate(record) | Applied::Conflict(record) | Applied::Unbound(record),
            ) => {
                // The callback won the race; its result stands.
                tracing::info!(
                    checkout_request_id = %masked,
                    status = record.status.as_str(),
                    query_result_code = %result.result_code,
                    "payment already final; query result not applied"
                );
                (Step::AlreadyFinal, None)
            }
            Err(error) => {
                // Logged in full so the result can be applied by hand if the next round fails too.
                tracing::error!(
                    checkout_request_id = %masked,
                    result_code = %result.result_code,
                    error = %error,
                    "query result could not be stored"
                );
                (Step::StoreError, None)
            }
        };
        // A success callback held for this query is applied now, after the query's answer:
        // confirmed, it adds its receipt (or its amount turns the payment NEEDS_REVIEW);
        // contradicted, the payment needs review.
        if let Some(held) = &held {
            confirm_held(store, id, held, &result).await;
        }
        step
    }
}

/// Applies the success callback held for `id` once the STK query answered `query`: it is
/// the callback's own result, under the rules of any late callback.
async fn confirm_held(
    store: &dyn PaymentStore,
    id: &str,
    held: &HeldCallback,
    query: &PaymentResult,
) {
    let masked = mask_id(id);
    let result = match held.result(id) {
        Ok(result) => result,
        Err(error) => {
            tracing::error!(checkout_request_id = %masked, error = %error, "held callback unreadable; check it by hand");
            return;
        }
    };
    let confirmed = query.is_success();
    match store.apply_result(&result).await {
        Ok(Applied::Transitioned(settled)) => {
            if settled.status == PaymentStatus::NeedsReview {
                metrics::count(Metric::PaymentNeedsReview);
            }
            tracing::info!(
                decision = "confirmed",
                checkout_request_id = %masked,
                status = settled.status.as_str(),
                review_reason = settled.review_reason.map(|r| r.as_str()),
                "held success confirmed by query and applied"
            );
        }
        Ok(Applied::Flagged(record)) => {
            metrics::count(Metric::PaymentNeedsReview);
            if !confirmed {
                metrics::count(Metric::CallbackUnconfirmed);
            }
            tracing::warn!(
                decision = "unconfirmed",
                checkout_request_id = %masked,
                query_result_code = %query.result_code,
                review_reason = record.review_reason.map(|r| r.as_str()),
                source_ip = held.source_ip.as_deref().unwrap_or(""),
                "held success not confirmed by the query; the payment needs review"
            );
        }
        Ok(other) => {
            let record = match &other {
                Applied::Duplicate(r) | Applied::Conflict(r) | Applied::Unbound(r) => Some(r),
                _ => None,
            };
            tracing::info!(
                checkout_request_id = %masked,
                status = record.map(|r| r.status.as_str()),
                "held success already applied or superseded"
            );
        }
        Err(error) => {
            tracing::error!(
                checkout_request_id = %masked,
                receipt = result.receipt.as_deref().unwrap_or(""),
                error = %error,
                "held success could not be applied; apply it by hand"
            );
        }
    }
}

/// The results of the last [`LINK_WINDOW`] that matched no recorded payment, linked to the push
/// in doubt on their phone where there is one: the callback links at once, but a result that
/// came while its push was still running (not yet in doubt) is found here. A failure leaves
/// them for the next round.
async fn link_recent_orphans(
    store: &dyn PaymentStore,
    ledger: &dyn PushLedger,
    clock: &dyn Clock,
) -> u32 {
    let now = clock.now();
    let orphans = match store.recent_orphans(LINK_BATCH).await {
        Ok(orphans) => orphans,
        Err(error) => {
            tracing::warn!(error = %error, "orphans not read; none linked this round");
            return 0;
        }
    };
    let mut linked = 0;
    for orphan in orphans {
        if orphan
            .completed_at
            .is_none_or(|received| received < now - LINK_WINDOW)
        {
            break;
        }
        let outcome = link_to_push_in_doubt(
            ledger,
            &orphan.checkout_request_id,
            orphan.merchant_request_id.as_deref().unwrap_or_default(),
            orphan.paying_phone.as_deref(),
            now,
        )
        .await;
        if matches!(outcome, Ok(Link::Linked { .. })) {
            linked += 1;
        }
        crate::link::log_link(&mask_id(&orphan.checkout_request_id), outcome);
    }
    linked
}

/// The domain result of a final query answer. A query reports only a code and a description:
/// no receipt, amount or phone.
pub fn query_result(
    checkout_request_id: &str,
    result_code: &ResultCode,
    result_desc: String,
    merchant_request_id: String,
    received_at: DateTime<Utc>,
) -> PaymentResult {
    PaymentResult {
        checkout_request_id: checkout_request_id.to_owned(),
        merchant_request_id,
        result_code: result_code.clone(),
        result_desc,
        receipt: None,
        amount_paid: None,
        amount_paid_whole: None,
        paying_phone: None,
        transaction_date: None,
        raw: None,
        contradictory: false,
        source: ResultSource::Query,
        received_at,
        callback_nonce: None,
    }
}

/// `now + duration`, or `None` past the end of time.
fn after(now: DateTime<Utc>, duration: Duration) -> Option<DateTime<Utc>> {
    now.checked_add_signed(chrono::Duration::from_std(duration).ok()?)
}

fn chrono_duration(duration: Duration) -> chrono::Duration {
    chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX)
}

/// `now - duration`, or the beginning of time for a duration too long to subtract.
fn before(now: DateTime<Utc>, duration: Duration) -> DateTime<Utc> {
    chrono::Duration::from_std(duration)
        .ok()
        .and_then(|d| now.checked_sub_signed(d))
        .unwrap_or(DateTime::<Utc>::MIN_UTC)
}

#[cfg(test)]
mod tests;
