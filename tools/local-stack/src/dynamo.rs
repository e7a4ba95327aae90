//! DynamoDB on loopback: the moto emulator, a client for it, and the payments table created
//! from `template.yaml` (the schema is read from there, never written a second time).

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_config::{BehaviorVersion, Region};
use aws_sdk_dynamodb::config::Credentials;
use aws_sdk_dynamodb::error::DisplayErrorContext;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType, TableStatus,
    TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use serde_yaml::Value;

/// How long moto may take to import and bind (it is a large Python package).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
const TABLE_ACTIVE_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum DynamoError {
    #[error("moto_server not found at {path}: set MOTO_SERVER or create the venv (`python3 -m venv .venv && .venv/bin/pip install 'moto[server]'`)")]
    MotoMissing { path: PathBuf },
    #[error("cannot start moto_server: {0}")]
    Spawn(#[source] io::Error),
    #[error("moto_server exited before it answered ({0})")]
    MotoExited(ExitStatus),
    #[error("moto_server did not answer on {endpoint} within {waited:?}")]
    NotReady { endpoint: String, waited: Duration },
    #[error("cannot read {path}: {source}")]
    TemplateRead { path: PathBuf, source: io::Error },
    #[error("template is not valid YAML: {0}")]
    TemplateYaml(#[source] serde_yaml::Error),
    #[error("template: {0}")]
    Template(String),
    #[error("DynamoDB {operation} on table {table}: {detail}")]
    Request {
        operation: &'static str,
        table: String,
        detail: String,
    },
    #[error("table {table} did not become ACTIVE within {waited:?}")]
    NotActive { table: String, waited: Duration },
}

/// A DynamoDB endpoint for tests and the local stack: a moto server this process started
/// (stopped on drop), or one given by `DYNAMODB_ENDPOINT`.
#[derive(Debug)]
pub struct Moto {
    endpoint: String,
    process: Option<Mutex<Process>>,
}

#[derive(Debug)]
struct Process {
    child: Child,
    /// Closing this tells the watchdog shell to stop moto, which also happens when this
    /// process dies without dropping `Moto` (a `static` shared by tests is never dropped).
    lifeline: Option<ChildStdin>,
}

/// Starts the server in the background and stops it when stdin reaches end of file; the
/// shell exits with the server, so an early crash is seen at once.
const WATCHDOG: &str = r#"exec 3<&0
"$@" </dev/null &
server=$!
(while read -r _ <&3; do :; done; kill "$server" 2>/dev/null) &
wait "$server""#;

/// `moto_server`'s own entry point, with every request handled under one lock, and moto's
/// DynamoDB Streams made to behave as a stream (each fix was needed once the table had one):
/// - a transaction deep-copies each table it names, to restore it if cancelled; the copy now
///   shares the live table's stream instead of copying every record ever written (which made
///   each transaction cost as much as the stream was long), and a cancelled transaction takes
///   back the records of the writes it undid (else the stream would show changes the table
///   never kept), so an iterator taken before a cancel still reads the live stream;
/// - moto keeps every model object it ever made, copies included, for its reset: DynamoDB's
///   are not kept (a reset replaces the backend that holds them anyway);
/// - moto keeps every shard iterator for good (AWS expires one after 15 minutes): only the 64
///   newest are kept, and the stream poller uses each at once.
///
/// These rely on the lock: no request runs while a transaction is under way.
const SERIALISED_MOTO: &str = r#"import sys, threading, collections, copy
import moto.server as server
from moto.core import common_models
from moto.dynamodb import models as dynamodb
from moto.dynamodb.models.table import Table
from moto.dynamodbstreams import models as streams
def untracked_new(cls, *args, **kwargs):
    instance = object.__new__(cls)
    if not cls.__module__.startswith("moto.dynamodb"):
        cls.instances_tracked.append(instance)
    return instance
common_models.BaseModel.__new__ = untracked_new
class Newest(collections.OrderedDict):
    def __setitem__(self, key, value):
        super().__setitem__(key, value)
        while len(self) > 64:
            self.popitem(last=False)
backend_init = streams.DynamoDBStreamsBackend.__init__
def bounded(self, *args, **kwargs):
    backend_init(self, *args, **kwargs)
    self.shard_iterators = Newest()
streams.DynamoDBStreamsBackend.__init__ = bounded
def table_copy(self, memo):
    if self.stream_shard is not None:
        memo[id(self.stream_shard)] = self.stream_shard
    new = object.__new__(type(self))
    memo[id(self)] = new
    for name, value in self.__dict__.items():
        setattr(new, name, copy.deepcopy(value, memo))
    return new
Table.__deepcopy__ = table_copy
transact = dynamodb.DynamoDBBackend.transact_write_items
def transact_with_stream(self, transact_items):
    shards = {name: (t.stream_shard, len(t.stream_shard.items))
              for name, t in self.tables.items() if t.stream_shard is not None}
    try:
        return transact(self, transact_items)
    except Exception:
        for name, (shard, length) in shards.items():
            del shard.items[length:]
            if name in self.tables:
                shard.table = self.tables[name]
        raise
dynamodb.DynamoDBBackend.transact_write_items = transact_with_stream
serve = server.run_simple
one_at_a_time = threading.Lock()
def run_simple(host, port, app, **options):
    def serialised(environ, start_response):
        with one_at_a_time:
            return app(environ, start_response)
    serve(host, port, serialised, **options)
server.run_simple = run_simple
server.main(sys.argv[1:])"#;

impl Moto {
    /// Spawns `moto_server` on a free loopback port and waits until it accepts connections.
    ///
    /// DynamoDB applies conditional writes to one item atomically; moto's threaded server
    /// does not (a condition can pass in two requests before either writes), so when the
    /// venv's Python is found next to `moto_server` the server runs with requests
    /// serialised, which restores that guarantee for the concurrency tests.
    pub async fn start() -> Result<Moto, DynamoError> {
        let port = free_port().map_err(DynamoError::Spawn)?;
        Moto::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), port).await
    }

    /// As [`Moto::start`], on a given address: `sam local`'s containers reach the host only
    /// on the Docker bridge, not on its loopback.
    pub async fn start_on(host: IpAddr, port: u16) -> Result<Moto, DynamoError> {
        let binary = moto_binary();
        if !binary.exists() {
            return Err(DynamoError::MotoMissing { path: binary });
        }
        let endpoint = format!("http://{}", SocketAddr::new(host, port));
        let mut command = Command::new("sh");
        command.arg("-c").arg(WATCHDOG).arg("moto-watchdog");
        match python_beside(&binary) {
            Some(python) => command.arg(python).arg("-c").arg(SERIALISED_MOTO),
            None => command.arg(&binary),
        };
        let child = command
            .args(["-H", &host.to_string(), "-p", &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(DynamoError::Spawn)?;
        let mut process = Process {
            lifeline: None,
            child,
        };
        process.lifeline = process.child.stdin.take();
        let moto = Moto {
            endpoint,
            process: Some(Mutex::new(process)),
        };
        moto.wait_ready(SocketAddr::new(host, port)).await?;
        Ok(moto)
    }

    /// Uses `DYNAMODB_ENDPOINT` when it is set (a server shared by several test binaries),
    /// otherwise starts one.
    pub async fn from_env() -> Result<Moto, DynamoError> {
        match std::env::var("DYNAMODB_ENDPOINT") {
            Ok(endpoint) if !endpoint.trim().is_empty() => Ok(Moto {
                endpoint: endpoint.trim().trim_end_matches('/').to_owned(),
                process: None,
            }),
            _ => Moto::start().await,
        }
    }

    /// `http://127.0.0.1:<port>`
    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Stops the server (if this process started it) and waits for it to go.
    pub async fn shutdown(mut self) {
        if let Some(process) = self.process.take() {
            let process = process.into_inner().unwrap_or_else(|p| p.into_inner());
            // Waiting is blocking; the server stops within moments of its SIGTERM.
            let _ = tokio::task::spawn_blocking(move || stop(process)).await;
        }
    }

    async fn wait_ready(&self, addr: SocketAddr) -> Result<(), DynamoError> {
        let started = Instant::now();
        loop {
            if let Some(status) = self.exit_status() {
                return Err(DynamoError::MotoExited(status));
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                return Err(DynamoError::NotReady {
                    endpoint: self.endpoint.clone(),
                    waited: READY_TIMEOUT,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn exit_status(&self) -> Option<ExitStatus> {
        let process = self.process.as_ref()?;
        let mut process = process.lock().unwrap_or_else(|p| p.into_inner());
        process.child.try_wait().ok().flatten()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        if let Some(process) = self.process.take() {
            stop(process.into_inner().unwrap_or_else(|p| p.into_inner()));
        }
    }
}

fn stop(mut process: Process) {
    drop(process.lifeline.take());
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match process.child.try_wait() {
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            _ => return,
        }
    }
    let _ = process.child.kill();
    let _ = process.child.wait();
}

fn free_port() -> io::Result<u16> {
    // The port is free when asked; moto binds it a moment later. A clash shows up as
    // `MotoExited` and the caller may simply start again.
    let listener = TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?;
    Ok(listener.local_addr()?.port())
}

/// The Python a venv's `moto_server` script runs with: the interpreter in the same directory.
fn python_beside(moto_server: &Path) -> Option<PathBuf> {
    let dir = moto_server.parent()?;
    ["python3", "python"]
        .into_iter()
        .map(|name| dir.join(name))
        .find(|python| python.is_file())
}

/// `MOTO_SERVER`, else `<workspace>/.venv/bin/moto_server`.
pub fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    workspace_root()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".venv/bin/moto_server")
}

/// The directory holding `template.yaml`, searched upwards from the running crate's
/// manifest directory (tests), then from this crate's, then from the current directory.
pub fn workspace_root() -> Option<PathBuf> {
    let starts = [
        std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from),
        Some(PathBuf::from(env!("CARGO_MANIFEST_DIR"))),
        std::env::current_dir().ok(),
    ];
    starts.into_iter().flatten().find_map(|start| {
        start
            .ancestors()
            .find(|dir| dir.join("template.yaml").is_file())
            .map(Path::to_path_buf)
    })
}

/// `<workspace>/template.yaml`.
pub fn template_path() -> Option<PathBuf> {
    workspace_root().map(|root| root.join("template.yaml"))
}

/// A client for a local endpoint: region us-east-1, static test credentials.
pub async fn client(endpoint: &str) -> Client {
    Client::new(&sdk_config(endpoint).await)
}

/// The SDK configuration of every client on moto: its region, any credentials, `endpoint`.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "local-stack"))
        .endpoint_url(endpoint)
        .http_client(app::aws::https_client(&Default::default()))
        .load()
        .await
}

/// The `AWS::DynamoDB::Table` of a template, as `CreateTable` and `UpdateTimeToLive` want it.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub attribute_definitions: Vec<AttributeDefinition>,
    pub key_schema: Vec<KeySchemaElement>,
    pub global_secondary_indexes: Vec<GlobalSecondaryIndex>,
    pub billing_mode: BillingMode,
    /// The TTL attribute, when `TimeToLiveSpecification.Enabled` is true.
    pub ttl_attribute: Option<String>,
    /// `StreamSpecification.StreamViewType`: the table's change stream, when it has one.
    pub stream_view_type: Option<StreamViewType>,
}

impl TableSpec {
    /// Reads the template's only `AWS::DynamoDB::Table`. CloudFormation short tags
    /// (`!Ref`, `!GetAtt` …) elsewhere in the file parse as tagged values and are ignored;
    /// the fields read here must be literals.
    pub fn from_template(yaml: &str) -> Result<TableSpec, DynamoError> {
        let template: Value = serde_yaml::from_str(yaml).map_err(DynamoError::TemplateYaml)?;
        let resources = template
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| shape("no Resources mapping"))?;
        let mut tables = resources
            .iter()
            .filter(|(_, resource)| {
                resource.get("Type").and_then(Value::as_str) == Some("AWS::DynamoDB::Table")
            })
            .map(|(name, resource)| (name.as_str().unwrap_or("?"), resource));
        let (name, table) = tables
            .next()
            .ok_or_else(|| shape("no AWS::DynamoDB::Table resource"))?;
        if let Some((other, _)) = tables.next() {
            return Err(shape(format!(
                "more than one table ({name}, {other}): say which one to create"
            )));
        }
        let properties = table
            .get("Properties")
            .ok_or_else(|| shape(format!("{name} has no Properties")))?;

        let billing = literal(properties, "BillingMode", name)?;
        if billing != "PAY_PER_REQUEST" {
            return Err(shape(format!(
                "{name}: only BillingMode PAY_PER_REQUEST is supported, not {billing}"
            )));
        }
        let attribute_definitions = list(properties, "AttributeDefinitions", name)?
            .iter()
            .map(|definition| {
                let attribute_type = literal(definition, "AttributeType", name)?;
                let attribute_type = match attribute_type {
                    "S" => ScalarAttributeType::S,
                    "N" => ScalarAttributeType::N,
                    "B" => ScalarAttributeType::B,
                    other => return Err(shape(format!("{name}: AttributeType {other}"))),
                };
                AttributeDefinition::builder()
                    .attribute_name(literal(definition, "AttributeName", name)?)
                    .attribute_type(attribute_type)
                    .build()
                    .map_err(|e| shape(format!("{name}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key_schema = key_schema_of(properties, name)?;
        let global_secondary_indexes = match properties.get("GlobalSecondaryIndexes") {
            None => Vec::new(),
            Some(_) => list(properties, "GlobalSecondaryIndexes", name)?
                .iter()
                .map(|index| {
                    let index_name = literal(index, "IndexName", name)?;
                    let where_ = format!("{name}.{index_name}");
                    let projection = index
                        .get("Projection")
                        .ok_or_else(|| shape(format!("{where_} has no Projection")))?;
                    let projection_type = match literal(projection, "ProjectionType", &where_)? {
                        "ALL" => ProjectionType::All,
                        "KEYS_ONLY" => ProjectionType::KeysOnly,
                        "INCLUDE" => ProjectionType::Include,
                        other => return Err(shape(format!("{where_}: ProjectionType {other}"))),
                    };
                    let non_key = match projection.get("NonKeyAttributes") {
                        None => None,
                        Some(_) => Some(
                            list(projection, "NonKeyAttributes", &where_)?
                                .iter()
                                .map(|a| {
                                    a.as_str().map(str::to_owned).ok_or_else(|| {
                                        shape(format!("{where_}: NonKeyAttributes must be literal"))
                                    })
                                })
                                .collect::<Result<Vec<_>, _>>()?,
                        ),
                    };
                    GlobalSecondaryIndex::builder()
                        .index_name(index_name)
                        .set_key_schema(Some(key_schema_of(index, &where_)?))
                        .projection(
                            Projection::builder()
                                .projection_type(projection_type)
                                .set_non_key_attributes(non_key)
                                .build(),
                        )
                        .build()
                        .map_err(|e| shape(format!("{where_}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        let ttl_attribute = match properties.get("TimeToLiveSpecification") {
            None => None,
            Some(ttl) if ttl.get("Enabled").and_then(Value::as_bool) == Some(true) => {
                Some(literal(ttl, "AttributeName", name)?.to_owned())
            }
            Some(_) => None,
        };
        let stream_view_type = match properties.get("StreamSpecification") {
            None => None,
            Some(stream) => Some(match literal(stream, "StreamViewType", name)? {
                "NEW_AND_OLD_IMAGES" => StreamViewType::NewAndOldImages,
                "NEW_IMAGE" => StreamViewType::NewImage,
                "OLD_IMAGE" => StreamViewType::OldImage,
                "KEYS_ONLY" => StreamViewType::KeysOnly,
                other => return Err(shape(format!("{name}: StreamViewType {other}"))),
            }),
        };
        Ok(TableSpec {
            attribute_definitions,
            key_schema,
            global_secondary_indexes,
            billing_mode: BillingMode::PayPerRequest,
            ttl_attribute,
            stream_view_type,
        })
    }
}

fn shape(detail: impl Into<String>) -> DynamoError {
    DynamoError::Template(detail.into())
}

fn literal<'a>(value: &'a Value, key: &str, context: &str) -> Result<&'a str, DynamoError> {
    match value.get(key) {
        Some(Value::String(text)) => Ok(text),
        Some(_) => Err(shape(format!("{context}: {key} must be a literal string"))),
        None => Err(shape(format!("{context}: {key} is missing"))),
    }
}

fn list<'a>(value: &'a Value, key: &str, context: &str) -> Result<&'a Vec<Value>, DynamoError> {
    match value.get(key) {
        Some(Value::Sequence(items)) => Ok(items),
        Some(_) => Err(shape(format!("{context}: {key} must be a literal list"))),
        None => Err(shape(format!("{context}: {key} is missing"))),
    }
}

fn key_schema_of(value: &Value, context: &str) -> Result<Vec<KeySchemaElement>, DynamoError> {
    list(value, "KeySchema", context)?
        .iter()
        .map(|element| {
            let key_type = match literal(element, "KeyType", context)? {
                "HASH" => KeyType::Hash,
                "RANGE" => KeyType::Range,
                other => return Err(shape(format!("{context}: KeyType {other}"))),
            };
            KeySchemaElement::builder()
                .attribute_name(literal(element, "AttributeName", context)?)
                .key_type(key_type)
                .build()
                .map_err(|e| shape(format!("{context}: {e}")))
        })
        .collect()
}

/// Creates `table_name` from the template's table definition, waits until it is ACTIVE,
/// then enables its TTL.
pub async fn create_table_from_template(
    client: &Client,
    template_path: &Path,
    table_name: &str,
) -> Result<(), DynamoError> {
    let yaml =
        std::fs::read_to_string(template_path).map_err(|source| DynamoError::TemplateRead {
            path: template_path.to_path_buf(),
            source,
        })?;
    let spec = TableSpec::from_template(&yaml)?;
    create_table(client, &spec, table_name).await
}

/// The ARN of `table_name`'s change stream.
pub async fn stream_arn(client: &Client, table_name: &str) -> Result<String, DynamoError> {
    let described = client
        .describe_table()
        .table_name(table_name)
        .send()
        .await
        .map_err(|e| DynamoError::Request {
            operation: "DescribeTable",
            table: table_name.to_owned(),
            detail: DisplayErrorContext(&e).to_string(),
        })?;
    described
        .table()
        .and_then(|t| t.latest_stream_arn())
        .map(str::to_owned)
        .ok_or_else(|| {
            shape(format!(
                "{table_name} has no stream: the template's table needs a StreamSpecification"
            ))
        })
}

/// Creates `table_name` from `spec`, waits until it is ACTIVE, then enables its TTL.
pub async fn create_table(
    client: &Client,
    spec: &TableSpec,
    table_name: &str,
) -> Result<(), DynamoError> {
    let failed = |operation: &'static str| {
        move |e: &dyn std::error::Error| DynamoError::Request {
            operation,
            table: table_name.to_owned(),
            detail: DisplayErrorContext(e).to_string(),
        }
    };
    let gsis =
        (!spec.global_secondary_indexes.is_empty()).then(|| spec.global_secondary_indexes.clone());
    client
        .create_table()
        .table_name(table_name)
        .set_attribute_definitions(Some(spec.attribute_definitions.clone()))
        .set_key_schema(Some(spec.key_schema.clone()))
        .set_global_secondary_indexes(gsis)
        .billing_mode(spec.billing_mode.clone())
        .set_stream_specification(spec.stream_view_type.clone().map(|view| {
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(view)
                .build()
                .expect("enabled is set")
        }))
        .send()
        .await
        .map_err(|e| failed("CreateTable")(&e))?;

    let started = Instant::now();
    loop {
        let described = client
            .describe_table()
            .table_name(table_name)
            .send()
            .await
            .map_err(|e| failed("DescribeTable")(&e))?;
        let status = described.table().and_then(|t| t.table_status());
        if status == Some(&TableStatus::Active) {
            break;
        }
        if started.elapsed() > TABLE_ACTIVE_TIMEOUT {
            return Err(DynamoError::NotActive {
                table: table_name.to_owned(),
                waited: TABLE_ACTIVE_TIMEOUT,
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    if let Some(attribute) = &spec.ttl_attribute {
        let ttl = TimeToLiveSpecification::builder()
            .attribute_name(attribute)
            .enabled(true)
            .build()
            .map_err(|e| shape(e.to_string()))?;
        client
            .update_time_to_live()
            .table_name(table_name)
            .time_to_live_specification(ttl)
            .send()
            .await
            .map_err(|e| failed("UpdateTimeToLive")(&e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAGGED: &str = r#"
Conditions:
  IsProd: !Equals [!Ref Stage, prod]
Globals:
  Function:
    Environment:
      Variables:
        TABLE_NAME: !Ref Payments
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Policies:
        - DynamoDBCrudPolicy:
            TableName: !Ref Payments
      Role: !GetAtt Role.Arn
  Payments:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "${AWS::StackName}-payments"
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - { AttributeName: pk, AttributeType: S }
        - { AttributeName: gsi_pk, AttributeType: S }
      KeySchema:
        - { AttributeName: pk, KeyType: HASH }
      GlobalSecondaryIndexes:
        - IndexName: by-gsi
          KeySchema:
            - { AttributeName: gsi_pk, KeyType: HASH }
          Projection: { ProjectionType: KEYS_ONLY }
      TimeToLiveSpecification: { AttributeName: ttl, Enabled: true }
"#;

    #[test]
    fn table_is_read_past_cloudformation_tags() {
        let spec = TableSpec::from_template(TAGGED).unwrap();
        assert_eq!(spec.key_schema.len(), 1);
        assert_eq!(spec.key_schema[0].attribute_name(), "pk");
        assert_eq!(spec.attribute_definitions.len(), 2);
        assert_eq!(spec.global_secondary_indexes.len(), 1);
        let index = &spec.global_secondary_indexes[0];
        assert_eq!(index.index_name(), "by-gsi");
        assert_eq!(
            index.projection().and_then(|p| p.projection_type()),
            Some(&ProjectionType::KeysOnly)
        );
        assert_eq!(spec.ttl_attribute.as_deref(), Some("ttl"));
    }

    #[test]
    fn a_tagged_schema_field_is_refused_by_name() {
        let yaml = TAGGED.replace("BillingMode: PAY_PER_REQUEST", "BillingMode: !Ref Billing");
        let error = TableSpec::from_template(&yaml).unwrap_err().to_string();
        assert!(error.contains("BillingMode"), "{error}");
    }

    #[test]
    fn project_template_defines_the_payments_table() {
        let path = template_path().expect("the workspace has a template.yaml");
        let spec = TableSpec::from_template(&std::fs::read_to_string(path).unwrap()).unwrap();
        let mut indexes: Vec<_> = spec
            .global_secondary_indexes
            .iter()
            .map(|i| i.index_name())
            .collect();
        indexes.sort_unstable();
        assert_eq!(
            indexes,
            [
                "intent-index",
                "orphan-index",
                "pending-index",
                "reference-index"
            ]
        );
        assert_eq!(spec.key_schema[0].attribute_name(), "pk");
        assert_eq!(spec.ttl_attribute.as_deref(), Some("expires_at"));
    }
}
