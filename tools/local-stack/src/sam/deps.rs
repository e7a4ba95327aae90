//! `local-stack sam-deps`: what the functions need (moto and the Daraja simulator), started
//! where `sam local` containers reach it, with the table, the sample payments and the demo
//! phones' scripted outcomes.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use ::dynamo::DynamoStore;
use daraja_sim::{Outcome, SimConfig};
use payments::payment::PaymentStatus;
use serde_json::Value;
use tokio::process::Command;

use super::last3;
use crate::dynamo::{self, Moto};
use crate::events;
use crate::pipeline::{EventsOptions, Pipeline, WebhookOptions};
use crate::template::Template;

/// Printed by `sam-deps` once everything is up; `sam-local` waits for it.
pub(super) const READY: &str = "sam-deps ready:";

/// Phones whose first push the simulator answers in a set way, for the README's start-api
/// walk-through: (phone, what the customer does, the status the payment must end in).
pub const DEMO_PHONES: [(&str, &str, PaymentStatus); 3] = [
    ("0711000111", "pays", PaymentStatus::Completed),
    ("0722000222", "cancels (1032)", PaymentStatus::Failed),
    // The callback never comes; the reconciliation's STK query settles it.
    (
        "0733000333",
        "pays, callback lost",
        PaymentStatus::Completed,
    ),
];

fn demo_outcome(phone: &str) -> Option<Outcome> {
    match phone {
        "0722000222" => Some(Outcome::code(1032)),
        // The prompt closes at once, so a query made after the push answered learns the result.
        "0733000333" => Some(Outcome::success().lost().delay(Duration::ZERO)),
        _ => None,
    }
}

/// The settings `events/env.json` gives the functions; the dependencies follow them.
#[derive(Debug, Clone)]
pub(super) struct LocalEnv {
    pub(super) table: String,
    pub(super) dynamodb_port: u16,
    pub(super) daraja_port: u16,
    pub(super) shortcode: String,
    pub(super) passkey: String,
    pub(super) consumer_key: String,
    pub(super) consumer_secret: String,
    /// `host:port` of `CALLBACK_BASE_URL`: where `sam local start-api` must listen.
    pub(super) callback_addr: String,
}

impl LocalEnv {
    pub(super) fn load(root: &Path) -> Result<LocalEnv, String> {
        let path = events::events_dir(root).join("env.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let json: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let push = &json["StkPushFunction"];
        let get = |name: &str| {
            push[name]
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| format!("{}: StkPushFunction.{name} missing", path.display()))
        };
        let port = |name: &str| -> Result<u16, String> {
            let url = get(name)?;
            url.rsplit(':')
                .next()
                .and_then(|p| p.trim_end_matches('/').parse().ok())
                .ok_or_else(|| format!("{}: {name} = {url} has no port", path.display()))
        };
        Ok(LocalEnv {
            table: get("TABLE_NAME")?,
            dynamodb_port: port("AWS_ENDPOINT_URL_DYNAMODB")?,
            daraja_port: port("DARAJA_BASE_URL")?,
            shortcode: get("DARAJA_SHORTCODE")?,
            passkey: get("DARAJA_PASSKEY")?,
            consumer_key: get("DARAJA_CONSUMER_KEY")?,
            consumer_secret: get("DARAJA_CONSUMER_SECRET")?,
            callback_addr: get("CALLBACK_BASE_URL")?
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string(),
        })
    }
}

/// The address `sam local` containers reach this host on: the Docker bridge's own address on
/// Linux (what `host-gateway` names); elsewhere (Docker Desktop forwards
/// `host.docker.internal` to the host's loopback) 127.0.0.1.
pub async fn container_host() -> IpAddr {
    let shown = Command::new("ip")
        .args(["-4", "-o", "addr", "show", "dev", "docker0"])
        .stderr(Stdio::null())
        .output()
        .await;
    // `5: docker0    inet 172.17.0.1/16 brd …`
    shown
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut words = text.split_whitespace();
            words.find(|w| *w == "inet")?;
            words.next()?.split('/').next()?.parse().ok()
        })
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// `local-stack sam-deps`: the DynamoDB emulator and the Daraja simulator on the ports
/// `events/env.json` names, the table with the payments the callback events settle, and the
/// scripted demo phones; runs until Ctrl-C or SIGTERM.
pub async fn deps(host: Option<IpAddr>) -> ExitCode {
    match run_deps(host).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sam-deps: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run_deps(host: Option<IpAddr>) -> Result<(), String> {
    let root = dynamo::workspace_root().ok_or("no template.yaml above this directory")?;
    let env = LocalEnv::load(&root)?;
    let host = match host {
        Some(host) => host,
        None => container_host().await,
    };
    let moto = Moto::start_on(host, env.dynamodb_port)
        .await
        .map_err(|e| format!("DynamoDB emulator on {host}:{}: {e}", env.dynamodb_port))?;
    let client = dynamo::client(&moto.endpoint()).await;
    dynamo::create_table_from_template(&client, &root.join("template.yaml"), &env.table)
        .await
        .map_err(|e| e.to_string())?;
    events::seed_event_payments(&DynamoStore::new(client, env.table.clone()))
        .await
        .map_err(|e| format!("seeding the sample payments: {e}"))?;
    // The bus and the webhook queues events/env.json names (suffix `local`), and one webhook
    // parked in the dead-letter queue for the replay event to move back.
    let template = Template::load(&root.join("template.yaml")).map_err(|e| e.to_string())?;
    let webhook = WebhookOptions::local(
        "http://127.0.0.1:8002/webhooks".into(),
        "local-webhook-secret-8c3d1a".into(),
        Duration::from_secs(86_400),
    );
    let events_options = EventsOptions {
        webhook: Some(webhook),
    };
    let (pipeline, _) = Pipeline::create(&moto.endpoint(), "local", &template, &events_options)
        .await
        .map_err(|e| e.to_string())?;
    pipeline
        .seed_dead_letter(events::EVENT_PAYMENTS[1], events::PARKED_WEBHOOK)
        .await
        .map_err(|e| e.to_string())?;

    let sim = daraja_sim::start(
        SocketAddr::new(host, env.daraja_port),
        SimConfig {
            shortcode: env.shortcode.clone(),
            passkey: env.passkey.clone(),
            consumer_key: Some(env.consumer_key.clone()),
            consumer_secret: Some(env.consumer_secret.clone()),
            ..SimConfig::default()
        },
    )
    .await
    .map_err(|e| format!("Daraja simulator on {host}:{}: {e}", env.daraja_port))?;
    for (phone, _, _) in DEMO_PHONES {
        if let Some(outcome) = demo_outcome(phone) {
            sim.script(Some(phone), vec![outcome]);
        }
    }

    println!(
        "{READY} DynamoDB {} (table {}), Daraja simulator {}",
        moto.endpoint(),
        env.table,
        sim.base_url()
    );
    println!(
        "  seeded: {} pending payments the callback events settle",
        events::EVENT_PAYMENTS.len()
    );
    for (phone, what, _) in DEMO_PHONES {
        println!(
            "  the first push to the README's phone …{}: the customer {what}",
            last3(phone)
        );
    }
    println!(
        "  event bus {}, webhook queue {}, one webhook parked in its dead-letter queue",
        pipeline.bus,
        pipeline.webhook_queue.as_deref().unwrap_or("-")
    );
    println!("Ctrl-C stops both.");

    wait_for_stop().await;
    sim.shutdown().await;
    moto.shutdown().await;
    Ok(())
}

pub(super) async fn wait_for_stop() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
