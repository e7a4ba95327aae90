//! The behaviour every [`PaymentStore`] must show, written once and run against each
//! implementation so they cannot drift: the in-memory store in this crate's unit tests,
//! DynamoDB in the integration tests.
//!
//! Use [`payment_store_conformance!`](crate::payment_store_conformance) with an async
//! function that returns a fresh, empty store; it expands to one `#[tokio::test]` per rule.
//! Each function here panics when the store breaks its rule.

pub mod ledger;

use chrono::{DateTime, Duration, Utc};
use daraja::{AccountReference, Amount, Charge, PhoneNumber, ResultCode, TransactionDesc};

use crate::payment::{
    timestamp, NewPayment, PaymentRecord, PaymentResult, PaymentStatus, ResultSource,
};
use crate::store::{Applied, PaymentStore, PendingWrite};

/// Expands to one `#[tokio::test]` per conformance rule, each on a store from `$make`
/// (an async fn returning a fresh store). The calling crate needs `tokio` with `macros`.
#[macro_export]
macro_rules! payment_store_conformance {
    ($make:path) => {
        $crate::payment_store_conformance!(@rules $make;
            pending_write_creates_pending_record,
            repeated_pending_write_stays_pending,
            success_after_pending_completes,
            each_failure_after_pending_fails,
            success_before_pending_converges,
            failure_before_pending_converges,
            duplicate_result_is_counted_and_changes_nothing,
            conflicting_result_is_kept_in_history,
            query_result_never_overwrites_completed,
            query_result_never_overwrites_failed,
            query_success_completes_pending,
            success_callback_after_query_completion_adds_receipt,
            short_callback_after_query_completion_needs_review,
            callback_after_query_never_changes_failed_or_mismatched,
            concurrent_callbacks_after_query_completion_enrich_once,
            callback_after_query_and_pending_write_converge,
            amount_mismatch_needs_review_with_both_amounts,
            amount_mismatch_result_first_needs_review,
            orphan_listed_until_pending_write,
            pending_index_lists_only_old_pending,
            query_attempts_counted_only_while_pending,
            expire_moves_only_pending,
            late_result_after_expiry_applies,
            concurrent_duplicate_results_transition_once,
            concurrent_conflicting_results_transition_once,
            concurrent_result_and_pending_write_converge,
            unknown_payment_is_none,
        );
    };
    (@rules $make:path; $($rule:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $rule() {
                let store = $make().await;
                $crate::conformance::$rule(&store).await;
            }
        )*
    };
}

const CREATED: &str = "2024-05-01T10:00:00.000Z";

/// Fixed test times: `at(0)` is when [`payment`] is created, `at(30)` when [`success`]
/// and [`failure`] are received.
pub fn at(seconds_after_creation: i64) -> DateTime<Utc> {
    let created = timestamp::parse(CREATED).unwrap_or_else(|e| panic!("bad test time: {e}"));
    created + Duration::seconds(seconds_after_creation)
}

/// A charge of `amount` KES to `phone`, reference `INV001`, description `Order 1`.
pub fn charge(phone: &str, amount: u32) -> Charge {
    Charge {
        phone: PhoneNumber::parse(phone).unwrap_or_else(|e| panic!("test phone {phone}: {e}")),
        amount: Amount::new(amount.into()).unwrap_or_else(|e| panic!("test amount: {e}")),
        reference: AccountReference::parse("INV001").expect("test reference"),
        description: TransactionDesc::parse("Order 1").expect("test description"),
    }
}

/// A pending write for `id`, created at `at(0)`.
pub fn payment(id: &str, amount: u32) -> NewPayment {
    NewPayment {
        checkout_request_id: id.to_owned(),
        merchant_request_id: "29115-34620561-1".to_owned(),
        charge: charge("254708374149", amount),
        created_at: at(0),
    }
}

/// A success callback for `id` (receipt `NLJ7RT61SV`), received at `at(30)`.
pub fn success(id: &str, paid: &str, paid_whole: Option<u64>) -> PaymentResult {
    PaymentResult {
        checkout_request_id: id.to_owned(),
        merchant_request_id: "29115-34620561-1".to_owned(),
        result_code: ResultCode::success(),
        result_desc: "The service request is processed successfully.".to_owned(),
        receipt: Some("NLJ7RT61SV".to_owned()),
        amount_paid: Some(paid.to_owned()),
        amount_paid_whole: paid_whole,
        paying_phone: Some("254708374149".to_owned()),
        transaction_date: Some("20240501100030".to_owned()),
        raw: Some(r#"{"Body":{"stkCallback":{"ResultCode":0}}}"#.to_owned()),
        source: ResultSource::Callback,
        received_at: at(30),
    }
}

/// A failure callback for `id`, received at `at(30)`.
pub fn failure(id: &str, code: &str, desc: &str) -> PaymentResult {
    PaymentResult {
        checkout_request_id: id.to_owned(),
        merchant_request_id: "29115-34620561-1".to_owned(),
        result_code: ResultCode::from_text(code),
        result_desc: desc.to_owned(),
        receipt: None,
        amount_paid: None,
        amount_paid_whole: None,
        paying_phone: None,
        transaction_date: None,
        raw: Some(format!(
            r#"{{"Body":{{"stkCallback":{{"ResultCode":"{code}"}}}}}}"#
        )),
        source: ResultSource::Callback,
        received_at: at(30),
    }
}

/// Result 1032, cancelled by the customer.
pub fn cancelled(id: &str) -> PaymentResult {
    failure(id, "1032", "Request cancelled by user")
}

/// The same result as an STK query reports it: a code and a description, nothing else.
pub fn queried(mut result: PaymentResult) -> PaymentResult {
    result.source = ResultSource::Query;
    result.receipt = None;
    result.amount_paid = None;
    result.amount_paid_whole = None;
    result.paying_phone = None;
    result.transaction_date = None;
    result.raw = None;
    result.received_at = at(300);
    result
}

/// A record with what legitimately differs between two payments (id, write time) blanked.
fn comparable(mut record: PaymentRecord) -> PaymentRecord {
    record.checkout_request_id = String::from("*");
    record.updated_at = DateTime::<Utc>::UNIX_EPOCH;
    record
}

async fn stored(store: &dyn PaymentStore, id: &str) -> PaymentRecord {
    match store.get(id).await {
        Ok(Some(record)) => record,
        Ok(None) => panic!("payment {id} is not stored"),
        Err(e) => panic!("get {id}: {e}"),
    }
}

async fn pending(store: &dyn PaymentStore, p: &NewPayment) -> PendingWrite {
    store
        .record_pending(p)
        .await
        .unwrap_or_else(|e| panic!("record_pending {}: {e}", p.checkout_request_id))
}

async fn apply(store: &dyn PaymentStore, r: &PaymentResult) -> Applied {
    store
        .apply_result(r)
        .await
        .unwrap_or_else(|e| panic!("apply_result {}: {e}", r.checkout_request_id))
}

async fn all_pending(store: &dyn PaymentStore) -> Vec<String> {
    store
        .pending_older_than(at(86_400), 100)
        .await
        .unwrap_or_else(|e| panic!("pending_older_than: {e}"))
}

async fn orphan_ids(store: &dyn PaymentStore) -> Vec<String> {
    store
        .orphans(100)
        .await
        .unwrap_or_else(|e| panic!("orphans: {e}"))
        .into_iter()
        .map(|r| r.checkout_request_id)
        .collect()
}

fn transitioned(applied: Applied) -> (PaymentRecord, bool) {
    match applied {
        Applied::Transitioned { record, orphan } => (record, orphan),
        other => panic!("expected a transition, got {other:?}"),
    }
}

pub async fn pending_write_creates_pending_record(store: &dyn PaymentStore) {
    let p = payment("ws_CO_pending", 100);
    let PendingWrite::Created(record) = pending(store, &p).await else {
        panic!("a first pending write must create the record");
    };
    assert_eq!(record, stored(store, "ws_CO_pending").await);
    assert_eq!(record.status, PaymentStatus::Pending);
    assert_eq!(
        record.merchant_request_id.as_deref(),
        Some("29115-34620561-1")
    );
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.phone.as_deref(), Some("254708374149"));
    assert_eq!(record.reference.as_deref(), Some("INV001"));
    assert_eq!(record.description.as_deref(), Some("Order 1"));
    assert_eq!(record.created_at, Some(at(0)));
    assert!(record.details_recorded);
    assert_eq!(record.completed_at, None);
    assert_eq!(record.result_code, None);
    assert_eq!(all_pending(store).await, vec!["ws_CO_pending".to_owned()]);
    assert!(orphan_ids(store).await.is_empty());
}

pub async fn repeated_pending_write_stays_pending(store: &dyn PaymentStore) {
    let p = payment("ws_CO_twice", 100);
    pending(store, &p).await;
    store
        .record_query_attempt("ws_CO_twice")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = pending(store, &p).await;
    assert!(matches!(again, PendingWrite::Created(_)), "{again:?}");
    let record = stored(store, "ws_CO_twice").await;
    assert_eq!(record.status, PaymentStatus::Pending);
    assert_eq!(record.query_attempts, 1, "a repeated write keeps counters");
    assert_eq!(all_pending(store).await, vec!["ws_CO_twice".to_owned()]);
}

pub async fn success_after_pending_completes(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_ok", 100)).await;
    let r = success("ws_CO_ok", "100.00", Some(100));
    let (record, created_orphan) = transitioned(apply(store, &r).await);
    assert!(!created_orphan);
    assert_eq!(record, stored(store, "ws_CO_ok").await);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.outcome.as_deref(), Some("success"));
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
    assert_eq!(record.amount_paid.as_deref(), Some("100.00"));
    assert_eq!(record.amount_paid_whole, Some(100));
    assert_eq!(record.paying_phone.as_deref(), Some("254708374149"));
    assert_eq!(record.transaction_date.as_deref(), Some("20240501100030"));
    assert_eq!(record.raw_callback, r.raw);
    assert_eq!(record.completed_at, Some(at(30)));
    assert_eq!(record.reconciled_by, Some(ResultSource::Callback));
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.created_at, Some(at(0)));
    assert!(record.details_recorded);
    assert!(all_pending(store).await.is_empty());
    assert!(orphan_ids(store).await.is_empty());
}

pub async fn each_failure_after_pending_fails(store: &dyn PaymentStore) {
    let failures = [
        (
            "1",
            "The balance is insufficient for the transaction.",
            "insufficient_funds",
        ),
        ("1032", "Request cancelled by user", "cancelled"),
        ("1037", "DS timeout user cannot be reached", "unreachable"),
        ("2001", "The initiator information is invalid.", "wrong_pin"),
        ("1019", "Transaction has expired", "expired"),
        ("SFC_IC0003", "Operator does not exist", "not_permitted"),
    ];
    for (code, desc, outcome) in failures {
        let id = format!("ws_CO_fail_{code}");
        pending(store, &payment(&id, 100)).await;
        let (record, created_orphan) = transitioned(apply(store, &failure(&id, code, desc)).await);
        assert!(!created_orphan);
        assert_eq!(record.status, PaymentStatus::Failed, "code {code}");
        assert_eq!(record.result_code.as_deref(), Some(code));
        assert_eq!(record.result_desc.as_deref(), Some(desc));
        assert_eq!(record.outcome.as_deref(), Some(outcome));
        assert_eq!(record.receipt, None);
        assert_eq!(record.amount_paid, None);
        assert_eq!(record.completed_at, Some(at(30)));
        assert_eq!(record, stored(store, &id).await);
    }
    assert!(all_pending(store).await.is_empty());
}

async fn converges(store: &dyn PaymentStore, result: fn(&str) -> PaymentResult) {
    pending(store, &payment("ws_CO_in_order", 100)).await;
    apply(store, &result("ws_CO_in_order")).await;

    let (early, created_orphan) = transitioned(apply(store, &result("ws_CO_reversed")).await);
    assert!(
        created_orphan,
        "a result before its pending write is an orphan"
    );
    assert!(!early.details_recorded);
    assert_eq!(early.amount, None);
    let late = pending(store, &payment("ws_CO_reversed", 100)).await;
    let PendingWrite::ResultAlreadyKnown(late) = late else {
        panic!("the pending write must see the earlier result, got {late:?}");
    };
    assert_ne!(late.status, PaymentStatus::Pending);
    assert_eq!(late, stored(store, "ws_CO_reversed").await);

    assert_eq!(
        comparable(stored(store, "ws_CO_reversed").await),
        comparable(stored(store, "ws_CO_in_order").await),
    );
    assert!(
        all_pending(store).await.is_empty(),
        "a final record left the pending index"
    );
    assert!(orphan_ids(store).await.is_empty());
}

pub async fn success_before_pending_converges(store: &dyn PaymentStore) {
    converges(store, |id| success(id, "100", Some(100))).await;
    let record = stored(store, "ws_CO_reversed").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
}

pub async fn failure_before_pending_converges(store: &dyn PaymentStore) {
    converges(store, cancelled).await;
    let record = stored(store, "ws_CO_reversed").await;
    assert_eq!(record.status, PaymentStatus::Failed);
    assert_eq!(record.result_code.as_deref(), Some("1032"));
}

pub async fn duplicate_result_is_counted_and_changes_nothing(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_dup", 100)).await;
    let r = success("ws_CO_dup", "100", Some(100));
    let (first, _) = transitioned(apply(store, &r).await);

    let mut again = r.clone();
    again.received_at = at(45);
    let Applied::Duplicate(record) = apply(store, &again).await else {
        panic!("the same result twice must be a duplicate");
    };
    assert_eq!(record.duplicate_callbacks, 1);
    assert_eq!(record, stored(store, "ws_CO_dup").await);
    let mut expected = first.clone();
    expected.duplicate_callbacks = 1;
    assert_eq!(comparable(record), comparable(expected));

    let Applied::Duplicate(record) = apply(store, &again).await else {
        panic!("a third delivery is a duplicate too");
    };
    assert_eq!(record.duplicate_callbacks, 2);
    assert_eq!(record.completed_at, first.completed_at);
    assert!(record.history.is_empty());
}

pub async fn conflicting_result_is_kept_in_history(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_conflict", 100)).await;
    let (first, _) = transitioned(apply(store, &success("ws_CO_conflict", "100", Some(100))).await);

    let mut contradiction = cancelled("ws_CO_conflict");
    contradiction.received_at = at(60);
    let Applied::Conflict(record) = apply(store, &contradiction).await else {
        panic!("a different result on a final record is a conflict");
    };
    assert_eq!(record, stored(store, "ws_CO_conflict").await);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.result_code, first.result_code);
    assert_eq!(record.receipt, first.receipt);
    assert_eq!(record.raw_callback, first.raw_callback);
    assert_eq!(record.completed_at, first.completed_at);
    assert_eq!(record.conflicting_callbacks, 1);
    assert_eq!(record.duplicate_callbacks, 0);
    assert_eq!(record.history, vec![contradiction.history_entry()]);
    assert_eq!(record.history[0].result_code, "1032");
    assert_eq!(record.history[0].received_at, at(60));
    assert_eq!(record.history[0].source, ResultSource::Callback);
    assert_eq!(record.history[0].raw, contradiction.raw);

    // Another receipt for the same id would be a second payment: never merged.
    let mut other_receipt = success("ws_CO_conflict", "100", Some(100));
    other_receipt.receipt = Some("QWE1RT2YU3".to_owned());
    let Applied::Conflict(record) = apply(store, &other_receipt).await else {
        panic!("a success with another receipt is a conflict");
    };
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
    assert_eq!(record.conflicting_callbacks, 2);
    assert_eq!(record.history.len(), 2);
    assert_eq!(record.history[1].receipt.as_deref(), Some("QWE1RT2YU3"));
}

pub async fn query_result_never_overwrites_completed(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_done", 100)).await;
    let (first, _) = transitioned(apply(store, &success("ws_CO_q_done", "100", Some(100))).await);

    // The sandbox query has reported failure for payments whose callback said success.
    let applied = apply(store, &queried(cancelled("ws_CO_q_done"))).await;
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");
    let record = stored(store, "ws_CO_q_done").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.reconciled_by, Some(ResultSource::Callback));
    assert_eq!(record.completed_at, first.completed_at);
    assert_eq!(record.conflicting_callbacks, 0, "a query is not a callback");
    assert_eq!(record.history.len(), 1);
    assert_eq!(record.history[0].source, ResultSource::Query);

    let applied = apply(store, &queried(success("ws_CO_q_done", "100", Some(100)))).await;
    assert!(matches!(applied, Applied::Duplicate(_)), "{applied:?}");
    let record = stored(store, "ws_CO_q_done").await;
    assert_eq!(record.duplicate_callbacks, 0, "a query is not a callback");
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
}

pub async fn query_result_never_overwrites_failed(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_failed", 100)).await;
    apply(store, &cancelled("ws_CO_q_failed")).await;
    let applied = apply(store, &queried(success("ws_CO_q_failed", "100", Some(100)))).await;
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");
    let record = stored(store, "ws_CO_q_failed").await;
    assert_eq!(record.status, PaymentStatus::Failed);
    assert_eq!(record.result_code.as_deref(), Some("1032"));
    assert_eq!(record.history.len(), 1);
}

pub async fn query_success_completes_pending(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_ok", 100)).await;
    let (record, created_orphan) =
        transitioned(apply(store, &queried(success("ws_CO_q_ok", "100", Some(100)))).await);
    assert!(!created_orphan);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.reconciled_by, Some(ResultSource::Query));
    assert_eq!(record.receipt, None, "a query reports no receipt");
    assert_eq!(record.completed_at, Some(at(300)));
    assert_eq!(record, stored(store, "ws_CO_q_ok").await);
}

pub async fn success_callback_after_query_completion_adds_receipt(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_rcpt", 100)).await;
    let (by_query, _) =
        transitioned(apply(store, &queried(success("ws_CO_q_rcpt", "100", Some(100)))).await);

    // The callback arrives after the query settled the payment: same result, more detail.
    let mut late = success("ws_CO_q_rcpt", "100.00", Some(100));
    late.received_at = at(400);
    let (record, created_orphan) = transitioned(apply(store, &late).await);
    assert!(!created_orphan);
    assert_eq!(record, stored(store, "ws_CO_q_rcpt").await);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
    assert_eq!(record.amount_paid.as_deref(), Some("100.00"));
    assert_eq!(record.amount_paid_whole, Some(100));
    assert_eq!(record.paying_phone.as_deref(), Some("254708374149"));
    assert_eq!(record.transaction_date.as_deref(), Some("20240501100030"));
    assert_eq!(record.raw_callback, late.raw);
    // The query decided the outcome; the callback only filled in what a query cannot report.
    assert_eq!(record.reconciled_by, Some(ResultSource::Query));
    assert_eq!(record.completed_at, by_query.completed_at);
    assert_eq!(record.result_desc, by_query.result_desc);
    assert_eq!(
        (record.duplicate_callbacks, record.conflicting_callbacks),
        (0, 0)
    );
    assert!(record.history.is_empty());

    // The same callback delivered again is a duplicate now that the receipt is known.
    let Applied::Duplicate(record) = apply(store, &late).await else {
        panic!("the enriching callback delivered again must be a duplicate");
    };
    assert_eq!(record.duplicate_callbacks, 1);

    // Another receipt never replaces the one stored.
    let mut other = late.clone();
    other.receipt = Some("QWE1RT2YU3".to_owned());
    let Applied::Conflict(record) = apply(store, &other).await else {
        panic!("a success with another receipt is a conflict");
    };
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
    assert_eq!(record.conflicting_callbacks, 1);
    assert_eq!(record.history.len(), 1);
}

pub async fn short_callback_after_query_completion_needs_review(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_short", 100)).await;
    apply(store, &queried(success("ws_CO_q_short", "100", Some(100)))).await;
    let (record, _) = transitioned(apply(store, &success("ws_CO_q_short", "1.00", Some(1))).await);
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.amount_paid.as_deref(), Some("1.00"));
    assert_eq!(record.amount_paid_whole, Some(1));
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
    assert_eq!(record, stored(store, "ws_CO_q_short").await);
}

pub async fn callback_after_query_never_changes_failed_or_mismatched(store: &dyn PaymentStore) {
    // A query that reported failure: a success callback contradicts it.
    pending(store, &payment("ws_CO_q_fail", 100)).await;
    apply(store, &queried(cancelled("ws_CO_q_fail"))).await;
    let applied = apply(store, &success("ws_CO_q_fail", "100", Some(100))).await;
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");
    let record = stored(store, "ws_CO_q_fail").await;
    assert_eq!(record.status, PaymentStatus::Failed);
    assert_eq!(record.receipt, None);
    assert_eq!(record.amount_paid, None);
    assert_eq!(record.conflicting_callbacks, 1);

    // A query that reported success: a failure callback contradicts it.
    pending(store, &payment("ws_CO_q_ok_fail", 100)).await;
    apply(
        store,
        &queried(success("ws_CO_q_ok_fail", "100", Some(100))),
    )
    .await;
    let applied = apply(store, &cancelled("ws_CO_q_ok_fail")).await;
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");
    let record = stored(store, "ws_CO_q_ok_fail").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.receipt, None);

    // A success the callback itself completed is never enriched by another success.
    pending(store, &payment("ws_CO_cb_ok", 100)).await;
    let mut no_receipt = success("ws_CO_cb_ok", "100", Some(100));
    no_receipt.receipt = None;
    apply(store, &no_receipt).await;
    let applied = apply(store, &success("ws_CO_cb_ok", "1.00", Some(1))).await;
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");
    let record = stored(store, "ws_CO_cb_ok").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt, None);
    assert_eq!(record.amount_paid_whole, Some(100));
}

pub async fn concurrent_callbacks_after_query_completion_enrich_once(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_burst", 100)).await;
    apply(store, &queried(success("ws_CO_q_burst", "100", Some(100)))).await;
    let first = success("ws_CO_q_burst", "100", Some(100));
    let mut second = first.clone();
    second.receipt = Some("QWE1RT2YU3".to_owned());
    let answers = tokio::join!(
        store.apply_result(&first),
        store.apply_result(&second),
        store.apply_result(&first),
        store.apply_result(&second),
    );
    let answers = [answers.0, answers.1, answers.2, answers.3]
        .map(|a| a.unwrap_or_else(|e| panic!("apply_result: {e}")));
    let winners: Vec<_> = answers
        .iter()
        .filter_map(|a| match a {
            Applied::Transitioned { record, .. } => Some(record.receipt.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let record = stored(store, "ws_CO_q_burst").await;
    assert_eq!(record.receipt, winners[0]);
    assert_eq!(record.status, PaymentStatus::Completed);
    // The winner's twin is a duplicate; both deliveries of the other receipt conflict.
    assert_eq!(record.duplicate_callbacks, 1);
    assert_eq!(record.conflicting_callbacks, 2);
    assert!(record.history.iter().all(|h| h.receipt != record.receipt));
}

pub async fn callback_after_query_and_pending_write_converge(store: &dyn PaymentStore) {
    for round in 0..3 {
        // The query result lands before the pending write (an orphan), then the short
        // callback and the pending write race: either order ends in review.
        let (id_a, id_b) = (format!("ws_CO_qpa{round}"), format!("ws_CO_qpb{round}"));
        for id in [&id_a, &id_b] {
            apply(store, &queried(success(id, "100", Some(100)))).await;
        }
        let (p_a, r_a) = (payment(&id_a, 100), success(&id_a, "1.00", Some(1)));
        let (w, a) = tokio::join!(store.record_pending(&p_a), store.apply_result(&r_a));
        w.unwrap_or_else(|e| panic!("record_pending: {e}"));
        a.unwrap_or_else(|e| panic!("apply_result: {e}"));
        let (p_b, r_b) = (payment(&id_b, 100), success(&id_b, "1.00", Some(1)));
        let (a, w) = tokio::join!(store.apply_result(&r_b), store.record_pending(&p_b));
        a.unwrap_or_else(|e| panic!("apply_result: {e}"));
        w.unwrap_or_else(|e| panic!("record_pending: {e}"));

        let a = stored(store, &id_a).await;
        assert_eq!(a.status, PaymentStatus::NeedsReview, "{id_a}");
        assert_eq!(a.receipt.as_deref(), Some("NLJ7RT61SV"));
        assert_eq!(a.amount, Some(100));
        assert_eq!(comparable(a), comparable(stored(store, &id_b).await));
    }
    assert!(orphan_ids(store).await.is_empty());
}

pub async fn amount_mismatch_needs_review_with_both_amounts(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_short", 100)).await;
    let (record, _) = transitioned(apply(store, &success("ws_CO_short", "1.00", Some(1))).await);
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.amount_paid.as_deref(), Some("1.00"));
    assert_eq!(record.amount_paid_whole, Some(1));
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
    assert_eq!(record, stored(store, "ws_CO_short").await);
    assert!(all_pending(store).await.is_empty());
}

pub async fn amount_mismatch_result_first_needs_review(store: &dyn PaymentStore) {
    let (early, _) = transitioned(apply(store, &success("ws_CO_short_rev", "1.00", Some(1))).await);
    assert_eq!(
        early.status,
        PaymentStatus::Completed,
        "nothing to compare with yet"
    );
    let PendingWrite::ResultAlreadyKnown(record) =
        pending(store, &payment("ws_CO_short_rev", 100)).await
    else {
        panic!("the pending write must see the earlier result");
    };
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.amount_paid.as_deref(), Some("1.00"));

    pending(store, &payment("ws_CO_short_ord", 100)).await;
    apply(store, &success("ws_CO_short_ord", "1.00", Some(1))).await;
    assert_eq!(
        comparable(stored(store, "ws_CO_short_rev").await),
        comparable(stored(store, "ws_CO_short_ord").await),
    );

    // The matching amount in the same order completes.
    apply(store, &success("ws_CO_exact_rev", "100", Some(100))).await;
    let matched = pending(store, &payment("ws_CO_exact_rev", 100)).await;
    assert_eq!(matched.record().status, PaymentStatus::Completed);
}

pub async fn orphan_listed_until_pending_write(store: &dyn PaymentStore) {
    let mut first = cancelled("ws_CO_orphan_b");
    first.received_at = at(10);
    let mut second = success("ws_CO_orphan_a", "100", Some(100));
    second.received_at = at(20);
    for r in [&first, &second] {
        let (_, created_orphan) = transitioned(apply(store, r).await);
        assert!(created_orphan);
    }
    let orphans = store.orphans(100).await.unwrap_or_else(|e| panic!("{e}"));
    let ids: Vec<_> = orphans
        .iter()
        .map(|r| r.checkout_request_id.as_str())
        .collect();
    assert_eq!(ids, ["ws_CO_orphan_b", "ws_CO_orphan_a"], "oldest first");
    assert!(orphans.iter().all(|r| !r.details_recorded));
    assert_eq!(orphans[1].status, PaymentStatus::Completed);
    assert_eq!(
        orphan_ids(store).await.len(),
        2,
        "listing does not consume orphans"
    );
    let limited = store.orphans(1).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limited.len(), 1);
    assert_eq!(limited[0].checkout_request_id, "ws_CO_orphan_b");

    pending(store, &payment("ws_CO_orphan_b", 100)).await;
    assert_eq!(orphan_ids(store).await, ["ws_CO_orphan_a"]);
    assert!(stored(store, "ws_CO_orphan_b").await.details_recorded);
    assert!(all_pending(store).await.is_empty());
}

pub async fn pending_index_lists_only_old_pending(store: &dyn PaymentStore) {
    let open = [
        ("ws_CO_old_2", -600),
        ("ws_CO_old_1", -900),
        ("ws_CO_new", -60),
    ];
    for (id, created) in open {
        let mut p = payment(id, 100);
        p.created_at = at(created);
        pending(store, &p).await;
    }
    for (id, created) in [
        ("ws_CO_paid", -1200),
        ("ws_CO_gone", -1500),
        ("ws_CO_lapsed", -1800),
    ] {
        let mut p = payment(id, 100);
        p.created_at = at(created);
        pending(store, &p).await;
    }
    apply(store, &success("ws_CO_paid", "100", Some(100))).await;
    apply(store, &cancelled("ws_CO_gone")).await;
    assert!(store
        .expire("ws_CO_lapsed", at(0))
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    apply(store, &cancelled("ws_CO_orphan")).await;

    let older = |cutoff, limit| async move {
        store
            .pending_older_than(cutoff, limit)
            .await
            .unwrap_or_else(|e| panic!("pending_older_than: {e}"))
    };
    assert_eq!(older(at(-120), 10).await, ["ws_CO_old_1", "ws_CO_old_2"]);
    assert_eq!(older(at(-120), 1).await, ["ws_CO_old_1"]);
    assert_eq!(
        older(at(0), 10).await,
        ["ws_CO_old_1", "ws_CO_old_2", "ws_CO_new"]
    );
    assert_eq!(
        older(at(-600), 10).await,
        ["ws_CO_old_1"],
        "the cutoff is exclusive"
    );
    assert!(older(at(-3600), 10).await.is_empty());
}

pub async fn query_attempts_counted_only_while_pending(store: &dyn PaymentStore) {
    let attempt = |id: &'static str| async move {
        store
            .record_query_attempt(id)
            .await
            .unwrap_or_else(|e| panic!("record_query_attempt: {e}"))
    };
    pending(store, &payment("ws_CO_queried", 100)).await;
    attempt("ws_CO_queried").await;
    attempt("ws_CO_queried").await;
    assert_eq!(stored(store, "ws_CO_queried").await.query_attempts, 2);

    apply(store, &cancelled("ws_CO_queried")).await;
    attempt("ws_CO_queried").await;
    assert_eq!(stored(store, "ws_CO_queried").await.query_attempts, 2);

    attempt("ws_CO_never_issued").await;
    assert_eq!(store.get("ws_CO_never_issued").await.ok().flatten(), None);
}

pub async fn expire_moves_only_pending(store: &dyn PaymentStore) {
    let expire = |id: &'static str| async move {
        store
            .expire(id, at(600))
            .await
            .unwrap_or_else(|e| panic!("expire: {e}"))
    };
    pending(store, &payment("ws_CO_silent", 100)).await;
    assert!(expire("ws_CO_silent").await);
    let record = stored(store, "ws_CO_silent").await;
    assert_eq!(record.status, PaymentStatus::Expired);
    assert_eq!(record.updated_at, at(600));
    assert_eq!(record.result_code, None);
    assert!(all_pending(store).await.is_empty());
    assert!(!expire("ws_CO_silent").await, "already expired");

    pending(store, &payment("ws_CO_settled", 100)).await;
    apply(store, &success("ws_CO_settled", "100", Some(100))).await;
    assert!(!expire("ws_CO_settled").await);
    assert_eq!(
        stored(store, "ws_CO_settled").await.status,
        PaymentStatus::Completed
    );

    assert!(!expire("ws_CO_unknown").await);
    assert_eq!(store.get("ws_CO_unknown").await.ok().flatten(), None);
}

pub async fn late_result_after_expiry_applies(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_late", 100)).await;
    assert!(store
        .expire("ws_CO_late", at(600))
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    // Expiry is our guess; the customer's money moved, so Daraja's word wins.
    let (record, created_orphan) =
        transitioned(apply(store, &success("ws_CO_late", "100", Some(100))).await);
    assert!(!created_orphan);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.receipt.as_deref(), Some("NLJ7RT61SV"));
    assert!(orphan_ids(store).await.is_empty());
}

pub async fn concurrent_duplicate_results_transition_once(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_burst", 100)).await;
    let r = success("ws_CO_burst", "100", Some(100));
    let answers = tokio::join!(
        store.apply_result(&r),
        store.apply_result(&r),
        store.apply_result(&r),
        store.apply_result(&r),
        store.apply_result(&r),
    );
    let answers = [answers.0, answers.1, answers.2, answers.3, answers.4]
        .map(|a| a.unwrap_or_else(|e| panic!("apply_result: {e}")));
    let transitions = answers
        .iter()
        .filter(|a| matches!(a, Applied::Transitioned { .. }))
        .count();
    let duplicates = answers
        .iter()
        .filter(|a| matches!(a, Applied::Duplicate(_)))
        .count();
    assert_eq!((transitions, duplicates), (1, 4), "{answers:?}");
    let record = stored(store, "ws_CO_burst").await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.duplicate_callbacks, 4);
    assert_eq!(record.conflicting_callbacks, 0);
}

pub async fn concurrent_conflicting_results_transition_once(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_race", 100)).await;
    let paid = success("ws_CO_race", "100", Some(100));
    let gone = cancelled("ws_CO_race");
    let (a, b) = tokio::join!(store.apply_result(&paid), store.apply_result(&gone));
    let answers = [a, b].map(|a| a.unwrap_or_else(|e| panic!("apply_result: {e}")));
    let winner = match &answers {
        [Applied::Transitioned { record, .. }, Applied::Conflict(_)]
        | [Applied::Conflict(_), Applied::Transitioned { record, .. }] => record.clone(),
        other => panic!("expected one transition and one conflict, got {other:?}"),
    };
    let record = stored(store, "ws_CO_race").await;
    assert_eq!(record.status, winner.status);
    assert_eq!(record.result_code, winner.result_code);
    assert_eq!(record.conflicting_callbacks, 1);
    assert_eq!(record.history.len(), 1);
    assert_ne!(
        record.history[0].result_code,
        winner.result_code.unwrap_or_default()
    );
}

pub async fn concurrent_result_and_pending_write_converge(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_serial", 100)).await;
    apply(store, &success("ws_CO_serial", "100", Some(100))).await;
    let expected = comparable(stored(store, "ws_CO_serial").await);

    for round in 0..3 {
        let (p1, r1) = (
            payment(&format!("ws_CO_pr{round}"), 100),
            success(&format!("ws_CO_pr{round}"), "100", Some(100)),
        );
        let (w, a) = tokio::join!(store.record_pending(&p1), store.apply_result(&r1));
        w.unwrap_or_else(|e| panic!("record_pending: {e}"));
        a.unwrap_or_else(|e| panic!("apply_result: {e}"));

        let (p2, r2) = (
            payment(&format!("ws_CO_rp{round}"), 100),
            success(&format!("ws_CO_rp{round}"), "100", Some(100)),
        );
        let (a, w) = tokio::join!(store.apply_result(&r2), store.record_pending(&p2));
        a.unwrap_or_else(|e| panic!("apply_result: {e}"));
        w.unwrap_or_else(|e| panic!("record_pending: {e}"));

        for id in [&p1.checkout_request_id, &p2.checkout_request_id] {
            assert_eq!(comparable(stored(store, id).await), expected, "{id}");
        }
    }
    assert!(all_pending(store).await.is_empty());
    assert!(orphan_ids(store).await.is_empty());
}

pub async fn unknown_payment_is_none(store: &dyn PaymentStore) {
    match store.get("ws_CO_nobody").await {
        Ok(None) => {}
        other => panic!("expected no record, got {other:?}"),
    }
    assert!(all_pending(store).await.is_empty());
    assert!(orphan_ids(store).await.is_empty());
}
