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
        ("PUT", "/payments"),
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
