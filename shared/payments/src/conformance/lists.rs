//! Rules for the lists (orphans, pending), query attempts, expiry, concurrency, and an
//! unknown payment.

use super::*;

pub async fn orphan_listed_until_pending_write(store: &dyn PaymentStore) {
    let mut first = cancelled("ws_CO_orphan_b");
    first.received_at = at(10);
    let mut second = success("ws_CO_orphan_a", "100", Some(100));
    second.received_at = at(20);
    for r in [&first, &second] {
        let (_, created_orphan) = transitioned(store, r).await;
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
    let recent = store
        .recent_orphans(1)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(recent.len(), 1);
    assert_eq!(
        recent[0].checkout_request_id, "ws_CO_orphan_a",
        "newest first"
    );

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
        .expire("ws_CO_lapsed", at(0), None)
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
            .expire(id, at(600), None)
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
        .expire("ws_CO_late", at(600), None)
        .await
        .unwrap_or_else(|e| panic!("{e}")));
    // Expiry is our guess; the customer's money moved, so Daraja's word wins.
    let (record, created_orphan) =
        transitioned(store, &success("ws_CO_late", "100", Some(100))).await;
    assert!(!created_orphan);
    assert_eq!(record.status, PaymentStatus::Completed);
    assert_eq!(
        record.receipt,
        Some(receipt_of(&record.checkout_request_id))
    );
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
    assert_eq!(record.conflicting_callbacks, 0);
}

pub async fn concurrent_conflicting_results_transition_once(store: &dyn PaymentStore) {
    pending(store, &payment("ws_CO_race", 100)).await;
    let paid = success("ws_CO_race", "100", Some(100));
    let gone = cancelled("ws_CO_race");
    let (a, b) = tokio::join!(store.apply_result(&paid), store.apply_result(&gone));
    let answers = [a, b].map(|a| a.unwrap_or_else(|e| panic!("apply_result: {e}")));
    // One result wins. If the cancellation wins, the success that comes second carries a
    // receipt: money may have moved, so the payment needs review (its result stays 1032).
    let (winner, flagged) = match &answers {
        [Applied::Transitioned(settled), Applied::Conflict(_)]
        | [Applied::Conflict(_), Applied::Transitioned(settled)] => (*settled, false),
        [Applied::Transitioned(settled), Applied::Flagged(_)]
        | [Applied::Flagged(_), Applied::Transitioned(settled)]
            if settled.status == PaymentStatus::Failed =>
        {
            (*settled, true)
        }
        other => panic!("expected one transition and one conflict or flag, got {other:?}"),
    };
    let record = stored(store, "ws_CO_race").await;
    let winning = if winner.status == PaymentStatus::Failed {
        &gone
    } else {
        &paid
    };
    if flagged {
        assert_eq!(record.status, PaymentStatus::NeedsReview);
    } else {
        assert_eq!(record.status, winner.status);
    }
    assert_eq!(
        record.result_code.as_deref(),
        Some(winning.result_code.code())
    );
    assert_eq!(record.conflicting_callbacks, 1);
    assert_eq!(record.history.len(), 1);
    assert_ne!(record.history[0].result_code, winning.result_code.code());
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

/// The three query queues: never queried (by creation), retry (by next query time), expired
/// (by next query time); a result, or a pending write, takes a payment out of the retry and
/// expired queues.
pub async fn query_queues_keep_their_order_and_their_members(store: &dyn PaymentStore) {
    let ok = |r: Result<bool, StoreError>| r.unwrap_or_else(|e| panic!("{e}"));
    let due = |queue: QueryQueue, now| async move {
        store
            .due_for_query(queue, now, 10)
            .await
            .unwrap_or_else(|e| panic!("due_for_query: {e}"))
    };
    for (id, created) in [
        ("ws_CO_q_a", -600),
        ("ws_CO_q_b", -300),
        ("ws_CO_q_c", -100),
    ] {
        let mut p = payment(id, 100);
        p.created_at = at(created);
        pending(store, &p).await;
    }
    let new = |cutoff| async move {
        store
            .pending_older_than(cutoff, 10)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(new(at(0)).await, ["ws_CO_q_a", "ws_CO_q_b", "ws_CO_q_c"]);

    let counted = store
        .record_query_attempt("ws_CO_q_a")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("a pending payment is counted");
    assert_eq!(counted.query_attempts, 1);
    assert!(counted.last_queried_at.is_some());
    assert!(ok(store
        .schedule_query("ws_CO_q_a", QueryQueue::Retry, Some(at(60)))
        .await));
    assert_eq!(new(at(0)).await, ["ws_CO_q_b", "ws_CO_q_c"]);
    assert!(due(QueryQueue::Retry, at(59)).await.is_empty());
    assert_eq!(
        due(QueryQueue::Retry, at(60)).await,
        ["ws_CO_q_a"],
        "due at its time"
    );
    assert!(ok(store
        .schedule_query("ws_CO_q_b", QueryQueue::Retry, Some(at(30)))
        .await));
    assert_eq!(
        due(QueryQueue::Retry, at(100)).await,
        ["ws_CO_q_b", "ws_CO_q_a"],
        "earliest first"
    );
    assert!(
        !ok(store
            .schedule_query("ws_CO_q_a", QueryQueue::Expired, Some(at(60)))
            .await),
        "a pending payment is not in the expired queue"
    );

    assert!(ok(store.expire("ws_CO_q_c", at(10), Some(at(900))).await));
    assert_eq!(
        stored(store, "ws_CO_q_c").await.status,
        PaymentStatus::Expired
    );
    assert!(new(at(1000)).await.iter().all(|id| id != "ws_CO_q_c"));
    assert!(due(QueryQueue::Expired, at(899)).await.is_empty());
    assert_eq!(due(QueryQueue::Expired, at(900)).await, ["ws_CO_q_c"]);
    let counted = store
        .record_query_attempt("ws_CO_q_c")
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .expect("an expired payment is counted");
    assert_eq!(counted.status, PaymentStatus::Expired);
    assert!(ok(store
        .schedule_query("ws_CO_q_c", QueryQueue::Expired, None)
        .await));
    assert!(due(QueryQueue::Expired, at(100_000)).await.is_empty());

    // A result takes a payment out of its queue, and it is no longer counted.
    apply(store, &success("ws_CO_q_b", "100", Some(100))).await;
    assert_eq!(due(QueryQueue::Retry, at(100)).await, ["ws_CO_q_a"]);
    let none = store
        .record_query_attempt("ws_CO_q_b")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(none, None);
    // A pending write again puts it back among those never queried: sooner, never later.
    let mut again = payment("ws_CO_q_a", 100);
    again.created_at = at(-600);
    pending(store, &again).await;
    assert!(due(QueryQueue::Retry, at(100)).await.is_empty());
    assert_eq!(new(at(0)).await, ["ws_CO_q_a"]);
    assert!(!ok(store
        .schedule_query("ws_CO_q_unknown", QueryQueue::Retry, Some(at(0)))
        .await));
}

/// The payments recorded with a reference, newest first, whatever their status; results that
/// matched no pending write (orphans) have no reference yet.
pub async fn payments_are_found_by_reference_newest_first(store: &dyn PaymentStore) {
    for (id, created) in [
        ("ws_CO_r_old", -600),
        ("ws_CO_r_new", -60),
        ("ws_CO_r_mid", -300),
    ] {
        let mut p = payment(id, 100);
        p.created_at = at(created);
        pending(store, &p).await;
    }
    apply(store, &success("ws_CO_r_mid", "100", Some(100))).await;
    apply(store, &cancelled("ws_CO_r_orphan")).await;
    let found = store
        .by_reference("INV001", 10)
        .await
        .unwrap_or_else(|e| panic!("by_reference: {e}"));
    let ids: Vec<_> = found
        .iter()
        .map(|r| r.checkout_request_id.as_str())
        .collect();
    assert_eq!(ids, ["ws_CO_r_new", "ws_CO_r_mid", "ws_CO_r_old"]);
    assert_eq!(found[1], stored(store, "ws_CO_r_mid").await);
    assert_eq!(found[1].status, PaymentStatus::Completed);
    let limited = store
        .by_reference("INV001", 2)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(limited.len(), 2);
    assert!(store
        .by_reference("NOPE", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .is_empty());
    // The orphan gains its reference with its pending write.
    pending(store, &payment("ws_CO_r_orphan", 100)).await;
    let found = store
        .by_reference("INV001", 10)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.len(), 4);
}
