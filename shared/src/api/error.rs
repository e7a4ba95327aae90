//! One HTTP status and one stable code per cause.

use serde_json::{json, Value};

use crate::daraja::values::ValidationError;
use crate::daraja::DarajaError;
use crate::store::StoreError;

/// An error answer: `{"error": {"code", "message", ...}}` with its HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    /// Daraja's own `errorCode`, when Daraja caused the error.
    pub daraja_error_code: Option<String>,
    /// `phone_busy` from our own lock: the payment whose prompt is still open.
    pub checkout_request_id: Option<String>,
    /// Daraja may have acted on the push although we saw no usable answer.
    pub outcome_unknown: bool,
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            daraja_error_code: None,
            checkout_request_id: None,
            outcome_unknown: false,
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(code) = &self.daraja_error_code {
            error["daraja_error_code"] = json!(code);
        }
        if let Some(id) = &self.checkout_request_id {
            error["checkout_request_id"] = json!(id);
        }
        if self.outcome_unknown {
            error["outcome"] = json!("unknown");
        }
        json!({ "error": error })
    }

    pub(crate) fn from_validation(e: ValidationError) -> Self {
        Self::new(422, e.code, e.message)
    }

    pub(crate) fn from_daraja(e: &DarajaError) -> Self {
        let (status, code, message) = match e {
            _ if e.is_subscriber_busy() => (
                409,
                "phone_busy",
                "Another M-Pesa prompt is open on this phone. Wait about a minute for it to finish, then retry.".to_string(),
            ),
            DarajaError::Rejected { error_message, .. } => (
                502,
                "daraja_rejected",
                format!("Daraja refused the payment request: {error_message}"),
            ),
            DarajaError::Auth { error_message, .. } => (
                502,
                "daraja_auth_failed",
                format!("Daraja refused our credentials ({error_message}); check the consumer key and secret."),
            ),
            DarajaError::Unavailable { message, .. } if e.is_outcome_unknown() => (
                504,
                "daraja_timeout",
                format!("Daraja's gateway failed after receiving the request ({message}). The outcome is unknown: the customer may get a prompt. Do not push again to this phone before its prompt window has passed."),
            ),
            DarajaError::Unavailable { message, .. } => (
                503,
                "daraja_unavailable",
                format!("Daraja is unavailable ({message}); no prompt was sent. Retry later."),
            ),
            DarajaError::RateLimited => (
                503,
                "daraja_rate_limited",
                "Daraja is limiting our request rate; no prompt was sent. Retry in a few seconds.".to_string(),
            ),
            DarajaError::TimedOut => (
                504,
                "daraja_timeout",
                "Daraja did not answer in time. The outcome is unknown: the customer may still get a prompt. Do not push again to this phone before its prompt window has passed.".to_string(),
            ),
            DarajaError::BadResponse { detail, .. } if e.is_outcome_unknown() => (
                502,
                "daraja_bad_response",
                format!("Daraja accepted the request but its answer cannot be read ({detail}). The outcome is unknown: the customer may get a prompt. Do not push again to this phone before its prompt window has passed."),
            ),
            DarajaError::BadResponse { detail, .. } => (
                502,
                "daraja_bad_response",
                format!("Daraja answered with something that is not a valid response ({detail}); no prompt was sent."),
            ),
        };
        Self {
            status,
            code,
            message,
            daraja_error_code: e.error_code().map(str::to_string),
            checkout_request_id: None,
            outcome_unknown: e.is_outcome_unknown(),
        }
    }

    /// Our own lock: a push to this phone is still open (or still being sent).
    pub(crate) fn phone_busy(checkout_request_id: Option<String>) -> Self {
        let message = match &checkout_request_id {
            Some(_) => "A payment prompt sent to this phone moments ago may still be open (see checkout_request_id). Wait for its outcome before pushing again.",
            None => "A payment prompt to this phone is being sent right now. Wait for its outcome before pushing again.",
        };
        Self {
            checkout_request_id,
            ..Self::new(409, "phone_busy", message)
        }
    }

    pub(crate) fn invalid_idempotency_key() -> Self {
        Self::new(
            400,
            "invalid_idempotency_key",
            "The Idempotency-Key header must be 1 to 255 visible ASCII characters (no spaces); a UUID is a good choice.",
        )
    }

    pub(crate) fn idempotency_key_reused() -> Self {
        Self::new(
            422,
            "idempotency_key_reused",
            "This Idempotency-Key was already used with a different request body. Use a new key for a new payment.",
        )
    }

    pub(crate) fn idempotency_in_progress() -> Self {
        Self::new(
            409,
            "idempotency_in_progress",
            "A request with this Idempotency-Key is still being processed. Retry with the same key in a few seconds to get its answer.",
        )
    }

    /// The intent could not be written before the push: nothing was sent to the phone.
    pub(crate) fn storage_unavailable_before_push(e: &StoreError) -> Self {
        Self::new(
            503,
            "storage_unavailable",
            format!("The payment store is unavailable ({e}); no prompt was sent. Retry later with the same Idempotency-Key."),
        )
    }

    pub(crate) fn from_store(e: &StoreError) -> Self {
        Self::new(
            503,
            "storage_unavailable",
            format!("The payment store is unavailable ({e}). Retry later."),
        )
    }
}
