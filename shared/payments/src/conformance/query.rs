//! Rules for STK query results and the callbacks that follow them, and for amounts that
//! do not match.

use super::*;

pub async fn query_result_never_overwrites_completed(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_done", 100)).await;
    let (first, _) = transitioned(store, &success("ws_CO_q_done", "100", Some(100))).await;

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
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
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
        transitioned(store, &queried(success("ws_CO_q_ok", "100", Some(100)))).await;
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
        transitioned(store, &queried(success("ws_CO_q_rcpt", "100", Some(100)))).await;

    // The callback arrives after the query settled the payment: same result, more detail.
    let mut late = success("ws_CO_q_rcpt", "100.00", Some(100));
    late.received_at = at(400);
    let (record, created_orphan) = transitioned(store, &late).await;
    assert!(!created_orphan);
    assert_eq!(record, stored(store, "ws_CO_q_rcpt").await);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
    assert_eq!(record.amount_paid.as_deref(), Some("100.00"));
    assert_eq!(record.amount_paid_whole, Some(100));
    assert_eq!(record.paying_phone.as_deref(), Some("254708374149"));
    assert_eq!(record.transaction_date.as_deref(), Some("20240501100030"));
    assert_eq!(record.raw_callback, late.raw);
    // The query decided the outcome; the callback only filled in what a query cannot report.
    assert_eq!(record.reconciled_by, Some(ResultSource::Query));
    assert_eq!(record.completed_at, by_query.completed_at);
    assert_eq!(record.result_desc, by_query.result_desc);
    assert_eq!(record.conflicting_callbacks, 0);
    assert!(record.history.is_empty());

    // The same callback delivered again is a duplicate now that the receipt is known.
    let enriched = record;
    let Applied::Duplicate(record) = apply(store, &late).await else {
        panic!("the enriching callback delivered again must be a duplicate");
    };
    assert_eq!(record, enriched, "a duplicate writes nothing");

    // Another receipt never replaces the one stored: the customer may have paid twice.
    let mut other = late.clone();
    other.receipt = Some("QWE1RT2YU3".to_owned());
    let Applied::Flagged(record) = apply(store, &other).await else {
        panic!("a success with another receipt must flag the payment");
    };
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.review_reason, Some(ReviewReason::SecondReceipt));
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
    assert_eq!(record.conflicting_callbacks, 1);
    assert_eq!(record.history.len(), 1);
}

pub async fn short_callback_after_query_completion_needs_review(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_q_short", 100)).await;
    apply(store, &queried(success("ws_CO_q_short", "100", Some(100)))).await;
    let (record, _) = transitioned(store, &success("ws_CO_q_short", "1.00", Some(1))).await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.review_reason, Some(ReviewReason::AmountMismatch));
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.amount_paid.as_deref(), Some("1.00"));
    assert_eq!(record.amount_paid_whole, Some(1));
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
    assert_eq!(record, stored(store, "ws_CO_q_short").await);
}

pub async fn callback_after_query_never_changes_failed_or_mismatched(store: &dyn PaymentStore) {
    // A query that reported failure: a success callback with a receipt contradicts it, and
    // the customer may have paid: review (the query's result stays).
    pending(store, &payment("ws_CO_q_fail", 100)).await;
    apply(store, &queried(cancelled("ws_CO_q_fail"))).await;
    let applied = apply(store, &success("ws_CO_q_fail", "100", Some(100))).await;
    assert!(matches!(applied, Applied::Flagged(_)), "{applied:?}");
    let record = stored(store, "ws_CO_q_fail").await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(
        record.review_reason,
        Some(ReviewReason::SuccessAfterFailure)
    );
    assert_eq!(record.result_code.as_deref(), Some("1032"));
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

    // A success callback is never enriched by another success: one without a receipt cannot
    // be checked (it needs review), and a second success only goes to history.
    pending(store, &payment("ws_CO_cb_ok", 100)).await;
    let mut no_receipt = success("ws_CO_cb_ok", "100", Some(100));
    no_receipt.receipt = None;
    apply(store, &no_receipt).await;
    let applied = apply(store, &success("ws_CO_cb_ok", "1.00", Some(1))).await;
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");
    let record = stored(store, "ws_CO_cb_ok").await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
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
    let winners = answers
        .iter()
        .filter(|a| matches!(a, Applied::Transitioned(Settled { enriched: true, .. })))
        .count();
    assert_eq!(winners, 1, "{answers:?}");
    let flagged = answers
        .iter()
        .filter(|a| matches!(a, Applied::Flagged(_)))
        .count();
    let record = stored(store, "ws_CO_q_burst").await;
    assert!(
        [&first.receipt, &second.receipt].contains(&&record.receipt),
        "{record:?}"
    );
    // The other receipt means a second payment may have been made: flagged once.
    assert_eq!(flagged, 1, "{answers:?}");
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.review_reason, Some(ReviewReason::SecondReceipt));
    // The winner's twin is a duplicate (nothing written); both deliveries of the other
    // receipt are kept.
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
        assert_eq!(a.receipt, Some(receipt_of(&a.checkout_request_id)));
        assert_eq!(a.amount, Some(100));
        assert_eq!(comparable(a), comparable(stored(store, &id_b).await));
    }
    assert!(orphan_ids(store).await.is_empty());
}

pub async fn amount_mismatch_needs_review_with_both_amounts(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_short", 100)).await;
    let (record, _) = transitioned(store, &success("ws_CO_short", "1.00", Some(1))).await;
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.amount, Some(100));
    assert_eq!(record.amount_paid.as_deref(), Some("1.00"));
    assert_eq!(record.amount_paid_whole, Some(1));
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
    assert_eq!(record, stored(store, "ws_CO_short").await);
    assert!(all_pending(store).await.is_empty());
}

pub async fn amount_mismatch_result_first_needs_review(store: &dyn PaymentStore) {
    let (early, _) = transitioned(store, &success("ws_CO_short_rev", "1.00", Some(1))).await;
    assert_eq!(
        early.status,
        PaymentStatus::Completed,
        "nothing to compare with yet"
    );
    let PendingWrite::FlaggedForReview(record) =
        pending(store, &payment("ws_CO_short_rev", 100)).await
    else {
        panic!("the pending write must see the earlier result and flag it");
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

/// A success callback that cannot be checked (no receipt, no whole-shilling amount, two
/// different receipts) needs review, in either order with the pending write, and a pending
/// write repeated on a record under review keeps it under review.
pub async fn unverifiable_success_needs_review_in_either_order(store: &dyn PaymentStore) {
    let mut no_receipt = success("ws_CO_unv_1", "100", Some(100));
    no_receipt.receipt = None;
    let mut fractional = success("ws_CO_unv_2", "9.99", None);
    fractional.amount_paid = Some("9.99".to_owned());
    let mut no_amount = success("ws_CO_unv_3", "", None);
    no_amount.amount_paid = None;
    let mut two_receipts = success("ws_CO_unv_4", "100", Some(100));
    two_receipts.contradictory = true;
    for result in [no_receipt, fractional, no_amount, two_receipts] {
        let id = result.checkout_request_id.clone();
        // Pending first.
        pending(store, &payment(&id, 100)).await;
        let (record, orphan) = transitioned(store, &result).await;
        assert!(!orphan);
        assert_eq!(record.status, PaymentStatus::NeedsReview, "{id}");
        assert_eq!(
            record.review_reason,
            Some(ReviewReason::Unverifiable),
            "{id}"
        );
        assert_eq!(record.amount, Some(100));
        // The result first, as an orphan, then the pending write: the same record.
        let later = format!("{id}_later");
        let mut first = result.clone();
        first.checkout_request_id = later.clone();
        let (early, orphan) = transitioned(store, &first).await;
        assert!(orphan);
        assert_eq!(early.status, PaymentStatus::NeedsReview, "{later}");
        let PendingWrite::ResultAlreadyKnown(joined) = pending(store, &payment(&later, 100)).await
        else {
            panic!("the pending write must see the earlier result");
        };
        assert_eq!(joined.status, PaymentStatus::NeedsReview, "{later}");
        assert!(joined.details_recorded);
        // A repeated pending write keeps it under review (it cannot end in contention).
        let again = pending(store, &payment(&later, 100)).await;
        assert_eq!(again.record().status, PaymentStatus::NeedsReview, "{later}");
        assert_eq!(
            comparable(stored(store, &id).await).status,
            comparable(stored(store, &later).await).status
        );
        // After an STK query completed the payment: the callback that cannot be checked still
        // turns it NEEDS_REVIEW (it is never taken for a repeat of the query's success).
        let queried_first = format!("{id}_queried");
        pending(store, &payment(&queried_first, 100)).await;
        apply(store, &queried(success(&queried_first, "100", Some(100)))).await;
        let mut after_query = result.clone();
        after_query.checkout_request_id = queried_first.clone();
        let (enriched, _) = transitioned(store, &after_query).await;
        assert_eq!(
            enriched.status,
            PaymentStatus::NeedsReview,
            "{queried_first}"
        );
    }
    assert!(orphan_ids(store).await.is_empty());
}
