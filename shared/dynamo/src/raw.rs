//! The DynamoDB [`RawCallbackStore`], in the payments table.
//!
//! Unreadable callbacks are listed through the sparse `orphan-index` in their own partition
//! (`orphan_pk = "UNREADABLE"`), next to the orphan results (`orphan_pk = "ORPHAN"`).
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
//! [`RAW_BODY_LIMIT`]: payments::raw::RAW_BODY_LIMIT

use async_trait::async_trait;
use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use payments::raw::{raw_id, RawCallbackStore, UnreadableCallback, RAW_PK_PREFIX};
use payments::StoreError;

use crate::expr::Expr;
use crate::item::{self, n, s, time, Item, Reader};
use crate::table::Table;

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

#[derive(Debug, Clone)]
pub struct DynamoRawStore {
    table: Table,
}

impl DynamoRawStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            table: Table::new(client, table),
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
            let mut expr = Expr::new();
            expr.set(KIND, s(KIND_UNREADABLE))
                .set(REASON, s(&callback.reason))
                .set(DETAIL, s(&callback.detail))
                .set(RECEIVED_AT, time(callback.received_at))
                .set(RAW_BODY, body.clone())
                .set(BODY_BYTES, n(callback.body_bytes))
                .set(TRUNCATED, AttributeValue::Bool(callback.truncated()))
                .set(item::ORPHAN_PK, s(UNREADABLE_PARTITION))
                .set(item::ORPHAN_SK, s(&id))
                .set_some(SOURCE_IP, callback.source_ip.as_deref());
            let absent = expr.absent(item::PK);
            expr.condition(absent);
            let pk = format!("{RAW_PK_PREFIX}{id}");
            if self.table.write(pk.clone(), expr).await? {
                return Ok(pk);
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
        let mut expr = Expr::new();
        expr.set(SOURCE_IP, s(source_ip));
        let exists = format!("attribute_exists({})", expr.name(item::PK));
        expr.condition(exists);
        // A failed condition: there is no such payment, so nothing to note.
        self.table
            .write(item::pk(checkout_request_id), expr)
            .await
            .map(|_| ())
    }

    async fn unreadable(&self, limit: u32) -> Result<Vec<UnreadableCallback>, StoreError> {
        self.table
            .query_partition(
                item::ORPHAN_INDEX,
                (item::ORPHAN_PK, UNREADABLE_PARTITION),
                None,
                limit,
            )
            .await?
            .iter()
            .map(unreadable_from_item)
            .collect()
    }

    async fn source_of(&self, checkout_request_id: &str) -> Result<Option<String>, StoreError> {
        match self
            .table
            .get(item::pk(checkout_request_id), &[SOURCE_IP])
            .await?
        {
            Some(found) => Reader::new(&found).string(SOURCE_IP),
            None => Ok(None),
        }
    }
}

fn unreadable_from_item(found: &Item) -> Result<UnreadableCallback, StoreError> {
    let reader = Reader::new(found);
    let body = reader.bytes(RAW_BODY)?.unwrap_or_default();
    let body_bytes = reader.number(BODY_BYTES)?.unwrap_or(body.len());
    Ok(UnreadableCallback {
        received_at: reader.required_time(RECEIVED_AT)?,
        source_ip: reader.string(SOURCE_IP)?,
        reason: reader.required(REASON)?,
        detail: reader.string(DETAIL)?.unwrap_or_default(),
        body,
        body_bytes,
    })
}
