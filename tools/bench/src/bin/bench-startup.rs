//! Times each step of the push function's cold start, in a fresh process, with the same
//! shared calls its `main` makes, then the first and second DynamoDB requests and Daraja token.
//! Prints one JSON line: `{"steps": [[name, microseconds], …]}`. Run by `bench startup` with the
//! local stack's function environment (secrets from the environment: no secret fetch).

use std::sync::Arc;
use std::time::Instant;

use aws_config::BehaviorVersion;
use serde_json::json;
use shared::config::{ProcessEnv, PushConfig, SecretsManager};
use shared::daraja::time::SystemClock;
use shared::daraja::{DarajaClient, TokenStore};
use shared::store::intent::DynamoLedger;
use shared::store::token::DynamoTokenStore;
use shared::store::{DynamoStore, PaymentStore};

struct Steps {
    last: Instant,
    steps: Vec<(&'static str, u128)>,
}

impl Steps {
    fn lap(&mut self, name: &'static str) {
        let now = Instant::now();
        self.steps
            .push((name, now.duration_since(self.last).as_micros()));
        self.last = now;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut t = Steps {
        last: Instant::now(),
        steps: Vec::new(),
    };
    shared::lambda::init_tracing();
    t.lap("init_tracing");
    let aws = aws_config::load_defaults(BehaviorVersion::latest()).await;
    t.lap("aws_config::load_defaults");
    let secrets = SecretsManager(aws_sdk_secretsmanager::Client::new(&aws));
    t.lap("secretsmanager Client::new");
    let config = PushConfig::load(&ProcessEnv, Some(&secrets)).await?;
    t.lap("PushConfig::load (secrets from env)");
    let clock = Arc::new(SystemClock);
    let tokens_client = aws_sdk_dynamodb::Client::new(&aws);
    t.lap("dynamodb Client::new");
    let ledger_client = aws_sdk_dynamodb::Client::new(&aws);
    t.lap("dynamodb Client::new (second)");
    let tokens = Arc::new(DynamoTokenStore::new(
        tokens_client,
        config.table_name.clone(),
        clock.clone(),
    ));
    let _ledger = DynamoLedger::new(ledger_client.clone(), config.table_name.clone());
    t.lap("token store + ledger");
    let daraja = DarajaClient::new(config.daraja, clock.clone(), tokens.clone())?;
    t.lap("DarajaClient::new (reqwest + TLS)");
    let store = DynamoStore::new(ledger_client, config.table_name);
    store.get("ws_CO_startup_probe").await?;
    t.lap("first DynamoDB request (GetItem)");
    store.get("ws_CO_startup_probe").await?;
    t.lap("second DynamoDB request (GetItem)");
    // Reads the shared token (one GetItem), as a new container's first push does.
    let shared = tokens.load().await;
    t.lap("shared token load (GetItem)");
    drop((daraja, shared));
    println!("{}", json!({ "steps": t.steps }));
    Ok(())
}
