//! Unreadable callbacks in memory.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use async_trait::async_trait;

use crate::raw::{raw_id, RawCallbackStore, UnreadableCallback, RAW_PK_PREFIX};
use crate::store::StoreError;

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
