//! Every error the API answers: one [`ErrorCode`] per cause, with its HTTP status, and the one
//! place an error becomes a body.

use serde_json::{json, Value};

use daraja::values::ValidationError;

/// The stable, machine-readable causes of every 4xx and 5xx. `openapi.yaml` lists the same
/// codes (a test checks they match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// The body is not JSON, or not the JSON object expected.
    InvalidJson,
    /// The body is larger than the route accepts.
    PayloadTooLarge,
    /// A required field is absent.
    MissingField,
    InvalidPhone,
    InvalidAmount,
    InvalidReference,
    InvalidDescription,
    /// A field breaks a rule of its own (no more specific code applies).
    InvalidField,
    InvalidIdempotencyKey,
    IdempotencyKeyReused,
    IdempotencyInProgress,
    /// A prompt may still be open on this phone (ours, or Daraja's "unable to lock subscriber").
    PhoneBusy,
    DarajaRejected,
    DarajaAuthFailed,
    /// Daraja may have acted: the outcome is unknown.
    DarajaTimeout,
    /// The push may have reached the phone but its outcome could not be recorded, or its
    /// function was stopped before it could be: the outcome is unknown.
    PushInDoubt,
    DarajaUnavailable,
    DarajaRateLimited,
    DarajaBadResponse,
    StorageUnavailable,
    /// No callback URL can be built (no configured base URL, no API Gateway host).
    CallbackUrlUnknown,
    InvalidCheckoutRequestId,
    /// A lookup without exactly one of `idempotency_key` and `reference`.
    InvalidLookup,
    /// A `reveal` query parameter other than `phone`.
    InvalidReveal,
    PaymentNotFound,
    /// A callback body that is JSON but not a Daraja STK callback.
    InvalidCallback,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 26] = [
        Self::InvalidJson,
        Self::PayloadTooLarge,
        Self::MissingField,
        Self::InvalidPhone,
        Self::InvalidAmount,
        Self::InvalidReference,
        Self::InvalidDescription,
        Self::InvalidField,
        Self::InvalidIdempotencyKey,
        Self::IdempotencyKeyReused,
        Self::IdempotencyInProgress,
        Self::PhoneBusy,
        Self::DarajaRejected,
        Self::DarajaAuthFailed,
        Self::DarajaTimeout,
        Self::PushInDoubt,
        Self::DarajaUnavailable,
        Self::DarajaRateLimited,
        Self::DarajaBadResponse,
        Self::StorageUnavailable,
        Self::CallbackUrlUnknown,
        Self::InvalidCheckoutRequestId,
        Self::InvalidLookup,
        Self::InvalidReveal,
        Self::PaymentNotFound,
        Self::InvalidCallback,
    ];

    /// The code as answered.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::PayloadTooLarge => "payload_too_large",
            Self::MissingField => "missing_field",
            Self::InvalidPhone => "invalid_phone",
            Self::InvalidAmount => "invalid_amount",
            Self::InvalidReference => "invalid_reference",
            Self::InvalidDescription => "invalid_description",
            Self::InvalidField => "invalid_field",
            Self::InvalidIdempotencyKey => "invalid_idempotency_key",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::IdempotencyInProgress => "idempotency_in_progress",
            Self::PhoneBusy => "phone_busy",
            Self::DarajaRejected => "daraja_rejected",
            Self::DarajaAuthFailed => "daraja_auth_failed",
            Self::DarajaTimeout => "daraja_timeout",
            Self::PushInDoubt => "push_in_doubt",
            Self::DarajaUnavailable => "daraja_unavailable",
            Self::DarajaRateLimited => "daraja_rate_limited",
            Self::DarajaBadResponse => "daraja_bad_response",
            Self::StorageUnavailable => "storage_unavailable",
            Self::CallbackUrlUnknown => "callback_url_unknown",
            Self::InvalidCheckoutRequestId => "invalid_checkout_request_id",
            Self::InvalidLookup => "invalid_lookup",
            Self::InvalidReveal => "invalid_reveal",
            Self::PaymentNotFound => "payment_not_found",
            Self::InvalidCallback => "invalid_callback",
        }
    }

    /// The HTTP status answered with this code.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidIdempotencyKey
            | Self::InvalidCheckoutRequestId
            | Self::InvalidLookup
            | Self::InvalidReveal
            | Self::InvalidCallback => 400,
            Self::PaymentNotFound => 404,
            Self::IdempotencyInProgress | Self::PhoneBusy => 409,
            Self::PayloadTooLarge => 413,
            Self::MissingField
            | Self::InvalidPhone
            | Self::InvalidAmount
            | Self::InvalidReference
            | Self::InvalidDescription
            | Self::InvalidField
            | Self::IdempotencyKeyReused => 422,
            Self::CallbackUrlUnknown => 500,
            Self::DarajaRejected | Self::DarajaAuthFailed | Self::DarajaBadResponse => 502,
            Self::DarajaUnavailable | Self::DarajaRateLimited | Self::StorageUnavailable => 503,
            Self::DarajaTimeout | Self::PushInDoubt => 504,
        }
    }

    /// The code of a field that breaks its rule, from the validation error's own code.
    fn of_validation(code: &str) -> Self {
        [
            Self::InvalidPhone,
            Self::InvalidAmount,
            Self::InvalidReference,
            Self::InvalidDescription,
        ]
        .into_iter()
        .find(|c| c.as_str() == code)
        .unwrap_or(Self::InvalidField)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer: `{"error": {"code", "message", ...}}` with its code's HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Daraja's own `errorCode`, when Daraja caused the error.
    pub daraja_error_code: Option<String>,
    /// `phone_busy` from our own lock: the payment whose prompt is still open.
    pub checkout_request_id: Option<String>,
    /// Daraja may have acted on the push although we saw no usable answer.
    pub outcome_unknown: bool,
}

/// What to tell the caller when the outcome of a push is unknown.
#[cfg(feature = "push")]
const OUTCOME_UNKNOWN: &str = "The outcome is unknown: the customer may get a prompt. Do not push again to this phone before its prompt window has passed.";

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            daraja_error_code: None,
            checkout_request_id: None,
            outcome_unknown: false,
        }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The body answered: the only place an error is rendered.
    pub fn body(&self) -> Value {
        let mut error = json!({ "code": self.code.as_str(), "message": self.message });
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

    pub fn from_validation(e: ValidationError) -> Self {
        Self::new(ErrorCode::of_validation(e.code), e.message)
    }

    #[cfg(feature = "push")]
    pub(crate) fn from_daraja(e: &daraja::DarajaError) -> Self {
        use daraja::DarajaError;
        let (code, message) = match e {
            _ if e.is_subscriber_busy() => (
                ErrorCode::PhoneBusy,
                "Another M-Pesa prompt is open on this phone. Wait about a minute for it to finish, then retry.".to_string(),
            ),
            DarajaError::Rejected { error_message, .. } => (
                ErrorCode::DarajaRejected,
                format!("Daraja refused the payment request: {error_message}"),
            ),
            DarajaError::Auth { error_message, .. } => (
                ErrorCode::DarajaAuthFailed,
                format!("Daraja refused our credentials ({error_message}); check the consumer key and secret."),
            ),
            DarajaError::Unavailable { message, .. } if e.is_outcome_unknown() => (
                ErrorCode::DarajaTimeout,
                format!("Daraja's gateway failed after receiving the request ({message}). {OUTCOME_UNKNOWN}"),
            ),
            DarajaError::Unavailable { message, .. } => (
                ErrorCode::DarajaUnavailable,
                format!("Daraja is unavailable ({message}); no prompt was sent. Retry later."),
            ),
            DarajaError::RateLimited => (
                ErrorCode::DarajaRateLimited,
                "Daraja is limiting our request rate; no prompt was sent. Retry in a few seconds.".to_string(),
            ),
            DarajaError::TimedOut => (
                ErrorCode::DarajaTimeout,
                "Daraja did not answer in time. The outcome is unknown: the customer may still get a prompt. Do not push again to this phone before its prompt window has passed.".to_string(),
            ),
            DarajaError::BadResponse { detail, .. } if e.is_outcome_unknown() => (
                ErrorCode::DarajaBadResponse,
                format!("Daraja accepted the request but its answer cannot be read ({detail}). {OUTCOME_UNKNOWN}"),
            ),
            DarajaError::BadResponse { detail, .. } => (
                ErrorCode::DarajaBadResponse,
                format!("Daraja answered with something that is not a valid response ({detail}); no prompt was sent."),
            ),
        };
        Self {
            daraja_error_code: e.error_code().map(str::to_string),
            outcome_unknown: e.is_outcome_unknown(),
            ..Self::new(code, message)
        }
    }

    /// A key whose push stopped before Daraja's answer was recorded: Daraja may have been
    /// called, so the outcome is unknown; replayed and never retried.
    #[cfg(feature = "push")]
    pub(crate) fn abandoned() -> Self {
        Self {
            outcome_unknown: true,
            ..Self::new(
                ErrorCode::PushInDoubt,
                format!("The request with this key stopped before Daraja's answer was recorded. {OUTCOME_UNKNOWN}"),
            )
        }
    }

    /// Daraja accepted the push (`checkout_request_id`) but the store failed until the
    /// function's deadline: the prompt is on the phone and nothing records it yet. The same
    /// code as [`Self::abandoned`], which is what a retry with the key will answer.
    #[cfg(feature = "push")]
    pub(crate) fn accepted_but_unrecorded(checkout_request_id: String) -> Self {
        Self {
            outcome_unknown: true,
            checkout_request_id: Some(checkout_request_id),
            ..Self::new(
                ErrorCode::PushInDoubt,
                "Daraja sent the prompt (see checkout_request_id) but the payment store could not record it. The outcome is unknown until Safaricom's callback arrives: poll GET /payments/{checkout_request_id}, and do not push again to this phone before its prompt window has passed.",
            )
        }
    }

    #[cfg(feature = "push")]
    /// Our own lock: a push to this phone is still open (or still being sent).
    pub(crate) fn phone_busy(checkout_request_id: Option<String>) -> Self {
        let message = match &checkout_request_id {
            Some(_) => "A payment prompt sent to this phone moments ago may still be open (see checkout_request_id). Wait for its outcome before pushing again.",
            None => "A payment prompt to this phone is being sent right now. Wait for its outcome before pushing again.",
        };
        Self {
            checkout_request_id,
            ..Self::new(ErrorCode::PhoneBusy, message)
        }
    }

    pub(crate) fn invalid_idempotency_key() -> Self {
        Self::new(
            ErrorCode::InvalidIdempotencyKey,
            "The Idempotency-Key header must be 1 to 255 visible ASCII characters (no spaces); a UUID is a good choice.",
        )
    }

    #[cfg(feature = "push")]
    pub(crate) fn idempotency_key_reused() -> Self {
        Self::new(
            ErrorCode::IdempotencyKeyReused,
            "This Idempotency-Key was already used with a different request body. Use a new key for a new payment.",
        )
    }

    #[cfg(feature = "push")]
    pub(crate) fn idempotency_in_progress() -> Self {
        Self::new(
            ErrorCode::IdempotencyInProgress,
            "A request with this Idempotency-Key is still being processed. Retry with the same key in a few seconds to get its answer.",
        )
    }

    #[cfg(feature = "push")]
    /// The intent could not be written before the push: nothing was sent to the phone.
    /// The store's own error stays in the log, which the caller writes: an SDK error names the
    /// account, the role and the table, which are no business of whoever called.
    pub(crate) fn storage_unavailable_before_push() -> Self {
        Self::new(
            ErrorCode::StorageUnavailable,
            "The payment store is unavailable; no prompt was sent. Retry later with the same Idempotency-Key.",
        )
    }

    /// As [`storage_unavailable_before_push`](Self::storage_unavailable_before_push): the
    /// caller logs the error, the answer does not show it.
    pub(crate) fn storage_unavailable() -> Self {
        Self::new(
            ErrorCode::StorageUnavailable,
            "The payment store is unavailable. Retry later.",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_failure_is_answered_without_the_sdk_s_account_role_or_table() {
        // What an SDK error says, and what neither answer may carry.
        let answers = [
            ApiError::storage_unavailable(),
            #[cfg(feature = "push")]
            ApiError::storage_unavailable_before_push(),
        ];
        for answer in answers {
            let body = answer.body().to_string();
            assert_eq!(answer.code, ErrorCode::StorageUnavailable);
            for secret in ["arn:", "123456789012", "payments-prod", "AccessDenied"] {
                assert!(!body.contains(secret), "{secret} in {body}");
            }
        }
    }

    #[test]
    fn codes_are_unique_and_each_has_a_client_or_server_status() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!((400..600).contains(&code.status()), "{code}");
        }
    }

    /// `openapi.yaml` documents exactly the codes this enum can answer.
    #[test]
    fn openapi_lists_every_error_code() {
        let spec: serde_yaml::Value = serde_yaml::from_str(
            &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../openapi.yaml"))
                .expect("openapi.yaml at the repository root"),
        )
        .expect("openapi.yaml is YAML");
        let listed: std::collections::BTreeSet<String> = spec["components"]["schemas"]["Error"]
            ["properties"]["error"]["properties"]["code"]["enum"]
            .as_sequence()
            .expect("Error.code has an enum")
            .iter()
            .map(|c| c.as_str().expect("a string code").to_owned())
            .collect();
        let ours: std::collections::BTreeSet<String> = ErrorCode::ALL
            .iter()
            .map(|c| c.as_str().to_owned())
            .collect();
        assert_eq!(listed, ours);
    }
}
