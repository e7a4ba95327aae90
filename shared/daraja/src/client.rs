//! The Daraja HTTP client: token caching, STK push, STK query, and one typed error.
//!
//! Built once per process (cold start) and shared. Every URL comes from the one `base_url`.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::deadline::Deadline;
use crate::mask::mask_id;
use crate::observe::{CallObserver, Endpoint, Unobserved};
use crate::result_code::OutcomeCategory;
use crate::secret::Secret;
use crate::stk::{Daraja, DarajaError, PushRequest, QueryAnswer, BUSINESS_ERROR, INVALID_TOKEN};
use crate::time::{daraja_timestamp, password, Clock};
use crate::token::{AccessToken, TokenStore};
use crate::values::{ShortCode, TransactionKind};
use crate::wire::{
    DarajaErrorBody, StkPushRequest, StkPushResponse, StkQueryRequest, StkQueryResponse,
};

/// How long before expiry a cached token is replaced. A minute covers a slow request plus clock
/// skew between us and Daraja.
const TOKEN_REFRESH_MARGIN: chrono::Duration = chrono::Duration::seconds(60);

/// How often a container waiting for another's token fetch reads the shared token again.
const LEASE_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long a container waits for another's token fetch before fetching its own. Longer than a
/// store's lease, so a holder that died is replaced by one new holder, not by every waiter.
const LEASE_WAIT_LIMIT: Duration = Duration::from_secs(10);

/// The least time a request is started with: a call that could only be cut off before Daraja
/// answers is not made at all (for a push, a cut-off call would leave its outcome unknown).
pub const MIN_CALL_TIME: Duration = Duration::from_secs(2);

/// Everything the client needs, read once at start. `Debug` shows the secrets as
/// `<redacted>`, through their own `Debug`.
#[derive(Clone, Debug)]
pub struct DarajaConfig {
    /// `https://sandbox.safaricom.co.ke`, `https://api.safaricom.co.ke`, or a simulator.
    pub base_url: String,
    pub consumer_key: Secret,
    pub consumer_secret: Secret,
    pub passkey: Secret,
    /// `BusinessShortCode`: the paybill, or the store number for till payments.
    pub shortcode: ShortCode,
    pub kind: TransactionKind,
    pub connect_timeout: Duration,
    /// The whole request, connect included. Past it, a push's outcome is unknown.
    pub request_timeout: Duration,
}

impl DarajaConfig {
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
    pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

    /// A configuration with the default timeouts.
    pub fn new(
        base_url: impl Into<String>,
        shortcode: ShortCode,
        kind: TransactionKind,
        consumer_key: Secret,
        consumer_secret: Secret,
        passkey: Secret,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            consumer_key,
            consumer_secret,
            passkey,
            shortcode,
            kind,
            connect_timeout: Self::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: Self::DEFAULT_REQUEST_TIMEOUT,
        }
    }
}

/// A raw answer to an API call.
struct Answer {
    status: u16,
    body: Vec<u8>,
    error: Option<DarajaErrorBody>,
}

impl Answer {
    fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    fn error_code(&self) -> Option<&str> {
        self.error.as_ref().and_then(|e| e.error_code.as_deref())
    }
}

/// The client. Build one per process and share it.
pub struct DarajaClient {
    http: reqwest::Client,
    config: DarajaConfig,
    token_url: String,
    push_url: String,
    query_url: String,
    clock: Arc<dyn Clock>,
    tokens: Arc<dyn TokenStore>,
    cached: Mutex<Option<AccessToken>>,
    /// Held while refreshing, so concurrent callers that find the token stale fetch it once.
    refresh: tokio::sync::Mutex<()>,
    observer: Arc<dyn CallObserver>,
}

impl fmt::Debug for DarajaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DarajaClient")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl DarajaClient {
    /// Fails (as [`DarajaError::Unavailable`] with no HTTP status) only if `base_url` is not an
    /// http(s) URL or the TLS stack cannot start. Trusts `roots` (DER certificates) only: the
    /// caller reads the system's roots once per process and shares them with its other clients.
    pub fn new<R: AsRef<[u8]>>(
        config: DarajaConfig,
        clock: Arc<dyn Clock>,
        tokens: Arc<dyn TokenStore>,
        roots: impl IntoIterator<Item = R>,
    ) -> Result<Self, DarajaError> {
        let setup_error = |message: String| DarajaError::Unavailable {
            http_status: None,
            error_code: None,
            message,
        };
        // Trailing whitespace in a URL is a known cause of `400.008.02`.
        let base = config.base_url.trim().trim_end_matches('/').to_owned();
        match reqwest::Url::parse(&base) {
            Ok(url) if matches!(url.scheme(), "http" | "https") => {}
            _ => {
                return Err(setup_error(format!(
                    "invalid Daraja base_url {base:?}: expected http(s)://host[:port]"
                )))
            }
        }
        let roots = roots
            .into_iter()
            .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok());
        let http = reqwest::Client::builder()
            .tls_certs_only(roots)
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| setup_error(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            token_url: format!("{base}/oauth/v1/generate?grant_type=client_credentials"),
            push_url: format!("{base}/mpesa/stkpush/v1/processrequest"),
            query_url: format!("{base}/mpesa/stkpushquery/v1/query"),
            config,
            clock,
            tokens,
            cached: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            observer: Arc::new(Unobserved),
        })
    }

    /// Reports every HTTP call (endpoint and latency) to `observer`.
    #[must_use]
    pub fn observed_by(mut self, observer: Arc<dyn CallObserver>) -> Self {
        self.observer = observer;
        self
    }

    pub fn config(&self) -> &DarajaConfig {
        &self.config
    }

    /// The push body for `req`, with one timestamp used for both `Timestamp` and `Password`.
    pub fn push_body(&self, req: &PushRequest) -> StkPushRequest {
        let (timestamp, password) = self.credentials();
        let shortcode = &self.config.shortcode;
        StkPushRequest {
            business_short_code: shortcode.as_str().to_owned(),
            password,
            timestamp,
            transaction_type: self.config.kind.transaction_type().to_owned(),
            amount: req.charge.amount.get(),
            party_a: req.charge.phone.as_str().to_owned(),
            party_b: self.config.kind.party_b(shortcode).to_owned(),
            phone_number: req.charge.phone.as_str().to_owned(),
            callback_url: req.callback_url.clone(),
            account_reference: req.charge.reference.as_str().to_owned(),
            transaction_desc: req.charge.description.as_str().to_owned(),
        }
    }

    /// The query body for `checkout_request_id`.
    pub fn query_body(&self, checkout_request_id: &str) -> StkQueryRequest {
        let (timestamp, password) = self.credentials();
        StkQueryRequest {
            business_short_code: self.config.shortcode.as_str().to_owned(),
            password,
            timestamp,
            checkout_request_id: checkout_request_id.to_owned(),
        }
    }

    fn credentials(&self) -> (String, String) {
        let timestamp = daraja_timestamp(self.clock.now());
        let password = password(
            self.config.shortcode.as_str(),
            self.config.passkey.expose(),
            &timestamp,
        );
        (timestamp, password)
    }

    /// Sends the push. `Ok` means Daraja accepted it and will call back; nothing is paid yet.
    /// Sent at most once, except for one retry after `404.001.03` (the gateway refused the
    /// token, so the first attempt never reached M-Pesa). Every request ends by
    /// `req.deadline`; one that would have less than [`MIN_CALL_TIME`] is not sent.
    pub async fn stk_push(&self, req: &PushRequest) -> Result<StkPushResponse, DarajaError> {
        let body = self.push_body(req);
        let phone = req.charge.phone.masked();
        let answer = self
            .call(Endpoint::StkPush, &body, &phone, req.deadline)
            .await?;
        if !answer.is_success() {
            return Err(api_error(&answer));
        }
        let ack: StkPushResponse =
            serde_json::from_slice(&answer.body).map_err(|e| DarajaError::BadResponse {
                http_status: answer.status,
                detail: format!("push acknowledgement {}", describe_json_error(&e)),
            })?;
        if ack.response_code.is_empty() || ack.response_code == "0" {
            Ok(ack)
        } else {
            Err(DarajaError::Rejected {
                http_status: answer.status,
                error_code: Some(ack.response_code),
                error_message: ack.response_description,
                request_id: None,
            })
        }
    }

    /// Asks Daraja for the outcome of a push, by `by`. Use it when a callback is late or looks
    /// odd.
    pub async fn stk_query(
        &self,
        checkout_request_id: &str,
        by: Deadline,
    ) -> Result<QueryAnswer, DarajaError> {
        let body = self.query_body(checkout_request_id);
        let answer = self
            .call(Endpoint::StkQuery, &body, &mask_id(checkout_request_id), by)
            .await?;
        if !answer.is_success() {
            if is_still_processing(&answer) {
                return Ok(QueryAnswer::Processing);
            }
            return Err(api_error(&answer));
        }
        let parsed: StkQueryResponse =
            serde_json::from_slice(&answer.body).map_err(|e| DarajaError::BadResponse {
                http_status: answer.status,
                detail: format!("query answer {}", describe_json_error(&e)),
            })?;
        match parsed.result_code {
            Some(code) if code.category() == OutcomeCategory::Processing => {
                Ok(QueryAnswer::Processing)
            }
            Some(result_code) => Ok(QueryAnswer::Final {
                result_code,
                result_desc: parsed.result_desc.unwrap_or_default(),
                merchant_request_id: parsed.merchant_request_id.unwrap_or_default(),
            }),
            None => match parsed.response_code {
                Some(code) if code != "0" => Err(DarajaError::Rejected {
                    http_status: answer.status,
                    error_code: Some(code),
                    error_message: parsed.response_description.unwrap_or_default(),
                    request_id: None,
                }),
                _ => Err(DarajaError::BadResponse {
                    http_status: answer.status,
                    detail: "query answer without ResultCode".to_owned(),
                }),
            },
        }
    }

    /// One API call with a valid token, retried once with a new token on `404.001.03`, all of
    /// it over by `by`. The token is got while leaving the call itself [`MIN_CALL_TIME`].
    async fn call<B: Serialize + Sync>(
        &self,
        endpoint: Endpoint,
        body: &B,
        subject: &str,
        by: Deadline,
    ) -> Result<Answer, DarajaError> {
        let token = self.token(by.earlier_by(MIN_CALL_TIME)).await?;
        let answer = self.post(endpoint, &token, body, subject, by).await?;
        if answer.error_code() != Some(INVALID_TOKEN) {
            return Ok(answer);
        }
        self.forget(&token).await;
        let token = self.token(by.earlier_by(MIN_CALL_TIME)).await?;
        self.post(endpoint, &token, body, subject, by).await
    }

    async fn post<B: Serialize + Sync>(
        &self,
        endpoint: Endpoint,
        token: &AccessToken,
        body: &B,
        subject: &str,
        by: Deadline,
    ) -> Result<Answer, DarajaError> {
        let Some(timeout) = by.clip(self.config.request_timeout, MIN_CALL_TIME) else {
            tracing::warn!(
                endpoint = endpoint.name(),
                subject,
                left_ms = by.remaining().as_millis() as u64,
                "daraja call not sent: too little time left before the deadline"
            );
            return Err(out_of_time(endpoint.name()));
        };
        let url = match endpoint {
            Endpoint::StkPush => &self.push_url,
            Endpoint::StkQuery => &self.query_url,
            Endpoint::Oauth => &self.token_url,
        };
        let started = Instant::now();
        let sent = self
            .http
            .post(url)
            .bearer_auth(token.value.expose())
            .timeout(timeout)
            .json(body)
            .send()
            .await;
        let outcome = match sent {
            Ok(response) => {
                let status = response.status().as_u16();
                match response.bytes().await {
                    Ok(bytes) => Ok((status, bytes.to_vec())),
                    // The status arrived, so Daraja has the request; only the body was lost.
                    Err(_) => Err(DarajaError::TimedOut),
                }
            }
            Err(e) => Err(transport_error(&e)),
        };
        let latency = started.elapsed();
        self.observer.call_finished(endpoint, latency);
        let latency_ms = latency.as_millis() as u64;
        match outcome {
            Ok((status, body)) => {
                let error = if (200..300).contains(&status) {
                    None
                } else {
                    serde_json::from_slice::<DarajaErrorBody>(&body).ok()
                };
                let answer = Answer {
                    status,
                    body,
                    error,
                };
                let checkout = (answer.is_success())
                    .then(|| checkout_id(&answer.body))
                    .flatten();
                tracing::info!(
                    endpoint = endpoint.name(),
                    http_status = status,
                    latency_ms,
                    error_code = answer.error_code(),
                    subject,
                    checkout_request_id = checkout.as_deref().map(mask_id),
                    "daraja call"
                );
                Ok(answer)
            }
            Err(error) => {
                tracing::warn!(
                    endpoint = endpoint.name(),
                    latency_ms,
                    subject,
                    error = %error,
                    outcome_unknown = error.is_outcome_unknown(),
                    "daraja call failed"
                );
                Err(error)
            }
        }
    }
}

/// The trait's calls are the client's own `stk_push` and `stk_query`.
#[async_trait]
impl Daraja for DarajaClient {
    /// Makes sure a token is in hand (from memory, the shared store, or one fetch), by `by`.
    async fn prepare(&self, by: Deadline) -> Result<(), DarajaError> {
        self.token(by).await.map(drop)
    }

    async fn stk_push(&self, req: &PushRequest) -> Result<StkPushResponse, DarajaError> {
        DarajaClient::stk_push(self, req).await
    }

    async fn stk_query(
        &self,
        checkout_request_id: &str,
        by: Deadline,
    ) -> Result<QueryAnswer, DarajaError> {
        DarajaClient::stk_query(self, checkout_request_id, by).await
    }
}

/// A call not made for want of time: nothing was sent, so a retry is safe.
pub(crate) fn out_of_time(what: &str) -> DarajaError {
    DarajaError::Unavailable {
        http_status: None,
        error_code: None,
        message: format!("{what} not sent: too little time left before the function's deadline"),
    }
}

/// A request that never connected was not sent. Anything later may have reached Daraja.
fn transport_error(error: &reqwest::Error) -> DarajaError {
    if error.is_connect() || error.is_builder() {
        DarajaError::Unavailable {
            http_status: None,
            error_code: None,
            message: "cannot connect to Daraja".to_owned(),
        }
    } else {
        DarajaError::TimedOut
    }
}

fn is_still_processing(answer: &Answer) -> bool {
    answer.error_code() == Some(BUSINESS_ERROR)
        && answer
            .error
            .as_ref()
            .and_then(|e| e.error_message.as_deref())
            .is_some_and(|m| m.to_ascii_lowercase().contains("being processed"))
}

/// Maps a non-2xx API answer to its error.
fn api_error(answer: &Answer) -> DarajaError {
    let status = answer.status;
    let error = answer
        .error
        .as_ref()
        .filter(|e| e.error_code.is_some() || e.error_message.is_some());
    match (status, error) {
        (429, _) => DarajaError::RateLimited,
        // The gateway's own refusal (an HTML page, no Daraja error): the request went no
        // further, so nothing can have reached the phone.
        (401 | 403, None) => DarajaError::Unavailable {
            http_status: Some(status),
            error_code: None,
            message: format!(
                "the gateway refused the request (HTTP {status}) without a Daraja error"
            ),
        },
        (400..=499, Some(e)) => rejected(status, e),
        (500..=599, Some(e))
            if e.error_code
                .as_deref()
                .is_some_and(|c| c.starts_with("500.001.")) =>
        {
            rejected(status, e)
        }
        (500..=599, Some(e)) => DarajaError::Unavailable {
            http_status: Some(status),
            error_code: e.error_code.clone(),
            message: e.error_message.clone().unwrap_or_default(),
        },
        (500..=599, None) => DarajaError::Unavailable {
            http_status: Some(status),
            error_code: None,
            message: format!("HTTP {status} without a Daraja error body"),
        },
        _ => DarajaError::BadResponse {
            http_status: status,
            detail: format!("HTTP {status} without a Daraja error body"),
        },
    }
}

fn rejected(status: u16, error: &DarajaErrorBody) -> DarajaError {
    DarajaError::Rejected {
        http_status: status,
        error_code: error.error_code.clone(),
        error_message: error.error_message.clone().unwrap_or_default(),
        request_id: error.request_id.clone(),
    }
}

fn checkout_id(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Ids {
        #[serde(rename = "CheckoutRequestID")]
        checkout_request_id: Option<String>,
    }
    serde_json::from_slice::<Ids>(body)
        .ok()
        .and_then(|ids| ids.checkout_request_id)
}

/// Where and how JSON failed, without quoting any of it (it may hold IDs or phone numbers).
fn describe_json_error(error: &serde_json::Error) -> String {
    let kind = match error.classify() {
        serde_json::error::Category::Io => "could not be read",
        serde_json::error::Category::Syntax => "is not valid JSON",
        serde_json::error::Category::Data => "lacks expected fields",
        serde_json::error::Category::Eof => "is truncated",
    };
    format!("{kind} (line {}, column {})", error.line(), error.column())
}

mod tokens;

#[cfg(test)]
mod tests;
