//! Settings of the callback function.

use std::collections::BTreeSet;

use super::{callback_keys, load_secrets, required, ConfigError, SecretName, SecretSource, Vars};
use crate::api::{CallbackKeys, Confirmation, SourceAllowList};

#[derive(Debug)]
pub struct CallbackConfig {
    pub table_name: String,
    /// From `callback_token`: the keys callback URLs are verified with.
    pub callback_keys: CallbackKeys,
    /// `CALLBACK_ALLOWED_IPS`; empty allows every source. `CALLBACK_SOURCE_MODE`: `report`
    /// (the default) accepts and counts a source outside it, `enforce` refuses it.
    pub allowed_sources: SourceAllowList,
    /// `CALLBACK_CONFIRM`: `off` (the default), `unlisted` or `always`.
    pub confirmation: Confirmation,
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
        let allowed_sources = match vars.var("CALLBACK_SOURCE_MODE").as_deref().map(str::trim) {
            None | Some("report") => allowed_sources.reporting(),
            Some("enforce") => allowed_sources,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "CALLBACK_SOURCE_MODE",
                    reason: format!("{other:?} is not \"report\" or \"enforce\""),
                })
            }
        };
        let confirmation = match vars.var("CALLBACK_CONFIRM") {
            None => Confirmation::Off,
            Some(text) => Confirmation::parse(&text).map_err(|reason| ConfigError::Invalid {
                name: "CALLBACK_CONFIRM",
                reason,
            })?,
        };
        if confirmation == Confirmation::Unlisted && allowed_sources.is_empty() {
            return Err(ConfigError::Invalid {
                name: "CALLBACK_CONFIRM",
                reason:
                    "\"unlisted\" needs CALLBACK_ALLOWED_IPS: without a list no source is unlisted"
                        .to_owned(),
            });
        }
        let mut secrets = load_secrets(vars, &[SecretName::CallbackToken], source).await?;
        Ok(Self {
            table_name,
            callback_keys: callback_keys(secrets.take(SecretName::CallbackToken)?)?,
            allowed_sources,
            confirmation,
        })
    }
}
