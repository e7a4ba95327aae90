//! The client's access token: from its own memory, else the shared store, else one fetch
//! from Daraja across all containers.

use std::sync::MutexGuard;
use std::time::Instant;

use super::{
    describe_json_error, out_of_time, DarajaClient, LEASE_POLL_INTERVAL, LEASE_WAIT_LIMIT,
    MIN_CALL_TIME, TOKEN_REFRESH_MARGIN,
};
use crate::deadline::Deadline;
use crate::observe::Endpoint;
use crate::stk::DarajaError;
use crate::token::{AccessToken, Lease};
use crate::wire::{DarajaErrorBody, TokenResponse};

impl DarajaClient {
    /// A fresh token: from memory, else the shared store, else Daraja (one fetch at a time),
    /// by `by`.
    pub(super) async fn token(&self, by: Deadline) -> Result<AccessToken, DarajaError> {
        if let Some(token) = self.cached_fresh() {
            return Ok(token);
        }
        let Ok(_refreshing) = tokio::time::timeout(by.remaining(), self.refresh.lock()).await
        else {
            return Err(out_of_time("token request"));
        };
        // Whoever held the lock before us may have refreshed already.
        if let Some(token) = self.cached_fresh() {
            return Ok(token);
        }
        let token = self.shared_or_fetched(by).await?;
        *self.cache() = Some(token.clone());
        Ok(token)
    }

    /// The shared token if it is fresh; otherwise one fetch across all containers: the lease
    /// holder fetches and saves, the others wait and read what it saved.
    async fn shared_or_fetched(&self, by: Deadline) -> Result<AccessToken, DarajaError> {
        // Waiting may not use the time our own fetch would need (less one poll: the read).
        let give_up_waiting = (Instant::now() + LEASE_WAIT_LIMIT)
            .min(by.earlier_by(MIN_CALL_TIME + LEASE_POLL_INTERVAL).instant());
        loop {
            if let Some(token) = self.shared_fresh().await {
                return Ok(token);
            }
            let lease = self.tokens.try_lease().await;
            if lease == Lease::Busy && Instant::now() < give_up_waiting {
                let until_give_up = give_up_waiting.saturating_duration_since(Instant::now());
                tokio::time::sleep(jittered(LEASE_POLL_INTERVAL).min(until_give_up)).await;
                continue;
            }
            if lease == Lease::Granted {
                // The previous holder may have saved its token between our read and our lease.
                if let Some(token) = self.shared_fresh().await {
                    self.tokens.release().await;
                    return Ok(token);
                }
            } else {
                // The holder is taking too long (or is gone): fetch our own rather than stall.
                tracing::warn!("shared token lease still held; fetching a token without it");
            }
            return match self.fetch_token(by).await {
                Ok(token) => {
                    self.tokens.save(&token).await;
                    Ok(token)
                }
                Err(error) => {
                    self.tokens.release().await;
                    Err(error)
                }
            };
        }
    }

    async fn shared_fresh(&self) -> Option<AccessToken> {
        self.tokens
            .load()
            .await
            .filter(|t| t.is_fresh(self.clock.now(), TOKEN_REFRESH_MARGIN))
    }

    fn cached_fresh(&self) -> Option<AccessToken> {
        let now = self.clock.now();
        self.cache()
            .as_ref()
            .filter(|t| t.is_fresh(now, TOKEN_REFRESH_MARGIN))
            .cloned()
    }

    /// Drops `token` after Daraja refused it, unless a newer one has replaced it already.
    pub(super) async fn forget(&self, token: &AccessToken) {
        {
            let mut cached = self.cache();
            if cached.as_ref().is_some_and(|t| t.value == token.value) {
                *cached = None;
            }
        }
        self.tokens.invalidate(token).await;
    }

    fn cache(&self) -> MutexGuard<'_, Option<AccessToken>> {
        // The guarded value is a plain Option: still valid after a panic elsewhere.
        self.cached.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn fetch_token(&self, by: Deadline) -> Result<AccessToken, DarajaError> {
        let Some(timeout) = by.clip(self.config.request_timeout, MIN_CALL_TIME) else {
            tracing::warn!(
                endpoint = "oauth",
                left_ms = by.remaining().as_millis() as u64,
                "daraja token not fetched: too little time left before the deadline"
            );
            return Err(out_of_time("token request"));
        };
        let started = Instant::now();
        let sent = self
            .http
            .get(&self.token_url)
            .timeout(timeout)
            .basic_auth(
                self.config.consumer_key.expose(),
                Some(self.config.consumer_secret.expose()),
            )
            .send()
            .await;
        let result = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(body) => read_token(status, &body, self.clock.now()),
                    Err(_) => Err(token_transport_error("token answer cut off")),
                }
            }
            Err(e) if e.is_timeout() => Err(token_transport_error("token request timed out")),
            Err(_) => Err(token_transport_error("cannot reach the token endpoint")),
        };
        let latency = started.elapsed();
        self.observer.call_finished(Endpoint::Oauth, latency);
        let latency_ms = latency.as_millis() as u64;
        match &result {
            Ok(_) => tracing::info!(endpoint = "oauth", latency_ms, "daraja token fetched"),
            Err(error) => tracing::warn!(
                endpoint = "oauth",
                latency_ms,
                error_code = error.error_code(),
                error = %error,
                "daraja token refused"
            ),
        }
        result
    }
}

/// `interval`, spread by up to half of it either way, so containers waiting for one lease do
/// not read the store in step.
fn jittered(interval: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    let spread = hasher.finish() % 1_000;
    interval / 2 + interval * u32::try_from(spread).unwrap_or(0) / 1_000
}

/// A token fetch that did not complete is never "outcome unknown": it charges nobody.
fn token_transport_error(message: &str) -> DarajaError {
    DarajaError::Unavailable {
        http_status: None,
        error_code: None,
        message: message.to_owned(),
    }
}

fn read_token(
    status: u16,
    body: &[u8],
    now: chrono::DateTime<chrono::Utc>,
) -> Result<AccessToken, DarajaError> {
    match status {
        200..=299 => {
            let parsed: TokenResponse =
                serde_json::from_slice(body).map_err(|e| DarajaError::BadResponse {
                    http_status: status,
                    detail: format!("token answer {}", describe_json_error(&e)),
                })?;
            if parsed.access_token.is_empty() {
                return Err(DarajaError::BadResponse {
                    http_status: status,
                    detail: "token answer with an empty access_token".to_owned(),
                });
            }
            let lifetime = i64::try_from(parsed.expires_in).unwrap_or(i64::MAX);
            let expires_at = now
                .checked_add_signed(chrono::Duration::seconds(lifetime.min(86_400)))
                .unwrap_or(now);
            Ok(AccessToken {
                value: parsed.access_token,
                expires_at,
            })
        }
        429 => Err(DarajaError::RateLimited),
        500..=599 => {
            // No status: the push or query itself was never sent, so this is never "outcome
            // unknown" (a 5xx to the request itself can be).
            let error: DarajaErrorBody = serde_json::from_slice(body).unwrap_or_default();
            Err(DarajaError::Unavailable {
                http_status: None,
                message: match error.error_message {
                    Some(message) => format!("token endpoint answered HTTP {status}: {message}"),
                    None => format!("token endpoint answered HTTP {status}"),
                },
                error_code: error.error_code,
            })
        }
        _ => {
            let error: DarajaErrorBody = serde_json::from_slice(body).unwrap_or_default();
            Err(DarajaError::Auth {
                error_code: error.error_code,
                error_message: error
                    .error_message
                    .unwrap_or_else(|| format!("token endpoint answered HTTP {status}")),
            })
        }
    }
}
