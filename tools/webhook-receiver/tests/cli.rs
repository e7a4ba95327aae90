//! The README's command: `webhook-receiver --secret <secret> --port <port>` verifies and prints.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the receiver has to print a line.
const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn the_command_prints_a_verified_event_and_refuses_a_bad_signature() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_webhook-receiver"))
        .args(["--secret", "whsec_cli", "--port", "0"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("webhook-receiver");
    // Its lines, read on a thread, so that every wait for one has a deadline.
    let (lines, out) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let first = out.recv_timeout(WAIT).expect("the receiver's first line");
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap_or_else(|| panic!("no URL in {first:?}"))
        .to_owned();
    let body = r#"{"id":"evt_cli","type":"payment.completed","data":{"checkout_request_id":"ws_CO_1","previous_status":"PENDING","status":"COMPLETED","amount":10}}"#;
    let now = chrono::Utc::now().timestamp();
    let http = reqwest::Client::new();
    let post = |signature: String| {
        http.post(&url)
            .header(app::webhook::SIGNATURE_HEADER, signature)
            .body(body)
            .send()
    };
    let good = post(app::webhook::sign(&["whsec_cli"], now, body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(good.status().as_u16(), 200);
    let bad = post(app::webhook::sign(&["another"], now, body.as_bytes()))
        .await
        .unwrap();
    assert_eq!(bad.status().as_u16(), 400);
    let printed = out.recv_timeout(WAIT).expect("the event line");
    assert!(
        printed.contains("evt_cli") && printed.contains("PENDING -> COMPLETED"),
        "{printed}"
    );
    child.kill().unwrap();
    let _ = child.wait();
}
