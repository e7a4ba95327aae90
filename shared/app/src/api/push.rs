//! `POST /payments`: validate, write the intent and lock the phone, send the STK push,
//! record the pending payment.
//!
//! Money rules held here: a retry with the same `Idempotency-Key` never sends a second prompt;
//! a phone with a prompt still open is not prompted again; nothing is sent to Daraja before
//! the intent is durable; the whole push works to the invocation's deadline, keeping
//! [`RECORDING_TIME`] to record Daraja's answer (retried until then); and a push whose answer
//! could not be recorded is answered `504 push_in_doubt`, which is also what its key replays.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use daraja::values::{AccountReference, Amount, PhoneNumber, TransactionDesc};
use daraja::wire::StkPushResponse;
use daraja::{mask_id, Charge, Clock, Daraja, DarajaError, Deadline, FailureKind, PushRequest};
use payments::intent::{
    accepted_answer, Begin, Failure, IntentKey, NewIntent, PushLedger, Recorded, StoredAnswer,
};
use payments::payment::{NewPayment, PaymentStatus};
use payments::StoreError;

use super::{parse_idempotency_key, ApiError, CallbackKeys, Capability, ErrorCode};
use crate::metrics::{self, Metric};

/// What a push keeps, at the end of its invocation, to record Daraja's answer (a write retried
/// with back-off) and reply. Nothing is sent to Daraja that could end later than this before
/// the deadline.
pub const RECORDING_TIME: Duration = Duration::from_secs(3);

/// The least time left for writing the intent and sending the push once a token is in hand:
/// the client's [`daraja::client::MIN_CALL_TIME`] and a moment for the intent write.
const PUSH_TIME: Duration = Duration::from_millis(2_500);

/// The last moments of an invocation: for the answer itself, never for another write.
const REPLY_TIME: Duration = Duration::from_millis(300);

/// How long the one try to take back an intent write that failed may last.
const UNDO_TIME: Duration = Duration::from_secs(1);

/// The longest pause between two tries of a write.
const MAX_RETRY_PAUSE: Duration = Duration::from_secs(1);

/// The first pause between two tries of a write; it doubles after each, up to
/// [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// The invocation time assumed when the runtime gives no deadline (the template's timeout).
pub const DEFAULT_INVOCATION_TIME: Duration = Duration::from_secs(25);

/// Push requests larger than this are refused unread.
pub const MAX_PUSH_BYTES: usize = 16 * 1024;

/// Validates a `POST /payments` body into the charge it asks for: 400 when it is not a JSON
/// object, 422 for a field that breaks a rule. Fields are read from a JSON value so each
/// problem gets its own message.
pub fn parse_payment_request(body: &[u8]) -> Result<Charge, ApiError> {
    if body.len() > MAX_PUSH_BYTES {
        return Err(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than {MAX_PUSH_BYTES} bytes."),
        ));
    }
    let value: Value = serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::InvalidJson,
            format!("The request body is not valid JSON ({e}). Send {{\"phone\", \"amount\", \"reference\", \"description\"}}."),
        )
    })?;
    let Value::Object(fields) = value else {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "The request body must be a JSON object with phone, amount, reference and optional description.",
        ));
    };
    let text = |name: &'static str, code: ErrorCode| -> Result<Option<&str>, ApiError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(ApiError::new(code, format!("\"{name}\" must be a string."))),
        }
    };
    let missing =
        |name: &str| ApiError::new(ErrorCode::MissingField, format!("\"{name}\" is required."));
    let phone = text("phone", ErrorCode::InvalidPhone)?.ok_or_else(|| missing("phone"))?;
    let phone = PhoneNumber::parse(phone).map_err(ApiError::from_validation)?;
    let amount = fields.get("amount").ok_or_else(|| missing("amount"))?;
    let amount = Amount::from_json(amount).map_err(ApiError::from_validation)?;
    let reference =
        text("reference", ErrorCode::InvalidReference)?.ok_or_else(|| missing("reference"))?;
    let reference = AccountReference::parse(reference).map_err(ApiError::from_validation)?;
    let description =
        TransactionDesc::parse_optional(text("description", ErrorCode::InvalidDescription)?)
            .map_err(ApiError::from_validation)?;
    Ok(Charge {
        phone,
        amount,
        reference,
        description,
    })
}

/// The 202 answer to `POST /payments`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushAccepted {
    pub checkout_request_id: String,
    pub merchant_request_id: String,
    pub status: String,
    pub customer_message: String,
}

/// A successful answer to `POST /payments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushAnswer {
    /// Daraja accepted the push just now: 202.
    Accepted(PushAccepted),
    /// The first answer to this `Idempotency-Key`, sent again unchanged (any status).
    Replayed(StoredAnswer),
}

impl PushAnswer {
    pub fn status(&self) -> u16 {
        match self {
            Self::Accepted(_) => 202,
            Self::Replayed(answer) => answer.status,
        }
    }

    pub fn body(&self) -> Value {
        match self {
            Self::Accepted(accepted) => accepted_body(accepted),
            Self::Replayed(answer) => answer.body.clone(),
        }
    }

    pub fn is_replay(&self) -> bool {
        matches!(self, Self::Replayed(_))
    }
}

fn accepted_body(accepted: &PushAccepted) -> Value {
    accepted_answer(
        &accepted.checkout_request_id,
        &accepted.merchant_request_id,
        &accepted.customer_message,
    )
    .body
}

/// What the push function needs, built once at cold start.
pub struct PushService {
    pub daraja: Arc<dyn Daraja>,
    /// Intents, phone locks and the pending payment write.
    pub ledger: Arc<dyn PushLedger>,
    pub clock: Arc<dyn Clock>,
    /// Sign each push's own callback URL.
    pub callback_keys: CallbackKeys,
    /// From configuration; when `None` each request's own API host is used.
    pub callback_base_url: Option<String>,
    /// How long a phone stays locked after a push that may have reached it (`PHONE_LOCK_SECONDS`).
    pub phone_lock: Duration,
}

impl PushService {
    /// The URL Daraja calls back: this API's own callback route, with the path token of
    /// `capability`.
    pub fn callback_url(
        &self,
        request_base_url: Option<&str>,
        capability: &Capability,
    ) -> Result<String, ApiError> {
        let base = self
            .callback_base_url
            .as_deref()
            .or(request_base_url)
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::CallbackUrlUnknown,
                    "No callback URL: set CALLBACK_BASE_URL or call through API Gateway.",
                )
            })?;
        Ok(format!(
            "{}/callbacks/stk/{}",
            base.trim_end_matches('/'),
            capability.token
        ))
    }

    /// Validates, writes the intent and takes the phone lock, sends the STK push, and records
    /// the outcome, all by `deadline` (the invocation's). `idempotency_key` is the raw
    /// `Idempotency-Key` header, if sent. For a request without a caller identity; see
    /// [`start_as`](Self::start_as).
    pub async fn start(
        &self,
        body: &[u8],
        request_base_url: Option<&str>,
        idempotency_key: Option<&[u8]>,
        deadline: Deadline,
    ) -> Result<PushAnswer, ApiError> {
        self.start_as(None, body, request_base_url, idempotency_key, deadline)
            .await
    }

    /// [`start`](Self::start) for `caller`, the IAM principal API Gateway verified: its key
    /// is its own, and the payment is shown to it only.
    pub async fn start_as(
        &self,
        caller: Option<&str>,
        body: &[u8],
        request_base_url: Option<&str>,
        idempotency_key: Option<&[u8]>,
        deadline: Deadline,
    ) -> Result<PushAnswer, ApiError> {
        let answer = self
            .attempt(caller, body, request_base_url, idempotency_key, deadline)
            .await;
        // One metric per request; a replay is the first answer again, not a new decision.
        match &answer {
            Ok(PushAnswer::Accepted(_)) => metrics::count(Metric::PushAccepted),
            Ok(PushAnswer::Replayed(_)) => {}
            Err(error) => metrics::count_by(Metric::PushRejected, "ErrorCode", error.code.as_str()),
        }
        answer
    }

    async fn attempt(
        &self,
        caller: Option<&str>,
        body: &[u8],
        request_base_url: Option<&str>,
        idempotency_key: Option<&[u8]>,
        deadline: Deadline,
    ) -> Result<PushAnswer, ApiError> {
        let charge = parse_payment_request(body)?;
        let key = match idempotency_key {
            Some(raw) => IntentKey::idempotency_for(caller, parse_idempotency_key(raw)?),
            None => IntentKey::generated(),
        };
        let capability = self.callback_keys.mint();
        let callback_url = self.callback_url(request_base_url, &capability)?;
        let phone_lock = chrono::Duration::from_std(self.phone_lock)
            .expect("PHONE_LOCK_SECONDS is at most an hour");
        let daraja_by = deadline.earlier_by(RECORDING_TIME);
        // The token first (from memory on a warm container), so that once the intent is written
        // only the push itself is left: an intent left unsettled means a push was sent. A
        // failure here is answered after `begin`, so a replay never depends on Daraja.
        let ready = self.daraja.prepare(daraja_by.earlier_by(PUSH_TIME)).await;
        let now = self.clock.now();
        let intent = NewIntent::new(key, charge, now, phone_lock)
            .settled_by(now + chrono::Duration::from_std(deadline.remaining()).unwrap_or_default())
            .with_callback_nonce(capability.nonce)
            .created_by(caller.map(str::to_owned));
        let intent_id = intent.key.log_id();
        let begun = tokio::time::timeout(daraja_by.remaining(), self.ledger.begin(&intent))
            .await
            .unwrap_or_else(|_| Err(no_answer_in_time()));
        match begun {
            Ok(Begin::Started) => {}
            Ok(Begin::Replay(answer)) => {
                tracing::info!(intent = %intent_id, status = answer.status, "idempotent replay");
                return Ok(PushAnswer::Replayed(answer));
            }
            Ok(Begin::Abandoned) => {
                let answer = ApiError::abandoned();
                metrics::count(Metric::PushInDoubt);
                tracing::error!(
                    intent = %intent_id,
                    phone = %intent.charge.phone.masked(),
                    "push in doubt: this key's push stopped before Daraja's answer was recorded"
                );
                return Ok(PushAnswer::Replayed(StoredAnswer {
                    status: answer.status(),
                    body: answer.body(),
                }));
            }
            Ok(Begin::InProgress) => return Err(ApiError::idempotency_in_progress()),
            Ok(Begin::KeyReused) => return Err(ApiError::idempotency_key_reused()),
            Ok(Begin::PhoneBusy {
                checkout_request_id,
            }) => {
                tracing::info!(
                    phone = %intent.charge.phone.masked(),
                    open = %checkout_request_id.as_deref().map(mask_id).unwrap_or_default(),
                    "push refused: a prompt may still be open on this phone"
                );
                return Err(ApiError::phone_busy(checkout_request_id));
            }
            Err(e) => {
                tracing::error!(
                    intent = %intent_id,
                    phone = %intent.charge.phone.masked(),
                    error = %e,
                    "intent write failed; no prompt sent"
                );
                // A write without an answer may still have landed: take it back (one try, the
                // store is failing), or its key would read as in doubt although nothing was sent.
                let undo = self
                    .ledger
                    .failed(&intent, &Failure::Retryable, self.clock.now());
                let _ = tokio::time::timeout(UNDO_TIME.min(deadline.remaining()), undo).await;
                return Err(ApiError::storage_unavailable_before_push());
            }
        }
        if let Err(e) = ready {
            return Err(self.failed(&intent, &e, deadline).await);
        }
        let push = PushRequest {
            charge: intent.charge.clone(),
            callback_url,
            deadline: daraja_by,
        };
        match self.daraja.stk_push(&push).await {
            Ok(accepted) => self.accepted(&intent, accepted, deadline).await,
            Err(e) => Err(self.failed(&intent, &e, deadline).await),
        }
    }

    /// Runs `write` until it succeeds, fails for good, or the deadline (less [`REPLY_TIME`])
    /// leaves no time for another try; each try is cut off at that point too.
    async fn record<T, F, Fut>(&self, deadline: Deadline, write: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let by = deadline.earlier_by(REPLY_TIME);
        let mut pause = FIRST_RETRY_PAUSE;
        loop {
            let error = match tokio::time::timeout(by.remaining(), write()).await {
                Ok(Ok(done)) => return Ok(done),
                Ok(Err(e)) if !e.is_retryable() => return Err(e),
                Ok(Err(e)) => e,
                Err(_) => no_answer_in_time(),
            };
            if by.remaining() <= pause {
                return Err(error);
            }
            tracing::warn!(error = %error, retry_in_ms = pause.as_millis() as u64, "store write failed; retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(MAX_RETRY_PAUSE);
        }
    }

    /// Records an accepted push: the pending payment, the intent's answer and the lock, in one
    /// write retried until the deadline. The prompt is on the phone whatever the store says;
    /// when nothing could be recorded the answer is `504 push_in_doubt` with the checkout id,
    /// the same code the key replays, and the one log line holding the full checkout id.
    async fn accepted(
        &self,
        intent: &NewIntent,
        accepted: StkPushResponse,
        deadline: Deadline,
    ) -> Result<PushAnswer, ApiError> {
        let answer = PushAccepted {
            checkout_request_id: accepted.checkout_request_id,
            merchant_request_id: accepted.merchant_request_id,
            status: PaymentStatus::Pending.as_str().to_string(),
            customer_message: accepted.customer_message,
        };
        let pending = NewPayment {
            checkout_request_id: answer.checkout_request_id.clone(),
            merchant_request_id: answer.merchant_request_id.clone(),
            charge: intent.charge.clone(),
            created_at: self.clock.now(),
            callback_nonce: intent.callback_nonce.clone(),
            created_by: intent.created_by.clone(),
        };
        let stored = StoredAnswer {
            status: 202,
            body: accepted_body(&answer),
        };
        let recorded = self
            .record(deadline, || self.ledger.accepted(intent, &pending, &stored))
            .await;
        match recorded {
            // The callback came first with a success for another amount: this write turned the
            // record NEEDS_REVIEW, and is where it is counted (a callback that cannot be checked
            // was counted when it arrived).
            Ok(Recorded::FlaggedForReview) => {
                metrics::count(Metric::PaymentNeedsReview);
                tracing::warn!(
                    intent = %intent.key.log_id(),
                    checkout_request_id = %mask_id(&pending.checkout_request_id),
                    amount = pending.amount(),
                    "push accepted after its result; the payment needs review"
                );
            }
            Ok(_) => tracing::info!(
                intent = %intent.key.log_id(),
                checkout_request_id = %mask_id(&pending.checkout_request_id),
                phone = %intent.charge.phone.masked(),
                amount = pending.amount(),
                "push accepted"
            ),
            Err(e) => {
                metrics::count(Metric::PushInDoubt);
                // The callback will still create the record (as an orphan, with the result).
                // The checkout id is logged in full here, once: it is what an STK query or the
                // M-Pesa portal needs, and nothing else holds it.
                tracing::error!(
                    intent = %intent.key.log_id(),
                    checkout_request_id = %pending.checkout_request_id,
                    merchant_request_id = %pending.merchant_request_id,
                    amount = pending.amount(),
                    phone = %intent.charge.phone.masked(),
                    reference = %pending.charge.reference.as_str(),
                    error = %e,
                    "push in doubt: Daraja accepted the push but recording it (intent, pending payment, phone lock) failed until the deadline"
                );
                return Err(ApiError::accepted_but_unrecorded(
                    pending.checkout_request_id,
                ));
            }
        }
        Ok(PushAnswer::Accepted(answer))
    }

    /// Records a push Daraja did not accept (retried until the deadline) and returns the
    /// answer for it.
    async fn failed(&self, intent: &NewIntent, e: &DarajaError, deadline: Deadline) -> ApiError {
        metrics::daraja_error(e);
        let error = ApiError::from_daraja(e);
        let stored = StoredAnswer {
            status: error.status(),
            body: error.body(),
        };
        let failure = match e.kind() {
            FailureKind::OutcomeUnknown => Failure::OutcomeUnknown(stored),
            FailureKind::Retryable => Failure::Retryable,
            FailureKind::Refused => Failure::Refused(stored),
        };
        let outcome_unknown = matches!(failure, Failure::OutcomeUnknown(_));
        let written = self
            .record(deadline, || {
                self.ledger.failed(intent, &failure, self.clock.now())
            })
            .await;
        if outcome_unknown {
            tracing::error!(
                intent = %intent.key.log_id(),
                phone = %intent.charge.phone.masked(),
                amount = intent.charge.amount.get(),
                reference = %intent.charge.reference.as_str(),
                error = %e,
                recorded = written.is_ok(),
                "push outcome unknown: the customer may get a prompt; the phone stays locked"
            );
        } else {
            tracing::warn!(
                intent = %intent.key.log_id(),
                phone = %intent.charge.phone.masked(),
                error = %e,
                daraja_error_code = e.error_code().unwrap_or(""),
                "push refused"
            );
        }
        if let Err(store) = written {
            // The intent stays IN_PROGRESS and the phone locked until they expire: a retry is
            // told to wait, then that the push is in doubt; never prompted twice.
            if outcome_unknown {
                metrics::count(Metric::PushInDoubt);
            }
            tracing::error!(
                intent = %intent.key.log_id(),
                phone = %intent.charge.phone.masked(),
                error = %store,
                "could not record the failed push"
            );
        }
        error
    }
}

/// A store request cut off at the deadline: it may or may not have been applied.
fn no_answer_in_time() -> StoreError {
    StoreError::Unavailable("no answer from the store before the function's deadline".into())
}

#[cfg(test)]
mod tests;
