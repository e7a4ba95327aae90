//! `POST /callbacks/stk/{token}`: Safaricom's result, applied with one conditional write.

use std::sync::Arc;

use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use super::ApiError;
use crate::daraja::{mask_id, parse_callback, CallbackParseError, Clock, Secret, StkCallback};
use crate::payment::{PaymentResult, ResultSource};
use crate::store::{Applied, PaymentStore};

/// Callbacks larger than this are refused unread: Daraja's are well under 2 KiB.
pub const MAX_CALLBACK_BYTES: usize = 64 * 1024;

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
            Some(given) => {
                given.len() == expected.len() && bool::from(given.as_bytes().ct_eq(expected))
            }
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
