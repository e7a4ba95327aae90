//! Function settings and HTTP API routes read from `template.yaml`, so the emulated functions
//! get the same timeout and memory, and the API Gateway stand-in the same routes and
//! authorisation, as the deployed ones without a second definition.

use std::path::Path;
use std::time::Duration;

use serde_yaml::Value;

/// What the runtime emulator needs to know about one function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSettings {
    pub timeout: Duration,
    pub memory_mb: u32,
    /// `JSON` or `Text`, from `LoggingConfig.LogFormat` (the function's, else the global one).
    pub log_format: Option<String>,
}

impl Default for FunctionSettings {
    // Lambda's own defaults, used when the template says nothing.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(3),
            memory_mb: 128,
            log_format: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not valid YAML: {source}")]
    Parse {
        path: String,
        source: serde_yaml::Error,
    },
}

/// One route of the template's HTTP API (an `HttpApi` event of a function).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    /// The function's `Metadata.BuildProperties.Binary`.
    pub binary: String,
    pub method: String,
    /// `/payments/{checkout_request_id}`, as the template writes it.
    pub path: String,
    /// The route's authorizer, else the API's `DefaultAuthorizer`, is `AWS_IAM`.
    pub iam: bool,
}

/// The parsed SAM template.
pub struct Template(Value);

impl Template {
    pub fn load(path: &Path) -> Result<Self, TemplateError> {
        let text = std::fs::read_to_string(path).map_err(|source| TemplateError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text).map_err(|source| TemplateError::Parse {
            path: path.display().to_string(),
            source,
        })
    }

    pub fn parse(text: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(text).map(Template)
    }

    /// Every `HttpApi` event of every function, in template order.
    pub fn routes(&self) -> Vec<RouteSpec> {
        let resources = self.0.get("Resources").and_then(Value::as_mapping);
        let default_authorizer = resources
            .into_iter()
            .flat_map(|r| r.values())
            .find(|r| r.get("Type").and_then(Value::as_str) == Some("AWS::Serverless::HttpApi"))
            .and_then(|api| api.get("Properties"))
            .and_then(|p| p.get("Auth"))
            .and_then(|a| a.get("DefaultAuthorizer"))
            .and_then(Value::as_str)
            .map(str::to_string);
        let mut routes = Vec::new();
        for resource in resources.into_iter().flat_map(|r| r.values()) {
            let Some(binary) = resource
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
            else {
                continue;
            };
            let events = resource
                .get("Properties")
                .and_then(|p| p.get("Events"))
                .and_then(Value::as_mapping);
            for event in events.into_iter().flat_map(|e| e.values()) {
                if event.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                    continue;
                }
                let properties = event.get("Properties");
                let text = |key: &str| {
                    properties
                        .and_then(|p| p.get(key))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                };
                let (Some(method), Some(path)) = (text("Method"), text("Path")) else {
                    continue;
                };
                let authorizer = properties
                    .and_then(|p| p.get("Auth"))
                    .and_then(|a| a.get("Authorizer"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .or_else(|| default_authorizer.clone());
                routes.push(RouteSpec {
                    binary: binary.to_string(),
                    method: method.to_ascii_uppercase(),
                    path,
                    iam: authorizer.as_deref() == Some("AWS_IAM"),
                });
            }
        }
        routes
    }

    /// The `Properties` of the first event of type `kind` (`DynamoDB`, `SQS` …) of the function
    /// whose binary is `binary`: what Lambda's event source for it is configured with.
    pub fn event_source(&self, binary: &str, kind: &str) -> Option<Value> {
        self.function_resource(binary)?
            .get("Properties")?
            .get("Events")?
            .as_mapping()?
            .values()
            .find(|event| event.get("Type").and_then(Value::as_str) == Some(kind))?
            .get("Properties")
            .cloned()
    }

    /// The `Properties` of the resource named `logical_id`.
    pub fn resource_properties(&self, logical_id: &str) -> Option<Value> {
        self.0
            .get("Resources")?
            .get(logical_id)?
            .get("Properties")
            .cloned()
    }

    fn function_resource(&self, binary: &str) -> Option<&Value> {
        self.0
            .get("Resources")?
            .as_mapping()?
            .values()
            .find(|resource| {
                resource
                    .get("Metadata")
                    .and_then(|m| m.get("BuildProperties"))
                    .and_then(|b| b.get("Binary"))
                    .and_then(Value::as_str)
                    == Some(binary)
            })
    }

    /// Settings of the function whose `Metadata.BuildProperties.Binary` is `binary`, falling
    /// back to `Globals.Function`, then to Lambda's defaults.
    pub fn function(&self, binary: &str) -> FunctionSettings {
        let globals = self.0.get("Globals").and_then(|g| g.get("Function"));
        let properties = self
            .function_resource(binary)
            .and_then(|resource| resource.get("Properties"));
        let lookup = |key: &str| {
            properties
                .and_then(|p| p.get(key))
                .or_else(|| globals.and_then(|g| g.get(key)))
        };
        // SAM merges a function's LoggingConfig into the global one key by key: a function that
        // only names its log group keeps the global LogFormat.
        let logging = |key: &str| {
            properties
                .and_then(|p| p.get("LoggingConfig"))
                .and_then(|l| l.get(key))
                .or_else(|| {
                    globals
                        .and_then(|g| g.get("LoggingConfig"))
                        .and_then(|l| l.get(key))
                })
        };
        let defaults = FunctionSettings::default();
        FunctionSettings {
            timeout: lookup("Timeout")
                .and_then(Value::as_u64)
                .map_or(defaults.timeout, Duration::from_secs),
            memory_mb: lookup("MemorySize")
                .and_then(Value::as_u64)
                .and_then(|m| u32::try_from(m).ok())
                .unwrap_or(defaults.memory_mb),
            log_format: logging("LogFormat")
                .and_then(Value::as_str)
                .map(str::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEMPLATE: &str = r#"
Globals:
  Function:
    MemorySize: 256
    Timeout: 10
    LoggingConfig:
      LogFormat: JSON
Resources:
  Table:
    Type: AWS::DynamoDB::Table
  Push:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: stk-push
    Properties:
      Timeout: 25
      LoggingConfig:
        LogGroup: !Ref PushLogs
      Environment:
        Variables:
          X: !Ref Y
  Status:
    Type: AWS::Serverless::Function
    Metadata:
      BuildProperties:
        Binary: payment-status
"#;

    #[test]
    fn function_timeout_overrides_the_global_one() {
        let t = Template::parse(TEMPLATE).unwrap();
        let push = t.function("stk-push");
        assert_eq!(push.timeout, Duration::from_secs(25));
        assert_eq!(push.memory_mb, 256);
        // Its own LoggingConfig only names a log group: the format is still the global one.
        assert_eq!(push.log_format.as_deref(), Some("JSON"));
    }

    #[test]
    fn function_without_own_settings_takes_the_globals() {
        let t = Template::parse(TEMPLATE).unwrap();
        assert_eq!(
            t.function("payment-status").timeout,
            Duration::from_secs(10)
        );
    }

    #[test]
    fn unknown_function_without_globals_gets_lambda_defaults() {
        let t = Template::parse("Resources: {}").unwrap();
        assert_eq!(t.function("nope"), FunctionSettings::default());
    }

    #[test]
    fn project_template_gives_every_function_a_timeout_under_api_gateways_30s() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let t = Template::load(&path).unwrap();
        for f in ["stk-push", "stk-callback", "payment-status"] {
            let timeout = t.function(f).timeout;
            assert!(timeout < Duration::from_secs(30), "{f}: {timeout:?}");
        }
    }

    /// Each function's LoggingConfig names its log group; the JSON format comes from the globals.
    #[test]
    fn project_template_gives_every_function_json_logs() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../template.yaml");
        let t = Template::load(&path).unwrap();
        for f in ["stk-push", "stk-callback", "payment-status", "reconcile"] {
            assert_eq!(t.function(f).log_format.as_deref(), Some("JSON"), "{f}");
        }
    }

    /// The stand-in's routes are the project's: read from `template.yaml`, not written again.
    #[test]
    fn routes_are_the_templates_http_api_events_with_their_authorisation() {
        let path = crate::dynamo::template_path().expect("template.yaml");
        let routes = Template::load(&path).unwrap().routes();
        let found: Vec<(&str, &str, &str, bool)> = routes
            .iter()
            .map(|r| (r.binary.as_str(), r.method.as_str(), r.path.as_str(), r.iam))
            .collect();
        assert_eq!(
            found,
            [
                ("stk-push", "POST", "/payments", true),
                ("stk-callback", "POST", "/callbacks/stk/{token}", false),
                (
                    "payment-status",
                    "GET",
                    "/payments/{checkout_request_id}",
                    true
                ),
                ("payment-status", "GET", "/payments", true),
            ]
        );
    }
}
