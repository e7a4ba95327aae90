//! A [`Daraja`] that counts every call and sends nothing, for tests of the code that calls
//! Daraja: "Daraja was not called" is `fake.pushes() == 0`, not a closed port.

use std::sync::atomic::{AtomicUsize, Ordering};

use async_trait::async_trait;

use crate::stk::{Daraja, DarajaError, PushRequest, QueryAnswer};
use crate::wire::StkPushResponse;

/// Answers every push and query [`DarajaError::Unavailable`] with no HTTP status (nothing was
/// sent, so a retry is safe), and counts them.
#[derive(Debug, Default)]
pub struct FakeDaraja {
    pushes: AtomicUsize,
    queries: AtomicUsize,
}

impl FakeDaraja {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many pushes were asked for.
    pub fn pushes(&self) -> usize {
        self.pushes.load(Ordering::SeqCst)
    }

    /// How many queries were asked for.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

fn unavailable(call: &str) -> DarajaError {
    DarajaError::Unavailable {
        http_status: None,
        error_code: None,
        message: format!("FakeDaraja sends no {call}"),
    }
}

#[async_trait]
impl Daraja for FakeDaraja {
    async fn stk_push(&self, _req: &PushRequest) -> Result<StkPushResponse, DarajaError> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        Err(unavailable("push"))
    }

    async fn stk_query(&self, _checkout_request_id: &str) -> Result<QueryAnswer, DarajaError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        Err(unavailable("query"))
    }
}
