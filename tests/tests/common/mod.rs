//! Helpers shared by the test files that talk to the DynamoDB emulator directly.

// Not every test file uses every helper.
#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::Client;
use local_stack::dynamo::{self, Moto};
use tokio::sync::OnceCell;

static MOTO: OnceCell<Moto> = OnceCell::const_new();
static TABLES: AtomicUsize = AtomicUsize::new(0);

/// The emulator this test binary shares: `DYNAMODB_ENDPOINT` if set, else one moto server.
#[allow(dead_code)] // not every test file needs the endpoint itself
pub async fn moto_endpoint() -> String {
    MOTO.get_or_init(|| async {
        Moto::from_env()
            .await
            .unwrap_or_else(|e| panic!("DynamoDB emulator: {e}"))
    })
    .await
    .endpoint()
}

/// A client (one per test: each test has its own runtime) and a new, empty table created from
/// template.yaml, named `<prefix>-…` and unique across runs (for an endpoint shared through
/// `DYNAMODB_ENDPOINT`).
pub async fn fresh_table(prefix: &str) -> (Client, String) {
    let client = dynamo::client(&moto_endpoint().await).await;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let table = format!(
        "{prefix}-{}-{nanos}-{}",
        std::process::id(),
        TABLES.fetch_add(1, Ordering::SeqCst)
    );
    let template = dynamo::template_path().expect("template.yaml above the tests crate");
    dynamo::create_table_from_template(&client, &template, &table)
        .await
        .unwrap_or_else(|e| panic!("create {table}: {e}"));
    (client, table)
}

/// A success callback body for `id`, paid 100 with `receipt`, as Daraja sends it (no phone).
pub fn success_callback(id: &str, receipt: &str) -> serde_json::Value {
    serde_json::json!({"Body": {"stkCallback": {
        "MerchantRequestID": "29115-34620561-1",
        "CheckoutRequestID": id,
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 100},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "TransactionDate", "Value": 20261201120000_u64}
        ]}
    }}})
}
