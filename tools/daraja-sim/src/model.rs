//! The simulator's public vocabulary: configuration, scripted outcomes, faults and the
//! records it keeps. Every type here also travels as JSON over the `/sim/…` control API.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The public sandbox shortcode (a paybill).
pub const SANDBOX_SHORTCODE: &str = "174379";
/// The public sandbox passkey, published by Safaricom.
pub const SANDBOX_PASSKEY: &str =
    "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919";

/// How the simulator behaves. `Default` is the public sandbox.
#[derive(Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    pub shortcode: String,
    pub passkey: String,
    /// `None` accepts any non-empty key (and likewise for the secret).
    pub consumer_key: Option<String>,
    pub consumer_secret: Option<String>,
    #[serde(with = "duration_ms")]
    pub token_ttl: Duration,
    /// Each new token makes every earlier one invalid (what Daraja's FAQ claims).
    pub invalidate_previous_tokens: bool,
    /// How long the simulated customer takes to answer the prompt.
    #[serde(with = "duration_ms")]
    pub callback_delay: Duration,
    /// How far a request's `Timestamp` (read as Nairobi time) may be from the simulator's
    /// clock, either way. 5 minutes by default: enough for clock drift, while a timestamp
    /// computed in UTC instead of EAT (3 hours off) is rejected as Daraja rejects it.
    #[serde(with = "duration_ms")]
    pub timestamp_max_skew: Duration,
    /// STK queries allowed per sliding minute; `None` is unlimited (the sandbox allows ~5).
    pub query_rate_limit_per_minute: Option<u32>,
    /// What happens to a push when nothing has been scripted for it.
    pub default_outcome: Outcome,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            shortcode: SANDBOX_SHORTCODE.to_owned(),
            passkey: SANDBOX_PASSKEY.to_owned(),
            consumer_key: None,
            consumer_secret: None,
            token_ttl: Duration::from_secs(3599),
            invalidate_previous_tokens: false,
            callback_delay: Duration::from_millis(300),
            timestamp_max_skew: Duration::from_secs(300),
            query_rate_limit_per_minute: None,
            default_outcome: Outcome::success(),
        }
    }
}

// Secrets stay out of Debug output so a stray `{:?}` can never log them.
impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("SimConfig")
            .field("shortcode", &self.shortcode)
            .field("passkey", &"<redacted>")
            .field("consumer_key", &redact(&self.consumer_key))
            .field("consumer_secret", &redact(&self.consumer_secret))
            .field("token_ttl", &self.token_ttl)
            .field(
                "invalidate_previous_tokens",
                &self.invalidate_previous_tokens,
            )
            .field("callback_delay", &self.callback_delay)
            .field("timestamp_max_skew", &self.timestamp_max_skew)
            .field(
                "query_rate_limit_per_minute",
                &self.query_rate_limit_per_minute,
            )
            .field("default_outcome", &self.default_outcome)
            .finish()
    }
}

/// What the simulated customer and M-Pesa do with one push.
///
/// JSON form: every field is optional, so `{}` is a success and
/// `{"result_code":1032,"delivery":"lost"}` a cancellation whose callback never arrives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Outcome {
    /// A number (`0`, `1032`) or a string (`"SFC_IC0003"`), sent as given in the callback.
    pub result_code: Value,
    /// Defaults to Daraja's text for the code.
    pub result_desc: Option<String>,
    pub delivery: Delivery,
    pub quirks: Vec<Quirk>,
    /// Replaces the `Amount` item's value (the pushed amount by default).
    pub amount_paid: Option<Value>,
    /// Replaces [`SimConfig::callback_delay`] for this push.
    #[serde(with = "opt_duration_ms")]
    pub delay: Option<Duration>,
    /// The first query after the prompt closes answers `ResultCode "4999"`.
    pub transient_4999: bool,
    /// Queries answer "The transaction is being processed" forever.
    pub never_final: bool,
}

impl Default for Outcome {
    fn default() -> Self {
        Self::success()
    }
}

impl Outcome {
    pub fn success() -> Self {
        Self::result(Value::from(0))
    }

    /// A numeric result code, e.g. `Outcome::code(1032)`.
    pub fn code(code: i64) -> Self {
        Self::result(Value::from(code))
    }

    /// Any result code, e.g. `Outcome::result(json!("SFC_IC0003"))`.
    pub fn result(code: Value) -> Self {
        Self {
            result_code: code,
            result_desc: None,
            delivery: Delivery::Normal,
            quirks: Vec::new(),
            amount_paid: None,
            delay: None,
            transient_4999: false,
            never_final: false,
        }
    }

    pub fn desc(mut self, desc: impl Into<String>) -> Self {
        self.result_desc = Some(desc.into());
        self
    }

    pub fn lost(mut self) -> Self {
        self.delivery = Delivery::Lost;
        self
    }

    /// The callback is delivered `times` times in all (2 = one duplicate).
    pub fn duplicated(mut self, times: u32, concurrent: bool) -> Self {
        self.delivery = Delivery::Duplicate { times, concurrent };
        self
    }

    pub fn before_response(mut self) -> Self {
        self.delivery = Delivery::BeforeResponse;
        self
    }

    /// The prompt closes on time but the callback arrives `by` later.
    pub fn late(mut self, by: Duration) -> Self {
        self.delivery = Delivery::Late(by);
        self
    }

    pub fn with_quirk(mut self, quirk: Quirk) -> Self {
        self.quirks.push(quirk);
        self
    }

    pub fn amount_paid(mut self, value: Value) -> Self {
        self.amount_paid = Some(value);
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }

    pub fn transient_4999(mut self) -> Self {
        self.transient_4999 = true;
        self
    }

    pub fn never_final(mut self) -> Self {
        self.never_final = true;
        self
    }

    /// True when this outcome is a payment (result code `0` or `"0"`).
    pub fn is_success(&self) -> bool {
        is_success_code(&self.result_code)
    }

    /// The `ResultDesc` the callback and the query carry.
    pub fn effective_desc(&self) -> String {
        self.result_desc
            .clone()
            .unwrap_or_else(|| result_desc_for(&self.result_code).to_owned())
    }
}

pub(crate) fn is_success_code(code: &Value) -> bool {
    match code {
        Value::Number(n) => n.as_i64() == Some(0),
        Value::String(s) => s == "0",
        _ => false,
    }
}

/// Daraja's description for a result code (callback and query).
pub fn result_desc_for(code: &Value) -> &'static str {
    let key = match code {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    match key.as_str() {
        "0" => "The service request is processed successfully.",
        "1" => "The balance is insufficient for the transaction.",
        "2" => "Declined due to limit rule: less than the minimum transaction amount.",
        "3" => "Declined due to limit rule: greater than the maximum transaction amount.",
        "4" => "Declined due to limit rule: would exceed daily transfer limit.",
        "8" => "Declined due to limit rule: would exceed the maximum balance.",
        "17" => "Rule limited.",
        "26" => "System busy. The service request is rejected.",
        "1001" => "Unable to lock subscriber, a transaction is already in process for the current subscriber",
        "1019" => "Transaction has expired",
        "1025" | "9999" => "An error occurred while sending a push request",
        "1032" => "Request cancelled by user",
        "1037" => "DS timeout user cannot be reached",
        "2001" => "The initiator information is invalid.",
        "2028" => "The request is not permitted according to product assignment",
        "4999" => "The transaction is still under processing",
        "8006" => "The security credential is locked",
        "SFC_IC0003" => "The operator does not exist",
        _ => "Unknown result code",
    }
}

/// How the callback reaches the merchant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    /// Once, after the delay.
    #[default]
    Normal,
    /// Never (the query still learns the outcome).
    Lost,
    /// Delivered, and its answer awaited, before the push's HTTP answer is sent.
    BeforeResponse,
    /// The prompt closes after the delay; the callback arrives this much later (JSON: milliseconds).
    Late(#[serde(with = "duration_ms")] Duration),
    /// Delivered `times` times in all, one after another or all at once.
    Duplicate { times: u32, concurrent: bool },
}

/// A deviation in the callback's shape that Daraja has been seen to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Quirk {
    /// `{"Name":"Amount","Value":"100"}`
    AmountAsString,
    /// `{"Name":"Amount","Value":100.0}`
    AmountAsFloat,
    /// `{"Name":"Balance"}`
    BalanceWithoutValue,
    /// `"ResultCode":"0"`
    ResultCodeAsString,
    /// `{"Name":"PhoneNumber","Value":"254708***149"}`
    PhoneMasked,
    /// No `PhoneNumber` item.
    PhoneMissing,
    /// A success without `CallbackMetadata`.
    NoMetadata,
}

/// A Daraja endpoint the simulator serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    #[serde(rename = "oauth")]
    OAuth,
    StkPush,
    StkQuery,
}

/// A failure injected in place of an endpoint's normal answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Any Daraja error body with this HTTP status.
    Status {
        http: u16,
        error_code: String,
        error_message: String,
    },
    /// HTTP 500 `500.003.02` "System is busy. Spike arrest violation".
    SpikeArrest,
    /// HTTP 500 `500.003.1001` "Internal Server Error".
    InternalError,
    /// HTTP 200 with a body that is not JSON.
    Garbage,
    /// Never answers: the client must time out.
    Hang,
    /// HTTP 429 with Apigee's quota-violation body.
    RateLimited,
}

/// Requests received per endpoint, and callbacks attempted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub oauth: u64,
    pub stk_push: u64,
    pub stk_query: u64,
    /// Every callback POST attempted (duplicates included, lost ones not).
    pub callbacks_sent: u64,
    /// Those of `callbacks_sent` that got no answer or a non-2xx one.
    pub callbacks_failed: u64,
}

/// One request to a Daraja endpoint, as answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedRequest {
    pub endpoint: Endpoint,
    pub received_at: DateTime<Utc>,
    /// The HTTP status answered; `None` while a hung request is still unanswered.
    pub status: Option<u16>,
    /// The JSON body received (`null` for OAuth or a body that was not JSON).
    pub body: Value,
    /// The JSON body answered (`null` when not JSON).
    pub response: Value,
}

/// One callback POST made to a merchant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SentCallback {
    pub checkout_request_id: String,
    pub url: String,
    pub body: Value,
    /// `None` when the POST got no HTTP answer (refused, timed out).
    pub status: Option<u16>,
    pub sent_at: DateTime<Utc>,
}

/// Durations as whole milliseconds in JSON.
pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

pub(crate) mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => super::duration_ms::serialize(d, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|o| o.map(Duration::from_millis))
    }
}
