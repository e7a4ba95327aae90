//! The four secrets (consumer key and secret, passkey, callback token): from the environment
//! when every one a function needs is set there, else from one Secrets Manager document.

use std::collections::BTreeSet;

use async_trait::async_trait;
use daraja::Secret;
use serde::Deserialize;

use super::{ConfigError, Vars};

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
    pub fn env(self) -> &'static str {
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

/// The secrets a function loaded, by name.
#[derive(Debug, Default)]
pub struct Secrets {
    pub consumer_key: Option<Secret>,
    pub consumer_secret: Option<Secret>,
    pub passkey: Option<Secret>,
    pub callback_token: Option<Secret>,
}

impl Secrets {
    fn slot(&mut self, name: SecretName) -> &mut Option<Secret> {
        match name {
            SecretName::ConsumerKey => &mut self.consumer_key,
            SecretName::ConsumerSecret => &mut self.consumer_secret,
            SecretName::Passkey => &mut self.passkey,
            SecretName::CallbackToken => &mut self.callback_token,
        }
    }

    /// Takes out a secret [`load_secrets`] was asked for; one it was not asked for is missing.
    pub fn take(&mut self, name: SecretName) -> Result<Secret, ConfigError> {
        self.slot(name)
            .take()
            .ok_or_else(|| ConfigError::Missing(BTreeSet::from([name.env().to_string()])))
    }
}

/// Resolves `names`: environment first, then the secret document (fetched at most once).
pub async fn load_secrets(
    vars: &dyn Vars,
    names: &[SecretName],
    source: Option<&dyn SecretSource>,
) -> Result<Secrets, ConfigError> {
    let from_env: Vec<Option<String>> = names.iter().map(|n| vars.var(n.env())).collect();
    let mut out = Secrets::default();
    if from_env.iter().all(Option::is_some) {
        for (name, value) in names.iter().zip(from_env) {
            *out.slot(*name) = value.map(Secret::new);
        }
        return Ok(out);
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
    for (name, env) in names.iter().zip(from_env) {
        match env.or_else(|| doc.get(*name).cloned()) {
            Some(v) => *out.slot(*name) = Some(Secret::new(v)),
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

/// The callback keys held by the `callback_token` secret: one key, or `id:key` pairs with the
/// signing key first ([`CallbackKeys::parse`](crate::api::CallbackKeys::parse)).
pub fn callback_keys(secret: Secret) -> Result<crate::api::CallbackKeys, ConfigError> {
    crate::api::CallbackKeys::parse(secret.expose()).map_err(|reason| ConfigError::Invalid {
        name: "CALLBACK_TOKEN",
        reason,
    })
}
