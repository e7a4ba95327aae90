//! `POST /callbacks/stk/{token}`: Safaricom's result for a payment, applied with one conditional write.

mod handler;

use std::sync::Arc;

use aws_config::BehaviorVersion;
use lambda_http::{run, service_fn, Error};
use shared::api::CallbackService;
use shared::config::{CallbackConfig, ProcessEnv, SecretsManager};
use shared::daraja::time::SystemClock;
use shared::store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::lambda::init_tracing();
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    let secrets = SecretsManager(aws_sdk_secretsmanager::Client::new(&aws));
    let config = CallbackConfig::load(&ProcessEnv, Some(&secrets)).await?;
    let service = CallbackService {
        store: Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&aws),
            config.table_name,
        )),
        clock: Arc::new(SystemClock),
        callback_token: config.callback_token,
    };
    run(service_fn(|request| handler::handle(&service, request))).await
}
