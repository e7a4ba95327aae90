//! The services behind the functions: push, callback, status and reconcile, with their typed
//! configuration, the one error enum every 4xx/5xx comes from, metrics, the AWS SDK set-up and
//! TLS roots, and the Lambda glue.
//!
//! Each service is behind its own feature (`push`, `callback`, `reconcile`; status is always
//! there), so a function links only what its service needs. Nothing here but the `lambda`
//! module knows Lambda: the functions translate HTTP into calls on this crate.

pub mod api;
pub mod aws;
pub mod batch;
pub mod config;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod link;
#[cfg(feature = "logging")]
pub mod logging;
pub mod metrics;
#[cfg(feature = "reconcile")]
pub mod reconcile;
pub mod timing;
pub mod tls;
pub mod webhook;

/// The Daraja client as every function builds it: trusting the process's one set of system
/// roots (shared with the AWS SDK) and reporting each call's latency as a metric.
#[cfg(any(feature = "push", feature = "reconcile"))]
pub fn daraja_client(
    config: daraja::DarajaConfig,
    clock: std::sync::Arc<dyn daraja::Clock>,
    tokens: std::sync::Arc<dyn daraja::TokenStore>,
) -> Result<daraja::DarajaClient, daraja::DarajaError> {
    Ok(
        daraja::DarajaClient::new(config, clock, tokens, tls::system_roots().certs())?
            .observed_by(std::sync::Arc::new(metrics::DarajaCalls)),
    )
}
