//! The Daraja client's settings, shared by the push and reconcile functions.

use std::collections::BTreeSet;

use daraja::{DarajaConfig, ShortCode, TillNumber, TransactionKind};

use super::{load_secrets, millis, required, ConfigError, SecretName, SecretSource, Secrets, Vars};

pub const SANDBOX_BASE_URL: &str = "https://sandbox.safaricom.co.ke";

/// Daraja is reached over HTTPS. Plain HTTP is for a stand-in on this machine or its private
/// network only (the simulator: loopback, `localhost`, `host.docker.internal`, a private
/// address): the consumer secret and every customer's phone travel in those requests.
fn check_base_url(base_url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        name: "DARAJA_BASE_URL",
        reason,
    };
    if base_url.starts_with("https://") {
        return Ok(());
    }
    let Some(rest) = base_url.strip_prefix("http://") else {
        return Err(invalid(format!("{base_url:?} is not an https URL")));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.split(':').next().unwrap_or_default(),
    };
    let local = !authority.contains('@')
        && match host.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => {
                ip.is_loopback() || ip.is_private() || ip.is_link_local()
            }
            Ok(std::net::IpAddr::V6(ip)) => ip.is_loopback(),
            Err(_) => {
                let host = host.to_ascii_lowercase();
                host == "localhost"
                    || host.ends_with(".localhost")
                    || host == "host.docker.internal"
            }
        };
    if local {
        Ok(())
    } else {
        Err(invalid(format!(
            "{base_url:?}: Daraja is reached over https (https://sandbox.safaricom.co.ke, \
             https://api.safaricom.co.ke); plain http only to a local stand-in"
        )))
    }
}

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
    check_base_url(&base_url)?;
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

#[cfg(test)]
mod tests {
    use super::check_base_url;

    #[test]
    fn daraja_is_reached_over_https_and_plain_http_only_locally() {
        for allowed in [
            "https://sandbox.safaricom.co.ke",
            "https://api.safaricom.co.ke/",
            "http://127.0.0.1:8001",
            "http://localhost:8001/",
            "http://host.docker.internal:8001",
            "http://172.17.0.1:8001",
            "http://10.0.0.5",
            "http://[::1]:8001",
        ] {
            assert!(check_base_url(allowed).is_ok(), "{allowed}");
        }
        for refused in [
            "http://api.safaricom.co.ke",
            "http://sandbox.safaricom.co.ke",
            "http://8.8.8.8:80",
            "http://127.0.0.1.nip.io",
            "http://localhost@evil.example",
            "http://localhost:80@evil.example",
            "ftp://127.0.0.1",
            "sandbox.safaricom.co.ke",
        ] {
            let err = check_base_url(refused).expect_err(refused).to_string();
            assert!(err.contains("DARAJA_BASE_URL"), "{refused}: {err}");
        }
    }
}
