//! `POST /payments`: validates the request, writes the intent and locks the phone, sends the
//! STK push, records the pending payment.

mod handler;

use std::sync::Arc;

use app::api::PushService;
use app::config::{ProcessEnv, PushConfig, SecretsManager};
use daraja::time::SystemClock;
use dynamo::token::DynamoTokenStore;
use dynamo::DynamoLedger;
use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    app::lambda::init_tracing();
    let aws = app::aws::sdk_config().await;
    let config = PushConfig::load(&ProcessEnv, Some(&SecretsManager(aws.clone()))).await?;
    let dynamo = dynamo::observed_client(&aws, app::timing::dynamodb_request);
    let clock = Arc::new(SystemClock);
    let service = PushService {
        // One OAuth token for every container, kept in the payments table.
        daraja: Arc::new(app::daraja_client(
            config.daraja,
            clock.clone(),
            Arc::new(DynamoTokenStore::new(
                dynamo.clone(),
                config.table_name.clone(),
                clock.clone(),
            )),
        )?),
        ledger: Arc::new(DynamoLedger::new(dynamo, config.table_name).with_clock(clock.clone())),
        clock,
        callback_keys: config.callback_keys,
        callback_base_url: config.callback_base_url,
        phone_lock: config.phone_lock,
    };
    run(service_fn(|request| {
        app::timing::timed(handler::handle(&service, request))
    }))
    .await
}
