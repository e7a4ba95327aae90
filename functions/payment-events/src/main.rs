//! The table's change stream (DynamoDB Streams) → one event per change of a payment's status,
//! on the event bus (EventBridge) and, when a webhook is set, queued for it (SQS FIFO, one
//! message group per payment, so a payment's webhooks go out in order).
//!
//! Lambda's stream event source calls this with batches of records in order per item; a record
//! that fails is reported (`batchItemFailures`), and the source retries from it, bisecting a
//! failing batch, then hands a record that still fails to its on-failure destination.

mod handler;
mod sinks;

use std::sync::Arc;

use app::config::{ProcessEnv, Vars};
use lambda_runtime::{run, service_fn, Error};

use handler::Deps;
use sinks::{EventBridgeBus, FailedQueue, WebhookQueue};

#[tokio::main]
async fn main() -> Result<(), Error> {
    app::logging::init();
    let bus_name = ProcessEnv
        .var("EVENT_BUS_NAME")
        .ok_or("missing configuration: EVENT_BUS_NAME")?;
    let failed_queue = ProcessEnv
        .var("EVENTS_FAILED_QUEUE_URL")
        .ok_or("missing configuration: EVENTS_FAILED_QUEUE_URL")?;
    let aws = app::aws::sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&aws);
    let deps = Deps {
        bus: Arc::new(EventBridgeBus::new(
            aws_sdk_eventbridge::Client::new(&aws),
            bus_name,
        )),
        webhooks: ProcessEnv
            .var("WEBHOOK_QUEUE_URL")
            .map(|url| Arc::new(WebhookQueue::new(sqs.clone(), url)) as _),
        quarantine: Arc::new(FailedQueue::new(sqs, failed_queue)),
    };
    run(service_fn(|event| {
        app::timing::timed(handler::handle(&deps, event))
    }))
    .await
}
