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

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use super::item::{self, n, s, time};
use super::StoreError;
use crate::payment::timestamp;

/// How much of an unreadable body is kept (the callback route refuses larger bodies anyway).
pub const RAW_BODY_LIMIT: usize = 64 * 1024;
pub const RAW_PK_PREFIX: &str = "RAW#";
/// The `orphan-index` partition of unreadable callbacks.
pub const UNREADABLE_PARTITION: &str = "UNREADABLE";
pub const KIND_UNREADABLE: &str = "unreadable_callback";
pub const SOURCE_IP: &str = "source_ip";

const KIND: &str = "kind";
const REASON: &str = "reason";
const DETAIL: &str = "detail";
const RECEIVED_AT: &str = "received_at";
const RAW_BODY: &str = "raw_body";
const BODY_BYTES: &str = "body_bytes";
const TRUNCATED: &str = "truncated";
/// Rounds of a fresh key after a (vanishingly unlikely) key collision.
const MAX_ATTEMPTS: u64 = 4;

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

fn raw_id(callback: &UnreadableCallback, attempt: u64) -> String {
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

/// The DynamoDB [`RawCallbackStore`], in the payments table.
#[derive(Debug, Clone)]
pub struct DynamoRawStore {
    client: Client,
    table: String,
}

impl DynamoRawStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }
}

#[async_trait]
impl RawCallbackStore for DynamoRawStore {
    async fn keep_unreadable(&self, callback: &UnreadableCallback) -> Result<String, StoreError> {
        let body = match std::str::from_utf8(&callback.body) {
            Ok(text) => s(text),
            Err(_) => AttributeValue::B(Blob::new(callback.body.clone())),
        };
        for attempt in 0..MAX_ATTEMPTS {
            let id = raw_id(callback, attempt);
            let mut values = HashMap::from([
                (":kind".to_owned(), s(KIND_UNREADABLE)),
                (":reason".to_owned(), s(&callback.reason)),
                (":detail".to_owned(), s(&callback.detail)),
                (":received_at".to_owned(), time(callback.received_at)),
                (":raw_body".to_owned(), body.clone()),
                (":body_bytes".to_owned(), n(callback.body_bytes)),
                (
                    ":truncated".to_owned(),
                    AttributeValue::Bool(callback.truncated()),
                ),
                (":orphan_pk".to_owned(), s(UNREADABLE_PARTITION)),
                (":orphan_sk".to_owned(), s(&id)),
            ]);
            let mut set = vec![
                "#kind = :kind",
                "#reason = :reason",
                "#detail = :detail",
                "#received_at = :received_at",
                "#raw_body = :raw_body",
                "#body_bytes = :body_bytes",
                "#truncated = :truncated",
                "#orphan_pk = :orphan_pk",
                "#orphan_sk = :orphan_sk",
            ];
            let mut names = HashMap::from([
                ("#pk".to_owned(), item::PK.to_owned()),
                ("#kind".to_owned(), KIND.to_owned()),
                ("#reason".to_owned(), REASON.to_owned()),
                ("#detail".to_owned(), DETAIL.to_owned()),
                ("#received_at".to_owned(), RECEIVED_AT.to_owned()),
                ("#raw_body".to_owned(), RAW_BODY.to_owned()),
                ("#body_bytes".to_owned(), BODY_BYTES.to_owned()),
                ("#truncated".to_owned(), TRUNCATED.to_owned()),
                ("#orphan_pk".to_owned(), item::ORPHAN_PK.to_owned()),
                ("#orphan_sk".to_owned(), item::ORPHAN_SK.to_owned()),
            ]);
            if let Some(ip) = &callback.source_ip {
                values.insert(":source_ip".to_owned(), s(ip));
                names.insert("#source_ip".to_owned(), SOURCE_IP.to_owned());
                set.push("#source_ip = :source_ip");
            }
            let pk = format!("{RAW_PK_PREFIX}{id}");
            let answer = self
                .client
                .update_item()
                .table_name(&self.table)
                .key(item::PK, s(&pk))
                .update_expression(format!("SET {}", set.join(", ")))
                .condition_expression("attribute_not_exists(#pk)")
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .send()
                .await;
            match answer {
                Ok(_) => return Ok(pk),
                Err(e) if is_condition_failure(&e) => continue,
                Err(e) => return Err(unavailable(e)),
            }
        }
        Err(StoreError::Unavailable(
            "no free key for an unreadable callback".into(),
        ))
    }

    async fn note_source(
        &self,
        checkout_request_id: &str,
        source_ip: &str,
    ) -> Result<(), StoreError> {
        let answer = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(item::PK, s(item::pk(checkout_request_id)))
            .update_expression("SET #source_ip = :source_ip")
            .condition_expression("attribute_exists(#pk)")
            .expression_attribute_names("#pk", item::PK)
            .expression_attribute_names("#source_ip", SOURCE_IP)
            .expression_attribute_values(":source_ip", s(source_ip))
            .send()
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(e) if is_condition_failure(&e) => Ok(()),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn unreadable(&self, limit: u32) -> Result<Vec<UnreadableCallback>, StoreError> {
        let mut found = Vec::new();
        let mut start = None;
        while found.len() < limit as usize {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(item::ORPHAN_INDEX)
                .key_condition_expression("#p = :p")
                .expression_attribute_names("#p", item::ORPHAN_PK)
                .expression_attribute_values(":p", s(UNREADABLE_PARTITION))
                .limit(i32::try_from(limit as usize - found.len()).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            for entry in page.items.unwrap_or_default() {
                found.push(unreadable_from_item(&entry)?);
            }
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn source_of(&self, checkout_request_id: &str) -> Result<Option<String>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(item::PK, s(item::pk(checkout_request_id)))
            .projection_expression("#source_ip")
            .expression_attribute_names("#source_ip", SOURCE_IP)
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        Ok(output.item.and_then(|found| match found.get(SOURCE_IP) {
            Some(AttributeValue::S(ip)) => Some(ip.clone()),
            _ => None,
        }))
    }
}

fn unreadable_from_item(found: &item::Item) -> Result<UnreadableCallback, StoreError> {
    let pk = match found.get(item::PK) {
        Some(AttributeValue::S(pk)) => pk.clone(),
        _ => String::from("<no pk>"),
    };
    let corrupt = |detail: &str| StoreError::Corrupt {
        pk: pk.clone(),
        detail: detail.to_owned(),
    };
    let string = |name: &str| match found.get(name) {
        Some(AttributeValue::S(text)) => Some(text.clone()),
        _ => None,
    };
    let received_at = string(RECEIVED_AT)
        .and_then(|text| timestamp::parse(&text).ok())
        .ok_or_else(|| corrupt("received_at is missing or not a time"))?;
    let body = match found.get(RAW_BODY) {
        Some(AttributeValue::S(text)) => text.clone().into_bytes(),
        Some(AttributeValue::B(blob)) => blob.as_ref().to_vec(),
        None => Vec::new(),
        Some(_) => return Err(corrupt("raw_body is neither a string nor binary")),
    };
    let body_bytes = match found.get(BODY_BYTES) {
        Some(AttributeValue::N(text)) => text
            .parse()
            .map_err(|_| corrupt("body_bytes is not a length"))?,
        _ => body.len(),
    };
    Ok(UnreadableCallback {
        received_at,
        source_ip: string(SOURCE_IP),
        reason: string(REASON).ok_or_else(|| corrupt("reason is missing"))?,
        detail: string(DETAIL).unwrap_or_default(),
        body,
        body_bytes,
    })
}

fn is_condition_failure<R>(error: &SdkError<UpdateItemError, R>) -> bool {
    matches!(
        error,
        SdkError::ServiceError(failure)
            if matches!(failure.err(), UpdateItemError::ConditionalCheckFailedException(_))
    )
}

fn unavailable<E, R>(error: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    StoreError::Unavailable(DisplayErrorContext(error).to_string().into())
}

/// An in-memory [`RawCallbackStore`], for unit tests.
#[derive(Debug, Default)]
pub struct MemoryRawStore {
    unreadable: Mutex<Vec<UnreadableCallback>>,
    sources: Mutex<HashMap<String, String>>,
}

impl MemoryRawStore {
    pub fn new() -> Self {
        Self::default()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every write is one push or insert, so a poisoned lock still guards whole values.
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[async_trait]
impl RawCallbackStore for MemoryRawStore {
    async fn keep_unreadable(&self, callback: &UnreadableCallback) -> Result<String, StoreError> {
        let id = raw_id(callback, 0);
        lock(&self.unreadable).push(callback.clone());
        Ok(format!("{RAW_PK_PREFIX}{id}"))
    }

    /// Unlike DynamoDB, the memory store cannot see whether the payment exists: it records
    /// the source regardless.
    async fn note_source(
        &self,
        checkout_request_id: &str,
        source_ip: &str,
    ) -> Result<(), StoreError> {
        lock(&self.sources).insert(checkout_request_id.to_owned(), source_ip.to_owned());
        Ok(())
    }

    async fn unreadable(&self, limit: u32) -> Result<Vec<UnreadableCallback>, StoreError> {
        let mut found = lock(&self.unreadable).clone();
        found.sort_by_key(|c| c.received_at);
        found.truncate(limit as usize);
        Ok(found)
    }

    async fn source_of(&self, checkout_request_id: &str) -> Result<Option<String>, StoreError> {
        Ok(lock(&self.sources).get(checkout_request_id).cloned())
    }
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
