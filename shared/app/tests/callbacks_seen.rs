//! Every callback body in `tests/data/callbacks-seen` (39 bodies seen in other projects' tests and
//! issue threads, copied from the corpus beside the project) through the callback service, with
//! the outcome its manifest says a careful implementation records.
#![cfg(feature = "callback")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use app::api::{CallbackKeys, CallbackService, SourceAllowList};
use daraja::{Charge, SystemClock};
use payments::payment::NewPayment;
use payments::{MemoryRawStore, MemoryStore, PaymentStore};
use serde_json::Value;

/// The callback key; each body goes to a URL token it signed.
const KEY: &str = "a-key-of-thirty-two-characters!!";

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/data/callbacks-seen")
}

/// The copy in the repository is the corpus beside the project, where that is present.
#[test]
fn the_copy_matches_the_corpus_beside_the_project() {
    let beside = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/callbacks-seen");
    if !beside.is_dir() {
        // A clone elsewhere has only the copy; the copy is what the test below reads.
        return;
    }
    let names = |dir: &Path| {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(names(&beside), names(&corpus()));
    for name in names(&corpus()) {
        assert_eq!(
            std::fs::read(beside.join(&name)).unwrap(),
            std::fs::read(corpus().join(&name)).unwrap(),
            "{name} differs from the corpus"
        );
    }
}

/// The callback's `Amount` when it is a whole number, else 100 (the manifest's rule).
fn asked_amount(body: &Value) -> u64 {
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|item| item["Name"] == "Amount")
        .and_then(|item| match &item["Value"] {
            Value::String(text) => text.trim().parse::<f64>().ok(),
            value => value.as_f64(),
        })
        .filter(|v| v.fract() == 0.0 && *v >= 1.0)
        .map_or(100, |v| v as u64)
}

#[tokio::test]
async fn every_callback_seen_gets_the_outcome_its_manifest_names() {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(corpus().join("manifest.json")).unwrap()).unwrap();
    let mut wrong = Vec::new();
    for (i, (name, entry)) in manifest.as_object().unwrap().iter().enumerate() {
        let expect = entry["expect"].as_str().unwrap();
        let raw = std::fs::read_to_string(corpus().join(format!("{name}.json"))).unwrap();
        let (mid, cid) = (format!("29115-{i}-1"), format!("ws_CO_corpus_{i:03}"));
        let text = raw.replace("__MID__", &mid).replace("__CID__", &cid);
        let amount = serde_json::from_str(&text).map_or(100, |v: Value| asked_amount(&v));
        let store = Arc::new(MemoryStore::new());
        let keys = CallbackKeys::parse(KEY).unwrap();
        let url = keys.mint();
        store
            .record_pending(&NewPayment {
                checkout_request_id: cid.clone(),
                merchant_request_id: mid,
                charge: Charge::parse("254708374149", amount, "INV-1", None).unwrap(),
                created_at: chrono::Utc::now(),
                callback_nonce: Some(url.nonce),
                created_by: None,
            })
            .await
            .unwrap();
        let service = CallbackService {
            ledger: Arc::new(payments::MemoryLedger::new(store.clone())),
            store: store.clone(),
            raw: Arc::new(MemoryRawStore::new()),
            clock: Arc::new(SystemClock),
            callback_keys: keys,
            allowed_sources: SourceAllowList::default(),
            confirmation: Default::default(),
        };
        let answer = service
            .receive(Some(&url.token), Some("196.201.214.200"), text.as_bytes())
            .await;
        let record = store.get(&cid).await.unwrap().unwrap();
        if record.status.as_str() != expect {
            wrong.push(format!(
                "{name}: expected {expect}, got {} (answer {} {})",
                record.status, answer.status, answer.body
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 39 wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}
