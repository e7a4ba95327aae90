//! The HTTP API's behaviour, free of any Lambda type: each function's handler hands its request
//! here and turns the answer back into an HTTP response.
//!
//! Every error the API can return is an [`ApiError`]: one HTTP status and one stable,
//! machine-readable code per cause, decided in `error.rs` and nowhere else.

mod callback;
mod error;
mod push;
mod status;

pub use callback::{payment_result, CallbackAnswer, CallbackService, MAX_CALLBACK_BYTES};
pub use error::ApiError;
pub use push::{
    parse_idempotency_key, PaymentRequest, PushAccepted, PushAnswer, PushService,
    DEFAULT_PHONE_LOCK, MAX_IDEMPOTENCY_KEY_LEN, MAX_PUSH_BYTES,
};
pub use status::get_payment;
