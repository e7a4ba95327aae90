//! Latency as a merchant sees it: `POST /payments` through the whole local stack (the API
//! Gateway stand-in, the push function under the runtime emulator, moto, the simulator), side
//! by side with the tutorial flow (`tools/bench/tutorial_flow.py`: a new OAuth token, then the
//! push, nothing stored) against the same simulator, requests interleaved in one run, at two
//! Daraja latencies; where the push function's time goes, from its own `invocation` lines; and
//! how the figure drifts as the table fills.
//!
//! Every block starts on a table of [`TABLE_SIZE`] payments, made afresh, so the figures do not
//! depend on what ran before. The drift run then pushes on without re-creating it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ::dynamo::DynamoStore;
use bench::stats::{Ms, Samples, Verdict};
use bench::timing;
use local_stack::LocalStack;
use payments::payment::NewPayment;
use payments::PaymentStore;
use serde_json::{json, Value};

use crate::report::Report;
use crate::start_stack;

/// Payments in the table when a block starts.
const TABLE_SIZE: usize = 1000;
/// The Daraja latencies measured: the simulator's own, and what integrators report from
/// production.
const LATENCIES: [Duration; 2] = [Duration::from_millis(20), Duration::from_millis(300)];

/// Pushes per flow at each latency (`BENCH_E2E_N`, default 100).
fn pushes() -> usize {
    std::env::var("BENCH_E2E_N")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100)
}

/// Pushes of the drift run, in four blocks (`BENCH_E2E_DRIFT`, default 1000; 0 skips it).
fn drift_pushes() -> usize {
    std::env::var("BENCH_E2E_DRIFT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

/// The tutorial flow's server, against the stack's simulator.
struct Tutorial {
    child: Child,
    url: String,
}

impl Tutorial {
    fn start(stack: &LocalStack) -> Result<Self, String> {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tutorial_flow.py");
        let env = |name: &str| {
            stack
                .function_env()
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .ok_or(format!("the stack sets no {name}"))
        };
        let mut child = Command::new("python3")
            .arg(script)
            .args(["--listen", "127.0.0.1:0"])
            .args(["--daraja", &env("DARAJA_BASE_URL")?])
            .args(["--shortcode", &env("DARAJA_SHORTCODE")?])
            .args(["--passkey", &env("DARAJA_PASSKEY")?])
            .args(["--consumer-key", &env("DARAJA_CONSUMER_KEY")?])
            .args(["--consumer-secret", &env("DARAJA_CONSUMER_SECRET")?])
            .args(["--callback-url", "http://127.0.0.1:9/callback"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("python3 {script}: {e}"))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .map_err(|e| format!("tutorial flow: {e}"))?;
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .ok_or(format!("tutorial flow said {line:?}"))?
            .to_string();
        Ok(Self { child, url })
    }
}

impl Drop for Tutorial {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Empties the table and fills it with `TABLE_SIZE` pending payments (untimed).
async fn fresh_table(stack: &LocalStack) -> Result<(), String> {
    bench::empty_table(&stack.dynamo(), stack.table()).await?;
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    let created_at = chrono::Utc::now();
    for i in 0..TABLE_SIZE {
        let charge = daraja::Charge::parse(&format!("07{:08}", 90_000_000 + i), 100, "FILL", None)
            .map_err(|e| e.to_string())?;
        store
            .record_pending(&NewPayment {
                checkout_request_id: format!("ws_CO_fill_{i:06}"),
                merchant_request_id: "29115-34620561-1".to_string(),
                charge,
                created_at,
                callback_nonce: None,
                created_by: None,
            })
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// One `POST` of a push body; the time to its answer.
async fn post(http: &reqwest::Client, url: &str, phone: &str) -> Result<Duration, String> {
    let body = json!({"phone": phone, "amount": 100, "reference": "INV-1001"});
    let started = Instant::now();
    let response = http
        .post(url)
        .json(&body)
        .send()
        .await
        .map_err(|e| format!("POST {url}: {e}"))?;
    let status = response.status().as_u16();
    let answer = response.bytes().await.map_err(|e| e.to_string())?;
    let took = started.elapsed();
    if status != 200 && status != 202 {
        return Err(format!(
            "POST {url}: {status} {}",
            String::from_utf8_lossy(&answer)
        ));
    }
    Ok(took)
}

/// Interleaved pushes through both flows at the simulator's current latency, on a fresh table.
/// Returns the p50 of each, and prints the push function's breakdown.
async fn side_by_side(
    stack: &LocalStack,
    tutorial: &Tutorial,
    http: &reqwest::Client,
    n: usize,
    first_phone: usize,
) -> Result<(Samples, Samples, Vec<Value>), String> {
    fresh_table(stack).await?;
    let ours_url = format!("{}/payments", stack.api_url());
    let theirs_url = format!("{}/pay", tutorial.url);
    let logs_before = stack.logs().len();
    let (mut ours, mut theirs) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        // A phone each: the simulator, as Daraja, refuses a second prompt on an open one.
        let our_phone = format!("07{:08}", first_phone + 2 * i);
        let their_phone = format!("07{:08}", first_phone + 2 * i + 1);
        // Alternate which goes first, so neither always meets a warmer machine.
        if i % 2 == 0 {
            ours.push(post(http, &ours_url, &our_phone).await?);
            theirs.push(post(http, &theirs_url, &their_phone).await?);
        } else {
            theirs.push(post(http, &theirs_url, &their_phone).await?);
            ours.push(post(http, &ours_url, &our_phone).await?);
        }
    }
    let lines = stack.logs();
    let breakdown = timing::invocations(&lines[logs_before.min(lines.len())..], "stk-push");
    Ok((Samples::new(ours), Samples::new(theirs), breakdown))
}

pub async fn run(report: &mut Report) -> Result<(), String> {
    let stack = start_stack().await?;
    let result = measure(&stack, report).await;
    stack.shutdown().await;
    result
}

async fn measure(stack: &LocalStack, report: &mut Report) -> Result<(), String> {
    let tutorial = Tutorial::start(stack)?;
    let http = reqwest::Client::new();
    let n = pushes();
    // Cold starts and the first token, outside every measurement.
    post(
        &http,
        &format!("{}/payments", stack.api_url()),
        "0799999990",
    )
    .await?;
    post(&http, &format!("{}/pay", tutorial.url), "0799999991").await?;

    println!("\n## POST /payments through the local stack vs the tutorial flow ({n} each, interleaved, table of {TABLE_SIZE} payments)\n");
    println!("| Daraja latency | tutorial p50 | tutorial p90 | POST /payments p50 | POST /payments p90 | ratio (p50) |");
    println!("|---|---|---|---|---|---|");
    let mut breakdowns = Vec::new();
    for (k, latency) in LATENCIES.into_iter().enumerate() {
        stack.sim().set_latency(latency);
        let (ours, theirs, breakdown) =
            side_by_side(stack, &tutorial, &http, n, 10_000_000 * (k + 1)).await?;
        let ratio = ours.median().as_secs_f64() / theirs.median().as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {} | {} | {} | {ratio:.2}× |",
            Ms(latency),
            Ms(theirs.median()),
            Ms(theirs.percentile(90.0)),
            Ms(ours.median()),
            Ms(ours.percentile(90.0)),
        );
        let (target, met) = if k == 0 {
            ("≤ 1.00×", ratio <= 1.0)
        } else {
            ("≤ 0.60×", ratio <= 0.6)
        };
        report.row(
            format!(
                "POST /payments p50 / tutorial p50 at {} Daraja latency",
                Ms(latency)
            ),
            format!("{ratio:.2}×"),
            target,
            Verdict::of(met),
        );
        breakdowns.push((latency, breakdown));
    }
    stack.sim().set_latency(Duration::ZERO);

    println!("\n### Where the push function's time goes (its `invocation` lines)\n");
    println!("{}", timing::header("Daraja latency"));
    for (latency, fields) in &breakdowns {
        println!("{}", timing::row(&Ms(*latency).to_string(), fields));
    }
    if let Some((_, fields)) = breakdowns.first() {
        let own = timing::millis(fields, "own_ms").median();
        report.row(
            "push function's own part, p50 (its handler less its requests)",
            Ms(own).to_string(),
            "≤ 1 ms",
            Verdict::of(own <= Duration::from_millis(1)),
        );
    }

    let drift = drift_pushes();
    if drift >= 4 {
        stack.sim().set_latency(LATENCIES[0]);
        fresh_table(stack).await?;
        let url = format!("{}/payments", stack.api_url());
        let block = drift / 4;
        println!("\n### Drift: {drift} pushes on one table of {TABLE_SIZE} payments, not re-created ({} Daraja latency)\n", Ms(LATENCIES[0]));
        println!("| block | items in the table at its start | p50 | p90 | refused |");
        println!("|---|---|---|---|---|");
        let mut medians = Vec::new();
        let mut first_refusal = None;
        for b in 0..4 {
            let items = bench::count_items(&stack.dynamo(), stack.table()).await?;
            let mut took = Vec::with_capacity(block);
            let mut refused = 0;
            for i in 0..block {
                let phone = format!("07{:08}", 50_000_000 + b * block + i);
                match post(&http, &url, &phone).await {
                    Ok(t) => took.push(t),
                    Err(e) => {
                        refused += 1;
                        first_refusal.get_or_insert(e);
                    }
                }
            }
            let took = Samples::new(took);
            println!(
                "| {} | {items} | {} | {} | {refused} |",
                b + 1,
                Ms(took.median()),
                Ms(took.percentile(90.0))
            );
            medians.push(took.median());
        }
        if let Some(refusal) = first_refusal {
            println!("\nfirst refusal: {refusal}");
            let lines = stack.logs();
            let warning = lines
                .iter()
                .rev()
                .find(|l| l.starts_with("[stk-push") && l.contains("\"WARN\""));
            if let Some(line) = warning {
                println!("the push function's last warning: {line}");
            }
        }
        stack.sim().set_latency(Duration::ZERO);
        let first = medians[0].as_secs_f64();
        let last = medians[3].as_secs_f64();
        let change = (last - first) / first.max(1e-9);
        report.row(
            format!("POST /payments p50 drift over {drift} pushes on one table"),
            format!("{:+.0} %", change * 100.0),
            "≤ +20 %",
            Verdict::of(change <= 0.2),
        );
    }
    Ok(())
}
