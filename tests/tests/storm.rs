//! A reproducible callback storm against the local stack (`make storm`; ignored by `make test`).
//!
//! 200 payments through `POST /payments`, then 1,000 callbacks with at least 16 in flight:
//! the 200 results (20 of them delivered by the simulator before the pending write), 300
//! exact duplicates shuffled in with them, 350 results for ids never issued (orphans), 50
//! bodies that are not callbacks, and, once every payment is final, 100 contradicting results.
//! The order is fixed by a seeded shuffle, so every run sends the same sequence.
//!
//! Checks: no payment lost, no record transitioned twice, every orphan and unreadable body
//! kept, every final record equal to its expected outcome; prints the throughput.
//!
//! A second storm pushes through DynamoDB outages with short function timeouts: every payment
//! the simulator charged ends recorded with its real outcome, or (when its callback was lost
//! and its acceptance never recorded) in doubt and counted for the alarm.

mod common;
mod faulty;
mod wait;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use daraja::{mask_id, Clock, SystemClock};
use daraja_sim::{Outcome, SimConfig};
use dynamo::DynamoStore;
use local_stack::{env_vars, EventsOptions, LocalStack, StackOptions, WebhookOptions};
use payments::intent::PushLedger;

use common::moto_endpoint;
use faulty::FaultyDynamo;
use payments::payment::PaymentStatus;
use payments::PaymentStore;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use wait::Deadline;

const PAYMENTS: usize = 200;
const EARLY: usize = 20;
const DUPLICATES: usize = 300;
const ORPHANS: usize = 350;
const ORPHAN_DUPLICATES: usize = 50;
const UNREADABLE: usize = 50;
const CONFLICTS: usize = 100;
const IN_FLIGHT: usize = 16;
const POOL_SIZE: usize = 4;
const SEED: u64 = 0x5eed_2026;
const WEBHOOK_SECRET: &str = "whsec_storm_5d2e8a";

/// What a payment's callback says, and what the record must end as.
#[derive(Debug, Clone)]
struct Plan {
    phone: String,
    amount: u32,
    code: i64,
    paid: u32,
    status: PaymentStatus,
    early: bool,
}

fn plan(i: usize) -> Plan {
    let amount = 10 + (i as u32 * 37) % 5_000;
    let code = [0, 0, 0, 1032, 0, 1037, 0, 2001, 0, 1][i % 10];
    let paid = if code == 0 && i % 40 == 4 {
        amount - 1
    } else {
        amount
    };
    let status = match (code, paid == amount) {
        (0, true) => PaymentStatus::Completed,
        (0, false) => PaymentStatus::NeedsReview,
        _ => PaymentStatus::Failed,
    };
    Plan {
        phone: format!("07{:08}", 20_000_000 + i),
        amount,
        code,
        paid,
        status,
        // Early ones are plain successes, delivered by the simulator.
        early: i % 10 == 0 && i / 10 < EARLY,
    }
}

/// A seeded xorshift: the same shuffle on every run.
struct Shuffle(u64);

impl Shuffle {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = (self.next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
    }
}

fn callback(id: &str, code: i64, receipt: &str, paid: u32, phone: &str) -> Vec<u8> {
    let mut cb = json!({
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": id,
        "ResultCode": code,
        "ResultDesc": if code == 0 { "The service request is processed successfully." } else { "Failed" },
    });
    if code == 0 {
        let msisdn: u64 = format!("254{}", &phone[1..]).parse().expect("digits");
        cb["CallbackMetadata"] = json!({"Item": [
            {"Name": "Amount", "Value": paid},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20261127090012u64},
            {"Name": "PhoneNumber", "Value": msisdn},
        ]});
    }
    json!({"Body": {"stkCallback": cb}})
        .to_string()
        .into_bytes()
}

/// Sends every body with `IN_FLIGHT` requests at a time; returns each answer's status in order.
/// POSTs each body to its URL, at most [`IN_FLIGHT`] at a time; the statuses in order.
async fn deliver(http: &reqwest::Client, deliveries: Vec<(String, Vec<u8>)>) -> Vec<u16> {
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let tasks: Vec<_> = deliveries
        .into_iter()
        .map(|(url, body)| {
            let (http, gate) = (http.clone(), gate.clone());
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore open");
                match http
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-local-source-ip", "196.201.214.200")
                    .body(body)
                    .send()
                    .await
                {
                    Ok(response) => response.status().as_u16(),
                    Err(_) => 0,
                }
            })
        })
        .collect();
    let mut statuses = Vec::with_capacity(tasks.len());
    for task in tasks {
        statuses.push(task.await.expect("delivery task"));
    }
    statuses
}

/// A merchant's webhook endpoint checking signatures with [`WEBHOOK_SECRET`].
async fn receiver() -> webhook_receiver::Receiver {
    webhook_receiver::start(
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        WEBHOOK_SECRET,
        false,
    )
    .await
    .expect("webhook receiver")
}

/// Events on the stack's bus and as webhooks to `receiver`, retried for 10 minutes.
fn events_to(receiver: &webhook_receiver::Receiver) -> EventsOptions {
    EventsOptions {
        webhook: Some(WebhookOptions::local(
            receiver.url(),
            WEBHOOK_SECRET.into(),
            Duration::from_secs(600),
        )),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "load test: run with `make storm`"]
async fn callback_storm_loses_nothing_and_applies_each_result_once() {
    let receiver = receiver().await;
    let stack = LocalStack::start(StackOptions {
        pool_size: POOL_SIZE,
        sim: SimConfig {
            callback_delay: Duration::from_millis(20),
            ..SimConfig::default()
        },
        events: Some(events_to(&receiver)),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(IN_FLIGHT)
        .build()
        .expect("http client");
    let plans: Vec<Plan> = (0..PAYMENTS).map(plan).collect();
    for p in &plans {
        let outcome = if p.early {
            Outcome::success().before_response()
        } else {
            // We deliver these ourselves, to control order and duplicates.
            Outcome::success().lost()
        };
        stack.sim().script(Some(&p.phone), vec![outcome]);
    }

    // Phase 1: the payments.
    let started = Instant::now();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let pushes: Vec<_> = plans
        .iter()
        .map(|p| {
            let (http, gate) = (http.clone(), gate.clone());
            let url = format!("{}/payments", stack.api_url());
            let body = json!({"phone": p.phone, "amount": p.amount, "reference": "STORM"});
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore open");
                let response = http.post(url).json(&body).send().await.expect("push");
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                (status, answer)
            })
        })
        .collect();
    let mut ids = Vec::with_capacity(PAYMENTS);
    for push in pushes {
        let (status, answer) = push.await.expect("push task");
        assert_eq!(status, 202, "{answer}");
        ids.push(
            answer["checkout_request_id"]
                .as_str()
                .expect("id")
                .to_string(),
        );
    }
    let push_secs = started.elapsed().as_secs_f64();

    // Phase 2: results, duplicates, orphans and junk, shuffled together.
    let receipts: Vec<String> = (0..PAYMENTS).map(|i| format!("STM{i:07}")).collect();
    // An early payment's result is the body the simulator already delivered, so that its
    // duplicates are exact.
    let early_bodies: HashMap<String, Vec<u8>> = stack
        .sim()
        .callbacks()
        .into_iter()
        .map(|c| (c.checkout_request_id, c.body.to_string().into_bytes()))
        .collect();
    let primary: Vec<Vec<u8>> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| match early_bodies.get(&ids[i]) {
            Some(body) if p.early => body.clone(),
            _ => callback(&ids[i], p.code, &receipts[i], p.paid, &p.phone),
        })
        .collect();
    assert_eq!(
        early_bodies.len(),
        EARLY,
        "early callbacks delivered by the simulator"
    );
    let orphan_ids: Vec<String> = (0..ORPHANS)
        .map(|i| format!("ws_CO_271120261000009999{i:04}"))
        .collect();
    let orphan_bodies: Vec<Vec<u8>> = orphan_ids
        .iter()
        .enumerate()
        .map(|(i, id)| callback(id, 0, &format!("ORP{i:07}"), 50, "0799999999"))
        .collect();
    // Each result goes to its push's own callback URL; an orphan (and its duplicates) to one
    // URL no push sent.
    let url_of = |token: String| format!("{}/callbacks/stk/{token}", stack.api_url());
    let payment_urls: Vec<String> = ids
        .iter()
        .map(|id| url_of(stack.callback_token_for(id)))
        .collect();
    let orphan_urls: Vec<String> = orphan_ids
        .iter()
        .map(|id| url_of(stack.callback_token_for(id)))
        .collect();
    let mut batch: Vec<((String, Vec<u8>), u16)> = Vec::new();
    for (i, body) in primary.iter().enumerate() {
        if !plans[i].early {
            batch.push(((payment_urls[i].clone(), body.clone()), 200));
        }
    }
    for d in 0..DUPLICATES - ORPHAN_DUPLICATES {
        let i = (d * 7) % PAYMENTS;
        batch.push(((payment_urls[i].clone(), primary[i].clone()), 200));
    }
    for d in 0..ORPHAN_DUPLICATES {
        let i = (d * 13) % ORPHANS;
        batch.push(((orphan_urls[i].clone(), orphan_bodies[i].clone()), 200));
    }
    for (i, body) in orphan_bodies.iter().enumerate() {
        batch.push(((orphan_urls[i].clone(), body.clone()), 200));
    }
    for u in 0..UNREADABLE {
        let junk = if u % 2 == 0 {
            format!("<html>storm {u}</html>").into_bytes()
        } else {
            json!({"Body": {"storm": u}}).to_string().into_bytes()
        };
        batch.push(((url_of(stack.unsent_callback_token()), junk), 400));
    }
    let mut shuffle = Shuffle(SEED);
    shuffle.shuffle(&mut batch);
    let callbacks_started = Instant::now();
    let (deliveries, expected): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
    let statuses = deliver(&http, deliveries).await;

    // Phase 3: contradicting results for final payments.
    let conflicts: Vec<(String, Vec<u8>)> = (0..CONFLICTS)
        .map(|c| {
            let i = (c * 3 + 1) % PAYMENTS;
            let p = &plans[i];
            let code = if p.code == 0 { 1032 } else { 0 };
            let body = callback(&ids[i], code, &format!("CNF{c:07}"), p.amount, &p.phone);
            (payment_urls[i].clone(), body)
        })
        .collect();
    let mut conflicts_per_payment = vec![0u32; PAYMENTS];
    for c in 0..CONFLICTS {
        conflicts_per_payment[(c * 3 + 1) % PAYMENTS] += 1;
    }
    let conflict_statuses = deliver(&http, conflicts).await;
    let callback_secs = callbacks_started.elapsed().as_secs_f64();
    let sent_by_us = statuses.len() + conflict_statuses.len();
    let callbacks_total = sent_by_us + EARLY;

    let wrong_answers = statuses
        .iter()
        .zip(&expected)
        .filter(|(got, want)| got != want)
        .count()
        + conflict_statuses.iter().filter(|s| **s != 200).count();

    // The checks.
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    let early_receipts: HashMap<String, String> = stack
        .sim()
        .callbacks()
        .into_iter()
        .filter_map(|c| {
            let items = c.body["Body"]["stkCallback"]["CallbackMetadata"]["Item"].clone();
            let receipt = items
                .as_array()?
                .iter()
                .find(|item| item["Name"] == "MpesaReceiptNumber")?["Value"]
                .as_str()?
                .to_string();
            Some((c.checkout_request_id, receipt))
        })
        .collect();
    let mut lost = 0;
    let mut wrong_records = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        let Some(record) = store.get(&ids[i]).await.expect("read") else {
            lost += 1;
            continue;
        };
        let receipt = if p.early {
            early_receipts.get(&ids[i]).cloned()
        } else if p.code == 0 {
            Some(receipts[i].clone())
        } else {
            None
        };
        // A failed payment contradicted by a success with a receipt may have been paid after
        // all: it needs review (its first result stays).
        let status = if p.code != 0 && conflicts_per_payment[i] > 0 {
            PaymentStatus::NeedsReview
        } else {
            p.status
        };
        let ok = record.status == status
            && record.result_code.as_deref() == Some(p.code.to_string().as_str())
            && record.receipt == receipt
            && record.amount == Some(p.amount)
            && record.details_recorded
            && record.conflicting_callbacks == conflicts_per_payment[i]
            && record.history.len() == conflicts_per_payment[i] as usize;
        if record.status == PaymentStatus::Pending {
            lost += 1;
        }
        if !ok {
            wrong_records.push(format!("{i}: expected {p:?}, got {record:?}"));
        }
    }
    let needs_review = plans
        .iter()
        .enumerate()
        .filter(|(i, p)| {
            p.status == PaymentStatus::NeedsReview || (p.code != 0 && conflicts_per_payment[*i] > 0)
        })
        .count();
    let orphans = store.orphans(10_000).await.expect("orphans");
    let mut orphans_kept = 0;
    for (i, id) in orphan_ids.iter().enumerate() {
        match orphans.iter().find(|o| &o.checkout_request_id == id) {
            // Its duplicates (answered 200, counted with the answers) wrote nothing.
            Some(o) if o.history.is_empty() && o.conflicting_callbacks == 0 => orphans_kept += 1,
            Some(o) => wrong_records.push(format!("orphan {i}: {o:?}")),
            None => {}
        }
    }
    let unreadable_kept = stack
        .dynamo()
        .query()
        .table_name(stack.table())
        .index_name("orphan-index")
        .key_condition_expression("orphan_pk = :o")
        .expression_attribute_values(
            ":o",
            aws_sdk_dynamodb::types::AttributeValue::S("UNREADABLE".into()),
        )
        .select(aws_sdk_dynamodb::types::Select::Count)
        .send()
        .await
        .expect("count unreadable")
        .count as usize;

    // Transitions: one log event per record that became final.
    let mut transitions: HashMap<String, usize> = HashMap::new();
    for line in stack.logs() {
        let Some(event) = line
            .split_once("] ")
            .and_then(|(_, json)| serde_json::from_str::<Value>(json).ok())
        else {
            continue;
        };
        let fields = &event["fields"];
        if fields["decision"] == "transitioned" || fields["decision"] == "orphan" {
            let id = fields["checkout_request_id"]
                .as_str()
                .unwrap_or("")
                .to_string();
            *transitions.entry(id).or_default() += 1;
        }
    }
    let expected_ids: Vec<String> = ids
        .iter()
        .chain(&orphan_ids)
        .map(|id| mask_id(id))
        .collect();
    let double_transitions = transitions.values().filter(|n| **n > 1).count();
    let missing_transitions = expected_ids
        .iter()
        .filter(|id| !transitions.contains_key(*id))
        .count();

    println!("\n== callback storm (pool_size {POOL_SIZE} per function, {IN_FLIGHT} in flight) ==");
    println!(
        "payments                 {PAYMENTS} ({EARLY} with the callback before the pending write)"
    );
    println!(
        "callbacks                {callbacks_total} ({} duplicates, {ORPHANS} orphans, {UNREADABLE} unreadable, {CONFLICTS} contradicting)",
        DUPLICATES
    );
    println!(
        "pushes/s                 {:.1}",
        PAYMENTS as f64 / push_secs
    );
    println!(
        "callbacks/s              {:.1} ({sent_by_us} in {callback_secs:.2} s)",
        sent_by_us as f64 / callback_secs
    );
    println!("needs review (expected)  {needs_review}");
    println!("wrong HTTP answers       {wrong_answers}");
    println!("payments lost            {lost}");
    println!("double transitions       {double_transitions}");
    println!("missing transitions      {missing_transitions}");
    println!("orphans kept             {orphans_kept} of {ORPHANS}");
    println!("unreadable kept          {unreadable_kept} of {UNREADABLE}");
    println!("records not as expected  {}", wrong_records.len());
    for wrong in wrong_records.iter().take(5) {
        println!("  {wrong}");
    }

    assert_eq!(callbacks_total, 1_000);
    // 5 paid a shilling short, and 40 failed payments given a success with a receipt later.
    assert_eq!(needs_review, 45);
    assert_eq!(wrong_answers, 0);
    assert_eq!(lost, 0);
    assert_eq!(double_transitions, 0);
    assert_eq!(missing_transitions, 0);
    assert_eq!(orphans_kept, ORPHANS);
    assert_eq!(orphans.len(), ORPHANS, "payments left in the orphan list");
    assert_eq!(unreadable_kept, UNREADABLE);
    assert!(wrong_records.is_empty());

    // Events: one per state change the storm made, on the bus and as a webhook.
    let changes: HashMap<String, Vec<PaymentStatus>> = plans
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let mut seq = vec![p.status];
            if p.code != 0 && conflicts_per_payment[i] > 0 {
                seq.push(PaymentStatus::NeedsReview);
            }
            (ids[i].clone(), seq)
        })
        .collect();
    let expected_events: usize = changes.values().map(Vec::len).sum();
    let pipeline = stack.events().expect("events enabled");
    let deadline = Deadline::after(Duration::from_secs(240), "every state change's event")
        .every(Duration::from_millis(500));
    let bus = loop {
        let bus = pipeline.bus_events().await;
        let webhooks = receiver.received().len();
        if bus.len() >= expected_events && webhooks >= expected_events {
            break bus;
        }
        deadline
            .not_yet(format!("{} on the bus, {webhooks} webhooks", bus.len()))
            .await;
    };
    let events_secs = started.elapsed().as_secs_f64();
    let mut emitted: HashMap<String, Vec<PaymentStatus>> = HashMap::new();
    let mut ids_seen = std::collections::HashSet::new();
    let mut detail_bytes = 0;
    for event in &bus {
        let detail = &event["detail"];
        detail_bytes += detail.to_string().len();
        ids_seen.insert(detail["event_id"].as_str().unwrap_or_default().to_owned());
        let status: PaymentStatus =
            serde_json::from_value(detail["status"].clone()).expect("status");
        emitted
            .entry(
                detail["checkout_request_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default()
            .push(status);
    }
    let missing: usize = changes
        .iter()
        .map(|(id, want)| {
            let got = emitted.get(id).map_or(&[][..], Vec::as_slice);
            want.iter().filter(|s| !got.contains(s)).count()
        })
        .sum();
    let unexpected = emitted
        .keys()
        .filter(|id| !changes.contains_key(*id))
        .count();
    let webhooks = receiver.received();
    // Order is the webhooks' promise (one FIFO group per payment); the bus makes none.
    let mut delivered: HashMap<String, Vec<PaymentStatus>> = HashMap::new();
    for webhook in &webhooks {
        let data = &webhook.body["data"];
        if let Ok(status) = serde_json::from_value::<PaymentStatus>(data["status"].clone()) {
            delivered
                .entry(
                    data["checkout_request_id"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
                .or_default()
                .push(status);
        }
    }
    let out_of_order = changes
        .iter()
        .filter(|(id, want)| delivered.get(*id).is_some_and(|got| got != *want))
        .count();
    let webhook_ids: std::collections::HashSet<String> =
        webhooks.iter().map(|w| w.event_id.clone()).collect();
    let stats = pipeline.stats();
    let consumer_calls = stats
        .consumer_invocations
        .load(std::sync::atomic::Ordering::Relaxed);
    println!("state changes made       {expected_events}");
    println!("events on the bus        {} ({} distinct ids), missing {missing}, for no payment of ours {unexpected}", bus.len(), ids_seen.len());
    println!("webhooks accepted        {} ({} distinct ids, {} refused for their signature), payments out of order {out_of_order}", webhooks.len(), webhook_ids.len(), receiver.rejected());
    println!(
        "consumer                 {} stream records, {consumer_calls} invocations, {:.1} events per invocation, {} batches to the on-failure queue",
        stats.stream_records.load(std::sync::atomic::Ordering::Relaxed),
        bus.len() as f64 / consumer_calls.max(1) as f64,
        stats.stream_failures.load(std::sync::atomic::Ordering::Relaxed),
    );
    println!(
        "events/s end to end      {:.1} ({} events, first push to last webhook {events_secs:.1} s); detail {} bytes on average",
        bus.len() as f64 / events_secs,
        bus.len(),
        detail_bytes / bus.len().max(1)
    );
    assert_eq!(missing, 0, "state changes without an event");
    assert_eq!(ids_seen.len(), expected_events, "one event id per change");
    assert_eq!(out_of_order, 0);
    assert_eq!(unexpected, 0, "events for orphans");
    assert_eq!(webhook_ids, ids_seen, "webhooks are the bus's events");
    assert_eq!(receiver.rejected(), 0);
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Pushes through DynamoDB outages, with short function timeouts.

const FAULT_PAYMENTS: usize = 120;
const FAULT_IN_FLIGHT: usize = 8;

/// What the simulator does with the push to payment `i`: most are paid, some cancelled, and
/// some paid with the callback lost (only a query can tell, when a record exists to query).
fn fault_outcome(i: usize) -> (Outcome, Option<PaymentStatus>, bool) {
    match i % 10 {
        6 | 7 => (Outcome::code(1032), Some(PaymentStatus::Failed), false),
        8 => (
            Outcome::success().lost(),
            Some(PaymentStatus::Completed),
            true,
        ),
        _ => (Outcome::success(), Some(PaymentStatus::Completed), false),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "load test: run with `make storm`"]
async fn pushes_through_dynamodb_outages_leave_no_charged_payment_without_a_record() {
    // Every write of the push function (its token's aside) fails during outages of 8 s in
    // every 12 s; the functions have 8 s (so an accepted write retried to the deadline can still fail); the
    // callbacks come 15 s after the push, when a push left in doubt can be linked. The outage
    // is the push path's: a callback's own write failing too is another storm (a 503, counted
    // and alarmed as CallbackStoreFailed, that nothing else can make up for when its push is
    // in doubt).
    let (faults, proxy) = FaultyDynamo::start(moto_endpoint().await, 0..0).await;
    faults.only_for("stk-push");
    let stack = LocalStack::start(StackOptions {
        pool_size: POOL_SIZE,
        sim: SimConfig {
            callback_delay: Duration::from_secs(15),
            ..SimConfig::default()
        },
        dynamodb_endpoint: Some(proxy),
        extra_env: env_vars(&[
            ("AWS_LAMBDA_FUNCTION_TIMEOUT", "8"),
            ("RECONCILE_GRACE_SECONDS", "0"),
            ("RECONCILE_RETRY_SECONDS", "0"),
            ("RECONCILE_MAX_QUERIES_PER_MINUTE", "1000"),
        ]),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    // Daraja answers in 300 ms, so the pushes span several outages.
    stack.sim().set_latency(Duration::from_millis(300));
    let phone = |i: usize| format!("07{:08}", 30_000_000 + i);
    for i in 0..FAULT_PAYMENTS {
        stack
            .sim()
            .script(Some(&phone(i)), vec![fault_outcome(i).0]);
    }
    let outages = {
        let faults = faults.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(4)).await;
                faults.outage(true);
                tokio::time::sleep(Duration::from_secs(8)).await;
                faults.outage(false);
            }
        })
    };

    let started = Instant::now();
    let http = reqwest::Client::new();
    let gate = Arc::new(Semaphore::new(FAULT_IN_FLIGHT));
    let pushes: Vec<_> = (0..FAULT_PAYMENTS)
        .map(|i| {
            let (http, gate) = (http.clone(), gate.clone());
            let url = format!("{}/payments", stack.api_url());
            let body = json!({"phone": phone(i), "amount": 100, "reference": "FAULTS"});
            tokio::spawn(async move {
                let _permit = gate.acquire_owned().await.expect("semaphore open");
                let response = http
                    .post(url)
                    .header("Idempotency-Key", format!("storm-fault-{i}"))
                    .json(&body)
                    .send()
                    .await
                    .expect("push");
                let status = response.status().as_u16();
                let answer: Value = response.json().await.unwrap_or(Value::Null);
                (status, answer)
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(FAULT_PAYMENTS);
    for push in pushes {
        answers.push(push.await.expect("push task"));
    }
    let push_secs = started.elapsed().as_secs_f64();
    outages.abort();
    faults.heal();

    // What the simulator charged: the pushes it accepted, by phone.
    let accepted: HashMap<String, String> = stack
        .sim()
        .requests()
        .into_iter()
        .filter(|r| r.status == Some(200))
        .filter_map(|r| {
            let id = r.response["CheckoutRequestID"].as_str()?.to_owned();
            let msisdn = r.body["PhoneNumber"]
                .as_str()
                .map(str::to_owned)
                .or_else(|| r.body["PhoneNumber"].as_u64().map(|n| n.to_string()))?;
            Some((format!("0{}", &msisdn[3..]), id))
        })
        .collect();
    let delivered = (0..FAULT_PAYMENTS)
        .filter(|i| accepted.contains_key(&phone(*i)) && !fault_outcome(*i).2)
        .count() as u64;
    let wait = Deadline::after(Duration::from_secs(90), "every callback to be sent");
    loop {
        let sent = stack.sim().counts().callbacks_sent;
        if sent >= delivered {
            break;
        }
        wait.not_yet(format!("{sent} of {delivered}")).await;
    }
    // Reconciliation for the lost callbacks, until nothing pending is left to query.
    let schedule: Value =
        serde_json::from_str(include_str!("../../events/reconcile-schedule.json")).expect("event");
    let wait = Deadline::after(Duration::from_secs(90), "reconciliation to settle")
        .every(Duration::from_millis(500));
    loop {
        let report = stack
            .invoke(local_stack::Function::Reconcile, &schedule)
            .await
            .expect("reconcile");
        if report["due"] == 0 {
            break;
        }
        wait.not_yet(&report).await;
    }

    let store = DynamoStore::new(stack.dynamo(), stack.table());
    let ledger = dynamo::DynamoLedger::new(stack.dynamo(), stack.table());
    let mut by_answer: HashMap<String, usize> = HashMap::new();
    let (mut recorded, mut in_doubt_alarmed, mut wrong) = (0, 0, Vec::new());
    for (i, (status, body)) in answers.iter().enumerate() {
        let code = body["error"]["code"].as_str().unwrap_or("");
        *by_answer.entry(format!("{status} {code}")).or_default() += 1;
        let (_, expected, lost) = fault_outcome(i);
        match accepted.get(&phone(i)) {
            None => {
                // Nothing charged: nothing may say otherwise.
                if *status == 202 {
                    wrong.push(format!("{i}: 202 but the simulator charged nothing"));
                }
            }
            Some(id) => {
                let record = store.get(id).await.expect("read");
                match record {
                    Some(r) if r.details_recorded && Some(r.status) == expected => recorded += 1,
                    None if lost => {
                        // Nothing could tell us: the push must be in doubt, and counted.
                        let intent = ledger
                            .intent(
                                &payments::intent::IntentKey::idempotency_for(
                                    Some(local_stack::gateway::LOCAL_CALLER),
                                    &format!("storm-fault-{i}"),
                                ),
                                SystemClock.now(),
                            )
                            .await
                            .expect("intent");
                        match intent {
                            Some(intent) if intent.is_in_doubt(SystemClock.now()) => {
                                in_doubt_alarmed += 1
                            }
                            other => {
                                wrong.push(format!("{i}: charged, no record, intent {other:?}"))
                            }
                        }
                    }
                    other => wrong.push(format!(
                        "{i}: charged ({id}), answered {status} {code}, record {other:?}"
                    )),
                }
            }
        }
    }
    let logs = stack.logs();
    let count = |needle: &str| logs.iter().filter(|l| l.contains(needle)).count();
    let in_doubt_metrics = count("\"PushInDoubt\":1");
    let linked = count("\"PushInDoubtLinked\":1");
    let mut answer_list: Vec<_> = by_answer.into_iter().collect();
    answer_list.sort();
    println!("pushes                   {FAULT_PAYMENTS} in {push_secs:.1} s, {} writes failed by the proxy", faults.failed());
    println!("answers                  {answer_list:?}");
    println!("charged by the simulator {}", accepted.len());
    println!("recorded as charged      {recorded} (of them linked from doubt: {linked})");
    println!("in doubt, nothing to tell us (callback lost), alarmed: {in_doubt_alarmed}; PushInDoubt metrics {in_doubt_metrics}");
    println!("charged without a correct record: {}", wrong.len());
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(recorded + in_doubt_alarmed, accepted.len());
    if in_doubt_alarmed > 0 {
        assert!(in_doubt_metrics >= in_doubt_alarmed);
    }
    stack.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Events through the local consumer: how fast changes become events and webhooks.

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "load test: run with `make storm`"]
async fn events_flow_through_the_local_consumer() {
    const CHANGES: usize = 300;
    let receiver = receiver().await;
    let stack = LocalStack::start(StackOptions {
        pool_size: POOL_SIZE,
        events: Some(events_to(&receiver)),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    let ids: Vec<String> = (0..CHANGES)
        .map(|i| format!("ws_CO_02122026000000{i:06}"))
        .collect();
    for id in &ids {
        store
            .record_pending(&payments::NewPayment {
                checkout_request_id: id.clone(),
                merchant_request_id: format!("m-{id}"),
                charge: daraja::Charge::parse("254708374149", 100, "EVT", None).expect("charge"),
                created_at: chrono::Utc::now(),
                callback_nonce: None,
                created_by: None,
            })
            .await
            .expect("pending");
    }
    // One change of status each (PENDING -> EXPIRED): one event each, written as fast as moto
    // takes them.
    let started = Instant::now();
    for id in &ids {
        store
            .expire(id, chrono::Utc::now(), None)
            .await
            .expect("expire");
    }
    let written = started.elapsed().as_secs_f64();
    let pipeline = stack.events().expect("events enabled");
    let deadline = Deadline::after(Duration::from_secs(240), "every change's event and webhook")
        .every(Duration::from_millis(100));
    let mut bus_done = None;
    let (bus, hooks) = loop {
        let bus = pipeline.bus_events().await;
        if bus.len() >= CHANGES && bus_done.is_none() {
            bus_done = Some(started.elapsed().as_secs_f64());
        }
        let hooks = receiver.received();
        if bus_done.is_some() && hooks.len() >= CHANGES {
            break (bus, hooks);
        }
        deadline
            .not_yet(format!(
                "{} on the bus, {} webhooks",
                bus.len(),
                hooks.len()
            ))
            .await;
    };
    let hooks_done = started.elapsed().as_secs_f64();
    let bus_done = bus_done.unwrap_or(hooks_done);
    let stats = pipeline.stats();
    let invocations = stats
        .consumer_invocations
        .load(std::sync::atomic::Ordering::Relaxed);
    let deliveries = stats
        .delivery_invocations
        .load(std::sync::atomic::Ordering::Relaxed);
    let detail: usize = bus.iter().map(|e| e["detail"].to_string().len()).sum();
    let body: usize = hooks.iter().map(|h| h.body.to_string().len()).sum();
    println!("\n== events through the local consumer ({CHANGES} changes, PENDING -> EXPIRED) ==");
    println!("writes                   {CHANGES} in {written:.2} s");
    println!(
        "on the bus               {} in {bus_done:.2} s from the first write: {:.1} events/s",
        bus.len(),
        bus.len() as f64 / bus_done
    );
    println!(
        "webhooks accepted        {} in {hooks_done:.2} s: {:.1} webhooks/s",
        hooks.len(),
        hooks.len() as f64 / hooks_done
    );
    println!(
        "consumer invocations     {invocations} ({:.1} events each); delivery invocations {deliveries} ({:.1} webhooks each)",
        bus.len() as f64 / invocations.max(1) as f64,
        hooks.len() as f64 / deliveries.max(1) as f64
    );
    println!(
        "bytes per event          detail {} B, webhook body {} B",
        detail / bus.len().max(1),
        body / hooks.len().max(1)
    );
    let distinct: std::collections::HashSet<_> = hooks.iter().map(|h| h.event_id.clone()).collect();
    assert_eq!(bus.len(), CHANGES);
    assert_eq!(distinct.len(), CHANGES);
    stack.shutdown().await;
}
