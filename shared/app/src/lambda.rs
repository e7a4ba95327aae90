//! Glue the three functions share: logging set-up and JSON responses. Only compiled with the
//! `lambda` feature, so the domain itself stays free of Lambda types.

use lambda_http::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::Value;

use crate::api::ApiError;

/// Logs as the function's `LoggingConfig` says ([`crate::logging`]).
pub fn init_tracing() {
    crate::logging::init();
}

/// A JSON response that no cache keeps: payment states change.
pub fn json_response(status: u16, body: &Value) -> Response<Body> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(Body::Text(body.to_string()))
        .expect("a status code from this crate and static headers are valid")
}

pub fn error_response(error: &ApiError) -> Response<Body> {
    json_response(error.status(), &error.body())
}

/// The invocation's deadline, as the Lambda runtime gives it; `otherwise` from now when the
/// request carries no Lambda context (a test building a request by hand).
pub fn deadline(request: &Request, otherwise: std::time::Duration) -> daraja::Deadline {
    match request.lambda_context_ref() {
        Some(context) => daraja::Deadline::at_system_time(context.deadline()),
        None => daraja::Deadline::after(otherwise),
    }
}

/// The request body as bytes (API Gateway may base64-encode it; lambda_http decodes it).
pub fn body_bytes(request: &Request) -> &[u8] {
    request.body().as_ref()
}

/// `https://{domainName}` of the API Gateway that delivered the request: the host Safaricom
/// must call back, without a template reference from a function to its own API (a cycle).
pub fn request_base_url(request: &Request) -> Option<String> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let domain = ctx.domain_name.as_deref()?;
            let scheme = if domain.starts_with("127.0.0.1") || domain.starts_with("localhost") {
                "http"
            } else {
                "https"
            };
            let stage = ctx.stage.as_deref().filter(|s| *s != "$default");
            Some(match stage {
                Some(stage) => format!("{scheme}://{domain}/{stage}"),
                None => format!("{scheme}://{domain}"),
            })
        }
        // Only the HTTP API (payload 2.0) is compiled in; the enum is non-exhaustive.
        _ => None,
    }
}

/// The IAM principal API Gateway's authorizer verified ([`crate::api::principal`]); `None`
/// for a request without one (a direct invoke, a route without IAM).
pub fn caller(request: &Request) -> Option<String> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => {
            let arn = ctx.authorizer.as_ref()?.iam.as_ref()?.user_arn.as_deref()?;
            Some(crate::api::principal(arn))
        }
        _ => None,
    }
}

/// The caller's address as API Gateway saw it.
pub fn source_ip(request: &Request) -> Option<String> {
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        _ => None,
    }
}

/// A path parameter such as `{token}`.
pub fn path_param(request: &Request, name: &str) -> Option<String> {
    request
        .path_parameters_ref()
        .and_then(|p| p.first(name))
        .map(str::to_string)
}
