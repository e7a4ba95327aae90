//! A [`Daraja`] that answers from a script and counts every call, for tests of the code that
//! calls Daraja: "Daraja was not called" is `fake.pushes() == 0`, not a closed port.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use async_trait::async_trait;

use crate::stk::{Daraja, DarajaError, PushRequest, QueryAnswer};
use crate::wire::StkPushResponse;

/// Answers pushes and queries from scripts, in order; an empty script answers
/// [`DarajaError::Unavailable`] (nothing sent), so a test that forgot to script a call fails
/// on the answer rather than hanging.
#[derive(Debug, Default)]
pub struct FakeDaraja {
    push_answers: Mutex<VecDeque<Result<StkPushResponse, DarajaError>>>,
    query_answers: Mutex<VecDeque<Result<QueryAnswer, DarajaError>>>,
    pushes: AtomicUsize,
    queries: AtomicUsize,
    sent: Mutex<Vec<PushRequest>>,
}

impl FakeDaraja {
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues the answer to the next push.
    pub fn answer_push(&self, answer: Result<StkPushResponse, DarajaError>) -> &Self {
        self.push_answers.lock().unwrap().push_back(answer);
        self
    }

    /// Queues an acceptance of the next push, with this checkout id.
    pub fn accept_push(&self, checkout_request_id: &str) -> &Self {
        self.answer_push(Ok(StkPushResponse {
            merchant_request_id: format!("m-{checkout_request_id}"),
            checkout_request_id: checkout_request_id.to_owned(),
            response_code: "0".to_owned(),
            response_description: "Success. Request accepted for processing".to_owned(),
            customer_message: "Success. Request accepted for processing".to_owned(),
        }))
    }

    /// Queues the answer to the next query.
    pub fn answer_query(&self, answer: Result<QueryAnswer, DarajaError>) -> &Self {
        self.query_answers.lock().unwrap().push_back(answer);
        self
    }

    /// How many pushes were sent.
    pub fn pushes(&self) -> usize {
        self.pushes.load(Ordering::SeqCst)
    }

    /// How many queries were sent.
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    /// The pushes sent, in order.
    pub fn sent(&self) -> Vec<PushRequest> {
        self.sent.lock().unwrap().clone()
    }
}

fn unscripted(call: &str) -> DarajaError {
    DarajaError::Unavailable {
        http_status: None,
        error_code: None,
        message: format!("FakeDaraja has no answer scripted for this {call}"),
    }
}

#[async_trait]
impl Daraja for FakeDaraja {
    async fn stk_push(&self, req: &PushRequest) -> Result<StkPushResponse, DarajaError> {
        self.pushes.fetch_add(1, Ordering::SeqCst);
        self.sent.lock().unwrap().push(req.clone());
        let next = self.push_answers.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Err(unscripted("push")))
    }

    async fn stk_query(&self, _checkout_request_id: &str) -> Result<QueryAnswer, DarajaError> {
        self.queries.fetch_add(1, Ordering::SeqCst);
        let next = self.query_answers.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Err(unscripted("query")))
    }
}
