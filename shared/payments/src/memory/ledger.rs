//! The push ledger in memory.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::MemoryStore;
use crate::intent::{
    begin_on_existing, new_record, Begin, Failure, IntentKey, IntentRecord, IntentStatus,
    NewIntent, PhoneLock, PushLedger, Recorded, StoredAnswer,
};
use crate::payment::{timestamp, NewPayment};
use crate::store::{PaymentStore, PendingWrite, StoreError};

/// The in-memory ledger, with the payments in a [`MemoryStore`]. One lock over both maps
/// gives the all-or-nothing of a DynamoDB transaction.
#[derive(Debug)]
pub struct MemoryLedger {
    payments: Arc<MemoryStore>,
    state: Mutex<MemoryState>,
}

#[derive(Debug, Default)]
struct MemoryState {
    intents: HashMap<String, IntentRecord>,
    /// The callback nonce of the call that wrote each intent.
    nonces: HashMap<String, Option<String>>,
    locks: HashMap<String, PhoneLock>,
}

impl MemoryLedger {
    pub fn new(payments: Arc<MemoryStore>) -> Self {
        Self {
            payments,
            state: Mutex::new(MemoryState::default()),
        }
    }

    fn state(&self) -> MutexGuard<'_, MemoryState> {
        // Every change below is a whole-value insert or remove: a panic leaves no half-write.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl MemoryState {
    fn live_intent(&self, pk: &str, now: i64) -> Option<&IntentRecord> {
        self.intents.get(pk).filter(|i| i.expires_at > now)
    }

    fn live_lock(&self, phone: &str, now: i64) -> Option<&PhoneLock> {
        self.locks.get(phone).filter(|l| l.locked_until > now)
    }

    /// Whether `stored` (a nonce on an item) is this call's: the same key is another call's
    /// when its nonce differs.
    fn this_call(intent: &NewIntent, stored: Option<&String>) -> bool {
        intent.callback_nonce.is_none() || stored == intent.callback_nonce.as_ref()
    }

    fn release(&mut self, intent: &NewIntent) {
        let pk = intent.key.pk();
        let ours = self.locks.get(intent.phone()).is_some_and(|l| {
            l.intent_pk == pk && Self::this_call(intent, l.callback_nonce.as_ref())
        });
        if ours {
            self.locks.remove(intent.phone());
        }
    }

    fn settle(
        &mut self,
        intent: &NewIntent,
        status: IntentStatus,
        answer: &StoredAnswer,
        at: DateTime<Utc>,
    ) {
        if let Some(record) = self.intents.get_mut(&intent.key.pk()) {
            if record.status == IntentStatus::InProgress {
                record.status = status;
                record.answer = Some(answer.clone());
                record.updated_at = timestamp::truncate(at);
            }
        }
    }
}

#[async_trait]
impl PushLedger for MemoryLedger {
    async fn begin(&self, intent: &NewIntent) -> Result<Begin, StoreError> {
        let now = intent.at.timestamp();
        let mut state = self.state();
        if let Some(existing) = state.live_intent(&intent.key.pk(), now) {
            return begin_on_existing(existing, intent);
        }
        if let Some(lock) = state.live_lock(intent.phone(), now) {
            return Ok(Begin::PhoneBusy {
                checkout_request_id: lock.checkout_request_id.clone(),
            });
        }
        state.intents.insert(intent.key.pk(), new_record(intent));
        state
            .nonces
            .insert(intent.key.pk(), intent.callback_nonce.clone());
        state.locks.insert(
            intent.phone().to_owned(),
            PhoneLock {
                intent_pk: intent.key.pk(),
                locked_until: intent.lock_until().timestamp(),
                checkout_request_id: None,
                callback_nonce: intent.callback_nonce.clone(),
            },
        );
        Ok(Begin::Started)
    }

    async fn accepted(
        &self,
        intent: &NewIntent,
        payment: &NewPayment,
        answer: &StoredAnswer,
    ) -> Result<Recorded, StoreError> {
        let written = self.payments.record_pending(payment).await?;
        let mut state = self.state();
        state.settle(intent, IntentStatus::Accepted, answer, payment.created_at);
        let pk = intent.key.pk();
        if let Some(record) = state.intents.get_mut(&pk) {
            record.checkout_request_id = Some(payment.checkout_request_id.clone());
            record.merchant_request_id = Some(payment.merchant_request_id.clone());
        }
        if let Some(lock) = state.locks.get_mut(intent.phone()) {
            if lock.intent_pk == pk {
                lock.checkout_request_id = Some(payment.checkout_request_id.clone());
            }
        }
        Ok(Recorded::from(&written))
    }

    async fn failed(
        &self,
        intent: &NewIntent,
        failure: &Failure,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        let mut state = self.state();
        let pk = intent.key.pk();
        match failure {
            Failure::Refused(answer) => {
                state.settle(intent, IntentStatus::Refused, answer, at);
                state.release(intent);
            }
            Failure::Retryable => {
                let open =
                    state.intents.get(&pk).map(|i| i.status) == Some(IntentStatus::InProgress);
                let ours =
                    MemoryState::this_call(intent, state.nonces.get(&pk).and_then(Option::as_ref));
                if open && ours {
                    state.intents.remove(&pk);
                    state.nonces.remove(&pk);
                }
                state.release(intent);
            }
            Failure::OutcomeUnknown(answer) => {
                state.settle(intent, IntentStatus::OutcomeUnknown, answer, at);
                if let Some(lock) = state.locks.get_mut(intent.phone()) {
                    if lock.intent_pk == pk {
                        lock.locked_until = (at + intent.phone_lock).timestamp();
                    }
                }
            }
        }
        Ok(())
    }

    async fn intent(
        &self,
        key: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        if let IntentKey::Generated(_) = key {
            return Ok(None);
        }
        Ok(self
            .state()
            .live_intent(&key.pk(), now.timestamp())
            .cloned())
    }

    async fn phone_lock(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PhoneLock>, StoreError> {
        Ok(self.state().live_lock(phone, now.timestamp()).cloned())
    }

    async fn in_doubt_for_phone(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError> {
        let state = self.state();
        Ok(state
            .locks
            .get(phone)
            .and_then(|lock| state.intents.get(&lock.intent_pk))
            .filter(|intent| intent.is_in_doubt(now))
            .cloned())
    }

    async fn release_phone(
        &self,
        phone: &str,
        checkout_request_id: &str,
        callback_nonce: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut state = self.state();
        let names_it = state.locks.get(phone).is_some_and(|lock| {
            lock.checkout_request_id.as_deref() == Some(checkout_request_id)
                || (callback_nonce.is_some() && lock.callback_nonce.as_deref() == callback_nonce)
        });
        if names_it {
            state.locks.remove(phone);
        }
        Ok(names_it)
    }

    async fn link(
        &self,
        intent: &IntentRecord,
        payment: &NewPayment,
        answer: &StoredAnswer,
        at: DateTime<Utc>,
    ) -> Result<Option<PendingWrite>, StoreError> {
        {
            let mut state = self.state();
            match state.intents.get_mut(&intent.pk) {
                Some(stored) if stored == intent => {
                    stored.status = IntentStatus::Accepted;
                    stored.answer = Some(answer.clone());
                    stored.checkout_request_id = Some(payment.checkout_request_id.clone());
                    stored.merchant_request_id = Some(payment.merchant_request_id.clone());
                    stored.updated_at = timestamp::truncate(at);
                }
                _ => return Ok(None),
            }
        }
        let written = self.payments.record_pending(payment).await?;
        let mut state = self.state();
        if let Some(lock) = state.locks.get_mut(&intent.phone) {
            if lock.intent_pk == intent.pk {
                lock.checkout_request_id = Some(payment.checkout_request_id.clone());
            }
        }
        Ok(Some(written))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{MemoryLedger, MemoryStore};
    use crate::intent::PushLedger;
    use crate::store::PaymentStore;

    async fn ledger() -> (Arc<dyn PushLedger>, Arc<dyn PaymentStore>) {
        let payments = Arc::new(MemoryStore::new());
        (Arc::new(MemoryLedger::new(payments.clone())), payments)
    }

    crate::push_ledger_conformance!(ledger);
}
