//! The HTTP API's behaviour, free of any Lambda type: each function's handler hands its request
//! here and turns the answer back into an HTTP response.
//!
//! Every error the API can return is an [`ApiError`]: one HTTP status and one stable,
//! machine-readable code per cause, decided in this module and nowhere else.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::daraja::callback::{parse_callback, CallbackParseError, StkCallback};
use crate::daraja::client::{DarajaClient, DarajaError, PushRequest};
use crate::daraja::secret::Secret;
use crate::daraja::time::Clock;
use crate::daraja::values::{
    mask_msisdn, AccountReference, Amount, PhoneNumber, TransactionDesc, ValidationError,
};
use crate::daraja::mask_id;
use crate::payment::{NewPayment, PaymentRecord, PaymentResult, ResultSource};
use crate::store::{Applied, PaymentStore, StoreError};

/// Callbacks larger than this are refused unread: Daraja's are well under 2 KiB.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;
/// Push requests larger than this are refused unread.
pub const MAX_PUSH_BYTES: usize = 16 * 1024;

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
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
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

    fn from_validation(e: ValidationError) -> Self {
        Self::new(422, e.code, e.message)
    }

    fn from_daraja(e: &DarajaError) -> Self {
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

    fn from_store(e: &StoreError) -> Self {
        Self::new(
            503,
            "storage_unavailable",
            format!("The payment store is unavailable ({e}). Retry later."),
        )
    }
}

/// `POST /payments` body. Fields are read from a JSON value so each problem gets its own message.
#[derive(Debug)]
pub struct PaymentRequest {
    pub phone: PhoneNumber,
    pub amount: Amount,
    pub reference: AccountReference,
    pub description: TransactionDesc,
}

impl PaymentRequest {
    /// Validates a request body: 400 when it is not a JSON object, 422 for a field that breaks a rule.
    pub fn parse(body: &[u8]) -> Result<Self, ApiError> {
        if body.len() > MAX_PUSH_BYTES {
            return Err(ApiError::new(
                413,
                "payload_too_large",
                format!("The request body is larger than {MAX_PUSH_BYTES} bytes."),
            ));
        }
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            ApiError::new(
                400,
                "invalid_json",
                format!("The request body is not valid JSON ({e}). Send {{\"phone\", \"amount\", \"reference\", \"description\"}}."),
            )
        })?;
        let Value::Object(fields) = value else {
            return Err(ApiError::new(
                400,
                "invalid_json",
                "The request body must be a JSON object with phone, amount, reference and optional description.",
            ));
        };
        let text = |name: &'static str, code: &'static str| -> Result<Option<&str>, ApiError> {
            match fields.get(name) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.as_str())),
                Some(_) => Err(ApiError::new(
                    422,
                    code,
                    format!("\"{name}\" must be a string."),
                )),
            }
        };
        let missing = |name: &str| {
            ApiError::new(
                422,
                "missing_field",
                format!("\"{name}\" is required."),
            )
        };
        let phone = text("phone", "invalid_phone")?.ok_or_else(|| missing("phone"))?;
        let phone = PhoneNumber::parse(phone).map_err(ApiError::from_validation)?;
        let amount = fields.get("amount").ok_or_else(|| missing("amount"))?;
        let amount = Amount::from_json(amount).map_err(ApiError::from_validation)?;
        let reference = text("reference", "invalid_reference")?.ok_or_else(|| missing("reference"))?;
        let reference = AccountReference::parse(reference).map_err(ApiError::from_validation)?;
        let description = TransactionDesc::parse_optional(text("description", "invalid_description")?)
            .map_err(ApiError::from_validation)?;
        Ok(Self {
            phone,
            amount,
            reference,
            description,
        })
    }
}

/// The 202 answer to `POST /payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAccepted {
    pub checkout_request_id: String,
    pub merchant_request_id: String,
    pub status: String,
    pub customer_message: String,
}

/// What the push function needs, built once at cold start.
pub struct PushService {
    pub daraja: DarajaClient,
    pub store: Arc<dyn PaymentStore>,
    pub clock: Arc<dyn Clock>,
    pub callback_token: Secret,
    /// From configuration; when `None` each request's own API host is used.
    pub callback_base_url: Option<String>,
}

impl PushService {
    /// The URL Daraja calls back: this API's own callback route with the secret token.
    pub fn callback_url(&self, request_base_url: Option<&str>) -> Result<String, ApiError> {
        let base = self
            .callback_base_url
            .as_deref()
            .or(request_base_url)
            .ok_or_else(|| {
                ApiError::new(
                    500,
                    "callback_url_unknown",
                    "No callback URL: set CALLBACK_BASE_URL or call through API Gateway.",
                )
            })?;
        Ok(format!(
            "{}/callbacks/stk/{}",
            base.trim_end_matches('/'),
            self.callback_token.expose()
        ))
    }

    /// Validates, sends the STK push and records the pending payment.
    pub async fn start(
        &self,
        body: &[u8],
        request_base_url: Option<&str>,
    ) -> Result<PushAccepted, ApiError> {
        let request = PaymentRequest::parse(body)?;
        let callback_url = self.callback_url(request_base_url)?;
        let push = PushRequest {
            phone: request.phone.clone(),
            amount: request.amount,
            reference: request.reference.clone(),
            description: request.description.clone(),
            callback_url,
        };
        let accepted = self.daraja.stk_push(&push).await.map_err(|e| {
            tracing::warn!(
                phone = %request.phone.masked(),
                error = %e,
                daraja_error_code = e.error_code().unwrap_or(""),
                "push refused"
            );
            ApiError::from_daraja(&e)
        })?;
        let pending = NewPayment {
            checkout_request_id: accepted.checkout_request_id.clone(),
            merchant_request_id: accepted.merchant_request_id.clone(),
            amount: request.amount.get(),
            phone: request.phone.as_str().to_string(),
            reference: request.reference.as_str().to_string(),
            description: Some(request.description.as_str().to_string()),
            created_at: self.clock.now(),
        };
        if let Err(e) = self.store.record_pending(&pending).await {
            // The prompt is already on the customer's phone: the callback will still create the
            // record. Log everything needed to reconcile it by hand, and say the payment is pending.
            tracing::error!(
                checkout_request_id = %mask_id(&pending.checkout_request_id),
                merchant_request_id = %pending.merchant_request_id,
                amount = pending.amount,
                phone = %request.phone.masked(),
                reference = %pending.reference,
                error = %e,
                "pending write failed after Daraja accepted the push; the callback will create the record"
            );
        } else {
            tracing::info!(
                checkout_request_id = %mask_id(&pending.checkout_request_id),
                phone = %request.phone.masked(),
                amount = pending.amount,
                "push accepted"
            );
        }
        Ok(PushAccepted {
            checkout_request_id: accepted.checkout_request_id,
            merchant_request_id: accepted.merchant_request_id,
            status: "PENDING".to_string(),
            customer_message: accepted.customer_message,
        })
    }
}

/// The answer to a callback: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackAnswer {
    pub status: u16,
    pub body: Value,
}

impl CallbackAnswer {
    fn accepted() -> Self {
        Self {
            status: 200,
            body: json!({ "ResultCode": 0, "ResultDesc": "Accepted" }),
        }
    }

    fn not_found() -> Self {
        // The same answer API Gateway gives for a route that does not exist: a wrong token
        // learns nothing.
        Self {
            status: 404,
            body: json!({ "message": "Not Found" }),
        }
    }
}

/// What the callback function needs, built once at cold start.
pub struct CallbackService {
    pub store: Arc<dyn PaymentStore>,
    pub clock: Arc<dyn Clock>,
    pub callback_token: Secret,
}

impl CallbackService {
    /// Constant-time comparison, so response timing does not reveal how much of a guess was right.
    pub fn token_matches(&self, given: Option<&str>) -> bool {
        let expected = self.callback_token.expose().as_bytes();
        match given {
            Some(given) => given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected)),
            None => false,
        }
    }

    pub async fn receive(&self, token: Option<&str>, body: &[u8]) -> CallbackAnswer {
        if !self.token_matches(token) {
            tracing::warn!("callback with a wrong or missing token refused");
            return CallbackAnswer::not_found();
        }
        if body.len() > MAX_CALLBACK_BYTES {
            tracing::warn!(bytes = body.len(), "oversized callback refused");
            return CallbackAnswer {
                status: 413,
                body: ApiError::new(
                    413,
                    "payload_too_large",
                    format!("A callback body is at most {MAX_CALLBACK_BYTES} bytes."),
                )
                .body(),
            };
        }
        let callback = match parse_callback(body) {
            Ok(cb) => cb,
            Err(e) => {
                tracing::warn!(error = %e, bytes = body.len(), "callback is not a Daraja STK callback");
                return CallbackAnswer {
                    status: 400,
                    body: ApiError::new(400, callback_error_code(&e), e.to_string()).body(),
                };
            }
        };
        let result = payment_result(&callback, body, ResultSource::Callback, self.clock.now());
        match self.store.apply_result(&result).await {
            Ok(applied) => {
                log_applied(&applied, &result);
                CallbackAnswer::accepted()
            }
            Err(e) => {
                // Safaricom does not resend: keep the whole result in the log so it can be replayed.
                tracing::error!(
                    checkout_request_id = %mask_id(&result.checkout_request_id),
                    result_code = %result.result_code,
                    receipt = result.receipt.as_deref().unwrap_or(""),
                    amount_paid = result.amount_paid.as_deref().unwrap_or(""),
                    error = %e,
                    "callback could not be stored"
                );
                CallbackAnswer {
                    status: 503,
                    body: ApiError::from_store(&e).body(),
                }
            }
        }
    }
}

fn callback_error_code(e: &CallbackParseError) -> &'static str {
    e.code()
}

fn log_applied(applied: &Applied, result: &PaymentResult) {
    let id = mask_id(&result.checkout_request_id);
    match applied {
        Applied::Transitioned { record, orphan } => {
            let status = record.status.as_str();
            if *orphan {
                tracing::warn!(checkout_request_id = %id, status, outcome = %result.outcome, "result for a payment with no pending record kept as orphan");
            } else if result.success {
                tracing::info!(checkout_request_id = %id, status, outcome = %result.outcome, "payment final");
            } else {
                tracing::info!(checkout_request_id = %id, status, outcome = %result.outcome, result_code = %result.result_code, "payment final");
            }
        }
        Applied::Duplicate(_) => {
            tracing::info!(checkout_request_id = %id, "duplicate result ignored");
        }
        Applied::Conflict(record) => {
            tracing::warn!(checkout_request_id = %id, status = record.status.as_str(), result_code = %result.result_code, "different result for a final payment kept in history");
        }
    }
}

/// Turns a parsed callback into the domain's result.
pub fn payment_result(
    cb: &StkCallback,
    raw: &[u8],
    source: ResultSource,
    received_at: chrono::DateTime<chrono::Utc>,
) -> PaymentResult {
    let meta = &cb.metadata;
    PaymentResult {
        checkout_request_id: cb.checkout_request_id.clone(),
        merchant_request_id: cb.merchant_request_id.clone(),
        result_code: cb.result_code.to_string(),
        result_desc: cb.result_desc.clone(),
        outcome: cb.result_code.category().as_str().to_string(),
        success: cb.result_code.is_success(),
        receipt: meta.receipt.clone(),
        amount_paid: meta.amount.as_ref().map(|a| a.to_string()),
        amount_paid_whole: meta.amount.as_ref().and_then(|a| a.whole_shillings()),
        paying_phone: meta.phone.clone(),
        transaction_date: meta.transaction_date.clone(),
        raw: Some(String::from_utf8_lossy(raw).into_owned()),
        source,
        received_at,
    }
}

/// `GET /payments/{id}`.
pub async fn get_payment(
    store: &dyn PaymentStore,
    checkout_request_id: Option<&str>,
) -> Result<PaymentRecord, ApiError> {
    let id = checkout_request_id
        .map(str::trim)
        .filter(|id| !id.is_empty() && id.len() <= 128)
        .ok_or_else(|| {
            ApiError::new(
                400,
                "invalid_checkout_request_id",
                "Give the CheckoutRequestID returned by POST /payments.",
            )
        })?;
    match store.get(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(ApiError::new(
            404,
            "payment_not_found",
            format!("No payment with CheckoutRequestID {id}."),
        )),
        Err(e) => Err(ApiError::from_store(&e)),
    }
}

/// Masks a phone-like value for logs; re-exported for the functions.
pub fn masked_phone(value: &str) -> String {
    mask_msisdn(value)
}
