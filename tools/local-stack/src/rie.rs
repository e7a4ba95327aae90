//! A pool of AWS Lambda Runtime Interface Emulator (RIE) processes per function.
//!
//! What the RIE does, as observed (aws-sam-cli's `aws-lambda-rie-x86_64`):
//! - It starts the bootstrap lazily, at the first invoke (the first invoke pays the cold start),
//!   and starts it again after a timeout killed it.
//! - One RIE serves one invocation at a time, like one Lambda execution environment. A second,
//!   concurrent invoke does not queue: the RIE crashes (nil-pointer panic) and takes its
//!   runtime down. So the pool hands each instance to one caller at a time and never returns
//!   an instance whose invocation is still running, even if its caller gave up.
//! - Its environment reaches the function. It needs no AWS variables, only warns when
//!   credentials are missing, and defaults `AWS_LAMBDA_FUNCTION_NAME` to `test_function` and the
//!   timeout to 300 s (`AWS_LAMBDA_FUNCTION_TIMEOUT`), so both are set here.
//! - A function error (returned `Err` or panic) answers HTTP 200 with
//!   `{"errorType", "errorMessage"}` and no `X-Amz-Function-Error` header; a timeout answers
//!   HTTP 200 with the plain text `Task timed out after N.00 seconds` and SIGKILLs the runtime.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::template::FunctionSettings;

const INVOKE_PATH: &str = "/2015-03-31/functions/function/invocations";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
const SPAWN_ATTEMPTS: u32 = 3;

#[derive(Debug, thiserror::Error)]
pub enum RieError {
    #[error(
        "the Lambda runtime interface emulator was not found at {0}; install aws-sam-cli into \
         .venv (it ships aws-lambda-rie-x86_64) or set LAMBDA_RIE to the emulator's path"
    )]
    NotFound(String),
    #[error("cannot start the runtime emulator for {function}: {source}")]
    Spawn {
        function: String,
        source: std::io::Error,
    },
    #[error("the runtime emulator for {function} did not start listening: {detail}")]
    NotReady { function: String, detail: String },
}

#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the runtime emulator of {function} is unreachable: {detail}")]
    Unreachable { function: String, detail: String },
    #[error("the pool of {function} is shut down")]
    Stopped { function: String },
}

/// Every output line of every emulator and function process, in arrival order.
#[derive(Clone, Default)]
pub struct LogSink {
    lines: Arc<Mutex<Vec<String>>>,
    echo: bool,
}

impl LogSink {
    /// With `echo`, each line is also written to stderr as it arrives.
    pub fn new(echo: bool) -> Self {
        Self {
            lines: Arc::default(),
            echo,
        }
    }

    pub fn push(&self, source: &str, line: &str) {
        let line = format!("[{source}] {line}");
        if self.echo {
            eprintln!("{line}");
        }
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The emulator binary: `LAMBDA_RIE`, else the one aws-sam-cli installed in the workspace's
/// `.venv`.
pub fn find_rie(workspace_root: &Path) -> Result<PathBuf, RieError> {
    if let Some(path) = std::env::var_os("LAMBDA_RIE").filter(|p| !p.is_empty()) {
        let path = PathBuf::from(path);
        return if path.is_file() {
            Ok(path)
        } else {
            Err(RieError::NotFound(path.display().to_string()))
        };
    }
    let lib = workspace_root.join(".venv/lib");
    let found = std::fs::read_dir(&lib)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
        .map(|entry| {
            entry
                .path()
                .join("site-packages/samcli/local/rapid/aws-lambda-rie-x86_64")
        })
        .find(|path| path.is_file());
    found.ok_or_else(|| {
        RieError::NotFound(
            lib.join("python3.*/site-packages/samcli/local/rapid/aws-lambda-rie-x86_64")
                .display()
                .to_string(),
        )
    })
}

/// One function's pool.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// The function's name, also its binary's name (`stk-push`).
    pub name: String,
    pub bootstrap: PathBuf,
    pub rie: PathBuf,
    /// How many execution environments may run at once.
    pub size: usize,
    pub settings: FunctionSettings,
    /// The function's own environment, on top of the Lambda-provided variables.
    pub env: Vec<(String, String)>,
}

impl PoolConfig {
    /// The environment of a Lambda execution environment: a clean one (the developer's own AWS
    /// profile or proxy must never leak in), with the variables Lambda itself sets.
    fn process_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "PATH".to_string(),
                "/usr/local/bin:/usr/bin:/bin".to_string(),
            ),
            // Lambda runs in UTC; code that needs Nairobi time must say so explicitly.
            ("TZ".to_string(), ":UTC".to_string()),
            ("LANG".to_string(), "en_US.UTF-8".to_string()),
            ("AWS_LAMBDA_FUNCTION_NAME".to_string(), self.name.clone()),
            (
                "AWS_LAMBDA_FUNCTION_VERSION".to_string(),
                "$LATEST".to_string(),
            ),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE".to_string(),
                self.settings.memory_mb.to_string(),
            ),
            (
                "AWS_LAMBDA_FUNCTION_TIMEOUT".to_string(),
                self.settings.timeout.as_secs().max(1).to_string(),
            ),
        ];
        if let Some(format) = &self.settings.log_format {
            env.push(("AWS_LAMBDA_LOG_FORMAT".to_string(), format.clone()));
        }
        env.extend(self.env.iter().cloned());
        env
    }
}

/// Runtime emulators for one function, each serving one invocation at a time.
#[derive(Clone)]
pub struct RiePool(Arc<Inner>);

struct Inner {
    config: PoolConfig,
    /// The function's environment for the execution environments started from now on: the
    /// config's, until a [`RiePool::redeploy`] replaces it.
    env: Mutex<Vec<(String, String)>>,
    instances: Vec<Instance>,
    /// Indexes of idle instances; the most recently used is taken first, as Lambda prefers
    /// a warm environment.
    idle: Mutex<Vec<usize>>,
    permits: Arc<Semaphore>,
    http: reqwest::Client,
    logs: LogSink,
}

struct Instance {
    port: AtomicU16,
    child: Mutex<Option<Child>>,
}

/// An instance lent to one invocation; back in the idle list when dropped.
struct Lease {
    pool: Arc<Inner>,
    index: usize,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(self.index);
    }
}

impl RiePool {
    /// Starts `config.size` emulators. Their bootstraps start at each one's first invoke.
    pub async fn start(config: PoolConfig, logs: LogSink) -> Result<Self, RieError> {
        let size = config.size.max(1);
        let mut instances = Vec::with_capacity(size);
        for index in 0..size {
            let (child, port) = spawn(&config, index, &logs).await?;
            instances.push(Instance {
                port: AtomicU16::new(port),
                child: Mutex::new(Some(child)),
            });
        }
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| RieError::Spawn {
                function: config.name.clone(),
                source: std::io::Error::other(e),
            })?;
        Ok(Self(Arc::new(Inner {
            env: Mutex::new(config.env.clone()),
            idle: Mutex::new((0..size).rev().collect()),
            permits: Arc::new(Semaphore::new(size)),
            instances,
            http,
            logs,
            config,
        })))
    }

    pub fn name(&self) -> &str {
        &self.0.config.name
    }

    pub fn size(&self) -> usize {
        self.0.instances.len()
    }

    /// Invokes the function with `event` on an idle instance, waiting for one if all are busy,
    /// and returns the emulator's answer body as it came.
    pub async fn invoke_raw(&self, event: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let permit =
            self.0
                .permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| InvokeError::Stopped {
                    function: self.0.config.name.clone(),
                })?;
        let index = self
            .0
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop()
            .ok_or_else(|| InvokeError::Stopped {
                function: self.0.config.name.clone(),
            })?;
        let lease = Lease {
            pool: self.0.clone(),
            index,
            _permit: permit,
        };
        // The invocation runs to its end in its own task even when the caller goes away,
        // because an emulator must not get a new invoke while one is still running.
        let task = tokio::spawn(async move {
            let answer = lease.pool.invoke_on(lease.index, event).await;
            drop(lease);
            answer
        });
        task.await.unwrap_or_else(|e| {
            Err(InvokeError::Unreachable {
                function: self.0.config.name.clone(),
                detail: format!("invocation task failed: {e}"),
            })
        })
    }

    /// Invokes and parses the answer: JSON when it is JSON (a response or an error object),
    /// otherwise the text as a JSON string (the emulator's timeout message).
    pub async fn invoke(&self, event: &Value) -> Result<Value, InvokeError> {
        let raw = self.invoke_raw(event.to_string().into_bytes()).await?;
        Ok(serde_json::from_slice(&raw)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&raw).into_owned())))
    }

    /// What a deployment that changes the function's environment does: invocations already
    /// running finish on their environment, later ones wait, and every execution environment
    /// is replaced by one started with `env` (set or replacing those variables).
    pub async fn redeploy(&self, env: &[(String, String)]) -> Result<(), RieError> {
        let size = u32::try_from(self.0.instances.len()).unwrap_or(u32::MAX);
        let _drained = self
            .0
            .permits
            .clone()
            .acquire_many_owned(size)
            .await
            .map_err(|_| RieError::Spawn {
                function: self.0.config.name.clone(),
                source: std::io::Error::other("the pool is shut down"),
            })?;
        {
            let mut current = self.0.env.lock().unwrap_or_else(PoisonError::into_inner);
            for (name, value) in env {
                current.retain(|(known, _)| known != name);
                current.push((name.clone(), value.clone()));
            }
        }
        let config = self.0.current_config();
        for (index, instance) in self.0.instances.iter().enumerate() {
            let old = instance
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(old) = old {
                stop(old).await;
            }
            let (child, port) = spawn(&config, index, &self.0.logs).await?;
            instance.port.store(port, Ordering::SeqCst);
            *instance
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(child);
        }
        Ok(())
    }

    /// Sends every emulator a kill signal without waiting (for `Drop`).
    pub fn kill_now(&self) {
        self.0.permits.close();
        for instance in &self.0.instances {
            let child = instance
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(mut child) = child {
                // Already exited is fine: there is nothing left to stop.
                let _ = child.start_kill();
            }
        }
    }

    /// Stops every emulator; their runtimes exit when the runtime API goes away.
    pub async fn shutdown(&self) {
        self.0.permits.close();
        for instance in &self.0.instances {
            let child = instance
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(child) = child {
                stop(child).await;
            }
        }
    }
}

/// SIGTERM lets the emulator stop its runtime itself ("SandboxTerminated"); a SIGKILLed
/// emulator leaves the runtime to fail on its next runtime-API call, which logs a spurious
/// error. `kill(1)` sends it because std has no portable way to.
async fn stop(mut child: Child) {
    if let Some(pid) = child.id() {
        let terminated = Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .await
            .is_ok_and(|status| status.success());
        if terminated
            && tokio::time::timeout(Duration::from_secs(2), child.wait())
                .await
                .is_ok()
        {
            return;
        }
    }
    // Already exited is fine: there is nothing left to stop.
    let _ = child.kill().await;
}

impl Inner {
    /// The config new execution environments start with.
    fn current_config(&self) -> PoolConfig {
        let mut config = self.config.clone();
        config.env = self
            .env
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        config
    }

    async fn invoke_on(&self, index: usize, event: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let instance = &self.instances[index];
        let port = instance.port.load(Ordering::SeqCst);
        let url = format!("http://127.0.0.1:{port}{INVOKE_PATH}");
        // The emulator enforces the function timeout itself; this only guards against a hung
        // emulator.
        let limit = self.config.settings.timeout + Duration::from_secs(10);
        let sent = self.http.post(url).body(event).timeout(limit).send().await;
        let failure = match sent {
            Ok(response) => match response.bytes().await {
                Ok(bytes) => return Ok(bytes.to_vec()),
                Err(e) => e.to_string(),
            },
            Err(e) => e.to_string(),
        };
        self.replace_if_dead(index).await;
        Err(InvokeError::Unreachable {
            function: self.config.name.clone(),
            detail: failure,
        })
    }

    /// A crashed emulator is replaced, as Lambda replaces a broken execution environment.
    async fn replace_if_dead(&self, index: usize) {
        let instance = &self.instances[index];
        let exited = {
            let mut child = instance
                .child
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            match child.as_mut().map(Child::try_wait) {
                Some(Ok(Some(status))) => Some(status.to_string()),
                // Shut down, or still running.
                None | Some(Ok(None)) => None,
                Some(Err(e)) => Some(e.to_string()),
            }
        };
        let Some(status) = exited else { return };
        let source = format!("{}#{index}", self.config.name);
        self.logs.push(
            &source,
            &format!("local-stack: emulator exited ({status}); starting a new one"),
        );
        match spawn(&self.current_config(), index, &self.logs).await {
            Ok((child, port)) => {
                let mut slot = instance
                    .child
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if slot.is_some() {
                    *slot = Some(child);
                    instance.port.store(port, Ordering::SeqCst);
                }
                // Otherwise the pool was shut down meanwhile: dropping `child` kills it.
            }
            Err(e) => self
                .logs
                .push(&source, &format!("local-stack: restart failed: {e}")),
        }
    }
}

/// Starts one emulator and waits until it accepts connections. A port taken between choosing
/// and binding it makes the emulator exit at once; another pair of ports is then tried.
async fn spawn(
    config: &PoolConfig,
    index: usize,
    logs: &LogSink,
) -> Result<(Child, u16), RieError> {
    let source = format!("{}#{index}", config.name);
    let mut last_problem = String::new();
    for _ in 0..SPAWN_ATTEMPTS {
        let (api_port, runtime_port) = two_free_ports().map_err(|source| RieError::Spawn {
            function: config.name.clone(),
            source,
        })?;
        let mut child = Command::new(&config.rie)
            .arg("--runtime-interface-emulator-address")
            .arg(format!("127.0.0.1:{api_port}"))
            .arg("--runtime-api-address")
            .arg(format!("127.0.0.1:{runtime_port}"))
            .arg(&config.bootstrap)
            .env_clear()
            .envs(config.process_env())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| RieError::Spawn {
                function: config.name.clone(),
                source,
            })?;
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, source.clone(), logs.clone()));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, source.clone(), logs.clone()));
        }
        match wait_ready(&mut child, api_port).await {
            Ok(()) => return Ok((child, api_port)),
            Err(problem) => {
                last_problem = problem;
                // It may already be gone; either way this attempt is over.
                let _ = child.kill().await;
            }
        }
    }
    Err(RieError::NotReady {
        function: config.name.clone(),
        detail: last_problem,
    })
}

async fn wait_ready(child: &mut Child, port: u16) -> Result<(), String> {
    let started = Instant::now();
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("it exited at start ({status})"));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(format!(
                "nothing listened on port {port} within {READY_TIMEOUT:?}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn two_free_ports() -> std::io::Result<(u16, u16)> {
    // Both listeners are held together so the two ports differ.
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((a.local_addr()?.port(), b.local_addr()?.port()))
}

async fn forward_lines(stream: impl AsyncRead + Unpin, source: String, logs: LogSink) {
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                logs.push(&source, text.trim_end_matches(['\n', '\r']));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> PoolConfig {
        PoolConfig {
            name: "stk-push".to_string(),
            bootstrap: PathBuf::from("/bin/true"),
            rie: PathBuf::from("/bin/true"),
            size: 1,
            settings: FunctionSettings {
                timeout: Duration::from_secs(25),
                memory_mb: 128,
                log_format: Some("JSON".to_string()),
            },
            env: vec![("TABLE_NAME".to_string(), "payments-x".to_string())],
        }
    }

    fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
        env.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn emulator_environment_names_the_function_and_its_template_settings() {
        let env = config().process_env();
        assert_eq!(get(&env, "AWS_LAMBDA_FUNCTION_NAME"), Some("stk-push"));
        assert_eq!(get(&env, "AWS_LAMBDA_FUNCTION_TIMEOUT"), Some("25"));
        assert_eq!(get(&env, "AWS_LAMBDA_LOG_FORMAT"), Some("JSON"));
        assert_eq!(get(&env, "TABLE_NAME"), Some("payments-x"));
        assert_eq!(get(&env, "TZ"), Some(":UTC"));
    }

    #[test]
    fn function_environment_overrides_lambda_defaults() {
        let mut config = config();
        config
            .env
            .push(("TZ".to_string(), "Africa/Nairobi".to_string()));
        assert_eq!(get(&config.process_env(), "TZ"), Some("Africa/Nairobi"));
    }

    #[test]
    fn log_sink_keeps_lines_tagged_with_their_source_in_order() {
        let logs = LogSink::new(false);
        logs.push("stk-push#0", "one");
        logs.clone().push("payment-status#1", "two");
        assert_eq!(
            logs.lines(),
            vec!["[stk-push#0] one", "[payment-status#1] two"]
        );
    }

    #[test]
    fn explicit_emulator_path_that_does_not_exist_is_reported() {
        // Only this test touches LAMBDA_RIE.
        std::env::set_var("LAMBDA_RIE", "/nonexistent/rie");
        let err = find_rie(Path::new("/nonexistent")).unwrap_err();
        std::env::remove_var("LAMBDA_RIE");
        assert!(err.to_string().contains("/nonexistent/rie"), "{err}");
    }
}
