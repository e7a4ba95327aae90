//! `webhook-receiver --secret <secret> [--port 8099]`: a webhook endpoint on loopback that
//! verifies and prints each payment event (README, "Payment events and webhooks").

use std::net::{Ipv4Addr, SocketAddr};

use clap::Parser;

#[derive(Parser)]
#[command(about = "Receive, verify and print payment webhooks on loopback")]
struct Args {
    /// The signing secret (the `current` value of the webhook secret).
    #[arg(long, env = "WEBHOOK_SIGNING_SECRET")]
    secret: String,
    #[arg(long, default_value_t = 8099)]
    port: u16,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let receiver = webhook_receiver::start(
        SocketAddr::from((Ipv4Addr::LOCALHOST, args.port)),
        &args.secret,
        true,
    )
    .await?;
    println!("webhook receiver on {} (Ctrl-C stops it)", receiver.url());
    tokio::signal::ctrl_c().await?;
    println!(
        "{} events accepted, {} refused for their signature",
        receiver.received().len(),
        receiver.rejected()
    );
    Ok(())
}
