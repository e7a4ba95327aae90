//! `GET /payments/{checkout_request_id}`, and `GET /payments?idempotency_key=…` or
//! `?reference=…` for a merchant whose first answer was lost.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::{parse_idempotency_key, ApiError, ErrorCode};
use daraja::values::{mask_msisdn, AccountReference};
use payments::intent::{IntentKey, IntentRecord, IntentStatus, PushLedger};
use payments::payment::PaymentRecord;
use payments::PaymentStore;

/// The most payments a lookup by reference answers.
pub const MAX_FOUND: u32 = 20;

/// How the phone numbers of a payment are shown: masked (`2547•••••678`) unless the caller
/// asks for them with `?reveal=phone`. A record read over the status API then names no
/// customer in a log, a browser history or a support ticket by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phones {
    #[default]
    Masked,
    Revealed,
}

impl Phones {
    /// The `reveal` query parameter: absent, or `phone`.
    pub fn parse(reveal: Option<&str>) -> Result<Self, ApiError> {
        match reveal {
            None => Ok(Self::Masked),
            Some("phone") => Ok(Self::Revealed),
            Some(_) => Err(ApiError::new(
                ErrorCode::InvalidReveal,
                "The one value of reveal is phone (show the full phone numbers); leave it out to see them masked.",
            )),
        }
    }
}

/// The payment as the status API shows it.
pub fn payment_json(record: &PaymentRecord, phones: Phones) -> Value {
    let mut shown = serde_json::to_value(record).unwrap_or(Value::Null);
    // A success callback came, and waits for an STK query to confirm it.
    let awaiting = record.held_callback.is_some() && record.status.accepts_result();
    shown["awaiting_confirmation"] = Value::Bool(awaiting);
    if phones == Phones::Masked {
        for field in ["phone", "paying_phone"] {
            if let Some(phone) = shown.get_mut(field) {
                if let Some(number) = phone.as_str() {
                    *phone = Value::String(mask_msisdn(number));
                }
            }
        }
    }
    shown
}

/// `GET /payments/{id}` for `caller`: another caller's payment is answered as not found.
pub async fn get_payment(
    store: &dyn PaymentStore,
    checkout_request_id: Option<&str>,
    caller: Option<&str>,
) -> Result<PaymentRecord, ApiError> {
    let id = checkout_request_id
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::InvalidCheckoutRequestId,
                "Give the CheckoutRequestID returned by POST /payments.",
            )
        })?;
    match store.get(id).await {
        Ok(Some(record)) if record.is_visible_to(caller) => Ok(record),
        Ok(_) => Err(ApiError::new(
            ErrorCode::PaymentNotFound,
            format!("No payment with CheckoutRequestID {id}."),
        )),
        Err(e) => Err(unavailable(&e)),
    }
}

/// A read the store could not answer: logged here, answered without the store's own words.
fn unavailable(e: &payments::StoreError) -> ApiError {
    tracing::warn!(error = %e, "payment store unavailable");
    ApiError::storage_unavailable()
}

/// What `GET /payments` was asked to find.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The request sent with this `Idempotency-Key` (in the last 24 hours), and its payment.
    IdempotencyKey(IntentKey),
    /// The payments recorded with this merchant reference, newest first.
    Reference(String),
}

impl Lookup {
    /// Exactly one of the two query parameters, each checked as `POST /payments` checks it; a
    /// key is `caller`'s own, as `POST /payments` scopes it.
    pub fn parse(
        caller: Option<&str>,
        idempotency_key: Option<&str>,
        reference: Option<&str>,
    ) -> Result<Self, ApiError> {
        match (idempotency_key, reference) {
            (Some(key), None) => Ok(Self::IdempotencyKey(IntentKey::idempotency_for(
                caller,
                parse_idempotency_key(key.as_bytes())?,
            ))),
            (None, Some(reference)) => AccountReference::parse(reference)
                .map(|r| Self::Reference(r.as_str().to_owned()))
                .map_err(ApiError::from_validation),
            _ => Err(ApiError::new(
                ErrorCode::InvalidLookup,
                "Give exactly one of the query parameters idempotency_key (the Idempotency-Key sent with POST /payments) and reference.",
            )),
        }
    }
}

/// `GET /payments?…`: `{"payments": [...]}`, and for a key also `"request"`: what became of the
/// request sent with it (`accepted`, `refused`, `outcome_unknown`, `in_progress`, `in_doubt`).
///
/// Only `caller`'s payments are listed (of the newest [`MAX_FOUND`] with the reference).
pub async fn find_payments(
    store: &dyn PaymentStore,
    ledger: &dyn PushLedger,
    lookup: &Lookup,
    caller: Option<&str>,
    phones: Phones,
    now: DateTime<Utc>,
) -> Result<Value, ApiError> {
    let shown = |records: Vec<PaymentRecord>| -> Vec<Value> {
        records.iter().map(|r| payment_json(r, phones)).collect()
    };
    match lookup {
        Lookup::Reference(reference) => {
            let mut found = store
                .by_reference(reference, MAX_FOUND)
                .await
                .map_err(|e| unavailable(&e))?;
            found.retain(|record| record.is_visible_to(caller));
            Ok(json!({ "payments": shown(found) }))
        }
        Lookup::IdempotencyKey(key) => {
            let intent = ledger
                .intent(key, now)
                .await
                .map_err(|e| unavailable(&e))?
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorCode::PaymentNotFound,
                        "No request with this Idempotency-Key in the last 24 hours.",
                    )
                })?;
            let payment = match &intent.checkout_request_id {
                Some(id) => store.get(id).await.map_err(|e| unavailable(&e))?,
                None => None,
            }
            .filter(|record| record.is_visible_to(caller));
            Ok(json!({
                "request": request_json(&intent, now),
                "payments": shown(payment.into_iter().collect()),
            }))
        }
    }
}

fn request_json(intent: &IntentRecord, now: DateTime<Utc>) -> Value {
    let status = match intent.status {
        IntentStatus::InProgress if intent.is_in_doubt(now) => "in_doubt",
        IntentStatus::InProgress => "in_progress",
        IntentStatus::Accepted => "accepted",
        IntentStatus::Refused => "refused",
        IntentStatus::OutcomeUnknown => "outcome_unknown",
    };
    json!({
        "status": status,
        "created_at": payments::timestamp::format(intent.created_at),
        "amount": intent.amount,
        "reference": intent.reference,
        "checkout_request_id": intent.checkout_request_id,
        "answer_status": intent.answer.as_ref().map(|a| a.status),
    })
}
