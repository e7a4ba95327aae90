//! `local-stack up` runs the whole system on loopback until Ctrl-C; `local-stack demo` runs two
//! payments through it and checks their outcomes.

mod demo;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use local_stack::{LocalStack, Profile, StackOptions};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Run the release builds of the functions (`cargo build --release -p …`).
    #[arg(long, global = true)]
    release: bool,
    /// Execution environments per function.
    #[arg(long, global = true, default_value_t = 1)]
    pool_size: usize,
    /// Print every function and emulator log line (always on for `up`).
    #[arg(long, global = true)]
    logs: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start everything, print the URLs and the functions' environment, run until Ctrl-C.
    Up {
        /// The API's port; 0 picks a free one.
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Print secret values (local test values) instead of `<redacted>`.
        #[arg(long)]
        show_secrets: bool,
    },
    /// A paid and a cancelled payment against the simulator, step by step.
    Demo,
    /// For `sam local`: the DynamoDB emulator and the Daraja simulator where its containers
    /// reach them, on the ports `events/env.json` names, with the table and the payments the
    /// callback events settle; runs until Ctrl-C.
    SamDeps {
        /// The address to listen on; default the Docker bridge's gateway, else 127.0.0.1.
        #[arg(long)]
        host: Option<std::net::IpAddr>,
    },
    /// Runs every command of the README's `sam local` section and checks each answer and the
    /// record it leaves (needs Docker and `make sam-build`).
    SamLocal,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let mut opts = StackOptions {
        profile: if cli.release {
            Profile::Release
        } else {
            Profile::Debug
        },
        pool_size: cli.pool_size,
        echo_logs: cli.logs,
        ..StackOptions::default()
    };
    match cli.command {
        Command::Up { port, show_secrets } => {
            opts.gateway_port = port;
            opts.echo_logs = true;
            up(opts, show_secrets).await
        }
        Command::Demo => demo::run(opts).await,
        Command::SamDeps { host } => local_stack::sam::deps(host).await,
        Command::SamLocal => local_stack::sam::run_readme().await,
    }
}

async fn up(opts: StackOptions, show_secrets: bool) -> ExitCode {
    let stack = match LocalStack::start(opts).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("local-stack: {e}");
            return ExitCode::FAILURE;
        }
    };
    let api = stack.api_url();
    // Each push signs its own callback URL; with the key shown, one can be made by hand.
    let token = if show_secrets {
        stack.unsent_callback_token()
    } else {
        "<per-payment token>".to_string()
    };
    println!("API Gateway stand-in  {api}");
    println!("  POST {api}/payments");
    println!("  GET  {api}/payments/{{checkout_request_id}}");
    println!("  POST {api}/callbacks/stk/{token}");
    println!(
        "Daraja simulator      {} (control API under /sim/…)",
        stack.sim().base_url()
    );
    println!(
        "DynamoDB (moto)       {}  table {}",
        stack.dynamodb_endpoint(),
        stack.table()
    );
    println!("Function environment:");
    for (name, value) in stack.function_env() {
        let secret = stack.secrets().contains(value);
        let shown = if secret && !show_secrets {
            "<redacted>"
        } else {
            value
        };
        println!("  {name}={shown}");
    }
    println!("Function logs follow. Ctrl-C stops everything.");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("local-stack: cannot wait for Ctrl-C ({e}); stopping");
    }
    stack.shutdown().await;
    ExitCode::SUCCESS
}
