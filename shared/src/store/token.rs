//! The Daraja access token, shared by every container through the payments table.
//!
//! Each token request may invalidate the previous token (Daraja's FAQ, unconfirmed), so
//! containers that each fetched their own could knock each other's tokens out. They share one
//! item instead, `pk = "TOKEN#daraja"`:
//!
//! | attribute | holds |
//! |---|---|
//! | `access_token` | the token (a secret: stored here and nowhere else, never logged) |
//! | `expires_at` | when Daraja stops accepting it, epoch seconds; also the table's TTL attribute |
//! | `lease_until` | epoch milliseconds until which one container is fetching a new token |
//!
//! The lease is taken with a conditional write, so exactly one container refreshes at a time;
//! the others wait briefly and read what it saved. A store that cannot be reached fails open:
//! the container fetches a token of its own rather than failing a payment.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::item::{n, s};
use crate::daraja::time::Clock;
use crate::daraja::token::{AccessToken, Lease, TokenStore};
use crate::daraja::Secret;

/// The key of the one shared-token item.
pub const TOKEN_PK: &str = "TOKEN#daraja";
const PK: &str = "pk";
const ACCESS_TOKEN: &str = "access_token";
const EXPIRES_AT: &str = "expires_at";
const LEASE_UNTIL: &str = "lease_until";

/// A [`TokenStore`] over the payments table.
pub struct DynamoTokenStore {
    client: Client,
    table: String,
    clock: Arc<dyn Clock>,
    lease: Duration,
    /// The `lease_until` this container wrote, so it releases only its own lease.
    held: Mutex<Option<i64>>,
}

impl std::fmt::Debug for DynamoTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoTokenStore")
            .field("table", &self.table)
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

/// What a conditional update did.
enum Written {
    Done,
    ConditionFailed,
}

impl DynamoTokenStore {
    /// Long enough for a token request (usually well under a second); short enough that a
    /// container that died while holding it delays the others only briefly.
    pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

    pub fn new(client: Client, table: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            client,
            table: table.into(),
            clock,
            lease: Self::DEFAULT_LEASE,
            held: Mutex::new(None),
        }
    }

    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        // A plain Option: still valid after a panic elsewhere.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_millis(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    async fn update(
        &self,
        expression: &str,
        condition: Option<&str>,
        names: &[(&str, &str)],
        values: Vec<(&str, AttributeValue)>,
    ) -> Result<Written, SdkError<UpdateItemError>> {
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(TOKEN_PK))
            .update_expression(expression)
            .set_condition_expression(condition.map(str::to_owned));
        for (placeholder, name) in names {
            request = request.expression_attribute_names(*placeholder, *name);
        }
        for (placeholder, value) in values {
            request = request.expression_attribute_values(placeholder, value);
        }
        match request.send().await {
            Ok(_) => Ok(Written::Done),
            Err(SdkError::ServiceError(e))
                if matches!(e.err(), UpdateItemError::ConditionalCheckFailedException(_)) =>
            {
                Ok(Written::ConditionFailed)
            }
            Err(e) => Err(e),
        }
    }
}

fn warn_unavailable<E: std::error::Error + 'static>(action: &str, error: &SdkError<E>) {
    // The SDK's error never carries request values, so the token cannot leak through it.
    tracing::warn!(action, error = %DisplayErrorContext(error), "shared token store unavailable");
}

#[async_trait]
impl TokenStore for DynamoTokenStore {
    async fn load(&self) -> Option<AccessToken> {
        let answer = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(TOKEN_PK))
            .consistent_read(true)
            .projection_expression("#t, #e")
            .expression_attribute_names("#t", ACCESS_TOKEN)
            .expression_attribute_names("#e", EXPIRES_AT)
            .send()
            .await;
        let item = match answer {
            Ok(output) => output.item?,
            Err(error) => {
                warn_unavailable("load", &error);
                return None;
            }
        };
        let value = match item.get(ACCESS_TOKEN) {
            Some(AttributeValue::S(value)) if !value.is_empty() => value.clone(),
            _ => return None,
        };
        let expires_at = match item.get(EXPIRES_AT) {
            Some(AttributeValue::N(secs)) => secs
                .parse::<i64>()
                .ok()
                .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0))?,
            _ => return None,
        };
        Some(AccessToken {
            value: Secret::new(value),
            expires_at,
        })
    }

    async fn save(&self, token: &AccessToken) {
        // Saving ends the lease: waiting containers read the token as soon as it is there.
        let written = self
            .update(
                "SET #t = :t, #e = :e REMOVE #l",
                None,
                &[
                    ("#t", ACCESS_TOKEN),
                    ("#e", EXPIRES_AT),
                    ("#l", LEASE_UNTIL),
                ],
                vec![
                    (":t", s(token.value.expose())),
                    // Rounded down: the token is never taken for fresher than it is.
                    (":e", n(token.expires_at.timestamp())),
                ],
            )
            .await;
        *self.held() = None;
        match written {
            Ok(_) => tracing::info!(
                expires_at = %token.expires_at,
                "shared token saved"
            ),
            Err(error) => warn_unavailable("save", &error),
        }
    }

    async fn invalidate(&self, token: &AccessToken) {
        let written = self
            .update(
                "REMOVE #t",
                Some("#t = :t"),
                &[("#t", ACCESS_TOKEN)],
                vec![(":t", s(token.value.expose()))],
            )
            .await;
        match written {
            Ok(Written::Done) => tracing::info!("refused shared token invalidated"),
            // Another container already replaced it: keep the newer one.
            Ok(Written::ConditionFailed) => {
                tracing::info!("refused token already replaced in the shared store")
            }
            Err(error) => warn_unavailable("invalidate", &error),
        }
    }

    async fn try_lease(&self) -> Lease {
        let now = self.now_millis();
        let until = now.saturating_add(i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX));
        let written = self
            .update(
                "SET #l = :until",
                Some("attribute_not_exists(#l) OR #l < :now"),
                &[("#l", LEASE_UNTIL)],
                vec![(":until", n(until)), (":now", n(now))],
            )
            .await;
        match written {
            Ok(Written::Done) => {
                *self.held() = Some(until);
                Lease::Granted
            }
            Ok(Written::ConditionFailed) => Lease::Busy,
            Err(error) => {
                // Failing open costs at most an extra token request; failing closed would stop
                // every payment while the table is unreachable.
                warn_unavailable("lease", &error);
                Lease::Granted
            }
        }
    }

    async fn release(&self) {
        let Some(until) = self.held().take() else {
            return;
        };
        let written = self
            .update(
                "REMOVE #l",
                Some("#l = :until"),
                &[("#l", LEASE_UNTIL)],
                vec![(":until", n(until))],
            )
            .await;
        if let Err(error) = written {
            // The lease runs out by itself.
            warn_unavailable("release", &error);
        }
    }
}
