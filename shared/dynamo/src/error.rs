//! The one mapping from SDK failures to [`StoreError`], keeping the SDK error as the source.

use std::fmt;

use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::CancellationReason;
use payments::StoreError;

/// The reason code of a failed condition in a cancelled transaction.
pub const CONDITION_FAILED: &str = "ConditionalCheckFailed";
/// Real DynamoDB cancels a transaction that races another on the same item.
pub const TRANSACTION_CONFLICT: &str = "TransactionConflict";

/// Keeps the SDK's full error chain in the message (its own `Display` says little) and the
/// error itself as the source.
#[derive(Debug)]
struct SdkFailure {
    context: String,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl fmt::Display for SdkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for SdkFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// Throttling, a 5xx, the network, a missing table: the store is unavailable.
pub fn unavailable<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(Box::new(SdkFailure {
        context: DisplayErrorContext(&error).to_string(),
        source: Box::new(error),
    }))
}

/// An item that kept changing under a conditional write: only a bug can do that.
pub fn contention(checkout_request_id: &str) -> StoreError {
    StoreError::Unavailable(
        format!(
            "payment {} kept changing under a conditional write",
            daraja::mask_id(checkout_request_id)
        )
        .into(),
    )
}

/// The reason codes of a cancelled transaction, for a log line.
pub fn codes(reasons: &[CancellationReason]) -> String {
    reasons
        .iter()
        .map(|r| r.code().unwrap_or("?"))
        .collect::<Vec<_>>()
        .join(",")
}

/// A transaction cancelled for a reason other than the conditions it states.
pub fn cancelled(what: &str, reasons: &[CancellationReason]) -> StoreError {
    StoreError::Unavailable(format!("{what} was cancelled ({})", codes(reasons)).into())
}

/// Whether a transaction item failed only its condition (or was not the cause at all).
pub fn condition_failed(reason: &CancellationReason) -> bool {
    matches!(reason.code(), Some(CONDITION_FAILED | "None") | None)
}
