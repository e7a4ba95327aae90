//! The delivery function's settings, and its signing secrets (re-read every five minutes, so a
//! rotation reaches warm containers without a deploy).

use std::time::{Duration, Instant};

use app::config::{ConfigError, Vars};
use app::webhook::{SigningSecrets, WebhookSettings};
use daraja::Secret;
use serde::Deserialize;
use tokio::sync::Mutex;

/// Where the signing secrets come from.
#[derive(Debug, Clone)]
pub enum SecretSetting {
    /// A Secrets Manager secret: `{"current": "…", "previous": "…"}` (`previous` during a
    /// rotation only).
    Arn(String),
    /// Local runs: `WEBHOOK_SIGNING_SECRET` (and `WEBHOOK_PREVIOUS_SIGNING_SECRET`).
    Env(SigningSecrets),
}

#[derive(Debug)]
pub struct DeliveryConfig {
    pub settings: WebhookSettings,
    pub queue_url: String,
    pub dead_letter_queue_url: String,
    pub retry_for: Duration,
    pub secret: SecretSetting,
}

fn seconds(vars: &dyn Vars, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
    match vars.var(name) {
        None => Ok(Duration::from_secs(default)),
        Some(v) => v
            .trim()
            .parse()
            .map(Duration::from_secs)
            .map_err(|_| ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not a whole number of seconds"),
            }),
    }
}

impl DeliveryConfig {
    pub fn load(vars: &dyn Vars) -> Result<Self, ConfigError> {
        let mut missing = std::collections::BTreeSet::new();
        let mut required = |name: &str| {
            vars.var(name).unwrap_or_else(|| {
                missing.insert(name.to_string());
                String::new()
            })
        };
        let url = required("WEBHOOK_URL");
        let queue_url = required("WEBHOOK_QUEUE_URL");
        let dead_letter_queue_url = required("WEBHOOK_DEAD_LETTER_QUEUE_URL");
        let secret = match (
            vars.var("WEBHOOK_SIGNING_SECRET"),
            vars.var("WEBHOOK_SECRET_ARN"),
        ) {
            (Some(current), _) => SecretSetting::Env(SigningSecrets {
                current: Secret::new(current),
                previous: vars.var("WEBHOOK_PREVIOUS_SIGNING_SECRET").map(Secret::new),
            }),
            (None, Some(arn)) => SecretSetting::Arn(arn),
            (None, None) => {
                missing.insert("WEBHOOK_SECRET_ARN".to_string());
                SecretSetting::Arn(String::new())
            }
        };
        if !missing.is_empty() {
            return Err(ConfigError::Missing(missing));
        }
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: "WEBHOOK_URL",
                reason: "expected an http(s) URL".to_string(),
            });
        }
        let timeout =
            match vars.var("WEBHOOK_TIMEOUT_MS") {
                None => Duration::from_secs(5),
                Some(v) => v.trim().parse().map(Duration::from_millis).map_err(|_| {
                    ConfigError::Invalid {
                        name: "WEBHOOK_TIMEOUT_MS",
                        reason: format!("{v:?} is not a whole number of milliseconds"),
                    }
                })?,
            };
        Ok(Self {
            settings: WebhookSettings {
                url,
                timeout,
                backoff_base: seconds(vars, "WEBHOOK_BACKOFF_BASE_SECONDS", 30)?,
                // SQS keeps a message invisible for 12 hours at most.
                backoff_cap: seconds(vars, "WEBHOOK_BACKOFF_CAP_SECONDS", 43_200)?
                    .min(Duration::from_secs(43_200)),
            },
            queue_url,
            dead_letter_queue_url,
            retry_for: seconds(vars, "WEBHOOK_RETRY_FOR_SECONDS", 86_400)?,
            secret,
        })
    }
}

const REFRESH: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
struct SecretDocument {
    current: String,
    #[serde(default)]
    previous: Option<String>,
}

/// The signing secrets, read at most every [`REFRESH`].
pub struct SecretCache {
    setting: SecretSetting,
    aws: aws_config::SdkConfig,
    cached: Mutex<Option<(Instant, SigningSecrets)>>,
}

impl SecretCache {
    pub fn new(setting: SecretSetting, aws: aws_config::SdkConfig) -> Self {
        Self {
            setting,
            aws,
            cached: Mutex::new(None),
        }
    }

    pub async fn get(&self) -> Result<SigningSecrets, ConfigError> {
        let arn = match &self.setting {
            SecretSetting::Env(secrets) => return Ok(secrets.clone()),
            SecretSetting::Arn(arn) => arn,
        };
        let mut cached = self.cached.lock().await;
        if let Some((at, secrets)) = cached.as_ref() {
            if at.elapsed() < REFRESH {
                return Ok(secrets.clone());
            }
        }
        match (self.read(arn).await, cached.as_ref()) {
            (Ok(secrets), _) => {
                *cached = Some((Instant::now(), secrets.clone()));
                Ok(secrets)
            }
            // Secrets Manager failing is no reason to stop delivering: the secrets read last
            // still sign, and the next batch tries again.
            (Err(e), Some((_, secrets))) => {
                tracing::warn!(error = %e, "webhook secret not re-read: signing with the last one read");
                Ok(secrets.clone())
            }
            (Err(e), None) => Err(e),
        }
    }

    async fn read(&self, arn: &str) -> Result<SigningSecrets, ConfigError> {
        let fail = |reason: String| ConfigError::Secret {
            arn: arn.to_owned(),
            reason,
        };
        let text = aws_sdk_secretsmanager::Client::new(&self.aws)
            .get_secret_value()
            .secret_id(arn)
            .send()
            .await
            .map_err(|e| fail(aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string()))?
            .secret_string
            .ok_or_else(|| fail("the secret has no SecretString".into()))?;
        let document: SecretDocument = serde_json::from_str(&text)
            .map_err(|_| fail(r#"expected {"current": "…", "previous": "…"}"#.into()))?;
        if document.current.trim().is_empty() {
            return Err(fail("current is empty".into()));
        }
        Ok(SigningSecrets {
            current: Secret::new(document.current),
            previous: document
                .previous
                .filter(|p| !p.trim().is_empty())
                .map(Secret::new),
        })
    }
}
