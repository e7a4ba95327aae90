//! `GET /payments/{checkout_request_id}`.

use super::{ApiError, ErrorCode};
use payments::payment::PaymentRecord;
use payments::PaymentStore;

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
                ErrorCode::InvalidCheckoutRequestId,
                "Give the CheckoutRequestID returned by POST /payments.",
            )
        })?;
    match store.get(id).await {
        Ok(Some(record)) => Ok(record),
        Ok(None) => Err(ApiError::new(
            ErrorCode::PaymentNotFound,
            format!("No payment with CheckoutRequestID {id}."),
        )),
        Err(e) => Err(ApiError::from_store(&e)),
    }
}
