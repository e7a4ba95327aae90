//! Cold start: a fresh runtime emulator per run, timed from its first invoke (which starts the
//! bootstrap) to the answer; beside it the floor, a minimal `lambda_http` function. Then the
//! steps of a cold start, timed inside a fresh process (`bench-startup`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ::dynamo::DynamoStore;
use bench::events;
use bench::procs;
use bench::stats::{Ms, Samples, Verdict};
use local_stack::rie::{self, LogSink, PoolConfig, RiePool};
use local_stack::template::Template;
use local_stack::{Function, LocalStack};
use payments::payment::NewPayment;
use payments::PaymentStore;
use serde_json::Value;

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
    /// The emulator's init phase: bootstrap exec → its first `/next` (config, clients).
    init: Option<Duration>,
    /// The emulator's duration of the first invocation's handler (its first requests).
    first_handler: Option<Duration>,
    /// A second invoke on the same, now warm, environment.
    warm: Duration,
    /// The bootstrap's peak RSS after both invokes.
    peak_rss_kib: Option<u64>,
}

/// The events of one run: a cold one and a warm one. The callback and status functions get a
/// payment that exists, so they take their common path (a transition, a found record).
async fn events_for(
    binary: Binary,
    stack: &LocalStack,
    store: &DynamoStore,
    run: usize,
) -> (Value, Value) {
    let pending = |n: usize| async move {
        let id = format!("ws_CO_cold{run:04}{n}{}", rand_suffix());
        let payment = NewPayment {
            checkout_request_id: id.clone(),
            merchant_request_id: format!("cold-{run}-{n}"),
            charge: daraja::Charge::parse("254708374149", 100, "INV-1001", Some("Order 1001"))
                .expect("a valid charge"),
            created_at: chrono::Utc::now(),
            callback_nonce: None,
            created_by: None,
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
            // Payments written here have no callback URL of their own: any valid token binds.
            let token = stack.unsent_callback_token();
            (
                events::callback(&token, &a, 100, "TKR7PQ2X9M"),
                events::callback(&token, &b, 100, "TKR7PQ2X9N"),
            )
        }
        Binary::Function(Function::PaymentStatus) | Binary::Floor => {
            let id = pending(0).await;
            (events::status(&id), events::status(&id))
        }
        Binary::Function(Function::Reconcile) => (events::schedule(), events::schedule()),
        // Not measured here (no bus or queue in this stack): an empty batch each.
        Binary::Function(Function::PaymentEvents | Function::WebhookDelivery) => {
            let empty = serde_json::json!({"Records": []});
            (empty.clone(), empty)
        }
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
        Binary::Function(
            Function::Reconcile | Function::PaymentEvents | Function::WebhookDelivery,
        ) => answer.is_object() && answer.get("errorType").is_none(),
        _ => events::status_code(answer).is_some_and(|s| s < 500),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("{}: unexpected answer {answer}", binary.name()))
    }
}

/// A duration in milliseconds that follows `key` in the first emulator log line holding it:
/// `INIT REPORT(durationMs: 11.24)` (exec → the runtime's first `/next`) and
/// `INVOKE RTDONE(status: success, …, duration: 1.08ms)` (the first invocation's handler).
fn logged_ms(lines: &[String], marker: &str, key: &str) -> Option<Duration> {
    let line = lines.iter().find(|l| l.contains(marker))?;
    let rest = &line[line.find(key)? + key.len()..];
    let number: String = rest
        .trim_start()
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let ms: f64 = number.parse().ok()?;
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
    let lines = logs.lines();
    Ok(Sample {
        cold,
        init: logged_ms(&lines, "INIT REPORT", "durationMs:"),
        first_handler: logged_ms(&lines, "INVOKE RTDONE", "duration:"),
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
    let template = Template::load(&paths.root.join("template.yaml")).map_err(|e| e.to_string())?;
    let store = DynamoStore::new(stack.dynamo(), stack.table());
    println!("\n## Cold start: fresh runtime emulator per run, {runs} runs each, release builds\n");
    println!(
        "cold = first invoke → answer (the emulator execs the bootstrap at the first invoke);"
    );
    println!(
        "init = the emulator's INIT REPORT (exec → the runtime's first `/next`: config, clients);"
    );
    println!(
        "1st handler = the emulator's duration of that first invocation (its first requests);"
    );
    println!(
        "warm = a second invoke on the same environment. The table is emptied before each run"
    );
    println!("(untimed; the shared Daraja token stays, as a new container finds it).\n");
    println!("| binary | cold p50 | cold min | cold max | init p50 | 1st handler p50 | warm p50 | peak RSS | cold × floor | init × floor |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    let mut all: Vec<(Binary, Series)> = Vec::new();
    for binary in Binary::ALL {
        let settings = match binary {
            Binary::Function(f) => template.function(f.name()),
            Binary::Floor => template.function(Function::PaymentStatus.name()),
        };
        let mut series = Series::default();
        for run in 0..runs {
            let config = PoolConfig {
                name: binary.name().to_string(),
                bootstrap: paths.release(binary.name()),
                rie: rie.clone(),
                size: 1,
                settings: settings.clone(),
                env: stack.function_env().to_vec(),
            };
            bench::empty_table(&stack.dynamo(), stack.table()).await?;
            let events = events_for(binary, stack, &store, run).await;
            series.add(cold_once(config, binary, events).await?);
        }
        all.push((binary, series));
    }
    let floor = all
        .iter()
        .find(|(b, _)| *b == Binary::Floor)
        .map(|(_, s)| (s.cold().median(), s.init().median()))
        .unwrap_or_default();
    for (binary, series) in &all {
        let (cold, init) = (series.cold(), series.init());
        let ratio = cold.median().as_secs_f64() / floor.0.as_secs_f64().max(1e-9);
        let init_ratio = init.median().as_secs_f64() / floor.1.as_secs_f64().max(1e-9);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {:.1} MiB | {ratio:.2} | {init_ratio:.2} |",
            binary.name(),
            Ms(cold.median()),
            Ms(cold.min()),
            Ms(cold.max()),
            Ms(init.median()),
            Ms(Samples::new(series.first_handler.clone()).median()),
            Ms(Samples::new(series.warm.clone()).median()),
            series.peak_rss_kib as f64 / 1024.0,
        );
        if let Binary::Function(_) = binary {
            report.row(
                format!("cold start p50, {}", binary.name()),
                Ms(cold.median()).to_string(),
                "≤ 50 ms",
                Verdict::of(cold.median() <= TARGET_MEDIAN),
            );
            report.row(
                format!("cold start p50 ÷ floor p50, {}", binary.name()),
                format!("{ratio:.2}× (floor {})", Ms(floor.0)),
                format!("≤ {TARGET_RATIO}×"),
                Verdict::of(ratio <= TARGET_RATIO),
            );
            report.row(
                format!(
                    "init phase p50, {} (exec → ready, no request)",
                    binary.name()
                ),
                format!(
                    "{} ({init_ratio:.2}× floor {})",
                    Ms(init.median()),
                    Ms(floor.1)
                ),
                "(context)",
                Verdict::Info,
            );
        }
    }
    Ok(())
}

/// One binary's cold starts.
#[derive(Default)]
struct Series {
    cold: Vec<Duration>,
    init: Vec<Duration>,
    first_handler: Vec<Duration>,
    warm: Vec<Duration>,
    peak_rss_kib: u64,
}

impl Series {
    fn add(&mut self, sample: Sample) {
        self.cold.push(sample.cold);
        self.init.extend(sample.init);
        self.first_handler.extend(sample.first_handler);
        self.warm.push(sample.warm);
        self.peak_rss_kib = self.peak_rss_kib.max(sample.peak_rss_kib.unwrap_or(0));
    }

    fn cold(&self) -> Samples {
        Samples::new(self.cold.clone())
    }

    fn init(&self) -> Samples {
        Samples::new(self.init.clone())
    }
}

/// The steps of the push function's cold start, in fresh processes with the stack's function
/// environment.
pub async fn startup(paths: &Paths, report: &mut Report) -> Result<(), String> {
    let stack = start_stack().await?;
    let result = startup_steps(paths, &stack, report).await;
    stack.shutdown().await;
    result
}

async fn startup_steps(
    paths: &Paths,
    stack: &LocalStack,
    report: &mut Report,
) -> Result<(), String> {
    let runs = runs();
    let probe = paths.release("bench-startup");
    let secret_arn = create_secret(stack.dynamodb_endpoint()).await?;
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
            .env("BENCH_SECRET_ARN", &secret_arn)
            .env(
                "AWS_ENDPOINT_URL_SECRETS_MANAGER",
                stack.dynamodb_endpoint(),
            )
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
        println!(
            "| {name} | {} | {} |",
            Ms(samples.median()),
            Ms(samples.max())
        );
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

/// A secret document like the deployed one, in moto's Secrets Manager (the same server as its
/// DynamoDB); returns its ARN.
async fn create_secret(endpoint: &str) -> Result<String, String> {
    let config = aws_sdk_secretsmanager::Config::builder()
        .behavior_version(aws_sdk_secretsmanager::config::BehaviorVersion::latest())
        .region(aws_sdk_secretsmanager::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_secretsmanager::config::Credentials::new(
            "test", "test", None, None, "bench",
        ))
        .endpoint_url(endpoint)
        .http_client(app::aws::https_client(&Default::default()))
        .build();
    let document = serde_json::json!({
        "consumer_key": "bench-key",
        "consumer_secret": "bench-secret",
        "passkey": "bench-passkey",
        "callback_token": "bench-callback-token",
    });
    let name = format!("bench-startup-{}", std::process::id());
    let out = aws_sdk_secretsmanager::Client::from_conf(config)
        .create_secret()
        .name(name)
        .secret_string(document.to_string())
        .send()
        .await
        .map_err(|e| aws_sdk_secretsmanager::error::DisplayErrorContext(e).to_string())?;
    out.arn.ok_or_else(|| "moto returned no ARN".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines() -> Vec<String> {
        [
            "[stk-push#0] 27 Nov 2026 23:19:15,831 [INFO] (rapid) INIT RTDONE(status: success)",
            "[stk-push#0] 27 Nov 2026 23:19:15,831 [INFO] (rapid) INIT REPORT(durationMs: 11.243000)",
            "[stk-push#0] 27 Nov 2026 23:19:15,832 [INFO] (rapid) INVOKE RTDONE(status: success, produced bytes: 0, duration: 1.083000ms)",
            "[stk-push#0] 27 Nov 2026 23:19:15,853 [INFO] (rapid) INVOKE RTDONE(status: success, produced bytes: 0, duration: 9.5ms)",
        ]
        .map(String::from)
        .to_vec()
    }

    #[test]
    fn init_and_first_invocation_durations_are_read_from_the_emulator_log() {
        let lines = lines();
        assert_eq!(
            logged_ms(&lines, "INIT REPORT", "durationMs:"),
            Some(Duration::from_micros(11_243))
        );
        assert_eq!(
            logged_ms(&lines, "INVOKE RTDONE", "duration:"),
            Some(Duration::from_micros(1_083))
        );
    }

    #[test]
    fn a_log_without_the_marker_gives_no_duration() {
        assert_eq!(logged_ms(&lines()[..1], "INIT REPORT", "durationMs:"), None);
    }
}
