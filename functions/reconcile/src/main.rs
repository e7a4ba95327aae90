//! Every minute (EventBridge schedule): STK query for payments whose callback is late, and
//! `EXPIRED` for those with no final answer after the maximum age.

mod handler;

use std::sync::Arc;

use app::config::{ProcessEnv, ReconcileConfig, SecretsManager};
use app::reconcile::Reconciler;
use daraja::time::SystemClock;
use dynamo::token::DynamoTokenStore;
use dynamo::{DynamoLedger, DynamoStore};
use lambda_runtime::{run, service_fn, Error};

use handler::Deps;

#[tokio::main]
async fn main() -> Result<(), Error> {
    app::logging::init();
    let aws = app::aws::sdk_config().await;
    let config = ReconcileConfig::load(&ProcessEnv, Some(&SecretsManager(aws.clone()))).await?;
    let dynamo = dynamo::observed_client(&aws, app::timing::dynamodb_request);
    let clock = Arc::new(SystemClock);
    let tokens = DynamoTokenStore::new(dynamo.clone(), config.table_name.clone(), clock.clone());
    let deps = Deps {
        daraja: Arc::new(app::daraja_client(
            config.daraja,
            clock.clone(),
            Arc::new(tokens),
        )?),
        store: Arc::new(
            DynamoStore::new(dynamo.clone(), &config.table_name).with_clock(clock.clone()),
        ),
        ledger: Arc::new(DynamoLedger::new(dynamo, config.table_name).with_clock(clock.clone())),
        clock,
        reconciler: Reconciler::new(config.settings),
    };
    run(service_fn(|event| {
        app::timing::timed(handler::handle(&deps, event))
    }))
    .await
}
