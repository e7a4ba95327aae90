//! The DynamoDB payment store against a real DynamoDB emulator (moto) on loopback.
//!
//! One emulator serves the whole test binary (or `DYNAMODB_ENDPOINT`, when set); every test
//! creates its own table from `template.yaml`, so the tests run in parallel.
//! The conformance rules are the ones the in-memory store passes in `shared`'s unit tests.

mod common;

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ProjectionType, TimeToLiveStatus};
use aws_sdk_dynamodb::Client;
use dynamo::DynamoStore;
use local_stack::dynamo::Moto;
use payments::conformance::{cancelled, payment, queried, receipt_of, success};
use payments::payment::PaymentStatus;
use payments::{PaymentStore, StoreError};

use common::fresh_table;

async fn store() -> DynamoStore {
    let (client, table) = fresh_table("payments").await;
    DynamoStore::new(client, table)
}

payments::payment_store_conformance!(store);

async fn raw_item(
    store: &DynamoStore,
    client: &Client,
    id: &str,
) -> HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(store.table())
        .key("pk", AttributeValue::S(format!("PAY#{id}")))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item")
        .item
        .expect("item stored")
}

async fn index_keys(store: &DynamoStore, client: &Client, index: &str) -> Vec<String> {
    let mut keys: Vec<String> = client
        .scan()
        .table_name(store.table())
        .index_name(index)
        .send()
        .await
        .expect("scan index")
        .items
        .unwrap_or_default()
        .iter()
        .filter_map(|item| item.get("pk")?.as_s().ok().cloned())
        .collect();
    keys.sort();
    keys
}

fn s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)?.as_s().ok().map(String::as_str)
}

fn n<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Option<&'a str> {
    item.get(name)?.as_n().ok().map(String::as_str)
}

#[tokio::test]
async fn table_from_template_has_sparse_indexes_and_ttl() {
    let (client, table) = fresh_table("payments").await;
    let described = client
        .describe_table()
        .table_name(&table)
        .send()
        .await
        .expect("describe_table");
    let description = described.table().expect("table description");
    let key: Vec<_> = description
        .key_schema()
        .iter()
        .map(|k| k.attribute_name())
        .collect();
    assert_eq!(key, ["pk"]);
    let mut indexes: Vec<_> = description
        .global_secondary_indexes()
        .iter()
        .map(|index| {
            let keys: Vec<_> = index
                .key_schema()
                .iter()
                .map(|k| k.attribute_name().to_owned())
                .collect();
            let projection = index
                .projection()
                .and_then(|p| p.projection_type())
                .cloned();
            (
                index.index_name().unwrap_or_default().to_owned(),
                keys,
                projection,
            )
        })
        .collect();
    indexes.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        indexes,
        [
            (
                "intent-index".to_owned(),
                vec!["push_intent".to_owned()],
                Some(ProjectionType::Include)
            ),
            (
                "orphan-index".to_owned(),
                vec!["orphan_pk".to_owned(), "orphan_sk".to_owned()],
                Some(ProjectionType::All)
            ),
            (
                "pending-index".to_owned(),
                vec!["pending_pk".to_owned(), "pending_sk".to_owned()],
                Some(ProjectionType::KeysOnly)
            ),
            (
                "reference-index".to_owned(),
                vec!["ref_pk".to_owned(), "ref_sk".to_owned()],
                Some(ProjectionType::KeysOnly)
            ),
        ]
    );

    let ttl = client
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .expect("describe_time_to_live");
    let ttl = ttl.time_to_live_description().expect("ttl description");
    assert_eq!(ttl.attribute_name(), Some("expires_at"));
    assert_eq!(ttl.time_to_live_status(), Some(&TimeToLiveStatus::Enabled));
}

#[tokio::test]
async fn pending_item_carries_index_keys_until_final() {
    let (client, table) = fresh_table("payments").await;
    let store = DynamoStore::new(client.clone(), table);
    store
        .record_pending(&payment("ws_CO_layout", 250))
        .await
        .expect("record_pending");

    let item = raw_item(&store, &client, "ws_CO_layout").await;
    assert_eq!(s(&item, "status"), Some("PENDING"));
    assert_eq!(s(&item, "pending_pk"), Some("PENDING"));
    assert_eq!(
        s(&item, "pending_sk"),
        Some("2024-05-01T10:00:00.000Z#ws_CO_layout")
    );
    assert_eq!(n(&item, "amount"), Some("250"));
    assert_eq!(s(&item, "created_at"), Some("2024-05-01T10:00:00.000Z"));
    assert_eq!(
        item.get("details_recorded"),
        Some(&AttributeValue::Bool(true))
    );
    assert!(!item.contains_key("orphan_pk"));

    store
        .apply_result(&success("ws_CO_layout", "250.00", Some(250)))
        .await
        .expect("apply_result");
    let item = raw_item(&store, &client, "ws_CO_layout").await;
    assert_eq!(s(&item, "status"), Some("COMPLETED"));
    assert!(!item.contains_key("pending_pk"));
    assert!(!item.contains_key("pending_sk"));
    assert_eq!(s(&item, "result_code"), Some("0"));
    assert_eq!(
        s(&item, "amount_paid"),
        Some("250.00"),
        "kept exactly as sent"
    );
    assert_eq!(n(&item, "amount_paid_whole"), Some("250"));
    assert_eq!(s(&item, "completed_at"), Some("2024-05-01T10:00:30.000Z"));
    assert_eq!(s(&item, "reconciled_by"), Some("callback"));
    assert!(s(&item, "raw_callback").is_some());
}

#[tokio::test]
async fn pending_index_holds_only_pending_items() {
    let (client, table) = fresh_table("payments").await;
    let store = DynamoStore::new(client.clone(), table);
    for id in ["ws_CO_a", "ws_CO_b", "ws_CO_c", "ws_CO_d"] {
        store
            .record_pending(&payment(id, 100))
            .await
            .expect("record_pending");
    }
    store
        .apply_result(&success("ws_CO_a", "100", Some(100)))
        .await
        .expect("apply_result");
    store
        .apply_result(&cancelled("ws_CO_b"))
        .await
        .expect("apply_result");
    let expired = store
        .expire("ws_CO_c", payments::conformance::at(900), None)
        .await
        .expect("expire");
    assert!(expired);
    store
        .apply_result(&cancelled("ws_CO_orphan"))
        .await
        .expect("apply_result");

    assert_eq!(
        index_keys(&store, &client, "pending-index").await,
        ["PAY#ws_CO_d"]
    );
}

#[tokio::test]
async fn orphan_index_shows_orphan_until_pending_write() {
    let (client, table) = fresh_table("payments").await;
    let store = DynamoStore::new(client.clone(), table);
    store
        .apply_result(&success("ws_CO_stray", "100", Some(100)))
        .await
        .expect("apply_result");

    let item = raw_item(&store, &client, "ws_CO_stray").await;
    assert_eq!(s(&item, "orphan_pk"), Some("ORPHAN"));
    assert_eq!(
        s(&item, "orphan_sk"),
        Some("2024-05-01T10:00:30.000Z#ws_CO_stray")
    );
    assert_eq!(
        item.get("details_recorded"),
        Some(&AttributeValue::Bool(false))
    );
    assert_eq!(
        index_keys(&store, &client, "orphan-index").await,
        ["PAY#ws_CO_stray"]
    );
    assert!(index_keys(&store, &client, "pending-index")
        .await
        .is_empty());

    store
        .record_pending(&payment("ws_CO_stray", 100))
        .await
        .expect("record_pending");
    assert!(index_keys(&store, &client, "orphan-index").await.is_empty());
    assert!(
        index_keys(&store, &client, "pending-index")
            .await
            .is_empty(),
        "a final record never regains pending keys"
    );
    let record = store
        .get("ws_CO_stray")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(record.status, PaymentStatus::Completed);
    assert!(record.details_recorded);
}

#[tokio::test]
async fn undecodable_item_is_corrupt_not_a_crash() {
    let (client, table) = fresh_table("payments").await;
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S("PAY#ws_CO_bad".into()))
        .item("status", AttributeValue::S("PAID".into()))
        .item(
            "updated_at",
            AttributeValue::S("2024-05-01T10:00:00.000Z".into()),
        )
        .send()
        .await
        .expect("put_item");
    let store = DynamoStore::new(client, table);
    match store.get("ws_CO_bad").await {
        Err(e @ StoreError::Corrupt { .. }) => {
            assert!(!e.is_retryable());
            assert!(e.to_string().contains("PAY#ws_CO_bad"), "{e}");
        }
        other => panic!("expected a corrupt item, got {other:?}"),
    }
}

#[tokio::test]
async fn missing_table_is_unavailable() {
    let (client, _) = fresh_table("payments").await;
    let store = DynamoStore::new(client, "no-such-table");
    match store.record_pending(&payment("ws_CO_nowhere", 100)).await {
        Err(e @ StoreError::Unavailable(_)) => {
            assert!(e.is_retryable());
            // The SDK's error is kept as the source, not flattened into a string.
            let source = std::error::Error::source(&e).expect("the SDK failure as source");
            assert!(
                std::error::Error::source(source).is_some(),
                "the SDK error itself under it: {source}"
            );
        }
        other => panic!("expected the store to be unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn moto_stops_when_dropped() {
    let moto = Moto::start().await.expect("start moto");
    let address = moto.endpoint().trim_start_matches("http://").to_owned();
    assert!(tokio::net::TcpStream::connect(&address).await.is_ok());
    drop(moto);
    assert!(
        tokio::net::TcpStream::connect(&address).await.is_err(),
        "nothing listens on {address} once Moto is dropped"
    );
}

#[tokio::test]
async fn late_callback_adds_receipt_to_a_query_completed_item_in_one_write() {
    let (client, table) = fresh_table("payments").await;
    let store = DynamoStore::new(client.clone(), table);
    store
        .record_pending(&payment("ws_CO_enrich", 100))
        .await
        .expect("pending");
    store
        .apply_result(&queried(success("ws_CO_enrich", "100", Some(100))))
        .await
        .expect("query result");
    let before = raw_item(&store, &client, "ws_CO_enrich").await;
    assert!(!before.contains_key("receipt"));

    let late = success("ws_CO_enrich", "100", Some(100));
    store.apply_result(&late).await.expect("callback");
    let after = raw_item(&store, &client, "ws_CO_enrich").await;
    let text = |item: &HashMap<String, AttributeValue>, name: &str| {
        item.get(name).and_then(|v| v.as_s().ok()).cloned()
    };
    assert_eq!(text(&after, "receipt"), Some(receipt_of("ws_CO_enrich")));
    assert_eq!(text(&after, "raw_callback"), late.raw);
    assert_eq!(
        after
            .get("amount_paid_whole")
            .and_then(|v| v.as_n().ok())
            .map(String::as_str),
        Some("100")
    );
    // The query's result and its time stay; nothing went to history or the indexes.
    for kept in [
        "reconciled_by",
        "completed_at",
        "result_code",
        "result_desc",
        "status",
    ] {
        assert_eq!(after.get(kept), before.get(kept), "{kept}");
    }
    for absent in [
        "history",
        "conflicting_callbacks",
        "pending_pk",
        "orphan_pk",
    ] {
        assert!(!after.contains_key(absent), "{absent}");
    }

    // A failed item keeps its outcome, the success callback goes to history, and its receipt
    // turns the item NEEDS_REVIEW (the customer may have paid).
    store
        .record_pending(&payment("ws_CO_enrich_failed", 100))
        .await
        .expect("pending");
    store
        .apply_result(&queried(cancelled("ws_CO_enrich_failed")))
        .await
        .expect("query result");
    store
        .apply_result(&success("ws_CO_enrich_failed", "100", Some(100)))
        .await
        .expect("callback");
    let failed = raw_item(&store, &client, "ws_CO_enrich_failed").await;
    assert_eq!(text(&failed, "status").as_deref(), Some("NEEDS_REVIEW"));
    assert_eq!(
        text(&failed, "review_reason").as_deref(),
        Some("success_after_failure")
    );
    assert_eq!(text(&failed, "result_code").as_deref(), Some("1032"));
    assert!(!failed.contains_key("receipt"));
    assert!(failed.contains_key("history"));
}

/// Every write is dated by the clock the store was given, never the machine's own.
#[tokio::test]
async fn writes_are_dated_by_the_stores_clock() {
    let (client, table) = fresh_table("payments").await;
    let at = payments::timestamp::parse("2030-01-01T09:30:00.000Z").unwrap();
    let store = DynamoStore::new(client, table)
        .with_clock(std::sync::Arc::new(daraja::FixedClock::new(at)));
    let written = store
        .record_pending(&payment("ws_CO_dated", 100))
        .await
        .unwrap();
    assert_eq!(written.record().updated_at, at);
    store
        .apply_result(&success("ws_CO_dated", "100", Some(100)))
        .await
        .unwrap();
    assert_eq!(
        store.get("ws_CO_dated").await.unwrap().unwrap().updated_at,
        at
    );
}
