//! `POST /callbacks/stk/{token}`: Safaricom's result for a payment, applied with one conditional write.

mod handler;

use std::sync::Arc;

use lambda_http::{run, service_fn, Error};
use shared::api::CallbackService;
use shared::config::{CallbackConfig, ProcessEnv, SecretsManager};
use shared::daraja::time::SystemClock;
use shared::store::raw::DynamoRawStore;
use shared::store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::lambda::init_tracing();
    let aws = shared::aws::sdk_config().await;
    let config = CallbackConfig::load(&ProcessEnv, Some(&SecretsManager(aws.clone()))).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    if !config.allowed_sources.is_empty() {
        tracing::info!("callbacks accepted only from CALLBACK_ALLOWED_IPS");
    }
    let service = CallbackService {
        store: Arc::new(DynamoStore::new(dynamo.clone(), &config.table_name)),
        raw: Arc::new(DynamoRawStore::new(dynamo, config.table_name)),
        clock: Arc::new(SystemClock),
        callback_token: config.callback_token,
        allowed_sources: config.allowed_sources,
    };
    run(service_fn(|request| handler::handle(&service, request))).await
}
