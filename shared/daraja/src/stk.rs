//! The two STK calls the payment services make, as a trait, with their request, their answers
//! and their one error type. [`DarajaClient`](crate::DarajaClient) is the implementation that
//! talks HTTP; [`FakeDaraja`](crate::fake::FakeDaraja) (feature `fake`) counts calls in tests.

use std::fmt;

use async_trait::async_trait;

use crate::deadline::Deadline;
use crate::result_code::ResultCode;
use crate::values::{AccountReference, Amount, PhoneNumber, TransactionDesc, ValidationError};
use crate::wire::StkPushResponse;

/// Business refusals ("Merchant does not exist", "Wrong credentials", "Unable to lock
/// subscriber", "The transaction is being processed") arrive as HTTP 500 with this code.
pub(crate) const BUSINESS_ERROR: &str = "500.001.1001";

/// "Internal server error" after the request was forwarded: it may have been acted on.
const INTERNAL_ERROR: &str = "500.003.1001";

/// "Invalid Access Token": the gateway refused the bearer token; the request went no further.
pub(crate) const INVALID_TOKEN: &str = "404.001.03";

/// Sends STK pushes and queries. Implementations are shared by every request of a process.
#[async_trait]
pub trait Daraja: Send + Sync {
    /// Gets ready to push by `by`: an implementation that needs an access token fetches it
    /// now, so that nothing but the push itself is left to do once the intent is written.
    async fn prepare(&self, by: Deadline) -> Result<(), DarajaError> {
        let _ = by;
        Ok(())
    }

    /// Sends the push, over by `req.deadline`. `Ok` means Daraja accepted it and will call
    /// back; nothing is paid yet.
    async fn stk_push(&self, req: &PushRequest) -> Result<StkPushResponse, DarajaError>;

    /// Asks Daraja for the outcome of a push, by `by`.
    async fn stk_query(
        &self,
        checkout_request_id: &str,
        by: Deadline,
    ) -> Result<QueryAnswer, DarajaError>;
}

/// How a failed push ends for the money: the three cases every caller must tell apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// Daraja read the request and refused it: nothing is on the phone.
    Refused,
    /// No prompt was sent and a retry may succeed.
    Retryable,
    /// Daraja may have sent the prompt: never send it again; wait for the callback or a query.
    OutcomeUnknown,
}

/// What the customer is asked to pay, every part validated: the one shape of a payment
/// request from the API's body to the intent, the push and the pending record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub phone: PhoneNumber,
    pub amount: Amount,
    pub reference: AccountReference,
    pub description: TransactionDesc,
}

impl Charge {
    /// Validates each part as the API does; `None` is the default description.
    pub fn parse(
        phone: &str,
        amount: u64,
        reference: &str,
        description: Option<&str>,
    ) -> Result<Self, ValidationError> {
        Ok(Self {
            phone: PhoneNumber::parse(phone)?,
            amount: Amount::new(amount)?,
            reference: AccountReference::parse(reference)?,
            description: TransactionDesc::parse_optional(description)?,
        })
    }
}

/// One charge to send, where Daraja calls back, and by when the call must be over.
#[derive(Clone, PartialEq, Eq)]
pub struct PushRequest {
    pub charge: Charge,
    pub callback_url: String,
    /// No request is started that could end after it; with too little left, nothing is sent.
    pub deadline: Deadline,
}

/// The callback URL may carry a secret path segment, so it is not printed.
impl fmt::Debug for PushRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PushRequest")
            .field("charge", &self.charge)
            .field("callback_url", &"<redacted>")
            .field("deadline", &self.deadline)
            .finish()
    }
}

/// What an STK query learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryAnswer {
    /// The payment has an outcome. A failure here must never overwrite a confirmed success
    /// (the sandbox has been seen contradicting its own callbacks).
    Final {
        result_code: ResultCode,
        result_desc: String,
        merchant_request_id: String,
    },
    /// The customer has not answered yet (`500.001.1001` "being processed", or result 4999).
    Processing,
}

/// Why a Daraja call failed. Messages carry Daraja's own words, never secrets or phone numbers.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DarajaError {
    /// Daraja read the request and refused it: 4xx, or a business refusal (`500.001.x`).
    /// Nothing was charged.
    #[error("Daraja refused the request (HTTP {http_status}, {}): {error_message}", .error_code.as_deref().unwrap_or("no error code"))]
    Rejected {
        http_status: u16,
        error_code: Option<String>,
        error_message: String,
        request_id: Option<String>,
    },
    /// Daraja could not take the request, or failed with it: connection refused or no token
    /// (`http_status` is `None`: nothing reached the API), or a 5xx to the request itself such
    /// as `500.003.02` (system busy / spike arrest). Safe to try again later unless
    /// [`is_outcome_unknown`](Self::is_outcome_unknown) says otherwise.
    #[error("Daraja is unavailable{}: {message}", .http_status.map(|s| format!(" (HTTP {s})")).unwrap_or_default())]
    Unavailable {
        http_status: Option<u16>,
        error_code: Option<String>,
        message: String,
    },
    /// HTTP 429: too many requests (about 5 queries a minute in the sandbox).
    #[error("Daraja rate limit reached (HTTP 429)")]
    RateLimited,
    /// No complete answer in time, or the connection broke after the request was sent.
    /// The push may have reached Daraja: the outcome is unknown until a callback or a query.
    #[error("no answer from Daraja in time; the outcome is unknown")]
    TimedOut,
    /// An answer that could not be read. On a 2xx the request was probably accepted.
    #[error("unreadable answer from Daraja (HTTP {http_status}): {detail}")]
    BadResponse { http_status: u16, detail: String },
    /// The token endpoint refused the consumer key and secret.
    #[error("Daraja refused the credentials ({}): {error_message}", .error_code.as_deref().unwrap_or("no error code"))]
    Auth {
        error_code: Option<String>,
        error_message: String,
    },
}

impl DarajaError {
    /// Daraja's `errorCode` (e.g. `"400.002.02"`), when it sent one.
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Self::Rejected { error_code, .. }
            | Self::Unavailable { error_code, .. }
            | Self::Auth { error_code, .. } => error_code.as_deref(),
            Self::RateLimited | Self::TimedOut | Self::BadResponse { .. } => None,
        }
    }

    /// True when Daraja may have acted on the request although we saw no usable answer: a
    /// timeout or broken connection after sending, an unreadable 2xx, any 5xx to the request
    /// itself without a Daraja error code (the gateway or the backend failed after receiving
    /// it), or `500.003.1001` (an internal error after the request was forwarded). Such a push
    /// must not be sent again; find its outcome by callback or query. Only the refusals Daraja
    /// gives before forwarding (`500.003.02` spike arrest, `500.003.03` quota) and failures to
    /// connect or to get a token are safe to retry.
    pub fn is_outcome_unknown(&self) -> bool {
        match self {
            Self::TimedOut => true,
            Self::BadResponse { http_status, .. } => (200..300).contains(http_status),
            Self::Unavailable {
                http_status: Some(500..=599),
                error_code,
                ..
            } => matches!(error_code.as_deref(), None | Some(INTERNAL_ERROR)),
            _ => false,
        }
    }

    /// `404.001.03` "Invalid Access Token" on the call itself, after the client's one refresh
    /// and retry: the gateway refused our token, so nothing reached M-Pesa.
    pub fn is_token_refused(&self) -> bool {
        matches!(
            self,
            Self::Rejected { error_code: Some(code), .. } if code == INVALID_TOKEN
        )
    }

    /// `500.001.1001` "Unable to lock subscriber": another STK prompt is open on that phone.
    /// Wait at least a minute before pushing to it again.
    pub fn is_subscriber_busy(&self) -> bool {
        match self {
            Self::Rejected {
                error_code: Some(code),
                error_message,
                ..
            } if code == BUSINESS_ERROR => {
                let message = error_message.to_ascii_lowercase();
                message.contains("lock subscriber") || message.contains("already in process")
            }
            _ => false,
        }
    }
}
impl DarajaError {
    /// What this failure means for a push: [`FailureKind::OutcomeUnknown`] when Daraja may have
    /// acted, [`FailureKind::Retryable`] when nothing was sent and trying again may work (Daraja
    /// down, throttling, our credentials, another prompt open on the phone), else refused.
    pub fn kind(&self) -> FailureKind {
        if self.is_outcome_unknown() {
            return FailureKind::OutcomeUnknown;
        }
        match self {
            Self::Rejected { .. } if self.is_subscriber_busy() || self.is_token_refused() => {
                FailureKind::Retryable
            }
            Self::Rejected { .. } | Self::BadResponse { .. } => FailureKind::Refused,
            Self::Unavailable { .. } | Self::RateLimited | Self::Auth { .. } => {
                FailureKind::Retryable
            }
            Self::TimedOut => FailureKind::OutcomeUnknown,
        }
    }

    /// Daraja's own `errorCode` when it sent one (a small, documented set), else the kind of
    /// failure: the `ErrorCode` dimension of the `DarajaError` metric.
    pub fn metric_code(&self) -> &str {
        if let Some(code) = self.error_code() {
            return code;
        }
        match self {
            Self::Rejected { .. } => "rejected",
            Self::Unavailable { .. } => "unavailable",
            Self::RateLimited => "rate_limited",
            Self::TimedOut => "timed_out",
            Self::BadResponse { .. } => "bad_response",
            Self::Auth { .. } => "auth",
        }
    }
}
