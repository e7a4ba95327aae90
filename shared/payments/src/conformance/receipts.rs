//! Rules for receipts: one M-Pesa receipt settles one payment.

use super::*;

/// A success for `id` carrying `receipt`.
fn paid_with(id: &str, receipt: &str) -> PaymentResult {
    let mut result = success(id, "100", Some(100));
    result.receipt = Some(receipt.to_owned());
    result
}

fn assert_reused(record: &PaymentRecord, receipt: &str, holder: &str) {
    assert_eq!(record.status, PaymentStatus::NeedsReview, "{record:?}");
    assert_eq!(record.review_reason, Some(ReviewReason::ReceiptReused));
    assert_eq!(record.receipt.as_deref(), Some(receipt));
    assert_eq!(record.receipt_holder.as_deref(), Some(holder));
}

pub async fn a_receipt_already_recorded_on_another_payment_needs_review(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_rc_first", 100)).await;
    pending(store, &payment("ws_CO_rc_second", 100)).await;
    let (first, _) = transitioned(store, &paid_with("ws_CO_rc_first", "TRC1REUSE1")).await;
    assert_eq!(first.status, PaymentStatus::Completed);
    assert_eq!(first.receipt_holder, None);

    let (second, orphan) = transitioned(store, &paid_with("ws_CO_rc_second", "TRC1REUSE1")).await;
    assert!(!orphan);
    assert_reused(&second, "TRC1REUSE1", "ws_CO_rc_first");
    assert_eq!(second.amount, Some(100), "the details stay");
    // The first payment is untouched, and its own callback again is only a duplicate.
    assert_eq!(
        comparable(stored(store, "ws_CO_rc_first").await),
        comparable(first)
    );
    match apply(store, &paid_with("ws_CO_rc_first", "TRC1REUSE1")).await {
        Applied::Duplicate(record) => assert_eq!(record.status, PaymentStatus::Completed),
        other => panic!("expected a duplicate, got {other:?}"),
    }
    // So is the second's: it stays under review, its holder named.
    assert!(matches!(
        apply(store, &paid_with("ws_CO_rc_second", "TRC1REUSE1")).await,
        Applied::Duplicate(_)
    ));
    assert_reused(
        &stored(store, "ws_CO_rc_second").await,
        "TRC1REUSE1",
        "ws_CO_rc_first",
    );
}

pub async fn a_reused_receipt_on_an_orphan_or_after_a_query_needs_review(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_rc_owner", 100)).await;
    transitioned(store, &paid_with("ws_CO_rc_owner", "TRC2REUSE2")).await;

    // A result for no known payment.
    let (orphan, created_orphan) =
        transitioned(store, &paid_with("ws_CO_rc_orphan", "TRC2REUSE2")).await;
    assert!(created_orphan);
    assert_reused(&orphan, "TRC2REUSE2", "ws_CO_rc_owner");
    // Its pending write adds the details and keeps the review.
    let written = store
        .record_pending(&payment("ws_CO_rc_orphan", 100))
        .await
        .unwrap_or_else(|e| panic!("record_pending: {e}"));
    assert_reused(written.record(), "TRC2REUSE2", "ws_CO_rc_owner");

    // The callback of a payment an STK query completed.
    pending(store, &payment("ws_CO_rc_queried", 100)).await;
    apply(
        store,
        &queried(success("ws_CO_rc_queried", "100", Some(100))),
    )
    .await;
    let (enriched, _) = transitioned(store, &paid_with("ws_CO_rc_queried", "TRC2REUSE2")).await;
    assert_reused(&enriched, "TRC2REUSE2", "ws_CO_rc_owner");
}

pub async fn concurrent_payments_with_one_receipt_complete_once(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_rc_a", 100)).await;
    pending(store, &payment("ws_CO_rc_b", 100)).await;
    let (a, b) = (
        paid_with("ws_CO_rc_a", "TRC3RACE33"),
        paid_with("ws_CO_rc_b", "TRC3RACE33"),
    );
    let (x, y) = tokio::join!(store.apply_result(&a), store.apply_result(&b));
    for answer in [x, y] {
        assert!(matches!(
            answer.unwrap_or_else(|e| panic!("apply_result: {e}")),
            Applied::Transitioned(_)
        ));
    }
    let (a, b) = (
        stored(store, "ws_CO_rc_a").await,
        stored(store, "ws_CO_rc_b").await,
    );
    let (winner, loser) = if a.status == PaymentStatus::Completed {
        (a, b)
    } else {
        (b, a)
    };
    assert_eq!(winner.status, PaymentStatus::Completed, "{winner:?}");
    assert_reused(&loser, "TRC3RACE33", &winner.checkout_request_id);
}
