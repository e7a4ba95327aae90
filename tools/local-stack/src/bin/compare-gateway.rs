//! `compare-gateway`: sends the same requests through the API Gateway stand-in and through
//! `sam local start-api`, each in front of the `event-echo` function, and compares the events the
//! function received. Exits non-zero on any difference not in `local_stack::compare::ACCEPTED`,
//! or on an entry there that no longer occurs.
//!
//! Needs `cargo build -p event-echo`, aws-sam-cli in `.venv`, a Docker engine and the image
//! `public.ecr.aws/lambda/provided:al2023-x86_64` (see tools/sam-local/docker-up.sh).

use std::collections::HashMap;
use std::error::Error;
use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use local_stack::compare::{self, Difference, ACCEPTED, HEADER_NAMES_POINTER};
use local_stack::gateway::Gateway;
use local_stack::rie::{self, LogSink, PoolConfig, RiePool};
use local_stack::template::Template;
use local_stack::Function;
use rand::Rng;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

type Result<T> = std::result::Result<T, Box<dyn Error>>;

/// The routed functions; each runs the echo bootstrap under its own settings.
const ROUTED: [Function; 3] = [
    Function::StkPush,
    Function::PaymentStatus,
    Function::StkCallback,
];
/// SAM builds its emulator image on the first run; a cold start can take a while.
const SAM_READY_TIMEOUT: Duration = Duration::from_secs(60);
/// A request through SAM starts a container (the first also builds the image).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
const USER_AGENT: &str = "compare-gateway/1";

/// One request sent to both gateways.
struct Probe {
    name: &'static str,
    method: &'static str,
    /// Path and query, exactly as sent.
    target: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

fn probes(root: &Path) -> Result<Vec<Probe>> {
    // The repository's own sample events: a merchant's push and Daraja's success callback.
    let push = sample_event(root, "push-idempotent.json")?;
    let callback = sample_event(root, "callback-success.json")?;
    let push_body = push["body"].as_str().unwrap_or_default().to_string();
    let idempotency_key = push["headers"]["idempotency-key"]
        .as_str()
        .unwrap_or("order-1001-attempt-1")
        .to_string();
    let json_type = || ("content-type", "application/json".to_string());
    Ok(vec![
        Probe {
            name: "push-json",
            method: "POST",
            target: "/payments",
            headers: vec![json_type(), ("idempotency-key", idempotency_key)],
            body: push_body.clone().into_bytes(),
        },
        Probe {
            name: "binary-body",
            method: "POST",
            target: "/payments",
            headers: vec![("content-type", "application/octet-stream".to_string())],
            body: vec![0xff, 0x00, 0xfe, 0x41, 0x80],
        },
        Probe {
            name: "text-without-content-type",
            method: "POST",
            target: "/payments",
            headers: vec![],
            body: push_body.into_bytes(),
        },
        Probe {
            name: "status-with-query",
            method: "GET",
            target: "/payments/ws_CO_123?verbose=1&tag=a&tag=b%2Bc&q=%C3%A9+x&empty=",
            headers: vec![],
            body: vec![],
        },
        Probe {
            name: "daraja-callback",
            method: "POST",
            target: "/callbacks/stk/sometoken",
            headers: vec![json_type()],
            body: callback["body"]
                .as_str()
                .unwrap_or_default()
                .as_bytes()
                .to_vec(),
        },
        Probe {
            name: "cookies-and-repeated-headers",
            method: "GET",
            target: "/payments/ws_CO_123",
            headers: vec![
                ("cookie", "session=abc123; theme=dark".to_string()),
                ("x-tag", "first".to_string()),
                ("x-tag", "second".to_string()),
            ],
            body: vec![],
        },
        Probe {
            name: "encoded-path",
            method: "GET",
            target: "/payments/ws%20CO%C3%A9",
            headers: vec![],
            body: vec![],
        },
        Probe {
            name: "encoded-slash",
            method: "GET",
            target: "/payments/a%2Fb",
            headers: vec![],
            body: vec![],
        },
        Probe {
            name: "unknown-route",
            method: "GET",
            target: "/nope",
            headers: vec![],
            body: vec![],
        },
        Probe {
            name: "wrong-method",
            method: "DELETE",
            target: "/payments/ws_CO_123",
            headers: vec![],
            body: vec![],
        },
    ])
}

fn sample_event(root: &Path, name: &str) -> Result<Value> {
    let path = root.join("events").join(name);
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(serde_json::from_str(&text)?)
}

#[tokio::main]
async fn main() -> ExitCode {
    let started = Instant::now();
    let outcome = run().await;
    let seconds = started.elapsed().as_secs_f64();
    match outcome {
        Ok(true) => {
            println!("compare-gateway: no unexpected difference ({seconds:.1} s)");
            ExitCode::SUCCESS
        }
        Ok(false) => {
            println!("compare-gateway: FAILED ({seconds:.1} s)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("compare-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace this crate belongs to, where `template.yaml`, `events/` and `.venv` live.
fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn find_echo(root: &Path) -> Result<PathBuf> {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let path = target.join("debug/event-echo");
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "the echo function is missing at {}; build it first: CARGO_TARGET_DIR={} cargo build -p event-echo",
            path.display(),
            target.display()
        )
        .into())
    }
}

async fn run() -> Result<bool> {
    let root = workspace_root();
    let echo = find_echo(&root)?;
    let rie = rie::find_rie(&root)?;
    let sam_cli = root.join(".venv/bin/sam");
    if !sam_cli.is_file() {
        return Err(format!(
            "{} is missing; install aws-sam-cli into .venv (tools/requirements.txt)",
            sam_cli.display()
        )
        .into());
    }
    let template_path = root.join("template.yaml");
    let template = Template::load(&template_path)?;
    let probes = probes(&root)?;

    let logs = LogSink::new(false);
    let mut pools = HashMap::new();
    for function in ROUTED {
        let config = PoolConfig {
            name: function.name().to_string(),
            bootstrap: echo.clone(),
            rie: rie.clone(),
            size: 1,
            settings: template.function(function.name()),
            env: Vec::new(),
        };
        pools.insert(function, RiePool::start(config, logs.clone()).await?);
    }
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let mut gateway = Gateway::serve(listener, pools.clone())?;

    let outcome = match SamLocal::start(&sam_cli, &template_path, &echo).await {
        Ok(mut sam) => {
            let outcome = compare_all(&probes, &gateway.addr().to_string(), &sam).await;
            if outcome.is_err() {
                sam.print_log();
            }
            sam.stop().await;
            outcome
        }
        Err(e) => Err(e),
    };
    gateway.shutdown().await;
    for pool in pools.values() {
        pool.shutdown().await;
    }
    if outcome.is_err() {
        for line in logs.lines() {
            eprintln!("{line}");
        }
    }
    outcome
}

/// One probe's result.
struct Compared {
    probe: &'static str,
    request: String,
    fields: usize,
    judged: Vec<compare::Judged>,
}

async fn compare_all(probes: &[Probe], stand_in: &str, sam: &SamLocal) -> Result<bool> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .build()?;
    let mut used = vec![0; ACCEPTED.len()];
    let mut results = Vec::new();
    for probe in probes {
        let mut ours = send(&http, stand_in, probe).await?;
        let mut theirs = send(&http, &sam.addr, probe).await?;
        let now_ms = chrono::Utc::now().timestamp_millis();
        let our_names = compare::normalise(&mut ours, stand_in, now_ms);
        let their_names = compare::normalise(&mut theirs, &sam.addr, now_ms);
        let (mut fields, mut differences) = compare::diff(&ours, &theirs);
        if ours.get("event").is_some() || theirs.get("event").is_some() {
            fields += 1;
            if our_names != their_names {
                differences.push(Difference {
                    pointer: HEADER_NAMES_POINTER.to_string(),
                    stand_in: Some(json!(our_names)),
                    sam: Some(json!(their_names)),
                });
            }
        }
        results.push(Compared {
            probe: probe.name,
            request: format!("{} {}", probe.method, probe.target),
            fields,
            judged: compare::judge(probe.name, differences, &mut used),
        });
    }
    Ok(report(&results, &used))
}

async fn send(http: &reqwest::Client, addr: &str, probe: &Probe) -> Result<Value> {
    let method = reqwest::Method::from_bytes(probe.method.as_bytes())?;
    let mut request = http
        .request(method, format!("http://{addr}{}", probe.target))
        .header("user-agent", USER_AGENT);
    for (name, value) in &probe.headers {
        request = request.header(*name, value.as_str());
    }
    if !probe.body.is_empty() {
        request = request.body(probe.body.clone());
    }
    let response = request
        .send()
        .await
        .map_err(|e| format!("{} via {addr}: {e}", probe.name))?;
    let status = response.status().as_u16();
    let headers: Vec<(String, String)> = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_string(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response.bytes().await?;
    Ok(compare::exchange_document(status, &headers, &body))
}

/// Prints the table, the differences and the table entries that matched nothing; true when
/// every difference is accepted and every entry was needed.
fn report(results: &[Compared], used: &[usize]) -> bool {
    let unexpected_total: usize = results
        .iter()
        .map(|r| r.judged.iter().filter(|j| j.accepted_by.is_none()).count())
        .sum();
    let width = results.iter().map(|r| r.request.len()).max().unwrap_or(0);
    println!(
        "{:<28} {:<width$} {:>6} {:>8} {:>10}",
        "probe", "request", "fields", "accepted", "unexpected"
    );
    for r in results {
        let accepted = r.judged.iter().filter(|j| j.accepted_by.is_some()).count();
        println!(
            "{:<28} {:<width$} {:>6} {:>8} {:>10}",
            r.probe,
            r.request,
            r.fields,
            accepted,
            r.judged.len() - accepted
        );
    }
    println!();
    println!("Accepted differences (pointer [probes]: reason):");
    for (index, entry) in ACCEPTED.iter().enumerate() {
        if used[index] == 0 {
            continue;
        }
        let probes: Vec<&str> = results
            .iter()
            .filter(|r| r.judged.iter().any(|j| j.accepted_by == Some(index)))
            .map(|r| r.probe)
            .collect();
        println!(
            "  {} [{}]: {}",
            entry.pointer,
            if probes.len() == results.len() {
                "all".to_string()
            } else {
                probes.join(", ")
            },
            entry.reason
        );
    }
    if unexpected_total > 0 {
        println!();
        println!("UNEXPECTED differences:");
        for r in results {
            for j in r.judged.iter().filter(|j| j.accepted_by.is_none()) {
                let d = &j.difference;
                println!(
                    "  {} {}: stand-in {} | sam local {}",
                    r.probe,
                    d.pointer,
                    shown(d.stand_in.as_ref()),
                    shown(d.sam.as_ref())
                );
            }
        }
    }
    let stale: Vec<&compare::Accepted> = ACCEPTED
        .iter()
        .zip(used)
        .filter(|(_, n)| **n == 0)
        .map(|(entry, _)| entry)
        .collect();
    if !stale.is_empty() {
        println!();
        println!("STALE accepted entries (no such difference any more; remove them):");
        for entry in &stale {
            println!(
                "  {} [{}]: {}",
                entry.pointer,
                if entry.requests.is_empty() {
                    "any".to_string()
                } else {
                    entry.requests.join(", ")
                },
                entry.reason
            );
        }
    }
    unexpected_total == 0 && stale.is_empty()
}

fn shown(value: Option<&Value>) -> String {
    value.map_or_else(|| "(absent)".to_string(), Value::to_string)
}

/// `sam local start-api` on a copy of the template whose functions all run the echo.
struct SamLocal {
    child: Option<Child>,
    addr: String,
    dir: PathBuf,
    log: Arc<Mutex<Vec<String>>>,
}

impl SamLocal {
    async fn start(sam_cli: &Path, template: &Path, echo: &Path) -> Result<SamLocal> {
        let suffix: u64 = rand::rng().random();
        let dir = std::env::temp_dir().join(format!("compare-gateway-{suffix:016x}"));
        let code = dir.join("echo");
        std::fs::create_dir_all(&code)?;
        std::fs::copy(echo, code.join("bootstrap"))?;
        let copy = dir.join("template.yaml");
        std::fs::write(
            &copy,
            compare::echo_template(&std::fs::read_to_string(template)?, &code)?,
        )?;
        let port = free_port()?;
        let mut child = Command::new(sam_cli)
            .args(["local", "start-api", "--template"])
            .arg(&copy)
            .args(["--parameter-overrides", "Architecture=x86_64"])
            // What this machine needs (`--skip-pull-image`: no registry), from the make target.
            .args(
                std::env::var("SAM_LOCAL_FLAGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .args(["--port", &port.to_string(), "--host", "127.0.0.1"])
            // In the scratch directory: no samconfig.toml applies, nothing lands in the repo.
            .current_dir(&dir)
            .env("SAM_CLI_TELEMETRY", "0")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env_remove("AWS_PROFILE")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", sam_cli.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            tokio::spawn(collect_lines(out, log.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(collect_lines(err, log.clone()));
        }
        let mut sam = SamLocal {
            child: Some(child),
            addr: format!("127.0.0.1:{port}"),
            dir,
            log,
        };
        if let Err(e) = sam.wait_ready().await {
            sam.print_log();
            sam.stop().await;
            return Err(e);
        }
        Ok(sam)
    }

    /// Polls until SAM answers HTTP (its 403 for `/` will do), it exits, or the deadline passes.
    async fn wait_ready(&mut self) -> Result<()> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + SAM_READY_TIMEOUT;
        loop {
            if http
                .get(format!("http://{}/", self.addr))
                .send()
                .await
                .is_ok()
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    return Err(format!("sam local start-api exited early ({status})").into());
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "sam local start-api did not answer on {} within {SAM_READY_TIMEOUT:?}",
                    self.addr
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn print_log(&self) {
        for line in self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            eprintln!("[sam] {line}");
        }
    }

    /// SIGTERM lets SAM stop its running container itself; a SIGKILL follows if it lingers.
    /// Then any container it started and left behind is removed (SAM logs each one's id).
    async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            local_stack::process::stop(&mut child, "TERM", false, Duration::from_secs(10)).await;
        }
        let containers: Vec<String> = self
            .log
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter_map(|line| line.split_once("SAM_CONTAINER_ID: "))
            .map(|(_, id)| id.trim().to_string())
            .filter(|id| !id.is_empty())
            .collect();
        if !containers.is_empty() {
            // Containers SAM removed itself are reported missing; that is the normal case.
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&containers)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
        }
        // Best effort: a leftover scratch directory only costs space.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> Result<u16> {
    // Released at once for SAM to bind; another process taking it meanwhile shows as SAM
    // exiting early.
    Ok(StdListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

async fn collect_lines(stream: impl AsyncRead + Unpin, log: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }
}
