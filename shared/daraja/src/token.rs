//! Daraja access tokens, and a store through which containers can share one.
//!
//! Each token request may invalidate the previous token (per Daraja's FAQ, unconfirmed), so many
//! Lambda containers each fetching their own could knock each other's tokens out. A
//! [`TokenStore`] lets them share one; [`NoSharedTokens`] keeps each container to itself.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::secret::Secret;

/// An OAuth access token and the moment Daraja stops accepting it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessToken {
    pub value: Secret,
    pub expires_at: DateTime<Utc>,
}

impl AccessToken {
    /// Usable at `now` with at least `margin` to spare, so a request in flight does not carry a
    /// token that expires on the way.
    pub fn is_fresh(&self, now: DateTime<Utc>, margin: chrono::Duration) -> bool {
        now + margin < self.expires_at
    }
}

/// Shared token storage consulted after the client's own memory and before a fetch.
#[async_trait]
pub trait TokenStore: Send + Sync {
    /// The last saved token, if any (the client checks its freshness).
    async fn load(&self) -> Option<AccessToken>;
    /// Called after each successful fetch.
    async fn save(&self, token: &AccessToken);
    /// Called when Daraja refused `token`. Forget it only if it is still the stored one, so a
    /// newer token saved by another container survives.
    async fn invalidate(&self, token: &AccessToken);

    /// Asks for the right to fetch a new token, so that one container fetches while the others
    /// wait and read what it saves. A [`save`](Self::save) or [`release`](Self::release) ends
    /// the lease. The default grants it at once: with nothing shared there is nobody to wait for.
    async fn try_lease(&self) -> Lease {
        Lease::Granted
    }

    /// Gives the lease back after a fetch failed, so another container may try without waiting
    /// for the lease to run out.
    async fn release(&self) {}
}

/// The answer to [`TokenStore::try_lease`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lease {
    /// Fetch a token now, then save it (or release the lease on failure).
    Granted,
    /// Another container is fetching one: wait briefly and load again.
    Busy,
}

/// The default: nothing shared, every container keeps its own token in memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoSharedTokens;

#[async_trait]
impl TokenStore for NoSharedTokens {
    async fn load(&self) -> Option<AccessToken> {
        None
    }

    async fn save(&self, _token: &AccessToken) {}

    async fn invalidate(&self, _token: &AccessToken) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, TimeZone};

    #[test]
    fn token_is_stale_within_the_margin() {
        let now = Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap();
        let token = AccessToken {
            value: Secret::from("tok-s3cr3t-value"),
            expires_at: now + Duration::seconds(120),
        };
        assert!(token.is_fresh(now, Duration::seconds(60)));
        assert!(!token.is_fresh(now + Duration::seconds(60), Duration::seconds(60)));
    }

    #[test]
    fn debug_output_does_not_show_the_token() {
        let token = AccessToken {
            value: Secret::from("tok-s3cr3t-value"),
            expires_at: Utc.with_ymd_and_hms(2024, 1, 1, 12, 0, 0).unwrap(),
        };
        let shown = format!("{token:?}");
        assert!(!shown.contains("tok-s3cr3t-value"), "{shown}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        // Still a useful Debug: the expiry shows.
        assert!(shown.contains("2024-01-01"), "{shown}");
    }
}
