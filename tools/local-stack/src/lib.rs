//! The whole system on loopback, for the demo and the integration tests: a DynamoDB emulator
//! (moto) with the table from `template.yaml`, the Daraja simulator, the four functions under
//! the AWS Lambda Runtime Interface Emulator, and an API Gateway (HTTP API) stand-in in front.
//!
//! ```no_run
//! # async fn demo() -> Result<(), local_stack::Error> {
//! use local_stack::{LocalStack, StackOptions};
//! let stack = LocalStack::start(StackOptions::default()).await?;
//! let url = format!("{}/payments", stack.api_url());
//! // POST to `url`, script `stack.sim()`, read `stack.dynamo()` …
//! stack.shutdown().await;
//! # Ok(()) }
//! ```

pub mod compare;
pub mod dynamo;
pub mod events;
pub mod gateway;
pub mod pipeline;
pub mod process;
pub mod rie;
pub mod sam;
mod stack;
pub mod template;

use std::fmt;

pub use pipeline::{EventsOptions, WebhookOptions};
pub use stack::{env_vars, Error, LocalStack, Profile, StackOptions};

/// The project's functions, by binary name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Function {
    StkPush,
    StkCallback,
    PaymentStatus,
    /// Scheduled, not routed: run it with [`LocalStack::invoke`] and any JSON event.
    Reconcile,
    /// The table's stream consumer: fed by the stack's stream poller (events enabled).
    PaymentEvents,
    /// The webhook queue's consumer: fed by the stack's SQS poller (a webhook set).
    WebhookDelivery,
}

impl Function {
    pub const ALL: [Function; 6] = [
        Function::StkPush,
        Function::StkCallback,
        Function::PaymentStatus,
        Function::Reconcile,
        Function::PaymentEvents,
        Function::WebhookDelivery,
    ];

    /// The binary's (and the function's) name.
    pub fn name(self) -> &'static str {
        match self {
            Function::StkPush => "stk-push",
            Function::StkCallback => "stk-callback",
            Function::PaymentStatus => "payment-status",
            Function::Reconcile => "reconcile",
            Function::PaymentEvents => "payment-events",
            Function::WebhookDelivery => "webhook-delivery",
        }
    }
}

impl fmt::Display for Function {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
