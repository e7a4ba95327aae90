//! Calls per operation, in-process with the functions' own services: DynamoDB requests counted
//! by an SDK interceptor on the client, Daraja requests by the simulator. Then the price of a
//! token fetched on every push (what the common tutorials do) at 20 ms of Daraja latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ::dynamo::token::DynamoTokenStore;
use ::dynamo::DynamoLedger;
use ::dynamo::DynamoRawStore;
use ::dynamo::DynamoStore;
use app::api::{get_payment, CallbackKeys, CallbackService, PushAnswer, PushService};
use app::api::{Confirmation, SourceAllowList};
use bench::events::{self, SAFARICOM_IP};
use bench::stats::{Ms, Samples, Verdict};
use bench::CountRequests;
use daraja::{
    Clock, DarajaClient, DarajaConfig, NoSharedTokens, Secret, ShortCode, SystemClock,
    TransactionKind,
};
use daraja_sim::{SimConfig, SimHandle, SANDBOX_PASSKEY, SANDBOX_SHORTCODE};
use local_stack::dynamo::{self, Moto};
use payments::intent::PushLedger;

use crate::report::Report;

const WARM_PUSHES: usize = 100;
/// Pushes with an `Idempotency-Key`, then as many replays of them.
const KEYED_PUSHES: usize = 20;
/// The first of the phones the pushes of [`counts`] use, `07<number>`.
const PUSH_PHONES: usize = 50_000_000;
const LATENCY_PUSHES: usize = 40;
const DARAJA_LATENCY: Duration = Duration::from_millis(20);
/// The callback key: a callback reaches its payment with the URL token of its push.
const CALLBACK_KEY: &str = "bench-callback-key-of-32-chars!!";

struct World {
    sim: SimHandle,
    counter: CountRequests,
    counted: aws_sdk_dynamodb::Client,
    table: String,
    clock: Arc<dyn Clock>,
    config: DarajaConfig,
}

impl World {
    fn push_service(&self, daraja: DarajaClient, ledger: Arc<dyn PushLedger>) -> PushService {
        PushService {
            daraja: Arc::new(daraja),
            ledger,
            clock: self.clock.clone(),
            callback_keys: CallbackKeys::parse(CALLBACK_KEY).expect("a valid key"),
            callback_base_url: Some("http://127.0.0.1:9".to_string()),
            phone_lock: app::api::DEFAULT_PHONE_LOCK,
        }
    }

    /// As the push function builds it: the token shared through the table.
    fn shared_token_client(&self) -> Result<DarajaClient, String> {
        let tokens = DynamoTokenStore::new(self.counted.clone(), &self.table, self.clock.clone());
        app::daraja_client(self.config.clone(), self.clock.clone(), Arc::new(tokens))
            .map_err(|e| e.to_string())
    }
}

async fn push(service: &PushService, phone: &str) -> Result<String, String> {
    push_with(service, phone, None).await
}

/// A push with `key` as its `Idempotency-Key` when given; the checkout id of its `202` (a
/// replay's too).
async fn push_with(
    service: &PushService,
    phone: &str,
    key: Option<&str>,
) -> Result<String, String> {
    let body = events::push_body(phone, 100);
    match service
        .start(
            body.as_bytes(),
            None,
            key.map(str::as_bytes),
            daraja::Deadline::after(std::time::Duration::from_secs(25)),
        )
        .await
    {
        Ok(PushAnswer::Accepted(accepted)) => Ok(accepted.checkout_request_id),
        Ok(PushAnswer::Replayed(answer)) if answer.status == 202 => answer.body
            ["checkout_request_id"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| format!("replay without a checkout id: {}", answer.body)),
        Ok(other) => Err(format!("push: unexpected answer {}", other.body())),
        Err(e) => Err(format!("push refused: {} {}", e.status(), e.body())),
    }
}

/// [`KEYED_PUSHES`] pushes with the keys `bench-key-0…`, on the phones `07<first>` up: the
/// Daraja requests each made (0 for replays).
async fn keyed_pushes(world: &World, service: &PushService, first: usize) -> Result<f64, String> {
    let before = world.sim.counts();
    for i in 0..KEYED_PUSHES {
        let phone = format!("07{:08}", first + i);
        push_with(service, &phone, Some(&format!("bench-key-{i}"))).await?;
    }
    let after = world.sim.counts();
    let daraja = (after.oauth - before.oauth) + (after.stk_push - before.stk_push);
    Ok(daraja as f64 / KEYED_PUSHES as f64)
}

fn by_operation(counter: &CountRequests) -> String {
    counter
        .by_operation()
        .iter()
        .map(|(op, n)| format!("{n} {op}"))
        .collect::<Vec<_>>()
        .join(" + ")
}

pub async fn run(report: &mut Report) -> Result<(), String> {
    let moto = Moto::from_env().await.map_err(|e| e.to_string())?;
    let result = measure(&moto.endpoint(), report).await;
    moto.shutdown().await;
    result
}

async fn measure(endpoint: &str, report: &mut Report) -> Result<(), String> {
    let client = dynamo::client(endpoint).await;
    let table = format!("bench-calls-{}", std::process::id());
    let template = dynamo::template_path().ok_or("template.yaml not found")?;
    dynamo::create_table_from_template(&client, &template, &table)
        .await
        .map_err(|e| e.to_string())?;
    let sim = daraja_sim::start(
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
        SimConfig {
            callback_delay: Duration::from_secs(3600),
            ..SimConfig::default()
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    let counter = CountRequests::default();
    let world = World {
        counted: counter.attach(&client),
        counter,
        table,
        clock: Arc::new(SystemClock),
        config: DarajaConfig {
            base_url: sim.base_url(),
            consumer_key: Secret::from("bench-consumer-key"),
            consumer_secret: Secret::from("bench-consumer-secret"),
            passkey: Secret::from(SANDBOX_PASSKEY),
            shortcode: ShortCode::parse(SANDBOX_SHORTCODE).map_err(|e| e.to_string())?,
            kind: TransactionKind::PayBill,
            connect_timeout: DarajaConfig::DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DarajaConfig::DEFAULT_REQUEST_TIMEOUT,
        },
        sim,
    };
    let result = counts(&world, report).await;
    let result = match result {
        Ok(()) => token_price(&world, report).await,
        Err(e) => Err(e),
    };
    world.sim.clone().shutdown().await;
    // Best effort: the table goes with moto when this process started it.
    let _ = client.delete_table().table_name(&world.table).send().await;
    result
}

async fn counts(world: &World, report: &mut Report) -> Result<(), String> {
    let ledger: Arc<dyn PushLedger> =
        Arc::new(DynamoLedger::new(world.counted.clone(), &world.table));
    let service = world.push_service(world.shared_token_client()?, ledger);
    let counter = &world.counter;
    let phone = |i: usize| format!("07{:08}", PUSH_PHONES + i);

    println!("\n## Calls per operation (in-process services over moto and the simulator; DynamoDB counted by an SDK interceptor)\n");
    println!("| operation | n | DynamoDB requests each | which | Daraja requests each | p50 in-process |");
    println!("|---|---|---|---|---|---|");

    counter.reset();
    let before = world.sim.counts();
    push(&service, &phone(WARM_PUSHES)).await?;
    let after = world.sim.counts();
    println!(
        "| first push of a container (no token yet) | 1 | {} | {} | {} | |",
        counter.total(),
        by_operation(counter),
        (after.oauth - before.oauth) + (after.stk_push - before.stk_push)
    );

    counter.reset();
    let before = world.sim.counts();
    let mut ids = Vec::with_capacity(WARM_PUSHES);
    for i in 0..WARM_PUSHES {
        ids.push(push(&service, &phone(i)).await?);
    }
    let after = world.sim.counts();
    let dynamo_per_push = counter.total() as f64 / WARM_PUSHES as f64;
    let daraja_per_push = ((after.oauth - before.oauth) + (after.stk_push - before.stk_push))
        as f64
        / WARM_PUSHES as f64;
    println!(
        "| warm push (table growing to {} items) | {WARM_PUSHES} | {dynamo_per_push:.2} | {} | {daraja_per_push:.2} | |",
        WARM_PUSHES * 3,
        by_operation(counter)
    );
    report.row(
        "DynamoDB requests per warm push",
        format!("{dynamo_per_push:.2}"),
        "≤ 2",
        Verdict::of(dynamo_per_push <= 2.0),
    );
    report.row(
        "Daraja requests per warm push (token cached)",
        format!("{daraja_per_push:.2}"),
        "1.00",
        Verdict::of(daraja_per_push == 1.0),
    );
    let transactions = |counter: &CountRequests| {
        counter
            .by_operation()
            .iter()
            .filter(|(op, _)| op == "TransactWriteItems")
            .map(|(_, n)| *n)
            .sum::<usize>() as f64
    };
    let keyless_transactions = transactions(counter) / WARM_PUSHES as f64;
    report.row(
        "TransactWriteItems per warm push without an Idempotency-Key",
        format!("{keyless_transactions:.2}"),
        "0",
        Verdict::of(keyless_transactions == 0.0),
    );

    counter.reset();
    let keyed_daraja = keyed_pushes(world, &service, PUSH_PHONES + WARM_PUSHES + 1).await?;
    let keyed = counter.total() as f64 / KEYED_PUSHES as f64;
    let keyed_transactions = transactions(counter) / KEYED_PUSHES as f64;
    println!(
        "| warm push with an Idempotency-Key | {KEYED_PUSHES} | {keyed:.2} | {} | {keyed_daraja:.2} | |",
        by_operation(counter)
    );
    report.row(
        "DynamoDB requests per warm push with an Idempotency-Key",
        format!("{keyed:.2}"),
        "≤ 2",
        Verdict::of(keyed <= 2.0),
    );
    report.row(
        "TransactWriteItems per warm push with an Idempotency-Key",
        format!("{keyed_transactions:.2}"),
        "≤ 1",
        Verdict::of(keyed_transactions <= 1.0),
    );
    counter.reset();
    let replay_daraja = keyed_pushes(world, &service, PUSH_PHONES + WARM_PUSHES + 1).await?;
    println!(
        "| replay of an accepted key (the payment found through intent-index) | {KEYED_PUSHES} | {:.2} | {} | {:.2} | |",
        counter.total() as f64 / KEYED_PUSHES as f64,
        by_operation(counter),
        replay_daraja
    );

    let callback_service = |confirmation: Confirmation| CallbackService {
        store: Arc::new(DynamoStore::new(world.counted.clone(), &world.table)),
        ledger: Arc::new(DynamoLedger::new(world.counted.clone(), &world.table)),
        raw: Arc::new(DynamoRawStore::new(world.counted.clone(), &world.table)),
        clock: world.clock.clone(),
        callback_keys: CallbackKeys::parse(CALLBACK_KEY).expect("a valid key"),
        allowed_sources: SourceAllowList::default(),
        confirmation,
    };
    let callbacks = callback_service(Confirmation::Off);
    let confirming = callback_service(Confirmation::Always);
    // Each result goes to its push's own callback URL; an orphan to a URL no push sent.
    let token_of = |id: &str| {
        world
            .sim
            .callback_url(id)
            .and_then(|url| url.rsplit('/').next().map(str::to_owned))
            .unwrap_or_else(|| {
                CallbackKeys::parse(CALLBACK_KEY)
                    .expect("a valid key")
                    .mint()
                    .token
            })
    };
    // `held`: delivered with CALLBACK_CONFIRM=always.
    let deliver = |held: bool, label: &'static str, bodies: Vec<(String, String)>| {
        let callbacks = if held { &confirming } else { &callbacks };
        async move {
            counter.reset();
            let n = bodies.len();
            let mut took = Vec::with_capacity(n);
            for (token, body) in bodies {
                let started = Instant::now();
                let answer = callbacks
                    .receive(Some(&token), Some(SAFARICOM_IP), body.as_bytes())
                    .await;
                took.push(started.elapsed());
                if answer.status != 200 {
                    return Err(format!(
                        "callback ({label}) answered {} {}",
                        answer.status, answer.body
                    ));
                }
            }
            let each = counter.total() as f64 / n as f64;
            println!(
                "| callback, {label} | {n} | {each:.2} | {} | 0 | {} |",
                by_operation(counter),
                Ms(Samples::new(took).median())
            );
            Ok::<f64, String>(each)
        }
    };
    let results: Vec<(String, String)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                token_of(id),
                events::callback_body(id, 100, &format!("TKR{i:07}")),
            )
        })
        .collect();
    let per_callback = deliver(
        false,
        "first result for a pending payment (common path)",
        results.clone(),
    )
    .await?;
    report.row(
        "DynamoDB requests per callback (common path)",
        format!("{per_callback:.2}"),
        "1",
        Verdict::of(per_callback == 1.0),
    );
    deliver(
        false,
        "exact duplicate (nothing written)",
        results[..20].to_vec(),
    )
    .await?;
    let orphans = (0..20)
        .map(|i| {
            let id = format!("ws_CO_orphan_{i}_{}", std::process::id());
            let body = events::callback_body(&id, 100, &format!("TKRORPH{i:03}"));
            (token_of(&id), body)
        })
        .collect();
    deliver(false, "orphan (unknown id: record + source)", orphans).await?;
    // Fresh payments on fresh phones: the first 100 phones are locked by the pushes above.
    let fresh = |from: usize| {
        let service = &service;
        async move {
            let mut ids = Vec::with_capacity(20);
            for i in from..from + 20 {
                ids.push(push(service, &phone(i)).await?);
            }
            Ok::<Vec<String>, String>(ids)
        }
    };
    let failed = fresh(WARM_PUSHES + 100).await?;
    let failures = failed
        .iter()
        .map(|id| (token_of(id), events::failure_body(id)))
        .collect();
    deliver(
        false,
        "final failure (FAILED, then the phone lock freed)",
        failures,
    )
    .await?;
    let held = fresh(WARM_PUSHES + 200).await?;
    let successes = held
        .iter()
        .enumerate()
        .map(|(i, id)| {
            (
                token_of(id),
                events::callback_body(id, 100, &format!("TKRHELD{i:03}")),
            )
        })
        .collect();
    deliver(
        true,
        "success held for confirmation (CALLBACK_CONFIRM=always)",
        successes,
    )
    .await?;

    counter.reset();
    let store = DynamoStore::new(world.counted.clone(), &world.table);
    let mut took = Vec::with_capacity(ids.len());
    for id in &ids {
        let started = Instant::now();
        get_payment(&store, Some(id), None)
            .await
            .map_err(|e| e.body().to_string())?;
        took.push(started.elapsed());
    }
    println!(
        "| status (GET /payments/{{id}}) | {} | {:.2} | {} | 0 | {} |",
        ids.len(),
        counter.total() as f64 / ids.len() as f64,
        by_operation(counter),
        Ms(Samples::new(took).median())
    );
    Ok(())
}

/// Pushes with the token cached against pushes that fetch a token each time (a new client per
/// push, as the common tutorials write it), with `DARAJA_LATENCY` on every Daraja answer.
async fn token_price(world: &World, report: &mut Report) -> Result<(), String> {
    let ledger: Arc<dyn PushLedger> =
        Arc::new(DynamoLedger::new(world.counted.clone(), &world.table));
    let phone = |i: usize| format!("07{:08}", 60_000_000 + i);
    let cached = world.push_service(world.shared_token_client()?, ledger.clone());
    push(&cached, &phone(LATENCY_PUSHES * 3)).await?;

    // The same pushes with no injected latency: moto's and the simulator's own share.
    let mut no_latency = Vec::with_capacity(LATENCY_PUSHES);
    for i in LATENCY_PUSHES * 2..LATENCY_PUSHES * 3 {
        bench::empty_table(&world.counted, &world.table).await?;
        let started = Instant::now();
        push(&cached, &phone(i)).await?;
        no_latency.push(started.elapsed());
    }

    world.sim.set_latency(DARAJA_LATENCY);
    let before = world.sim.counts();
    let mut with_cache = Vec::with_capacity(LATENCY_PUSHES);
    for i in 0..LATENCY_PUSHES {
        bench::empty_table(&world.counted, &world.table).await?;
        let started = Instant::now();
        push(&cached, &phone(i)).await?;
        with_cache.push(started.elapsed());
    }
    let mid = world.sim.counts();
    let mut fresh_each = Vec::with_capacity(LATENCY_PUSHES);
    for i in LATENCY_PUSHES..LATENCY_PUSHES * 2 {
        bench::empty_table(&world.counted, &world.table).await?;
        let started = Instant::now();
        let daraja = app::daraja_client(
            world.config.clone(),
            world.clock.clone(),
            Arc::new(NoSharedTokens),
        )
        .map_err(|e| e.to_string())?;
        push(&world.push_service(daraja, ledger.clone()), &phone(i)).await?;
        fresh_each.push(started.elapsed());
    }
    let after = world.sim.counts();
    world.sim.set_latency(Duration::ZERO);

    let (with_cache, fresh_each) = (Samples::new(with_cache), Samples::new(fresh_each));
    let n = LATENCY_PUSHES as f64;
    let ratio = fresh_each.median().as_secs_f64() / with_cache.median().as_secs_f64().max(1e-9);
    println!("\n## Token cached vs fetched on every push ({LATENCY_PUSHES} pushes each, {} Daraja latency injected, moto for DynamoDB)\n", Ms(DARAJA_LATENCY));
    println!("The table is emptied before each push, untimed, as it was when a push made two TransactWriteItems (which moto pays for by copying the table).\n");
    println!("| push | p50 | p99 | Daraja requests per push |");
    println!("|---|---|---|---|");
    let no_latency = Samples::new(no_latency);
    println!(
        "| token cached, no injected latency | {} | {} | 1.00 |",
        Ms(no_latency.median()),
        Ms(no_latency.percentile(99.0))
    );
    println!(
        "| token cached (this project) | {} | {} | {:.2} |",
        Ms(with_cache.median()),
        Ms(with_cache.percentile(99.0)),
        ((mid.oauth - before.oauth) + (mid.stk_push - before.stk_push)) as f64 / n
    );
    println!(
        "| token fetched per push (new client each time) | {} | {} | {:.2} |",
        Ms(fresh_each.median()),
        Ms(fresh_each.percentile(99.0)),
        ((after.oauth - mid.oauth) + (after.stk_push - mid.stk_push)) as f64 / n
    );
    println!("\nratio (fetched / cached, p50): {ratio:.2}×");
    report.row(
        "push p50 at 20 ms Daraja latency: cached token vs token per push",
        format!(
            "{} vs {} ({ratio:.2}×)",
            Ms(with_cache.median()),
            Ms(fresh_each.median())
        ),
        "(context)",
        Verdict::Info,
    );
    Ok(())
}
