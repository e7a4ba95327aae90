//! The HTTP API's behaviour, free of any Lambda type: each function's handler hands its request
//! here and turns the answer back into an HTTP response.
//!
//! Every error the API can return is an [`ApiError`] made from one [`ErrorCode`]: one HTTP
//! status and one stable, machine-readable code per cause, decided in `error.rs` and nowhere
//! else.

#[cfg(feature = "callback")]
mod allow_list;
#[cfg(feature = "callback")]
mod callback;
mod caller;
mod capability;
mod error;
mod key;
#[cfg(feature = "push")]
mod push;
mod status;

#[cfg(feature = "callback")]
pub use allow_list::{SourceAllowList, SAFARICOM_CALLBACK_IPS};
#[cfg(feature = "callback")]
pub use callback::{
    payment_result, CallbackAnswer, CallbackService, Confirmation, MAX_CALLBACK_BYTES,
};
pub use caller::principal;
pub use capability::{CallbackKeys, Capability};
pub use error::{ApiError, ErrorCode};
pub use key::{parse_idempotency_key, MAX_IDEMPOTENCY_KEY_LEN};
#[cfg(feature = "push")]
pub use push::{
    parse_payment_request, PushAccepted, PushAnswer, PushService, DEFAULT_INVOCATION_TIME,
    MAX_PUSH_BYTES, RECORDING_TIME,
};
pub use status::{find_payments, get_payment, payment_json, Lookup, Phones};

/// How long a phone stays locked after a push that may have reached it, unless configured
/// (`PHONE_LOCK_SECONDS`).
pub const DEFAULT_PHONE_LOCK: std::time::Duration = std::time::Duration::from_secs(120);
