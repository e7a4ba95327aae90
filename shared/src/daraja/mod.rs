//! Daraja (M-Pesa Express) wire types, validated values and the HTTP client.
//!
//! - [`values`]: the inputs Daraja accepts, validated before anything is sent.
//! - [`secret`]: a string that never prints.
//! - [`time`]: the clock, the Nairobi timestamp and the request password.
//! - [`wire`]: request and response bodies exactly as they travel.
//! - [`callback`]: a lenient parser for the result Safaricom posts back.
//! - [`result_code`]: what each result code means and how to act on it.
//! - [`client`]: the HTTP client with token caching and error mapping.
//! - [`token`]: access tokens and the store that can share them between containers.

pub mod callback;
pub mod client;
pub mod result_code;
pub mod secret;
pub mod time;
pub mod token;
pub mod values;
pub mod wire;

pub use callback::{parse_callback, AmountPaid, CallbackMetadata, CallbackParseError, StkCallback};
pub use client::{mask_id, DarajaClient, DarajaConfig, DarajaError, PushRequest, QueryAnswer};
pub use result_code::{OutcomeCategory, ResultCode};
pub use secret::Secret;
pub use time::{daraja_timestamp, password, Clock, FixedClock, SystemClock};
pub use token::{AccessToken, NoSharedTokens, TokenStore};
pub use values::{
    mask_msisdn, AccountReference, Amount, PhoneNumber, ShortCode, TillNumber, TransactionDesc,
    TransactionKind, ValidationError,
};
