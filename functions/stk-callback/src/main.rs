//! `POST /callbacks/stk/{token}`: Safaricom's result for a payment, applied with one conditional write.

mod handler;

use std::sync::Arc;

use app::api::CallbackService;
use app::config::{CallbackConfig, ProcessEnv, SecretsManager};
use daraja::time::SystemClock;
use dynamo::DynamoRawStore;
use dynamo::{DynamoLedger, DynamoStore};
use lambda_http::{run, service_fn, Error};

#[tokio::main]
async fn main() -> Result<(), Error> {
    app::lambda::init_tracing();
    let aws = app::aws::sdk_config().await;
    let config = CallbackConfig::load(&ProcessEnv, Some(&SecretsManager(aws.clone()))).await?;
    let dynamo = dynamo::observed_client(&aws, app::timing::dynamodb_request);
    if !config.allowed_sources.is_empty() {
        if config.allowed_sources.is_report_only() {
            tracing::info!("callbacks from outside CALLBACK_ALLOWED_IPS are accepted and counted");
        } else {
            tracing::info!("callbacks accepted only from CALLBACK_ALLOWED_IPS");
        }
    }
    let clock = Arc::new(SystemClock);
    let service = CallbackService {
        store: Arc::new(
            DynamoStore::new(dynamo.clone(), &config.table_name).with_clock(clock.clone()),
        ),
        ledger: Arc::new(
            DynamoLedger::new(dynamo.clone(), &config.table_name).with_clock(clock.clone()),
        ),
        raw: Arc::new(DynamoRawStore::new(dynamo, config.table_name)),
        clock,
        callback_keys: config.callback_keys,
        allowed_sources: config.allowed_sources,
        confirmation: config.confirmation,
    };
    run(service_fn(|request| {
        app::timing::timed(handler::handle(&service, request))
    }))
    .await
}
