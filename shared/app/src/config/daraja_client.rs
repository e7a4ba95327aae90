//! The Daraja client's settings, shared by the push and reconcile functions.

use std::collections::BTreeSet;

use daraja::{DarajaConfig, ShortCode, TillNumber, TransactionKind};

use super::{load_secrets, millis, required, ConfigError, SecretName, SecretSource, Secrets, Vars};

pub const SANDBOX_BASE_URL: &str = "https://sandbox.safaricom.co.ke";

/// The Daraja client's settings and secrets, and the `extra` secrets a function also needs (in
/// their order). `missing` holds what the caller already found missing, so that one error names
/// everything.
pub(super) async fn load_daraja(
    vars: &dyn Vars,
    source: Option<&dyn SecretSource>,
    mut missing: BTreeSet<String>,
    extra: &[SecretName],
) -> Result<(DarajaConfig, Secrets), ConfigError> {
    let shortcode = required(vars, "DARAJA_SHORTCODE", &mut missing);
    let kind = match vars.var("DARAJA_TRANSACTION_TYPE").as_deref() {
        None | Some("paybill") => None,
        Some("till") => Some(required(vars, "DARAJA_TILL_NUMBER", &mut missing)),
        Some(other) => {
            return Err(ConfigError::Invalid {
                name: "DARAJA_TRANSACTION_TYPE",
                reason: format!("{other:?}: use \"paybill\" or \"till\""),
            })
        }
    };
    if !missing.is_empty() {
        return Err(ConfigError::Missing(missing));
    }
    let shortcode = ShortCode::parse(&shortcode).map_err(|e| ConfigError::Invalid {
        name: "DARAJA_SHORTCODE",
        reason: e.to_string(),
    })?;
    let kind = match kind {
        None => TransactionKind::PayBill,
        Some(till) => {
            TransactionKind::Till(TillNumber::parse(&till).map_err(|e| ConfigError::Invalid {
                name: "DARAJA_TILL_NUMBER",
                reason: e.to_string(),
            })?)
        }
    };
    let base_url = vars
        .var("DARAJA_BASE_URL")
        .unwrap_or_else(|| SANDBOX_BASE_URL.to_string());
    if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
        return Err(ConfigError::Invalid {
            name: "DARAJA_BASE_URL",
            reason: format!("{base_url:?} is not an http(s) URL"),
        });
    }
    let connect_timeout = millis(
        vars,
        "DARAJA_CONNECT_TIMEOUT_MS",
        DarajaConfig::DEFAULT_CONNECT_TIMEOUT,
    )?;
    let request_timeout = millis(
        vars,
        "DARAJA_REQUEST_TIMEOUT_MS",
        DarajaConfig::DEFAULT_REQUEST_TIMEOUT,
    )?;
    let mut names = vec![
        SecretName::ConsumerKey,
        SecretName::ConsumerSecret,
        SecretName::Passkey,
    ];
    names.extend_from_slice(extra);
    let mut secrets = load_secrets(vars, &names, source).await?;
    let daraja = DarajaConfig {
        base_url,
        consumer_key: secrets.take(SecretName::ConsumerKey)?,
        consumer_secret: secrets.take(SecretName::ConsumerSecret)?,
        passkey: secrets.take(SecretName::Passkey)?,
        shortcode,
        kind,
        connect_timeout,
        request_timeout,
    };
    Ok((daraja, secrets))
}
