//! What the client reports about each HTTP call, for whoever keeps metrics. The client itself
//! knows no metrics system: it tells a [`CallObserver`], and the services decide what to count.

use std::time::Duration;

/// The Daraja endpoints the client calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Oauth,
    StkPush,
    StkQuery,
}

impl Endpoint {
    /// The stable name used in logs and as the `Endpoint` metric dimension.
    pub fn name(self) -> &'static str {
        match self {
            Self::Oauth => "oauth",
            Self::StkPush => "stk_push",
            Self::StkQuery => "stk_query",
        }
    }
}

/// Told about every HTTP call the client makes, answered or not.
pub trait CallObserver: Send + Sync {
    fn call_finished(&self, endpoint: Endpoint, latency: Duration);
}

/// Reports nothing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unobserved;

impl CallObserver for Unobserved {
    fn call_finished(&self, _endpoint: Endpoint, _latency: Duration) {}
}
