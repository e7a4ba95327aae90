//! `POST /payments`: validates the request, writes the intent and locks the phone, sends the
//! STK push, records the pending payment.

mod handler;

use std::sync::Arc;

use lambda_http::{run, service_fn, Error};
use shared::api::PushService;
use shared::config::{ProcessEnv, PushConfig, SecretsManager};
use shared::daraja::time::SystemClock;
use shared::daraja::DarajaClient;
use shared::store::intent::DynamoLedger;
use shared::store::token::DynamoTokenStore;

#[tokio::main]
async fn main() -> Result<(), Error> {
    shared::lambda::init_tracing();
    let aws = shared::aws::sdk_config().await;
    let config = PushConfig::load(&ProcessEnv, Some(&SecretsManager(aws.clone()))).await?;
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    let clock = Arc::new(SystemClock);
    let service = PushService {
        // One OAuth token for every container, kept in the payments table.
        daraja: DarajaClient::new(
            config.daraja,
            clock.clone(),
            Arc::new(DynamoTokenStore::new(
                dynamo.clone(),
                config.table_name.clone(),
                clock.clone(),
            )),
        )?,
        ledger: Arc::new(DynamoLedger::new(dynamo, config.table_name)),
        clock,
        callback_token: config.callback_token,
        callback_base_url: config.callback_base_url,
        phone_lock: config.phone_lock,
    };
    run(service_fn(|request| handler::handle(&service, request))).await
}
