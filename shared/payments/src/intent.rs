//! The push ledger: what `POST /payments` writes before and after it calls Daraja, so that
//! a retry never sends a second prompt and no accepted push is lost.
//!
//! Two kinds of item sit next to the payments in the one table:
//!
//! | `pk` | what |
//! |---|---|
//! | `PHONE#<msisdn>` | the phone lock: owner intent (`intent_pk`), `locked_until` (epoch seconds), the push's callback nonce; TTL `expires_at` = `locked_until`. For a push without a key the lock **is** the intent (the intent's fields, under the owner `INTENT#<generated id>`) |
//! | `IDEM#<sha256 of the Idempotency-Key>` | the intent of a keyed push: request fingerprint and details, `intent_status` (`IN_PROGRESS`, `ACCEPTED`, `REFUSED`, `OUTCOME_UNKNOWN`), the answer for replay, the checkout id; TTL `expires_at` = 24 h |
//!
//! A push costs two DynamoDB requests in the common path, and a transaction only where two
//! items must change together. [`PushLedger::begin`] takes the phone lock: one conditional
//! `PutItem` without a key; with a key, one transaction that also writes the key's intent (a
//! failed condition hands back the item it found, so no read is needed).
//! [`PushLedger::accepted`] writes only the pending payment, which names its intent and carries
//! the `202` answered; the intent and the lock are left as they are, and whoever reads an
//! intent still in progress (a replay, a lookup by key, the search for a push in doubt) finds
//! that payment through the intent's key. TTL deletion lags by hours, so every condition and
//! every read treats an item past its expiry as absent.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use daraja::Charge;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::payment::{timestamp, NewPayment, PaymentStatus};
use crate::store::{PendingWrite, StoreError};

/// How long an Idempotency-Key is remembered (Stripe's rule).
pub const IDEMPOTENCY_TTL: Duration = Duration::hours(24);

const IDEM_PREFIX: &str = "IDEM#";
const INTENT_PREFIX: &str = "INTENT#";
const PHONE_PREFIX: &str = "PHONE#";

/// Which intent item a push writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum IntentKey {
    /// The caller's `Idempotency-Key`, stored only as its SHA-256 (hex).
    Idempotency(String),
    /// No key was sent: a fresh random id, so the write-ahead rule still holds.
    Generated(String),
}

impl IntentKey {
    /// A key sent without a caller identity (a direct invoke, a test).
    pub fn idempotency(key: &str) -> Self {
        Self::idempotency_for(None, key)
    }

    /// `caller`'s key: the hash covers the principal too, so another caller's same key is
    /// another intent. (A key holds no line break, so no two pairs hash the same text.)
    pub fn idempotency_for(caller: Option<&str>, key: &str) -> Self {
        let scoped = match caller {
            Some(caller) => format!("{caller}\n{key}"),
            None => key.to_owned(),
        };
        Self::Idempotency(hex::encode(Sha256::digest(scoped.as_bytes())))
    }

    pub fn generated() -> Self {
        Self::Generated(random_id())
    }

    pub fn pk(&self) -> String {
        match self {
            Self::Idempotency(hash) => format!("{IDEM_PREFIX}{hash}"),
            Self::Generated(id) => format!("{INTENT_PREFIX}{id}"),
        }
    }

    /// Short enough for a log line, and no use to anyone who reads it.
    pub fn log_id(&self) -> String {
        log_id(&self.pk())
    }
}

/// An intent's key, short enough for a log line and no use to anyone who reads it.
pub fn log_id(pk: &str) -> String {
    pk.chars()
        .take(pk.find('#').map_or(0, |i| i + 13))
        .collect()
}

/// 128 random bits from the OS-seeded keys of std's `RandomState`, plus the time: unique
/// across Lambda containers without another dependency.
fn random_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut digest = Sha256::new();
    digest.update(RandomState::new().hash_one(count).to_be_bytes());
    digest.update(RandomState::new().hash_one(count).to_be_bytes());
    digest.update(
        Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .to_be_bytes(),
    );
    hex::encode(&digest.finalize()[..16])
}

/// The key of the lock on `phone`.
pub fn phone_pk(phone: &str) -> String {
    format!("{PHONE_PREFIX}{phone}")
}

/// What a push is about to do, written before Daraja is called.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIntent {
    pub key: IntentKey,
    /// [`fingerprint`] of the charge: the same key with another request is refused.
    pub fingerprint: String,
    pub charge: Charge,
    pub at: DateTime<Utc>,
    /// How long the phone stays locked after a push that may have reached it.
    pub phone_lock: Duration,
    /// The push function's deadline: by then the intent is settled, or its function was
    /// stopped and the push is in doubt.
    pub settle_by: DateTime<Utc>,
    /// The nonce of the push's callback URL, recorded with its payment.
    pub callback_nonce: Option<String>,
    /// The IAM principal that asked for the push: the payment is shown to it only.
    pub created_by: Option<String>,
}

/// SHA-256 of the normalised charge: two requests that ask for the same payment (the phone in
/// any spelling, the same amount, reference and description) are the same request.
pub fn fingerprint(charge: &Charge) -> String {
    let canonical = serde_json::json!([
        charge.phone.as_str(),
        charge.amount.get(),
        charge.reference.as_str(),
        charge.description.as_str(),
    ]);
    hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
}

impl NewIntent {
    pub fn new(key: IntentKey, charge: Charge, at: DateTime<Utc>, phone_lock: Duration) -> Self {
        Self {
            key,
            fingerprint: fingerprint(&charge),
            charge,
            at,
            phone_lock,
            settle_by: at + DEFAULT_SETTLE_TIME,
            callback_nonce: None,
            created_by: None,
        }
    }

    /// The intent of a push `caller` asked for.
    #[must_use]
    pub fn created_by(mut self, caller: Option<String>) -> Self {
        self.created_by = caller;
        self
    }

    /// The intent of a push whose callback URL binds `nonce`.
    #[must_use]
    pub fn with_callback_nonce(mut self, nonce: impl Into<String>) -> Self {
        self.callback_nonce = Some(nonce.into());
        self
    }

    /// The intent of a push whose function must be done by `settle_by`.
    #[must_use]
    pub fn settled_by(mut self, settle_by: DateTime<Utc>) -> Self {
        self.settle_by = settle_by;
        self
    }

    /// The normalised MSISDN the phone lock is on.
    pub fn phone(&self) -> &str {
        self.charge.phone.as_str()
    }

    /// Until when [`PushLedger::begin`] locks the phone: the push is sent right after, and
    /// nothing extends the lock once Daraja accepts it (Daraja itself refuses a second prompt on
    /// a phone whose prompt is open).
    pub fn lock_until(&self) -> DateTime<Utc> {
        self.at + self.phone_lock
    }

    /// When the intent is forgotten (epoch seconds, the TTL attribute).
    pub fn expires_at(&self) -> i64 {
        (self.at + IDEMPOTENCY_TTL).timestamp()
    }
}

/// An answer kept for replay: its status and body exactly as first sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredAnswer {
    pub status: u16,
    pub body: Value,
}

/// What [`PushLedger::begin`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// The intent is written and the phone locked: call Daraja.
    Started,
    /// The same key and request were answered before: send that answer again.
    Replay(StoredAnswer),
    /// The same key and request are being handled by another call right now.
    InProgress,
    /// The same key and request were never settled, and their function's deadline has passed
    /// (plus [`CLOCK_SKEW`]): the push is in doubt. The intent is written only once the push
    /// is ready to go, so Daraja was most likely called: the answer is "outcome unknown", and
    /// the push is never retried, as a second call could prompt the customer twice.
    Abandoned,
    /// The key was used with a different request.
    KeyReused,
    /// Another push holds the phone; its checkout id once Daraja accepted it.
    PhoneBusy { checkout_request_id: Option<String> },
}

/// How a push that Daraja did not accept ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Daraja refused it: nothing is on the phone. The answer is kept for replay and the
    /// phone is released.
    Refused(StoredAnswer),
    /// No prompt was sent and a retry may succeed (Daraja down, throttling, our credentials,
    /// another prompt on the phone): the intent is forgotten and the phone released, so a
    /// retry with the same key tries again.
    Retryable,
    /// Daraja may have sent the prompt: the answer is kept for replay and the phone stays
    /// locked for the whole window, so nothing can prompt it twice.
    OutcomeUnknown(StoredAnswer),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IntentStatus {
    InProgress,
    Accepted,
    Refused,
    OutcomeUnknown,
}

impl IntentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "IN_PROGRESS",
            Self::Accepted => "ACCEPTED",
            Self::Refused => "REFUSED",
            Self::OutcomeUnknown => "OUTCOME_UNKNOWN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        [
            Self::InProgress,
            Self::Accepted,
            Self::Refused,
            Self::OutcomeUnknown,
        ]
        .into_iter()
        .find(|s| s.as_str() == text)
    }
}

/// An intent as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentRecord {
    pub pk: String,
    pub status: IntentStatus,
    pub fingerprint: String,
    pub phone: String,
    pub amount: u32,
    pub reference: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Epoch seconds (the TTL attribute).
    pub expires_at: i64,
    /// The push function's deadline ([`NewIntent::settle_by`]).
    pub settle_by: DateTime<Utc>,
    pub answer: Option<StoredAnswer>,
    pub checkout_request_id: Option<String>,
    pub merchant_request_id: Option<String>,
    /// The IAM principal that asked for the push, when known.
    pub created_by: Option<String>,
}

impl IntentRecord {
    /// Whether this intent's push may have reached the phone while no checkout id was
    /// recorded for it: its outcome is unknown, or it is still in progress past its function's
    /// deadline (plus [`CLOCK_SKEW`]). Such an intent can be linked to the result Safaricom
    /// sends for it ([`PushLedger::link`]).
    pub fn is_in_doubt(&self, now: DateTime<Utc>) -> bool {
        let unsettled = match self.status {
            IntentStatus::OutcomeUnknown => true,
            IntentStatus::InProgress => self.past_deadline(now),
            IntentStatus::Accepted | IntentStatus::Refused => false,
        };
        unsettled && self.checkout_request_id.is_none() && self.expires_at > now.timestamp()
    }

    /// Whether its function's deadline (and the clock skew between containers) has passed at
    /// `now`: an intent still in progress then was stopped mid-push.
    pub fn past_deadline(&self, now: DateTime<Utc>) -> bool {
        now >= self.settle_by + CLOCK_SKEW
    }

    /// The charge the intent asked for, as it was validated before the push.
    pub fn charge(&self) -> Result<Charge, daraja::ValidationError> {
        Charge::parse(
            &self.phone,
            u64::from(self.amount),
            &self.reference,
            self.description.as_deref(),
        )
    }
}

/// The `202` answer of an accepted push, as kept for replay.
pub fn accepted_answer(
    checkout_request_id: &str,
    merchant_request_id: &str,
    customer_message: &str,
) -> StoredAnswer {
    StoredAnswer {
        status: 202,
        body: serde_json::json!({
            "checkout_request_id": checkout_request_id,
            "merchant_request_id": merchant_request_id,
            "status": PaymentStatus::Pending.as_str(),
            "customer_message": customer_message,
        }),
    }
}

/// A phone lock as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneLock {
    pub intent_pk: String,
    /// Epoch seconds; the lock is free from then on.
    pub locked_until: i64,
    /// The checkout id of the push that holds it, once Daraja accepted that push.
    pub checkout_request_id: Option<String>,
    /// The nonce of that push's callback URL: its callback's failure frees the phone.
    pub callback_nonce: Option<String>,
}

/// Where `POST /payments` keeps its intents and phone locks, and writes the pending payment.
#[async_trait]
pub trait PushLedger: Send + Sync {
    /// Takes the phone lock and writes the intent (on the lock without a key), both or neither.
    async fn begin(&self, intent: &NewIntent) -> Result<Begin, StoreError>;

    /// Daraja accepted the push: records the pending payment (with
    /// [`PaymentStore::record_pending`]'s rules, so it commutes with the callback), naming the
    /// intent and `answer`; from then on the intent reads as accepted with `answer` and the
    /// phone lock names the checkout id. Says what the pending write found.
    async fn accepted(
        &self,
        intent: &NewIntent,
        payment: &NewPayment,
        answer: &StoredAnswer,
    ) -> Result<Recorded, StoreError>;

    /// Daraja did not accept the push; `at` is when that became known.
    async fn failed(
        &self,
        intent: &NewIntent,
        failure: &Failure,
        at: DateTime<Utc>,
    ) -> Result<(), StoreError>;

    /// The intent under `key`, unless absent or expired at `now`. A generated key is never
    /// looked up (nobody holds it): `None`.
    async fn intent(
        &self,
        key: &IntentKey,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError>;

    /// The lock on `phone`, unless absent or expired at `now`.
    async fn phone_lock(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<PhoneLock>, StoreError>;

    /// The intent the lock on `phone` names (even a lock past its time, while its item is
    /// there), if that intent is in doubt at `now` ([`IntentRecord::is_in_doubt`]). One prompt
    /// per phone at a time makes it the only push a result for that phone can belong to.
    async fn in_doubt_for_phone(
        &self,
        phone: &str,
        now: DateTime<Utc>,
    ) -> Result<Option<IntentRecord>, StoreError>;

    /// Frees `phone` for a new push once the prompt of `checkout_request_id` is known closed
    /// without payment (a final failure): removes the lock if it still belongs to that push (it
    /// names the checkout id, or the push's `callback_nonce`), so a customer who cancelled can
    /// retry at once. Whether a lock was removed.
    async fn release_phone(
        &self,
        phone: &str,
        checkout_request_id: &str,
        callback_nonce: Option<&str>,
    ) -> Result<bool, StoreError>;

    /// Links the in-doubt `intent` (as read) to the payment a result revealed: the intent
    /// takes `answer` (the `202` with the checkout id) and the checkout id, on condition that
    /// it is unchanged since it was read; the pending payment is recorded with
    /// [`PaymentStore::record_pending`]'s rules (so the orphan gains the merchant's details and
    /// its amount check); the phone lock, while the intent owns it, names the checkout id.
    /// `None` when the intent had changed meanwhile (nothing written).
    async fn link(
        &self,
        intent: &IntentRecord,
        payment: &NewPayment,
        answer: &StoredAnswer,
        at: DateTime<Utc>,
    ) -> Result<Option<PendingWrite>, StoreError>;
}

/// What [`PushLedger::accepted`] found when it wrote the pending payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// No result yet: the payment is pending.
    Pending,
    /// The result had come first; the record keeps this final status.
    ResultKnown(PaymentStatus),
    /// A success for another amount had come first: this write turned it `NEEDS_REVIEW`.
    FlaggedForReview,
}

impl From<&PendingWrite> for Recorded {
    fn from(written: &PendingWrite) -> Self {
        match written {
            PendingWrite::Created(_) => Recorded::Pending,
            PendingWrite::ResultAlreadyKnown(record) => Recorded::ResultKnown(record.status),
            PendingWrite::FlaggedForReview(_) => Recorded::FlaggedForReview,
        }
    }
}

/// How far apart two containers' clocks are taken to be at most.
pub const CLOCK_SKEW: Duration = Duration::seconds(5);

/// The deadline of an intent written without one (`settle_by` absent): well past the push
/// function's timeout (25 s in `template.yaml`).
pub const DEFAULT_SETTLE_TIME: Duration = Duration::seconds(55);

/// How long after its start an intent without an explicit deadline is in doubt. A push still
/// unsettled past its function's deadline was stopped by Lambda between writing the intent and
/// settling it, so nothing will ever settle it; without this bound its key would answer
/// `idempotency_in_progress` for the whole 24 h.
pub const ABANDONED_AFTER: Duration =
    Duration::seconds(DEFAULT_SETTLE_TIME.num_seconds() + CLOCK_SKEW.num_seconds());

/// What an existing intent means for a new `begin` with the same key.
///
/// An abandoned intent is answered without being rewritten: if its push was only slow,
/// not dead, its own settlement still lands and later replays give that answer.
pub fn begin_on_existing(existing: &IntentRecord, intent: &NewIntent) -> Result<Begin, StoreError> {
    if existing.fingerprint != intent.fingerprint {
        return Ok(Begin::KeyReused);
    }
    match (existing.status, &existing.answer) {
        (IntentStatus::InProgress, _) if existing.past_deadline(intent.at) => Ok(Begin::Abandoned),
        (IntentStatus::InProgress, _) => Ok(Begin::InProgress),
        (_, Some(answer)) => Ok(Begin::Replay(answer.clone())),
        (_, None) => Err(StoreError::Corrupt {
            pk: existing.pk.clone(),
            detail: "a settled intent without its answer".into(),
        }),
    }
}

/// The intent as [`PushLedger::begin`] writes it.
pub fn new_record(intent: &NewIntent) -> IntentRecord {
    IntentRecord {
        pk: intent.key.pk(),
        status: IntentStatus::InProgress,
        fingerprint: intent.fingerprint.clone(),
        phone: intent.phone().to_owned(),
        amount: intent.charge.amount.get(),
        reference: intent.charge.reference.as_str().to_owned(),
        description: Some(intent.charge.description.as_str().to_owned()),
        created_at: timestamp::truncate(intent.at),
        updated_at: timestamp::truncate(intent.at),
        expires_at: intent.expires_at(),
        settle_by: timestamp::truncate(intent.settle_by),
        answer: None,
        checkout_request_id: None,
        merchant_request_id: None,
        created_by: intent.created_by.clone(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_stored_hashed_and_ids_are_unique() {
        let key = super::IntentKey::idempotency("order-1001");
        assert!(!key.pk().contains("order-1001"));
        assert!(key.pk().starts_with("IDEM#"));
        assert_eq!(key, super::IntentKey::idempotency("order-1001"));
        assert_ne!(super::IntentKey::generated(), super::IntentKey::generated());
    }
}
