//! Reconciliation: learning the outcome of payments whose callback never came.
//!
//! Safaricom does not resend a callback it could not deliver; the STK query is the only way to
//! learn such a payment's outcome. A scheduled round reads the payments still `PENDING` a grace
//! period after they were created (the sparse pending-index, oldest first, no scan), queries each
//! within Daraja's rate limit, and applies a final answer with the same conditional write as a
//! callback, so a callback and a query racing for one payment make one transition, and a query
//! never overwrites a final state. Answers that are not final ("being processed", a transient
//! `4999`, 429, 5xx) are counted on the record and tried again next round. A payment with no
//! final answer after the maximum age becomes `EXPIRED`: its outcome is unknown, and a result
//! that arrives later still moves it to the real outcome.

use std::collections::HashSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::metrics::{self, Metric};
use daraja::{mask_id, Clock, Daraja, DarajaError, QueryAnswer, ResultCode};
use payments::payment::{PaymentResult, ResultSource};
use payments::{Applied, PaymentStore, StoreError};

/// How many pending payments one round reads. Far more than the queries a round may make, so
/// that a backlog of payments past the maximum age is expired in few rounds.
const ROUND_BATCH: u32 = 100;

/// The knobs of a round, read from the environment at cold start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileSettings {
    /// How long after its creation a payment is left to its callback before it is queried.
    /// The customer has about 90 s to answer the prompt.
    pub grace: Duration,
    /// How long after its creation a payment with no final answer becomes `EXPIRED`.
    pub max_age: Duration,
    /// STK queries allowed per clock minute (the sandbox allows about 5 per 60 s).
    pub max_queries_per_minute: u32,
}

impl Default for ReconcileSettings {
    fn default() -> Self {
        Self {
            grace: Duration::from_secs(90),
            max_age: Duration::from_secs(900),
            max_queries_per_minute: 5,
        }
    }
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
}

/// What one round did; the function returns it and logs it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RoundReport {
    /// Pending payments past the grace period that the round read.
    pub due: u32,
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
    NotFinal,
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

    /// One round: query the due payments oldest first while the budget lasts, expire those past
    /// the maximum age that are still not final. Fails only if the pending payments cannot be
    /// read; a failed write for one payment is counted and left for the next round.
    pub async fn run_round(
        &self,
        store: &dyn PaymentStore,
        daraja: &dyn Daraja,
        clock: &dyn Clock,
    ) -> Result<RoundReport, StoreError> {
        let now = clock.now();
        let stale: HashSet<String> = store
            .pending_older_than(before(now, self.settings.max_age), ROUND_BATCH)
            .await?
            .into_iter()
            .collect();
        let due = store
            .pending_older_than(before(now, self.settings.grace), ROUND_BATCH)
            .await?;
        let mut report = RoundReport {
            due: u32::try_from(due.len()).unwrap_or(u32::MAX),
            ..RoundReport::default()
        };
        for id in &due {
            let past_max_age = stale.contains(id);
            if report.stopped.is_none() && !self.take_query(clock.now()) {
                report.stopped = Some(StopReason::BudgetSpent);
                tracing::info!(
                    max_queries_per_minute = self.settings.max_queries_per_minute,
                    "query budget for this minute spent"
                );
            }
            if report.stopped.is_none() {
                report.queried += 1;
                let (step, stop) = self.query_one(store, daraja, clock, id).await;
                report.stopped = stop;
                match step {
                    Step::Resolved => report.resolved += 1,
                    Step::AlreadyFinal => report.already_final += 1,
                    Step::NotFinal => report.not_final += 1,
                    Step::StoreError => report.store_errors += 1,
                }
                if !matches!(step, Step::NotFinal) {
                    continue;
                }
            } else if !past_max_age {
                // Oldest first: everything after this is younger, so nothing is left to expire.
                break;
            }
            if past_max_age {
                match store.expire(id, clock.now()).await {
                    Ok(true) => {
                        metrics::count(Metric::PaymentExpired);
                        report.expired += 1;
                        tracing::warn!(
                            checkout_request_id = %mask_id(id),
                            max_age_secs = self.settings.max_age.as_secs(),
                            "payment expired: outcome unknown — check the M-Pesa portal"
                        );
                    }
                    // A result arrived meanwhile.
                    Ok(false) => {}
                    Err(error) => {
                        report.store_errors += 1;
                        tracing::error!(checkout_request_id = %mask_id(id), error = %error, "payment could not be expired");
                    }
                }
            }
        }
        tracing::info!(
            due = report.due,
            queried = report.queried,
            resolved = report.resolved,
            already_final = report.already_final,
            not_final = report.not_final,
            expired = report.expired,
            store_errors = report.store_errors,
            stopped = ?report.stopped,
            "reconciliation round"
        );
        Ok(report)
    }

    /// Queries one payment and applies what it learns. Returns the step and, when Daraja said
    /// to stop for this round, why.
    async fn query_one(
        &self,
        store: &dyn PaymentStore,
        daraja: &dyn Daraja,
        clock: &dyn Clock,
        id: &str,
    ) -> (Step, Option<StopReason>) {
        let masked = mask_id(id);
        metrics::count(Metric::ReconciliationQuery);
        let answer = daraja.stk_query(id).await;
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
        if sent {
            if let Err(error) = store.record_query_attempt(id).await {
                tracing::warn!(checkout_request_id = %masked, error = %error, "query attempt not counted");
            }
        }
        let (result_code, result_desc, merchant_request_id) = match answer {
            Ok(QueryAnswer::Final {
                result_code,
                result_desc,
                merchant_request_id,
            }) => (result_code, result_desc, merchant_request_id),
            Ok(QueryAnswer::Processing) => {
                tracing::info!(checkout_request_id = %masked, "payment still being processed");
                return (Step::NotFinal, None);
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
                return (Step::NotFinal, stop);
            }
        };
        let result = query_result(
            id,
            &result_code,
            result_desc,
            merchant_request_id,
            clock.now(),
        );
        match store.apply_result(&result).await {
            Ok(Applied::Transitioned { record, .. }) => {
                metrics::payment_final(record.status, result.outcome());
                tracing::info!(
                    checkout_request_id = %masked,
                    status = record.status.as_str(),
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
            Ok(Applied::Duplicate(record) | Applied::Conflict(record)) => {
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
        }
    }
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
    }
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
