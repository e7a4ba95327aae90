//! Rules for success callbacks held until an STK query confirms them: holding one changes no
//! status, puts the payment first in its query queue, and is refused where it could not hold.

use super::*;
use crate::payment::HeldCallback;
use crate::store::Hold;

/// A success callback for `id` as it is held, received at `at(40)` through the URL that binds
/// `nonce`.
fn held(nonce: Option<&str>) -> HeldCallback {
    HeldCallback {
        raw: r#"{"Body":{"stkCallback":{"ResultCode":0}}}"#.to_owned(),
        received_at: at(40),
        callback_nonce: nonce.map(str::to_owned),
        source_ip: Some("198.51.100.7".to_owned()),
    }
}

async fn hold(store: &dyn PaymentStore, id: &str, held: &HeldCallback) -> Hold {
    store
        .hold_for_confirmation(id, held)
        .await
        .unwrap_or_else(|e| panic!("hold_for_confirmation {id}: {e}"))
}

async fn due(store: &dyn PaymentStore, queue: QueryQueue) -> Vec<String> {
    store
        .due_for_query(queue, at(40), 100)
        .await
        .unwrap_or_else(|e| panic!("due_for_query: {e}"))
}

pub async fn a_held_success_changes_no_status_and_is_queried_first(store: &dyn PaymentStore) {
    let mut bound = payment("ws_CO_held", 100);
    bound.callback_nonce = Some("nonce-own".to_owned());
    pending(store, &bound).await;
    pending(store, &payment("ws_CO_held_exp", 100)).await;
    assert!(store
        .expire("ws_CO_held_exp", at(20), None)
        .await
        .expect("expire"));

    assert_eq!(
        hold(store, "ws_CO_held", &held(Some("nonce-own"))).await,
        Hold::Held
    );
    let record = stored(store, "ws_CO_held").await;
    assert_eq!(record.status, PaymentStatus::Pending);
    assert_eq!(record.receipt, None, "nothing of the result is applied");
    assert_eq!(record.held_callback, Some(held(Some("nonce-own"))));
    // Due now in the retry queue, and no longer among the never-queried ones.
    assert_eq!(due(store, QueryQueue::Retry).await, ["ws_CO_held"]);
    assert!(!all_pending(store).await.contains(&"ws_CO_held".to_owned()));

    // An expired payment waits in its own queue, due now.
    assert_eq!(hold(store, "ws_CO_held_exp", &held(None)).await, Hold::Held);
    assert_eq!(
        stored(store, "ws_CO_held_exp").await.status,
        PaymentStatus::Expired
    );
    assert_eq!(due(store, QueryQueue::Expired).await, ["ws_CO_held_exp"]);

    // The query counts as for any payment, and the held callback comes with the record.
    let counted = store
        .record_query_attempt("ws_CO_held")
        .await
        .expect("record_query_attempt")
        .expect("an open payment");
    assert_eq!(counted.held_callback, Some(held(Some("nonce-own"))));
}

pub async fn a_success_is_held_only_on_its_own_open_payment(store: &dyn PaymentStore) {
    // No payment yet: nothing written.
    assert_eq!(
        hold(store, "ws_CO_none", &held(None)).await,
        Hold::NotOpen(None)
    );
    assert!(store.get("ws_CO_none").await.expect("get").is_none());

    // Another payment's URL: nothing written.
    let mut bound = payment("ws_CO_other_url", 100);
    bound.callback_nonce = Some("nonce-own".to_owned());
    pending(store, &bound).await;
    let before = stored(store, "ws_CO_other_url").await;
    match hold(store, "ws_CO_other_url", &held(Some("nonce-other"))).await {
        Hold::NotOpen(Some(record)) => assert_eq!(record.status, PaymentStatus::Pending),
        other => panic!("expected nothing held, got {other:?}"),
    }
    assert_eq!(stored(store, "ws_CO_other_url").await, before);

    // A final payment: nothing written; the result is applied by its own rules instead.
    pending(store, &payment("ws_CO_final", 100)).await;
    transitioned(store, &cancelled("ws_CO_final")).await;
    let before = stored(store, "ws_CO_final").await;
    match hold(store, "ws_CO_final", &held(None)).await {
        Hold::NotOpen(Some(record)) => assert_eq!(record.status, PaymentStatus::Failed),
        other => panic!("expected nothing held, got {other:?}"),
    }
    assert_eq!(stored(store, "ws_CO_final").await, before);
}
