//! Daraja (M-Pesa Express): wire types, validated values, the callback parser, result codes,
//! the Nairobi clock and password, and the HTTP client behind the [`Daraja`] trait.
//!
//! - [`values`]: the inputs Daraja accepts, validated before anything is sent.
//! - [`secret`]: a string that never prints.
//! - [`deadline`]: the instant a call must be over by.
//! - [`time`]: the clock, the Nairobi timestamp and the request password.
//! - [`wire`]: request and response bodies exactly as they travel.
//! - [`callback`]: a lenient parser for the result Safaricom posts back.
//! - [`result_code`]: what each result code means and how to act on it.
//! - [`stk`]: the [`Daraja`] trait, its requests, answers and error.
//! - [`client`] (feature `client`): the HTTP implementation, with token caching.
//! - [`token`]: access tokens and the store that can share them between containers.
//! - [`observe`]: what the client reports about each call.
//! - [`mask`]: ids and phone numbers fit for logs.
//!
//! Nothing here knows AWS, Lambda, metrics or payments.

pub mod callback;
#[cfg(feature = "client")]
pub mod client;
pub mod deadline;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mask;
pub mod observe;
pub mod result_code;
pub mod secret;
pub mod stk;
pub mod time;
pub mod token;
pub mod values;
pub mod wire;

pub use callback::{parse_callback, AmountPaid, CallbackMetadata, CallbackParseError, StkCallback};
#[cfg(feature = "client")]
pub use client::{DarajaClient, DarajaConfig};
pub use deadline::Deadline;
pub use mask::mask_id;
pub use observe::{CallObserver, Endpoint};
pub use result_code::{OutcomeCategory, ResultCode};
pub use secret::Secret;
pub use stk::{Charge, Daraja, DarajaError, FailureKind, PushRequest, QueryAnswer};
pub use time::{daraja_timestamp, password, Clock, FixedClock, SystemClock};
pub use token::{AccessToken, NoSharedTokens, TokenStore};
pub use values::{
    mask_msisdn, AccountReference, Amount, PhoneNumber, ShortCode, TillNumber, TransactionDesc,
    TransactionKind, ValidationError,
};
