//! Daraja (M-Pesa Express) types and client, and the payment domain.
//!
//! Nothing here knows about Lambda (except the `lambda` feature's small glue module): the
//! functions translate HTTP into calls on this crate.

pub mod api;
pub mod aws;
pub mod config;
pub mod daraja;
#[cfg(feature = "lambda")]
pub mod lambda;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
pub mod payment;
pub mod reconcile;
pub mod store;
pub mod tls;
