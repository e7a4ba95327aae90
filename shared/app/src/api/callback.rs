//! `POST /callbacks/stk/{token}`: Safaricom's result, applied with one conditional write.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{ApiError, CallbackKeys, ErrorCode, SourceAllowList};
use crate::metrics::{self, Metric};
use daraja::{mask_id, parse_callback, Clock, StkCallback};
use payments::intent::PushLedger;
use payments::link::{link_to_push_in_doubt, payer_phone};
use payments::payment::{HeldCallback, PaymentResult, PaymentStatus, ResultSource, ReviewReason};
use payments::raw::{RawCallbackStore, UnreadableCallback};
use payments::{Applied, Hold, PaymentStore};

/// Callbacks larger than this are refused unread: Daraja's are well under 2 KiB.
pub const MAX_CALLBACK_BYTES: usize = payments::raw::RAW_BODY_LIMIT;

/// The answer to a callback: an HTTP status and a JSON body.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackAnswer {
    pub status: u16,
    pub body: Value,
}

impl CallbackAnswer {
    fn accepted() -> Self {
        Self {
            status: 200,
            body: json!({ "ResultCode": 0, "ResultDesc": "Accepted" }),
        }
    }

    fn not_found() -> Self {
        // The same answer API Gateway gives for a route that does not exist: a wrong token
        // or a foreign source learns nothing.
        Self {
            status: 404,
            body: json!({ "message": "Not Found" }),
        }
    }

    fn error(error: ApiError) -> Self {
        Self {
            status: error.status(),
            body: error.body(),
        }
    }
}

/// Which success callbacks wait for an STK query before they count (`CALLBACK_CONFIRM`).
///
/// A held success changes no status: it is kept on its payment, which reconciliation queries
/// in its next round; the callback is applied after the query's answer, so a success Daraja
/// does not confirm turns the payment `NEEDS_REVIEW` instead of `COMPLETED`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Confirmation {
    /// Every result counts on arrival.
    #[default]
    Off,
    /// A success from a source outside `CALLBACK_ALLOWED_IPS` waits for the query.
    Unlisted,
    /// Every success waits for the query.
    Always,
}

impl Confirmation {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "off" => Ok(Self::Off),
            "unlisted" => Ok(Self::Unlisted),
            "always" => Ok(Self::Always),
            other => Err(format!(
                "{other:?} is not \"off\", \"unlisted\" or \"always\""
            )),
        }
    }

    /// Whether a success from a source `listed` or not waits for the query.
    pub fn holds(self, listed: bool) -> bool {
        match self {
            Self::Off => false,
            Self::Unlisted => !listed,
            Self::Always => true,
        }
    }
}

/// What the callback function needs, built once at cold start.
pub struct CallbackService {
    pub store: Arc<dyn PaymentStore>,
    /// The push intents: a result for an unknown checkout id may belong to a push in doubt.
    pub ledger: Arc<dyn PushLedger>,
    /// Where bodies that cannot be applied, and the sources of orphans, are kept.
    pub raw: Arc<dyn RawCallbackStore>,
    pub clock: Arc<dyn Clock>,
    /// Verify the per-payment callback URLs.
    pub callback_keys: CallbackKeys,
    /// Empty: every source may deliver.
    pub allowed_sources: SourceAllowList,
    /// Which successes wait for an STK query.
    pub confirmation: Confirmation,
}

impl CallbackService {
    /// Handles one delivery. `source_ip` is API Gateway's `sourceIp`.
    ///
    /// Every decision logs one event with a `decision` field (`transitioned`, `duplicate`,
    /// `conflict`, `orphan`, `held`, `unreadable`, `refused_source`, `refused_token`, `refused_binding`,
    /// `oversized`, `store_failed`, `unreadable_lost`), which a metric filter can count.
    pub async fn receive(
        &self,
        token: Option<&str>,
        source_ip: Option<&str>,
        body: &[u8],
    ) -> CallbackAnswer {
        let source = source_ip.unwrap_or("");
        let listed = self.allowed_sources.allows(source_ip);
        if !listed && !self.allowed_sources.is_report_only() {
            metrics::count_by(Metric::CallbackRefused, "Reason", "source");
            tracing::warn!(
                decision = "refused_source",
                source_ip = source,
                "callback from a source outside CALLBACK_ALLOWED_IPS refused"
            );
            return CallbackAnswer::not_found();
        }
        let Some(nonce) = token.and_then(|token| self.callback_keys.verify(token)) else {
            metrics::count_by(Metric::CallbackRefused, "Reason", "token");
            tracing::warn!(
                decision = "refused_token",
                source_ip = source,
                "callback with a wrong or missing token refused"
            );
            return CallbackAnswer::not_found();
        };
        if !listed {
            metrics::count(Metric::CallbackUnlistedSource);
            tracing::warn!(
                source_ip = source,
                "callback from a source outside CALLBACK_ALLOWED_IPS accepted (CALLBACK_SOURCE_MODE=report)"
            );
        }
        metrics::count(Metric::CallbackReceived);
        if body.len() > MAX_CALLBACK_BYTES {
            tracing::warn!(
                decision = "oversized",
                bytes = body.len(),
                source_ip = source,
                "oversized callback refused"
            );
            return CallbackAnswer::error(ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!("A callback body is at most {MAX_CALLBACK_BYTES} bytes."),
            ));
        }
        let received_at = self.clock.now();
        let callback = match parse_callback(body) {
            Ok(cb) => cb,
            Err(e) => {
                let kept =
                    UnreadableCallback::new(body, e.code(), e.to_string(), source_ip, received_at);
                return self.keep_unreadable(kept).await;
            }
        };
        let mut result = payment_result(&callback, body, ResultSource::Callback, received_at);
        result.callback_nonce = Some(nonce);
        if result.is_success() && self.confirmation.holds(listed) {
            if let Some(answer) = self.hold(&result, source_ip).await {
                return answer;
            }
        }
        match self.store.apply_result(&result).await {
            Ok(Applied::Unbound(_)) => {
                // A valid URL of another payment: someone who saw one is replaying it.
                metrics::count_by(Metric::CallbackRefused, "Reason", "binding");
                tracing::warn!(
                    decision = "refused_binding",
                    checkout_request_id = %mask_id(&result.checkout_request_id),
                    source_ip = source,
                    "callback sent to another payment's callback URL refused"
                );
                CallbackAnswer::not_found()
            }
            Ok(applied) => {
                log_applied(&applied, &result, source);
                let Applied::Transitioned(settled) = &applied else {
                    return CallbackAnswer::accepted();
                };
                if settled.orphan {
                    // The result itself is stored; its origin is audit detail worth a
                    // second write only on this rare path.
                    if let Some(ip) = source_ip {
                        if let Err(e) = self.raw.note_source(&result.checkout_request_id, ip).await
                        {
                            tracing::warn!(
                                checkout_request_id = %mask_id(&result.checkout_request_id),
                                source_ip = ip,
                                error = %e,
                                "source of an orphan result not recorded"
                            );
                        }
                    }
                    self.link_orphan(&result).await;
                } else if settled.status == PaymentStatus::Failed {
                    self.release_phone(&result).await;
                }
                CallbackAnswer::accepted()
            }
            Err(e) => store_failed(&result, &e),
        }
    }

    /// Keeps a success on its open payment until an STK query confirms it. `None`: the payment
    /// is not open (final, another payment's URL, or not recorded yet), and the result is
    /// applied by its own rules.
    async fn hold(
        &self,
        result: &PaymentResult,
        source_ip: Option<&str>,
    ) -> Option<CallbackAnswer> {
        let held = HeldCallback {
            raw: result.raw.clone().unwrap_or_default(),
            received_at: result.received_at,
            callback_nonce: result.callback_nonce.clone(),
            source_ip: source_ip.map(str::to_owned),
        };
        match self
            .store
            .hold_for_confirmation(&result.checkout_request_id, &held)
            .await
        {
            Ok(Hold::Held) => {
                metrics::count(Metric::CallbackHeld);
                tracing::info!(
                    decision = "held",
                    checkout_request_id = %mask_id(&result.checkout_request_id),
                    source_ip = source_ip.unwrap_or(""),
                    "success held until an STK query confirms it"
                );
                Some(CallbackAnswer::accepted())
            }
            Ok(Hold::NotOpen(_)) => None,
            Err(e) => Some(store_failed(result, &e)),
        }
    }

    /// A final failure closed the prompt without payment: the phone may take a new push at
    /// once (the customer who cancelled retries), instead of after `PHONE_LOCK_SECONDS`. One
    /// conditional delete of the lock, only while it names this push; a failure to delete
    /// leaves the lock to expire.
    async fn release_phone(&self, result: &PaymentResult) {
        let id = &result.checkout_request_id;
        let Some(phone) = payer_phone(id, None) else {
            return;
        };
        match self
            .ledger
            .release_phone(&phone, id, result.callback_nonce.as_deref())
            .await
        {
            Ok(released) => tracing::info!(
                checkout_request_id = %mask_id(id),
                released,
                "phone lock released after a final failure"
            ),
            Err(e) => tracing::warn!(
                checkout_request_id = %mask_id(id),
                error = %e,
                "phone lock not released; it expires on its own"
            ),
        }
    }

    /// A result for a checkout id no push recorded. If it names a phone whose push is in doubt
    /// (Daraja's acceptance was never recorded), it is that push's result: one prompt per
    /// phone at a time leaves no other candidate. The payment then gets the merchant's
    /// reference and amount (and the amount check), the intent's key replays the `202` with
    /// this checkout id, and the phone lock names it. Reads on this rare path only.
    async fn link_orphan(&self, result: &PaymentResult) {
        let id = mask_id(&result.checkout_request_id);
        let linked = link_to_push_in_doubt(
            self.ledger.as_ref(),
            &result.checkout_request_id,
            &result.merchant_request_id,
            result.paying_phone.as_deref(),
            self.clock.now(),
        )
        .await;
        crate::link::log_link(&id, linked);
    }

    /// A body behind a valid token that is not a Daraja STK callback: it may still be the
    /// only trace of a payment, so it is kept before it is refused.
    async fn keep_unreadable(&self, kept: UnreadableCallback) -> CallbackAnswer {
        metrics::count_by(
            Metric::CallbackOrphan,
            "Reason",
            unreadable_code(&kept.reason).as_str(),
        );
        let source = kept.source_ip.as_deref().unwrap_or("");
        match self.raw.keep_unreadable(&kept).await {
            Ok(key) => {
                tracing::warn!(
                    decision = "unreadable",
                    reason = %kept.reason,
                    bytes = kept.body_bytes,
                    source_ip = source,
                    kept_as = %key,
                    "callback is not a Daraja STK callback; kept raw"
                );
                let mut answer = CallbackAnswer::error(ApiError::new(
                    unreadable_code(&kept.reason),
                    format!("{} The body was kept for review.", kept.detail),
                ));
                answer.body["error"]["kept_as"] = json!(key);
                answer
            }
            Err(e) => {
                // The body is not logged: it may carry a phone number.
                tracing::error!(
                    decision = "unreadable_lost",
                    reason = %kept.reason,
                    bytes = kept.body_bytes,
                    source_ip = source,
                    error = %e,
                    "unreadable callback could not be kept"
                );
                CallbackAnswer::error(ApiError::storage_unavailable())
            }
        }
    }
}

/// A result the store could not take. Safaricom does not resend: the whole result goes to the
/// log so it can be replayed, and is counted for the alarm (a 503 is a normal answer to Lambda).
fn store_failed(result: &PaymentResult, e: &payments::StoreError) -> CallbackAnswer {
    metrics::count(Metric::CallbackStoreFailed);
    tracing::error!(
        decision = "store_failed",
        checkout_request_id = %mask_id(&result.checkout_request_id),
        result_code = %result.result_code,
        receipt = result.receipt.as_deref().unwrap_or(""),
        amount_paid = result.amount_paid.as_deref().unwrap_or(""),
        error = %e,
        "callback could not be stored"
    );
    CallbackAnswer::error(ApiError::storage_unavailable())
}

/// The answer code of a body that is not a Daraja STK callback.
fn unreadable_code(reason: &str) -> ErrorCode {
    match reason {
        "invalid_json" => ErrorCode::InvalidJson,
        _ => ErrorCode::InvalidCallback,
    }
}

fn log_applied(applied: &Applied, result: &PaymentResult, source_ip: &str) {
    let id = mask_id(&result.checkout_request_id);
    match applied {
        // A success callback for a payment a query already completed only fills in the receipt:
        // the payment became final earlier and was counted then, unless the receipt's amount
        // turns it NEEDS_REVIEW now.
        Applied::Transitioned(settled) if settled.enriched => {
            if settled.status == PaymentStatus::NeedsReview {
                metrics::count(Metric::PaymentNeedsReview);
            }
            tracing::info!(decision = "receipt_added", checkout_request_id = %id, status = settled.status.as_str(), review_reason = settled.review_reason.map(|r| r.as_str()), "receipt added to a payment completed by query");
        }
        Applied::Transitioned(settled) => {
            metrics::payment_final(settled.status, result.outcome());
            let status = settled.status.as_str();
            if settled.orphan {
                metrics::count_by(Metric::CallbackOrphan, "Reason", "unknown_payment");
                tracing::warn!(decision = "orphan", checkout_request_id = %id, status, outcome = result.outcome(), source_ip, "result for a payment with no pending record kept as orphan");
            } else if settled.review_reason == Some(ReviewReason::ReceiptReused) {
                tracing::warn!(decision = "receipt_reused", checkout_request_id = %id, status, "the receipt was already recorded on another payment; this one needs review");
            } else if result.is_success() {
                tracing::info!(decision = "transitioned", checkout_request_id = %id, status, outcome = result.outcome(), "payment final");
            } else {
                tracing::info!(decision = "transitioned", checkout_request_id = %id, status, outcome = result.outcome(), result_code = %result.result_code, "payment final");
            }
        }
        Applied::Flagged(record) => {
            metrics::count(Metric::CallbackConflict);
            metrics::count(Metric::PaymentNeedsReview);
            tracing::warn!(decision = "flagged", checkout_request_id = %id, status = record.status.as_str(), review_reason = record.review_reason.map(|r| r.as_str()), result_code = %result.result_code, "a success with a receipt contradicts the final payment; it needs review");
        }
        Applied::Duplicate(record) => {
            metrics::count(Metric::CallbackDuplicate);
            tracing::info!(decision = "duplicate", checkout_request_id = %id, status = record.status.as_str(), "duplicate result ignored; nothing written");
        }
        // Answered by `receive` before it logs.
        Applied::Unbound(_) => {}
        Applied::Conflict(record) => {
            metrics::count(Metric::CallbackConflict);
            tracing::warn!(decision = "conflict", checkout_request_id = %id, status = record.status.as_str(), result_code = %result.result_code, conflicting_callbacks = record.conflicting_callbacks, "different result for a final payment kept in history");
        }
    }
}

/// Turns a parsed callback into the domain's result.
pub fn payment_result(
    cb: &StkCallback,
    raw: &[u8],
    source: ResultSource,
    received_at: chrono::DateTime<chrono::Utc>,
) -> PaymentResult {
    PaymentResult::from_callback(cb, raw, source, received_at)
}
