//! Rules for results on a pending (or absent) record: transitions, convergence with the
//! pending write, duplicates and conflicts.

use super::*;

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
    let (record, created_orphan) = transitioned(store, &r).await;
    assert!(!created_orphan);
    assert_eq!(record, stored(store, "ws_CO_ok").await);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.outcome.as_deref(), Some("success"));
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
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
        let (record, created_orphan) = transitioned(store, &failure(&id, code, desc)).await;
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

    let (early, created_orphan) = transitioned(store, &result("ws_CO_reversed")).await;
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
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
}

pub async fn failure_before_pending_converges(store: &dyn PaymentStore) {
    converges(store, cancelled).await;
    let record = stored(store, "ws_CO_reversed").await;
    assert_eq!(record.status, PaymentStatus::Failed);
    assert_eq!(record.result_code.as_deref(), Some("1032"));
}

pub async fn duplicate_result_changes_nothing(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_dup", 100)).await;
    let r = success("ws_CO_dup", "100", Some(100));
    let (first, _) = transitioned(store, &r).await;

    let mut again = r.clone();
    again.received_at = at(45);
    let Applied::Duplicate(record) = apply(store, &again).await else {
        panic!("the same result twice must be a duplicate");
    };
    // A replay writes nothing: the record is the first result's, to the write time.
    assert_eq!(record, first);
    assert_eq!(stored(store, "ws_CO_dup").await, first);

    let Applied::Duplicate(record) = apply(store, &again).await else {
        panic!("a third delivery is a duplicate too");
    };
    assert_eq!(record, first);
    assert_eq!(stored(store, "ws_CO_dup").await, first);
}

pub async fn conflicting_result_is_kept_in_history(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_conflict", 100)).await;
    let (first, _) = transitioned(store, &success("ws_CO_conflict", "100", Some(100))).await;

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
    assert_eq!(record.history, vec![contradiction.history_entry()]);
    assert_eq!(record.history[0].result_code, "1032");
    assert_eq!(record.history[0].received_at, at(60));
    assert_eq!(record.history[0].source, ResultSource::Callback);
    assert_eq!(record.history[0].raw, contradiction.raw);
}

/// Evidence that money moved where the record says otherwise: a success with another receipt
/// for a completed payment (paid twice?), or with a receipt for a failed one (paid after
/// all?). The record turns `NEEDS_REVIEW` with the reason; its first result stays, the new one
/// goes to history. Without a receipt there is no such evidence: history only.
pub async fn contradicting_success_needs_review(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_twice_paid", 100)).await;
    apply(store, &success("ws_CO_twice_paid", "100", Some(100))).await;
    let mut other_receipt = success("ws_CO_twice_paid", "100", Some(100));
    other_receipt.receipt = Some("QWE1RT2YU3".to_owned());
    other_receipt.received_at = at(90);
    let Applied::Flagged(record) = apply(store, &other_receipt).await else {
        panic!("a success with another receipt must flag the payment");
    };
    assert_eq!(record, stored(store, "ws_CO_twice_paid").await);
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.review_reason, Some(ReviewReason::SecondReceipt));
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
    assert_eq!(record.result_code.as_deref(), Some("0"));
    assert_eq!(record.conflicting_callbacks, 1);
    assert_eq!(record.history, vec![other_receipt.history_entry()]);
    // The same evidence again is no news: counted, still under review.
    let again = apply(store, &other_receipt).await;
    assert!(matches!(again, Applied::Conflict(_)), "{again:?}");
    let record = stored(store, "ws_CO_twice_paid").await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.conflicting_callbacks, 2);

    for (id, first) in [
        (
            "ws_CO_paid_after_cancel",
            cancelled("ws_CO_paid_after_cancel"),
        ),
        (
            "ws_CO_paid_after_query",
            queried(cancelled("ws_CO_paid_after_query")),
        ),
    ] {
        pending(store, &payment(id, 100)).await;
        apply(store, &first).await;
        let mut no_receipt = success(id, "100", Some(100));
        no_receipt.receipt = None;
        let applied = apply(store, &no_receipt).await;
        assert!(matches!(applied, Applied::Conflict(_)), "{id}: {applied:?}");
        assert_eq!(stored(store, id).await.status, PaymentStatus::Failed);
        let Applied::Flagged(record) = apply(store, &success(id, "100", Some(100))).await else {
            panic!("{id}: a success with a receipt after a failure must flag the payment");
        };
        assert_eq!(record, stored(store, id).await);
        assert_eq!(record.status, PaymentStatus::NeedsReview);
        assert_eq!(
            record.review_reason,
            Some(ReviewReason::SuccessAfterFailure)
        );
        assert_eq!(record.result_code.as_deref(), Some("1032"));
        assert_eq!(record.receipt, None);
        assert_eq!(record.history.len(), 2);
        assert_eq!(
            record.history[1].receipt,
            Some(receipt_of(&record.checkout_request_id))
        );
    }
    // A failure after a success says nothing about money that moved: history only.
    let applied = apply(store, &cancelled("ws_CO_twice_paid")).await;
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");
}
