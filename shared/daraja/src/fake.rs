//! A [`Daraja`] that counts every call and sends nothing, for tests of the code that calls
//! Daraja: "Daraja was not called" is `fake.pushes() == 0`, not a closed port. In its
//! accepting mode every push is acknowledged, for tests of what happens after.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::deadline::Deadline;
use crate::stk::{Daraja, DarajaError, PushRequest, QueryAnswer};
use crate::wire::StkPushResponse;

/// Answers every push and query [`DarajaError::Unavailable`] with no HTTP status (nothing was
/// sent, so a retry is safe), and counts them; [`FakeDaraja::accepting`] acknowledges pushes.
#[derive(Debug, Default)]
pub struct FakeDaraja {
    pushes: AtomicUsize,
    queries: AtomicUsize,
    accepts: bool,
    /// The `CallBackURL` of every push asked for, in order.
    callback_urls: Mutex<Vec<String>>,
}

impl FakeDaraja {
    pub fn new() -> Self {
        Self::default()
    }

    /// Acknowledges every push, with checkout ids `ws_CO_FAKE_1`, `ws_CO_FAKE_2`, …
    pub fn accepting() -> Self {
        Self {
            accepts: true,
            ..Self::default()
        }
    }

    /// How many pushes were asked for.
    pub fn pushes(&self) -> usize {
        self.pushes.load(Ordering::SeqCst)
    }

    /// The `CallBackURL` of every push asked for, in order.
    pub fn callback_urls(&self) -> Vec<String> {
        self.callback_urls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
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
    async fn stk_push(&self, req: &PushRequest) -> Result<StkPushResponse, DarajaError> {
        self.callback_urls
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(req.callback_url.clone());
        let n = self.pushes.fetch_add(1, Ordering::SeqCst) + 1;
        if !self.accepts {
            return Err(unavailable("push"));
        }
        Ok(StkPushResponse {
            merchant_request_id: format!("fake-{n}"),
            checkout_request_id: format!("ws_CO_FAKE_{n}"),
            response_code: "0".into(),
            response_description: "Success. Request accepted for processing".into(),
            customer_message: "Success. Request accepted for processing".into(),
        })
    }

    async fn stk_query(
        &self,
        _checkout_request_id: &str,
        _by: Deadline,
    ) -> Result<QueryAnswer, DarajaError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        Err(unavailable("query"))
    }
}
