//! Warm latency through the runtime emulator (direct invokes, as `sam local invoke` does)
//! against moto and the simulator with no injected latency; the peak RSS of each function
//! process over the whole run; Daraja requests per warm push counted by the simulator.

use std::time::{Duration, Instant};

use ::dynamo::DynamoStore;
use bench::events;
use bench::procs;
use bench::stats::{Ms, Samples, Verdict};
use bench::timing;
use local_stack::{Function, LocalStack};
use payments::payment::NewPayment;
use payments::PaymentStore;
use serde_json::Value;

use crate::report::Report;
use crate::start_stack;

const TARGET_RSS_MIB: f64 = 32.0;
/// The scheduled function runs once a minute: a few runs show its latency and memory.
const RECONCILE_RUNS: usize = 20;
/// Pushes between two emptyings of the table (see [`bench::empty_table`]).
const EMPTY_EVERY: usize = 20;

fn invocations() -> usize {
    std::env::var("BENCH_WARM_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

async fn timed(
    stack: &LocalStack,
    function: Function,
    event: &Value,
) -> Result<(Duration, Value), String> {
    let started = Instant::now();
    let answer = stack
        .invoke(function, event)
        .await
        .map_err(|e| e.to_string())?;
    Ok((started.elapsed(), answer))
}

fn expect_status(function: Function, answer: &Value, want: u16) -> Result<(), String> {
    match events::status_code(answer) {
        Some(status) if status == want => Ok(()),
        _ => Err(format!("{function}: expected {want}, got {answer}")),
    }
}

pub async fn run(report: &mut Report) -> Result<(), String> {
    let stack = start_stack().await?;
    let result = measure(&stack, report).await;
    stack.shutdown().await;
    result
}

async fn measure(stack: &LocalStack, report: &mut Report) -> Result<(), String> {
    let n = invocations();
    let phone = |i: usize| format!("07{:08}", 40_000_000 + i);

    // Each function's cold start happens here, outside the measurement; the push also
    // fetches the OAuth token here.
    let (_, first) = timed(stack, Function::StkPush, &events::push(&phone(n), 100)).await?;
    expect_status(Function::StkPush, &first, 202)?;
    let first_id = events::body(&first)
        .and_then(|b| b["checkout_request_id"].as_str().map(str::to_string))
        .ok_or("the first push answered no checkout_request_id")?;
    let callback = events::callback(
        &stack.callback_token_for(&first_id),
        &first_id,
        100,
        "TKR0000000",
    );
    expect_status(
        Function::StkCallback,
        &timed(stack, Function::StkCallback, &callback).await?.1,
        200,
    )?;
    expect_status(
        Function::PaymentStatus,
        &timed(stack, Function::PaymentStatus, &events::status(&first_id))
            .await?
            .1,
        200,
    )?;

    let dynamo = stack.dynamo();
    let logs_before = stack.logs().len();
    let before = stack.sim().counts();
    let mut push = Vec::with_capacity(n);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        if i % EMPTY_EVERY == 0 {
            bench::empty_table(&dynamo, stack.table()).await?;
        }
        let (took, answer) = timed(stack, Function::StkPush, &events::push(&phone(i), 100)).await?;
        expect_status(Function::StkPush, &answer, 202)?;
        let id = events::body(&answer)
            .and_then(|b| b["checkout_request_id"].as_str().map(str::to_string))
            .ok_or("a push answered no checkout_request_id")?;
        push.push(took);
        ids.push(id);
    }
    let after = stack.sim().counts();

    // The pending records emptied away above are written again (as the push wrote them),
    // so every callback below is the first result for a pending payment.
    let store = DynamoStore::new(dynamo.clone(), stack.table());
    for (i, id) in ids.iter().enumerate() {
        store
            .record_pending(&NewPayment {
                checkout_request_id: id.clone(),
                merchant_request_id: format!("warm-{i}"),
                charge: daraja::Charge::parse(
                    &format!("2547{:08}", 40_000_000 + i),
                    100,
                    "INV-1001",
                    Some("Order 1001"),
                )
                .expect("a valid charge"),
                created_at: chrono::Utc::now(),
                callback_nonce: None,
                created_by: None,
            })
            .await
            .map_err(|e| e.to_string())?;
    }

    // Each callback comes to its push's own URL (the last pushes' payments were not emptied
    // away and keep their URL's nonce; any valid token binds one written again above).
    let mut callback = Vec::with_capacity(n);
    for (i, id) in ids.iter().enumerate() {
        let token = stack.callback_token_for(id);
        let event = events::callback(&token, id, 100, &format!("TKR{i:07}"));
        let (took, answer) = timed(stack, Function::StkCallback, &event).await?;
        expect_status(Function::StkCallback, &answer, 200)?;
        callback.push(took);
    }
    let mut status = Vec::with_capacity(n);
    for id in &ids {
        let (took, answer) = timed(stack, Function::PaymentStatus, &events::status(id)).await?;
        expect_status(Function::PaymentStatus, &answer, 200)?;
        status.push(took);
    }
    let mut reconcile = Vec::new();
    for _ in 0..RECONCILE_RUNS {
        let (took, answer) = timed(stack, Function::Reconcile, &events::schedule()).await?;
        if answer.get("errorType").is_some() {
            return Err(format!("reconcile failed: {answer}"));
        }
        reconcile.push(took);
    }

    println!("\n## Warm latency through the runtime emulator ({n} invocations each; moto + simulator, no injected latency)\n");
    println!(
        "Direct invokes of the emulator, one at a time. DynamoDB is moto (Python, one request at a"
    );
    println!("time); the table is emptied every {EMPTY_EVERY} pushes, untimed, so every push meets a small");
    println!("table (a callback with a receipt is a TransactWriteItems, which moto pays for by copying it).\n");
    println!("| function | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    for (function, samples) in [
        (Function::StkPush, Samples::new(push)),
        (Function::StkCallback, Samples::new(callback)),
        (Function::PaymentStatus, Samples::new(status)),
        (Function::Reconcile, Samples::new(reconcile)),
    ] {
        println!(
            "| {function} | {} | {} | {} | {} | {} |",
            samples.len(),
            Ms(samples.median()),
            Ms(samples.percentile(90.0)),
            Ms(samples.percentile(99.0)),
            Ms(samples.max())
        );
        report.row(
            format!("warm p50 / p99, {function}"),
            format!(
                "{} / {}",
                Ms(samples.median()),
                Ms(samples.percentile(99.0))
            ),
            "(moto-bound; context)",
            Verdict::Info,
        );
    }

    println!("\n### Where each function's time goes (its own `invocation` lines, the warm invocations above)\n");
    println!("{}", timing::header("function"));
    let lines = stack.logs();
    let lines = &lines[logs_before.min(lines.len())..];
    for function in [
        Function::StkPush,
        Function::StkCallback,
        Function::PaymentStatus,
        Function::Reconcile,
    ] {
        let fields = timing::invocations(lines, function.name());
        println!("{}", timing::row(function.name(), &fields));
    }

    let daraja = (after.oauth - before.oauth) + (after.stk_push - before.stk_push);
    let per_push = daraja as f64 / n as f64;
    println!(
        "\nDaraja requests during the {n} warm pushes (simulator counts): {} OAuth + {} STK push = {per_push:.2} per push",
        after.oauth - before.oauth,
        after.stk_push - before.stk_push
    );
    report.row(
        "Daraja requests per warm push (function under the emulator)",
        format!("{per_push:.2}"),
        "1.00",
        Verdict::of(daraja == n as u64),
    );

    println!("\n## Peak RSS of each function process over this run (VmHWM of the bootstrap)\n");
    println!("| function | peak RSS | now |");
    println!("|---|---|---|");
    for function in Function::ALL {
        for proc in procs::own_processes_named(function.name()) {
            let peak = proc.peak_rss_kib().unwrap_or(0) as f64 / 1024.0;
            let now = proc.rss_kib().unwrap_or(0) as f64 / 1024.0;
            println!("| {function} | {peak:.1} MiB | {now:.1} MiB |");
            report.row(
                format!(
                    "peak RSS, {function} (after {} warm invocations)",
                    if function == Function::Reconcile {
                        RECONCILE_RUNS
                    } else {
                        n
                    }
                ),
                format!("{peak:.1} MiB"),
                format!("≤ {TARGET_RSS_MIB} MB"),
                Verdict::of(peak <= TARGET_RSS_MIB),
            );
        }
    }
    Ok(())
}
