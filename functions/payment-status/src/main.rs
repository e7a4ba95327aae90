//! `GET /payments/{checkout_request_id}`: the stored payment record.

mod handler;

use lambda_http::{run, service_fn, Error};
use shared::config::{ProcessEnv, StatusConfig};
use shared::store::DynamoStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::lambda::init_tracing();
    let config = StatusConfig::load(&ProcessEnv)?;
    let aws = shared::aws::sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table_name);
    run(service_fn(|request| handler::handle(&store, request))).await
}
