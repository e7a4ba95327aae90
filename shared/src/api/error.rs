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
}

impl ApiError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            daraja_error_code: None,
        }
    }

    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(code) = &self.daraja_error_code {
            error["daraja_error_code"] = json!(code);
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
                "Daraja did not answer in time. The outcome is unknown: the customer may still get a prompt. Do not retry with a new payment before checking the phone's open prompt.".to_string(),
            ),
            DarajaError::BadResponse { detail, .. } => (
                502,
                "daraja_bad_response",
                format!("Daraja answered with something that is not a valid response ({detail})."),
            ),
        };
        Self {
            status,
            code,
            message,
            daraja_error_code: e.error_code().map(str::to_string),
        }
    }

    pub(crate) fn from_store(e: &StoreError) -> Self {
        Self::new(
            503,
            "storage_unavailable",
            format!("The payment store is unavailable ({e}). Retry later."),
        )
    }
}
