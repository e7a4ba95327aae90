//! Answers every invocation with an HTTP API (payload 2.0) response whose body is the received
//! event, serialised as JSON: whatever gateway sits in front shows exactly what it sent.
//! The event is taken as raw JSON, not as a typed request, so nothing is lost or defaulted.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};

async fn echo(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(json!({
        "statusCode": 200,
        "headers": { "content-type": "application/json" },
        "body": event.payload.to_string(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    run(service_fn(echo)).await
}
