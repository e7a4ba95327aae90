//! The payment record and its state machine.
//!
//! A payment is keyed by Daraja's `CheckoutRequestID`. It starts `PENDING` when Daraja
//! acknowledges the push and becomes final when a result arrives, by callback or by STK
//! query. The two writes may arrive in either order and must converge on the same record:
//! the rules deciding what a write does live here, as pure functions, so that every
//! [`PaymentStore`](crate::store::PaymentStore) applies the same ones.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use daraja::{Charge, ResultCode};
use serde::{Deserialize, Serialize};

pub mod timestamp;

/// Where a payment stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    /// Daraja accepted the push; no result yet.
    Pending,
    /// Daraja reported success and the amount matches what was requested.
    Completed,
    /// Daraja reported a failure (cancelled, wrong PIN, insufficient balance …).
    Failed,
    /// Daraja reported success but something does not add up (the amount paid differs
    /// from the amount requested): a person must look at it.
    NeedsReview,
    /// No result came in time. This is our conclusion, not Daraja's, so a late result
    /// still moves the record to its real outcome.
    Expired,
}

impl PaymentStatus {
    pub const ALL: [PaymentStatus; 5] = [
        PaymentStatus::Pending,
        PaymentStatus::Completed,
        PaymentStatus::Failed,
        PaymentStatus::NeedsReview,
        PaymentStatus::Expired,
    ];

    /// The stored and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            PaymentStatus::Pending => "PENDING",
            PaymentStatus::Completed => "COMPLETED",
            PaymentStatus::Failed => "FAILED",
            PaymentStatus::NeedsReview => "NEEDS_REVIEW",
            PaymentStatus::Expired => "EXPIRED",
        }
    }

    /// Whether a result from Daraja may still set the outcome. Only results reported by
    /// Daraja are final; `EXPIRED` merely means we stopped waiting.
    pub fn accepts_result(self) -> bool {
        matches!(self, PaymentStatus::Pending | PaymentStatus::Expired)
    }
}

impl fmt::Display for PaymentStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status name that is not one of [`PaymentStatus`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown payment status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for PaymentStatus {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        PaymentStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a payment needs review: what the person looking at it should check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReviewReason {
    /// Safaricom reports another amount paid than the amount asked.
    AmountMismatch,
    /// A success that cannot be checked: no receipt, no amount in whole shillings, or two
    /// different receipts or amounts in one callback.
    Unverifiable,
    /// A success with an M-Pesa receipt after the payment was recorded failed: the customer
    /// may have paid.
    SuccessAfterFailure,
    /// A success with another receipt for a payment already completed with one: the customer
    /// may have paid twice.
    SecondReceipt,
    /// The M-Pesa receipt was already recorded on another payment (`receipt_holder`): one
    /// payment settled two records, or the result is forged.
    ReceiptReused,
    /// The result that came before the pending write was delivered through another payment's
    /// callback URL: it is not this payment's result, or it is forged.
    UnboundCallback,
}

impl ReviewReason {
    pub const ALL: [ReviewReason; 6] = [
        ReviewReason::AmountMismatch,
        ReviewReason::Unverifiable,
        ReviewReason::SuccessAfterFailure,
        ReviewReason::SecondReceipt,
        ReviewReason::ReceiptReused,
        ReviewReason::UnboundCallback,
    ];

    /// The stored and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::AmountMismatch => "amount_mismatch",
            ReviewReason::Unverifiable => "unverifiable",
            ReviewReason::SuccessAfterFailure => "success_after_failure",
            ReviewReason::SecondReceipt => "second_receipt",
            ReviewReason::ReceiptReused => "receipt_reused",
            ReviewReason::UnboundCallback => "unbound_callback",
        }
    }
}

impl FromStr for ReviewReason {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ReviewReason::ALL
            .into_iter()
            .find(|reason| reason.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// How a result reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultSource {
    /// Safaricom posted it to our callback URL.
    Callback,
    /// We asked for it with the STK query API.
    Query,
}

impl ResultSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultSource::Callback => "callback",
            ResultSource::Query => "query",
        }
    }
}

impl fmt::Display for ResultSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ResultSource {
    type Err = UnknownStatus;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "callback" => Ok(ResultSource::Callback),
            "query" => Ok(ResultSource::Query),
            other => Err(UnknownStatus(other.to_owned())),
        }
    }
}

/// The request details recorded once Daraja has acknowledged a push.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPayment {
    pub checkout_request_id: String,
    pub merchant_request_id: String,
    /// What was asked: the phone (normalised `2547XXXXXXXX`), whole KES, reference, description.
    pub charge: Charge,
    pub created_at: DateTime<Utc>,
    /// The nonce of the payment's own callback URL: a callback must bring the same.
    pub callback_nonce: Option<String>,
    /// The IAM principal that asked for it: the status API shows the payment to it only.
    pub created_by: Option<String>,
}

impl NewPayment {
    /// Whole KES, as requested.
    pub fn amount(&self) -> u32 {
        self.charge.amount.get()
    }
}

/// A final result for a payment, from a callback or an STK query.
///
/// Only final results belong here: a transient answer ("still processing") must not be
/// applied, because every result applied to an open payment closes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentResult {
    pub checkout_request_id: String,
    pub merchant_request_id: String,
    /// As Daraja sent it (`"0"`, `"1032"`, `"SFC_IC0003"` …); its category is the outcome.
    pub result_code: ResultCode,
    pub result_desc: String,
    pub receipt: Option<String>,
    /// The amount exactly as Daraja sent it (`"100"`, `"1.00"`).
    pub amount_paid: Option<String>,
    /// The amount paid as whole KES, when it is one; compared with the amount requested.
    pub amount_paid_whole: Option<u64>,
    pub paying_phone: Option<String>,
    /// `YYYYMMDDHHmmss` as Daraja sent it.
    pub transaction_date: Option<String>,
    /// The body as received, kept for audit.
    pub raw: Option<String>,
    /// The body holds an item twice with different values (two amounts, two receipts).
    pub contradictory: bool,
    pub source: ResultSource,
    pub received_at: DateTime<Utc>,
    /// The nonce of the callback URL the result was delivered to (`None` for a query).
    pub callback_nonce: Option<String>,
}

impl PaymentResult {
    /// The result a parsed callback reports; `raw` is its body as received.
    pub fn from_callback(
        cb: &daraja::StkCallback,
        raw: &[u8],
        source: ResultSource,
        received_at: DateTime<Utc>,
    ) -> Self {
        let meta = &cb.metadata;
        Self {
            checkout_request_id: cb.checkout_request_id.clone(),
            merchant_request_id: cb.merchant_request_id.clone(),
            result_code: cb.result_code.clone(),
            result_desc: cb.result_desc.clone(),
            receipt: meta.receipt.clone(),
            amount_paid: meta.amount.as_ref().map(|a| a.to_string()),
            amount_paid_whole: meta.amount.as_ref().and_then(|a| a.whole_shillings()),
            paying_phone: meta.phone.clone(),
            transaction_date: meta.transaction_date.clone(),
            raw: Some(String::from_utf8_lossy(raw).into_owned()),
            contradictory: !meta.contradictions.is_empty(),
            source,
            received_at,
            callback_nonce: None,
        }
    }

    /// Whether this result may be applied to `record`: a callback delivered to another
    /// payment's URL may not. A record or a result without a nonce (a payment recorded before
    /// callback URLs were per payment, an STK query) binds nothing.
    pub fn is_bound_to(&self, record: &PaymentRecord) -> bool {
        nonces_agree(&self.callback_nonce, &record.callback_nonce)
    }

    /// Whether a success can be checked. A callback's must carry one M-Pesa receipt and one
    /// amount in whole shillings. A query's reports neither: it is about the push we sent, for
    /// the amount we asked, and its receipt comes with the callback later.
    pub fn is_checkable(&self) -> bool {
        match self.source {
            ResultSource::Query => true,
            ResultSource::Callback => {
                self.receipt.is_some() && self.amount_paid_whole.is_some() && !self.contradictory
            }
        }
    }

    /// Whether Daraja reported the payment made.
    pub fn is_success(&self) -> bool {
        self.result_code.is_success()
    }

    /// The stable category of the result (`"success"`, `"cancelled"`, `"wrong_pin"` …).
    pub fn outcome(&self) -> &'static str {
        self.result_code.category().as_str()
    }

    /// The status this result gives a payment for which `requested` KES were asked.
    ///
    /// A success that cannot be checked ([`is_checkable`](Self::is_checkable)) is not a
    /// success: the customer may have paid, but nothing says how much, so a person looks.
    pub fn final_status(&self, requested: Option<u32>) -> PaymentStatus {
        if !self.is_success() {
            return PaymentStatus::Failed;
        }
        if !self.is_checkable() {
            return PaymentStatus::NeedsReview;
        }
        match (requested, self.amount_paid_whole) {
            (Some(asked), Some(paid)) if u64::from(asked) != paid => PaymentStatus::NeedsReview,
            _ => PaymentStatus::Completed,
        }
    }

    /// What a write of this result giving `status` records: that status, unless its receipt
    /// is recorded on another payment (`receipt_holder`), which makes it
    /// [`Verdict::RECEIPT_REUSED`] whatever the result says.
    pub fn verdict(&self, status: PaymentStatus, receipt_holder: Option<&str>) -> Verdict {
        match receipt_holder {
            Some(_) => Verdict::RECEIPT_REUSED,
            None => Verdict {
                status,
                review_reason: self.review_reason(status),
            },
        }
    }

    /// Why a payment this result gives `status` needs review (`None` unless `status` is
    /// `NEEDS_REVIEW`): a success that cannot be checked, else the amount.
    pub fn review_reason(&self, status: PaymentStatus) -> Option<ReviewReason> {
        (status == PaymentStatus::NeedsReview).then(|| {
            if self.is_checkable() {
                ReviewReason::AmountMismatch
            } else {
                ReviewReason::Unverifiable
            }
        })
    }

    /// Whether this result, arriving for the final `record`, says money may have moved where
    /// the record says otherwise: a success with a receipt for a failed payment, or with
    /// another receipt for a completed one. Only a callback carries a receipt.
    pub fn contradicts(&self, record: &PaymentRecord) -> Option<ReviewReason> {
        if !self.is_success() || self.receipt.is_none() {
            return None;
        }
        match record.status {
            PaymentStatus::Failed => Some(ReviewReason::SuccessAfterFailure),
            PaymentStatus::Completed
                if record.receipt.is_some() && record.receipt != self.receipt =>
            {
                Some(ReviewReason::SecondReceipt)
            }
            _ => None,
        }
    }

    /// Whether this result says the same as the one already stored in `record`.
    ///
    /// A query reports no receipt, so for a query only the result code is compared.
    pub fn repeats(&self, record: &PaymentRecord) -> bool {
        let same_code = record.result_code.as_deref() == Some(self.result_code.code());
        match self.source {
            ResultSource::Query => same_code,
            ResultSource::Callback => same_code && record.receipt == self.receipt,
        }
    }

    /// Whether this result is the success callback of a payment an STK query already
    /// completed: same result code, and the record still lacks the receipt, amount paid
    /// and paying phone that only a callback carries. A record holding a receipt is never
    /// enriched (another receipt would be a second payment), nor is a failed one. A success
    /// callback without a receipt enriches too: it cannot be checked, so the record turns
    /// `NEEDS_REVIEW` rather than taking it for a repeat of the query's success.
    pub fn enriches(&self, record: &PaymentRecord) -> bool {
        self.source == ResultSource::Callback
            && self.is_success()
            && record.status == PaymentStatus::Completed
            && record.reconciled_by == Some(ResultSource::Query)
            && record.receipt.is_none()
            && record.result_code.as_deref() == Some(self.result_code.code())
    }

    /// The history entry kept when this result contradicts a final record.
    pub fn history_entry(&self) -> ResultHistoryEntry {
        ResultHistoryEntry {
            received_at: timestamp::truncate(self.received_at),
            result_code: self.result_code.code().to_owned(),
            result_desc: self.result_desc.clone(),
            receipt: self.receipt.clone(),
            source: self.source,
            raw: self.raw.clone(),
        }
    }
}

/// A success callback kept on its open payment until an STK query confirms it (the callback
/// function's `CALLBACK_CONFIRM`): it changes nothing until reconciliation applies it, after
/// the query's own answer, so a made-up success can no longer complete a payment by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldCallback {
    /// The body as received; applied as the callback it is once the query has answered.
    pub raw: String,
    pub received_at: DateTime<Utc>,
    /// The nonce of the callback URL it was delivered to.
    pub callback_nonce: Option<String>,
    /// Where it came from (API Gateway's `sourceIp`), for the operator.
    pub source_ip: Option<String>,
}

impl HeldCallback {
    /// The callback's result, as it would have been applied on arrival.
    pub fn result(&self, checkout_request_id: &str) -> Result<PaymentResult, String> {
        let callback = daraja::parse_callback(self.raw.as_bytes()).map_err(|e| e.to_string())?;
        if callback.checkout_request_id != checkout_request_id {
            return Err("the held callback names another payment".to_owned());
        }
        let mut result = PaymentResult::from_callback(
            &callback,
            self.raw.as_bytes(),
            ResultSource::Callback,
            self.received_at,
        );
        result.callback_nonce = self.callback_nonce.clone();
        Ok(result)
    }

    /// Whether it was delivered to `record`'s own callback URL (as
    /// [`PaymentResult::is_bound_to`]).
    pub fn is_bound_to(&self, record: &PaymentRecord) -> bool {
        nonces_agree(&self.callback_nonce, &record.callback_nonce)
    }
}

/// Whether two callback URL nonces name the same push: either missing binds nothing.
fn nonces_agree(given: &Option<String>, stored: &Option<String>) -> bool {
    match (given, stored) {
        (Some(given), Some(stored)) => given == stored,
        _ => true,
    }
}

/// The status and review reason a result's write records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub status: PaymentStatus,
    pub review_reason: Option<ReviewReason>,
}

impl Verdict {
    /// The verdict of a write whose receipt is already recorded on another payment: one
    /// M-Pesa receipt settles one payment, so whatever the result says, a person looks.
    pub const RECEIPT_REUSED: Verdict = Verdict {
        status: PaymentStatus::NeedsReview,
        review_reason: Some(ReviewReason::ReceiptReused),
    };
}

/// A result that arrived after the payment was already final and said something else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultHistoryEntry {
    #[serde(with = "timestamp::serde_millis")]
    pub received_at: DateTime<Utc>,
    pub result_code: String,
    pub result_desc: String,
    pub receipt: Option<String>,
    pub source: ResultSource,
    pub raw: Option<String>,
}

/// Everything known about one payment.
///
/// Serialises as the snake_case JSON of the status API. The raw callback body and the
/// history of contradicting results are audit material (they may carry the paying phone
/// number unmasked) and are left out; `conflicting_callbacks` says whether there is any.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentRecord {
    pub checkout_request_id: String,
    pub merchant_request_id: Option<String>,
    pub status: PaymentStatus,
    /// Whole KES requested; missing while only a result is known.
    pub amount: Option<u32>,
    pub phone: Option<String>,
    pub reference: Option<String>,
    pub description: Option<String>,
    #[serde(default, with = "timestamp::serde_millis_opt")]
    pub created_at: Option<DateTime<Utc>>,
    #[serde(with = "timestamp::serde_millis")]
    pub updated_at: DateTime<Utc>,
    /// When the result that made the record final was received.
    #[serde(default, with = "timestamp::serde_millis_opt")]
    pub completed_at: Option<DateTime<Utc>>,
    pub result_code: Option<String>,
    pub result_desc: Option<String>,
    pub outcome: Option<String>,
    pub receipt: Option<String>,
    pub amount_paid: Option<String>,
    pub amount_paid_whole: Option<u64>,
    pub paying_phone: Option<String>,
    pub transaction_date: Option<String>,
    pub reconciled_by: Option<ResultSource>,
    /// Why the payment is `NEEDS_REVIEW`, when it is.
    pub review_reason: Option<ReviewReason>,
    /// The payment the receipt was first recorded on, when that is another one
    /// (`review_reason` `receipt_reused`).
    pub receipt_holder: Option<String>,
    /// STK queries sent for it by reconciliation, and when the last one was.
    pub query_attempts: u32,
    #[serde(default, with = "timestamp::serde_millis_opt")]
    pub last_queried_at: Option<DateTime<Utc>>,
    /// Callbacks that contradicted the final result (kept in `history`).
    pub conflicting_callbacks: u32,
    /// Whether the request details (amount, phone, reference) are known. False for a
    /// result that matched no pending write yet.
    pub details_recorded: bool,
    /// The nonce of the payment's callback URL (part of a capability: never shown).
    #[serde(skip)]
    pub callback_nonce: Option<String>,
    /// The IAM principal that asked for it (`None`: unknown, shown to every caller).
    #[serde(skip)]
    pub created_by: Option<String>,
    #[serde(skip)]
    pub raw_callback: Option<String>,
    #[serde(skip)]
    pub history: Vec<ResultHistoryEntry>,
    /// A success callback waiting for an STK query to confirm it; while the payment is open,
    /// shown as `awaiting_confirmation`.
    #[serde(skip)]
    pub held_callback: Option<HeldCallback>,
}

impl PaymentRecord {
    /// A record of `status` with nothing else known yet: no details, no result.
    pub fn blank(
        checkout_request_id: &str,
        status: PaymentStatus,
        now: DateTime<Utc>,
    ) -> PaymentRecord {
        PaymentRecord {
            checkout_request_id: checkout_request_id.to_owned(),
            merchant_request_id: None,
            status,
            amount: None,
            phone: None,
            reference: None,
            description: None,
            created_at: None,
            updated_at: now,
            completed_at: None,
            result_code: None,
            result_desc: None,
            outcome: None,
            receipt: None,
            amount_paid: None,
            amount_paid_whole: None,
            paying_phone: None,
            transaction_date: None,
            reconciled_by: None,
            review_reason: None,
            receipt_holder: None,
            last_queried_at: None,
            query_attempts: 0,
            conflicting_callbacks: 0,
            details_recorded: false,
            callback_nonce: None,
            created_by: None,
            raw_callback: None,
            history: Vec::new(),
            held_callback: None,
        }
    }

    /// Whether `caller` may see the payment: the principal that asked for it, or anyone when
    /// that is not known (a payment recorded before callers were recorded, an orphan).
    pub fn is_visible_to(&self, caller: Option<&str>) -> bool {
        match &self.created_by {
            Some(owner) => caller == Some(owner.as_str()),
            None => true,
        }
    }
}

/// What a pending write does to the record already stored, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PendingPlan {
    /// Nothing stored yet, or still pending: (re)write it as pending.
    Open,
    /// A result arrived first: add the details and keep its final status.
    AddDetails(PaymentStatus),
    /// A success arrived first for another amount than this one: add the details and turn the
    /// record `NEEDS_REVIEW`.
    FlagForReview,
    /// The result that arrived first came through another payment's callback URL: add the
    /// details and turn the record `NEEDS_REVIEW` (`unbound_callback`).
    Unbound,
}

impl PendingPlan {
    /// Why the write turns the record `NEEDS_REVIEW`, when it does.
    pub fn review_reason(self) -> Option<ReviewReason> {
        match self {
            PendingPlan::FlagForReview => Some(ReviewReason::AmountMismatch),
            PendingPlan::Unbound => Some(ReviewReason::UnboundCallback),
            PendingPlan::Open | PendingPlan::AddDetails(_) => None,
        }
    }
}

/// Decides what [`NewPayment`] does given the stored record.
pub fn plan_pending(payment: &NewPayment, stored: Option<&PaymentRecord>) -> PendingPlan {
    let Some(stored) = stored else {
        return PendingPlan::Open;
    };
    let unbound = !nonces_agree(&payment.callback_nonce, &stored.callback_nonce);
    match stored.status {
        status if unbound && status != PaymentStatus::Pending => PendingPlan::Unbound,
        PaymentStatus::Pending => PendingPlan::Open,
        PaymentStatus::Completed
            if stored
                .amount_paid_whole
                .is_some_and(|paid| paid != u64::from(payment.amount())) =>
        {
            PendingPlan::FlagForReview
        }
        status => PendingPlan::AddDetails(status),
    }
}

/// What a result does to the record already stored, if any.
///
/// A plan that records the result's receipt on the payment (`Transition`, `CreateOrphan`,
/// `Enrich`) also claims the receipt for it, in the same write. When another payment holds
/// it, the write records [`Verdict::RECEIPT_REUSED`] instead of the result's own verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultPlan {
    /// The payment is open: close it with this status.
    Transition(PaymentStatus),
    /// Nothing stored: create the record with this status, marked as an orphan.
    CreateOrphan(PaymentStatus),
    /// Completed by an STK query, and this is its success callback: add the receipt,
    /// amount paid, paying phone and raw body, and set this status (`NEEDS_REVIEW` when
    /// the amount paid differs from the amount requested).
    Enrich(PaymentStatus),
    /// Already final, and this result says money may have moved where the record says
    /// otherwise ([`PaymentResult::contradicts`]): keep it in history and turn the record
    /// `NEEDS_REVIEW` for this reason.
    Review(ReviewReason),
    /// Already final with the same result.
    Duplicate,
    /// Already final with a different result: keep it in history only.
    Conflict,
    /// Delivered to another payment's callback URL ([`PaymentResult::is_bound_to`]): not
    /// applied.
    Unbound,
}

/// Decides what `result` does given the stored record.
pub fn plan_result(result: &PaymentResult, stored: Option<&PaymentRecord>) -> ResultPlan {
    match stored {
        None => ResultPlan::CreateOrphan(result.final_status(None)),
        Some(record) if !result.is_bound_to(record) => ResultPlan::Unbound,
        Some(record) if record.status.accepts_result() => {
            ResultPlan::Transition(result.final_status(record.amount))
        }
        Some(record) if result.enriches(record) => {
            ResultPlan::Enrich(result.final_status(record.amount))
        }
        Some(record) if result.repeats(record) => ResultPlan::Duplicate,
        Some(record) => result
            .contradicts(record)
            .map_or(ResultPlan::Conflict, ResultPlan::Review),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_names_round_trip() {
        for status in PaymentStatus::ALL {
            assert_eq!(status.as_str().parse::<PaymentStatus>(), Ok(status));
            let json = serde_json::to_string(&status).unwrap();
            assert_eq!(json, format!("\"{}\"", status.as_str()));
        }
        assert!("pending".parse::<PaymentStatus>().is_err());
    }

    fn result(success: bool, paid: Option<u64>) -> PaymentResult {
        PaymentResult {
            checkout_request_id: "ws_CO_1".into(),
            merchant_request_id: "m-1".into(),
            result_code: ResultCode::from_text(if success { "0" } else { "1032" }),
            result_desc: String::new(),
            receipt: success.then(|| "NLJ7RT61SV".to_owned()),
            amount_paid: paid.map(|p| p.to_string()),
            amount_paid_whole: paid,
            paying_phone: None,
            transaction_date: None,
            raw: None,
            contradictory: false,
            source: ResultSource::Callback,
            received_at: Utc::now(),
            callback_nonce: None,
        }
    }

    #[test]
    fn success_for_another_amount_needs_review() {
        assert_eq!(
            result(true, Some(1)).final_status(Some(100)),
            PaymentStatus::NeedsReview
        );
        assert_eq!(
            result(true, Some(100)).final_status(Some(100)),
            PaymentStatus::Completed
        );
        assert_eq!(
            result(false, Some(1)).final_status(Some(100)),
            PaymentStatus::Failed
        );
    }

    /// A success callback that cannot be checked is not a success, whatever was asked; a query
    /// reports no receipt or amount and completes.
    #[test]
    fn a_success_callback_that_cannot_be_checked_needs_review() {
        let no_amount = result(true, None);
        assert_eq!(
            no_amount.final_status(Some(100)),
            PaymentStatus::NeedsReview
        );
        let mut fractional = result(true, None);
        fractional.amount_paid = Some("9.99".into());
        assert_eq!(
            fractional.final_status(Some(10)),
            PaymentStatus::NeedsReview
        );
        let mut no_receipt = result(true, Some(100));
        no_receipt.receipt = None;
        assert_eq!(
            no_receipt.final_status(Some(100)),
            PaymentStatus::NeedsReview
        );
        let mut two_receipts = result(true, Some(100));
        two_receipts.contradictory = true;
        assert_eq!(
            two_receipts.final_status(Some(100)),
            PaymentStatus::NeedsReview
        );
        let mut queried = result(true, None);
        queried.source = ResultSource::Query;
        queried.receipt = None;
        assert_eq!(queried.final_status(Some(100)), PaymentStatus::Completed);
        assert_eq!(
            result(false, None).final_status(Some(100)),
            PaymentStatus::Failed
        );
    }

    #[test]
    fn success_callback_enriches_only_a_query_completed_record_without_receipt() {
        let mut record = record();
        record.reconciled_by = Some(ResultSource::Query);
        record.receipt = None;
        let mut callback = result(true, Some(10));
        callback.receipt = Some("NLJ7RT61SV".into());
        assert_eq!(
            plan_result(&callback, Some(&record)),
            ResultPlan::Enrich(PaymentStatus::Completed)
        );
        callback.amount_paid_whole = Some(1);
        assert_eq!(
            plan_result(&callback, Some(&record)),
            ResultPlan::Enrich(PaymentStatus::NeedsReview)
        );

        let mut by_callback = record.clone();
        by_callback.reconciled_by = Some(ResultSource::Callback);
        assert_eq!(
            plan_result(&callback, Some(&by_callback)),
            ResultPlan::Conflict
        );
        // Another receipt on a completed payment, or a receipt on a failed one: money may have
        // moved, so a person looks.
        let mut with_receipt = record.clone();
        with_receipt.receipt = Some("QWE1RT2YU3".into());
        assert_eq!(
            plan_result(&callback, Some(&with_receipt)),
            ResultPlan::Review(ReviewReason::SecondReceipt)
        );
        let mut failed = record.clone();
        failed.status = PaymentStatus::Failed;
        failed.result_code = Some("1032".into());
        assert_eq!(
            plan_result(&callback, Some(&failed)),
            ResultPlan::Review(ReviewReason::SuccessAfterFailure)
        );
        // The same receipt again is a duplicate; a failure after a success, or a success
        // without a receipt after a failure, only goes to history.
        with_receipt.reconciled_by = Some(ResultSource::Callback);
        let mut same = callback.clone();
        same.receipt = with_receipt.receipt.clone();
        assert_eq!(
            plan_result(&same, Some(&with_receipt)),
            ResultPlan::Duplicate
        );
        let cancelled = result(false, None);
        assert_eq!(
            plan_result(&cancelled, Some(&with_receipt)),
            ResultPlan::Conflict
        );
        let mut no_receipt = callback.clone();
        no_receipt.receipt = None;
        assert_eq!(
            plan_result(&no_receipt, Some(&failed)),
            ResultPlan::Conflict
        );
        let mut queried = callback.clone();
        queried.source = ResultSource::Query;
        assert_eq!(plan_result(&queried, Some(&record)), ResultPlan::Duplicate);
    }

    fn record() -> PaymentRecord {
        let at = "2024-05-01T10:00:00Z".parse().unwrap();
        let mut record = PaymentRecord::blank("ws_CO_1", PaymentStatus::Completed, at);
        record.amount = Some(10);
        record.result_code = Some("0".into());
        record.reconciled_by = Some(ResultSource::Callback);
        record.conflicting_callbacks = 1;
        record.details_recorded = true;
        record.raw_callback = Some("{\"secret\":1}".into());
        record.history = vec![result(false, None).history_entry()];
        record
    }

    #[test]
    fn record_json_leaves_out_audit_material() {
        let record = record();
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["status"], "COMPLETED");
        assert_eq!(json["updated_at"], "2024-05-01T10:00:00.000Z");
        assert_eq!(json["reconciled_by"], "callback");
        assert!(json.get("raw_callback").is_none());
        assert!(json.get("history").is_none());
    }
}
