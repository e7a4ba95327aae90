//! `GET /payments/{checkout_request_id}`: the stored payment record.

mod handler;

use app::config::{ProcessEnv, StatusConfig};
use dynamo::DynamoStore;
use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    app::lambda::init_tracing();
    let config = StatusConfig::load(&ProcessEnv)?;
    let aws = app::aws::sdk_config().await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&aws), config.table_name);
    run(service_fn(|request| handler::handle(&store, request))).await
}
