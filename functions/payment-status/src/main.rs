//! `GET /payments/{checkout_request_id}`: the stored payment record; `GET /payments?…`: the
//! payments found by `Idempotency-Key` or merchant reference.

mod handler;

use app::config::{ProcessEnv, StatusConfig};
use daraja::SystemClock;
use dynamo::{DynamoLedger, DynamoStore};
use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    app::lambda::init_tracing();
    let config = StatusConfig::load(&ProcessEnv)?;
    let aws = app::aws::sdk_config().await;
    let client = dynamo::observed_client(&aws, app::timing::dynamodb_request);
    let store = DynamoStore::new(client.clone(), &config.table_name);
    let ledger = DynamoLedger::new(client, config.table_name);
    let deps = handler::Deps {
        store: &store,
        ledger: &ledger,
        clock: &SystemClock,
    };
    run(service_fn(|request| {
        app::timing::timed(handler::handle(&deps, request))
    }))
    .await
}
