//! Starting, using and stopping the whole local system.

mod fresh;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use app::api::CallbackKeys;
use daraja_sim::{SimConfig, SimHandle};
use rand::Rng;
use serde_json::Value;

use crate::dynamo::{self, DynamoError, Moto};
use crate::gateway::Gateway;
use crate::pipeline::{EventsOptions, Pipeline, PipelineError};
use crate::rie::{self, InvokeError, LogSink, PoolConfig, RieError, RiePool};
use crate::template::{Template, TemplateError};
use crate::Function;

/// Which build of the function binaries to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    #[default]
    Debug,
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }

    fn cargo_flag(self) -> &'static str {
        match self {
            Profile::Debug => "",
            Profile::Release => " --release",
        }
    }
}

/// How to start the stack. `Default` is the demo's set-up: one environment per function, the
/// public sandbox simulator, debug binaries.
#[derive(Debug, Clone)]
pub struct StackOptions {
    pub profile: Profile,
    /// Where cargo put the binaries; default `$CARGO_TARGET_DIR`, else `<workspace>/target`.
    pub target_dir: Option<PathBuf>,
    /// Execution environments per function (concurrent invocations each can serve).
    pub pool_size: usize,
    /// The simulator's configuration; its shortcode and passkey are also given to the functions.
    /// Unset consumer credentials are generated, and the simulator then checks them.
    pub sim: SimConfig,
    /// Added to (and overriding) every function's environment.
    pub extra_env: Vec<(String, String)>,
    /// A running DynamoDB endpoint to use instead of starting moto; default `$DYNAMODB_ENDPOINT`.
    pub dynamodb_endpoint: Option<String>,
    /// Default `<workspace>/template.yaml`.
    pub template: Option<PathBuf>,
    /// Also print every function and emulator log line to stderr.
    pub echo_logs: bool,
    /// The gateway's port; 0 picks a free one.
    pub gateway_port: u16,
    /// Payment events: the bus, the stream consumer and, with a webhook, its delivery. `None`:
    /// the two functions are there but nothing feeds them.
    pub events: Option<EventsOptions>,
}

/// The secrets a `CALLBACK_TOKEN` value holds: itself, and each key of an `id:key` list alone.
fn callback_secrets(value: &str) -> Vec<String> {
    let keys = value
        .split(',')
        .filter_map(|entry| entry.split_once(':'))
        .map(|(_, key)| key.trim().to_string());
    std::iter::once(value.to_string()).chain(keys).collect()
}

/// The access key id every function would share (moto takes any).
const SHARED_ACCESS_KEY: &str = "test";

/// `env` with the function's own AWS access key id, `local-<binary>`, in place of the shared
/// one: moto takes any, and a proxy in front of it can tell which function sent a request, as
/// IAM tells the functions' roles apart. A key set in [`StackOptions::extra_env`] stays.
fn own_access_key(env: &[(String, String)], function: Function) -> Vec<(String, String)> {
    env.iter()
        .map(|(name, value)| match (name.as_str(), value.as_str()) {
            ("AWS_ACCESS_KEY_ID", SHARED_ACCESS_KEY) => {
                (name.clone(), format!("local-{}", function.name()))
            }
            _ => (name.clone(), value.clone()),
        })
        .collect()
}

/// Environment variables as [`StackOptions::extra_env`] holds them.
pub fn env_vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            profile: Profile::Debug,
            target_dir: None,
            pool_size: 1,
            sim: SimConfig::default(),
            extra_env: Vec::new(),
            dynamodb_endpoint: None,
            template: None,
            echo_logs: false,
            gateway_port: 0,
            events: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("function binaries missing: {}; build them first: {command}", missing.join(", "))]
    MissingBinaries {
        missing: Vec<String>,
        command: String,
    },
    /// Each binary with the newest of its sources modified after it was built.
    #[error(
        "function binaries built before their sources last changed: {}; rebuild them: \
         {command}{}",
        stale.iter().map(|(binary, source)| format!("{binary} (older than {source})"))
            .collect::<Vec<_>>().join(", "),
        if stale.iter().any(|(_, source)| source.ends_with("Cargo.toml")) {
            " (if cargo finds nothing to rebuild, the manifest change does not reach the \
             binary: `touch` it)"
        } else {
            ""
        }
    )]
    StaleBinaries {
        stale: Vec<(String, String)>,
        command: String,
    },
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Rie(#[from] RieError),
    #[error(transparent)]
    Invoke(#[from] InvokeError),
    #[error(transparent)]
    Dynamo(#[from] DynamoError),
    #[error(transparent)]
    Events(#[from] PipelineError),
    #[error("cannot start the {what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
}

/// The running system. Dropping it stops the processes it started; [`LocalStack::shutdown`]
/// also waits for them and removes its table from a shared DynamoDB endpoint.
pub struct LocalStack {
    gateway: Gateway,
    pools: HashMap<Function, RiePool>,
    sim: SimHandle,
    moto: Option<Moto>,
    dynamo: aws_sdk_dynamodb::Client,
    dynamodb_endpoint: String,
    table: String,
    callback_token: String,
    /// `None` when a test gave the functions a key they refuse.
    callback_keys: Option<CallbackKeys>,
    function_env: Vec<(String, String)>,
    secrets: Vec<String>,
    logs: LogSink,
    pipeline: Option<Pipeline>,
    events_moto: Option<Moto>,
    stopped: bool,
}

impl LocalStack {
    pub async fn start(opts: StackOptions) -> Result<LocalStack, Error> {
        let root = workspace_root();
        let bootstraps = find_binaries(&opts, &root)?;
        let rie = rie::find_rie(&root)?;
        let template_path = opts
            .template
            .clone()
            .unwrap_or_else(|| root.join("template.yaml"));
        let template = Template::load(&template_path)?;

        // Bound first: the functions' callback URL needs the port, and a taken port fails fast.
        let listener = tokio::net::TcpListener::bind(SocketAddr::from((
            Ipv4Addr::LOCALHOST,
            opts.gateway_port,
        )))
        .await
        .map_err(|source| Error::Io {
            what: "API Gateway stand-in",
            source,
        })?;
        let gateway_addr = listener.local_addr().map_err(|source| Error::Io {
            what: "API Gateway stand-in",
            source,
        })?;

        let endpoint_override = opts
            .dynamodb_endpoint
            .clone()
            .or_else(|| std::env::var("DYNAMODB_ENDPOINT").ok())
            .filter(|e| !e.trim().is_empty());
        let (moto, dynamodb_endpoint) = match endpoint_override {
            Some(endpoint) => (None, endpoint),
            None => {
                let moto = start_moto().await?;
                let endpoint = moto.endpoint();
                (Some(moto), endpoint)
            }
        };
        let dynamo = dynamo::client(&dynamodb_endpoint).await;
        let suffix = random_hex(6);
        let table = format!("payments-{suffix}");
        dynamo::create_table_from_template(&dynamo, &template_path, &table).await?;
        // The bus and the queues on a moto of their own: moto serves one request at a time (for
        // DynamoDB's atomicity), and a PutEvents with a target takes it ~180 ms, which would hold
        // up every DynamoDB request behind it.
        let (events_moto, pipeline) = match &opts.events {
            Some(events) => {
                let events_moto = start_moto().await?;
                let pipeline =
                    Pipeline::create(&events_moto.endpoint(), &suffix, &template, events).await?;
                (Some(events_moto), Some(pipeline))
            }
            None => (None, None),
        };

        let mut sim_config = opts.sim.clone();
        let consumer_key = sim_config
            .consumer_key
            .get_or_insert_with(|| format!("local-key-{}", random_hex(12)))
            .clone();
        let consumer_secret = sim_config
            .consumer_secret
            .get_or_insert_with(|| format!("local-secret-{}", random_hex(12)))
            .clone();
        let (shortcode, passkey) = (sim_config.shortcode.clone(), sim_config.passkey.clone());
        let sim = daraja_sim::start(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), sim_config)
            .await
            .map_err(|source| Error::Io {
                what: "Daraja simulator",
                source,
            })?;

        let callback_token = random_hex(32);
        let mut function_env = env_vars(&[
            ("TABLE_NAME", table.as_str()),
            ("AWS_ENDPOINT_URL_DYNAMODB", dynamodb_endpoint.as_str()),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", SHARED_ACCESS_KEY),
            ("AWS_SECRET_ACCESS_KEY", "test"),
            ("DARAJA_BASE_URL", sim.base_url().as_str()),
            ("DARAJA_SHORTCODE", shortcode.as_str()),
            ("DARAJA_PASSKEY", passkey.as_str()),
            ("DARAJA_CONSUMER_KEY", consumer_key.as_str()),
            ("DARAJA_CONSUMER_SECRET", consumer_secret.as_str()),
            ("CALLBACK_TOKEN", callback_token.as_str()),
            ("CALLBACK_BASE_URL", &format!("http://{gateway_addr}")),
            ("RUST_LOG", "info"),
        ]);
        let mut pipeline = pipeline.map(|(pipeline, env)| {
            function_env.extend(env);
            pipeline
        });
        function_env.extend(opts.extra_env.iter().cloned());
        // The key the functions really run with: a test may set its own.
        let callback_token = function_env
            .iter()
            .rev()
            .find(|(name, _)| name == "CALLBACK_TOKEN")
            .map_or(callback_token, |(_, value)| value.clone());
        let callback_keys = CallbackKeys::parse(&callback_token).ok();

        let logs = LogSink::new(opts.echo_logs);
        let mut pools = HashMap::new();
        for (function, bootstrap) in bootstraps {
            let config = PoolConfig {
                name: function.name().to_string(),
                bootstrap,
                rie: rie.clone(),
                size: opts.pool_size,
                settings: template.function(function.name()),
                env: own_access_key(&function_env, function),
            };
            match RiePool::start(config, logs.clone()).await {
                Ok(pool) => {
                    pools.insert(function, pool);
                }
                Err(e) => {
                    for pool in pools.values() {
                        pool.shutdown().await;
                    }
                    sim.shutdown().await;
                    return Err(e.into());
                }
            }
        }
        let gateway = Gateway::serve(listener, pools.clone()).map_err(|source| Error::Io {
            what: "API Gateway stand-in",
            source,
        })?;
        if let (Some(pipeline), Some(consumer)) =
            (pipeline.as_mut(), pools.get(&Function::PaymentEvents))
        {
            let stream_arn = dynamo::stream_arn(&dynamo, &table).await?;
            pipeline.start_pollers(
                &dynamodb_endpoint,
                stream_arn,
                &template,
                consumer.clone(),
                pools.get(&Function::WebhookDelivery).cloned(),
            );
        }

        Ok(LocalStack {
            gateway,
            pools,
            sim,
            moto,
            dynamo,
            dynamodb_endpoint,
            table,
            secrets: [consumer_key, consumer_secret, passkey]
                .into_iter()
                .chain(callback_secrets(&callback_token))
                .collect(),
            callback_token,
            callback_keys,
            function_env,
            logs,
            pipeline,
            events_moto,
            stopped: false,
        })
    }

    /// `http://127.0.0.1:PORT`, the API's base URL (routes: `POST /payments`,
    /// `GET /payments/{id}`, `POST /callbacks/stk/{token}`).
    pub fn api_url(&self) -> String {
        self.gateway.url()
    }

    pub fn sim(&self) -> &SimHandle {
        &self.sim
    }

    pub fn dynamo(&self) -> aws_sdk_dynamodb::Client {
        self.dynamo.clone()
    }

    pub fn dynamodb_endpoint(&self) -> &str {
        &self.dynamodb_endpoint
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// What `sam deploy` of a changed environment does to every function: running invocations
    /// finish, and every execution environment is replaced by one with `env` set. A changed
    /// `CALLBACK_TOKEN` is then the key the stack signs and verifies with (and a secret its logs
    /// must not show).
    pub async fn redeploy(&mut self, env: &[(&str, &str)]) -> Result<(), Error> {
        let env = env_vars(env);
        for pool in self.pools.values() {
            pool.redeploy(&env).await?;
        }
        for (name, value) in &env {
            self.function_env.retain(|(known, _)| known != name);
            self.function_env.push((name.clone(), value.clone()));
            if name == "CALLBACK_TOKEN" {
                self.callback_token.clone_from(value);
                self.callback_keys = CallbackKeys::parse(value).ok();
                self.secrets.extend(callback_secrets(value));
            }
        }
        Ok(())
    }

    /// The key (or `id:key` list) the functions sign and verify callback URLs with
    /// (`CALLBACK_TOKEN`).
    pub fn callback_key(&self) -> &str {
        &self.callback_token
    }

    /// The path token of the callback URL the push of `checkout_request_id` sent Daraja, or,
    /// when no push sent one, a fresh valid token: what a result for an unknown payment, or a
    /// second URL seen by a forger, comes with.
    pub fn callback_token_for(&self, checkout_request_id: &str) -> String {
        self.sim
            .callback_url(checkout_request_id)
            .and_then(|url| url.rsplit('/').next().map(str::to_owned))
            .unwrap_or_else(|| self.unsent_callback_token())
    }

    /// A valid callback URL token that no push sent.
    pub fn unsent_callback_token(&self) -> String {
        self.callback_keys
            .as_ref()
            .map(|keys| keys.mint().token)
            .unwrap_or_default()
    }

    /// Every secret value given to the functions (consumer key and secret, passkey, callback
    /// token): what must never appear in [`LocalStack::logs`].
    pub fn secrets(&self) -> &[String] {
        &self.secrets
    }

    /// The environment every function runs with (on top of Lambda's own variables).
    pub fn function_env(&self) -> &[(String, String)] {
        &self.function_env
    }

    /// Every line the emulators and functions wrote so far, tagged `[stk-push#0]` and so on.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lines()
    }

    /// Invokes `function` directly with an event, as `sam local invoke` does, and returns its
    /// answer: the response object, the `{"errorType","errorMessage"}` object of a function
    /// error, or the emulator's timeout text as a JSON string.
    pub async fn invoke(&self, function: Function, event: &Value) -> Result<Value, Error> {
        let pool = self
            .pools
            .get(&function)
            .ok_or_else(|| InvokeError::Stopped {
                function: function.name().to_string(),
            })?;
        Ok(pool.invoke(event).await?)
    }

    /// Payment events (the bus, its queues, what the pollers did): `None` unless
    /// [`StackOptions::events`] was set.
    pub fn events(&self) -> Option<&Pipeline> {
        self.pipeline.as_ref()
    }

    /// Stops everything it started and deletes its table when the DynamoDB endpoint is shared.
    pub async fn shutdown(mut self) {
        if let Some(pipeline) = self.pipeline.as_mut() {
            pipeline.stop();
        }
        if let Some(moto) = self.events_moto.take() {
            moto.shutdown().await;
        }
        self.gateway.shutdown().await;
        for pool in self.pools.values() {
            pool.shutdown().await;
        }
        self.sim.clone().shutdown().await;
        match self.moto.take() {
            Some(moto) => moto.shutdown().await,
            None => {
                // Best effort: a leftover table on a shared endpoint only costs space.
                let _ = self
                    .dynamo
                    .delete_table()
                    .table_name(&self.table)
                    .send()
                    .await;
            }
        }
        self.stopped = true;
    }
}

impl Drop for LocalStack {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        for pool in self.pools.values() {
            pool.kill_now();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(self.sim.clone().shutdown());
        }
        // Moto and the gateway stop when their handles drop.
    }
}

/// The workspace this crate belongs to, where `template.yaml` and `.venv` live.
fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

fn find_binaries(opts: &StackOptions, root: &Path) -> Result<Vec<(Function, PathBuf)>, Error> {
    let target = opts
        .target_dir
        .clone()
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .unwrap_or_else(|| root.join("target"));
    let dir = target.join(opts.profile.dir());
    let found: Vec<(Function, PathBuf)> = Function::ALL
        .iter()
        .map(|f| (*f, dir.join(f.name())))
        .collect();
    let missing: Vec<String> = found
        .iter()
        .filter(|(_, path)| !path.is_file())
        .map(|(_, path)| path.display().to_string())
        .collect();
    let packages: String = Function::ALL
        .iter()
        .map(|f| format!(" -p {}", f.name()))
        .collect();
    let command = format!(
        "CARGO_TARGET_DIR={} cargo build{packages}{}",
        target.display(),
        opts.profile.cargo_flag()
    );
    if !missing.is_empty() {
        return Err(Error::MissingBinaries { missing, command });
    }
    let stale = stale_binaries(&found, root);
    if stale.is_empty() {
        return Ok(found);
    }
    Err(Error::StaleBinaries {
        stale,
        command: rebuild_command(opts, command),
    })
}

/// `command`, after `make build` when that builds the same binaries: debug ones, into the
/// target directory of the environment (the one used unless `target_dir` says otherwise).
fn rebuild_command(opts: &StackOptions, command: String) -> String {
    if opts.profile == Profile::Debug && opts.target_dir.is_none() {
        format!("make build, or {command}")
    } else {
        command
    }
}

/// Each binary older than one of its sources, with the newest such source.
fn stale_binaries(found: &[(Function, PathBuf)], root: &Path) -> Vec<(String, String)> {
    let root = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
    found
        .iter()
        .filter_map(|(function, binary)| {
            // A binary whose time cannot be read is left for the start to report.
            let newer = fresh::newer_source(binary, function.name(), &root).ok()??;
            Some((binary.display().to_string(), newer.display().to_string()))
        })
        .collect()
}

/// Moto's port is chosen before moto binds it; losing that race shows as an early exit, and
/// another port is tried.
async fn start_moto() -> Result<Moto, DynamoError> {
    let mut attempt = 1;
    loop {
        match Moto::start().await {
            Err(DynamoError::MotoExited(_)) if attempt < 3 => attempt += 1,
            other => return other,
        }
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill(buf.as_mut_slice());
    hex::encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_error_names_each_path_and_the_build_command() {
        let opts = StackOptions {
            target_dir: Some(PathBuf::from("/nonexistent/target")),
            profile: Profile::Release,
            ..StackOptions::default()
        };
        let err = find_binaries(&opts, Path::new("/nonexistent")).unwrap_err();
        let text = err.to_string();
        for name in Function::ALL.map(Function::name) {
            assert!(
                text.contains(&format!("/nonexistent/target/release/{name}")),
                "{text}"
            );
        }
        assert!(
            text.contains(
                "cargo build -p stk-push -p stk-callback -p payment-status -p reconcile \
                 -p payment-events -p webhook-delivery --release"
            ),
            "{text}"
        );
    }

    #[test]
    fn stale_binaries_error_names_each_binary_its_newer_source_and_the_rebuild() {
        let root = std::env::temp_dir().join(format!("local-stack-stale-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let target = root.join("target");
        let long_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
        let write = |path: &Path, modified: std::time::SystemTime| {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "").unwrap();
            std::fs::File::options()
                .write(true)
                .open(path)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        };
        for f in Function::ALL {
            write(&target.join("debug").join(f.name()), long_ago);
        }
        let source = root.join("shared/app/src/lib.rs");
        write(&source, std::time::SystemTime::now());
        let opts = StackOptions {
            target_dir: Some(target.clone()),
            ..StackOptions::default()
        };

        let text = find_binaries(&opts, &root).unwrap_err().to_string();

        let source = source.canonicalize().unwrap();
        for f in Function::ALL {
            let binary = target.join("debug").join(f.name());
            assert!(
                text.contains(&format!(
                    "{} (older than {})",
                    binary.display(),
                    source.display()
                )),
                "{text}"
            );
        }
        assert!(
            text.contains(&format!(
                "rebuild them: CARGO_TARGET_DIR={} cargo build -p stk-push -p stk-callback \
                 -p payment-status -p reconcile -p payment-events -p webhook-delivery",
                target.display()
            )),
            "{text}"
        );
        assert!(!text.contains("touch"), "{text}");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn make_build_is_offered_when_it_builds_the_binaries_the_stack_runs() {
        let command = "CARGO_TARGET_DIR=/t cargo build -p stk-push".to_string();
        let debug = StackOptions::default();
        assert_eq!(
            rebuild_command(&debug, command.clone()),
            format!("make build, or {command}")
        );
        let release = StackOptions {
            profile: Profile::Release,
            ..StackOptions::default()
        };
        assert_eq!(rebuild_command(&release, command.clone()), command);
        let elsewhere = StackOptions {
            target_dir: Some(PathBuf::from("/elsewhere")),
            ..StackOptions::default()
        };
        assert_eq!(rebuild_command(&elsewhere, command.clone()), command);
    }
}
