//! A constant Daraja on loopback: a token, and an accepted push with a fresh checkout id. No
//! state, no callbacks, no checks, so a benchmark measures the caller, not the simulator.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

/// Binds a free loopback port and serves until the runtime stops; returns the base URL.
pub async fn start() -> std::io::Result<String> {
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    let counter = Arc::new(AtomicU64::new(0));
    let app = Router::new()
        .route("/oauth/v1/generate", get(token))
        .route("/mpesa/stkpush/v1/processrequest", post(push))
        .route("/echo", post(echo))
        .with_state(counter);
    tokio::spawn(async move {
        // The stub lives as long as the benchmark's runtime; a failure only ends the bench.
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

async fn token() -> Json<Value> {
    Json(json!({"access_token": "bench-token", "expires_in": "3599"}))
}

async fn push(State(counter): State<Arc<AtomicU64>>) -> Json<Value> {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "MerchantRequestID": format!("29115-{n}-1"),
        "CheckoutRequestID": format!("ws_CO_27112026090000{n:012}"),
        "ResponseCode": "0",
        "ResponseDescription": "Success. Request accepted for processing",
        "CustomerMessage": "Success. Request accepted for processing"
    }))
}

/// The same size of answer as a push, for measuring the loopback round trip alone.
async fn echo() -> Json<Value> {
    push(State(Arc::new(AtomicU64::new(0)))).await
}
