//! The behaviour every [`PushLedger`] must show, run against the in-memory ledger in this
//! crate's unit tests and against DynamoDB in the integration tests. Use
//! [`push_ledger_conformance!`](crate::push_ledger_conformance) with an async function that
//! returns a fresh ledger and the payment store it writes to.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;

use super::{charge, success};
use crate::intent::{
    Begin, Failure, IntentKey, IntentStatus, NewIntent, PushLedger, Recorded, StoredAnswer,
    ABANDONED_AFTER,
};
use crate::payment::{timestamp, NewPayment, PaymentStatus};
use crate::store::PaymentStore;

/// Expands to one `#[tokio::test]` per rule, each on a ledger from `$make` (an async fn
/// returning `(Arc<dyn PushLedger>, Arc<dyn PaymentStore>)`, fresh and empty).
#[macro_export]
macro_rules! push_ledger_conformance {
    ($make:path) => {
        $crate::push_ledger_conformance!(@rules $make;
            same_key_while_in_progress_is_in_progress,
            accepted_answer_is_replayed_with_its_records,
            same_key_with_another_request_is_key_reused,
            expired_key_is_forgotten,
            busy_phone_reports_the_open_checkout_id,
            phone_lock_frees_after_its_window,
            refusal_keeps_the_answer_and_frees_the_phone,
            retryable_failure_forgets_the_key_and_frees_the_phone,
            outcome_unknown_keeps_the_phone_locked,
            abandoned_in_progress_key_answers_outcome_unknown,
            concurrent_begins_with_one_key_start_once,
            concurrent_begins_on_one_phone_start_once,
            accepted_after_the_callback_keeps_the_result,
            accepted_after_a_short_callback_needs_review,
            an_orphan_result_links_to_the_push_in_doubt_on_its_phone,
            a_final_failure_releases_only_its_own_phone_lock,
            an_accepted_push_is_never_in_doubt,
            a_retry_whose_begin_failed_never_takes_back_the_first_call,
            a_push_without_a_key_keeps_every_rule_on_its_phone_lock,
        );
    };
    (@rules $make:path; $($rule:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $rule() {
                let (ledger, payments) = $make().await;
                $crate::conformance::ledger::$rule(ledger, payments).await;
            }
        )*
    };
}

type Ledger = Arc<dyn PushLedger>;
type Payments = Arc<dyn PaymentStore>;

const WINDOW: i64 = 120;

fn now() -> DateTime<Utc> {
    timestamp::truncate(Utc::now())
}

/// An intent for `key` (`None`: generated) on `phone`, at `at`.
pub fn intent(key: Option<&str>, phone: &str, at: DateTime<Utc>) -> NewIntent {
    NewIntent::new(
        key.map_or_else(IntentKey::generated, IntentKey::idempotency),
        charge(phone, 100),
        at,
        Duration::seconds(WINDOW),
    )
}

fn payment(id: &str, intent: &NewIntent) -> NewPayment {
    NewPayment {
        checkout_request_id: id.to_owned(),
        merchant_request_id: "29115-34620561-1".to_owned(),
        charge: intent.charge.clone(),
        created_at: intent.at + Duration::seconds(1),
        callback_nonce: None,
        created_by: None,
    }
}

fn answer(status: u16, code: &str) -> StoredAnswer {
    StoredAnswer {
        status,
        body: json!({ "code": code, "n": [1, 2] }),
    }
}

async fn begin(ledger: &Ledger, intent: &NewIntent) -> Begin {
    ledger
        .begin(intent)
        .await
        .unwrap_or_else(|e| panic!("begin: {e}"))
}

pub async fn same_key_while_in_progress_is_in_progress(ledger: Ledger, _: Payments) {
    let first = intent(Some("k1"), "254708000001", now());
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    assert_eq!(begin(&ledger, &first).await, Begin::InProgress);
    let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
    assert_eq!(stored.status, IntentStatus::InProgress);
    assert_eq!(stored.fingerprint, first.fingerprint);
    assert_eq!(
        stored.expires_at,
        (first.at + Duration::hours(24)).timestamp()
    );
}

pub async fn accepted_answer_is_replayed_with_its_records(ledger: Ledger, payments: Payments) {
    let first = intent(Some("k1"), "254708000002", now());
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    let accepted = answer(202, "ok");
    let known = ledger
        .accepted(&first, &payment("ws_CO_A1", &first), &accepted)
        .await
        .unwrap();
    assert_eq!(
        known,
        Recorded::Pending,
        "no result yet: the payment is pending"
    );
    // A retried write whose first try landed (its answer lost) finds the same pending payment.
    let again = ledger
        .accepted(&first, &payment("ws_CO_A1", &first), &accepted)
        .await
        .unwrap();
    assert_eq!(again, Recorded::Pending);
    assert_eq!(
        begin(&ledger, &first).await,
        Begin::Replay(accepted.clone())
    );
    let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
    assert_eq!(stored.status, IntentStatus::Accepted);
    assert_eq!(stored.answer, Some(accepted));
    assert_eq!(stored.checkout_request_id.as_deref(), Some("ws_CO_A1"));
    let lock = ledger
        .phone_lock(first.phone(), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lock.checkout_request_id.as_deref(), Some("ws_CO_A1"));
    assert_eq!(lock.intent_pk, first.key.pk());
    let record = payments.get("ws_CO_A1").await.unwrap().unwrap();
    assert_eq!(record.status, PaymentStatus::Pending);
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.phone.as_deref(), Some("254708000002"));
    assert!(record.details_recorded);
}

pub async fn same_key_with_another_request_is_key_reused(ledger: Ledger, _: Payments) {
    let first = intent(Some("k1"), "254708000003", now());
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    let mut other = first.clone();
    other.fingerprint = "another".into();
    assert_eq!(begin(&ledger, &other).await, Begin::KeyReused);
    ledger
        .failed(&first, &Failure::Refused(answer(502, "no")), now())
        .await
        .unwrap();
    assert_eq!(begin(&ledger, &other).await, Begin::KeyReused);
}

pub async fn expired_key_is_forgotten(ledger: Ledger, _: Payments) {
    let old = intent(Some("k1"), "254708000004", now() - Duration::hours(25));
    assert_eq!(begin(&ledger, &old).await, Begin::Started);
    ledger
        .failed(&old, &Failure::Refused(answer(502, "no")), old.at)
        .await
        .unwrap();
    // TTL deletion lags: the item may still be there, but it counts as gone.
    assert_eq!(ledger.intent(&old.key, now()).await.unwrap(), None);
    let mut again = intent(Some("k1"), "254708000004", now());
    again.fingerprint = "a new request".into();
    assert_eq!(begin(&ledger, &again).await, Begin::Started);
}

pub async fn busy_phone_reports_the_open_checkout_id(ledger: Ledger, _: Payments) {
    let t = now();
    let first = intent(Some("k1"), "254708000005", t);
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    let second = intent(Some("k2"), "254708000005", t + Duration::seconds(1));
    assert_eq!(
        begin(&ledger, &second).await,
        Begin::PhoneBusy {
            checkout_request_id: None
        }
    );
    ledger
        .accepted(&first, &payment("ws_CO_B1", &first), &answer(202, "ok"))
        .await
        .unwrap();
    let third = intent(None, "254708000005", t + Duration::seconds(2));
    assert_eq!(
        begin(&ledger, &third).await,
        Begin::PhoneBusy {
            checkout_request_id: Some("ws_CO_B1".into())
        }
    );
    // Nothing was written for the refused ones: the key is still free.
    assert_eq!(ledger.intent(&second.key, t).await.unwrap(), None);
    let elsewhere = intent(Some("k2"), "254708000006", t + Duration::seconds(3));
    assert_eq!(begin(&ledger, &elsewhere).await, Begin::Started);
}

pub async fn a_final_failure_releases_only_its_own_phone_lock(ledger: Ledger, _: Payments) {
    let t = now();
    // With a key and without: the callback names its push by checkout id and URL nonce.
    for (key, phone) in [(Some("k1"), "254708000015"), (None, "254708000016")] {
        let first = intent(key, phone, t).with_callback_nonce(format!("nonce-1-{phone}"));
        let own = first.callback_nonce.as_deref();
        assert_eq!(begin(&ledger, &first).await, Begin::Started);
        ledger
            .accepted(&first, &payment("ws_CO_R1", &first), &answer(202, "ok"))
            .await
            .unwrap();
        // Another push's failure does not free the phone.
        assert!(!ledger
            .release_phone(phone, "ws_CO_OTHER", Some("nonce-other"))
            .await
            .unwrap());
        let retry_key = format!("k2-{phone}");
        let retry = intent(Some(&retry_key), phone, t + Duration::seconds(1))
            .with_callback_nonce(format!("nonce-2-{phone}"));
        assert!(matches!(
            begin(&ledger, &retry).await,
            Begin::PhoneBusy { .. }
        ));
        // Its own does: the customer who cancelled can pay at once.
        assert!(ledger.release_phone(phone, "ws_CO_R1", own).await.unwrap());
        assert_eq!(begin(&ledger, &retry).await, Begin::Started);
        // The new push's lock is not the old push's to release.
        assert!(!ledger.release_phone(phone, "ws_CO_R1", own).await.unwrap());
        assert!(ledger
            .phone_lock(phone, t + Duration::seconds(2))
            .await
            .unwrap()
            .is_some());
        if key.is_some() {
            // The first key still replays its answer.
            assert!(matches!(begin(&ledger, &first).await, Begin::Replay(_)));
        }
    }
}

pub async fn phone_lock_frees_after_its_window(ledger: Ledger, _: Payments) {
    let t = now() - Duration::seconds(2 * WINDOW);
    let first = intent(Some("k1"), "254708000007", t);
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    ledger
        .accepted(&first, &payment("ws_CO_C1", &first), &answer(202, "ok"))
        .await
        .unwrap();
    // The window counts from the intent, written just before the push is sent; the
    // acceptance does not extend it.
    let inside = intent(None, "254708000007", t + Duration::seconds(WINDOW - 1));
    assert_eq!(
        begin(&ledger, &inside).await,
        Begin::PhoneBusy {
            checkout_request_id: Some("ws_CO_C1".to_owned())
        }
    );
    let after = intent(None, "254708000007", t + Duration::seconds(WINDOW));
    assert_eq!(begin(&ledger, &after).await, Begin::Started);
}

pub async fn refusal_keeps_the_answer_and_frees_the_phone(ledger: Ledger, _: Payments) {
    let first = intent(Some("k1"), "254708000008", now());
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    let refused = answer(502, "daraja_rejected");
    ledger
        .failed(&first, &Failure::Refused(refused.clone()), now())
        .await
        .unwrap();
    assert_eq!(begin(&ledger, &first).await, Begin::Replay(refused));
    assert_eq!(ledger.phone_lock(first.phone(), now()).await.unwrap(), None);
    let next = intent(Some("k2"), "254708000008", now());
    assert_eq!(begin(&ledger, &next).await, Begin::Started);
    let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
    assert_eq!(stored.status, IntentStatus::Refused);
}

pub async fn retryable_failure_forgets_the_key_and_frees_the_phone(ledger: Ledger, _: Payments) {
    let first = intent(Some("k1"), "254708000009", now());
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    ledger
        .failed(&first, &Failure::Retryable, now())
        .await
        .unwrap();
    assert_eq!(ledger.intent(&first.key, now()).await.unwrap(), None);
    assert_eq!(ledger.phone_lock(first.phone(), now()).await.unwrap(), None);
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
}

pub async fn outcome_unknown_keeps_the_phone_locked(ledger: Ledger, _: Payments) {
    let t = now() - Duration::seconds(3 * WINDOW);
    let first = intent(Some("k1"), "254708000010", t);
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    let unknown = answer(504, "daraja_timeout");
    let known_at = t + Duration::seconds(15);
    ledger
        .failed(&first, &Failure::OutcomeUnknown(unknown.clone()), known_at)
        .await
        .unwrap();
    assert_eq!(begin(&ledger, &first).await, Begin::Replay(unknown));
    let stored = ledger.intent(&first.key, now()).await.unwrap().unwrap();
    assert_eq!(stored.status, IntentStatus::OutcomeUnknown);
    // Locked for a whole window from when the timeout was seen, not from the start.
    let inside = intent(
        None,
        "254708000010",
        known_at + Duration::seconds(WINDOW - 1),
    );
    assert_eq!(
        begin(&ledger, &inside).await,
        Begin::PhoneBusy {
            checkout_request_id: None
        }
    );
    let after = intent(None, "254708000010", known_at + Duration::seconds(WINDOW));
    assert_eq!(begin(&ledger, &after).await, Begin::Started);
}

pub async fn abandoned_in_progress_key_answers_outcome_unknown(ledger: Ledger, _: Payments) {
    let t = now() - Duration::seconds(3 * WINDOW);
    let first = intent(Some("k1"), "254708000014", t);
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    // The push that wrote the intent never settled it (its process died).
    let mut retry = first.clone();
    retry.at = t + ABANDONED_AFTER - Duration::seconds(1);
    assert_eq!(begin(&ledger, &retry).await, Begin::InProgress);
    retry.at = t + ABANDONED_AFTER;
    // Never `Started`: a second push could prompt the customer twice. The answer it gets
    // (the outcome-unknown 504) is the push service's to render, and is tested there.
    assert_eq!(
        begin(&ledger, &retry).await,
        Begin::Abandoned,
        "an abandoned key must be answered as outcome unknown, never start a second push"
    );
    // Another request under the key is still refused as such.
    let mut other = retry.clone();
    other.fingerprint = "fp-other".to_owned();
    assert_eq!(begin(&ledger, &other).await, Begin::KeyReused);
    // The phone stays protected by its own lock, whatever the key answers.
    let elsewhere = intent(Some("k2"), "254708000014", retry.at);
    assert_eq!(
        begin(&ledger, &elsewhere).await,
        Begin::PhoneBusy {
            checkout_request_id: None
        }
    );
    // The intent itself is not rewritten: a push that was only slow still settles it,
    // and its own answer is replayed from then on.
    let stored = ledger.intent(&first.key, retry.at).await.unwrap().unwrap();
    assert_eq!(stored.status, IntentStatus::InProgress);
    let accepted = answer(202, "ok");
    ledger
        .accepted(&first, &payment("ws_CO_E1", &first), &accepted)
        .await
        .unwrap();
    retry.at += Duration::seconds(1);
    assert_eq!(begin(&ledger, &retry).await, Begin::Replay(accepted));
}

pub async fn concurrent_begins_with_one_key_start_once(ledger: Ledger, _: Payments) {
    let one = intent(Some("k1"), "254708000011", now());
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (ledger, one) = (ledger.clone(), one.clone());
            tokio::spawn(async move { ledger.begin(&one).await })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Begin::Started => started += 1,
            Begin::InProgress => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}

pub async fn concurrent_begins_on_one_phone_start_once(ledger: Ledger, _: Payments) {
    let t = now();
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ledger = ledger.clone();
            let each = intent(None, "254708000012", t);
            tokio::spawn(async move { ledger.begin(&each).await })
        })
        .collect();
    let mut started = 0;
    for task in tasks {
        match task.await.unwrap().unwrap() {
            Begin::Started => started += 1,
            Begin::PhoneBusy { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(started, 1);
}

pub async fn accepted_after_the_callback_keeps_the_result(ledger: Ledger, payments: Payments) {
    let first = intent(Some("k1"), "254708000013", now());
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    payments
        .apply_result(&success("ws_CO_D1", "100.00", Some(100)))
        .await
        .unwrap();
    let accepted = answer(202, "ok");
    let known = ledger
        .accepted(&first, &payment("ws_CO_D1", &first), &accepted)
        .await
        .unwrap();
    assert_eq!(known, Recorded::ResultKnown(PaymentStatus::Completed));
    let record = payments.get("ws_CO_D1").await.unwrap().unwrap();
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.amount, Some(100));
    assert!(record.details_recorded);
    assert!(payments.orphans(10).await.unwrap().is_empty());
    assert_eq!(begin(&ledger, &first).await, Begin::Replay(accepted));
    let lock = ledger
        .phone_lock(first.phone(), now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(lock.checkout_request_id.as_deref(), Some("ws_CO_D1"));
}

/// The push accepted after a success callback for another amount: the record turns
/// `NEEDS_REVIEW`, and `accepted` says so (the push service counts it).
pub async fn accepted_after_a_short_callback_needs_review(ledger: Ledger, payments: Payments) {
    let first = intent(Some("k1"), "254708000015", now());
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    payments
        .apply_result(&success("ws_CO_F1", "1.00", Some(1)))
        .await
        .unwrap();
    let known = ledger
        .accepted(&first, &payment("ws_CO_F1", &first), &answer(202, "ok"))
        .await
        .unwrap();
    assert_eq!(known, Recorded::FlaggedForReview);
    let record = payments.get("ws_CO_F1").await.unwrap().unwrap();
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(
        record.review_reason,
        Some(crate::payment::ReviewReason::AmountMismatch)
    );
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.amount_paid_whole, Some(1));

    // A success that cannot be checked was under review before the push was recorded: the
    // push finds it so (and does not count it a second time).
    let second = intent(Some("k2"), "254708000016", now());
    assert_eq!(begin(&ledger, &second).await, Begin::Started);
    let mut no_receipt = success("ws_CO_F2", "100", Some(100));
    no_receipt.receipt = None;
    payments.apply_result(&no_receipt).await.unwrap();
    let known = ledger
        .accepted(&second, &payment("ws_CO_F2", &second), &answer(202, "ok"))
        .await
        .unwrap();
    assert_eq!(known, Recorded::ResultKnown(PaymentStatus::NeedsReview));
}

/// Safaricom's result for `id`, a checkout id nobody recorded, arrives at `t + 20 s` and is linked
/// to the push in doubt `found` a second later: the orphan gains the merchant's details and its
/// amount check, and the phone lock names `id`. What was linked, the answer, and when.
async fn link_revealed(
    ledger: &Ledger,
    payments: &Payments,
    found: &crate::intent::IntentRecord,
    id: &str,
    t: DateTime<Utc>,
) -> (NewPayment, StoredAnswer, DateTime<Utc>) {
    let mut result = success(id, "100", Some(100));
    result.received_at = t + Duration::seconds(20);
    payments.apply_result(&result).await.unwrap();
    let linked = NewPayment {
        checkout_request_id: id.to_owned(),
        merchant_request_id: result.merchant_request_id.clone(),
        charge: found.charge().unwrap(),
        created_at: found.created_at,
        callback_nonce: None,
        created_by: None,
    };
    let replay = crate::intent::accepted_answer(id, "m-1", "Success");
    let at = t + Duration::seconds(21);
    let written = ledger
        .link(found, &linked, &replay, at)
        .await
        .unwrap()
        .expect("linked");
    assert_eq!(written.record().status, PaymentStatus::Completed);
    let record = payments.get(id).await.unwrap().unwrap();
    assert!(record.details_recorded);
    assert_eq!(record.amount, Some(100));
    let lock = ledger
        .phone_lock(&found.phone, at)
        .await
        .unwrap()
        .expect("locked");
    assert_eq!(lock.checkout_request_id.as_deref(), Some(id));
    (linked, replay, at)
}

/// A push whose acceptance was never recorded is found through its phone's lock once its
/// function's deadline has passed (or at once when its outcome is unknown), and linked to the
/// payment a result revealed: the orphan gains the merchant's details, the key replays the
/// `202` with the checkout id, the lock names it. A settled or changed intent is never linked.
pub async fn an_orphan_result_links_to_the_push_in_doubt_on_its_phone(
    ledger: Ledger,
    payments: Payments,
) {
    let t = now();
    let first = intent(Some("k-doubt"), "254708374149", t).settled_by(t + Duration::seconds(10));
    assert_eq!(ledger.begin(&first).await.unwrap(), Begin::Started);
    let in_doubt = |at| {
        let ledger = ledger.clone();
        async move { ledger.in_doubt_for_phone("254708374149", at).await.unwrap() }
    };
    assert_eq!(
        in_doubt(t + Duration::seconds(5)).await,
        None,
        "still running"
    );
    let found = in_doubt(t + Duration::seconds(16))
        .await
        .expect("in doubt past its deadline");
    assert_eq!(found.pk, first.key.pk());
    assert_eq!(found.charge().unwrap(), first.charge);

    let (linked, replay, at) = link_revealed(&ledger, &payments, &found, "ws_CO_LINKED", t).await;
    assert_eq!(
        payments
            .get("ws_CO_LINKED")
            .await
            .unwrap()
            .unwrap()
            .reference
            .as_deref(),
        Some("INV001")
    );
    assert!(payments.orphans(10).await.unwrap().is_empty());
    let settled = ledger
        .intent(&first.key, at)
        .await
        .unwrap()
        .expect("intent");
    assert_eq!(settled.status, IntentStatus::Accepted);
    assert_eq!(settled.checkout_request_id.as_deref(), Some("ws_CO_LINKED"));
    assert_eq!(settled.answer, Some(replay.clone()));
    // Settled now: never found again, and the stale copy links nothing.
    assert_eq!(in_doubt(at).await, None);
    assert_eq!(
        ledger.link(&found, &linked, &replay, at).await.unwrap(),
        None
    );

    // An outcome-unknown push is in doubt at once; a refused one never.
    let unknown = intent(Some("k-unknown"), "254708374150", t);
    ledger.begin(&unknown).await.unwrap();
    ledger
        .failed(
            &unknown,
            &Failure::OutcomeUnknown(answer(504, "daraja_timeout")),
            t,
        )
        .await
        .unwrap();
    let found = ledger
        .in_doubt_for_phone("254708374150", t)
        .await
        .unwrap()
        .expect("outcome unknown is in doubt");
    assert_eq!(found.status, IntentStatus::OutcomeUnknown);
    let refused = intent(Some("k-refused"), "254708374151", t);
    ledger.begin(&refused).await.unwrap();
    ledger
        .failed(
            &refused,
            &Failure::Refused(answer(502, "daraja_rejected")),
            t,
        )
        .await
        .unwrap();
    assert_eq!(
        ledger
            .in_doubt_for_phone("254708374151", t + Duration::hours(1))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        ledger.in_doubt_for_phone("254700000000", t).await.unwrap(),
        None
    );
}

/// An accepted push, with a key or without, is never taken for a push in doubt, however long
/// after its deadline: its acceptance is recorded (on its payment), so no result is linked to it.
pub async fn an_accepted_push_is_never_in_doubt(ledger: Ledger, payments: Payments) {
    let t = now();
    for (key, phone, id) in [
        (Some("k-ok"), "254708000021", "ws_CO_OK1"),
        (None, "254708000022", "ws_CO_OK2"),
    ] {
        let push = intent(key, phone, t).settled_by(t + Duration::seconds(10));
        assert_eq!(begin(&ledger, &push).await, Begin::Started);
        ledger
            .accepted(&push, &payment(id, &push), &answer(202, "ok"))
            .await
            .unwrap();
        assert_eq!(
            ledger
                .in_doubt_for_phone(phone, t + Duration::seconds(60))
                .await
                .unwrap(),
            None,
            "{id} was accepted"
        );
        assert_eq!(
            payments.get(id).await.unwrap().unwrap().status,
            PaymentStatus::Pending
        );
    }
}

/// Without a key the phone lock is the whole intent: a refusal or a retryable failure frees the
/// phone, an unknown outcome keeps it locked and in doubt at once, and a push stopped mid-way is
/// found through the lock past its deadline and linked to the result that reveals it.
pub async fn a_push_without_a_key_keeps_every_rule_on_its_phone_lock(
    ledger: Ledger,
    payments: Payments,
) {
    let t = now();
    for failure in [
        Failure::Refused(answer(502, "daraja_rejected")),
        Failure::Retryable,
    ] {
        let push = intent(None, "254708000031", t);
        assert_eq!(begin(&ledger, &push).await, Begin::Started);
        assert_eq!(ledger.intent(&push.key, t).await.unwrap(), None);
        ledger.failed(&push, &failure, t).await.unwrap();
        assert_eq!(ledger.phone_lock(push.phone(), t).await.unwrap(), None);
    }

    let unknown = intent(None, "254708000032", t);
    assert_eq!(begin(&ledger, &unknown).await, Begin::Started);
    let known_at = t + Duration::seconds(5);
    ledger
        .failed(
            &unknown,
            &Failure::OutcomeUnknown(answer(504, "daraja_timeout")),
            known_at,
        )
        .await
        .unwrap();
    let found = ledger
        .in_doubt_for_phone(unknown.phone(), known_at)
        .await
        .unwrap()
        .expect("an unknown outcome is in doubt at once");
    assert_eq!(found.status, IntentStatus::OutcomeUnknown);
    assert_eq!(found.pk, unknown.key.pk());
    let again = intent(
        None,
        "254708000032",
        known_at + Duration::seconds(WINDOW - 1),
    );
    assert!(matches!(
        begin(&ledger, &again).await,
        Begin::PhoneBusy { .. }
    ));

    let stopped = intent(None, "254708374152", t).settled_by(t + Duration::seconds(10));
    assert_eq!(begin(&ledger, &stopped).await, Begin::Started);
    assert_eq!(
        ledger
            .in_doubt_for_phone("254708374152", t + Duration::seconds(5))
            .await
            .unwrap(),
        None,
        "still running"
    );
    let found = ledger
        .in_doubt_for_phone("254708374152", t + Duration::seconds(16))
        .await
        .unwrap()
        .expect("in doubt past its deadline");
    assert_eq!(found.pk, stopped.key.pk());
    assert_eq!(found.charge().unwrap(), stopped.charge);
    let (linked, replay, at) = link_revealed(&ledger, &payments, &found, "ws_CO_NOKEY", t).await;
    assert_eq!(
        ledger.in_doubt_for_phone("254708374152", at).await.unwrap(),
        None
    );
    assert_eq!(
        ledger.link(&found, &linked, &replay, at).await.unwrap(),
        None,
        "the stale copy links nothing"
    );
}

/// A retry with the key whose own `begin` failed (its write timed out, or reading what the key
/// holds failed) is undone as retryable; that undo removes only that call's own write, never the
/// intent and lock of the call that pushed, in progress or accepted: a later retry still finds
/// them, and no second prompt is sent.
pub async fn a_retry_whose_begin_failed_never_takes_back_the_first_call(
    ledger: Ledger,
    _: Payments,
) {
    let t = now();
    let first = intent(Some("k-undo"), "254708000041", t).with_callback_nonce("nonce-first");
    assert_eq!(begin(&ledger, &first).await, Begin::Started);
    let retry = intent(Some("k-undo"), "254708000041", t + Duration::seconds(1))
        .with_callback_nonce("nonce-retry");
    ledger
        .failed(&retry, &Failure::Retryable, retry.at)
        .await
        .unwrap();
    assert_eq!(begin(&ledger, &retry).await, Begin::InProgress);
    assert!(ledger
        .phone_lock(first.phone(), retry.at)
        .await
        .unwrap()
        .is_some());
    let accepted = answer(202, "ok");
    ledger
        .accepted(&first, &payment("ws_CO_U1", &first), &accepted)
        .await
        .unwrap();
    ledger
        .failed(&retry, &Failure::Retryable, retry.at)
        .await
        .unwrap();
    assert_eq!(begin(&ledger, &retry).await, Begin::Replay(accepted));
    assert!(ledger
        .phone_lock(first.phone(), retry.at)
        .await
        .unwrap()
        .is_some());
}
