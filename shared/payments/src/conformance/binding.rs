//! Rules for per-payment callback URLs: a result is applied only to the payment whose URL it
//! was delivered to.

use super::*;

/// `result` as delivered to the callback URL that binds `nonce`.
fn via(nonce: &str, mut result: PaymentResult) -> PaymentResult {
    result.callback_nonce = Some(nonce.to_owned());
    result
}

/// A pending write for `id` whose push's callback URL binds `nonce`.
fn bound_payment(id: &str, nonce: &str) -> NewPayment {
    let mut payment = payment(id, 100);
    payment.callback_nonce = Some(nonce.to_owned());
    payment
}

pub async fn a_result_sent_to_another_payments_url_is_not_applied(store: &dyn PaymentStore) {
    pending(store, &bound_payment("ws_CO_bind", "nonce-own")).await;
    let before = stored(store, "ws_CO_bind").await;
    for result in [
        success("ws_CO_bind", "100", Some(100)),
        cancelled("ws_CO_bind"),
    ] {
        match apply(store, &via("nonce-other", result)).await {
            Applied::Unbound(record) => assert_eq!(record.status, PaymentStatus::Pending),
            other => panic!("expected the result refused, got {other:?}"),
        }
    }
    assert_eq!(stored(store, "ws_CO_bind").await, before, "nothing written");

    // Its own URL settles it; another URL still settles nothing, not even a duplicate.
    let (record, _) = transitioned(
        store,
        &via("nonce-own", success("ws_CO_bind", "100", Some(100))),
    )
    .await;
    assert_eq!(record.status, PaymentStatus::Completed);
    assert!(matches!(
        apply(
            store,
            &via("nonce-other", success("ws_CO_bind", "100", Some(100)))
        )
        .await,
        Applied::Unbound(_)
    ));
    assert!(matches!(
        apply(store, &via("nonce-other", cancelled("ws_CO_bind"))).await,
        Applied::Unbound(_)
    ));
    let after = stored(store, "ws_CO_bind").await;
    assert_eq!(after.conflicting_callbacks, 0);
    assert_eq!(after.status, PaymentStatus::Completed);
}

pub async fn a_result_before_the_pending_write_must_come_to_its_url(store: &dyn PaymentStore) {
    // Delivered to the payment's own URL before its pending write: converges as ever.
    apply(
        store,
        &via("nonce-a", success("ws_CO_bind_a", "100", Some(100))),
    )
    .await;
    let written = pending(store, &bound_payment("ws_CO_bind_a", "nonce-a")).await;
    assert_eq!(written.record().status, PaymentStatus::Completed);
    assert_eq!(written.record().review_reason, None);
    assert!(!orphan_ids(store).await.contains(&"ws_CO_bind_a".to_owned()));

    // Delivered to another payment's URL: the result is kept, and the payment needs review.
    apply(
        store,
        &via("nonce-elsewhere", success("ws_CO_bind_b", "100", Some(100))),
    )
    .await;
    let written = pending(store, &bound_payment("ws_CO_bind_b", "nonce-b")).await;
    let record = stored(store, "ws_CO_bind_b").await;
    assert_eq!(written.record().status, PaymentStatus::NeedsReview);
    assert_eq!(record.status, PaymentStatus::NeedsReview);
    assert_eq!(record.review_reason, Some(ReviewReason::UnboundCallback));
    assert_eq!(record.amount, Some(100), "the details are added");
    assert!(!orphan_ids(store).await.contains(&"ws_CO_bind_b".to_owned()));
    // The pending write again changes nothing more.
    pending(store, &bound_payment("ws_CO_bind_b", "nonce-b")).await;
    assert_eq!(
        stored(store, "ws_CO_bind_b").await.review_reason,
        Some(ReviewReason::UnboundCallback)
    );
}

pub async fn a_payment_is_shown_only_to_the_caller_that_asked_for_it(store: &dyn PaymentStore) {
    for (id, result_first) in [("ws_CO_caller", false), ("ws_CO_caller_late", true)] {
        if result_first {
            apply(store, &success(id, "100", Some(100))).await;
        }
        let mut asked = payment(id, 100);
        asked.created_by = Some("arn:aws:iam::123456789012:user/shop".to_owned());
        pending(store, &asked).await;
        let record = stored(store, id).await;
        assert_eq!(record.created_by, asked.created_by, "{id}");
        assert!(record.is_visible_to(Some("arn:aws:iam::123456789012:user/shop")));
        assert!(!record.is_visible_to(Some("arn:aws:iam::123456789012:user/billing")));
        assert!(!record.is_visible_to(None));
    }
    // A payment whose caller is not known is shown to every caller, as before.
    pending(store, &payment("ws_CO_no_caller", 100)).await;
    assert!(stored(store, "ws_CO_no_caller")
        .await
        .is_visible_to(Some("arn:aws:iam::123456789012:user/billing")));
}
