//! Typed configuration, read once at cold start.
//!
//! Plain settings come from environment variables. The four secrets (consumer key and secret,
//! passkey, callback token) come from one Secrets Manager secret named by `DARAJA_SECRET_ARN`,
//! unless every one a function needs is already set in its environment (local runs, tests):
//! then no secret is fetched at all, which keeps local cold starts free of network calls.

//!
//! One module per function's settings, each behind its service's feature. Each service owns the
//! types of its settings (`SourceAllowList`, `ReconcileSettings`); this module only reads the
//! environment into them.

use std::collections::BTreeSet;
#[cfg(any(feature = "push", feature = "reconcile"))]
use std::time::Duration;

#[cfg(feature = "callback")]
mod callback;
#[cfg(any(feature = "push", feature = "reconcile"))]
mod daraja_client;
#[cfg(feature = "push")]
mod push;
#[cfg(feature = "reconcile")]
mod reconcile;
#[cfg(feature = "secrets")]
mod secrets;

#[cfg(feature = "callback")]
pub use callback::CallbackConfig;
#[cfg(any(feature = "push", feature = "reconcile"))]
pub use daraja_client::SANDBOX_BASE_URL;
#[cfg(feature = "push")]
pub use push::PushConfig;
#[cfg(feature = "reconcile")]
pub use reconcile::ReconcileConfig;
#[cfg(feature = "secrets")]
pub use secrets::{callback_keys, load_secrets, SecretName, SecretSource, Secrets, SecretsManager};

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

pub(crate) fn required(
    vars: &dyn Vars,
    name: &'static str,
    missing: &mut BTreeSet<String>,
) -> String {
    vars.var(name).unwrap_or_else(|| {
        missing.insert(name.to_string());
        String::new()
    })
}

/// A duration setting written as a whole number of `unit`s (`"milliseconds"`, `"seconds"`),
/// `from` turning the number into the duration; `default` when unset.
#[cfg(any(feature = "push", feature = "reconcile"))]
fn duration(
    vars: &dyn Vars,
    name: &'static str,
    default: Duration,
    unit: &str,
    from: fn(u64) -> Duration,
) -> Result<Duration, ConfigError> {
    match vars.var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map(from)
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not a whole number of {unit}"),
            }),
    }
}

#[cfg(any(feature = "push", feature = "reconcile"))]
pub(crate) fn millis(
    vars: &dyn Vars,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    duration(vars, name, default, "milliseconds", Duration::from_millis)
}

#[cfg(feature = "reconcile")]
pub(crate) fn seconds(
    vars: &dyn Vars,
    name: &'static str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    duration(vars, name, default, "seconds", Duration::from_secs)
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

#[cfg(all(test, feature = "push", feature = "callback", feature = "reconcile"))]
mod tests {
    use async_trait::async_trait;
    use daraja::TransactionKind;

    use super::*;
    use crate::api::SourceAllowList;
    use crate::reconcile::ReconcileSettings;

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
            r#"{"consumer_key":"ck","consumer_secret":"cs","passkey":"pk","callback_token":"a-key-of-thirty-two-characters!!"}"#,
        );
        let cfg = PushConfig::load(&vars, Some(&doc)).await.unwrap();
        assert_eq!(cfg.daraja.consumer_key.expose(), "ck");
        assert_eq!(cfg.daraja.passkey.expose(), "from-env");
        assert_eq!(cfg.callback_keys.ids().collect::<Vec<_>>(), ["0"]);
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
            ("CALLBACK_TOKEN", "tok-value-of-twenty-two-or-more"),
        ];
        let cfg = PushConfig::load(&vars, None).await.unwrap();
        assert!(matches!(cfg.daraja.kind, TransactionKind::Till(_)));
        let debug = format!("{cfg:?}");
        for secret in ["ck-value", "cs-value", "pk-value", "tok-value"] {
            assert!(!debug.contains(secret), "{secret} leaked in {debug}");
        }
    }

    #[tokio::test]
    async fn a_short_or_malformed_callback_key_stops_the_cold_start_with_its_name() {
        for key in [
            "short",
            "1:a-key-of-thirty-two-characters!!,1:another-key-of-32-characters!",
        ] {
            let vars = [("TABLE_NAME", "t"), ("CALLBACK_TOKEN", key)];
            let err = CallbackConfig::load(&vars, None)
                .await
                .unwrap_err()
                .to_string();
            assert!(err.contains("CALLBACK_TOKEN"), "{err}");
            assert!(!err.contains("a-key-of"), "the key is not shown: {err}");
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
            ("CALLBACK_TOKEN", "a-key-of-thirty-two-characters!!"),
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
        let vars = [
            ("TABLE_NAME", "t"),
            ("CALLBACK_TOKEN", "a-key-of-thirty-two-characters!!"),
        ];
        let cfg = CallbackConfig::load(&vars, None).await.unwrap();
        assert!(cfg.allowed_sources.is_empty());
    }

    #[tokio::test]
    async fn the_source_mode_is_report_unless_set_to_enforce() {
        let key = ("CALLBACK_TOKEN", "a-key-of-thirty-two-characters!!");
        let list = ("CALLBACK_ALLOWED_IPS", "safaricom");
        let vars = [("TABLE_NAME", "t"), key, list];
        let cfg = CallbackConfig::load(&vars, None).await.unwrap();
        assert!(cfg.allowed_sources.is_report_only());
        let vars = [
            ("TABLE_NAME", "t"),
            key,
            list,
            ("CALLBACK_SOURCE_MODE", "enforce"),
        ];
        let cfg = CallbackConfig::load(&vars, None).await.unwrap();
        assert!(!cfg.allowed_sources.is_report_only());
        let vars = [
            ("TABLE_NAME", "t"),
            key,
            list,
            ("CALLBACK_SOURCE_MODE", "refuse"),
        ];
        let err = CallbackConfig::load(&vars, None)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CALLBACK_SOURCE_MODE") && err.contains("refuse"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn confirmation_is_off_unless_asked_and_unlisted_needs_a_list() {
        use crate::api::Confirmation;
        async fn load(vars: &dyn Vars) -> Result<Confirmation, String> {
            CallbackConfig::load(vars, None)
                .await
                .map(|c| c.confirmation)
                .map_err(|e| e.to_string())
        }
        let key = ("CALLBACK_TOKEN", "a-key-of-thirty-two-characters!!");
        let list = ("CALLBACK_ALLOWED_IPS", "safaricom");
        assert_eq!(
            load(&[("TABLE_NAME", "t"), key, list]).await,
            Ok(Confirmation::Off)
        );
        for (text, want) in [
            ("off", Confirmation::Off),
            ("unlisted", Confirmation::Unlisted),
            ("always", Confirmation::Always),
        ] {
            let vars = [("TABLE_NAME", "t"), key, list, ("CALLBACK_CONFIRM", text)];
            assert_eq!(load(&vars).await, Ok(want), "{text}");
        }
        let vars = [
            ("TABLE_NAME", "t"),
            key,
            list,
            ("CALLBACK_CONFIRM", "sometimes"),
        ];
        let err = load(&vars).await.unwrap_err();
        assert!(
            err.contains("CALLBACK_CONFIRM") && err.contains("sometimes"),
            "{err}"
        );
        let vars = [("TABLE_NAME", "t"), key, ("CALLBACK_CONFIRM", "unlisted")];
        let err = load(&vars).await.unwrap_err();
        assert!(err.contains("CALLBACK_ALLOWED_IPS"), "{err}");
    }
}
