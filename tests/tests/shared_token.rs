//! One Daraja OAuth token for every container, kept in the payments table.
//!
//! Over the real local stack: three `stk-push` processes side by side (pool size 3) under the
//! Lambda runtime emulator, the simulator counting token requests, with
//! `invalidate_previous_tokens` on (Daraja's FAQ: each new token may kill the earlier ones), so a
//! second token fetched anywhere would also show as failed pushes. And against the DynamoDB
//! emulator directly: the item's layout and a lease left behind by a container that died.
//!
//! Needs the function binaries: `cargo build -p stk-push -p stk-callback -p payment-status -p reconcile`.

mod common;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_sdk_dynamodb::types::AttributeValue;
use aws_sdk_dynamodb::Client;
use daraja::token::{AccessToken, Lease, TokenStore};
use daraja::{
    AccountReference, Amount, DarajaClient, DarajaConfig, PhoneNumber, PushRequest, Secret,
    ShortCode, SystemClock, TransactionDesc, TransactionKind,
};
use daraja_sim::{Endpoint, SimConfig, SimHandle, SANDBOX_PASSKEY, SANDBOX_SHORTCODE};
use dynamo::token::{DynamoTokenStore, TOKEN_PK};
use local_stack::{LocalStack, StackOptions};
use serde_json::{json, Value};
use tokio::sync::Semaphore;

use common::fresh_table;

fn sim_config() -> SimConfig {
    SimConfig {
        callback_delay: Duration::from_millis(100),
        invalidate_previous_tokens: true,
        ..SimConfig::default()
    }
}

async fn three_push_containers() -> LocalStack {
    LocalStack::start(StackOptions {
        pool_size: 3,
        sim: sim_config(),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"))
}

/// Requests in flight at once: enough to keep every container busy, few enough that none waits
/// out API Gateway's 30 s integration timeout behind the others on a small machine.
const IN_FLIGHT: usize = 12;

/// `count` concurrent `POST /payments`, each to its own phone; returns every status and body.
async fn pay_concurrently(stack: &LocalStack, first_phone: u32, count: u32) -> Vec<(u16, String)> {
    let http = reqwest::Client::new();
    let url = format!("{}/payments", stack.api_url());
    let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
    let requests: Vec<_> = (first_phone..first_phone + count)
        .map(|n| {
            let (http, url, in_flight) = (http.clone(), url.clone(), in_flight.clone());
            tokio::spawn(async move {
                let _turn = in_flight.acquire_owned().await.expect("semaphore open");
                let body =
                    json!({"phone": format!("0713{n:06}"), "amount": 10, "reference": "INV-1"});
                match http.post(url).json(&body).send().await {
                    Ok(response) => (
                        response.status().as_u16(),
                        response.text().await.unwrap_or_default(),
                    ),
                    Err(e) => (0, e.to_string()),
                }
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for request in requests {
        statuses.push(request.await.expect("request task"));
    }
    statuses
}

fn assert_all_accepted(answers: &[(u16, String)]) {
    let refused: Vec<_> = answers
        .iter()
        .filter(|(status, _)| *status != 202)
        .collect();
    assert!(refused.is_empty(), "not accepted: {refused:?}");
}

/// Which of the pool's processes logged a Daraja call.
fn containers_that_called_daraja(stack: &LocalStack) -> Vec<usize> {
    (0..3)
        .filter(|i| {
            let tag = format!("[stk-push#{i}]");
            stack
                .logs()
                .iter()
                .any(|l| l.contains(&tag) && l.contains("daraja call"))
        })
        .collect()
}

async fn token_item(client: &Client, table: &str) -> HashMap<String, AttributeValue> {
    client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(TOKEN_PK.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .expect("get_item")
        .item
        .expect("token item stored")
}

fn text(item: &HashMap<String, AttributeValue>, name: &str) -> Option<String> {
    match item.get(name) {
        Some(AttributeValue::S(v)) | Some(AttributeValue::N(v)) => Some(v.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn three_push_containers_serve_100_payments_with_one_token_request() {
    let stack = three_push_containers().await;
    let started = Instant::now();

    let statuses = pay_concurrently(&stack, 0, 100).await;

    let elapsed = started.elapsed();
    assert_all_accepted(&statuses);
    let counts = stack.sim().counts();
    println!(
        "100 pushes over 3 containers in {elapsed:?}: {} token request(s), {} pushes",
        counts.oauth, counts.stk_push
    );
    assert_eq!(counts.oauth, 1);
    assert_eq!(counts.stk_push, 100);
    assert_eq!(containers_that_called_daraja(&stack), vec![0, 1, 2]);

    // The shared token sits in the table, and nowhere in any log.
    let item = token_item(&stack.dynamo(), stack.table()).await;
    let token = text(&item, "access_token").expect("access_token");
    assert!(stack.logs().iter().all(|l| !l.contains(&token)));
    assert_eq!(
        text(&item, "lease_until"),
        None,
        "the lease ends with the save"
    );
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalidated_token_costs_one_refresh_across_three_containers() {
    let stack = three_push_containers().await;
    let warm = pay_concurrently(&stack, 0, 12).await;
    assert_all_accepted(&warm);
    assert_eq!(stack.sim().counts().oauth, 1);
    let before = token_item(&stack.dynamo(), stack.table()).await;

    // Daraja stops accepting the token that every container holds in memory.
    stack.sim().expire_tokens();
    let statuses = pay_concurrently(&stack, 100, 30).await;

    assert_all_accepted(&statuses);
    let counts = stack.sim().counts();
    println!(
        "after expire_tokens: 30 pushes over 3 containers, {} token request(s) in all",
        counts.oauth
    );
    assert_eq!(counts.oauth, 2, "exactly one refresh");
    let refused = stack
        .sim()
        .requests()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::StkPush && r.status == Some(404))
        .count();
    println!("pushes refused with 404.001.03 and retried once: {refused}");
    // Each container learns of the expiry at most once per push in flight, then reuses the new token.
    assert!(
        (1..=3).contains(&refused),
        "{refused} pushes refused with 404.001.03"
    );
    let after = token_item(&stack.dynamo(), stack.table()).await;
    assert_ne!(text(&before, "access_token"), text(&after, "access_token"));
    stack.shutdown().await;
}

// ---- against the DynamoDB emulator directly ----

async fn sim() -> SimHandle {
    daraja_sim::start("127.0.0.1:0".parse().expect("address"), sim_config())
        .await
        .expect("simulator starts")
}

fn epoch_millis() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn epoch_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the shared store answered every container, for the assertions to count.
#[derive(Default)]
struct StoreLog {
    /// Each `try_lease` answer, with the epoch milliseconds just after the store gave it.
    leases: Mutex<Vec<(Lease, i64)>>,
    /// Tokens saved (each fetched token is) by a container holding the lease…
    saves_under_lease: AtomicUsize,
    /// … and by one that had given up waiting for it.
    saves_without_lease: AtomicUsize,
}

impl StoreLog {
    fn leases(&self) -> Vec<(Lease, i64)> {
        self.leases
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn granted(&self) -> Vec<i64> {
        self.leases()
            .into_iter()
            .filter(|(lease, _)| *lease == Lease::Granted)
            .map(|(_, at)| at)
            .collect()
    }

    fn busy(&self) -> usize {
        self.leases()
            .iter()
            .filter(|(lease, _)| *lease == Lease::Busy)
            .count()
    }
}

/// `TokenStore`'s methods as `#[async_trait]` declares them (this crate does not use the macro).
type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A container's `DynamoTokenStore`, telling a log shared by all containers what it answered.
struct Logged {
    store: DynamoTokenStore,
    log: Arc<StoreLog>,
    /// Granted a lease that no save or release has ended yet.
    holding: AtomicBool,
}

impl TokenStore for Logged {
    fn load<'s, 'f>(&'s self) -> StoreFuture<'f, Option<AccessToken>>
    where
        's: 'f,
        Self: 'f,
    {
        self.store.load()
    }

    fn save<'s, 't, 'f>(&'s self, token: &'t AccessToken) -> StoreFuture<'f, ()>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.store.save(token).await;
            let saves = if self.holding.swap(false, Ordering::SeqCst) {
                &self.log.saves_under_lease
            } else {
                &self.log.saves_without_lease
            };
            saves.fetch_add(1, Ordering::SeqCst);
        })
    }

    fn invalidate<'s, 't, 'f>(&'s self, token: &'t AccessToken) -> StoreFuture<'f, ()>
    where
        's: 'f,
        't: 'f,
        Self: 'f,
    {
        self.store.invalidate(token)
    }

    fn try_lease<'s, 'f>(&'s self) -> StoreFuture<'f, Lease>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let lease = self.store.try_lease().await;
            if lease == Lease::Granted {
                self.holding.store(true, Ordering::SeqCst);
            }
            self.log
                .leases
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push((lease, epoch_millis()));
            lease
        })
    }

    fn release<'s, 'f>(&'s self) -> StoreFuture<'f, ()>
    where
        's: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            self.store.release().await;
            self.holding.store(false, Ordering::SeqCst);
        })
    }
}

/// A container: its own client and memory, the shared table.
fn container(sim: &SimHandle, client: &Client, table: &str) -> Arc<DarajaClient> {
    container_logged(sim, client, table, None)
}

/// A container whose store answers are also written to `log`.
fn container_logged(
    sim: &SimHandle,
    client: &Client,
    table: &str,
    log: Option<Arc<StoreLog>>,
) -> Arc<DarajaClient> {
    let clock = Arc::new(SystemClock);
    let config = DarajaConfig {
        base_url: sim.base_url(),
        consumer_key: Secret::from("key"),
        consumer_secret: Secret::from("secret"),
        passkey: Secret::from(SANDBOX_PASSKEY),
        shortcode: ShortCode::parse(SANDBOX_SHORTCODE).expect("shortcode"),
        kind: TransactionKind::PayBill,
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    };
    let store = DynamoTokenStore::new(client.clone(), table, clock.clone());
    let tokens: Arc<dyn TokenStore> = match log {
        Some(log) => Arc::new(Logged {
            store,
            log,
            holding: AtomicBool::new(false),
        }),
        None => Arc::new(store),
    };
    Arc::new(app::daraja_client(config, clock, tokens).expect("client"))
}

fn push(n: u32) -> PushRequest {
    PushRequest {
        charge: daraja::Charge {
            phone: PhoneNumber::parse(&format!("0714{n:06}")).expect("phone"),
            amount: Amount::new(10).expect("amount"),
            reference: AccountReference::parse("INV-1").expect("reference"),
            description: TransactionDesc::default(),
        },
        callback_url: "http://127.0.0.1:9/hooks/stk".to_owned(),
        deadline: daraja::Deadline::after(std::time::Duration::from_secs(30)),
    }
}

async fn push_from_all(containers: &[Arc<DarajaClient>], per_container: u32) {
    let mut pushes = Vec::new();
    for (c, client) in containers.iter().enumerate() {
        for i in 0..per_container {
            let client = client.clone();
            let n = c as u32 * per_container + i;
            pushes.push(tokio::spawn(async move { client.stk_push(&push(n)).await }));
        }
    }
    for push in pushes {
        push.await.expect("push task").expect("push accepted");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_item_holds_the_token_and_its_expiry_as_ttl() {
    let (client, table) = fresh_table("tokens").await;
    let sim = sim().await;
    let containers: Vec<_> = (0..3).map(|_| container(&sim, &client, &table)).collect();

    let before = epoch_secs();
    push_from_all(&containers, 4).await;
    let after = epoch_secs();

    assert_eq!(sim.counts().oauth, 1);
    let issued: Value = sim
        .requests()
        .into_iter()
        .find(|r| r.endpoint == Endpoint::OAuth)
        .map(|r| r.response)
        .expect("token request recorded");
    let item = token_item(&client, &table).await;
    assert_eq!(
        text(&item, "access_token").as_deref(),
        issued["access_token"].as_str()
    );
    let expires_at: i64 = text(&item, "expires_at")
        .and_then(|v| v.parse().ok())
        .expect("expires_at in epoch seconds");
    let lifetime: i64 = issued["expires_in"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .expect("expires_in in seconds");
    assert_eq!(lifetime, 3599);
    // Fetched during the pushes, it expires `expires_in` after that (rounded down to seconds).
    assert!(
        (before + lifetime..=after + lifetime).contains(&expires_at),
        "expires_at {expires_at}, fetched between {before} and {after} (epoch seconds)"
    );
    assert_eq!(text(&item, "lease_until"), None);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lease_left_by_a_dead_container_delays_but_does_not_multiply_refreshes() {
    let (client, table) = fresh_table("tokens").await;
    let sim = sim().await;
    // A container took the lease and died before saving a token.
    let until = epoch_millis() + 1_500;
    client
        .put_item()
        .table_name(&table)
        .item("pk", AttributeValue::S(TOKEN_PK.to_owned()))
        .item("lease_until", AttributeValue::N(until.to_string()))
        .send()
        .await
        .expect("put lease");
    let log = Arc::new(StoreLog::default());
    let containers: Vec<_> = (0..3)
        .map(|_| container_logged(&sim, &client, &table, Some(log.clone())))
        .collect();
    let started = Instant::now();

    push_from_all(&containers, 4).await;

    println!(
        "lease left for 1.5 s: 12 pushes from 3 containers in {:?}, {} token request(s), \
         {} lease(s) refused while it was held",
        started.elapsed(),
        sim.counts().oauth,
        log.busy()
    );
    // The dead container's lease was respected: no lease was granted before it ran out (each
    // grant is timed just after the store answered). A second grant is possible and harmless:
    // a waiter that asked just after the holder saved gives it back and reads the token.
    let granted = log.granted();
    assert!(!granted.is_empty(), "never granted: {:?}", log.leases());
    assert!(
        granted.iter().all(|at| *at >= until),
        "the lease was not respected: granted at {granted:?}, the dead one ran until {until}"
    );
    // It delayed the refresh but did not multiply it: one token fetched, by the lease holder.
    // A waiter that waited out the wait limit would have fetched and saved one without the lease.
    assert_eq!(sim.counts().oauth, 1);
    assert_eq!(log.saves_under_lease.load(Ordering::SeqCst), 1);
    assert_eq!(
        log.saves_without_lease.load(Ordering::SeqCst),
        0,
        "a container gave up waiting for the lease"
    );
    assert_eq!(sim.counts().stk_push, 12);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lease_the_store_cannot_grant_is_not_granted() {
    // The table is not there (as unreachable as throttled): the container is told to wait, not
    // to fetch, so a store outage cannot send every container to Daraja at once.
    let (client, _) = fresh_table("tokens").await;
    let store = DynamoTokenStore::new(client, "no-such-table", Arc::new(SystemClock));
    assert_eq!(store.try_lease().await, Lease::Busy);
}

#[tokio::test]
async fn saving_a_token_ends_only_the_saver_s_own_lease() {
    let (client, table) = fresh_table("tokens").await;
    let clock = Arc::new(daraja::FixedClock::new(chrono::Utc::now()));
    let first = DynamoTokenStore::new(client.clone(), table.clone(), clock.clone());
    let second = DynamoTokenStore::new(client.clone(), table.clone(), clock.clone());
    let token = AccessToken {
        value: Secret::new("token-1"),
        expires_at: chrono::Utc::now() + chrono::Duration::hours(1),
    };
    // The first container's lease runs out while it fetches; the second takes a new one.
    assert_eq!(first.try_lease().await, Lease::Granted);
    clock.advance(chrono::Duration::seconds(6));
    assert_eq!(second.try_lease().await, Lease::Granted);
    let second_lease = text(&token_item(&client, &table).await, "lease_until");
    assert!(second_lease.is_some());
    // The first saves what it fetched: the token is there, the second's lease too.
    first.save(&token).await;
    let item = token_item(&client, &table).await;
    assert_eq!(text(&item, "access_token").as_deref(), Some("token-1"));
    assert_eq!(text(&item, "lease_until"), second_lease);
    // The second's own save ends its lease.
    second.save(&token).await;
    assert_eq!(
        text(&token_item(&client, &table).await, "lease_until"),
        None
    );
}
