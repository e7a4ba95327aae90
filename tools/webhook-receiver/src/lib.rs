//! A merchant's webhook endpoint, for the demo and the tests: it checks every request's
//! `Mpesa-Signature` as a receiver must ([`app::webhook::verify`], the README's snippet in
//! Rust), answers `400` to a bad one, and keeps each accepted event in arrival order. It can be
//! told to fail (any status, for a number of requests or until told otherwise) or to answer
//! slowly, as a real endpoint does on a bad day.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use serde_json::Value;
use tokio::sync::oneshot;

/// One accepted delivery.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub body: Value,
}

#[derive(Debug, Default)]
struct Faults {
    /// Answer this status to the next `remaining` signed requests (`None`: to every one).
    status: Option<u16>,
    remaining: Option<usize>,
    delay: Duration,
}

#[derive(Default)]
struct Inner {
    received: Vec<Received>,
    attempts: usize,
    rejected: usize,
    faults: Faults,
}

#[derive(Clone)]
struct Shared {
    secret: Arc<String>,
    inner: Arc<Mutex<Inner>>,
    print: bool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running receiver. Dropping it stops the server.
pub struct Receiver {
    addr: SocketAddr,
    shared: Shared,
    stop: Option<oneshot::Sender<()>>,
}

/// Starts a receiver on `addr` checking signatures with `secret`; `print` writes each event
/// to stdout.
pub async fn start(addr: SocketAddr, secret: &str, print: bool) -> std::io::Result<Receiver> {
    let shared = Shared {
        secret: Arc::new(secret.to_owned()),
        inner: Arc::default(),
        print,
    };
    let app = Router::new()
        .route("/webhooks", post(receive))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
    });
    Ok(Receiver {
        addr,
        shared,
        stop: Some(stop),
    })
}

async fn receive(
    State(shared): State<Shared>,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    let header = headers
        .get(app::webhook::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let verified = app::webhook::verify(header, body.as_bytes(), &shared.secret, now);
    let (status, delay) = {
        let mut inner = shared.lock();
        inner.attempts += 1;
        if let Err(e) = verified {
            inner.rejected += 1;
            return (StatusCode::BAD_REQUEST, format!("{{\"error\":\"{e}\"}}"));
        }
        let faults = &mut inner.faults;
        let failing = match (faults.status, faults.remaining) {
            (Some(status), None) => Some(status),
            (Some(status), Some(n)) if n > 0 => {
                faults.remaining = Some(n - 1);
                Some(status)
            }
            _ => None,
        };
        (failing, faults.delay)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(status) = status {
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, "{\"error\":\"failing on purpose\"}".into());
    }
    let value: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    let event_id = value["id"].as_str().unwrap_or_default().to_owned();
    if shared.print {
        let data = &value["data"];
        println!(
            "webhook {} {}: {} {} -> {}, KES {}, receipt {}",
            event_id,
            value["type"].as_str().unwrap_or("?"),
            data["checkout_request_id"].as_str().unwrap_or("?"),
            data["previous_status"].as_str().unwrap_or("?"),
            data["status"].as_str().unwrap_or("?"),
            data["amount"],
            data["receipt"].as_str().unwrap_or("-"),
        );
    }
    shared.lock().received.push(Received {
        event_id,
        body: value,
    });
    (StatusCode::OK, "{\"received\":true}".into())
}

impl Receiver {
    /// The URL to give as the webhook: `http://127.0.0.1:PORT/webhooks`.
    pub fn url(&self) -> String {
        format!("http://{}/webhooks", self.addr)
    }

    /// Every accepted delivery, in arrival order (a redelivered event appears again).
    pub fn received(&self) -> Vec<Received> {
        self.shared.lock().received.clone()
    }

    /// Requests that reached it, accepted or not.
    pub fn attempts(&self) -> usize {
        self.shared.lock().attempts
    }

    /// Requests refused for their signature.
    pub fn rejected(&self) -> usize {
        self.shared.lock().rejected
    }

    /// Answers `status` to the next `count` signed requests (`None`: to all, until
    /// [`Receiver::recover`]).
    pub fn fail(&self, status: u16, count: Option<usize>) {
        let mut inner = self.shared.lock();
        inner.faults.status = Some(status);
        inner.faults.remaining = count;
    }

    /// Answers every signed request after `delay`.
    pub fn delay(&self, delay: Duration) {
        self.shared.lock().faults.delay = delay;
    }

    /// Accepts again, at once.
    pub fn recover(&self) {
        self.shared.lock().faults = Faults::default();
    }

    pub fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}
