//! Rotating the callback key while payments are in flight, step by step as the README's
//! procedure does it: each step is a new `callback_token` value that both functions load (a
//! redeploy gives every container the new value). A callback sent to a URL signed in an
//! earlier step still settles its payment; only a key dropped at the last step stops working.
#![cfg(all(feature = "push", feature = "callback"))]

use std::sync::Arc;

use app::api::{CallbackKeys, CallbackService, PushAnswer, PushService, SourceAllowList};
use daraja::fake::FakeDaraja;
use daraja::{Deadline, SystemClock};
use payments::payment::PaymentStatus;
use payments::{MemoryLedger, MemoryRawStore, MemoryStore, PaymentStore};
use serde_json::json;

const OLD: &str = "old-key-of-thirty-two-characters";
const NEW: &str = "new-key-of-thirty-two-characters";

/// The functions as one deployment runs them: both load the same `callback_token`.
struct Deployment {
    push: PushService,
    callbacks: CallbackService,
}

fn deploy(store: &Arc<MemoryStore>, daraja: &Arc<FakeDaraja>, callback_token: &str) -> Deployment {
    let keys = CallbackKeys::parse(callback_token).expect("a valid key list");
    Deployment {
        push: PushService {
            daraja: daraja.clone(),
            ledger: Arc::new(MemoryLedger::new(store.clone())),
            clock: Arc::new(SystemClock),
            callback_keys: keys.clone(),
            callback_base_url: Some("https://api.example.com".into()),
            phone_lock: app::api::DEFAULT_PHONE_LOCK,
        },
        callbacks: CallbackService {
            store: store.clone(),
            ledger: Arc::new(MemoryLedger::new(store.clone())),
            raw: Arc::new(MemoryRawStore::new()),
            clock: Arc::new(SystemClock),
            callback_keys: keys,
            allowed_sources: SourceAllowList::default(),
            confirmation: Default::default(),
        },
    }
}

/// A push that Daraja accepts: its checkout id and the path token of its callback URL.
async fn push(deployment: &Deployment, daraja: &FakeDaraja, phone: &str) -> (String, String) {
    let body = json!({"phone": phone, "amount": 100, "reference": "ROTATE"}).to_string();
    let answer = deployment
        .push
        .start(
            body.as_bytes(),
            None,
            None,
            Deadline::after(app::api::DEFAULT_INVOCATION_TIME),
        )
        .await
        .expect("push accepted");
    let PushAnswer::Accepted(accepted) = answer else {
        panic!("expected an accepted push, got {answer:?}");
    };
    let url = daraja
        .callback_urls()
        .pop()
        .expect("the push's callback URL");
    let token = url.rsplit('/').next().expect("a path token").to_owned();
    (accepted.checkout_request_id, token)
}

/// Safaricom's success callback for `id`, delivered to `token`: the answer's status.
async fn deliver(deployment: &Deployment, id: &str, token: &str, receipt: &str) -> u16 {
    let body = json!({"Body": {"stkCallback": {
        "MerchantRequestID": "m", "CheckoutRequestID": id, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 100},
            {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "PhoneNumber", "Value": 254708374149u64}]}}}});
    deployment
        .callbacks
        .receive(
            Some(token),
            Some("196.201.214.200"),
            body.to_string().as_bytes(),
        )
        .await
        .status
}

async fn status(store: &MemoryStore, id: &str) -> PaymentStatus {
    store.get(id).await.unwrap().expect("recorded").status
}

#[tokio::test]
async fn rotating_the_callback_key_mid_flight_loses_no_callback() {
    let store = Arc::new(MemoryStore::new());
    let daraja = Arc::new(FakeDaraja::accepting());

    // Before: one key, as the template generates it.
    let before = deploy(&store, &daraja, OLD);
    let (first, first_token) = push(&before, &daraja, "0712000101").await;
    assert!(first_token.starts_with("0."), "{first_token}");

    // Step 1: the new key is accepted, the old one still signs.
    let step1 = deploy(&store, &daraja, &format!("0:{OLD},1:{NEW}"));
    let (second, second_token) = push(&step1, &daraja, "0712000102").await;
    assert!(second_token.starts_with("0."), "{second_token}");

    // Step 2: the new key signs, the old one is still accepted.
    let step2 = deploy(&store, &daraja, &format!("1:{NEW},0:{OLD}"));
    let (third, third_token) = push(&step2, &daraja, "0712000103").await;
    assert!(third_token.starts_with("1."), "{third_token}");
    // Callbacks of pushes from every step arrive now, and all settle.
    assert_eq!(
        deliver(&step2, &first, &first_token, "TRT1000001").await,
        200
    );
    assert_eq!(
        deliver(&step2, &second, &second_token, "TRT1000002").await,
        200
    );
    assert_eq!(
        deliver(&step2, &third, &third_token, "TRT1000003").await,
        200
    );
    for id in [&first, &second, &third] {
        assert_eq!(status(&store, id).await, PaymentStatus::Completed, "{id}");
    }

    // Step 3, once no URL signed with the old key can still be called back: only the new key.
    let after = deploy(&store, &daraja, &format!("1:{NEW}"));
    let (fourth, fourth_token) = push(&after, &daraja, "0712000104").await;
    assert_eq!(
        deliver(&after, &fourth, &fourth_token, "TRT1000004").await,
        200
    );
    assert_eq!(status(&store, &fourth).await, PaymentStatus::Completed);
    // An old URL settles nothing any more (here a late copy of the first callback).
    assert_eq!(
        deliver(&after, &first, &first_token, "TRT1000001").await,
        404
    );
    // Doing step 2 before every container had step 1 is what the order prevents: a URL the
    // new key signed is refused by a callback function that only knows the old one.
    assert_eq!(
        deliver(&before, &third, &third_token, "TRT1000003").await,
        404
    );
}
