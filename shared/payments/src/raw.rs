//! Callbacks kept as received when they cannot be applied: bodies behind a valid token that
//! are not Daraja STK callbacks, and where an orphan result came from.
//!
//! Safaricom does not send a callback twice, so a body we cannot read is the only trace of
//! whatever it was: it is kept, bounded, in the payments table under its own key, and listed
//! through the sparse `orphan-index` in its own partition (`orphan_pk = "UNREADABLE"`), next
//! to the orphan results (`orphan_pk = "ORPHAN"`) that [`PaymentStore::orphans`] reads.
//!
//! | attribute | holds |
//! |---|---|
//! | `pk` | `RAW#<id>` |
//! | `kind` | `unreadable_callback` |
//! | `reason`, `detail` | the stable error code (`invalid_json`, `invalid_callback`) and its message |
//! | `received_at` | RFC 3339, milliseconds |
//! | `source_ip` | API Gateway's `sourceIp`, when known |
//! | `raw_body` | the first [`RAW_BODY_LIMIT`] bytes: a string, or binary when not UTF-8 |
//! | `body_bytes`, `truncated` | the full length, and whether `raw_body` was cut |
//!
//! Orphan payment items (`PAY#…`) gain `source_ip` here, in a second write made only on the
//! orphan path, so the common path stays one conditional write per callback.
//!
//! [`PaymentStore::orphans`]: super::PaymentStore::orphans

use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::payment::timestamp;
use crate::store::StoreError;

/// How much of an unreadable body is kept: also the largest body the callback route accepts
/// (`app::api::MAX_CALLBACK_BYTES`), so a kept body is whole unless it was refused.
pub const RAW_BODY_LIMIT: usize = 64 * 1024;
/// The key of a kept callback is this prefix and [`raw_id`].
pub const RAW_PK_PREFIX: &str = "RAW#";

/// A callback body that is not a Daraja STK callback, as it is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableCallback {
    pub received_at: DateTime<Utc>,
    pub source_ip: Option<String>,
    /// Stable code: `invalid_json`, `invalid_callback`.
    pub reason: String,
    pub detail: String,
    /// At most [`RAW_BODY_LIMIT`] bytes.
    pub body: Vec<u8>,
    /// The length of the body as received.
    pub body_bytes: usize,
}

impl UnreadableCallback {
    /// Keeps the first [`RAW_BODY_LIMIT`] bytes of `body`.
    pub fn new(
        body: &[u8],
        reason: impl Into<String>,
        detail: impl Into<String>,
        source_ip: Option<&str>,
        received_at: DateTime<Utc>,
    ) -> Self {
        Self {
            received_at: timestamp::truncate(received_at),
            source_ip: source_ip.map(str::to_owned),
            reason: reason.into(),
            detail: detail.into(),
            body: body[..body.len().min(RAW_BODY_LIMIT)].to_vec(),
            body_bytes: body.len(),
        }
    }

    pub fn truncated(&self) -> bool {
        self.body.len() < self.body_bytes
    }
}

/// Where callbacks that cannot be applied are kept.
#[async_trait]
pub trait RawCallbackStore: Send + Sync {
    /// Keeps an unreadable callback; returns its key (`RAW#…`).
    async fn keep_unreadable(&self, callback: &UnreadableCallback) -> Result<String, StoreError>;

    /// Records where the result that created an orphan payment came from. Does nothing
    /// if there is no such payment.
    async fn note_source(
        &self,
        checkout_request_id: &str,
        source_ip: &str,
    ) -> Result<(), StoreError>;

    /// Unreadable callbacks, oldest first.
    async fn unreadable(&self, limit: u32) -> Result<Vec<UnreadableCallback>, StoreError>;

    /// The source recorded by [`note_source`](Self::note_source) for a payment.
    async fn source_of(&self, checkout_request_id: &str) -> Result<Option<String>, StoreError>;
}

/// A process-wide sequence, so two bodies kept in the same instant still get distinct keys.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// A fresh id for a kept callback: its time, then a hash unique to this write. `attempt`
/// changes the id after a (vanishingly unlikely) collision.
pub fn raw_id(callback: &UnreadableCallback, attempt: u64) -> String {
    let mut hash = Sha256::new();
    hash.update(
        callback
            .received_at
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_be_bytes(),
    );
    hash.update(
        Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_be_bytes(),
    );
    hash.update(std::process::id().to_be_bytes());
    hash.update(SEQUENCE.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    hash.update(attempt.to_be_bytes());
    hash.update(&callback.body);
    let digest = hash.finalize();
    format!(
        "{}#{}",
        timestamp::format(callback.received_at),
        hex::encode(&digest[..8])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_cut_at_the_limit_and_remember_their_length() {
        let body = vec![b'x'; RAW_BODY_LIMIT + 10];
        let kept = UnreadableCallback::new(&body, "invalid_json", "", None, Utc::now());
        assert_eq!(kept.body.len(), RAW_BODY_LIMIT);
        assert_eq!(kept.body_bytes, RAW_BODY_LIMIT + 10);
        assert!(kept.truncated());
        let small = UnreadableCallback::new(b"{}", "invalid_callback", "", None, Utc::now());
        assert!(!small.truncated());
    }

    #[test]
    fn keys_differ_for_the_same_body_in_the_same_instant() {
        let kept = UnreadableCallback::new(b"same", "invalid_json", "", None, Utc::now());
        assert_ne!(raw_id(&kept, 0), raw_id(&kept, 0));
    }
}
