//! `daraja-sim`: serve the Daraja simulator until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Parser;
use daraja_sim::{SimConfig, SANDBOX_PASSKEY, SANDBOX_SHORTCODE};

/// A local Daraja (M-Pesa Express) simulator.
///
/// Serves `GET /oauth/v1/generate`, `POST /mpesa/stkpush/v1/processrequest` and
/// `POST /mpesa/stkpushquery/v1/query` with Daraja's shapes and error codes, and POSTs the
/// STK callback to the push's CallBackURL after a delay. Point a Daraja client's base URL at
/// `http://<listen>`. Outcomes, faults and latency are scripted over HTTP under `/sim/…`
/// (see tools/daraja-sim/README.md). Logs go to stderr; set RUST_LOG to change the level.
#[derive(Debug, Parser)]
#[command(name = "daraja-sim", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one; the chosen address is logged).
    #[arg(long, env = "DARAJA_SIM_LISTEN", default_value = "127.0.0.1:8089")]
    listen: SocketAddr,

    /// The only BusinessShortCode the simulator knows.
    #[arg(long, env = "DARAJA_SIM_SHORTCODE", default_value = SANDBOX_SHORTCODE)]
    shortcode: String,

    /// Passkey used to check Password = base64(shortcode + passkey + timestamp).
    #[arg(long, env = "DARAJA_SIM_PASSKEY", default_value = SANDBOX_PASSKEY, hide_default_value = true)]
    passkey: String,

    /// Consumer key required by OAuth; any non-empty key is accepted when unset.
    #[arg(long, env = "DARAJA_SIM_CONSUMER_KEY", hide_env_values = true)]
    consumer_key: Option<String>,

    /// Consumer secret required by OAuth; any non-empty secret is accepted when unset.
    #[arg(long, env = "DARAJA_SIM_CONSUMER_SECRET", hide_env_values = true)]
    consumer_secret: Option<String>,

    /// How long the simulated customer takes before the callback is sent.
    #[arg(long, env = "DARAJA_SIM_CALLBACK_DELAY_MS", default_value_t = 300)]
    callback_delay_ms: u64,

    /// Lifetime of an access token (also the `expires_in` answered).
    #[arg(long, env = "DARAJA_SIM_TOKEN_TTL_SECS", default_value_t = 3599)]
    token_ttl_secs: u64,

    /// Every new token invalidates the ones issued before it.
    #[arg(long, env = "DARAJA_SIM_INVALIDATE_PREVIOUS_TOKENS")]
    invalidate_previous_tokens: bool,

    /// STK queries allowed per minute before HTTP 429 (the sandbox allows about 5); unlimited when unset.
    #[arg(long, env = "DARAJA_SIM_QUERY_RATE_LIMIT")]
    query_rate_limit: Option<u32>,

    /// How far a request Timestamp (Nairobi time) may be from now, in seconds.
    #[arg(
        long,
        env = "DARAJA_SIM_TIMESTAMP_MAX_SKEW_SECS",
        default_value_t = 300
    )]
    timestamp_max_skew_secs: u64,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    let config = SimConfig {
        shortcode: args.shortcode,
        passkey: args.passkey,
        consumer_key: args.consumer_key,
        consumer_secret: args.consumer_secret,
        token_ttl: Duration::from_secs(args.token_ttl_secs),
        invalidate_previous_tokens: args.invalidate_previous_tokens,
        callback_delay: Duration::from_millis(args.callback_delay_ms),
        timestamp_max_skew: Duration::from_secs(args.timestamp_max_skew_secs),
        query_rate_limit_per_minute: args.query_rate_limit,
        ..SimConfig::default()
    };
    let sim = daraja_sim::start(args.listen, config).await?;
    // Printed on stdout so a parent process can learn the port chosen for `:0`.
    println!("daraja-sim listening on {}", sim.base_url());
    stop_requested().await?;
    sim.shutdown().await;
    Ok(())
}

/// Ctrl-C, or SIGTERM from a supervisor such as the local stack.
async fn stop_requested() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
