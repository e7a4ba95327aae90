//! CloudWatch metrics in the Embedded Metric Format: one JSON line on stdout per decision, turned
//! into metrics by CloudWatch Logs, so recording a metric costs no API call and no latency.
//!
//! Every metric lives in the namespace [`NAMESPACE`] with the dimension `Function`. A metric with
//! one more dimension (`ErrorCode`, `Outcome`, `Reason`, `Endpoint`) is published under both
//! dimension sets, `[Function]` and `[Function, <extra>]`, so an alarm can watch the total without
//! metric math over every code. The names are the stable contract the template's alarms and the
//! README's "Operating it" section rely on.
//!
//! Each line is written whole, under the stdout lock, as is every log line of the default
//! tracing subscriber, so metric lines and log lines never interleave.

use std::io::Write;

use serde_json::{json, Map, Value};

use daraja::DarajaError;
use payments::payment::PaymentStatus;

pub const NAMESPACE: &str = "MpesaExpress";

/// What the functions count. The `as_str` names are what CloudWatch shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// `POST /payments` answered 202.
    PushAccepted,
    /// `POST /payments` refused; dimension `ErrorCode` is the API error code.
    PushRejected,
    /// A push whose outcome could not be recorded (Daraja accepted it or may have, and the store
    /// failed until the function's deadline), or a key found unsettled past its deadline.
    PushInDoubt,
    /// A push in doubt found by the result Safaricom sent for it, and linked to it.
    PushInDoubtLinked,
    /// A callback with a valid token reached the function.
    CallbackReceived,
    /// A callback refused before it was read; dimension `Reason`: `source` (outside
    /// `CALLBACK_ALLOWED_IPS`) or `token` (a wrong or missing path token).
    CallbackRefused,
    /// A callback with a valid token from a source outside `CALLBACK_ALLOWED_IPS`, accepted
    /// because `CALLBACK_SOURCE_MODE` is `report`: Safaricom has an address the list lacks, or
    /// someone holds a real callback URL.
    CallbackUnlistedSource,
    /// A success callback held until an STK query confirms it (`CALLBACK_CONFIRM`).
    CallbackHeld,
    /// A held success the STK query did not confirm: the payment needs review.
    CallbackUnconfirmed,
    /// A callback whose result could not be stored: answered 503, and Safaricom does not
    /// resend it. The `store_failed` log line holds the result to replay.
    CallbackStoreFailed,
    /// A callback repeating a result already applied.
    CallbackDuplicate,
    /// A callback contradicting a final result (kept in the record's history).
    CallbackConflict,
    /// A result for a payment with no pending record, or a body that is not a callback;
    /// dimension `Reason`: `unknown_payment`, `invalid_json`, `invalid_callback`.
    CallbackOrphan,
    /// A payment became COMPLETED.
    PaymentCompleted,
    /// A payment became FAILED; dimension `Outcome` is the category (cancelled, wrong_pin, …).
    PaymentFailed,
    /// A payment became NEEDS_REVIEW (amount paid differs from the amount asked).
    PaymentNeedsReview,
    /// A payment became EXPIRED: no result within the maximum age.
    PaymentExpired,
    /// Milliseconds one Daraja HTTP call took; dimension `Endpoint`: `oauth`, `stk_push`, `stk_query`.
    DarajaLatency,
    /// A push or query that Daraja did not answer usefully; dimension `ErrorCode`: Daraja's
    /// `errorCode`, else the kind of failure (see [`DarajaError::metric_code`]).
    DarajaError,
    /// An STK Query sent by reconciliation.
    ReconciliationQuery,
    /// Milliseconds one DynamoDB operation took, retries included; dimension `Operation`
    /// (`GetItem`, `UpdateItem`, `TransactWriteItems`, …).
    DynamoDbLatency,
    /// A payment event published to the event bus (and queued for the webhook, when one is set).
    EventPublished,
    /// A stream record of a payment whose image does not decode: reported as failed, so
    /// Lambda's retries, bisection and on-failure destination take it out of the stream.
    EventUndecodable,
    /// A webhook the merchant's endpoint answered with a 2xx.
    WebhookDelivered,
    /// A webhook attempt that failed (non-2xx, timeout, refused); retried with back-off.
    WebhookFailed,
    /// A webhook whose last attempt failed: the queue parks it in the dead-letter queue.
    WebhookParked,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::PushAccepted => "PushAccepted",
            Metric::PushRejected => "PushRejected",
            Metric::PushInDoubt => "PushInDoubt",
            Metric::PushInDoubtLinked => "PushInDoubtLinked",
            Metric::CallbackReceived => "CallbackReceived",
            Metric::CallbackRefused => "CallbackRefused",
            Metric::CallbackUnlistedSource => "CallbackUnlistedSource",
            Metric::CallbackHeld => "CallbackHeld",
            Metric::CallbackUnconfirmed => "CallbackUnconfirmed",
            Metric::CallbackStoreFailed => "CallbackStoreFailed",
            Metric::CallbackDuplicate => "CallbackDuplicate",
            Metric::CallbackConflict => "CallbackConflict",
            Metric::CallbackOrphan => "CallbackOrphan",
            Metric::PaymentCompleted => "PaymentCompleted",
            Metric::PaymentFailed => "PaymentFailed",
            Metric::PaymentNeedsReview => "PaymentNeedsReview",
            Metric::PaymentExpired => "PaymentExpired",
            Metric::DarajaLatency => "DarajaLatency",
            Metric::DynamoDbLatency => "DynamoDbLatency",
            Metric::DarajaError => "DarajaError",
            Metric::ReconciliationQuery => "ReconciliationQuery",
            Metric::EventPublished => "EventPublished",
            Metric::EventUndecodable => "EventUndecodable",
            Metric::WebhookDelivered => "WebhookDelivered",
            Metric::WebhookFailed => "WebhookFailed",
            Metric::WebhookParked => "WebhookParked",
        }
    }

    fn unit(self) -> &'static str {
        match self {
            Metric::DarajaLatency | Metric::DynamoDbLatency => "Milliseconds",
            _ => "Count",
        }
    }
}

/// The function's name as the `Function` dimension: Lambda's own name in AWS, the binary's
/// name elsewhere.
fn function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| {
        std::env::args()
            .next()
            .and_then(|p| p.rsplit('/').next().map(str::to_string))
            .unwrap_or_else(|| "unknown".to_string())
    })
}

/// The `level` a metric line carries: the function's application log level (Lambda passes the
/// template's `ApplicationLogLevel` as `AWS_LAMBDA_LOG_LEVEL`), at least `INFO`. Lambda's
/// log-level filtering drops JSON lines below that level, and counts a line without a `level`
/// (or without a valid `timestamp`) as `INFO`: at `WARN` or `ERROR` every metric, and so every
/// alarm on one, would be silenced.
pub fn line_level(configured: Option<&str>) -> &'static str {
    match configured.map(str::to_ascii_uppercase).as_deref() {
        Some("WARN") => "WARN",
        Some("ERROR") => "ERROR",
        Some("FATAL") => "FATAL",
        _ => "INFO",
    }
}

/// Lambda's documented rule for a JSON application log line under `ApplicationLogLevel`
/// `configured`: kept when its `level` is at least the configured one, a line without a valid
/// `level` or an RFC 3339 `timestamp` counting as `INFO`. The metric lines are built to pass it
/// (the tests check them with it).
pub fn lambda_keeps(line: &Value, configured: &str) -> bool {
    const ORDER: [&str; 6] = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"];
    let rank = |l: &str| ORDER.iter().position(|o| o.eq_ignore_ascii_case(l));
    let stamped = line["timestamp"]
        .as_str()
        .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok());
    let level = line["level"]
        .as_str()
        .and_then(rank)
        .filter(|_| stamped)
        .unwrap_or(2);
    level >= rank(configured).unwrap_or(2)
}

fn configured_level() -> &'static str {
    static LEVEL: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();
    LEVEL.get_or_init(|| line_level(std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref()))
}

/// Builds the EMF document for one value of `metric`, with an optional extra dimension, at
/// `level` (see [`line_level`]) with an RFC 3339 `timestamp` Lambda's filter reads.
pub fn document(
    metric: Metric,
    value: f64,
    dimension: Option<(&str, &str)>,
    function: &str,
    timestamp_ms: i64,
    level: &str,
) -> Value {
    let mut dimension_sets = vec![vec!["Function"]];
    let mut root = Map::new();
    root.insert("level".into(), json!(level));
    let timestamp = chrono::DateTime::from_timestamp_millis(timestamp_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    root.insert("timestamp".into(), json!(timestamp));
    root.insert("Function".into(), json!(function));
    if let Some((name, dim_value)) = dimension {
        dimension_sets.push(vec!["Function", name]);
        root.insert(name.into(), json!(dim_value));
    }
    root.insert(metric.as_str().into(), json!(value));
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimension_sets,
                "Metrics": [{ "Name": metric.as_str(), "Unit": metric.unit() }],
            }],
        }),
    );
    Value::Object(root)
}

/// Writes one metric line to stdout. A failed write is ignored: a metric is never worth
/// failing a payment for.
pub fn emit(metric: Metric, value: f64, dimension: Option<(&str, &str)>) {
    let line = document(
        metric,
        value,
        dimension,
        &function_name(),
        chrono::Utc::now().timestamp_millis(),
        configured_level(),
    );
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Counts one occurrence.
pub fn count(metric: Metric) {
    emit(metric, 1.0, None);
}

/// Counts one occurrence under an extra dimension (`ErrorCode`, `Outcome`).
pub fn count_by(metric: Metric, dimension: &str, value: &str) {
    emit(metric, 1.0, Some((dimension, value)));
}

/// Counts a payment that reached a final state (by callback or query), by its new status.
/// `outcome` is the result's category (`cancelled`, `wrong_pin`, …).
pub fn payment_final(status: PaymentStatus, outcome: &str) {
    match status {
        PaymentStatus::Completed => count(Metric::PaymentCompleted),
        PaymentStatus::Failed => count_by(Metric::PaymentFailed, "Outcome", outcome),
        PaymentStatus::NeedsReview => count(Metric::PaymentNeedsReview),
        PaymentStatus::Expired => count(Metric::PaymentExpired),
        PaymentStatus::Pending => {}
    }
}

/// Counts one failed Daraja push or query.
pub fn daraja_error(error: &DarajaError) {
    count_by(Metric::DarajaError, "ErrorCode", error.metric_code());
}

/// Records how long each Daraja HTTP call took, as told by the client.
#[derive(Debug, Clone, Copy, Default)]
pub struct DarajaCalls;

impl daraja::CallObserver for DarajaCalls {
    fn call_finished(&self, endpoint: daraja::Endpoint, latency: std::time::Duration) {
        crate::timing::daraja_request(latency);
        emit(
            Metric::DarajaLatency,
            latency.as_millis() as f64,
            Some(("Endpoint", endpoint.name())),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_is_valid_embedded_metric_format() {
        let doc = document(
            Metric::PushRejected,
            1.0,
            Some(("ErrorCode", "invalid_phone")),
            "stk-push",
            1_795_770_000_000,
            "INFO",
        );
        let directive = &doc["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(doc["_aws"]["Timestamp"], 1_795_770_000_000_i64);
        assert_eq!(directive["Namespace"], NAMESPACE);
        assert_eq!(
            directive["Dimensions"],
            json!([["Function"], ["Function", "ErrorCode"]])
        );
        assert_eq!(
            directive["Metrics"],
            json!([{"Name": "PushRejected", "Unit": "Count"}])
        );
        // Every dimension and metric named in the directive is a member of the root.
        assert_eq!(doc["Function"], "stk-push");
        assert_eq!(doc["ErrorCode"], "invalid_phone");
        assert_eq!(doc["PushRejected"], 1.0);
    }

    #[test]
    fn latency_is_in_milliseconds() {
        let doc = document(Metric::DarajaLatency, 12.5, None, "stk-push", 0, "INFO");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Metrics"][0]["Unit"],
            "Milliseconds"
        );
        assert_eq!(doc["DarajaLatency"], 12.5);
    }

    #[test]
    fn metric_without_extra_dimension_has_one_dimension_set() {
        let doc = document(Metric::CallbackOrphan, 1.0, None, "stk-callback", 0, "INFO");
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Function"]])
        );
    }

    #[test]
    fn metric_lines_pass_lambda_s_level_filter_at_every_level() {
        for configured in ["TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"] {
            let doc = document(
                Metric::PushInDoubt,
                1.0,
                None,
                "stk-push",
                1_795_770_000_000,
                line_level(Some(configured)),
            );
            assert!(lambda_keeps(&doc, configured), "{configured}: {doc}");
            // Never louder than it must be.
            assert_eq!(
                doc["level"],
                match configured {
                    "TRACE" | "DEBUG" | "INFO" => "INFO",
                    other => other,
                }
            );
        }
        assert_eq!(line_level(None), "INFO");
        assert_eq!(line_level(Some("error")), "ERROR");
        let doc = document(
            Metric::PushInDoubt,
            1.0,
            None,
            "stk-push",
            1_795_770_000_000,
            "INFO",
        );
        assert_eq!(doc["timestamp"], "2026-11-27T09:00:00.000Z");
        // A line as before (no level): dropped at WARN and above.
        let mut bare = doc.clone();
        bare.as_object_mut().unwrap().remove("level");
        assert!(!lambda_keeps(&bare, "ERROR"));
    }

    #[test]
    fn daraja_error_code_prefers_darajas_code_then_the_kind() {
        let refused = DarajaError::Rejected {
            http_status: 400,
            error_code: Some("400.002.02".into()),
            error_message: "Invalid PhoneNumber".into(),
            request_id: None,
        };
        assert_eq!(refused.metric_code(), "400.002.02");
        assert_eq!(DarajaError::TimedOut.metric_code(), "timed_out");
        assert_eq!(DarajaError::RateLimited.metric_code(), "rate_limited");
    }
}
