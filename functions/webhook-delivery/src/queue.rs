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
    /// Moves up to `max` parked webhooks back onto the queue, oldest first; answers how many.
    async fn replay(&self, max: usize) -> Result<usize, String>;
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

    async fn replay(&self, max: usize) -> Result<usize, String> {
        let mut moved = 0;
        while moved < max {
            let answer = self
                .client
                .receive_message()
                .queue_url(&self.dead_letter_queue_url)
                .max_number_of_messages(10.min(max - moved) as i32)
                .message_system_attribute_names(aws_sdk_sqs::types::MessageSystemAttributeName::All)
                .send()
                .await
                .map_err(error_text)?;
            if answer.messages().is_empty() {
                break;
            }
            for message in answer.messages() {
                let group = message
                    .attributes()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::MessageGroupId)
                    })
                    .cloned()
                    .unwrap_or_else(|| "replayed".to_string());
                let id = message.message_id().unwrap_or_default();
                // A new deduplication id: the original one may still be in SQS's window.
                let dedup = format!("{id}-replay-{}", chrono::Utc::now().timestamp_millis());
                self.client
                    .send_message()
                    .queue_url(&self.queue_url)
                    .message_body(message.body().unwrap_or_default())
                    .message_group_id(group)
                    .message_deduplication_id(dedup)
                    .send()
                    .await
                    .map_err(error_text)?;
                // Deleted only once it is back on the queue: a failure between the two sends
                // it twice (the receiver drops a repeated id), never loses it.
                self.client
                    .delete_message()
                    .queue_url(&self.dead_letter_queue_url)
                    .receipt_handle(message.receipt_handle().unwrap_or_default())
                    .send()
                    .await
                    .map_err(error_text)?;
                moved += 1;
            }
        }
        Ok(moved)
    }
}
