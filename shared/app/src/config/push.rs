//! Settings of the push function.

use std::collections::BTreeSet;
use std::time::Duration;

use daraja::DarajaConfig;

use super::daraja_client::load_daraja;
use super::{callback_keys, required, ConfigError, SecretName, SecretSource, Vars};
use crate::api::CallbackKeys;

#[derive(Debug)]
pub struct PushConfig {
    pub table_name: String,
    pub daraja: DarajaConfig,
    /// From `callback_token`: the key (or `id:key` list) callback URLs are signed with.
    pub callback_keys: CallbackKeys,
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
            None => crate::api::DEFAULT_PHONE_LOCK,
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
            callback_keys: callback_keys(extra.take(SecretName::CallbackToken)?)?,
            callback_base_url: vars
                .var("CALLBACK_BASE_URL")
                .map(|u| u.trim_end_matches('/').to_string()),
            phone_lock,
        })
    }
}
