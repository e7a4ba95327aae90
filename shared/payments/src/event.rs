//! What a merchant is told: one event per change of a payment's status, derived from the record
//! before and after the change (the table's change stream), never from a request path.
//!
//! The rules, in one place:
//! - A payment is the merchant's once its push is recorded (`details_recorded`). A result that
//!   arrived before the pending write (an orphan) is not announced on its own: the change that
//!   records the push (linking it) announces its status, as a change from `PENDING`, which is
//!   what the merchant was answered (`202`).
//! - A new pending payment is no event (the merchant holds the `202`); every later change of
//!   `status` is one, including a late one (`EXPIRED` → `COMPLETED`, `COMPLETED` →
//!   `NEEDS_REVIEW`). A write that leaves the status as it was (a duplicate callback, a query
//!   attempt, a contradiction kept in history) is none.
//! - The event's id is a digest of the change itself (payment, previous and new status, the
//!   record's `updated_at`), so a change delivered twice carries one id.
//!
//! The event's JSON (`detail`) is versioned: [`SCHEMA_VERSION`], described by
//! `schemas/payment-event.v1.json`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::payment::{timestamp, PaymentRecord, PaymentStatus, ResultSource, ReviewReason};

/// The version of [`PaymentEvent`]'s JSON. A change that removes or retypes a field is a new
/// version; new optional fields are not.
pub const SCHEMA_VERSION: u32 = 1;

/// The EventBridge `source` of every event.
pub const SOURCE: &str = "mpesa-express.payments";

/// One change of a payment's status, as published (EventBridge `detail`, the webhook's `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub schema_version: u32,
    /// Stable per change: a redelivered change carries the same id.
    pub event_id: String,
    pub checkout_request_id: String,
    pub merchant_request_id: Option<String>,
    pub reference: Option<String>,
    /// Whole KES requested.
    pub amount: Option<u32>,
    pub currency: String,
    pub status: PaymentStatus,
    pub previous_status: PaymentStatus,
    /// The outcome category (`success`, `cancelled`, `wrong_pin` …), when Daraja gave a result.
    pub outcome: Option<String>,
    pub result_code: Option<String>,
    pub result_desc: Option<String>,
    /// The M-Pesa receipt, on a success.
    pub receipt: Option<String>,
    /// The amount Safaricom reports paid, as it sent it.
    pub amount_paid: Option<String>,
    /// `2547•••••678`: the customer's number masked.
    pub phone: Option<String>,
    pub review_reason: Option<ReviewReason>,
    /// How the result reached us: `callback` or `query`.
    pub result_source: Option<ResultSource>,
    #[serde(default, with = "timestamp::serde_millis_opt")]
    pub created_at: Option<DateTime<Utc>>,
    /// When the result that made the record final was received.
    #[serde(default, with = "timestamp::serde_millis_opt")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When the change was written.
    #[serde(with = "timestamp::serde_millis")]
    pub changed_at: DateTime<Utc>,
}

impl PaymentEvent {
    /// EventBridge's `detail-type`: `Payment Completed`, `Payment Failed`, `Payment Expired`,
    /// `Payment Needs Review`.
    pub fn detail_type(&self) -> &'static str {
        detail_type(self.status)
    }

    /// The webhook's `type`: `payment.completed`, `payment.failed`, `payment.expired`,
    /// `payment.needs_review`.
    pub fn webhook_type(&self) -> String {
        format!("payment.{}", self.status.as_str().to_ascii_lowercase())
    }
}

/// EventBridge's `detail-type` of a change to `status`.
pub fn detail_type(status: PaymentStatus) -> &'static str {
    match status {
        PaymentStatus::Pending => "Payment Pending",
        PaymentStatus::Completed => "Payment Completed",
        PaymentStatus::Failed => "Payment Failed",
        PaymentStatus::NeedsReview => "Payment Needs Review",
        PaymentStatus::Expired => "Payment Expired",
    }
}

/// The event a write produced, if any: `before` and `after` are the record as it was and as it
/// is (`None`: no item, or not a payment record).
pub fn change_event(
    before: Option<&PaymentRecord>,
    after: Option<&PaymentRecord>,
) -> Option<PaymentEvent> {
    let after = after.filter(|record| record.details_recorded)?;
    let previous_status = match before.filter(|record| record.details_recorded) {
        Some(before) => before.status,
        // Its push just got recorded: the merchant was answered PENDING.
        None => PaymentStatus::Pending,
    };
    if previous_status == after.status {
        return None;
    }
    Some(PaymentEvent {
        schema_version: SCHEMA_VERSION,
        event_id: event_id(
            &after.checkout_request_id,
            previous_status,
            after.status,
            after.updated_at,
        ),
        checkout_request_id: after.checkout_request_id.clone(),
        merchant_request_id: after.merchant_request_id.clone(),
        reference: after.reference.clone(),
        amount: after.amount,
        currency: "KES".to_string(),
        status: after.status,
        previous_status,
        outcome: after.outcome.clone(),
        result_code: after.result_code.clone(),
        result_desc: after.result_desc.clone(),
        receipt: after.receipt.clone(),
        amount_paid: after.amount_paid.clone(),
        phone: after.phone.as_deref().map(daraja::mask_msisdn),
        review_reason: after.review_reason,
        result_source: after.reconciled_by,
        created_at: after.created_at,
        completed_at: after.completed_at,
        changed_at: after.updated_at,
    })
}

/// `evt_` and 32 hex digits of a digest of the change: the same change, the same id.
pub fn event_id(
    checkout_request_id: &str,
    from: PaymentStatus,
    to: PaymentStatus,
    at: DateTime<Utc>,
) -> String {
    let digest = Sha256::digest(format!(
        "v{SCHEMA_VERSION}|{checkout_request_id}|{from}|{to}|{}",
        timestamp::format(at)
    ));
    format!("evt_{}", hex::encode(&digest[..16]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(status: PaymentStatus, details_recorded: bool, at: &str) -> PaymentRecord {
        let mut record = PaymentRecord::blank("ws_CO_1", status, timestamp::parse(at).unwrap());
        record.merchant_request_id = Some("29115-1".into());
        record.details_recorded = details_recorded;
        if details_recorded {
            record.amount = Some(10);
            record.phone = Some("254708374149".into());
            record.reference = Some("INV-1".into());
        }
        record
    }

    const T0: &str = "2026-12-01T10:00:00.000Z";
    const T1: &str = "2026-12-01T10:00:05.000Z";

    #[test]
    fn a_new_pending_payment_is_no_event() {
        let pending = record(PaymentStatus::Pending, true, T0);
        assert_eq!(change_event(None, Some(&pending)), None);
    }

    #[test]
    fn a_status_change_is_one_event_with_the_previous_status_and_a_masked_phone() {
        let before = record(PaymentStatus::Pending, true, T0);
        let after = record(PaymentStatus::Completed, true, T1);
        let event = change_event(Some(&before), Some(&after)).unwrap();
        assert_eq!(event.previous_status, PaymentStatus::Pending);
        assert_eq!(event.status, PaymentStatus::Completed);
        assert_eq!(event.detail_type(), "Payment Completed");
        assert_eq!(event.webhook_type(), "payment.completed");
        assert_eq!(event.phone.as_deref(), Some("2547•••••149"));
        assert_eq!(event.amount, Some(10));
        assert!(event.event_id.starts_with("evt_") && event.event_id.len() == 36);
    }

    #[test]
    fn a_write_that_keeps_the_status_is_no_event() {
        let before = record(PaymentStatus::Completed, true, T0);
        let after = record(PaymentStatus::Completed, true, T1);
        assert_eq!(change_event(Some(&before), Some(&after)), None);
        assert_eq!(change_event(Some(&before), None), None);
    }

    #[test]
    fn an_orphan_is_announced_when_its_push_is_recorded_not_before() {
        let orphan = record(PaymentStatus::Completed, false, T0);
        assert_eq!(change_event(None, Some(&orphan)), None);
        let linked = record(PaymentStatus::Completed, true, T1);
        let event = change_event(Some(&orphan), Some(&linked)).unwrap();
        assert_eq!(event.previous_status, PaymentStatus::Pending);
        assert_eq!(event.status, PaymentStatus::Completed);
    }

    #[test]
    fn a_late_change_is_its_own_event_and_a_redelivered_change_keeps_its_id() {
        let expired = record(PaymentStatus::Expired, true, T0);
        let completed = record(PaymentStatus::Completed, true, T1);
        let late = change_event(Some(&expired), Some(&completed)).unwrap();
        assert_eq!(late.previous_status, PaymentStatus::Expired);
        let again = change_event(Some(&expired), Some(&completed)).unwrap();
        assert_eq!(late.event_id, again.event_id);
        let pending = record(PaymentStatus::Pending, true, T0);
        let first = change_event(Some(&pending), Some(&expired)).unwrap();
        assert_ne!(first.event_id, late.event_id);
    }
}
