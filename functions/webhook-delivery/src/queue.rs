//! What the delivery function asks of its queues: a failed webhook's next try, and parking one
//! that failed for the whole retry period in the dead-letter queue.

use std::time::Duration;

use async_trait::async_trait;

use crate::handler::QueuedWebhook;

#[async_trait]
pub trait WebhookQueues: Send + Sync {
    /// Keeps the message invisible for `delay`: its next attempt.
    async fn retry_after(&self, webhook: &QueuedWebhook, delay: Duration) -> Result<(), String>;
    /// Copies the message into the dead-letter queue (same body, same message group).
    async fn park(&self, webhook: &QueuedWebhook) -> Result<(), String>;
}

pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    dead_letter_queue_url: String,
}

impl SqsQueue {
    pub fn new(
        client: aws_sdk_sqs::Client,
        queue_url: String,
        dead_letter_queue_url: String,
    ) -> Self {
        Self {
            client,
            queue_url,
            dead_letter_queue_url,
        }
    }
}

fn error_text<E: std::error::Error + 'static, R: std::fmt::Debug>(
    e: aws_sdk_sqs::error::SdkError<E, R>,
) -> String {
    aws_sdk_sqs::error::DisplayErrorContext(e).to_string()
}

#[async_trait]
impl WebhookQueues for SqsQueue {
    async fn retry_after(&self, webhook: &QueuedWebhook, delay: Duration) -> Result<(), String> {
        self.client
            .change_message_visibility()
            .queue_url(&self.queue_url)
            .receipt_handle(&webhook.receipt_handle)
            .visibility_timeout(i32::try_from(delay.as_secs()).unwrap_or(43_200))
            .send()
            .await
            .map(|_| ())
            .map_err(error_text)
    }

    async fn park(&self, webhook: &QueuedWebhook) -> Result<(), String> {
        self.client
            .send_message()
            .queue_url(&self.dead_letter_queue_url)
            .message_body(&webhook.body)
            .message_group_id(&webhook.group)
            .message_deduplication_id(&webhook.message_id)
            .send()
            .await
            .map(|_| ())
            .map_err(error_text)
    }
}
