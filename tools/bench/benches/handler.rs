//! Handler overhead without DynamoDB: the push and callback services over the in-memory store,
//! with Daraja a constant stub on loopback (the one I/O left, also measured alone), and the
//! pure steps of each request. `cargo bench -p bench --bench handler`; `bench criterion`
//! summarises the medians.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use app::api::SourceAllowList;
use app::api::{
    get_payment, parse_payment_request, payment_result, CallbackKeys, CallbackService, PushService,
};
use bench::{events, stub};
use criterion::{criterion_group, criterion_main, Criterion};
use daraja::{
    parse_callback, AccountReference, Amount, DarajaConfig, NoSharedTokens, PhoneNumber,
    PushRequest, Secret, ShortCode, SystemClock, TransactionDesc, TransactionKind,
};
use payments::payment::{plan_result, NewPayment, ResultSource};
use payments::MemoryLedger;
use payments::MemoryRawStore;
use payments::{MemoryStore, PaymentStore};

/// The callback key; the callbacks carry a URL token it signed.
const KEY: &str = "bench-callback-key-of-32-chars!!";

fn keys() -> CallbackKeys {
    CallbackKeys::parse(KEY).expect("a valid key")
}

fn runtime() -> tokio::runtime::Runtime {
    // The functions' own runtime: #[tokio::main] is the multi-threaded one.
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime starts")
}

fn pending(id: &str) -> NewPayment {
    NewPayment {
        checkout_request_id: id.to_string(),
        merchant_request_id: "29115-34620561-1".to_string(),
        charge: daraja::Charge::parse("254708374149", 100, "INV-1001", Some("Order 1001"))
            .expect("a valid charge"),
        created_at: chrono::Utc::now(),
        callback_nonce: None,
        created_by: None,
    }
}

fn callback_service(store: Arc<MemoryStore>) -> CallbackService {
    CallbackService {
        ledger: Arc::new(payments::MemoryLedger::new(store.clone())),
        store,
        raw: Arc::new(MemoryRawStore::new()),
        clock: Arc::new(SystemClock),
        callback_keys: keys(),
        allowed_sources: SourceAllowList::default(),
        confirmation: Default::default(),
    }
}

fn pure(c: &mut Criterion) {
    let mut group = c.benchmark_group("pure");
    let body = events::push_body("0708374149", 100);
    group.bench_function("parse_payment_request + fingerprint", |b| {
        b.iter(|| {
            let request = parse_payment_request(black_box(body.as_bytes())).expect("valid body");
            black_box(payments::intent::fingerprint(&request))
        })
    });
    let callback = events::callback_body("ws_CO_27112026090000123708374149", 100, "TKR7PQ2X9M");
    let now = chrono::Utc::now();
    group.bench_function("parse_callback + payment_result", |b| {
        b.iter(|| {
            let parsed = parse_callback(black_box(callback.as_bytes())).expect("valid callback");
            black_box(payment_result(
                &parsed,
                callback.as_bytes(),
                ResultSource::Callback,
                now,
            ))
        })
    });
    let rt = runtime();
    let store = MemoryStore::new();
    let record = rt.block_on(async {
        let id = "ws_CO_27112026090000123708374149";
        store.record_pending(&pending(id)).await.expect("in memory");
        store
            .get(id)
            .await
            .expect("in memory")
            .expect("just written")
    });
    let parsed = parse_callback(callback.as_bytes()).expect("valid callback");
    let result = payment_result(&parsed, callback.as_bytes(), ResultSource::Callback, now);
    group.bench_function("plan_result (pending record)", |b| {
        b.iter(|| black_box(plan_result(black_box(&result), Some(&record))))
    });
    group.bench_function("PaymentRecord to JSON", |b| {
        b.iter(|| black_box(serde_json::to_vec(black_box(&record)).expect("serialisable")))
    });
    let event = events::push("0708374149", 100).to_string();
    group.bench_function("API Gateway event → lambda_http::Request", |b| {
        b.iter(|| {
            black_box(lambda_http::request::from_str(black_box(&event)).expect("valid event"))
        })
    });
    group.finish();
}

fn service(c: &mut Criterion) {
    let rt = runtime();
    let base_url = rt.block_on(stub::start()).expect("stub listens");
    let clock = Arc::new(SystemClock);
    let config = DarajaConfig::new(
        base_url.clone(),
        ShortCode::parse("174379").expect("valid shortcode"),
        TransactionKind::PayBill,
        Secret::from("key"),
        Secret::from("secret"),
        Secret::from("passkey"),
    );
    let daraja = Arc::new(
        app::daraja_client(config, clock.clone(), Arc::new(NoSharedTokens)).expect("client builds"),
    );
    let push = PushService {
        daraja: daraja.clone(),
        ledger: Arc::new(MemoryLedger::new(Arc::new(MemoryStore::new()))),
        clock,
        callback_keys: keys(),
        callback_base_url: Some("https://abc123.execute-api.us-east-1.amazonaws.com".into()),
        phone_lock: app::api::DEFAULT_PHONE_LOCK,
    };
    // A phone is locked for two minutes after its push: every iteration uses a new one.
    let phones = AtomicU64::new(0);
    let next_body = || {
        let n = phones.fetch_add(1, Ordering::Relaxed) % 100_000_000;
        events::push_body(&format!("07{n:08}"), 100)
    };
    // The token is fetched once, here, as in a warm container.
    rt.block_on(push.start(
        next_body().as_bytes(),
        None,
        None,
        daraja::Deadline::after(std::time::Duration::from_secs(25)),
    ))
    .expect("the stub accepts the push");

    let mut group = c.benchmark_group("service");
    group.bench_function(
        "push: PushService::start, MemoryLedger, stub Daraja on loopback",
        |b| {
            b.to_async(&rt).iter(|| {
                let body = next_body();
                let push = &push;
                async move {
                    black_box(
                        push.start(
                            body.as_bytes(),
                            None,
                            None,
                            daraja::Deadline::after(std::time::Duration::from_secs(25)),
                        )
                        .await
                        .expect("accepted"),
                    )
                }
            })
        },
    );
    // The push's own HTTP exchange with nothing around it: the body the client would send
    // (built by the client itself), the bearer token, the same client settings, an answer of
    // the same size. The push minus this is the handler's overhead without I/O.
    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .build()
        .expect("client builds");
    let echo = format!("{base_url}/echo");
    let push_json = serde_json::to_vec(&daraja.push_body(&PushRequest {
        charge: daraja::Charge {
            phone: PhoneNumber::parse("0708374149").expect("valid phone"),
            amount: Amount::new(100).expect("valid amount"),
            reference: AccountReference::parse("INV-1001").expect("valid reference"),
            description: TransactionDesc::parse("Payment").expect("valid description"),
        },
        callback_url: format!(
            "https://abc123.execute-api.us-east-1.amazonaws.com/callbacks/stk/{}",
            keys().mint().token
        ),
        deadline: daraja::Deadline::after(std::time::Duration::from_secs(25)),
    }))
    .expect("serialisable");
    group.bench_function(
        "the push's HTTP exchange alone (same body, token header, answer size)",
        |b| {
            b.to_async(&rt).iter(|| {
                let (http, echo, body) = (&http, &echo, &push_json);
                async move {
                    let answer = http
                        .post(echo)
                        .bearer_auth("bench-token")
                        .header(reqwest::header::CONTENT_TYPE, "application/json")
                        .body(body.clone())
                        .send()
                        .await
                        .expect("stub answers");
                    black_box(answer.bytes().await.expect("stub body"))
                }
            })
        },
    );

    let store = Arc::new(MemoryStore::new());
    let callbacks = callback_service(store.clone());
    let ids = AtomicU64::new(0);
    group.bench_function("callback: CallbackService::receive, MemoryStore", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                // Each delivery is the first result for its own pending payment.
                let mut bodies = Vec::with_capacity(iters as usize);
                for _ in 0..iters {
                    let id = format!("ws_CO_{:020}", ids.fetch_add(1, Ordering::Relaxed));
                    store
                        .record_pending(&pending(&id))
                        .await
                        .expect("in memory");
                    let receipt = format!("TKR{:07}", ids.load(Ordering::Relaxed) % 10_000_000);
                    bodies.push(events::callback_body(&id, 100, &receipt));
                }
                let token = keys().mint().token;
                let started = Instant::now();
                for body in &bodies {
                    let answer = callbacks
                        .receive(Some(&token), Some(events::SAFARICOM_IP), body.as_bytes())
                        .await;
                    assert_eq!(answer.status, 200);
                }
                started.elapsed()
            })
        })
    });
    let status_store = MemoryStore::new();
    let id = "ws_CO_27112026090000123708374149";
    rt.block_on(status_store.record_pending(&pending(id)))
        .expect("in memory");
    group.bench_function("status: get_payment + JSON, MemoryStore", |b| {
        b.to_async(&rt).iter(|| {
            let store = &status_store;
            async move {
                let record = get_payment(store, Some(id), None).await.expect("found");
                black_box(serde_json::to_vec(&record).expect("serialisable"))
            }
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    targets = pure, service
}
criterion_main!(benches);
