//! `POST /payments`: validate, send the STK push, record the pending payment.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ApiError;
use crate::daraja::values::{AccountReference, Amount, PhoneNumber, TransactionDesc};
use crate::daraja::{mask_id, Clock, DarajaClient, PushRequest, Secret};
use crate::payment::NewPayment;
use crate::store::PaymentStore;

/// Push requests larger than this are refused unread.
pub const MAX_PUSH_BYTES: usize = 16 * 1024;

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
        let missing =
            |name: &str| ApiError::new(422, "missing_field", format!("\"{name}\" is required."));
        let phone = text("phone", "invalid_phone")?.ok_or_else(|| missing("phone"))?;
        let phone = PhoneNumber::parse(phone).map_err(ApiError::from_validation)?;
        let amount = fields.get("amount").ok_or_else(|| missing("amount"))?;
        let amount = Amount::from_json(amount).map_err(ApiError::from_validation)?;
        let reference =
            text("reference", "invalid_reference")?.ok_or_else(|| missing("reference"))?;
        let reference = AccountReference::parse(reference).map_err(ApiError::from_validation)?;
        let description =
            TransactionDesc::parse_optional(text("description", "invalid_description")?)
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
