//! The simulator's state, shared by the Daraja endpoints, the control API and `SimHandle`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::Utc;
use rand::distr::{Alphanumeric, SampleString};
use rand::Rng;
use serde_json::Value;
use tokio::sync::{watch, Notify};
use tokio::task::AbortHandle;

use crate::model::{
    Counts, Delivery, Endpoint, Fault, Outcome, RecordedRequest, SentCallback, SimConfig,
};

/// Callbacks to a merchant that never answers must not pile up forever.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Shared {
    pub config: SimConfig,
    pub http: reqwest::Client,
    inner: Mutex<Inner>,
    stop_tx: watch::Sender<bool>,
    next_request: AtomicU64,
}

#[derive(Default)]
struct Inner {
    /// token → instant it expires
    tokens: HashMap<String, Instant>,
    phone_scripts: HashMap<String, VecDeque<Outcome>>,
    global_script: VecDeque<Outcome>,
    faults: HashMap<Endpoint, VecDeque<(Fault, u32)>>,
    latency: Duration,
    counts: Counts,
    requests: Vec<(u64, RecordedRequest)>,
    callbacks: Vec<SentCallback>,
    transactions: HashMap<String, Txn>,
    /// phone → CheckoutRequestID of its open prompt
    open_prompts: HashMap<String, String>,
    /// instants of the STK queries let through in the last minute
    query_window: VecDeque<Instant>,
    /// receipts ever issued, so none repeats even across resets
    receipts: HashSet<String>,
}

pub(crate) struct Txn {
    pub merchant_request_id: String,
    pub checkout_request_id: String,
    pub phone: String,
    pub amount: u64,
    pub callback_url: String,
    pub outcome: Outcome,
    pub open: bool,
    pub pending_4999: bool,
    pub wake: Arc<Notify>,
    task: Option<AbortHandle>,
}

/// What a query sees of a transaction.
pub(crate) enum QueryView {
    Unknown,
    Processing,
    Transient {
        merchant_request_id: String,
    },
    Final {
        merchant_request_id: String,
        result_code: Value,
        result_desc: String,
    },
}

/// A closed prompt's callback, ready to deliver.
pub(crate) struct CallbackPlan {
    pub checkout_request_id: String,
    pub url: String,
    pub body: Value,
    pub delivery: Delivery,
}

/// A push accepted into the state, before its answer is sent.
pub(crate) struct Accepted {
    pub merchant_request_id: String,
    pub checkout_request_id: String,
    pub outcome: Outcome,
    pub wake: Arc<Notify>,
}

pub(crate) struct NewPush {
    pub phone: String,
    pub amount: u64,
    pub callback_url: String,
    /// A TransactionType/PartyB mix-up decides the result whatever was scripted.
    pub forced_result: Option<Value>,
}

impl Shared {
    pub fn new(config: SimConfig) -> Self {
        let (stop_tx, _) = watch::channel(false);
        let http = reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            config,
            http,
            inner: Mutex::new(Inner::default()),
            stop_tx,
            next_request: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.stop_tx.subscribe()
    }

    pub fn stop(&self) {
        self.stop_tx.send_replace(true);
        let mut inner = self.lock();
        for txn in inner.transactions.values_mut() {
            if let Some(task) = txn.task.take() {
                task.abort();
            }
        }
    }

    /// Resolves once the simulator is shutting down.
    pub async fn stopped(&self) {
        let mut rx = self.stop_tx.subscribe();
        // Err means the sender is gone, which only happens at shutdown too.
        let _ = rx.wait_for(|stopped| *stopped).await;
    }

    // ---- control ----

    pub fn script(&self, phone: Option<&str>, outcomes: Vec<Outcome>) {
        let mut inner = self.lock();
        match phone {
            Some(phone) => {
                let key = normalise_phone(phone).unwrap_or_else(|| phone.to_owned());
                inner.phone_scripts.entry(key).or_default().extend(outcomes);
            }
            None => inner.global_script.extend(outcomes),
        }
    }

    pub fn fault(&self, endpoint: Endpoint, fault: Fault, times: u32) {
        if times == 0 {
            return;
        }
        self.lock()
            .faults
            .entry(endpoint)
            .or_default()
            .push_back((fault, times));
    }

    pub fn set_latency(&self, latency: Duration) {
        self.lock().latency = latency;
    }

    pub fn latency(&self) -> Duration {
        self.lock().latency
    }

    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn counts(&self) -> Counts {
        self.lock().counts
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock()
            .requests
            .iter()
            .map(|(_, r)| r.clone())
            .collect()
    }

    pub fn callbacks(&self) -> Vec<SentCallback> {
        self.lock().callbacks.clone()
    }

    /// Whether the push's prompt is still open (`None`: no such push). Read-only: nothing counted.
    pub fn prompt_open(&self, checkout_request_id: &str) -> Option<bool> {
        self.lock()
            .transactions
            .get(checkout_request_id)
            .map(|txn| txn.open)
    }

    pub fn callback_url(&self, checkout_request_id: &str) -> Option<String> {
        self.lock()
            .transactions
            .get(checkout_request_id)
            .map(|txn| txn.callback_url.clone())
    }

    pub fn complete_now(&self, checkout_request_id: &str) {
        if let Some(txn) = self.lock().transactions.get(checkout_request_id) {
            // notify_one keeps a permit, so a wake before the wait starts still counts.
            txn.wake.notify_one();
        }
    }

    pub fn reset(&self) {
        let mut inner = self.lock();
        for txn in inner.transactions.values_mut() {
            if let Some(task) = txn.task.take() {
                task.abort();
            }
        }
        let tokens = std::mem::take(&mut inner.tokens);
        let receipts = std::mem::take(&mut inner.receipts);
        *inner = Inner {
            tokens,
            receipts,
            ..Inner::default()
        };
    }

    // ---- request bookkeeping ----

    /// Counts and records a request; its answer is filled in by [`Shared::answered`].
    pub fn received(&self, endpoint: Endpoint, body: Value) -> u64 {
        let id = self.next_request.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        match endpoint {
            Endpoint::OAuth => inner.counts.oauth += 1,
            Endpoint::StkPush => inner.counts.stk_push += 1,
            Endpoint::StkQuery => inner.counts.stk_query += 1,
        }
        inner.requests.push((
            id,
            RecordedRequest {
                endpoint,
                received_at: Utc::now(),
                status: None,
                body,
                response: Value::Null,
            },
        ));
        id
    }

    pub fn answered(&self, id: u64, status: u16, response: Value) {
        if let Some((_, r)) = self.lock().requests.iter_mut().find(|(i, _)| *i == id) {
            r.status = Some(status);
            r.response = response;
        }
    }

    pub fn take_fault(&self, endpoint: Endpoint) -> Option<Fault> {
        let mut inner = self.lock();
        let queue = inner.faults.get_mut(&endpoint)?;
        let (fault, left) = queue.front_mut()?;
        let fault = fault.clone();
        *left -= 1;
        if *left == 0 {
            queue.pop_front();
        }
        Some(fault)
    }

    /// Sliding one-minute window over the queries let through.
    pub fn query_allowed(&self) -> bool {
        let Some(limit) = self.config.query_rate_limit_per_minute else {
            return true;
        };
        let now = Instant::now();
        let mut inner = self.lock();
        while inner
            .query_window
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            inner.query_window.pop_front();
        }
        if inner.query_window.len() >= limit as usize {
            return false;
        }
        inner.query_window.push_back(now);
        true
    }

    // ---- tokens ----

    pub fn issue_token(&self) -> String {
        let token = Alphanumeric.sample_string(&mut rand::rng(), 28);
        let mut inner = self.lock();
        if self.config.invalidate_previous_tokens {
            inner.tokens.clear();
        }
        inner
            .tokens
            .insert(token.clone(), Instant::now() + self.config.token_ttl);
        token
    }

    pub fn token_valid(&self, token: &str) -> bool {
        self.lock()
            .tokens
            .get(token)
            .is_some_and(|expires| *expires > Instant::now())
    }

    // ---- pushes ----

    /// Opens a prompt for the phone, or `None` when one is already open there.
    pub fn open_prompt(&self, push: NewPush) -> Option<Accepted> {
        let mut inner = self.lock();
        if inner.open_prompts.contains_key(&push.phone) {
            return None;
        }
        let scripted = inner
            .phone_scripts
            .get_mut(&push.phone)
            .and_then(VecDeque::pop_front)
            .or_else(|| inner.global_script.pop_front());
        let mut outcome = scripted.unwrap_or_else(|| self.config.default_outcome.clone());
        if let Some(code) = push.forced_result {
            outcome.result_code = code;
            outcome.result_desc = None;
        }
        let mut rng = rand::rng();
        let merchant_request_id = format!(
            "{}-{}-{}",
            rng.random_range(10000..100000),
            rng.random_range(10_000_000..100_000_000),
            rng.random_range(1..10)
        );
        let checkout_request_id = loop {
            let candidate = format!(
                "ws_CO_{}{:03}{}",
                crate::daraja::nairobi_now().format("%d%m%Y%H%M%S"),
                rng.random_range(0..1000),
                push.phone
            );
            if !inner.transactions.contains_key(&candidate) {
                break candidate;
            }
        };
        let wake = Arc::new(Notify::new());
        inner
            .open_prompts
            .insert(push.phone.clone(), checkout_request_id.clone());
        inner.transactions.insert(
            checkout_request_id.clone(),
            Txn {
                merchant_request_id: merchant_request_id.clone(),
                checkout_request_id: checkout_request_id.clone(),
                phone: push.phone,
                amount: push.amount,
                callback_url: push.callback_url,
                pending_4999: outcome.transient_4999,
                outcome: outcome.clone(),
                open: true,
                wake: wake.clone(),
                task: None,
            },
        );
        Some(Accepted {
            merchant_request_id,
            checkout_request_id,
            outcome,
            wake,
        })
    }

    pub fn attach_task(&self, checkout_request_id: &str, task: AbortHandle) {
        if let Some(txn) = self.lock().transactions.get_mut(checkout_request_id) {
            txn.task = Some(task);
        }
    }

    /// Closes the prompt and builds its callback; `None` if the transaction was reset away.
    pub fn close_prompt(&self, checkout_request_id: &str) -> Option<CallbackPlan> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let txn = inner.transactions.get_mut(checkout_request_id)?;
        txn.open = false;
        txn.task = None;
        if inner.open_prompts.get(&txn.phone) == Some(&txn.checkout_request_id) {
            inner.open_prompts.remove(&txn.phone);
        }
        let receipt = txn
            .outcome
            .is_success()
            .then(|| unique_receipt(&mut inner.receipts));
        let body = crate::callback::body(txn, receipt.as_deref());
        Some(CallbackPlan {
            checkout_request_id: txn.checkout_request_id.clone(),
            url: txn.callback_url.clone(),
            body,
            delivery: txn.outcome.delivery,
        })
    }

    pub fn query(&self, checkout_request_id: &str) -> QueryView {
        let mut inner = self.lock();
        let Some(txn) = inner.transactions.get_mut(checkout_request_id) else {
            return QueryView::Unknown;
        };
        if txn.open || txn.outcome.never_final {
            return QueryView::Processing;
        }
        if txn.pending_4999 {
            txn.pending_4999 = false;
            return QueryView::Transient {
                merchant_request_id: txn.merchant_request_id.clone(),
            };
        }
        QueryView::Final {
            merchant_request_id: txn.merchant_request_id.clone(),
            result_code: txn.outcome.result_code.clone(),
            result_desc: txn.outcome.effective_desc(),
        }
    }

    pub fn record_callback(&self, sent: SentCallback) {
        let mut inner = self.lock();
        inner.counts.callbacks_sent += 1;
        if !sent.status.is_some_and(|s| (200..300).contains(&s)) {
            inner.counts.callbacks_failed += 1;
        }
        inner.callbacks.push(sent);
    }
}

fn unique_receipt(issued: &mut HashSet<String>) -> String {
    const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut rng = rand::rng();
    loop {
        // Real receipts start with a letter (it encodes the year), then 9 uppercase alnum.
        let mut receipt = String::with_capacity(10);
        receipt.push(char::from(LETTERS[rng.random_range(0..LETTERS.len())]));
        for _ in 0..9 {
            receipt.push(char::from(ALNUM[rng.random_range(0..ALNUM.len())]));
        }
        if issued.insert(receipt.clone()) {
            return receipt;
        }
    }
}

/// `07…`, `01…`, `+2547…`, `7…`, `2547…` → `2547XXXXXXXX`; `None` if it is not a Kenyan mobile.
pub fn normalise_phone(input: &str) -> Option<String> {
    let digits: String = input
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    let digits = digits.strip_prefix('+').unwrap_or(&digits);
    if !digits.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let national = if let Some(rest) = digits.strip_prefix("254") {
        rest
    } else if let Some(rest) = digits.strip_prefix('0') {
        rest
    } else {
        digits
    };
    let valid = national.len() == 9 && (national.starts_with('7') || national.starts_with('1'));
    valid.then(|| format!("254{national}"))
}

/// `254708374149` → `2547•••••149`, for logs.
pub fn mask_phone(phone: &str) -> String {
    let chars: Vec<char> = phone.chars().collect();
    if chars.len() < 8 {
        return "•••".to_owned();
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}•••••{tail}")
}

/// CheckoutRequestIDs embed the phone, so logs keep only their head.
pub(crate) fn mask_id(id: &str) -> String {
    let head: String = id.chars().take(12).collect();
    format!("{head}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_normalise_from_the_forms_users_type() {
        for input in [
            "0708374149",
            "+254708374149",
            "708374149",
            "254708374149",
            "0708 374 149",
        ] {
            assert_eq!(
                normalise_phone(input).as_deref(),
                Some("254708374149"),
                "{input}"
            );
        }
        assert_eq!(
            normalise_phone("0110000004").as_deref(),
            Some("254110000004")
        );
        for input in ["0208374149", "25470837414", "07083741x9", ""] {
            assert_eq!(normalise_phone(input), None, "{input}");
        }
    }

    #[test]
    fn masked_phone_keeps_only_head_and_tail() {
        assert_eq!(mask_phone("254708374149"), "2547•••••149");
        assert_eq!(mask_phone("123"), "•••");
    }

    #[test]
    fn config_debug_hides_secrets() {
        let config = SimConfig {
            consumer_secret: Some("s3cret-value".into()),
            ..SimConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cret-value"));
        assert!(!shown.contains(crate::model::SANDBOX_PASSKEY));
    }
}
