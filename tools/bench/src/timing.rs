//! The functions' own `invocation` lines (`app::timing`): where each invocation's time went
//! (its total, its DynamoDB and Daraja requests, and the rest, its own part), read back from
//! the local stack's logs.

use std::time::Duration;

use serde_json::Value;

use crate::stats::{Ms, Samples};

/// The `invocation` lines of the function `binary` among `lines` (the stack's log lines,
/// `[<binary>…] <json>`): each line's fields.
pub fn invocations(lines: &[String], binary: &str) -> Vec<Value> {
    let prefix = format!("[{binary}");
    lines
        .iter()
        .filter(|l| l.starts_with(&prefix))
        .filter_map(|l| serde_json::from_str::<Value>(l.split_once("] ")?.1).ok())
        .filter_map(|event| event.get("fields").cloned())
        .filter(|fields| fields["message"] == "invocation")
        .collect()
}

/// The `name` field (milliseconds) of every line.
pub fn millis(fields: &[Value], name: &str) -> Samples {
    Samples::new(
        fields
            .iter()
            .filter_map(|f| f[name].as_f64())
            .map(|ms| Duration::from_secs_f64(ms / 1000.0))
            .collect(),
    )
}

/// The header of [`row`]'s table, after a first column named `first`.
pub fn header(first: &str) -> String {
    format!(
        "| {first} | n | total p50 | total p99 | own p50 | own p99 | DynamoDB p50 | DynamoDB p99 | DynamoDB requests each | Daraja p50 | Daraja p99 | Daraja requests each |\n|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
}

/// One row of the breakdown of `fields` (invocation lines), labelled `label`.
pub fn row(label: &str, fields: &[Value]) -> String {
    let per = |name: &str| {
        fields.iter().filter_map(|f| f[name].as_f64()).sum::<f64>() / fields.len().max(1) as f64
    };
    let cell = |name: &str| {
        let samples = millis(fields, name);
        format!(
            "{} | {}",
            Ms(samples.median()),
            Ms(samples.percentile(99.0))
        )
    };
    format!(
        "| {label} | {} | {} | {} | {} | {:.2} | {} | {:.2} |",
        fields.len(),
        cell("total_ms"),
        cell("own_ms"),
        cell("dynamodb_ms"),
        per("dynamodb_requests"),
        cell("daraja_ms"),
        per("daraja_requests"),
    )
}
