//! A stand-in for the API Gateway HTTP API in front of the functions: HTTP requests become
//! payload format 2.0 events and the functions' answers become HTTP responses, by the rules
//! API Gateway documents for that format.
//!
//! Two rules follow the service where its documentation says little, as captured events show:
//! the path is percent-decoded before routing (`rawPath`, `requestContext.http.path` and
//! the path parameters arrive decoded, and an encoded `/` splits a segment), and a request
//! body arrives as text only for textual content types (`text/*`, JSON, XML, JavaScript), base64
//! for any other or none. `tools/local-stack/src/bin/compare-gateway.rs` checks the stand-in
//! against `sam local start-api`.
//!
//! Local-only extension: a request header `x-local-source-ip: <ip>` replaces the caller's
//! address in `requestContext.http.sourceIp` (and `x-forwarded-for`), so tests can act as
//! Safaricom's callback servers. API Gateway has no such header; it is removed from the event.
//! Likewise `x-local-caller: <IAM ARN>` on an IAM route replaces the one local IAM user in
//! `requestContext.authorizer.iam.userArn`, so tests can act as two callers.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};
use axum::response::Response;
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chrono::{DateTime, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::rie::RiePool;
use crate::template::Template;
use crate::Function;

/// API Gateway's payload limit.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// API Gateway's integration timeout for HTTP APIs.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The local-only header that sets the caller's source IP.
pub const SOURCE_IP_HEADER: &str = "x-local-source-ip";
/// The local-only header that sets the IAM caller of an IAM route.
pub const CALLER_HEADER: &str = "x-local-caller";
/// The IAM user every caller of an IAM route is, unless [`CALLER_HEADER`] says otherwise.
pub const LOCAL_CALLER: &str = "arn:aws:iam::000000000000:user/local-stack";

/// The routes of `template.yaml`'s HTTP API, and whether each requires IAM authorisation,
/// read from the template once.
static ROUTES: LazyLock<Vec<(Function, String, String, bool)>> = LazyLock::new(|| {
    let path = crate::dynamo::template_path().expect("the workspace's template.yaml");
    let template = Template::load(&path).unwrap_or_else(|e| panic!("{e}"));
    template
        .routes()
        .into_iter()
        .filter_map(|spec| {
            let function = Function::ALL
                .into_iter()
                .find(|f| f.name() == spec.binary)?;
            Some((function, spec.method, spec.path, spec.iam))
        })
        .collect()
});

/// A matched route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub function: Function,
    /// `POST /payments`, as API Gateway names it.
    pub route_key: String,
    pub path_parameters: BTreeMap<String, String>,
    /// The route uses the IAM authorizer. Nothing is checked locally: every caller is let in
    /// as one local IAM user, whose identity the event carries as API Gateway's would.
    pub iam: bool,
}

/// Matches like an HTTP API: exact method, one non-empty segment per `{param}`, no trailing
/// slash. `path` is the decoded path ([`decode_path`]), as API Gateway routes on it.
pub fn route(method: &str, path: &str) -> Option<Route> {
    ROUTES
        .iter()
        .find_map(|(function, route_method, pattern, iam)| {
            if method != route_method {
                return None;
            }
            let mut wanted = pattern.split('/');
            let mut given = path.split('/');
            let mut path_parameters = BTreeMap::new();
            loop {
                match (wanted.next(), given.next()) {
                    (None, None) => break,
                    (Some(w), Some(g)) if w.starts_with('{') && w.ends_with('}') => {
                        if g.is_empty() {
                            return None;
                        }
                        path_parameters.insert(w[1..w.len() - 1].to_string(), g.to_string());
                    }
                    (Some(w), Some(g)) if w == g => {}
                    _ => return None,
                }
            }
            Some(Route {
                function: *function,
                route_key: format!("{route_method} {pattern}"),
                path_parameters,
                iam: *iam,
            })
        })
}

/// What the stand-in knows about one HTTP request.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub method: String,
    /// The percent-decoded path: API Gateway's `rawPath` is decoded despite its name.
    pub raw_path: String,
    pub raw_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub source_ip: IpAddr,
    pub protocol: String,
    /// The `Host` the client used, e.g. `127.0.0.1:3000`.
    pub domain_name: String,
    pub request_id: String,
    pub time: DateTime<Utc>,
}

/// The payload format 2.0 event for `request` on `route`.
pub fn build_event(request: &IncomingRequest, route: &Route) -> Value {
    let mut headers = Map::new();
    let mut cookies = Vec::new();
    for name in request.headers.keys() {
        let values: Vec<String> = request
            .headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        match name.as_str() {
            // Format 2.0 moves cookies out of the headers into their own list.
            "cookie" => cookies.extend(
                values
                    .iter()
                    .flat_map(|v| v.split(';'))
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_string),
            ),
            SOURCE_IP_HEADER | CALLER_HEADER => {}
            // Repeated headers arrive joined with commas.
            _ => {
                headers.insert(name.as_str().to_string(), Value::from(values.join(",")));
            }
        }
    }
    let forwarded_for = match headers.get("x-forwarded-for").and_then(Value::as_str) {
        Some(earlier) => format!("{earlier}, {}", request.source_ip),
        None => request.source_ip.to_string(),
    };
    headers.insert("x-forwarded-for".into(), forwarded_for.into());
    headers.insert("x-forwarded-proto".into(), "http".into());
    let port = request
        .domain_name
        .rsplit_once(':')
        .map_or("80", |(_, port)| port);
    headers.insert("x-forwarded-port".into(), port.into());

    let user_agent = request
        .headers
        .get("user-agent")
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let domain_prefix = request
        .domain_name
        .split(['.', ':'])
        .next()
        .unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": route.route_key,
        "rawPath": request.raw_path,
        "rawQueryString": request.raw_query,
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "local",
            "domainName": request.domain_name,
            "domainPrefix": domain_prefix,
            "http": {
                "method": request.method,
                "path": request.raw_path,
                "protocol": request.protocol,
                "sourceIp": request.source_ip.to_string(),
                "userAgent": user_agent,
            },
            "requestId": request.request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": request.time.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": request.time.timestamp_millis(),
        },
        "isBase64Encoded": false,
    });
    if route.iam {
        let caller = request
            .headers
            .get(CALLER_HEADER)
            .and_then(|v| v.to_str().ok())
            .map_or(LOCAL_CALLER, str::trim);
        event["requestContext"]["authorizer"] = json!({
            "iam": {
                "accessKey": "AKIALOCALSTACK000000",
                "accountId": "000000000000",
                "callerId": "AIDALOCALSTACK000000",
                "principalOrgId": null,
                "userArn": caller,
                "userId": "AIDALOCALSTACK000000",
            }
        });
    }
    if !cookies.is_empty() {
        event["cookies"] = json!(cookies);
    }
    let query = query_parameters(&request.raw_query);
    if !query.is_empty() {
        event["queryStringParameters"] = json!(query);
    }
    if !route.path_parameters.is_empty() {
        event["pathParameters"] = json!(route.path_parameters);
    }
    if !request.body.is_empty() {
        // A textual type that is not valid UTF-8 is encoded too: nothing of the body is lost.
        let text = is_text_media_type(&request.headers)
            .then(|| std::str::from_utf8(&request.body).ok())
            .flatten();
        match text {
            Some(text) => event["body"] = json!(text),
            None => {
                event["body"] = json!(BASE64.encode(&request.body));
                event["isBase64Encoded"] = json!(true);
            }
        }
    }
    event
}

/// The content types an HTTP API passes as text. Undocumented; observed on the service:
/// everything else, `application/x-www-form-urlencoded` and a missing type included, is
/// base64-encoded.
fn is_text_media_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get("content-type").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let media_type = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    media_type.starts_with("text/")
        || matches!(
            media_type.as_str(),
            "application/json" | "application/xml" | "application/javascript"
        )
}

/// The request path as API Gateway routes on it and passes it on: percent-decoded once
/// (`+` stays a `+` in a path).
pub fn decode_path(raw_path: &str) -> String {
    percent_decode(raw_path, false)
}

/// Decoded query parameters; a repeated name's values are joined with commas.
fn query_parameters(raw_query: &str) -> BTreeMap<String, String> {
    let mut params: BTreeMap<String, String> = BTreeMap::new();
    for pair in raw_query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (name, value) = (percent_decode(name, true), percent_decode(value, true));
        params
            .entry(name)
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    params
}

/// `%XX` escapes become bytes, and with `plus_is_space` (query strings) `+` becomes a space.
fn percent_decode(text: &str, plus_is_space: bool) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = bytes
            .get(i + 1..i + 3)
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match (bytes[i], escaped) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The HTTP answer API Gateway makes of a function's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewayResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl GatewayResponse {
    fn message(status: u16, message: &str) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: json!({ "message": message }).to_string().into_bytes(),
        }
    }

    pub fn not_found() -> Self {
        Self::message(404, "Not Found")
    }

    pub fn internal_error() -> Self {
        Self::message(500, "Internal Server Error")
    }
}

/// Payload format 2.0 response rules. A function error (the emulator's `errorType` /
/// `errorMessage` object), a timeout (plain text) or any answer that is not valid JSON or has
/// an invalid `statusCode` becomes a 500.
pub fn translate_response(raw: &[u8]) -> GatewayResponse {
    let Ok(answer) = serde_json::from_slice::<Value>(raw) else {
        return GatewayResponse::internal_error();
    };
    let Some(object) = answer.as_object().filter(|o| o.contains_key("statusCode")) else {
        if is_function_error(&answer) {
            return GatewayResponse::internal_error();
        }
        // Valid JSON without a statusCode is the body of a 200; a bare string is sent as its text.
        let body = match &answer {
            Value::String(text) => text.clone(),
            other => other.to_string(),
        };
        return GatewayResponse {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.into_bytes(),
        };
    };
    let status = object
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .filter(|s| (100..=599).contains(s));
    let Some(status) = status else {
        return GatewayResponse::internal_error();
    };
    let mut headers = Vec::new();
    if let Some(map) = object.get("headers").and_then(Value::as_object) {
        for (name, value) in map {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Null => continue,
                other => other.to_string(),
            };
            headers.push((name.to_ascii_lowercase(), value));
        }
    }
    for cookie in object
        .get("cookies")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        headers.push(("set-cookie".into(), cookie.to_string()));
    }
    let text = match object.get("body") {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let body = if object.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) {
        match BASE64.decode(text.as_bytes()) {
            Ok(bytes) => bytes,
            Err(_) => return GatewayResponse::internal_error(),
        }
    } else {
        text.into_bytes()
    };
    GatewayResponse {
        status,
        headers,
        body,
    }
}

fn is_function_error(answer: &Value) -> bool {
    answer
        .as_object()
        .is_some_and(|o| o.contains_key("errorMessage") && o.contains_key("errorType"))
}

/// The stand-in, serving until shut down.
pub struct Gateway {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Gateway {
    /// Serves on `listener` (bound by the caller, so its port can go into the functions'
    /// environment before they start), dispatching to `functions`.
    pub fn serve(
        listener: TcpListener,
        functions: HashMap<Function, RiePool>,
    ) -> std::io::Result<Self> {
        let addr = listener.local_addr()?;
        let app = Router::new()
            .fallback(handle)
            .with_state(Arc::new(functions));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(async move {
                // A dropped sender means the owner is gone; stopping is right then too.
                let _ = stopped.await;
            });
            if let Err(error) = serve.await {
                tracing::error!(%error, "gateway stopped");
            }
        });
        tracing::info!(%addr, "API Gateway stand-in listening");
        Ok(Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The server may already have stopped; nothing else to do then.
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            // Requests still waiting on a function are dropped after a short grace period.
            if tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .is_err()
            {
                tracing::warn!("gateway did not stop within 2 s");
            }
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

async fn handle(
    State(functions): State<Arc<HashMap<Function, RiePool>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
) -> Response {
    let request_id = new_request_id();
    let answer = answer(&functions, peer, request, &request_id).await;
    let mut response = Response::new(Body::from(answer.body));
    *response.status_mut() =
        StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::try_from(name.as_str()),
            HeaderValue::try_from(value.as_str()),
        ) {
            response.headers_mut().append(name, value);
        }
    }
    if let Ok(id) = HeaderValue::try_from(request_id) {
        response.headers_mut().insert("apigw-requestid", id);
    }
    response
}

async fn answer(
    functions: &HashMap<Function, RiePool>,
    peer: SocketAddr,
    request: Request,
    request_id: &str,
) -> GatewayResponse {
    let (parts, body) = request.into_parts();
    let raw_path = decode_path(parts.uri.path());
    let Some(route) = route(parts.method.as_str(), &raw_path) else {
        return GatewayResponse::not_found();
    };
    let source_ip = match parts.headers.get(SOURCE_IP_HEADER) {
        None => peer.ip(),
        Some(value) => match value.to_str().ok().and_then(|v| v.trim().parse().ok()) {
            Some(ip) => ip,
            None => {
                return GatewayResponse::message(
                    400,
                    &format!("{SOURCE_IP_HEADER} must be an IP address"),
                )
            }
        },
    };
    let body = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(_) => return GatewayResponse::message(413, "Request Entity Too Large"),
    };
    let incoming = IncomingRequest {
        method: parts.method.to_string(),
        raw_query: parts.uri.query().unwrap_or_default().to_string(),
        domain_name: parts
            .headers
            .get("host")
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| peer.to_string(), str::to_string),
        protocol: protocol(parts.version).to_string(),
        headers: parts.headers,
        raw_path,
        body,
        source_ip,
        request_id: request_id.to_string(),
        time: Utc::now(),
    };
    let Some(pool) = functions.get(&route.function) else {
        return GatewayResponse::internal_error();
    };
    let event = build_event(&incoming, &route).to_string().into_bytes();
    match tokio::time::timeout(INTEGRATION_TIMEOUT, pool.invoke_raw(event)).await {
        Ok(Ok(raw)) => translate_response(&raw),
        Ok(Err(error)) => {
            tracing::warn!(%error, function = route.function.name(), "invoke failed");
            GatewayResponse::internal_error()
        }
        Err(_) => GatewayResponse::message(503, "Service Unavailable"),
    }
}

fn protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        _ => "HTTP/1.1",
    }
}

/// API Gateway's request IDs look like `JKJaXmPLvHcESHA=`.
fn new_request_id() -> String {
    let bytes: [u8; 10] = rand::rng().random();
    BASE64.encode(bytes)
}

#[cfg(test)]
mod tests;
