//! Typed configuration, read once at cold start.
//!
//! Plain settings come from environment variables. The four secrets (consumer key and secret,
//! passkey, callback token) come from one Secrets Manager secret named by `DARAJA_SECRET_ARN`,
//! unless every one a function needs is already set in its environment (local runs, tests):
//! then no secret is fetched at all, which keeps local cold starts free of network calls.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use crate::daraja::client::DarajaConfig;
use crate::daraja::secret::Secret;
use crate::daraja::values::{ShortCode, TillNumber, TransactionKind};
use crate::reconcile::ReconcileSettings;

pub const SANDBOX_BASE_URL: &str = "https://sandbox.safaricom.co.ke";

/// Why a function could not start. The message names every missing or invalid setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("missing configuration: {}", .0.iter().cloned().collect::<Vec<_>>().join(", "))]
    Missing(BTreeSet<String>),
    #[error("invalid configuration {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("could not read secret {arn}: {reason}")]
    Secret { arn: String, reason: String },
}

/// Where settings are read from: the process environment in production, a map in tests.
pub trait Vars {
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment. Empty values count as unset, because SAM passes empty strings
/// for blank parameters.
pub struct ProcessEnv;

impl Vars for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.trim().is_empty())
    }
}

impl<const N: usize> Vars for [(&str, &str); N] {
    fn var(&self, name: &str) -> Option<String> {
        self.iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.to_string())
            .filter(|v| !v.trim().is_empty())
    }
}

/// Reads the secret document (JSON) by ARN. Behind a trait so the Secrets Manager client is only
/// built when a secret is really needed.
#[async_trait]
pub trait SecretSource: Send + Sync {
    async fn fetch(&self, arn: &str) -> Result<String, String>;
}

/// Secrets Manager over the AWS SDK. The client is built at the first fetch: a function whose
/// secrets all come from the environment never builds it.
pub struct SecretsManager(pub aws_config::SdkConfig);

#[async_trait]
impl SecretSource for SecretsManager {
    async fn fetch(&self, arn: &str) -> Result<String, String> {
        let out = aws_sdk_secretsmanager::Client::new(&self.0)
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
        out.secret_string
            .ok_or_else(|| "the secret has no SecretString".to_string())
    }
}

/// The secrets a function may need, by their environment-variable name and their key in the
/// Secrets Manager document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecretName {
    ConsumerKey,
    ConsumerSecret,
    Passkey,
    CallbackToken,
}

impl SecretName {
    fn env(self) -> &'static str {
        match self {
            SecretName::ConsumerKey => "DARAJA_CONSUMER_KEY",
            SecretName::ConsumerSecret => "DARAJA_CONSUMER_SECRET",
            SecretName::Passkey => "DARAJA_PASSKEY",
            SecretName::CallbackToken => "CALLBACK_TOKEN",
        }
    }

    fn key(self) -> &'static str {
        match self {
            SecretName::ConsumerKey => "consumer_key",
            SecretName::ConsumerSecret => "consumer_secret",
            SecretName::Passkey => "passkey",
            SecretName::CallbackToken => "callback_token",
        }
    }
}

#[derive(Deserialize)]
struct SecretDocument {
    consumer_key: Option<String>,
    consumer_secret: Option<String>,
    passkey: Option<String>,
    callback_token: Option<String>,
}

impl SecretDocument {
    fn get(&self, name: SecretName) -> Option<&String> {
        match name {
            SecretName::ConsumerKey => self.consumer_key.as_ref(),
            SecretName::ConsumerSecret => self.consumer_secret.as_ref(),
            SecretName::Passkey => self.passkey.as_ref(),
            SecretName::CallbackToken => self.callback_token.as_ref(),
        }
        .filter(|v| !v.trim().is_empty() && v.as_str() != "CHANGE_ME")
    }
}

/// Resolves `names`: environment first, then the secret document (fetched at most once).
pub async fn load_secrets(
    vars: &dyn Vars,
    names: &[SecretName],
    source: Option<&dyn SecretSource>,
) -> Result<Vec<Secret>, ConfigError> {
    let from_env: Vec<Option<String>> = names.iter().map(|n| vars.var(n.env())).collect();
    if from_env.iter().all(Option::is_some) {
        return Ok(from_env.into_iter().flatten().map(Secret::new).collect());
    }
    let missing_env = || -> BTreeSet<String> {
        names
            .iter()
            .zip(&from_env)
            .filter(|(_, v)| v.is_none())
            .map(|(n, _)| n.env().to_string())
            .collect()
    };
    let (Some(arn), Some(source)) = (vars.var("DARAJA_SECRET_ARN"), source) else {
        let mut missing = missing_env();
        missing.insert("DARAJA_SECRET_ARN (or the variables before it)".to_string());
        return Err(ConfigError::Missing(missing));
    };
    let raw = source
        .fetch(&arn)
        .await
        .map_err(|reason| ConfigError::Secret {
            arn: arn.clone(),
            reason,
        })?;
    let doc: SecretDocument = serde_json::from_str(&raw).map_err(|e| ConfigError::Secret {
        arn: arn.clone(),
        reason: format!("not the expected JSON document: {e}"),
    })?;
    let mut missing = BTreeSet::new();
    let mut out = Vec::with_capacity(names.len());
    for (name, env) in names.iter().zip(from_env) {
        match env.or_else(|| doc.get(*name).cloned()) {
            Some(v) => out.push(Secret::new(v)),
            None => {
                missing.insert(format!("{} (key {} in {arn})", name.env(), name.key()));
            }
        }
    }
    if missing.is_empty() {
        Ok(out)
    } else {
        Err(ConfigError::Missing(missing))
    }
}

fn required(vars: &dyn Vars, name: &'static str, missing: &mut BTreeSet<String>) -> String {
    vars.var(name).unwrap_or_else(|| {
        missing.insert(name.to_string());
        String::new()
    })
}

fn millis(vars: &dyn Vars, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    match vars.var(name) {
        None => Ok(Duration::from_millis(default)),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_millis)
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not a whole number of milliseconds"),
            }),
    }
}

/// Settings of the callback function.
#[derive(Debug)]
pub struct CallbackConfig {
    pub table_name: String,
    pub callback_token: Secret,
    /// `CALLBACK_ALLOWED_IPS`; empty allows every source.
    pub allowed_sources: SourceAllowList,
}

impl CallbackConfig {
    pub async fn load(
        vars: &dyn Vars,
        source: Option<&dyn SecretSource>,
    ) -> Result<Self, ConfigError> {
        let mut missing = BTreeSet::new();
        let table_name = required(vars, "TABLE_NAME", &mut missing);
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        let allowed_sources = match vars.var("CALLBACK_ALLOWED_IPS") {
            None => SourceAllowList::default(),
            Some(text) => SourceAllowList::parse(&text).map_err(|reason| ConfigError::Invalid {
                name: "CALLBACK_ALLOWED_IPS",
                reason,
            })?,
        };
        let mut secrets = load_secrets(vars, &[SecretName::CallbackToken], source).await?;
        Ok(Self {
            table_name,
            callback_token: secrets.remove(0),
            allowed_sources,
        })
    }
}

/// Safaricom's published callback source addresses (Safaricom may change them; keep this list current).
pub const SAFARICOM_CALLBACK_IPS: [&str; 12] = [
    "196.201.214.200",
    "196.201.214.206",
    "196.201.213.114",
    "196.201.214.207",
    "196.201.214.208",
    "196.201.213.44",
    "196.201.212.127",
    "196.201.212.138",
    "196.201.212.129",
    "196.201.212.136",
    "196.201.212.74",
    "196.201.212.69",
];

/// The source addresses allowed to deliver callbacks. Callbacks are not signed, so the
/// address is the only proof of origin besides the path token. Empty allows every source.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceAllowList {
    nets: Vec<(IpAddr, u8)>,
}

impl SourceAllowList {
    /// Comma-separated addresses and CIDR blocks (IPv4 or IPv6); the keyword `safaricom`
    /// stands for [`SAFARICOM_CALLBACK_IPS`]. Blank entries are ignored.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut nets = Vec::new();
        for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            if entry.eq_ignore_ascii_case("safaricom") {
                for ip in SAFARICOM_CALLBACK_IPS {
                    nets.push(parse_net(ip)?);
                }
            } else {
                nets.push(parse_net(entry)?);
            }
        }
        Ok(Self { nets })
    }

    pub fn is_empty(&self) -> bool {
        self.nets.is_empty()
    }

    /// Whether a request from `source` (API Gateway's `sourceIp`) may deliver a callback.
    /// With a list set, a missing or unreadable address is refused.
    pub fn allows(&self, source: Option<&str>) -> bool {
        if self.nets.is_empty() {
            return true;
        }
        let Some(ip) = source.and_then(|s| s.trim().parse::<IpAddr>().ok()) else {
            return false;
        };
        let ip = ip.to_canonical();
        self.nets
            .iter()
            .any(|(net, prefix)| in_net(ip, *net, *prefix))
    }
}

fn parse_net(entry: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match entry.split_once('/') {
        Some((addr, prefix)) => (addr, Some(prefix)),
        None => (entry, None),
    };
    let addr: IpAddr = addr
        .trim()
        .parse()
        .map_err(|_| format!("{entry:?} is not an IP address, a CIDR block or \"safaricom\""))?;
    let addr = addr.to_canonical();
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{entry:?} has a prefix length outside 0..={max}"))?,
    };
    Ok((addr, prefix))
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let (ip, net, bits) = match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            (u128::from(u32::from(ip)), u128::from(u32::from(net)), 32u32)
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => (u128::from(ip), u128::from(net), 128u32),
        _ => return false,
    };
    let host_bits = bits - u32::from(prefix);
    if host_bits >= 128 {
        return true;
    }
    (ip >> host_bits) == (net >> host_bits)
}

/// Settings of the push function.
#[derive(Debug)]
pub struct PushConfig {
    pub table_name: String,
    pub daraja: DarajaConfig,
    pub callback_token: Secret,
    /// Public base URL Safaricom calls back. `None`: derived from each API Gateway request.
    pub callback_base_url: Option<String>,
    /// `PHONE_LOCK_SECONDS`: how long a phone stays locked after a push that may have reached it.
    pub phone_lock: Duration,
}

impl PushConfig {
    pub async fn load(
        vars: &dyn Vars,
        source: Option<&dyn SecretSource>,
    ) -> Result<Self, ConfigError> {
        let mut missing = BTreeSet::new();
        let table_name = required(vars, "TABLE_NAME", &mut missing);
        let (daraja, mut extra) =
            load_daraja(vars, source, missing, &[SecretName::CallbackToken]).await?;
        let phone_lock = match vars.var("PHONE_LOCK_SECONDS") {
            None => Duration::from_secs(120),
            Some(v) => match v.trim().parse::<u64>() {
                Ok(secs @ 1..=3600) => Duration::from_secs(secs),
                _ => {
                    return Err(ConfigError::Invalid {
                        name: "PHONE_LOCK_SECONDS",
                        reason: format!("{v:?} is not a whole number of seconds from 1 to 3600"),
                    })
                }
            },
        };
        Ok(Self {
            table_name,
            daraja,
            callback_token: extra.remove(0),
            callback_base_url: vars
                .var("CALLBACK_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            phone_lock,
        })
    }
}

/// The Daraja client's settings and secrets, and the `extra` secrets a function also needs (in
/// their order). `missing` holds what the caller already found missing, so that one error names
/// everything.
async fn load_daraja(
    vars: &dyn Vars,
    source: Option<&dyn SecretSource>,
    mut missing: BTreeSet<String>,
    extra: &[SecretName],
) -> Result<(DarajaConfig, Vec<Secret>), ConfigError> {
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
    let connect_timeout = millis(vars, "DARAJA_CONNECT_TIMEOUT_MS", 3_000)?;
    let request_timeout = millis(vars, "DARAJA_REQUEST_TIMEOUT_MS", 15_000)?;
    let mut names = vec![
        SecretName::ConsumerKey,
        SecretName::ConsumerSecret,
        SecretName::Passkey,
    ];
    names.extend_from_slice(extra);
    let mut secrets = load_secrets(vars, &names, source).await?;
    let extra = secrets.split_off(3);
    let mut secrets = secrets.into_iter();
    let mut next = || secrets.next().expect("one secret per name");
    let daraja = DarajaConfig {
        base_url,
        consumer_key: next(),
        consumer_secret: next(),
        passkey: next(),
        shortcode,
        kind,
        connect_timeout,
        request_timeout,
    };
    Ok((daraja, extra))
}

/// Settings of the status function.
#[derive(Debug)]
pub struct StatusConfig {
    pub table_name: String,
}

impl StatusConfig {
    pub fn load(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let mut missing = BTreeSet::new();
        let table_name = required(vars, "TABLE_NAME", &mut missing);
        if missing.is_empty() {
            Ok(Self { table_name })
        } else {
            Err(ConfigError::Missing(missing))
        }
    }
}

/// Settings of the reconciliation function.
#[derive(Debug)]
pub struct ReconcileConfig {
    pub table_name: String,
    pub daraja: DarajaConfig,
    pub settings: ReconcileSettings,
}

impl ReconcileConfig {
    pub async fn load(
        vars: &dyn Vars,
        source: Option<&dyn SecretSource>,
    ) -> Result<Self, ConfigError> {
        let defaults = ReconcileSettings::default();
        let grace = seconds(vars, "RECONCILE_GRACE_SECONDS", defaults.grace)?;
        let max_age = seconds(vars, "RECONCILE_MAX_AGE_SECONDS", defaults.max_age)?;
        if max_age < grace {
            return Err(ConfigError::Invalid {
                name: "RECONCILE_MAX_AGE_SECONDS",
                reason: format!(
                    "{} s is shorter than RECONCILE_GRACE_SECONDS ({} s)",
                    max_age.as_secs(),
                    grace.as_secs()
                ),
            });
        }
        let max_queries_per_minute = match vars.var("RECONCILE_MAX_QUERIES_PER_MINUTE") {
            None => defaults.max_queries_per_minute,
            Some(v) => v
                .trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| ConfigError::Invalid {
                    name: "RECONCILE_MAX_QUERIES_PER_MINUTE",
                    reason: format!("{v:?} is not a whole number of at least 1"),
                })?,
        };
        let mut missing = BTreeSet::new();
        let table_name = required(vars, "TABLE_NAME", &mut missing);
        let (daraja, _) = load_daraja(vars, source, missing, &[]).await?;
        Ok(Self {
            table_name,
            daraja,
            settings: ReconcileSettings {
                grace,
                max_age,
                max_queries_per_minute,
            },
        })
    }
}

fn seconds(
    vars: &dyn Vars,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    match vars.var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(Duration::from_secs)
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not a whole number of seconds"),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeSecrets(&'static str);

    #[async_trait]
    impl SecretSource for FakeSecrets {
        async fn fetch(&self, _arn: &str) -> Result<String, String> {
            Ok(self.0.to_string())
        }
    }

    #[tokio::test]
    async fn missing_settings_are_all_named() {
        let err = PushConfig::load(&[("DARAJA_BASE_URL", "http://x")], None)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("TABLE_NAME"), "{err}");
        assert!(err.contains("DARAJA_SHORTCODE"), "{err}");
    }

    #[tokio::test]
    async fn missing_secrets_without_arn_are_named() {
        let vars = [("TABLE_NAME", "t"), ("DARAJA_SHORTCODE", "174379")];
        let err = PushConfig::load(&vars, None).await.unwrap_err().to_string();
        for name in [
            "DARAJA_CONSUMER_KEY",
            "DARAJA_CONSUMER_SECRET",
            "DARAJA_PASSKEY",
            "CALLBACK_TOKEN",
            "DARAJA_SECRET_ARN",
        ] {
            assert!(err.contains(name), "{name} not in {err}");
        }
    }

    #[tokio::test]
    async fn secrets_come_from_the_document_when_not_in_the_environment() {
        let vars = [
            ("TABLE_NAME", "t"),
            ("DARAJA_SHORTCODE", "174379"),
            ("DARAJA_SECRET_ARN", "arn:aws:secretsmanager:x"),
            ("DARAJA_PASSKEY", "from-env"),
        ];
        let doc = FakeSecrets(
            r#"{"consumer_key":"ck","consumer_secret":"cs","passkey":"pk","callback_token":"tok"}"#,
        );
        let cfg = PushConfig::load(&vars, Some(&doc)).await.unwrap();
        assert_eq!(cfg.daraja.consumer_key.expose(), "ck");
        assert_eq!(cfg.daraja.passkey.expose(), "from-env");
        assert_eq!(cfg.callback_token.expose(), "tok");
        assert_eq!(cfg.daraja.base_url, SANDBOX_BASE_URL);
        assert_eq!(cfg.daraja.kind, TransactionKind::PayBill);
    }

    #[tokio::test]
    async fn placeholder_secret_values_count_as_missing() {
        let vars = [("TABLE_NAME", "t"), ("DARAJA_SECRET_ARN", "arn:x")];
        let doc = FakeSecrets(r#"{"consumer_key":"CHANGE_ME","callback_token":"CHANGE_ME"}"#);
        let err = CallbackConfig::load(&vars, Some(&doc))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("callback_token"), "{err}");
    }

    #[tokio::test]
    async fn reconcile_settings_default_and_need_no_callback_token() {
        let vars = [
            ("TABLE_NAME", "t"),
            ("DARAJA_SHORTCODE", "174379"),
            ("DARAJA_CONSUMER_KEY", "ck"),
            ("DARAJA_CONSUMER_SECRET", "cs"),
            ("DARAJA_PASSKEY", "pk"),
        ];
        let cfg = ReconcileConfig::load(&vars, None).await.unwrap();
        assert_eq!(cfg.settings, ReconcileSettings::default());
        assert_eq!(cfg.settings.grace, Duration::from_secs(90));
        assert_eq!(cfg.settings.max_age, Duration::from_secs(900));
        assert_eq!(cfg.settings.max_queries_per_minute, 5);
        assert_eq!(cfg.daraja.passkey.expose(), "pk");
    }

    #[tokio::test]
    async fn reconcile_windows_are_read_and_checked() {
        let base = [
            ("TABLE_NAME", "t"),
            ("DARAJA_SHORTCODE", "174379"),
            ("DARAJA_CONSUMER_KEY", "ck"),
            ("DARAJA_CONSUMER_SECRET", "cs"),
            ("DARAJA_PASSKEY", "pk"),
        ];
        let with = |grace: &'static str, age: &'static str, rate: &'static str| {
            let mut vars = base.to_vec();
            vars.extend([
                ("RECONCILE_GRACE_SECONDS", grace),
                ("RECONCILE_MAX_AGE_SECONDS", age),
                ("RECONCILE_MAX_QUERIES_PER_MINUTE", rate),
            ]);
            <[(&str, &str); 8]>::try_from(vars).unwrap()
        };
        let cfg = ReconcileConfig::load(&with("1", "3", "2"), None)
            .await
            .unwrap();
        assert_eq!(cfg.settings.grace, Duration::from_secs(1));
        assert_eq!(cfg.settings.max_age, Duration::from_secs(3));
        assert_eq!(cfg.settings.max_queries_per_minute, 2);
        for (vars, name) in [
            (with("60", "30", "5"), "RECONCILE_MAX_AGE_SECONDS"),
            (with("x", "30", "5"), "RECONCILE_GRACE_SECONDS"),
            (with("1", "30", "0"), "RECONCILE_MAX_QUERIES_PER_MINUTE"),
        ] {
            let err = ReconcileConfig::load(&vars, None)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains(name), "{name} not in {err}");
        }
    }

    #[tokio::test]
    async fn till_needs_a_till_number_and_debug_shows_no_secret() {
        let vars = [
            ("TABLE_NAME", "t"),
            ("DARAJA_SHORTCODE", "174379"),
            ("DARAJA_TRANSACTION_TYPE", "till"),
        ];
        let err = PushConfig::load(&vars, None).await.unwrap_err().to_string();
        assert!(err.contains("DARAJA_TILL_NUMBER"), "{err}");

        let vars = [
            ("TABLE_NAME", "t"),
            ("DARAJA_SHORTCODE", "174379"),
            ("DARAJA_TRANSACTION_TYPE", "till"),
            ("DARAJA_TILL_NUMBER", "5012345"),
            ("DARAJA_CONSUMER_KEY", "ck-value"),
            ("DARAJA_CONSUMER_SECRET", "cs-value"),
            ("DARAJA_PASSKEY", "pk-value"),
            ("CALLBACK_TOKEN", "tok-value"),
        ];
        let cfg = PushConfig::load(&vars, None).await.unwrap();
        assert!(matches!(cfg.daraja.kind, TransactionKind::Till(_)));
        let debug = format!("{cfg:?}");
        for secret in ["ck-value", "cs-value", "pk-value", "tok-value"] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
    }

    #[test]
    fn allow_list_matches_addresses_blocks_and_the_safaricom_keyword() {
        let list =
            SourceAllowList::parse(" safaricom, 10.20.0.0/16 ,2001:db8::/32,127.0.0.1").unwrap();
        for allowed in [
            "196.201.214.200",
            "196.201.212.69",
            "10.20.255.1",
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "2001:db8::7",
        ] {
            assert!(list.allows(Some(allowed)), "{allowed}");
        }
        for refused in [
            "196.201.214.201",
            "10.21.0.1",
            "127.0.0.2",
            "2001:db9::1",
            "",
            "x",
        ] {
            assert!(!list.allows(Some(refused)), "{refused}");
        }
        assert!(!list.allows(None));
        let all = SourceAllowList::parse(" , ").unwrap();
        assert!(all.is_empty() && all.allows(None) && all.allows(Some("8.8.8.8")));
        assert!(SourceAllowList::parse("0.0.0.0/0")
            .unwrap()
            .allows(Some("8.8.8.8")));
    }

    #[tokio::test]
    async fn a_bad_allow_list_entry_stops_the_cold_start_with_its_name() {
        let vars = [
            ("TABLE_NAME", "t"),
            ("CALLBACK_TOKEN", "tok"),
            ("CALLBACK_ALLOWED_IPS", "safaricom,10.0.0.0/33"),
        ];
        let err = CallbackConfig::load(&vars, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CALLBACK_ALLOWED_IPS") && err.contains("10.0.0.0/33"),
            "{err}"
        );
        let err = SourceAllowList::parse("safaricom;10.0.0.1").unwrap_err();
        assert!(err.contains("not an IP address"), "{err}");
        let vars = [("TABLE_NAME", "t"), ("CALLBACK_TOKEN", "tok")];
        let cfg = CallbackConfig::load(&vars, None).await.unwrap();
        assert!(cfg.allowed_sources.is_empty());
    }
}
