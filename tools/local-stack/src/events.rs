//! The sample events in `events/` and what each must answer: one table, read by the
//! runtime-emulator test (`tests/tests/payment_flow.rs`) and by `local-stack sam-local`, which
//! sends the same events through `sam local invoke`.

use std::path::{Path, PathBuf};

use ::dynamo::DynamoStore;
use chrono::Utc;
use daraja::mask_id;
use payments::payment::{NewPayment, PaymentStatus};
use payments::{PaymentStore, StoreError};
use serde_json::Value;

use crate::Function;

/// The callback key `events/env.json` gives the functions (`CALLBACK_TOKEN`).
pub const EVENTS_KEY: &str = "local-callback-token-4f9c2b7e1d";
/// The callback URL token in `events/callback-*.json`: signed with [`EVENTS_KEY`].
pub const EVENTS_TOKEN: &str =
    "0.ff5f808588a12b5ceca72911ad844274.92a84f68ccc7647e1076c0f2502ee5d4";

/// Files in `events/` that are not events.
pub const NOT_EVENTS: [&str; 1] = ["env.json"];

/// One sample event and what it must do.
#[derive(Debug, Clone, Copy)]
pub struct SampleEvent {
    pub file: &'static str,
    pub function: Function,
    pub answer: Answer,
    pub leaves: Leaves,
}

/// What the invocation answers.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// An HTTP API answer: its status, and the JSON value at a pointer of its body.
    Http {
        status: u16,
        pointer: &'static str,
        value: &'static str,
    },
    /// A reconciliation round's report (no HTTP).
    Round,
    /// A partial batch response naming no failed item: every record or message was handled.
    Batch,
    /// A JSON answer (no HTTP) with this value at a pointer.
    Json {
        pointer: &'static str,
        value: &'static str,
    },
}

/// The record an event leaves behind.
#[derive(Debug, Clone, Copy)]
pub enum Leaves {
    /// Nothing to check in the table.
    Nothing,
    /// The payment named in the answer's `checkout_request_id`, with this status.
    AnsweredPayment(PaymentStatus),
    /// A payment seeded by [`seed_event_payments`], with this status.
    Payment(&'static str, PaymentStatus),
    /// A callback for no payment of ours, kept as an orphan under this checkout id.
    Orphan(&'static str),
}

impl Answer {
    /// `Ok` when `answer` (the function's raw JSON answer) is the expected one; else what differs.
    pub fn check(&self, answer: &Value) -> Result<(), String> {
        match *self {
            Answer::Http {
                status,
                pointer,
                value,
            } => {
                let expected: Value = serde_json::from_str(value).expect("table value is JSON");
                if answer["statusCode"] != status {
                    return Err(format!(
                        "status {} (expected {status})",
                        answer["statusCode"]
                    ));
                }
                let body = answer_body(answer).ok_or_else(|| "the body is not JSON".to_string())?;
                match body.pointer(pointer) {
                    Some(got) if *got == expected => Ok(()),
                    got => Err(format!("{pointer} = {got:?} (expected {expected})")),
                }
            }
            Answer::Round => match answer.get("due").and_then(Value::as_u64) {
                Some(_) => Ok(()),
                None => Err("not a round report".to_string()),
            },
            Answer::Batch => match answer.get("batchItemFailures").and_then(Value::as_array) {
                Some(failures) if failures.is_empty() => Ok(()),
                Some(failures) => Err(format!("items failed: {failures:?}")),
                None => Err("not a partial batch response".to_string()),
            },
            Answer::Json { pointer, value } => {
                let expected: Value = serde_json::from_str(value).expect("table value is JSON");
                match answer.pointer(pointer) {
                    Some(got) if *got == expected => Ok(()),
                    got => Err(format!("{pointer} = {got:?} (expected {expected})")),
                }
            }
        }
    }

    /// A short text for tables: `202 /status="PENDING"`.
    pub fn describe(&self) -> String {
        match *self {
            Answer::Http {
                status,
                pointer,
                value,
            } => format!("{status} {pointer}={value}"),
            Answer::Round => "round report".to_string(),
            Answer::Batch => "no failed item".to_string(),
            Answer::Json { pointer, value } => format!("{pointer}={value}"),
        }
    }
}

/// The JSON body of an HTTP API answer (`{"statusCode", "body": "<JSON text>"}`).
pub fn answer_body(answer: &Value) -> Option<Value> {
    answer["body"]
        .as_str()
        .and_then(|b| serde_json::from_str(b).ok())
}

const fn http(status: u16, pointer: &'static str, value: &'static str) -> Answer {
    Answer::Http {
        status,
        pointer,
        value,
    }
}

/// Every sample event, in the order they are run: pushes, callbacks (which settle the seeded
/// payments), the status of a settled one, a reconciliation round.
pub const SAMPLE_EVENTS: [SampleEvent; 17] = {
    use Function::{PaymentEvents, PaymentStatus as Status, Reconcile, StkCallback, StkPush};
    use PaymentStatus::{Completed, Failed, Pending};
    const ACCEPTED: Answer = http(200, "/ResultCode", "0");
    [
        SampleEvent {
            file: "push-valid.json",
            function: StkPush,
            answer: http(202, "/status", r#""PENDING""#),
            leaves: Leaves::AnsweredPayment(Pending),
        },
        SampleEvent {
            file: "push-invalid-phone.json",
            function: StkPush,
            answer: http(422, "/error/code", r#""invalid_phone""#),
            leaves: Leaves::Nothing,
        },
        SampleEvent {
            file: "push-bad-json.json",
            function: StkPush,
            answer: http(400, "/error/code", r#""invalid_json""#),
            leaves: Leaves::Nothing,
        },
        SampleEvent {
            file: "push-idempotent.json",
            function: StkPush,
            answer: http(202, "/status", r#""PENDING""#),
            leaves: Leaves::AnsweredPayment(Pending),
        },
        SampleEvent {
            file: "callback-success.json",
            function: StkCallback,
            answer: ACCEPTED,
            leaves: Leaves::Payment(EVENT_PAYMENTS[0], Completed),
        },
        SampleEvent {
            file: "callback-cancelled-1032.json",
            function: StkCallback,
            answer: ACCEPTED,
            leaves: Leaves::Payment(EVENT_PAYMENTS[1], Failed),
        },
        SampleEvent {
            file: "callback-unreachable-1037.json",
            function: StkCallback,
            answer: ACCEPTED,
            leaves: Leaves::Payment(EVENT_PAYMENTS[2], Failed),
        },
        SampleEvent {
            file: "callback-wrong-pin-2001.json",
            function: StkCallback,
            answer: ACCEPTED,
            leaves: Leaves::Payment(EVENT_PAYMENTS[3], Failed),
        },
        SampleEvent {
            file: "callback-wrong-token.json",
            function: StkCallback,
            answer: http(404, "/message", r#""Not Found""#),
            leaves: Leaves::Payment(EVENT_PAYMENTS[4], Pending),
        },
        SampleEvent {
            file: "callback-unknown-id.json",
            function: StkCallback,
            answer: ACCEPTED,
            leaves: Leaves::Orphan("ws_CO_27112026091500999708374149"),
        },
        SampleEvent {
            file: "callback-bad-body.json",
            function: StkCallback,
            answer: http(400, "/error/code", r#""invalid_json""#),
            leaves: Leaves::Nothing,
        },
        SampleEvent {
            file: "callback-not-daraja.json",
            function: StkCallback,
            answer: http(400, "/error/code", r#""invalid_callback""#),
            leaves: Leaves::Nothing,
        },
        SampleEvent {
            file: "status.json",
            function: Status,
            answer: http(200, "/status", r#""COMPLETED""#),
            leaves: Leaves::Payment(EVENT_PAYMENTS[0], Completed),
        },
        SampleEvent {
            file: "status-by-reference.json",
            function: Status,
            answer: http(200, "/payments/0/reference", r#""INV-1001""#),
            leaves: Leaves::Nothing,
        },
        SampleEvent {
            file: "reconcile-schedule.json",
            function: Reconcile,
            answer: Answer::Round,
            leaves: Leaves::Nothing,
        },
        // The stream record of a payment becoming COMPLETED: its event is published (a
        // failure to publish names the record in `batchItemFailures`).
        SampleEvent {
            file: "stream-payment-completed.json",
            function: PaymentEvents,
            answer: Answer::Batch,
            leaves: Leaves::Nothing,
        },
        // The README's replay: the webhook parked by `seed_dead_letter` goes back on the queue.
        SampleEvent {
            file: "webhook-replay.json",
            function: Function::WebhookDelivery,
            answer: Answer::Json {
                pointer: "/replayed",
                value: "1",
            },
            leaves: Leaves::Nothing,
        },
    ]
};

/// The sample event for a file name.
pub fn sample_event(file: &str) -> Option<&'static SampleEvent> {
    SAMPLE_EVENTS.iter().find(|e| e.file == file)
}

/// The payments the callback events settle (and `status.json` reads), recorded as pending
/// by [`seed_event_payments`] so each callback event is a real transition, not an orphan.
pub const EVENT_PAYMENTS: [&str; 5] = [
    "ws_CO_27112026090000123708374149",
    "ws_CO_27112026090100456708374149",
    "ws_CO_27112026090200789708374149",
    "ws_CO_27112026090300012708374149",
    "ws_CO_27112026090400345708374149",
];

/// The webhook `sam-deps` parks in the dead-letter queue (for `webhook-replay.json`).
pub const PARKED_WEBHOOK: &str = r#"{"id":"evt_00000000000000000000000000000001","type":"payment.failed","created_at":"2026-11-27T09:01:05.000Z","data":{"schema_version":1,"event_id":"evt_00000000000000000000000000000001","checkout_request_id":"ws_CO_27112026090100456708374149","status":"FAILED","previous_status":"PENDING"}}"#;

/// Records [`EVENT_PAYMENTS`] as pending, as the push function would have.
pub async fn seed_event_payments(store: &DynamoStore) -> Result<(), StoreError> {
    for id in EVENT_PAYMENTS {
        store
            .record_pending(&NewPayment {
                checkout_request_id: id.to_string(),
                merchant_request_id: "29115-34620561-1".to_string(),
                charge: daraja::Charge::parse("254708374149", 100, "INV-1001", Some("Order 1001"))
                    .expect("a valid charge"),
                created_at: Utc::now(),
                callback_nonce: None,
                created_by: None,
            })
            .await?;
    }
    Ok(())
}

/// `Ok` when the table holds what `leaves` says; `answer` is the invocation's raw answer.
/// Checkout ids embed the phone number, so the messages show them masked.
pub async fn check_leaves(
    store: &DynamoStore,
    leaves: Leaves,
    answer: &Value,
) -> Result<(), String> {
    let status_of = |id: String| async move {
        match store.get(&id).await {
            Ok(Some(payment)) => Ok(payment.status),
            Ok(None) => Err(format!("no record for {}", mask_id(&id))),
            Err(e) => Err(format!("reading {}: {e}", mask_id(&id))),
        }
    };
    let expect = |id: String, expected: PaymentStatus| async move {
        let got = status_of(id.clone()).await?;
        if got == expected {
            Ok(())
        } else {
            Err(format!(
                "{} is {got:?} (expected {expected:?})",
                mask_id(&id)
            ))
        }
    };
    match leaves {
        Leaves::Nothing => Ok(()),
        Leaves::Payment(id, status) => expect(id.to_string(), status).await,
        Leaves::AnsweredPayment(status) => {
            let id = answer_body(answer)
                .and_then(|b| b["checkout_request_id"].as_str().map(str::to_string))
                .ok_or_else(|| "no checkout_request_id in the answer".to_string())?;
            expect(id, status).await
        }
        Leaves::Orphan(id) => {
            let orphans = store.orphans(50).await.map_err(|e| e.to_string())?;
            if orphans.iter().any(|o| o.checkout_request_id == id) {
                Ok(())
            } else {
                Err(format!("{} is not among the orphans", mask_id(id)))
            }
        }
    }
}

/// `<workspace>/events`.
pub fn events_dir(workspace_root: &Path) -> PathBuf {
    workspace_root.join("events")
}

/// The `.json` files in `events/` that are events (not [`NOT_EVENTS`]), sorted.
pub fn event_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(".json") && !NOT_EVENTS.contains(&name.as_str()) {
            files.push(name);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_file_has_one_expectation_and_every_expectation_a_file() {
        let root = crate::dynamo::workspace_root().expect("workspace");
        let files = event_files(&events_dir(&root)).expect("events/");
        let mut listed: Vec<&str> = SAMPLE_EVENTS.iter().map(|e| e.file).collect();
        listed.sort();
        assert_eq!(files, listed);
    }

    #[test]
    fn each_event_names_the_route_of_its_function() {
        let root = crate::dynamo::workspace_root().expect("workspace");
        for event in SAMPLE_EVENTS {
            let text = std::fs::read_to_string(events_dir(&root).join(event.file)).unwrap();
            let json: Value = serde_json::from_str(&text).unwrap();
            let function = match json["routeKey"].as_str() {
                Some("POST /payments") => Function::StkPush,
                Some("GET /payments/{checkout_request_id}" | "GET /payments") => {
                    Function::PaymentStatus
                }
                Some("POST /callbacks/stk/{token}") => Function::StkCallback,
                _ if json["source"] == "aws.events" => Function::Reconcile,
                _ if json["Records"][0]["eventSource"] == "aws:dynamodb" => Function::PaymentEvents,
                _ if json.get("replay_dead_letters").is_some() => Function::WebhookDelivery,
                other => panic!("{}: unknown route {other:?}", event.file),
            };
            assert_eq!(function, event.function, "{}", event.file);
        }
    }

    #[test]
    fn an_answer_is_checked_on_status_and_body() {
        let answer = http(202, "/status", r#""PENDING""#);
        let ok = serde_json::json!({"statusCode": 202, "body": "{\"status\":\"PENDING\"}"});
        assert!(answer.check(&ok).is_ok());
        let wrong_status =
            serde_json::json!({"statusCode": 409, "body": "{\"status\":\"PENDING\"}"});
        assert!(answer.check(&wrong_status).is_err());
        let wrong_body = serde_json::json!({"statusCode": 202, "body": "{\"status\":\"FAILED\"}"});
        assert!(answer.check(&wrong_body).is_err());
        assert!(answer.check(&serde_json::json!({})).is_err());
    }
}
