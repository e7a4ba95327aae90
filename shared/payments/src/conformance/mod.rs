//! The behaviour every [`PaymentStore`] must show, written once and run against each
//! implementation so they cannot drift: the in-memory store in this crate's unit tests,
//! DynamoDB in the integration tests.
//!
//! Use [`payment_store_conformance!`](crate::payment_store_conformance) with an async
//! function that returns a fresh, empty store; it expands to one `#[tokio::test]` per rule.
//! Each function here panics when the store breaks its rule.

mod binding;
mod confirmation;
pub mod ledger;
mod lists;
mod query;
mod receipts;
mod results;

pub use binding::*;
pub use confirmation::*;
pub use lists::*;
pub use query::*;
pub use receipts::*;
pub use results::*;

use chrono::{DateTime, Duration, Utc};
use daraja::{AccountReference, Amount, Charge, PhoneNumber, ResultCode, TransactionDesc};

use crate::payment::{
    timestamp, NewPayment, PaymentRecord, PaymentResult, PaymentStatus, ResultSource, ReviewReason,
};
use crate::store::{Applied, PaymentStore, PendingWrite, QueryQueue, Settled, StoreError};

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
            duplicate_result_changes_nothing,
            conflicting_result_is_kept_in_history,
            contradicting_success_needs_review,
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
            unverifiable_success_needs_review_in_either_order,
            a_receipt_already_recorded_on_another_payment_needs_review,
            a_reused_receipt_on_an_orphan_or_after_a_query_needs_review,
            concurrent_payments_with_one_receipt_complete_once,
            a_result_sent_to_another_payments_url_is_not_applied,
            a_result_before_the_pending_write_must_come_to_its_url,
            a_held_success_changes_no_status_and_is_queried_first,
            a_success_is_held_only_on_its_own_open_payment,
            a_payment_is_shown_only_to_the_caller_that_asked_for_it,
            orphan_listed_until_pending_write,
            pending_index_lists_only_old_pending,
            query_attempts_counted_only_while_pending,
            query_queues_keep_their_order_and_their_members,
            payments_are_found_by_reference_newest_first,
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
        callback_nonce: None,
        created_by: None,
    }
}

/// The M-Pesa receipt of `id`'s success: one per payment, as M-Pesa issues them (ten
/// characters, a letter first).
pub fn receipt_of(id: &str) -> String {
    const ALNUM: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    // FNV-1a: stable across runs and platforms.
    let mut hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let mut receipt = String::from("T");
    for _ in 0..9 {
        receipt.push(char::from(ALNUM[(hash % 36) as usize]));
        hash /= 36;
    }
    receipt
}

/// A success callback for `id` (receipt [`receipt_of`] `id`), received at `at(30)`.
pub fn success(id: &str, paid: &str, paid_whole: Option<u64>) -> PaymentResult {
    PaymentResult {
        checkout_request_id: id.to_owned(),
        merchant_request_id: "29115-34620561-1".to_owned(),
        result_code: ResultCode::success(),
        result_desc: "The service request is processed successfully.".to_owned(),
        receipt: Some(receipt_of(id)),
        amount_paid: Some(paid.to_owned()),
        amount_paid_whole: paid_whole,
        paying_phone: Some("254708374149".to_owned()),
        transaction_date: Some("20240501100030".to_owned()),
        raw: Some(r#"{"Body":{"stkCallback":{"ResultCode":0}}}"#.to_owned()),
        contradictory: false,
        source: ResultSource::Callback,
        received_at: at(30),
        callback_nonce: None,
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
        contradictory: false,
        source: ResultSource::Callback,
        received_at: at(30),
        callback_nonce: None,
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

/// A record with what legitimately differs between two payments (id, receipt, write time)
/// blanked.
fn comparable(mut record: PaymentRecord) -> PaymentRecord {
    if record.receipt == Some(receipt_of(&record.checkout_request_id)) {
        record.receipt = Some(String::from("*"));
    }
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

/// Applies `r`, which must transition its payment, and answers the record it left and whether
/// it was an orphan. What the store said it recorded must be what it recorded.
async fn transitioned(store: &dyn PaymentStore, r: &PaymentResult) -> (PaymentRecord, bool) {
    let settled = match apply(store, r).await {
        Applied::Transitioned(settled) => settled,
        other => panic!("expected a transition, got {other:?}"),
    };
    let record = stored(store, &r.checkout_request_id).await;
    assert_eq!(
        (settled.status, settled.review_reason),
        (record.status, record.review_reason),
        "what the transition said it recorded"
    );
    (record, settled.orphan)
}
