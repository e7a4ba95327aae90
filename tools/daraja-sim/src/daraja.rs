//! The Daraja endpoints: OAuth, STK push and STK query, with Daraja's shapes and codes.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, FixedOffset, NaiveDateTime, TimeZone, Utc};
use rand::Rng;
use serde_json::{json, Map, Value};

use crate::model::{Endpoint, Fault};
use crate::state::{mask_id, mask_phone, NewPush, QueryView, Shared};

/// Daraja's clock: Africa/Nairobi has been UTC+3 all year since 1942.
pub(crate) fn nairobi_now() -> DateTime<FixedOffset> {
    Utc::now().with_timezone(&eat())
}

mod validate;

use validate::*;

fn eat() -> FixedOffset {
    EAT
}

const EAT: FixedOffset = match FixedOffset::east_opt(3 * 3600) {
    Some(offset) => offset,
    // Checked at compile time: 3 h is within FixedOffset's range.
    None => panic!("UTC+3 is a valid offset"),
};

/// Every error Daraja answers, each with its one HTTP status and code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DarajaError {
    #[error("Bad Request - Invalid {0}")]
    Invalid(&'static str),
    #[error("Invalid Authentication passed")]
    InvalidAuthentication,
    #[error("Invalid grant type passed")]
    InvalidGrantType,
    #[error("Invalid Access Token")]
    InvalidAccessToken,
    #[error("Resource not found")]
    NotFound,
    #[error("Method not allowed")]
    MethodNotAllowed,
    #[error("Merchant does not exist")]
    UnknownMerchant,
    #[error("Wrong credentials")]
    WrongCredentials,
    #[error(
        "Unable to lock subscriber, a transaction is already in process for the current subscriber"
    )]
    SubscriberLocked,
    #[error("The transaction is being processed")]
    BeingProcessed,
}

impl DarajaError {
    fn status(&self) -> StatusCode {
        match self {
            Self::Invalid(_) | Self::InvalidAuthentication | Self::InvalidGrantType => {
                StatusCode::BAD_REQUEST
            }
            Self::InvalidAccessToken | Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::UnknownMerchant
            | Self::WrongCredentials
            | Self::SubscriberLocked
            | Self::BeingProcessed => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "400.002.02",
            Self::InvalidAuthentication => "400.008.01",
            Self::InvalidGrantType => "400.008.02",
            Self::InvalidAccessToken => "404.001.03",
            Self::NotFound => "404.001.01",
            Self::MethodNotAllowed => "405.001",
            Self::UnknownMerchant
            | Self::WrongCredentials
            | Self::SubscriberLocked
            | Self::BeingProcessed => "500.001.1001",
        }
    }

    fn reply(&self) -> Reply {
        Reply::json(self.status(), error_body(self.code(), &self.to_string()))
    }
}

fn error_body(code: &str, message: &str) -> Value {
    json!({"requestId": request_id(), "errorCode": code, "errorMessage": message})
}

fn request_id() -> String {
    let mut rng = rand::rng();
    format!(
        "{}-{}-{}",
        rng.random_range(1000..100000),
        rng.random_range(1_000_000..100_000_000),
        rng.random_range(1..10)
    )
}

/// An answer, kept as data so the request log records exactly what was sent.
pub(crate) struct Reply {
    status: StatusCode,
    body: ReplyBody,
}

enum ReplyBody {
    Json(Value),
    Text(&'static str),
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body: ReplyBody::Json(body),
        }
    }

    fn send(self, shared: &Shared, request: u64) -> Response {
        match self.body {
            ReplyBody::Json(body) => {
                shared.answered(request, self.status.as_u16(), body.clone());
                (self.status, axum::Json(body)).into_response()
            }
            ReplyBody::Text(text) => {
                shared.answered(request, self.status.as_u16(), Value::Null);
                (self.status, [(header::CONTENT_TYPE, "text/html")], text).into_response()
            }
        }
    }
}

/// Apigee's answer when a quota policy trips; Daraja's gateway sends it with HTTP 429.
fn quota_violation() -> Reply {
    Reply::json(
        StatusCode::TOO_MANY_REQUESTS,
        json!({"fault": {
            "faultstring": "Rate limit quota violation. Quota limit  exceeded. Identifier : _default",
            "detail": {"errorcode": "policies.ratelimit.QuotaViolation"}
        }}),
    )
}

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route(
            "/oauth/v1/generate",
            get(oauth).fallback(method_not_allowed),
        )
        .route(
            "/mpesa/stkpush/v1/processrequest",
            post(stk_push).fallback(method_not_allowed),
        )
        .route(
            "/mpesa/stkpushquery/v1/query",
            post(stk_query).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .with_state(shared)
}

async fn method_not_allowed() -> Response {
    let e = DarajaError::MethodNotAllowed;
    (e.status(), axum::Json(error_body(e.code(), &e.to_string()))).into_response()
}

async fn not_found() -> Response {
    let e = DarajaError::NotFound;
    (e.status(), axum::Json(error_body(e.code(), &e.to_string()))).into_response()
}

/// Counting, latency and injected faults, common to every Daraja endpoint. `Err` is the
/// answer to send instead of the real one.
async fn prelude(shared: &Shared, endpoint: Endpoint, body: Value) -> (u64, Option<Reply>) {
    let id = shared.received(endpoint, body);
    let latency = shared.latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let Some(fault) = shared.take_fault(endpoint) else {
        return (id, None);
    };
    tracing::info!(?endpoint, ?fault, "injecting fault");
    let reply = match fault {
        Fault::Status {
            http,
            error_code,
            error_message,
        } => Reply::json(
            StatusCode::from_u16(http).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            error_body(&error_code, &error_message),
        ),
        Fault::SpikeArrest => Reply::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body("500.003.02", "System is busy. Spike arrest violation"),
        ),
        Fault::InternalError => Reply::json(
            StatusCode::INTERNAL_SERVER_ERROR,
            error_body("500.003.1001", "Internal Server Error"),
        ),
        Fault::Garbage => Reply {
            status: StatusCode::OK,
            body: ReplyBody::Text("<html><body><h1>Service Unavailable</h1></body></html>"),
        },
        Fault::RateLimited => quota_violation(),
        Fault::Hang => {
            shared.stopped().await;
            Reply::json(StatusCode::SERVICE_UNAVAILABLE, Value::Null)
        }
    };
    (id, Some(reply))
}

// ---- OAuth ----

async fn oauth(
    State(shared): State<Arc<Shared>>,
    query: Result<Query<HashMap<String, String>>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Response {
    let (id, fault) = prelude(&shared, Endpoint::OAuth, Value::Null).await;
    if let Some(reply) = fault {
        return reply.send(&shared, id);
    }
    let grant_type = query.ok().and_then(|Query(q)| q.get("grant_type").cloned());
    let reply = match check_basic(&shared, &headers) {
        Err(e) => e.reply(),
        // Exact match: a trailing space or newline in the URL is a classic 400.008.02.
        Ok(()) if grant_type.as_deref() != Some("client_credentials") => {
            DarajaError::InvalidGrantType.reply()
        }
        Ok(()) => {
            let token = shared.issue_token();
            tracing::info!("access token issued");
            Reply::json(
                StatusCode::OK,
                json!({
                    "access_token": token,
                    "expires_in": shared.config.token_ttl.as_secs().to_string(),
                }),
            )
        }
    };
    reply.send(&shared, id)
}

fn check_basic(shared: &Shared, headers: &HeaderMap) -> Result<(), DarajaError> {
    let bad = || DarajaError::InvalidAuthentication;
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(bad)?;
    let (scheme, encoded) = value.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(bad());
    }
    let decoded = BASE64.decode(encoded.trim()).map_err(|_| bad())?;
    let decoded = String::from_utf8(decoded).map_err(|_| bad())?;
    let (key, secret) = decoded.split_once(':').ok_or_else(bad)?;
    let matches = |expected: &Option<String>, given: &str| match expected {
        Some(expected) => expected == given,
        None => !given.is_empty(),
    };
    if matches(&shared.config.consumer_key, key) && matches(&shared.config.consumer_secret, secret)
    {
        Ok(())
    } else {
        Err(bad())
    }
}

fn check_bearer(shared: &Shared, headers: &HeaderMap) -> Result<(), DarajaError> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    match token {
        Some(token) if shared.token_valid(token) => Ok(()),
        _ => Err(DarajaError::InvalidAccessToken),
    }
}

async fn stk_push(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, fault) = prelude(&shared, Endpoint::StkPush, recorded_body(&body)).await;
    if let Some(reply) = fault {
        return reply.send(&shared, id);
    }
    let valid = check_bearer(&shared, &headers)
        .and_then(|()| json_object(&headers, &body))
        .and_then(|map| validate_push(&shared, &map));
    let valid = match valid {
        Ok(valid) => valid,
        Err(e) => {
            tracing::info!(error = %e, "push rejected");
            return e.reply().send(&shared, id);
        }
    };
    let phone = valid.push.phone.clone();
    let Some(accepted) = shared.open_prompt(valid.push) else {
        tracing::info!(phone = %mask_phone(&phone), "push rejected: prompt already open");
        return DarajaError::SubscriberLocked.reply().send(&shared, id);
    };
    tracing::info!(
        phone = %mask_phone(&phone),
        checkout = %mask_id(&accepted.checkout_request_id),
        result_code = %accepted.outcome.result_code,
        delivery = ?accepted.outcome.delivery,
        "push accepted"
    );
    if accepted.outcome.delivery == crate::model::Delivery::BeforeResponse {
        if let Some(plan) = shared.close_prompt(&accepted.checkout_request_id) {
            crate::callback::deliver(&shared, plan).await;
        }
    } else {
        let delay = accepted
            .outcome
            .delay
            .unwrap_or(shared.config.callback_delay);
        let task = tokio::spawn(crate::callback::run_prompt(
            shared.clone(),
            accepted.checkout_request_id.clone(),
            delay,
            accepted.wake.clone(),
        ));
        shared.attach_task(&accepted.checkout_request_id, task.abort_handle());
    }
    let message = "Success. Request accepted for processing";
    Reply::json(
        StatusCode::OK,
        json!({
            "MerchantRequestID": accepted.merchant_request_id,
            "CheckoutRequestID": accepted.checkout_request_id,
            "ResponseCode": "0",
            "ResponseDescription": message,
            "CustomerMessage": message,
        }),
    )
    .send(&shared, id)
}

// ---- STK query ----

async fn stk_query(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let (id, fault) = prelude(&shared, Endpoint::StkQuery, recorded_body(&body)).await;
    if let Some(reply) = fault {
        return reply.send(&shared, id);
    }
    // The gateway's quota runs before anything looks at the request.
    if !shared.query_allowed() {
        tracing::info!("query rate limited");
        return quota_violation().send(&shared, id);
    }
    let checked = check_bearer(&shared, &headers)
        .and_then(|()| json_object(&headers, &body))
        .and_then(|map| {
            let shortcode = shortcode(&map)?;
            let timestamp = timestamp(&shared, &map)?;
            credentials(&shared, &map, &shortcode, &timestamp)?;
            text(&map, "CheckoutRequestID").ok_or(DarajaError::Invalid("CheckoutRequestID"))
        });
    let checkout_request_id = match checked {
        Ok(checkout) => checkout,
        Err(e) => return e.reply().send(&shared, id),
    };
    let answer = |merchant_request_id: String, code: String, desc: String| {
        Reply::json(
            StatusCode::OK,
            json!({
                "ResponseCode": "0",
                // Daraja's own spelling.
                "ResponseDescription": "The service request has been accepted successsfully",
                "MerchantRequestID": merchant_request_id,
                "CheckoutRequestID": checkout_request_id,
                "ResultCode": code,
                "ResultDesc": desc,
            }),
        )
    };
    let reply = match shared.query(&checkout_request_id) {
        QueryView::Unknown => DarajaError::Invalid("CheckoutRequestID").reply(),
        QueryView::Processing => DarajaError::BeingProcessed.reply(),
        QueryView::Transient {
            merchant_request_id,
        } => answer(
            merchant_request_id,
            "4999".to_owned(),
            crate::model::result_desc_for(&json!(4999)).to_owned(),
        ),
        QueryView::Final {
            merchant_request_id,
            result_code,
            result_desc,
        } => {
            let code = match result_code {
                Value::String(s) => s,
                other => other.to_string(),
            };
            answer(merchant_request_id, code, result_desc)
        }
    };
    tracing::info!(checkout = %mask_id(&checkout_request_id), status = reply.status.as_u16(), "query answered");
    reply.send(&shared, id)
}
