//! Cold start: a fresh runtime emulator per run, timed from its first invoke (which starts the
//! bootstrap) to the answer; beside it the floor, a minimal `lambda_http` function. Then the
//! steps of a cold start, timed inside a fresh process (`bench-startup`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bench::events;
use bench::procs;
use bench::stats::{Ms, Samples, Verdict};
use local_stack::rie::{self, LogSink, PoolConfig, RiePool};
use local_stack::template::Template;
use local_stack::{Function, LocalStack};
use serde_json::Value;
use shared::payment::NewPayment;
use shared::store::{DynamoStore, PaymentStore};

use crate::report::Report;
use crate::{start_stack, Binary, Paths};

const TARGET_MEDIAN: Duration = Duration::from_millis(50);
const TARGET_RATIO: f64 = 1.5;

fn runs() -> usize {
    std::env::var("BENCH_COLD_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}

/// One cold start.
struct Sample {
    /// First invoke → its answer (bootstrap exec, init, the handler's first request).
    cold: Duration,
    /// The emulator's `Init Duration` (runtime start → first `/next`).
    init: Option<Duration>,
    /// A second invoke on the same, now warm, environment.
    warm: Duration,
    /// The bootstrap's peak RSS after both invokes.
    peak_rss_kib: Option<u64>,
}

/// The events of one run: a cold one and a warm one. The callback and status functions get a
/// payment that exists, so they take their common path (a transition, a found record).
async fn events_for(binary: Binary, stack: &LocalStack, store: &DynamoStore, run: usize) -> (Value, Value) {
    let pending = |n: usize| async move {
        let id = format!("ws_CO_cold{run:04}{n}{}", rand_suffix());
        let payment = NewPayment {
            checkout_request_id: id.clone(),
            merchant_request_id: format!("cold-{run}-{n}"),
            amount: 100,
            phone: "254708374149".to_string(),
            reference: "INV-1001".to_string(),
            description: Some("Order 1001".to_string()),
            created_at: chrono::Utc::now(),
        };
        // A failed setup write shows up as a non-200 answer below.
        let _ = store.record_pending(&payment).await;
        id
    };
    match binary {
        Binary::Function(Function::StkPush) => (
            events::push(&format!("07{:08}", 10_000_000 + run * 2), 100),
            events::push(&format!("07{:08}", 10_000_001 + run * 2), 100),
        ),
        Binary::Function(Function::StkCallback) => {
            let (a, b) = (pending(0).await, pending(1).await);
            let token = stack.callback_token();
            (
                events::callback(token, &a, 100, "TKR7PQ2X9M"),
                events::callback(token, &b, 100, "TKR7PQ2X9N"),
            )
        }
        Binary::Function(Function::PaymentStatus) | Binary::Floor => {
            let id = pending(0).await;
            (events::status(&id), events::status(&id))
        }
        Binary::Function(Function::Reconcile) => (events::schedule(), events::schedule()),
    }
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos())
}

/// A function error, the emulator's timeout text or a 5xx is a failed start.
fn answered(binary: Binary, answer: &Value) -> Result<(), String> {
    let ok = match binary {
        Binary::Function(Function::Reconcile) => {
            answer.is_object() && answer.get("errorType").is_none()
        }
        _ => events::status_code(answer).is_some_and(|s| s < 500),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{}: unexpected answer {answer}", binary.name()))
    }
}

/// `Init Duration: 12.34 ms` from the emulator's first `REPORT` line.
fn init_duration(lines: &[String]) -> Option<Duration> {
    let line = lines.iter().find(|l| l.contains("Init Duration:"))?;
    let rest = &line[line.find("Init Duration:")? + "Init Duration:".len()..];
    let ms: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_secs_f64(ms / 1e3))
}

async fn cold_once(
    config: PoolConfig,
    binary: Binary,
    events: (Value, Value),
) -> Result<Sample, String> {
    let logs = LogSink::new(false);
    let pool = RiePool::start(config, logs.clone())
        .await
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let first = pool.invoke(&events.0).await;
    let cold = started.elapsed();
    let started = Instant::now();
    let second = pool.invoke(&events.1).await;
    let warm = started.elapsed();
    let peak_rss_kib = procs::own_processes_named(binary.name())
        .iter()
        .filter_map(procs::Proc::peak_rss_kib)
        .max();
    pool.shutdown().await;
    let first = first.map_err(|e| e.to_string())?;
    answered(binary, &first)?;
    answered(binary, &second.map_err(|e| e.to_string())?)?;
    Ok(Sample {
        cold,
        init: init_duration(&logs.lines()),
        warm,
        peak_rss_kib,
    })
}

pub async fn run(paths: &Paths, report: &mut Report) -> Result<(), String> {
    let runs = runs();
    let stack = start_stack().await?;
    let result = measure(paths, &stack, runs, report).await;
    stack.shutdown().await;
    result
}

async fn measure(
    paths: &Paths,
    stack: &LocalStack,
    runs: usize,
    report: &mut Report,
) -> Result<(), String> {
    let rie = rie::find_rie(&paths.root).map_err(|e| e.to_string())?;
    let template =
        Template::load(&paths.root.join("template.yaml")).map_err(|e| e.to_string())?;
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    println!("\n## Cold start: fresh runtime emulator per run, {runs} runs each, release builds\n");
    println!("First invoke → answer (the emulator starts the bootstrap at the first invoke), with the");
    println!("emulator's `Init Duration` (runtime start → first `/next`) and a second, warm invoke.\n");
    println!("| binary | cold p50 | cold min | cold max | init p50 | warm 2nd invoke p50 | peak RSS | × floor |");
    println!("|---|---|---|---|---|---|---|---|");
    let mut all: Vec<(Binary, Samples, Samples, Samples, u64)> = Vec::new();
    for binary in Binary::ALL {
        let settings = match binary {
            Binary::Function(f) => template.function(f.name()),
            Binary::Floor => template.function(Function::PaymentStatus.name()),
        };
        let (mut cold, mut init, mut warm, mut rss) = (Vec::new(), Vec::new(), Vec::new(), 0);
        for run in 0..runs {
            let config = PoolConfig {
                name: binary.name().to_string(),
                bootstrap: paths.release(binary.name()),
                rie: rie.clone(),
                size: 1,
                settings: settings.clone(),
                env: stack.function_env().to_vec(),
            };
            let sample = cold_once(config, binary, events_for(binary, stack, &store, run).await).await?;
            cold.push(sample.cold);
            init.extend(sample.init);
            warm.push(sample.warm);
            rss = rss.max(sample.peak_rss_kib.unwrap_or(0));
        }
        all.push((binary, Samples::new(cold), Samples::new(init), Samples::new(warm), rss));
    }
    let floor = all
        .iter()
        .find(|(b, ..)| *b == Binary::Floor)
        .map(|(_, cold, ..)| cold.median())
        .unwrap_or_default();
    for (binary, cold, init, warm, rss) in &all {
        let ratio = cold.median().as_secs_f64() / floor.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} MiB | {ratio:.2} |",
            binary.name(),
            Ms(cold.median()),
            Ms(cold.min()),
            Ms(cold.max()),
            if init.is_empty() { "?".to_string() } else { Ms(init.median()).to_string() },
            Ms(warm.median()),
            *rss as f64 / 1024.0,
        );
        if let Binary::Function(_) = binary {
            report.row(
                format!("cold start p50, {}", binary.name()),
                format!("{} ({ratio:.2}× floor {})", Ms(cold.median()), Ms(floor)),
                format!("≤ 50 ms and ≤ {TARGET_RATIO}× floor"),
                Verdict::of(cold.median() <= TARGET_MEDIAN && ratio <= TARGET_RATIO),
            );
        }
    }
    Ok(())
}

/// The steps of the push function's cold start, in fresh processes with the stack's function
/// environment.
pub async fn startup(paths: &Paths, report: &mut Report) -> Result<(), String> {
    let stack = start_stack().await?;
    let result = startup_steps(paths, &stack, report).await;
    stack.shutdown().await;
    result
}

async fn startup_steps(paths: &Paths, stack: &LocalStack, report: &mut Report) -> Result<(), String> {
    let runs = runs();
    let probe = paths.release("bench-startup");
    let mut steps: BTreeMap<String, (usize, Vec<Duration>)> = BTreeMap::new();
    let mut whole = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let out = tokio::process::Command::new(&probe)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("TZ", ":UTC")
            .env("AWS_LAMBDA_FUNCTION_NAME", "stk-push")
            .envs(stack.function_env().iter().cloned())
            .env("RUST_LOG", "warn")
            .output()
            .await
            .map_err(|e| format!("{}: {e}", probe.display()))?;
        whole.push(started.elapsed());
        if !out.status.success() {
            return Err(format!(
                "bench-startup failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let parsed: Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        for (order, step) in parsed["steps"].as_array().into_iter().flatten().enumerate() {
            let name = step[0].as_str().unwrap_or("?").to_string();
            let micros = step[1].as_u64().unwrap_or(0);
            steps
                .entry(name)
                .or_insert_with(|| (order, Vec::new()))
                .1
                .push(Duration::from_micros(micros));
        }
    }
    let mut ordered: Vec<(String, usize, Samples)> = steps
        .into_iter()
        .map(|(name, (order, samples))| (name, order, Samples::new(samples)))
        .collect();
    ordered.sort_by_key(|(_, order, _)| *order);
    println!("\n## What a cold start spends (push function's start, {runs} fresh processes)\n");
    println!("| step | p50 | max |");
    println!("|---|---|---|");
    for (name, _, samples) in &ordered {
        println!("| {name} | {} | {} |", Ms(samples.median()), Ms(samples.max()));
    }
    let whole = Samples::new(whole);
    println!(
        "| whole process, spawn → exit (includes exec, the runtime and the loader) | {} | {} |",
        Ms(whole.median()),
        Ms(whole.max())
    );
    report.row(
        "push start-up, spawn → first DynamoDB answer → exit",
        Ms(whole.median()).to_string(),
        "(context)",
        Verdict::Info,
    );
    Ok(())
}
