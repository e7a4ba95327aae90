//! The `/sim/…` control API: the same operations as `SimHandle`, over HTTP.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use crate::model::{Counts, Endpoint, Fault, Outcome, RecordedRequest, SentCallback};
use crate::state::Shared;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/sim/health", get(|| async { "ok" }))
        .route("/sim/script", post(script))
        .route("/sim/fault", post(fault))
        .route("/sim/latency", post(latency))
        .route("/sim/expire-tokens", post(expire_tokens))
        .route("/sim/counts", get(counts))
        .route("/sim/requests", get(requests))
        .route("/sim/callbacks", get(callbacks))
        .route("/sim/complete/{checkout_request_id}", post(complete))
        .route("/sim/reset", post(reset))
        .with_state(shared)
}

#[derive(Deserialize)]
struct ScriptRequest {
    #[serde(default)]
    phone: Option<String>,
    outcomes: Vec<Outcome>,
}

async fn script(State(shared): State<Arc<Shared>>, Json(req): Json<ScriptRequest>) -> StatusCode {
    shared.script(req.phone.as_deref(), req.outcomes);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultRequest {
    endpoint: Endpoint,
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

async fn fault(State(shared): State<Arc<Shared>>, Json(req): Json<FaultRequest>) -> StatusCode {
    shared.fault(req.endpoint, req.fault, req.times);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct LatencyRequest {
    latency_ms: u64,
}

async fn latency(State(shared): State<Arc<Shared>>, Json(req): Json<LatencyRequest>) -> StatusCode {
    shared.set_latency(Duration::from_millis(req.latency_ms));
    StatusCode::NO_CONTENT
}

async fn expire_tokens(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.expire_tokens();
    StatusCode::NO_CONTENT
}

async fn counts(State(shared): State<Arc<Shared>>) -> Json<Counts> {
    Json(shared.counts())
}

async fn requests(State(shared): State<Arc<Shared>>) -> Json<Vec<RecordedRequest>> {
    Json(shared.requests())
}

async fn callbacks(State(shared): State<Arc<Shared>>) -> Json<Vec<SentCallback>> {
    Json(shared.callbacks())
}

async fn complete(
    State(shared): State<Arc<Shared>>,
    Path(checkout_request_id): Path<String>,
) -> StatusCode {
    shared.complete_now(&checkout_request_id);
    StatusCode::NO_CONTENT
}

async fn reset(State(shared): State<Arc<Shared>>) -> StatusCode {
    shared.reset();
    StatusCode::NO_CONTENT
}
