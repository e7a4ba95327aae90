//! The Daraja client against the Daraja simulator over loopback: request shapes, token
//! handling, and every error Daraja answers mapped to its typed error.
//!
//! Each test starts its own simulator, so tests run in parallel without sharing state.

mod wait;

use std::sync::Arc;
use std::time::Duration;

use daraja::{
    AccountReference, Amount, DarajaClient, DarajaConfig, DarajaError, NoSharedTokens,
    OutcomeCategory, PhoneNumber, PushRequest, QueryAnswer, Secret, ShortCode, SystemClock,
    TillNumber, TransactionDesc, TransactionKind,
};
use daraja_sim::{
    Endpoint, Fault, Outcome, SimConfig, SimHandle, SANDBOX_PASSKEY, SANDBOX_SHORTCODE,
};
use serde_json::{json, Value};

use wait::{Deadline, WAIT};

/// A host that refuses connections: callbacks are not under test here.
const CALLBACK_URL: &str = "http://127.0.0.1:9/hooks/stk";

async fn sim() -> SimHandle {
    sim_with(SimConfig::default()).await
}

async fn sim_with(config: SimConfig) -> SimHandle {
    let addr = "127.0.0.1:0".parse().expect("loopback address");
    daraja_sim::start(addr, config)
        .await
        .expect("simulator starts")
}

fn config(sim: &SimHandle) -> DarajaConfig {
    DarajaConfig {
        base_url: sim.base_url(),
        consumer_key: Secret::from("test-consumer-key"),
        consumer_secret: Secret::from("test-consumer-secret"),
        passkey: Secret::from(SANDBOX_PASSKEY),
        shortcode: ShortCode::parse(SANDBOX_SHORTCODE).expect("sandbox shortcode"),
        kind: TransactionKind::PayBill,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

fn client(config: DarajaConfig) -> DarajaClient {
    observed_client(config).0
}

/// Counts the token requests of one client, as the client reports them.
#[derive(Default)]
struct TokenFetches(std::sync::atomic::AtomicU64);

impl daraja::CallObserver for TokenFetches {
    fn call_finished(&self, endpoint: daraja::Endpoint, _latency: Duration) {
        if endpoint == daraja::Endpoint::Oauth {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl TokenFetches {
    fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::SeqCst)
    }
}

/// A client as the functions build it (the system's roots), with its token requests counted.
fn observed_client(config: DarajaConfig) -> (DarajaClient, Arc<TokenFetches>) {
    let fetches = Arc::new(TokenFetches::default());
    let client = DarajaClient::new(
        config,
        Arc::new(SystemClock),
        Arc::new(NoSharedTokens),
        app::tls::system_roots().certs(),
    )
    .expect("client")
    .observed_by(fetches.clone());
    (client, fetches)
}

fn push(phone: &str, amount: u64) -> PushRequest {
    PushRequest {
        charge: daraja::Charge {
            phone: PhoneNumber::parse(phone).expect("test phone"),
            amount: Amount::new(amount).expect("test amount"),
            reference: AccountReference::parse("INV-001").expect("test reference"),
            description: TransactionDesc::default(),
        },
        callback_url: CALLBACK_URL.to_owned(),
        deadline: daraja::Deadline::after(std::time::Duration::from_secs(30)),
    }
}

/// The body the simulator received for the last push.
fn last_push_body(sim: &SimHandle) -> Value {
    sim.requests()
        .into_iter()
        .rev()
        .find(|r| r.endpoint == Endpoint::StkPush)
        .map(|r| r.body)
        .expect("a push was recorded")
}

/// Queries until the answer is final (the simulated customer answers when told to).
async fn final_answer(client: &DarajaClient, checkout_request_id: &str) -> QueryAnswer {
    let deadline = Deadline::after(
        WAIT,
        format!("the query of {checkout_request_id} to be final"),
    );
    loop {
        match client
            .stk_query(
                checkout_request_id,
                daraja::Deadline::after(std::time::Duration::from_secs(30)),
            )
            .await
            .expect("query")
        {
            QueryAnswer::Processing => deadline.not_yet("still processing").await,
            answer => return answer,
        }
    }
}

#[tokio::test]
async fn paybill_push_then_query_reports_success() {
    let sim = sim().await;
    let client = client(config(&sim));

    let ack = client
        .stk_push(&push("0708374149", 10))
        .await
        .expect("push accepted");
    assert_eq!(ack.response_code, "0");
    assert!(
        ack.checkout_request_id.starts_with("ws_CO_"),
        "{}",
        ack.checkout_request_id
    );
    assert!(!ack.merchant_request_id.is_empty());

    let body = last_push_body(&sim);
    assert_eq!(body["BusinessShortCode"], json!(SANDBOX_SHORTCODE));
    assert_eq!(body["TransactionType"], json!("CustomerPayBillOnline"));
    assert_eq!(body["PartyA"], json!("254708374149"));
    assert_eq!(body["PartyB"], json!(SANDBOX_SHORTCODE));
    assert_eq!(body["PhoneNumber"], json!("254708374149"));
    assert_eq!(body["Amount"], json!(10));

    sim.complete_now(&ack.checkout_request_id);
    match final_answer(&client, &ack.checkout_request_id).await {
        QueryAnswer::Final {
            result_code,
            merchant_request_id,
            ..
        } => {
            assert!(result_code.is_success(), "{result_code}");
            assert_eq!(merchant_request_id, ack.merchant_request_id);
        }
        other => panic!("expected a final answer, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn query_while_prompt_open_is_processing_then_reports_cancellation() {
    let sim = sim().await;
    sim.script(
        Some("254708374149"),
        vec![Outcome::code(1032).delay(Duration::from_secs(60))],
    );
    let client = client(config(&sim));

    let ack = client
        .stk_push(&push("0708374149", 5))
        .await
        .expect("push accepted");
    assert_eq!(
        client
            .stk_query(
                &ack.checkout_request_id,
                daraja::Deadline::after(std::time::Duration::from_secs(30))
            )
            .await
            .expect("query"),
        QueryAnswer::Processing
    );

    sim.complete_now(&ack.checkout_request_id);
    match final_answer(&client, &ack.checkout_request_id).await {
        QueryAnswer::Final {
            result_code,
            result_desc,
            ..
        } => {
            assert_eq!(result_code.category(), OutcomeCategory::Cancelled);
            assert_eq!(result_desc, "Request cancelled by user");
        }
        other => panic!("expected cancellation, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn transient_4999_is_reported_as_processing() {
    let sim = sim().await;
    sim.script(None, vec![Outcome::success().transient_4999()]);
    let client = client(config(&sim));
    let ack = client
        .stk_push(&push("0708374149", 5))
        .await
        .expect("push accepted");
    sim.complete_now(&ack.checkout_request_id);

    let deadline = Deadline::after(WAIT, "the query to be final");
    let mut answers = Vec::new();
    loop {
        let answer = client
            .stk_query(
                &ack.checkout_request_id,
                daraja::Deadline::after(std::time::Duration::from_secs(30)),
            )
            .await
            .expect("query");
        answers.push(answer.clone());
        if answer != QueryAnswer::Processing {
            break;
        }
        deadline.not_yet(format!("{answers:?}")).await;
    }
    let query_bodies: Vec<Value> = sim
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::StkQuery)
        .map(|r| r.response)
        .collect();
    assert!(
        query_bodies
            .iter()
            .any(|b| b["ResultCode"] == json!("4999")),
        "the simulator sent 4999 once: {query_bodies:?}"
    );
    assert!(
        matches!(answers.last(), Some(QueryAnswer::Final { result_code, .. }) if result_code.is_success()),
        "{answers:?}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn till_push_sends_the_till_as_party_b_and_succeeds() {
    let sim = sim().await;
    let mut config = config(&sim);
    config.kind = TransactionKind::Till(TillNumber::parse("5432100").expect("till"));
    let client = client(config);

    let ack = client
        .stk_push(&push("0110374149", 20))
        .await
        .expect("push accepted");
    let body = last_push_body(&sim);
    assert_eq!(body["TransactionType"], json!("CustomerBuyGoodsOnline"));
    assert_eq!(body["BusinessShortCode"], json!(SANDBOX_SHORTCODE));
    assert_eq!(body["PartyB"], json!("5432100"));
    assert_eq!(body["PartyA"], json!("254110374149"));

    sim.complete_now(&ack.checkout_request_id);
    match final_answer(&client, &ack.checkout_request_id).await {
        QueryAnswer::Final { result_code, .. } => {
            assert!(result_code.is_success(), "{result_code}")
        }
        other => panic!("expected success, got {other:?}"),
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_token_serves_a_hundred_concurrent_pushes() {
    let sim = sim().await;
    let (client, fetches) = observed_client(config(&sim));
    let client = Arc::new(client);

    // One open prompt per phone, so each push goes to a different phone.
    let pushes: Vec<_> = (0..100)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move { client.stk_push(&push(&format!("0712{i:06}"), 1)).await })
        })
        .collect();
    for push in pushes {
        push.await.expect("task").expect("push accepted");
    }
    let counts = sim.counts();
    assert_eq!(counts.oauth, 1);
    assert_eq!(counts.stk_push, 100);
    assert_eq!(fetches.count(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn invalidated_token_is_refreshed_once_and_the_push_retried_once() {
    let sim = sim().await;
    let (client, fetches) = observed_client(config(&sim));
    client
        .stk_push(&push("0708374149", 1))
        .await
        .expect("first push");

    sim.expire_tokens();
    let ack = client
        .stk_push(&push("0708374150", 1))
        .await
        .expect("second push");
    assert_eq!(ack.response_code, "0");

    let counts = sim.counts();
    assert_eq!(counts.oauth, 2, "one refresh");
    assert_eq!(counts.stk_push, 3, "first push, refused attempt, one retry");
    assert_eq!(fetches.count(), 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn token_refused_twice_is_not_retried_again() {
    let sim = sim().await;
    let client = client(config(&sim));
    let invalid = Fault::Status {
        http: 404,
        error_code: "404.001.03".into(),
        error_message: "Invalid Access Token".into(),
    };
    sim.fault(Endpoint::StkPush, invalid, 2);
    let err = client.stk_push(&push("0708374149", 1)).await.unwrap_err();
    assert_eq!(err.error_code(), Some("404.001.03"));
    assert_eq!(sim.counts().stk_push, 2);
    assert_eq!(sim.counts().oauth, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn hung_push_times_out_with_outcome_unknown() {
    let sim = sim().await;
    let mut config = config(&sim);
    config.request_timeout = Duration::from_millis(400);
    let client = client(config);
    // Fetch the token first, so the timeout is the push's.
    client
        .stk_push(&push("0708374149", 1))
        .await
        .expect("first push");

    sim.fault(Endpoint::StkPush, Fault::Hang, 1);
    let err = client.stk_push(&push("0708374150", 1)).await.unwrap_err();
    assert_eq!(err, DarajaError::TimedOut);
    assert!(err.is_outcome_unknown());
    assert_eq!(sim.counts().stk_push, 2, "never sent twice");
    sim.shutdown().await;
}

#[tokio::test]
async fn injected_gateway_faults_map_to_typed_errors() {
    let sim = sim().await;
    let client = client(config(&sim));
    type Check = fn(&DarajaError) -> bool;
    let cases: Vec<(Fault, Check)> = vec![
        (
            Fault::Status {
                http: 400,
                error_code: "400.002.02".into(),
                error_message: "Bad Request - Invalid PhoneNumber".into(),
            },
            |e| {
                matches!(
                    e,
                    DarajaError::Rejected {
                        http_status: 400,
                        request_id: Some(_),
                        ..
                    }
                ) && e.error_code() == Some("400.002.02")
            },
        ),
        (Fault::SpikeArrest, |e| {
            matches!(
                e,
                DarajaError::Unavailable {
                    http_status: Some(500),
                    ..
                }
            ) && e.error_code() == Some("500.003.02")
                && !e.is_outcome_unknown()
        }),
        (Fault::InternalError, |e| {
            matches!(
                e,
                DarajaError::Unavailable {
                    http_status: Some(500),
                    ..
                }
            ) && e.error_code() == Some("500.003.1001")
                && e.is_outcome_unknown()
        }),
        (Fault::RateLimited, |e| {
            matches!(e, DarajaError::RateLimited)
        }),
        (Fault::Garbage, |e| {
            matches!(
                e,
                DarajaError::BadResponse {
                    http_status: 200,
                    ..
                }
            ) && e.is_outcome_unknown()
        }),
    ];
    for (i, (fault, check)) in cases.into_iter().enumerate() {
        let description = format!("{fault:?}");
        sim.fault(Endpoint::StkPush, fault, 1);
        let err = client
            .stk_push(&push(&format!("07083741{i:02}"), 1))
            .await
            .unwrap_err();
        assert!(check(&err), "{description} gave {err:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn second_push_to_a_phone_with_an_open_prompt_is_subscriber_busy() {
    let sim = sim().await;
    sim.script(
        None,
        vec![Outcome::success().delay(Duration::from_secs(60))],
    );
    let client = client(config(&sim));
    client
        .stk_push(&push("0708374149", 1))
        .await
        .expect("first push");

    let err = client
        .stk_push(&push("+254 708 374 149", 2))
        .await
        .unwrap_err();
    assert!(err.is_subscriber_busy(), "{err:?}");
    assert_eq!(err.error_code(), Some("500.001.1001"));
    assert!(!err.is_outcome_unknown());
    sim.shutdown().await;
}

#[tokio::test]
async fn wrong_passkey_is_rejected_as_wrong_credentials() {
    let sim = sim().await;
    let mut config = config(&sim);
    config.passkey = Secret::from("not-the-passkey");
    let err = client(config)
        .stk_push(&push("0708374149", 1))
        .await
        .unwrap_err();
    match &err {
        DarajaError::Rejected {
            http_status: 500,
            error_code: Some(code),
            error_message,
            ..
        } => {
            assert_eq!(code, "500.001.1001");
            assert_eq!(error_message, "Wrong credentials");
        }
        other => panic!("expected Wrong credentials, got {other:?}"),
    }
    assert!(!err.is_subscriber_busy());
    sim.shutdown().await;
}

#[tokio::test]
async fn refused_consumer_credentials_are_an_auth_error_and_nothing_is_pushed() {
    let sim = sim_with(SimConfig {
        consumer_key: Some("right-key".into()),
        consumer_secret: Some("right-secret".into()),
        ..SimConfig::default()
    })
    .await;
    let err = client(config(&sim))
        .stk_push(&push("0708374149", 1))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, DarajaError::Auth { error_code: Some(c), .. } if c == "400.008.01"),
        "{err:?}"
    );
    assert_eq!(sim.counts().stk_push, 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn query_for_an_unknown_checkout_id_is_rejected() {
    let sim = sim().await;
    let client = client(config(&sim));
    let err = client
        .stk_query(
            "ws_CO_000000000000",
            daraja::Deadline::after(std::time::Duration::from_secs(30)),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            DarajaError::Rejected {
                http_status: 400,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.error_code(), Some("400.002.02"));
    sim.shutdown().await;
}

#[tokio::test]
async fn query_rate_limit_is_rate_limited() {
    let sim = sim_with(SimConfig {
        query_rate_limit_per_minute: Some(1),
        ..SimConfig::default()
    })
    .await;
    let client = client(config(&sim));
    let ack = client
        .stk_push(&push("0708374149", 1))
        .await
        .expect("push accepted");
    client
        .stk_query(
            &ack.checkout_request_id,
            daraja::Deadline::after(std::time::Duration::from_secs(30)),
        )
        .await
        .expect("first query");
    let err = client
        .stk_query(
            &ack.checkout_request_id,
            daraja::Deadline::after(std::time::Duration::from_secs(30)),
        )
        .await
        .unwrap_err();
    assert_eq!(err, DarajaError::RateLimited);
    sim.shutdown().await;
}
