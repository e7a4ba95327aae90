//! Two payments through the local stack: one the customer pays, one the customer cancels.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use daraja::mask_id;
use daraja_sim::Outcome;
use local_stack::{EventsOptions, LocalStack, StackOptions, WebhookOptions};
use reqwest::StatusCode;
use serde_json::{json, Value};
use webhook_receiver::Receiver;

/// Daraja's sandbox test number pays; a second customer cancels. Two phones, because a phone
/// with a prompt still open is refused (one prompt per phone).
const PHONE: &str = "0708374149";
const CANCELLING_PHONE: &str = "0712345678";
const CANCELLING_MSISDN: &str = "254712345678";
const WAIT: Duration = Duration::from_secs(20);

struct Clock(Instant);

impl Clock {
    fn step(&self, text: &str) {
        println!("[{:>6} ms] {text}", self.0.elapsed().as_millis());
    }
}

/// The merchant's webhook secret in the demo.
const WEBHOOK_SECRET: &str = "whsec_demo_0f3a9c";

pub async fn run(mut opts: StackOptions) -> ExitCode {
    let clock = Clock(Instant::now());
    clock.step("starting: DynamoDB emulator with its stream, EventBridge and SQS (moto), Daraja simulator, the six functions under the Lambda RIE, API Gateway stand-in, the merchant's webhook endpoint");
    let receiver = match webhook_receiver::start(
        std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)),
        WEBHOOK_SECRET,
        false,
    )
    .await
    {
        Ok(receiver) => receiver,
        Err(e) => {
            eprintln!("demo failed: the webhook endpoint: {e}");
            return ExitCode::FAILURE;
        }
    };
    opts.events = Some(EventsOptions {
        webhook: Some(WebhookOptions::local(
            receiver.url(),
            WEBHOOK_SECRET.into(),
            Duration::from_secs(600),
        )),
    });
    let stack = match LocalStack::start(opts).await {
        Ok(stack) => stack,
        Err(e) => {
            eprintln!("demo failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    clock.step(&format!(
        "ready: API {}, simulator {}, table {}",
        stack.api_url(),
        stack.sim().base_url(),
        stack.table()
    ));
    let result = payments(&stack, &receiver, &clock).await;
    clock.step("stopping everything");
    let logs = stack.logs();
    stack.shutdown().await;
    match result {
        Ok(()) => {
            clock.step("demo passed");
            ExitCode::SUCCESS
        }
        Err(problem) => {
            eprintln!("demo failed: {problem}");
            eprintln!("last function log lines:");
            for line in logs.iter().rev().take(20).rev() {
                eprintln!("  {line}");
            }
            ExitCode::FAILURE
        }
    }
}

async fn payments(stack: &LocalStack, receiver: &Receiver, clock: &Clock) -> Result<(), String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(35))
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;

    println!("-- payment 1: the customer enters the PIN");
    let paid = pay(stack, &http, clock, PHONE, 10, "DEMO-1").await?;
    if paid["status"] != "COMPLETED" {
        return Err(format!(
            "payment 1 ended {}, expected COMPLETED",
            paid["status"]
        ));
    }
    let receipt = paid["receipt"].as_str().filter(|r| !r.is_empty());
    let Some(receipt) = receipt else {
        return Err("payment 1 is COMPLETED but has no M-Pesa receipt".to_string());
    };
    clock.step(&format!("COMPLETED, M-Pesa receipt {receipt}"));
    webhook(receiver, clock, &paid).await?;

    println!("-- payment 2: the customer cancels (simulator scripted with ResultCode 1032)");
    stack
        .sim()
        .script(Some(CANCELLING_MSISDN), vec![Outcome::code(1032)]);
    let cancelled = pay(stack, &http, clock, CANCELLING_PHONE, 20, "DEMO-2").await?;
    if cancelled["status"] != "FAILED" {
        return Err(format!(
            "payment 2 ended {}, expected FAILED",
            cancelled["status"]
        ));
    }
    if cancelled["result_code"] != "1032" {
        return Err(format!(
            "payment 2 failed with result code {}, expected 1032",
            cancelled["result_code"]
        ));
    }
    clock.step(&format!(
        "FAILED: {} ({})",
        cancelled["outcome"].as_str().unwrap_or("?"),
        cancelled["result_desc"].as_str().unwrap_or("?")
    ));
    webhook(receiver, clock, &cancelled).await?;
    Ok(())
}

/// Waits for the merchant's webhook of `payment`'s final status, and prints it.
async fn webhook(receiver: &Receiver, clock: &Clock, payment: &Value) -> Result<(), String> {
    let id = payment["checkout_request_id"].as_str().unwrap_or_default();
    let started = Instant::now();
    let received = loop {
        let found = receiver
            .received()
            .into_iter()
            .find(|r| r.body["data"]["checkout_request_id"] == id);
        if let Some(found) = found {
            break found;
        }
        if started.elapsed() > WAIT {
            return Err(format!("no webhook for the payment within {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let data = &received.body["data"];
    if data["status"] != payment["status"] {
        return Err(format!(
            "the webhook says {}, the record {}",
            data["status"], payment["status"]
        ));
    }
    clock.step(&format!(
        "webhook received by the merchant, signature verified: {} {} ({} -> {}, KES {}, phone {})",
        received.body["type"].as_str().unwrap_or("?"),
        received.event_id,
        data["previous_status"].as_str().unwrap_or("?"),
        data["status"].as_str().unwrap_or("?"),
        data["amount"],
        data["phone"].as_str().unwrap_or("?"),
    ));
    let mut shown = received.body.clone();
    shown["data"]["checkout_request_id"] = Value::String(mask_id(id));
    println!(
        "{}",
        serde_json::to_string_pretty(&shown).unwrap_or_default()
    );
    Ok(())
}

/// Starts a payment and follows it to its final state, printing each step.
async fn pay(
    stack: &LocalStack,
    http: &reqwest::Client,
    clock: &Clock,
    phone: &str,
    amount: u32,
    reference: &str,
) -> Result<Value, String> {
    let api = stack.api_url();
    let request = json!({ "phone": phone, "amount": amount, "reference": reference });
    clock.step(&format!("POST /payments {request}"));
    let response = http
        .post(format!("{api}/payments"))
        .json(&request)
        .send()
        .await
        .map_err(|e| format!("POST /payments failed: {e}"))?;
    let status = response.status();
    let body: Value = response.json().await.map_err(|e| {
        format!("POST /payments answered {status} with a body that is not JSON: {e}")
    })?;
    if status != StatusCode::ACCEPTED {
        return Err(format!(
            "POST /payments answered {status}, expected 202: {body}"
        ));
    }
    let id = body["checkout_request_id"]
        .as_str()
        .ok_or_else(|| format!("202 without checkout_request_id: {body}"))?
        .to_string();
    clock.step(&format!(
        "202 {}, CheckoutRequestID {}",
        body["status"].as_str().unwrap_or("?"),
        mask_id(&id)
    ));

    let started = Instant::now();
    let callback = loop {
        if let Some(sent) = stack
            .sim()
            .callbacks()
            .into_iter()
            .find(|c| c.checkout_request_id == id)
        {
            break sent;
        }
        if started.elapsed() > WAIT {
            return Err(format!("the simulator sent no callback within {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    let code = &callback.body["Body"]["stkCallback"]["ResultCode"];
    let answered = callback
        .status
        .map_or_else(|| "no answer".to_string(), |s| format!("HTTP {s}"));
    clock.step(&format!(
        "simulator: customer answered, callback with ResultCode {code} delivered, API answered {answered}"
    ));

    let started = Instant::now();
    let mut last_status = String::new();
    loop {
        let response = http
            .get(format!("{api}/payments/{id}"))
            .send()
            .await
            .map_err(|e| format!("GET /payments/{{id}} failed: {e}"))?;
        let status = response.status();
        let record: Value = response.json().await.map_err(|e| {
            format!("GET /payments/{{id}} answered {status} with a body that is not JSON: {e}")
        })?;
        if status != StatusCode::OK {
            return Err(format!("GET /payments/{{id}} answered {status}: {record}"));
        }
        let state = record["status"].as_str().unwrap_or("?").to_string();
        if state != last_status {
            clock.step(&format!("GET /payments/{} → {state}", mask_id(&id)));
            last_status = state.clone();
        }
        if state != "PENDING" {
            return Ok(record);
        }
        if started.elapsed() > WAIT {
            return Err(format!("payment still PENDING after {WAIT:?}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
