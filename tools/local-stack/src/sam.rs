//! The project under SAM's own local tools: `local-stack sam-deps` starts what the functions
//! need where `sam local` containers reach it, and `local-stack sam-local` runs every command of
//! the README's `sam local` section, checking each answer and the record it leaves.
//!
//! The README is the script: a command there that this runner does not know fails the run, and
//! so does an event in `events/` that no command invokes, so the section cannot drift from what
//! is tested.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use ::dynamo::DynamoStore;
use daraja::mask_id;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::dynamo;
use crate::events::{self, Leaves};
use crate::process;

/// Flags this machine needs and a user's does not, added to every `sam local` command: the
/// make target sets `SAM_LOCAL_FLAGS` (`--skip-pull-image`, since no container registry is
/// reachable here and SAM must use the locally made base image as it is).
fn machine_flags() -> String {
    std::env::var("SAM_LOCAL_FLAGS").unwrap_or_default()
}

mod deps;

pub use deps::{container_host, deps, DEMO_PHONES};
use deps::{wait_for_stop, LocalEnv, READY};

mod script;

#[cfg(test)]
use script::strip_comment;
use script::{logical_id, parse_step, readme_commands, Step};

/// One row of the closing table.
struct Row {
    step: String,
    expected: String,
    got: String,
    seconds: f64,
    ok: bool,
}

/// State carried from one step to the next.
struct Run {
    root: PathBuf,
    /// `events/env.json`, read once.
    local: LocalEnv,
    env: Vec<(String, String)>,
    servers: Vec<Child>,
    store: Option<DynamoStore>,
    invoked: BTreeSet<String>,
    /// The last payment `POST /payments` answered, and the phone it was for.
    last_payment: Option<(String, String)>,
    rows: Vec<Row>,
}

/// The README's placeholder for the checkout id the previous `POST /payments` answered.
const CHECKOUT_PLACEHOLDER: &str = "CHECKOUT_REQUEST_ID";

/// `local-stack sam-local`: every command of the README's `sam local` section, checked.
pub async fn run_readme() -> ExitCode {
    let Some(root) = dynamo::workspace_root() else {
        eprintln!("sam-local: no template.yaml above this directory");
        return ExitCode::FAILURE;
    };
    let local = match LocalEnv::load(&root) {
        Ok(local) => local,
        Err(e) => {
            eprintln!("sam-local: {e}");
            return ExitCode::FAILURE;
        }
    };
    let started = Instant::now();
    let mut run = Run {
        root: root.clone(),
        local,
        env: vec![("SAM_CLI_TELEMETRY".into(), "0".into())],
        servers: Vec::new(),
        store: None,
        invoked: BTreeSet::new(),
        last_payment: None,
        rows: Vec::new(),
    };
    // The servers run in process groups of their own, so a Ctrl-C in the terminal does not reach
    // them: stop them here whichever way the run ends.
    let outcome = tokio::select! {
        outcome = run_steps(&mut run) => outcome,
        _ = wait_for_stop() => Err("interrupted".to_string()),
    };
    for mut server in run.servers.drain(..).rev() {
        // SIGINT to the whole group: start-api stops its containers, sam-deps stops moto.
        process::stop(&mut server, "INT", true, Duration::from_secs(15)).await;
    }
    print_table(&run.rows);
    let failed = run.rows.iter().filter(|r| !r.ok).count();
    match outcome {
        Err(e) => {
            eprintln!("sam-local: {e}");
            ExitCode::FAILURE
        }
        Ok(()) if failed > 0 => {
            eprintln!("sam-local: {failed} of {} steps failed", run.rows.len());
            ExitCode::FAILURE
        }
        Ok(()) => {
            println!(
                "sam-local: {} steps passed in {:.0} s",
                run.rows.len(),
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
    }
}

async fn run_steps(run: &mut Run) -> Result<(), String> {
    let readme = std::fs::read_to_string(run.root.join("README.md")).map_err(|e| e.to_string())?;
    let steps: Vec<Step> = readme_commands(&readme, "### `sam local`")?
        .iter()
        .map(|line| parse_step(line))
        .collect::<Result<_, _>>()?;
    if !run.root.join(".aws-sam/build/template.yaml").is_file() {
        return Err("no .aws-sam/build/template.yaml: run `make sam-build` first".into());
    }
    for step in steps {
        match step {
            Step::Prerequisite(line) => run.rows.push(Row {
                step: line,
                expected: "ran by make before this runner".into(),
                got: ".aws-sam/build present".into(),
                seconds: 0.0,
                ok: true,
            }),
            Step::Export(pairs) => run.env.extend(pairs),
            Step::Server(line) => start_server(run, &line).await?,
            Step::Invoke {
                line,
                function,
                event,
            } => invoke(run, &line, &function, &event).await?,
            Step::Curl(line) => curl(run, &line).await?,
        }
    }
    init_failure_is_caught(run).await?;
    let files = events::event_files(&events::events_dir(&run.root)).map_err(|e| e.to_string())?;
    let missed: Vec<&String> = files.iter().filter(|f| !run.invoked.contains(*f)).collect();
    if !missed.is_empty() {
        return Err(format!(
            "events the README's sam local section never invokes: {missed:?}"
        ));
    }
    Ok(())
}

fn shell(run: &Run, line: &str) -> Command {
    let mut command = Command::new("bash");
    command
        .arg("-c")
        .arg(line)
        .current_dir(&run.root)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    // A developer's own AWS profile must not reach anything here.
    for name in ["AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_DEFAULT_PROFILE"] {
        command.env_remove(name);
    }
    command.envs(run.env.iter().map(|(k, v)| (k, v)));
    command
}

async fn start_server(run: &mut Run, line: &str) -> Result<(), String> {
    let started = Instant::now();
    let is_deps = line.ends_with("sam-deps");
    // start-api listens where the simulator calls back (`CALLBACK_BASE_URL`).
    let api = run.local.callback_addr.clone();
    if !is_deps && tcp_open(&api).await {
        return Err(format!(
            "{api} is taken before `sam local start-api` started: stop what listens there"
        ));
    }
    let full = if is_deps {
        format!("exec {line}")
    } else {
        format!("exec {line} {}", machine_flags())
    };
    let mut child = shell(run, &full)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so stopping it stops what it started.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("{line}: {e}"))?;
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    for (stream, tag) in [
        (
            Box::new(stdout) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            "out",
        ),
        (Box::new(stderr), "err"),
    ] {
        let ready_tx = ready_tx.clone();
        let name = if is_deps { "sam-deps" } else { "start-api" };
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(text)) = lines.next_line().await {
                if std::env::var_os("SAM_LOCAL_VERBOSE").is_some() {
                    eprintln!("[{name} {tag}] {text}");
                }
                let _ = ready_tx.send(text);
            }
        });
    }
    drop(ready_tx);
    // sam-deps may compile first; start-api answers within seconds.
    let deadline = Instant::now() + Duration::from_secs(if is_deps { 300 } else { 60 });
    let mut seen = Vec::new();
    let got = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "{line}: not ready in time; it printed:\n{}",
                seen.join("\n")
            ));
        }
        if !is_deps && tcp_open(&api).await {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(format!("{line}: exited ({status}) although {api} answers"));
            }
            break format!("listening on {api}");
        }
        match tokio::time::timeout(remaining.min(Duration::from_millis(200)), ready_rx.recv()).await
        {
            Ok(Some(text)) => {
                if is_deps && text.starts_with(READY) {
                    break text;
                }
                seen.push(text);
            }
            Ok(None) => {
                return Err(format!("{line}: exited; it printed:\n{}", seen.join("\n")));
            }
            Err(_) => {}
        }
    };
    if is_deps {
        // The ready line names DynamoDB's endpoint first.
        let endpoint = got
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .ok_or_else(|| format!("no DynamoDB endpoint in {got:?}"))?;
        let client = dynamo::client(endpoint).await;
        run.store = Some(DynamoStore::new(client, run.local.table.clone()));
    }
    run.servers.push(child);
    run.rows.push(Row {
        step: line.to_string(),
        expected: "ready".into(),
        got: trim(&got, 70),
        seconds: started.elapsed().as_secs_f64(),
        ok: true,
    });
    Ok(())
}

async fn tcp_open(addr: &str) -> bool {
    tokio::net::TcpStream::connect(addr).await.is_ok()
}

async fn invoke(run: &mut Run, line: &str, function: &str, event: &str) -> Result<(), String> {
    let sample = events::sample_event(event)
        .ok_or_else(|| format!("{line}: {event} has no expectation in local_stack::events"))?;
    if logical_id(sample.function) != function {
        return Err(format!(
            "{line}: {event} belongs to {}",
            logical_id(sample.function)
        ));
    }
    if !run.invoked.insert(event.to_string()) {
        return Err(format!("{line}: {event} is invoked twice"));
    }
    let started = Instant::now();
    let output = shell(run, &format!("{line} {}", machine_flags()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("{line}: {e}"))?;
    let seconds = started.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // SAM prints the function's answer as the last line of stdout; a function that failed at
    // init prints nothing there and SAM still exits 0, so the answer is what counts.
    let answer: Option<Value> = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str(l).ok());
    let result = match &answer {
        None => Err(format!(
            "no answer (the function failed to start?); stderr: {}",
            tail(&stderr, 6)
        )),
        Some(answer) => match sample.answer.check(answer) {
            Err(e) => Err(e),
            Ok(()) => match (&run.store, sample.leaves) {
                (_, Leaves::Nothing) => Ok(()),
                (None, _) => Err("no DynamoDB to check: start sam-deps first".into()),
                (Some(store), leaves) => events::check_leaves(store, leaves, answer).await,
            },
        },
    };
    let expected = match sample.leaves {
        Leaves::Nothing => sample.answer.describe(),
        leaves => format!("{}; {}", sample.answer.describe(), describe_leaves(leaves)),
    };
    run.rows.push(Row {
        step: format!("invoke {function} {event}"),
        expected,
        got: match (&result, &answer) {
            (Ok(()), Some(answer)) => summarise(answer),
            (Err(e), _) => e.clone(),
            (Ok(()), None) => unreachable!("an answer was checked"),
        },
        seconds,
        ok: result.is_ok(),
    });
    Ok(())
}

/// The check above must see a function that cannot start: SAM prints nothing on stdout for
/// one and still exits 0. An environment without `TABLE_NAME` stops the status function's cold
/// start, so this invocation must end with no answer.
async fn init_failure_is_caught(run: &mut Run) -> Result<(), String> {
    let dir = std::env::temp_dir().join(format!("sam-local-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let env_file = dir.join("env-without-table.json");
    std::fs::write(
        &env_file,
        r#"{"PaymentStatusFunction": {"TABLE_NAME": ""}}"#,
    )
    .map_err(|e| e.to_string())?;
    let line = format!(
        "sam local invoke PaymentStatusFunction --event events/status.json --env-vars {} {}",
        env_file.display(),
        machine_flags()
    );
    let started = Instant::now();
    let output = shell(run, &line)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("{line}: {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let answered = String::from_utf8_lossy(&output.stdout)
        .lines()
        .any(|l| serde_json::from_str::<Value>(l).is_ok());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let named = stderr.contains("TABLE_NAME");
    run.rows.push(Row {
        step: "invoke PaymentStatusFunction without TABLE_NAME".into(),
        expected: "no answer, init error names TABLE_NAME".into(),
        got: format!(
            "sam exit {}, {}, {}",
            output.status.code().unwrap_or(-1),
            if answered { "an answer" } else { "no answer" },
            if named {
                "TABLE_NAME named"
            } else {
                "TABLE_NAME not named"
            }
        ),
        seconds: started.elapsed().as_secs_f64(),
        ok: !answered && named,
    });
    Ok(())
}

fn describe_leaves(leaves: Leaves) -> String {
    match leaves {
        Leaves::Nothing => String::new(),
        Leaves::AnsweredPayment(status) => format!("record {status:?}"),
        Leaves::Payment(id, status) => format!("{} {status:?}", mask_id(id)),
        Leaves::Orphan(_) => "kept as orphan".into(),
    }
}

/// An answer in a few words: `202 PENDING`, `422 invalid_phone`, `round due=3 resolved=2`,
/// `batchItemFailures []`, `{"replayed":1}`.
fn summarise(answer: &Value) -> String {
    if let Some(status) = answer["statusCode"].as_u64() {
        let body = events::answer_body(answer).unwrap_or(Value::Null);
        let what = body["status"]
            .as_str()
            .or_else(|| body["error"]["code"].as_str())
            .or_else(|| body["message"].as_str())
            .map(str::to_string)
            .or_else(|| body.get("ResultCode").map(|c| format!("ResultCode {c}")))
            .unwrap_or_default();
        return format!("{status} {what}");
    }
    if let Some(failures) = answer.get("batchItemFailures") {
        return format!("batchItemFailures {failures}");
    }
    if answer.get("due").is_none() {
        return answer.to_string();
    }
    format!(
        "round due={} queried={} resolved={}",
        answer["due"], answer["queried"], answer["resolved"]
    )
}

async fn curl(run: &mut Run, line: &str) -> Result<(), String> {
    let is_post = line.contains("-X POST") && line.contains("/payments");
    let line = match &run.last_payment {
        Some((id, _)) => line.replace(CHECKOUT_PLACEHOLDER, id),
        None => line.to_string(),
    };
    let started = Instant::now();
    if is_post {
        let phone = DEMO_PHONES
            .iter()
            .map(|(phone, _, _)| *phone)
            .find(|phone| line.contains(phone))
            .ok_or_else(|| format!("{line}: not one of the demo phones"))?;
        let body = run_curl(run, &line).await;
        let id = body
            .as_ref()
            .ok()
            .and_then(|b| b["checkout_request_id"].as_str())
            .map(str::to_string);
        let ok = matches!(&body, Ok(b) if b["status"] == "PENDING") && id.is_some();
        run.last_payment = id.clone().map(|id| (id, phone.to_string()));
        // The checkout id embeds the phone number: only its masked form is printed, and no
        // body is printed whole.
        let got = match &body {
            Ok(b) => format!(
                "{} {}",
                b["status"]
                    .as_str()
                    .or_else(|| b["error"]["code"].as_str())
                    .unwrap_or("no status"),
                id.as_deref().map(mask_id).unwrap_or_default()
            ),
            Err(e) => e.clone(),
        };
        run.rows.push(Row {
            step: format!("start-api POST /payments (phone …{})", last3(phone)),
            expected: "202 PENDING".into(),
            got,
            seconds: started.elapsed().as_secs_f64(),
            ok,
        });
        return Ok(());
    }
    // A status read: the payment's final state arrives by callback (or reconciliation), so
    // ask again until it is final or the deadline passes.
    let Some((id, phone)) = run.last_payment.clone() else {
        run.rows.push(Row {
            step: line,
            expected: "a payment made before it".into(),
            got: "none".into(),
            seconds: 0.0,
            ok: false,
        });
        return Ok(());
    };
    let expected = DEMO_PHONES
        .iter()
        .find(|(p, _, _)| *p == phone)
        .map(|(_, _, status)| *status)
        .expect("a demo phone");
    let expected_text = expected.as_str();
    let deadline = Instant::now() + Duration::from_secs(30);
    let body = loop {
        let body = match run_curl(run, &line).await {
            Ok(body) => body,
            Err(e) => break serde_json::json!({ "status": e }),
        };
        let status = body["status"].as_str().unwrap_or_default().to_string();
        if status == expected_text || (status != "PENDING" && !status.is_empty()) {
            break body;
        }
        if Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    run.rows.push(Row {
        step: format!(
            "start-api GET /payments/{} (phone …{})",
            mask_id(&id),
            last3(&phone)
        ),
        expected: expected_text.to_string(),
        got: body["status"].as_str().unwrap_or("no status").to_string(),
        seconds: started.elapsed().as_secs_f64(),
        ok: body["status"] == expected_text,
    });
    Ok(())
}

async fn run_curl(run: &Run, line: &str) -> Result<Value, String> {
    let output = shell(run, line)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|e| format!("{line}: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "curl {}: {}",
            output.status,
            tail(&String::from_utf8_lossy(&output.stderr), 2)
        ));
    }
    serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("not JSON ({e}), {} bytes", output.stdout.len()))
}

pub(super) fn last3(phone: &str) -> &str {
    &phone[phone.len().saturating_sub(3)..]
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join(" | ")
}

fn trim(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_string()
    } else {
        let cut: String = text.chars().take(max).collect();
        format!("{cut}…")
    }
}

fn print_table(rows: &[Row]) {
    let width =
        |f: fn(&Row) -> usize, title: &str| rows.iter().map(f).max().unwrap_or(0).max(title.len());
    let (ws, we, wg) = (
        width(|r| r.step.chars().count().min(60), "step"),
        width(|r| r.expected.chars().count(), "expected"),
        width(|r| r.got.chars().count(), "got"),
    );
    println!();
    println!(
        "| {:ws$} | {:we$} | {:wg$} | {:>7} |    |",
        "step", "expected", "got", "seconds"
    );
    println!(
        "|{}|{}|{}|{}|----|",
        "-".repeat(ws + 2),
        "-".repeat(we + 2),
        "-".repeat(wg + 2),
        "-".repeat(9)
    );
    for row in rows {
        println!(
            "| {:ws$} | {:we$} | {:wg$} | {:>7.1} | {} |",
            trim(&row.step, 60),
            row.expected,
            row.got,
            row.seconds,
            if row.ok { "ok" } else { "NO" }
        );
    }
}

#[cfg(test)]
mod tests;
