//! Times each step of the push function's cold start, in a fresh process, with the same
//! shared calls its `main` makes, then the first and second DynamoDB requests and Daraja token.
//! Prints one JSON line: `{"steps": [[name, microseconds], …]}`. Run by `bench startup` with the
//! local stack's function environment (secrets from the environment: no secret fetch).

use std::sync::Arc;
use std::time::Instant;

use ::dynamo::token::DynamoTokenStore;
use ::dynamo::DynamoLedger;
use ::dynamo::DynamoStore;
use app::config::{ProcessEnv, PushConfig, SecretSource, SecretsManager};
use daraja::time::SystemClock;
use daraja::TokenStore;
use payments::PaymentStore;
use serde_json::json;

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
    app::lambda::init_tracing();
    t.lap("init_tracing");
    let roots = app::tls::system_roots().len();
    t.lap("trust roots, read once (app::tls)");
    let aws = app::aws::sdk_config().await;
    t.lap("app::aws::sdk_config");
    let config = PushConfig::load(&ProcessEnv, Some(&SecretsManager(aws.clone()))).await?;
    t.lap("PushConfig::load (secrets from env)");
    // What a deployed function does instead when its secrets are in Secrets Manager: build the
    // client and fetch the document (moto here).
    if let Ok(arn) = std::env::var("BENCH_SECRET_ARN") {
        SecretsManager(aws.clone()).fetch(&arn).await?;
        t.lap("secret fetch: Secrets Manager client + GetSecretValue");
    }
    let clock = Arc::new(SystemClock);
    let dynamo = aws_sdk_dynamodb::Client::new(&aws);
    t.lap("dynamodb Client::new");
    let tokens = Arc::new(DynamoTokenStore::new(
        dynamo.clone(),
        config.table_name.clone(),
        clock.clone(),
    ));
    let _ledger = DynamoLedger::new(dynamo.clone(), config.table_name.clone());
    t.lap("token store + ledger");
    let daraja = app::daraja_client(config.daraja, clock.clone(), tokens.clone())?;
    t.lap("DarajaClient::new (reqwest + TLS)");
    let store = DynamoStore::new(dynamo, config.table_name);
    store.get("ws_CO_startup_probe").await?;
    t.lap("first DynamoDB request (GetItem)");
    store.get("ws_CO_startup_probe").await?;
    t.lap("second DynamoDB request (GetItem)");
    // Reads the shared token (one GetItem), as a new container's first push does.
    let shared = tokens.load().await;
    t.lap("shared token load (GetItem)");
    drop((daraja, shared));
    println!("{}", json!({ "steps": t.steps, "trust_roots": roots }));
    Ok(())
}
