//! A local, faithful Daraja (M-Pesa Express) simulator.
//!
//! It serves the three Daraja endpoints a payment needs — OAuth, STK push and STK query —
//! with Daraja's exact shapes, codes and HTTP statuses, and POSTs the STK callback to the
//! merchant after a short, scriptable delay. Tests drive it in-process through [`SimHandle`];
//! other processes drive the same state over HTTP under `/sim/…` (see the README).
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use daraja_sim::{start, Endpoint, Fault, Outcome, Quirk, SimConfig};
//! use std::time::Duration;
//!
//! let sim = start("127.0.0.1:0".parse()?, SimConfig {
//!     callback_delay: Duration::from_millis(50),
//!     ..SimConfig::default()
//! }).await?;
//! // base URL for the Daraja client:
//! let base = sim.base_url();
//! // the next push to this phone: cancelled, callback delivered twice at once
//! sim.script(Some("0708374149"), vec![Outcome::code(1032).duplicated(2, true)]);
//! // then a success whose callback has a string Amount and no Balance value
//! sim.script(None, vec![Outcome::success()
//!     .with_quirk(Quirk::AmountAsString)
//!     .with_quirk(Quirk::BalanceWithoutValue)]);
//! // the next STK push hits Apigee's spike arrest
//! sim.fault(Endpoint::StkPush, Fault::SpikeArrest, 1);
//! // … run the code under test against `base` …
//! # let _ = base;
//! assert_eq!(sim.counts().callbacks_sent, 2);
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod callback;
mod control;
mod daraja;
mod model;
mod state;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

pub use model::{
    result_desc_for, Counts, Delivery, Endpoint, Fault, Outcome, Quirk, RecordedRequest,
    SentCallback, SimConfig, SANDBOX_PASSKEY, SANDBOX_SHORTCODE,
};
pub use state::{mask_phone, normalise_phone};

use state::Shared;

/// Binds `addr` (port 0 picks a free port) and serves the simulator in the background.
pub async fn start(addr: SocketAddr, config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let shared = Arc::new(Shared::new(config));
    let app = daraja::router(shared.clone()).merge(control::router(shared.clone()));
    let mut stop = shared.shutdown_signal();
    let server = tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            // An Err means the handle is gone; stopping is right then too.
            let _ = stop.wait_for(|stopped| *stopped).await;
        });
        if let Err(error) = serve.await {
            tracing::error!(%error, "simulator server stopped");
        }
    });
    tracing::info!(%addr, "daraja simulator listening");
    Ok(SimHandle {
        addr,
        shared,
        server: Arc::new(std::sync::Mutex::new(Some(server))),
    })
}

/// A running simulator. Clones share the same server and state.
#[derive(Clone)]
pub struct SimHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
}

impl SimHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the Daraja base URL to give a client.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Queues outcomes for the next pushes to `phone` (normalised to `2547…`) or, with `None`,
    /// to any phone. A phone's own queue is used before the global one.
    pub fn script(&self, phone: Option<&str>, outcomes: Vec<Outcome>) {
        self.shared.script(phone, outcomes);
    }

    /// Makes the next `times` requests to `endpoint` fail with `fault`.
    pub fn fault(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        self.shared.fault(endpoint, fault, times);
    }

    /// Extra delay before every Daraja endpoint answers.
    pub fn set_latency(&self, latency: Duration) {
        self.shared.set_latency(latency);
    }

    /// Every token issued so far becomes invalid (`404.001.03`).
    pub fn expire_tokens(&self) {
        self.shared.expire_tokens();
    }

    pub fn counts(&self) -> Counts {
        self.shared.counts()
    }

    /// Requests to the Daraja endpoints, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.requests()
    }

    /// Callback POSTs made, in the order their answers arrived.
    pub fn callbacks(&self) -> Vec<SentCallback> {
        self.shared.callbacks()
    }

    /// Whether the push's prompt is still open on the phone (`None`: no such push). Reading it
    /// is not a request: nothing is counted and no rate limit is spent.
    pub fn prompt_open(&self, checkout_request_id: &str) -> Option<bool> {
        self.shared.prompt_open(checkout_request_id)
    }

    /// The `CallBackURL` the push named (`None`: no such push). Not a request either.
    pub fn callback_url(&self, checkout_request_id: &str) -> Option<String> {
        self.shared.callback_url(checkout_request_id)
    }

    /// The customer answers now: the push's remaining delay is skipped.
    pub fn complete_now(&self, checkout_request_id: &str) {
        self.shared.complete_now(checkout_request_id);
    }

    /// Back to a fresh simulator: scripts, faults, latency, counts, logs, prompts and past
    /// transactions are cleared and pending callbacks cancelled. Issued tokens stay valid.
    pub fn reset(&self) {
        self.shared.reset();
    }

    /// Stops serving: hung requests and pending callbacks are dropped.
    pub async fn shutdown(self) {
        self.shared.stop();
        let server = self
            .server
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(server) = server {
            // A panicked server task has nothing left to stop.
            let _ = server.await;
        }
    }
}
