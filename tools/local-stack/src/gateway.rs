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

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
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
use crate::Function;

/// API Gateway's payload limit.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;
/// API Gateway's integration timeout for HTTP APIs.
pub const INTEGRATION_TIMEOUT: Duration = Duration::from_secs(30);
/// The local-only header that sets the caller's source IP.
pub const SOURCE_IP_HEADER: &str = "x-local-source-ip";

/// The routes of `template.yaml`'s HTTP API, and whether each requires IAM authorisation.
const ROUTES: [(Function, &str, &str, bool); 3] = [
    (Function::StkPush, "POST", "/payments", true),
    (
        Function::PaymentStatus,
        "GET",
        "/payments/{checkout_request_id}",
        true,
    ),
    (
        Function::StkCallback,
        "POST",
        "/callbacks/stk/{token}",
        false,
    ),
];

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
            if method != *route_method {
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
            SOURCE_IP_HEADER => {}
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
        event["requestContext"]["authorizer"] = json!({
            "iam": {
                "accessKey": "AKIALOCALSTACK000000",
                "accountId": "000000000000",
                "callerId": "AIDALOCALSTACK000000",
                "principalOrgId": null,
                "userArn": "arn:aws:iam::000000000000:user/local-stack",
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
mod tests {
    use super::*;
    use chrono::TimeZone;
    use lambda_http::aws_lambda_events::apigw::ApiGatewayV2httpResponse;
    use lambda_http::request::RequestContext;
    use lambda_http::RequestExt;

    fn incoming(method: &str, path: &str, body: &[u8]) -> IncomingRequest {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("127.0.0.1:4010"));
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert("user-agent", HeaderValue::from_static("curl/8.5"));
        IncomingRequest {
            method: method.to_string(),
            raw_path: path.to_string(),
            raw_query: String::new(),
            headers,
            body: Bytes::copy_from_slice(body),
            source_ip: "196.201.214.200".parse().unwrap(),
            protocol: "HTTP/1.1".to_string(),
            domain_name: "127.0.0.1:4010".to_string(),
            request_id: "JKJaXmPLvHcESHA=".to_string(),
            time: Utc.with_ymd_and_hms(2024, 3, 9, 7, 5, 1).unwrap(),
        }
    }

    fn event_for(request: &IncomingRequest) -> Value {
        let route = route(&request.method, &request.raw_path).expect("a project route");
        build_event(request, &route)
    }

    #[test]
    fn each_template_route_reaches_its_function_with_its_path_parameter() {
        let push = route("POST", "/payments").unwrap();
        assert_eq!(push.function, Function::StkPush);
        assert_eq!(push.route_key, "POST /payments");
        assert!(push.path_parameters.is_empty());

        let status = route("GET", "/payments/ws_CO_123").unwrap();
        assert_eq!(status.function, Function::PaymentStatus);
        assert_eq!(status.route_key, "GET /payments/{checkout_request_id}");
        assert_eq!(status.path_parameters["checkout_request_id"], "ws_CO_123");

        let callback = route("POST", "/callbacks/stk/abc123").unwrap();
        assert_eq!(callback.function, Function::StkCallback);
        assert_eq!(callback.path_parameters["token"], "abc123");
    }

    #[test]
    fn wrong_method_trailing_slash_empty_or_extra_segment_match_no_route() {
        for (method, path) in [
            ("GET", "/payments"),
            ("POST", "/payments/"),
            ("GET", "/payments/"),
            ("GET", "/payments/a/b"),
            ("POST", "/callbacks/stk"),
            ("POST", "/callbacks/stk/"),
            ("DELETE", "/payments/x"),
            ("GET", "/"),
        ] {
            assert_eq!(route(method, path), None, "{method} {path}");
        }
    }

    #[test]
    fn lambda_http_reads_the_event_as_an_http_api_request() {
        let mut request = incoming("GET", "/payments/ws_CO_9", b"");
        request.raw_query = "verbose=1&tag=a&tag=b%20c".to_string();
        let event = event_for(&request);
        let parsed = lambda_http::request::from_str(&event.to_string()).unwrap();

        assert_eq!(parsed.method(), "GET");
        assert_eq!(parsed.uri().path(), "/payments/ws_CO_9");
        assert_eq!(
            parsed.path_parameters().first("checkout_request_id"),
            Some("ws_CO_9")
        );
        assert_eq!(
            parsed.query_string_parameters().all("tag"),
            Some(vec!["a", "b c"])
        );
        let Some(RequestContext::ApiGatewayV2(ctx)) = parsed.request_context_ref() else {
            panic!("not an HTTP API (payload 2.0) context");
        };
        assert_eq!(ctx.http.source_ip.as_deref(), Some("196.201.214.200"));
        assert_eq!(ctx.domain_name.as_deref(), Some("127.0.0.1:4010"));
        assert_eq!(ctx.stage.as_deref(), Some("$default"));
        assert_eq!(
            ctx.route_key.as_deref(),
            Some("GET /payments/{checkout_request_id}")
        );
        assert_eq!(ctx.time_epoch, 1_709_967_901_000);
        let iam = ctx.authorizer.as_ref().and_then(|a| a.iam.as_ref());
        assert_eq!(
            iam.and_then(|i| i.user_arn.as_deref()),
            Some("arn:aws:iam::000000000000:user/local-stack")
        );
        assert_eq!(parsed.headers()["user-agent"], "curl/8.5");
    }

    #[test]
    fn json_body_arrives_as_text_and_empty_body_is_omitted() {
        let with_body = event_for(&incoming("POST", "/payments", br#"{"amount":10}"#));
        assert_eq!(with_body["body"], r#"{"amount":10}"#);
        assert_eq!(with_body["isBase64Encoded"], false);
        let parsed = lambda_http::request::from_str(&with_body.to_string()).unwrap();
        assert_eq!(parsed.body().as_ref(), br#"{"amount":10}"#);

        let without = event_for(&incoming("GET", "/payments/x", b""));
        assert!(without.get("body").is_none(), "{without}");
    }

    #[test]
    fn binary_body_is_base64_encoded_and_decoded_back_by_lambda_http() {
        let bytes = [0xff, 0x00, 0xfe, 0x41];
        let event = event_for(&incoming("POST", "/payments", &bytes));
        assert_eq!(event["isBase64Encoded"], true);
        let parsed = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert_eq!(parsed.body().as_ref(), &bytes);
    }

    #[test]
    fn source_ip_override_header_never_reaches_the_function() {
        let mut request = incoming("POST", "/callbacks/stk/t", b"{}");
        request.headers.insert(
            SOURCE_IP_HEADER,
            HeaderValue::from_static("196.201.214.200"),
        );
        let event = event_for(&request);
        assert!(event["headers"].get(SOURCE_IP_HEADER).is_none(), "{event}");
        // The callback route is public in the template: no IAM identity.
        assert!(event["requestContext"].get("authorizer").is_none());
        assert_eq!(event["headers"]["x-forwarded-for"], "196.201.214.200");
    }

    #[test]
    fn repeated_headers_are_joined_and_cookies_get_their_own_list() {
        let mut request = incoming("POST", "/payments", b"{}");
        request
            .headers
            .append("x-tag", HeaderValue::from_static("a"));
        request
            .headers
            .append("x-tag", HeaderValue::from_static("b"));
        request
            .headers
            .append("cookie", HeaderValue::from_static("s=1; t=2"));
        request
            .headers
            .insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        let event = event_for(&request);
        assert_eq!(event["headers"]["x-tag"], "a,b");
        assert_eq!(event["cookies"], json!(["s=1", "t=2"]));
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(
            event["headers"]["x-forwarded-for"],
            "10.0.0.1, 196.201.214.200"
        );
        assert_eq!(event["headers"]["x-forwarded-port"], "4010");
    }

    fn lambda_http_answer(status: i64, body: &str) -> ApiGatewayV2httpResponse {
        let mut answer = ApiGatewayV2httpResponse::default();
        answer.status_code = status;
        answer.body = Some(lambda_http::Body::Text(body.to_string()));
        answer
            .headers
            .insert("content-type", HeaderValue::from_static("application/json"));
        answer
    }

    #[test]
    fn function_response_becomes_the_http_answer() {
        let mut answer = lambda_http_answer(202, r#"{"status":"PENDING"}"#);
        answer.cookies = vec!["a=1".to_string()];
        let raw = serde_json::to_vec(&answer).unwrap();
        let response = translate_response(&raw);
        assert_eq!(response.status, 202);
        assert_eq!(response.body, br#"{"status":"PENDING"}"#);
        assert!(response
            .headers
            .contains(&("content-type".into(), "application/json".into())));
        assert!(response
            .headers
            .contains(&("set-cookie".into(), "a=1".into())));
    }

    #[test]
    fn base64_response_body_is_decoded() {
        let raw =
            json!({"statusCode": 200, "body": BASE64.encode([0u8, 1, 2]), "isBase64Encoded": true});
        let response = translate_response(raw.to_string().as_bytes());
        assert_eq!(response.body, vec![0u8, 1, 2]);
    }

    #[test]
    fn function_error_timeout_and_garbage_become_internal_server_error() {
        let error =
            br#"{"errorType":"&alloc::boxed::Box<dyn core::error::Error>","errorMessage":"boom"}"#;
        let timeout = b"Task timed out after 5.00 seconds";
        let bad_status = br#"{"statusCode":"two hundred","body":"x"}"#;
        for raw in [&error[..], &timeout[..], &bad_status[..], b""] {
            let response = translate_response(raw);
            assert_eq!(response.status, 500, "{}", String::from_utf8_lossy(raw));
            assert_eq!(
                response.body,
                br#"{"message":"Internal Server Error"}"#.to_vec()
            );
        }
    }

    #[test]
    fn json_without_status_code_is_a_200_with_that_json_as_body() {
        let response = translate_response(br#"{"ok":true}"#);
        assert_eq!(response.status, 200);
        assert_eq!(response.body, br#"{"ok":true}"#.to_vec());
        assert!(response
            .headers
            .contains(&("content-type".into(), "application/json".into())));

        let text = translate_response(br#""Hello from Lambda!""#);
        assert_eq!(text.body, b"Hello from Lambda!".to_vec());
    }

    #[test]
    fn body_is_text_only_for_textual_content_types() {
        let body = br#"{"amount":10}"#;
        for (content_type, text) in [
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Text/Plain"), true),
            (Some("application/xml"), true),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("application/octet-stream"), false),
            (None, false),
        ] {
            let mut request = incoming("POST", "/payments", body);
            request.headers.remove("content-type");
            if let Some(content_type) = content_type {
                request
                    .headers
                    .insert("content-type", HeaderValue::from_static(content_type));
            }
            let event = event_for(&request);
            assert_eq!(event["isBase64Encoded"], !text, "{content_type:?}");
            let parsed = lambda_http::request::from_str(&event.to_string()).unwrap();
            assert_eq!(parsed.body().as_ref(), body, "{content_type:?}");
        }
    }

    #[test]
    fn path_is_decoded_before_routing_and_an_encoded_slash_splits_it() {
        let path = decode_path("/payments/ws%20CO%C3%A9+1");
        assert_eq!(path, "/payments/ws COé+1");
        let status = route("GET", &path).unwrap();
        assert_eq!(status.path_parameters["checkout_request_id"], "ws COé+1");
        assert_eq!(route("GET", &decode_path("/payments/a%2Fb")), None);

        // lambda_http must still read such an event: a deployed API sends the same.
        let event = event_for(&incoming("GET", &path, b""));
        let parsed = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert_eq!(
            parsed.path_parameters().first("checkout_request_id"),
            Some("ws COé+1")
        );
    }

    #[test]
    fn query_values_are_percent_decoded() {
        let params = query_parameters("a=%2Bb+c&d=%zz&e");
        assert_eq!(params["a"], "+b c");
        assert_eq!(params["d"], "%zz");
        assert_eq!(params["e"], "");
    }
}
