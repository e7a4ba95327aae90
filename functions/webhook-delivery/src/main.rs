//! The webhook queue (SQS FIFO, one message group per payment) → one signed POST per event to
//! the merchant's `WEBHOOK_URL`.
//!
//! A failed attempt (non-2xx, timeout, refused) is retried by the queue itself: the message is
//! made invisible for a growing back-off (`WEBHOOK_BACKOFF_BASE_SECONDS`, doubled per attempt, at
//! most `WEBHOOK_BACKOFF_CAP_SECONDS`) and reported failed, so Lambda leaves it on the queue. Its
//! payment's later events wait behind it (FIFO order per payment); other payments' do not. One
//! still failing `WEBHOOK_RETRY_FOR_SECONDS` after it was queued is parked in the dead-letter
//! queue, whose alarm tells the operator, and the README's replay command sends it back.

mod config;
mod handler;
mod queue;

use std::sync::Arc;

use app::config::ProcessEnv;
use app::webhook::Delivery;
use lambda_runtime::{run, service_fn, Error};

use handler::Deps;

#[tokio::main]
async fn main() -> Result<(), Error> {
    app::logging::init();
    let aws = app::aws::sdk_config().await;
    let config = config::DeliveryConfig::load(&ProcessEnv)?;
    let secrets = config::SecretCache::new(config.secret, aws.clone());
    secrets.get().await?;
    let deps = Deps {
        delivery: Delivery::new(config.settings)?,
        secrets,
        queue: Arc::new(queue::SqsQueue::new(
            aws_sdk_sqs::Client::new(&aws),
            config.queue_url,
            config.dead_letter_queue_url,
        )),
        retry_for: config.retry_for,
    };
    run(service_fn(|event| {
        app::timing::timed(handler::handle(&deps, event))
    }))
    .await
}
