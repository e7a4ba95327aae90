//! Settings of the reconciliation function.

use std::collections::BTreeSet;

use daraja::DarajaConfig;

use super::daraja_client::load_daraja;
use super::{required, seconds, ConfigError, SecretSource, Vars};
use crate::reconcile::ReconcileSettings;

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
        let max_queries_per_minute = at_least_one(
            vars,
            "RECONCILE_MAX_QUERIES_PER_MINUTE",
            defaults.max_queries_per_minute,
        )?;
        let retry_after = seconds(vars, "RECONCILE_RETRY_SECONDS", defaults.retry_after)?;
        let expired_retry_after = seconds(
            vars,
            "RECONCILE_EXPIRED_RETRY_SECONDS",
            defaults.expired_retry_after,
        )?;
        let min_attempts = at_least_one(vars, "RECONCILE_MIN_ATTEMPTS", defaults.min_attempts)?;
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
                retry_after,
                min_attempts,
                expired_retry_after,
            },
        })
    }
}

/// A whole number of at least 1 from `name`, or `default` when unset.
fn at_least_one(vars: &dyn Vars, name: &'static str, default: u32) -> Result<u32, ConfigError> {
    match vars.var(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u32>()
            .ok()
            .filter(|n| *n > 0)
            .ok_or_else(|| ConfigError::Invalid {
                name,
                reason: format!("{v:?} is not a whole number of at least 1"),
            }),
    }
}
