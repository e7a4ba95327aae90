//! Reconciliation over the real local stack: payments pushed through the API, callbacks lost or
//! late as the simulator is scripted, and the `reconcile` function invoked under the Lambda
//! runtime emulator with the scheduled event, as EventBridge would. Windows are short
//! (grace 0 s, maximum age 3 s) so nothing waits for real minutes. Each test has its own stack.
//!
//! Needs the function binaries: `cargo build -p stk-push -p stk-callback -p payment-status -p reconcile`.

mod common;
mod wait;

use std::time::Duration;

use app::reconcile::query_result;
use daraja::{Clock, ResultCode, SystemClock};
use daraja_sim::{Endpoint, Outcome, SimConfig};
use dynamo::DynamoStore;
use local_stack::{env_vars, Function, LocalStack, StackOptions};
use payments::payment::PaymentStatus;
use payments::{Applied, PaymentStore};
use serde_json::{json, Value};

use wait::{Deadline, WAIT};

const MAX_AGE_SECS: u64 = 3;

struct Stack {
    stack: LocalStack,
    http: reqwest::Client,
}

async fn start(sim: SimConfig, max_queries_per_minute: u32) -> Stack {
    start_with(sim, max_queries_per_minute, &[]).await
}

/// No back-off between the queries of a pending payment (the rounds here are a second
/// apart, not a minute), and `extra` settings.
async fn start_with(sim: SimConfig, max_queries_per_minute: u32, extra: &[(&str, &str)]) -> Stack {
    let max_age = MAX_AGE_SECS.to_string();
    let rate = max_queries_per_minute.to_string();
    let mut env = vec![
        ("RECONCILE_GRACE_SECONDS", "0"),
        ("RECONCILE_MAX_AGE_SECONDS", max_age.as_str()),
        ("RECONCILE_MAX_QUERIES_PER_MINUTE", rate.as_str()),
        ("RECONCILE_RETRY_SECONDS", "0"),
    ];
    env.extend_from_slice(extra);
    let stack = LocalStack::start(StackOptions {
        sim,
        extra_env: env_vars(&env),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    Stack {
        stack,
        http: reqwest::Client::new(),
    }
}

fn quick_sim() -> SimConfig {
    SimConfig {
        callback_delay: Duration::from_millis(100),
        ..SimConfig::default()
    }
}

impl Stack {
    /// Waits until the simulator has closed the prompts of `ids` (the customer answered).
    /// Read from the simulator's state, not by a query: a query would itself be counted, use up
    /// the rate limit or the one 4999 answer, and change what these tests count.
    async fn let_prompts_close(&self, ids: &[String]) {
        let deadline = Deadline::after(WAIT, format!("the prompts of {ids:?} to close"));
        loop {
            let open: Vec<&String> = ids
                .iter()
                .filter(|id| self.stack.sim().prompt_open(id) != Some(false))
                .collect();
            if open.is_empty() {
                return;
            }
            deadline.not_yet(format!("still open: {open:?}")).await;
        }
    }
}

impl Stack {
    /// `POST /payments`; returns the checkout id of the accepted payment.
    async fn pay(&self, phone: &str) -> String {
        let response = self
            .http
            .post(format!("{}/payments", self.stack.api_url()))
            .json(&json!({"phone": phone, "amount": 100, "reference": "INV-1"}))
            .send()
            .await
            .expect("POST /payments");
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 202, "{body}");
        body["checkout_request_id"]
            .as_str()
            .expect("checkout_request_id")
            .to_owned()
    }

    /// `GET /payments/{id}`: the record as the merchant sees it.
    async fn status(&self, id: &str) -> Value {
        let response = self
            .http
            .get(format!("{}/payments/{id}", self.stack.api_url()))
            .send()
            .await
            .expect("GET /payments/{id}");
        assert_eq!(response.status().as_u16(), 200);
        response.json().await.expect("JSON record")
    }

    /// One scheduled round, with the sample EventBridge event; returns the round's report.
    async fn reconcile(&self) -> Value {
        let event: Value =
            serde_json::from_str(include_str!("../../events/reconcile-schedule.json"))
                .expect("sample event");
        let report = self
            .stack
            .invoke(Function::Reconcile, &event)
            .await
            .expect("reconcile invocation");
        assert!(report.get("errorType").is_none(), "{report}");
        report
    }

    /// One payment per phone, oldest first, whose callback is lost after the customer answered:
    /// only a query can learn the outcome. The prompts are closed when this returns.
    async fn answered_without_callback(&self, phones: &[&str]) -> Vec<String> {
        let mut ids = Vec::new();
        for phone in phones {
            self.stack
                .sim()
                .script(Some(phone), vec![Outcome::success().lost()]);
            ids.push(self.pay(phone).await);
        }
        for id in &ids {
            self.answer_now(id);
        }
        self.let_prompts_close(&ids).await;
        ids
    }

    /// The simulated customer answers now: the prompt closes (and the query turns final) on
    /// the simulator's own task, a moment later.
    fn answer_now(&self, id: &str) {
        self.stack.sim().complete_now(id);
    }

    /// Runs rounds, `pause` apart, until the payment leaves `PENDING`. A round that comes
    /// before the prompt has closed finds it still processing; the next one settles it.
    async fn reconcile_until_final(&self, id: &str, pause: Duration) -> Value {
        let deadline = Deadline::after(WAIT, format!("a round to settle {id}")).every(pause);
        loop {
            self.reconcile().await;
            let record = self.status(id).await;
            if record["status"] != "PENDING" {
                return record;
            }
            deadline.not_yet(&record).await;
        }
    }

    /// `GET /payments/{id}` until the payment's status is no longer `from`.
    async fn status_after(&self, id: &str, from: &str, deadline: Deadline) -> Value {
        loop {
            let record = self.status(id).await;
            if record["status"] != from {
                return record;
            }
            deadline.not_yet(&record).await;
        }
    }

    fn query_statuses(&self) -> Vec<Option<u16>> {
        self.stack
            .sim()
            .requests()
            .into_iter()
            .filter(|r| r.endpoint == Endpoint::StkQuery)
            .map(|r| r.status)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_success_callback_ends_completed_by_query() {
    let s = start(quick_sim(), 100).await;
    let id = s.answered_without_callback(&["0712000001"]).await.remove(0);

    let record = s
        .reconcile_until_final(&id, Duration::from_millis(300))
        .await;

    assert_eq!(record["status"], "COMPLETED", "{record}");
    assert_eq!(record["reconciled_by"], "query");
    assert_eq!(record["result_code"], "0");
    assert!(
        record["query_attempts"].as_u64().unwrap_or(0) >= 1,
        "{record}"
    );
    assert_eq!(s.stack.sim().counts().callbacks_sent, 0);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn lost_cancel_callback_ends_failed_by_query() {
    let s = start(quick_sim(), 100).await;
    s.stack
        .sim()
        .script(Some("0712000002"), vec![Outcome::code(1032).lost()]);
    let id = s.pay("0712000002").await;
    s.answer_now(&id);

    let record = s
        .reconcile_until_final(&id, Duration::from_millis(300))
        .await;

    assert_eq!(record["status"], "FAILED", "{record}");
    assert_eq!(record["outcome"], "cancelled");
    assert_eq!(record["result_code"], "1032");
    assert_eq!(record["reconciled_by"], "query");
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn transient_4999_is_not_final_and_the_next_round_settles_it() {
    let s = start(quick_sim(), 100).await;
    s.stack.sim().script(
        Some("0712000003"),
        vec![Outcome::code(2001).lost().transient_4999()],
    );
    let id = s.pay("0712000003").await;
    s.answer_now(&id);
    // The first round must meet the 4999, which only a closed prompt answers.
    s.let_prompts_close(std::slice::from_ref(&id)).await;

    let first = s.reconcile().await;
    assert_eq!(
        (first["queried"].as_u64(), first["not_final"].as_u64()),
        (Some(1), Some(1)),
        "{first}"
    );
    let record = s.status(&id).await;
    assert_eq!(record["status"], "PENDING");
    assert_eq!(record["query_attempts"], 1);

    s.reconcile().await;
    let record = s.status(&id).await;
    assert_eq!(record["status"], "FAILED", "{record}");
    assert_eq!(record["outcome"], "wrong_pin");
    assert_eq!(record["query_attempts"], 2);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn payment_still_processing_past_the_maximum_age_ends_expired() {
    let s = start(quick_sim(), 100).await;
    s.stack.sim().script(
        Some("0712000004"),
        vec![Outcome::success().never_final().lost()],
    );
    let id = s.pay("0712000004").await;

    // Rounds 700 ms apart, so that several query it before it is old enough to expire.
    let deadline =
        Deadline::after(WAIT, format!("{id} to expire")).every(Duration::from_millis(700));
    let mut expired_reports = 0;
    let record = loop {
        let report = s.reconcile().await;
        expired_reports += report["expired"].as_u64().unwrap_or(0);
        let record = s.status(&id).await;
        if record["status"] != "PENDING" {
            break record;
        }
        deadline.not_yet(&record).await;
    };

    assert_eq!(record["status"], "EXPIRED", "{record}");
    let stored = DynamoStore::new(s.stack.dynamo(), s.stack.table())
        .get(&id)
        .await
        .expect("read")
        .expect("stored");
    let created_at = stored.created_at.expect("details recorded");
    // `updated_at` is the moment of expiry.
    let age_ms = (stored.updated_at - created_at).num_milliseconds();
    println!(
        "EXPIRED {age_ms} ms after its creation, after {} queries",
        stored.query_attempts
    );
    assert!(
        age_ms >= 1000 * MAX_AGE_SECS as i64,
        "expired at {age_ms} ms"
    );
    assert_eq!(expired_reports, 1);
    // Queried every round until then, never with a final answer.
    assert!(
        record["query_attempts"].as_u64().unwrap_or(0) >= 3,
        "{record}"
    );
    assert_eq!(record["result_code"], Value::Null);
    assert!(s
        .stack
        .logs()
        .iter()
        .any(|l| l.contains("outcome unknown") && l.contains("M-Pesa portal")));
    // Nothing is left to query now: its next look is 15 minutes away.
    let report = s.reconcile().await;
    assert_eq!(
        (report["due"].as_u64(), report["expired_due"].as_u64()),
        (Some(0), Some(0))
    );
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_expired_payment_is_queried_again_and_ends_with_its_real_outcome() {
    // The customer pays 8 s after the prompt, past the 3 s maximum age, and the callback is
    // lost. Before, the payment stayed EXPIRED for good; now the expired queue asks again
    // (first after 1 s here, 15 minutes by default) and the query finds the payment.
    let s = start_with(
        quick_sim(),
        100,
        &[("RECONCILE_EXPIRED_RETRY_SECONDS", "1")],
    )
    .await;
    s.stack.sim().script(
        Some("0712000006"),
        vec![Outcome::success().lost().delay(Duration::from_secs(8))],
    );
    let id = s.pay("0712000006").await;
    let wait = Deadline::after(WAIT, format!("{id} to expire")).every(Duration::from_millis(500));
    loop {
        s.reconcile().await;
        let record = s.status(&id).await;
        if record["status"] != "PENDING" {
            assert_eq!(record["status"], "EXPIRED", "{record}");
            break;
        }
        wait.not_yet(&record).await;
    }
    let wait = Deadline::after(WAIT, format!("{id} to be found by a later query"))
        .every(Duration::from_millis(500));
    let mut expired_queried = 0;
    let record = loop {
        let report = s.reconcile().await;
        expired_queried += report["expired_due"].as_u64().unwrap_or(0);
        let record = s.status(&id).await;
        if record["status"] != "EXPIRED" {
            break record;
        }
        wait.not_yet(&record).await;
    };
    assert_eq!(record["status"], "COMPLETED", "{record}");
    assert_eq!(record["reconciled_by"], "query");
    assert!(expired_queried >= 1);
    assert_eq!(s.stack.sim().counts().callbacks_sent, 0);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn late_callback_after_expired_moves_the_payment_to_its_real_outcome() {
    let s = start(quick_sim(), 100).await;
    // The query never turns final; the callback comes ~6 s after the push, past the maximum age.
    s.stack.sim().script(
        Some("0712000005"),
        vec![Outcome::success()
            .never_final()
            .late(Duration::from_secs(6))],
    );
    let id = s.pay("0712000005").await;

    let deadline =
        Deadline::after(WAIT, format!("{id} to expire")).every(Duration::from_millis(500));
    let record = loop {
        s.reconcile().await;
        let record = s.status(&id).await;
        if record["status"] != "PENDING" {
            break record;
        }
        deadline.not_yet(&record).await;
    };
    // Had the callback been applied first, the payment would be COMPLETED here.
    assert_eq!(
        record["status"], "EXPIRED",
        "not expired before the callback: {record}"
    );

    let record = s
        .status_after(
            &id,
            "EXPIRED",
            Deadline::after(WAIT, format!("the late callback to move {id} on")),
        )
        .await;

    assert_eq!(record["status"], "COMPLETED", "{record}");
    assert_eq!(record["reconciled_by"], "callback");
    assert!(
        record["receipt"].as_str().is_some_and(|r| r.len() == 10),
        "{record}"
    );
    // The simulator counts its callback once our answer to it is back, which can be just after
    // the record changed.
    let wait = Deadline::after(WAIT, "the simulator to count its callback");
    while s.stack.sim().counts().callbacks_sent == 0 {
        wait.not_yet(0).await;
    }
    assert_eq!(s.stack.sim().counts().callbacks_sent, 1);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn completed_payment_is_untouched_by_a_contrary_query_result() {
    let s = start(quick_sim(), 100).await;
    let id = s.pay("0712000006").await;
    let completed = s
        .status_after(
            &id,
            "PENDING",
            Deadline::after(WAIT, format!("the callback to settle {id}")),
        )
        .await;
    assert_eq!(completed["status"], "COMPLETED", "{completed}");

    // The query reports a cancellation (the sandbox has been seen contradicting its callbacks),
    // applied with the same conditional write a reconciliation round uses.
    let store = DynamoStore::new(s.stack.dynamo(), s.stack.table());
    let contrary = query_result(
        &id,
        &ResultCode::from_text("1032"),
        "Request cancelled by user".to_owned(),
        String::new(),
        SystemClock.now(),
    );
    let applied = store.apply_result(&contrary).await.expect("store answers");
    assert!(matches!(applied, Applied::Conflict(_)), "{applied:?}");

    let record = s.status(&id).await;
    assert_eq!(record["status"], "COMPLETED");
    assert_eq!(record["receipt"], completed["receipt"]);
    assert_eq!(record["result_code"], "0");
    assert_eq!(record["reconciled_by"], "callback");
    let stored = store.get(&id).await.expect("read").expect("stored");
    assert_eq!(stored.status, PaymentStatus::Completed);
    assert_eq!(
        stored.history.len(),
        1,
        "the contrary result is kept for audit"
    );

    // A round has nothing to do: only pending payments are queried.
    let report = s.reconcile().await;
    assert_eq!(
        (report["due"].as_u64(), report["queried"].as_u64()),
        (Some(0), Some(0))
    );
    assert_eq!(s.stack.sim().counts().stk_query, 0);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rate_limit_answer_stops_the_round_and_no_more_queries_pass_than_allowed() {
    let s = start(
        SimConfig {
            query_rate_limit_per_minute: Some(2),
            ..quick_sim()
        },
        5,
    )
    .await;
    let ids = s
        .answered_without_callback(&["0712000011", "0712000012", "0712000013", "0712000014"])
        .await;

    let first = s.reconcile().await;
    // Two answered, the third got 429 and ended the round: the fourth was not tried.
    assert_eq!(first["queried"], 3, "{first}");
    assert_eq!(first["resolved"], 2, "{first}");
    assert_eq!(first["stopped"], "rate_limited", "{first}");

    let second = s.reconcile().await;
    assert_eq!(second["queried"], 1, "{second}");
    assert_eq!(second["stopped"], "rate_limited", "{second}");

    let statuses = s.query_statuses();
    let answered = statuses.iter().filter(|s| **s == Some(200)).count();
    let refused = statuses.iter().filter(|s| **s == Some(429)).count();
    assert_eq!((answered, refused), (2, 2), "{statuses:?}");
    assert_eq!(s.stack.sim().counts().stk_query, 4);
    let pending = [
        s.status(&ids[2]).await["status"].clone(),
        s.status(&ids[3]).await["status"].clone(),
    ];
    assert_eq!(pending, [json!("PENDING"), json!("PENDING")]);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_round_makes_no_more_queries_than_its_budget() {
    let s = start(quick_sim(), 2).await;
    let ids = s
        .answered_without_callback(&["0712000021", "0712000022", "0712000023"])
        .await;

    let report = s.reconcile().await;

    assert_eq!(report["queried"], 2, "{report}");
    assert_eq!(report["stopped"], "budget_spent", "{report}");
    assert_eq!(s.stack.sim().counts().stk_query, 2);
    // Oldest first.
    assert_eq!(s.status(&ids[0]).await["status"], "COMPLETED");
    assert_eq!(s.status(&ids[1]).await["status"], "COMPLETED");
    assert_eq!(s.status(&ids[2]).await["status"], "PENDING");
    s.stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Successes held until an STK query confirms them (`CALLBACK_CONFIRM`).

impl Stack {
    /// A success callback for `id` with a made-up `receipt`, posted to the payment's own URL
    /// as if from `source_ip`: what someone holding that URL could send.
    async fn forge_success(&self, id: &str, source_ip: &str, receipt: &str) -> u16 {
        let body = common::success_callback(id, receipt);
        let token = self.stack.callback_token_for(id);
        self.http
            .post(format!("{}/callbacks/stk/{token}", self.stack.api_url()))
            .header("x-local-source-ip", source_ip)
            .json(&body)
            .send()
            .await
            .expect("POST callback")
            .status()
            .as_u16()
    }

    /// Waits until the simulator's own callback for `id` was answered `200`.
    async fn callback_answered(&self, id: &str) -> Value {
        let deadline = Deadline::after(WAIT, format!("the callback of {id} to be answered"));
        loop {
            let sent = self.stack.sim().callbacks();
            if let Some(cb) = sent.iter().find(|c| c.checkout_request_id == id) {
                assert_eq!(cb.status, Some(200), "{:?}", cb.body);
                return cb.body.clone();
            }
            deadline
                .not_yet(format!("{} callbacks sent", sent.len()))
                .await;
        }
    }
}

fn receipt_in(callback: &Value) -> Value {
    callback["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
        .as_array()
        .and_then(|items| items.iter().find(|i| i["Name"] == "MpesaReceiptNumber"))
        .map(|i| i["Value"].clone())
        .expect("a receipt in the simulator's callback")
}

#[tokio::test(flavor = "multi_thread")]
async fn with_confirmation_a_success_counts_only_once_the_query_confirms_it() {
    let s = start_with(quick_sim(), 100, &[("CALLBACK_CONFIRM", "always")]).await;
    // A real payment, whose callback Safaricom sends; and a cancelled one, whose callback is
    // lost, given a made-up success by someone who holds its URL.
    s.stack
        .sim()
        .script(Some("0712000101"), vec![Outcome::success()]);
    s.stack
        .sim()
        .script(Some("0712000102"), vec![Outcome::code(1032).lost()]);
    let paid = s.pay("0712000101").await;
    let forged = s.pay("0712000102").await;
    let callback = s.callback_answered(&paid).await;
    s.let_prompts_close(&[paid.clone(), forged.clone()]).await;
    assert_eq!(
        s.forge_success(&forged, "198.51.100.7", "FORGED0001").await,
        200
    );

    // Held: nothing counts yet, and no query was sent.
    for id in [&paid, &forged] {
        let record = s.status(id).await;
        assert_eq!(record["status"], "PENDING", "{record}");
        assert_eq!(record["awaiting_confirmation"], true, "{record}");
        assert!(record["receipt"].is_null(), "{record}");
    }
    assert_eq!(s.stack.sim().counts().stk_query, 0);
    let held = s
        .stack
        .logs()
        .iter()
        .filter(|l| l.contains("\"decision\":\"held\""))
        .count();
    assert_eq!(held, 2);

    let report = s.reconcile().await;
    assert_eq!(report["queried"], 2, "{report}");
    assert_eq!(s.stack.sim().counts().stk_query, 2);

    // Confirmed: completed, with the receipt Safaricom sent.
    let record = s.status(&paid).await;
    assert_eq!(record["status"], "COMPLETED", "{record}");
    assert_eq!(record["receipt"], receipt_in(&callback), "{record}");
    assert_eq!(record["amount_paid"], "100");
    assert_eq!(record["awaiting_confirmation"], false);
    // Not confirmed: Daraja says cancelled; the success goes to review, never to COMPLETED.
    let record = s.status(&forged).await;
    assert_eq!(record["status"], "NEEDS_REVIEW", "{record}");
    assert_eq!(record["review_reason"], "success_after_failure", "{record}");
    assert_eq!(record["result_code"], "1032", "{record}");
    assert!(record["receipt"].is_null(), "{record}");
    let unconfirmed = s
        .stack
        .logs()
        .iter()
        .filter(|l| l.contains("\"decision\":\"unconfirmed\"") && l.contains("198.51.100.7"))
        .count();
    assert_eq!(unconfirmed, 1);
    s.stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_confirmation_of_unlisted_sources_a_listed_success_counts_at_once() {
    let s = start_with(
        quick_sim(),
        100,
        &[
            ("CALLBACK_CONFIRM", "unlisted"),
            ("CALLBACK_ALLOWED_IPS", "safaricom"),
            // The round below must find only the held payment: the other is not yet due.
            ("RECONCILE_GRACE_SECONDS", "3600"),
            ("RECONCILE_MAX_AGE_SECONDS", "7200"),
        ],
    )
    .await;
    for phone in ["0712000111", "0712000112"] {
        s.stack
            .sim()
            .script(Some(phone), vec![Outcome::success().lost()]);
    }
    let listed = s.pay("0712000111").await;
    let unlisted = s.pay("0712000112").await;
    s.answer_now(&listed);
    s.answer_now(&unlisted);
    s.let_prompts_close(&[listed.clone(), unlisted.clone()])
        .await;

    // From one of Safaricom's addresses: applied on arrival.
    assert_eq!(
        s.forge_success(&listed, "196.201.214.207", "TKL0000001")
            .await,
        200
    );
    assert_eq!(s.status(&listed).await["status"], "COMPLETED");
    // From elsewhere: held, and the payment is queried in the next round, before its grace
    // period is over.
    assert_eq!(
        s.forge_success(&unlisted, "198.51.100.7", "TKU0000002")
            .await,
        200
    );
    let record = s.status(&unlisted).await;
    assert_eq!(record["status"], "PENDING", "{record}");
    assert_eq!(record["awaiting_confirmation"], true, "{record}");
    let report = s.reconcile().await;
    assert_eq!(
        (report["queried"].as_u64(), report["due"].as_u64()),
        (Some(1), Some(1)),
        "{report}"
    );
    let record = s.status(&unlisted).await;
    assert_eq!(record["status"], "COMPLETED", "{record}");
    assert_eq!(
        record["receipt"], "TKU0000002",
        "the query confirmed it: {record}"
    );
    s.stack.shutdown().await;
}
