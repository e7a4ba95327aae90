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
//! the others wait briefly and read what it saved. A lease that cannot be taken (throttling, an
//! unreachable table) is *not* granted: the container waits like the others, and only past its
//! wait limit fetches a token of its own. Granting it would send every container to Daraja at
//! once, and with each token request invalidating the last, into a `404.001.03` storm. Saving a
//! token ends only this container's own lease, never another's.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use daraja::time::Clock;
use daraja::token::{AccessToken, Lease, TokenStore};
use daraja::Secret;
use payments::StoreError;

use crate::expr::Expr;
use crate::item::{n, s, Reader, EXPIRES_AT};
use crate::table::Table;

/// The key of the one shared-token item.
pub const TOKEN_PK: &str = "TOKEN#daraja";
const ACCESS_TOKEN: &str = "access_token";
const LEASE_UNTIL: &str = "lease_until";

/// How long a lease lasts: long enough for a token request (usually well under a second),
/// short enough that a container that died while holding it delays the others only briefly.
pub const LEASE: Duration = Duration::from_secs(5);

/// A [`TokenStore`] over the payments table.
pub struct DynamoTokenStore {
    table: Table,
    clock: Arc<dyn Clock>,
    /// The `lease_until` this container wrote, so it releases only its own lease.
    held: Mutex<Option<i64>>,
}

impl std::fmt::Debug for DynamoTokenStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DynamoTokenStore")
            .field("table", &self.table.name())
            .finish_non_exhaustive()
    }
}

impl DynamoTokenStore {
    pub fn new(client: Client, table: impl Into<String>, clock: Arc<dyn Clock>) -> Self {
        Self {
            table: Table::new(client, table),
            clock,
            held: Mutex::new(None),
        }
    }

    fn held(&self) -> std::sync::MutexGuard<'_, Option<i64>> {
        // A plain Option: still valid after a panic elsewhere.
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_millis(&self) -> i64 {
        self.clock.now().timestamp_millis()
    }

    async fn write(&self, expr: Expr) -> Result<bool, StoreError> {
        self.table.write(TOKEN_PK.to_owned(), expr).await
    }

    async fn read(&self) -> Result<Option<AccessToken>, StoreError> {
        let Some(found) = self
            .table
            .get(TOKEN_PK.to_owned(), &[ACCESS_TOKEN, EXPIRES_AT])
            .await?
        else {
            return Ok(None);
        };
        let found = Reader::new(&found);
        let value = found.string(ACCESS_TOKEN)?.filter(|v| !v.is_empty());
        let expires_at = found
            .number::<i64>(EXPIRES_AT)?
            .and_then(|secs| DateTime::<Utc>::from_timestamp(secs, 0));
        Ok(value
            .zip(expires_at)
            .map(|(value, expires_at)| AccessToken {
                value: Secret::new(value),
                expires_at,
            }))
    }
}

fn warn_unavailable(action: &str, error: &StoreError) {
    // The SDK's error never carries request values, so the token cannot leak through it.
    tracing::warn!(action, error = %error, "shared token store unavailable");
}

#[async_trait]
impl TokenStore for DynamoTokenStore {
    async fn load(&self) -> Option<AccessToken> {
        // A token that cannot be read is no token: the container fetches its own.
        self.read()
            .await
            .inspect_err(|error| warn_unavailable("load", error))
            .ok()
            .flatten()
    }

    async fn save(&self, token: &AccessToken) {
        // Saving ends our lease, if we hold one: waiting containers read the token as soon as it
        // is there. A lease another container took since (ours ran out, or we fetched without
        // one) stays: it is that container's to end.
        let held = self.held().take();
        let token_write = || {
            let mut expr = Expr::new();
            expr.set(ACCESS_TOKEN, s(token.value.expose()))
                // Rounded down: the token is never taken for fresher than it is.
                .set(EXPIRES_AT, n(token.expires_at.timestamp()));
            expr
        };
        let written = match held {
            Some(until) => {
                let mut expr = token_write();
                expr.remove(LEASE_UNTIL);
                let lease = expr.name(LEASE_UNTIL);
                let mine = expr.value("mine", n(until));
                expr.condition(format!("attribute_not_exists({lease}) OR {lease} = {mine}"));
                match self.write(expr).await {
                    Ok(false) => self.write(token_write()).await,
                    other => other,
                }
            }
            None => self.write(token_write()).await,
        };
        match written {
            Ok(_) => tracing::info!(expires_at = %token.expires_at, "shared token saved"),
            Err(error) => warn_unavailable("save", &error),
        }
    }

    async fn invalidate(&self, token: &AccessToken) {
        let mut expr = Expr::new();
        expr.remove(ACCESS_TOKEN);
        let same = expr.equals(ACCESS_TOKEN, "refused", s(token.value.expose()));
        expr.condition(same);
        match self.write(expr).await {
            Ok(true) => tracing::info!("refused shared token invalidated"),
            // Another container already replaced it: keep the newer one.
            Ok(false) => tracing::info!("refused token already replaced in the shared store"),
            Err(error) => warn_unavailable("invalidate", &error),
        }
    }

    async fn try_lease(&self) -> Lease {
        let now = self.now_millis();
        let until = now.saturating_add(i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX));
        let mut expr = Expr::new();
        expr.set(LEASE_UNTIL, n(until));
        let lease = expr.name(LEASE_UNTIL);
        let now_value = expr.value("now", n(now));
        expr.condition(format!(
            "attribute_not_exists({lease}) OR {lease} < {now_value}"
        ));
        match self.write(expr).await {
            Ok(true) => {
                *self.held() = Some(until);
                Lease::Granted
            }
            Ok(false) => Lease::Busy,
            Err(error) => {
                // Closed: waiting is bounded by the client's wait limit and the call's deadline,
                // while every container fetching at once would knock each other's tokens out.
                warn_unavailable("lease", &error);
                Lease::Busy
            }
        }
    }

    async fn release(&self) {
        let Some(until) = self.held().take() else {
            return;
        };
        let mut expr = Expr::new();
        expr.remove(LEASE_UNTIL);
        let mine = expr.equals(LEASE_UNTIL, "until", n(until));
        expr.condition(mine);
        if let Err(error) = self.write(expr).await {
            // The lease runs out by itself.
            warn_unavailable("release", &error);
        }
    }
}
