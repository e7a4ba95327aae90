//! The functions' DynamoDB policies in `template.yaml` allow what the functions really do, and
//! little more: every request each function makes through the real local stack (pushes, a
//! replay, results applied, held and confirmed, a failure freeing its phone, a duplicate, an
//! orphan, an unreadable body, every lookup, a reconciliation round) is recorded by a proxy in
//! front of the DynamoDB emulator, which tells the functions apart by their access key id, and
//! each is checked against that function's statements: the action, the table or index, and the
//! `dynamodb:LeadingKeys` condition on the partition key of every item (a transaction is
//! authorised item by item, as IAM does).
//!
//! moto enforces no IAM condition, so the policies are evaluated here, by IAM's documented rules
//! for `Allow` statements with `ForAllValues:StringLike` on `dynamodb:LeadingKeys`.
//!
//! Needs the function binaries: `cargo build -p stk-push -p stk-callback -p payment-status -p reconcile`.

mod common;
mod faulty;
mod wait;

use std::collections::BTreeSet;

use daraja_sim::{Endpoint, Fault, Outcome, SimConfig};
use local_stack::{env_vars, Function, LocalStack, StackOptions};
use serde_json::{json, Value};
use serde_yaml::Value as Yaml;

use common::moto_endpoint;
use faulty::{FaultyDynamo, SeenRequest};
use wait::{Deadline, WAIT};

/// What one request needs IAM to allow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Need {
    action: String,
    /// The item's partition key, or `index/<name>` for a query of an index.
    on: String,
}

/// One `Allow` statement on the payments table or one of its indexes.
#[derive(Debug)]
struct Statement {
    actions: Vec<String>,
    /// `table`, or `index/<name>`.
    resources: Vec<String>,
    /// `ForAllValues:StringLike` `dynamodb:LeadingKeys`, if the statement has it.
    leading_keys: Option<Vec<String>>,
}

/// The needs of a request: one per item for a transaction.
fn needs(request: &SeenRequest) -> Vec<Need> {
    let pk = |item: &Value| item["pk"]["S"].as_str().unwrap_or("<no pk>").to_owned();
    let need = |action: &str, on: String| Need {
        action: format!("dynamodb:{action}"),
        on,
    };
    let body = &request.body;
    match request.operation.as_str() {
        "GetItem" | "UpdateItem" | "DeleteItem" => {
            vec![need(&request.operation, pk(&body["Key"]))]
        }
        "PutItem" => vec![need("PutItem", pk(&body["Item"]))],
        "TransactWriteItems" => body["TransactItems"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|item| match item {
                _ if item.get("Put").is_some() => need("PutItem", pk(&item["Put"]["Item"])),
                _ if item.get("Update").is_some() => need("UpdateItem", pk(&item["Update"]["Key"])),
                _ if item.get("Delete").is_some() => need("DeleteItem", pk(&item["Delete"]["Key"])),
                _ => need("ConditionCheckItem", pk(&item["ConditionCheck"]["Key"])),
            })
            .collect(),
        "Query" => match body["IndexName"].as_str() {
            Some(index) => vec![need("Query", format!("index/{index}"))],
            None => vec![need("Query", "table".to_owned())],
        },
        other => vec![need(other, "table".to_owned())],
    }
}

/// `*` matches any run of characters, as in `StringLike`.
fn like(pattern: &str, value: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == value,
        Some((head, rest)) => {
            value.starts_with(head)
                && (0..=value.len() - head.len())
                    .any(|skip| like(rest, &value[head.len() + skip..]))
        }
    }
}

fn allows(statements: &[Statement], need: &Need) -> bool {
    statements.iter().any(|st| {
        let action = st.actions.iter().any(|a| a == &need.action);
        let item = !need.on.starts_with("index/") && need.on != "table";
        let resource = st
            .resources
            .iter()
            .any(|r| r == &need.on || (item && r == "table"));
        let keys = match (&st.leading_keys, item) {
            (None, _) => true,
            (Some(patterns), true) => patterns.iter().any(|p| like(p, &need.on)),
            // A condition on a query's key is not modelled here: no statement needs one.
            (Some(_), false) => false,
        };
        action && resource && keys
    })
}

fn strings(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::String(s) => vec![s.clone()],
        Yaml::Sequence(items) => items.iter().flat_map(strings).collect(),
        _ => Vec::new(),
    }
}

/// `!GetAtt PaymentsTable.Arn` is `table`, `!Sub "${PaymentsTable.Arn}/index/x"` is `index/x`;
/// anything else (the secret) is not the table's.
fn resources(value: &Yaml) -> Vec<String> {
    match value {
        Yaml::Sequence(items) => items.iter().flat_map(resources).collect(),
        Yaml::Tagged(tagged) => {
            let text = strings(&tagged.value).join("");
            let tag = tagged.tag.to_string();
            if tag == "!GetAtt" && text == "PaymentsTable.Arn" {
                vec!["table".to_owned()]
            } else if tag == "!Sub" && text.starts_with("${PaymentsTable.Arn}/index/") {
                vec![text.replace("${PaymentsTable.Arn}/", "")]
            } else {
                Vec::new()
            }
        }
        _ => Vec::new(),
    }
}

/// The table statements of the function built from `binary`.
fn policy(template: &Yaml, binary: &str) -> Vec<Statement> {
    let function = template["Resources"]
        .as_mapping()
        .expect("Resources")
        .values()
        .find(|r| r["Metadata"]["BuildProperties"]["Binary"].as_str() == Some(binary))
        .unwrap_or_else(|| panic!("no function builds {binary}"));
    let mut statements = Vec::new();
    for policy in function["Properties"]["Policies"]
        .as_sequence()
        .expect("Policies")
    {
        for st in policy["Statement"].as_sequence().expect("Statement") {
            assert_eq!(st["Effect"].as_str(), Some("Allow"), "{binary}: only Allow");
            let resources = resources(&st["Resource"]);
            if resources.is_empty() {
                continue;
            }
            let condition = &st["Condition"];
            let leading_keys = (!condition.is_null()).then(|| {
                let keys = &condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
                assert!(
                    !keys.is_null(),
                    "{binary}: an unexpected condition {condition:?}"
                );
                strings(keys)
            });
            statements.push(Statement {
                actions: strings(&st["Action"]),
                resources,
                leading_keys,
            });
        }
    }
    statements
}

/// `PAY#ws_CO_…` → `PAY#…`: what the report groups by.
fn prefix(on: &str) -> String {
    match on.split_once('#') {
        Some((head, rest)) if !rest.is_empty() && head != "TOKEN" => format!("{head}#…"),
        _ => on.to_owned(),
    }
}

struct Stack {
    stack: LocalStack,
    http: reqwest::Client,
}

impl Stack {
    async fn pay(&self, phone: &str, key: Option<&str>) -> String {
        let mut request = self
            .http
            .post(format!("{}/payments", self.stack.api_url()))
            .json(&json!({"phone": phone, "amount": 100, "reference": "INV-LP"}));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.expect("POST /payments");
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("JSON");
        assert_eq!(status, 202, "{body}");
        body["checkout_request_id"].as_str().expect("id").to_owned()
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(format!("{}{path}", self.stack.api_url()))
            .send()
            .await
            .expect("GET");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn post_callback(&self, token: &str, source_ip: &str, body: String) -> u16 {
        self.http
            .post(format!("{}/callbacks/stk/{token}", self.stack.api_url()))
            .header("content-type", "application/json")
            .header("x-local-source-ip", source_ip)
            .body(body)
            .send()
            .await
            .expect("POST callback")
            .status()
            .as_u16()
    }

    async fn status_is(&self, id: &str, want: &str) {
        let deadline = Deadline::after(WAIT, format!("{id} to be {want}"));
        loop {
            let (_, record) = self.get(&format!("/payments/{id}")).await;
            if record["status"] == want {
                return;
            }
            deadline.not_yet(&record).await;
        }
    }
}

fn success(id: &str, receipt: &str) -> String {
    common::success_callback(id, receipt).to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_of_each_function_is_allowed_by_its_own_policy() {
    let moto = moto_endpoint().await;
    let (proxy, url) = FaultyDynamo::start(moto.clone(), 0..0).await;
    let stack = LocalStack::start(StackOptions {
        // The table is made there; the functions reach it through the proxy.
        dynamodb_endpoint: Some(moto),
        sim: SimConfig {
            callback_delay: std::time::Duration::from_millis(50),
            ..SimConfig::default()
        },
        extra_env: env_vars(&[
            ("AWS_ENDPOINT_URL_DYNAMODB", url.as_str()),
            // The simulator calls back from 127.0.0.1, outside the list: its successes are
            // held and confirmed by the reconciliation round below.
            ("CALLBACK_ALLOWED_IPS", "safaricom"),
            ("CALLBACK_CONFIRM", "unlisted"),
            ("RECONCILE_GRACE_SECONDS", "0"),
            ("RECONCILE_MAX_AGE_SECONDS", "600"),
        ]),
        ..StackOptions::default()
    })
    .await
    .unwrap_or_else(|e| panic!("local stack: {e}"));
    let s = Stack {
        stack,
        http: reqwest::Client::new(),
    };
    let safaricom = "196.201.214.207";
    let sim = s.stack.sim();

    // A keyed push whose success is held, then confirmed by a query; its replay.
    sim.script(Some("0712000201"), vec![Outcome::success()]);
    let held = s.pay("0712000201", Some("lp-key-1")).await;
    assert_eq!(s.pay("0712000201", Some("lp-key-1")).await, held);
    // A push Daraja refuses before forwarding: nothing was sent, the intent and the lock go.
    sim.fault(Endpoint::StkPush, Fault::SpikeArrest, 1);
    let response = s
        .http
        .post(format!("{}/payments", s.stack.api_url()))
        .json(&json!({"phone": "0712000204", "amount": 100, "reference": "INV-LP"}))
        .send()
        .await
        .expect("POST /payments");
    assert_eq!(response.status().as_u16(), 503);
    // A cancelled prompt: the failure frees the phone.
    sim.script(Some("0712000202"), vec![Outcome::code(1032)]);
    let cancelled = s.pay("0712000202", None).await;
    s.status_is(&cancelled, "FAILED").await;
    // A success from Safaricom's address, applied at once, then delivered again.
    sim.script(Some("0712000203"), vec![Outcome::success().lost()]);
    let paid = s.pay("0712000203", None).await;
    let token = s.stack.callback_token_for(&paid);
    assert_eq!(
        s.post_callback(&token, safaricom, success(&paid, "TLP0000003"))
            .await,
        200
    );
    assert_eq!(
        s.post_callback(&token, safaricom, success(&paid, "TLP0000003"))
            .await,
        200
    );
    s.status_is(&paid, "COMPLETED").await;
    // A result for a checkout id no push recorded, and a body that is no callback.
    let unsent = s.stack.unsent_callback_token();
    let orphan = "ws_CO_01122026120000000712000299";
    assert_eq!(
        s.post_callback(&unsent, safaricom, success(orphan, "TLP0000099"))
            .await,
        200
    );
    assert_eq!(
        s.post_callback(&unsent, safaricom, "not json".to_owned())
            .await,
        400
    );
    // Every lookup.
    for path in [
        format!("/payments/{paid}"),
        "/payments?reference=INV-LP".to_owned(),
        "/payments?idempotency_key=lp-key-1".to_owned(),
    ] {
        assert_eq!(s.get(&path).await.0, 200, "{path}");
    }
    // The held success: once its callback was answered, a round confirms it.
    let deadline = Deadline::after(WAIT, "the held success's callback");
    while !sim
        .callbacks()
        .iter()
        .any(|c| c.checkout_request_id == held)
    {
        deadline.not_yet("not yet sent").await;
    }
    let deadline = Deadline::after(WAIT, "a round to confirm the held success");
    loop {
        let event: Value =
            serde_json::from_str(include_str!("../../events/reconcile-schedule.json")).unwrap();
        s.stack
            .invoke(Function::Reconcile, &event)
            .await
            .expect("reconcile");
        let (_, record) = s.get(&format!("/payments/{held}")).await;
        if record["status"] == "COMPLETED" {
            assert_eq!(
                record["receipt"].as_str().map(str::len),
                Some(10),
                "{record}"
            );
            break;
        }
        deadline.not_yet(&record).await;
    }

    let template: Yaml = serde_yaml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml"),
    )
    .expect("template YAML");
    let mut used = BTreeSet::new();
    let mut refused = BTreeSet::new();
    for request in proxy.seen() {
        let Some(binary) = request.access_key_id.strip_prefix("local-") else {
            continue; // the test's own requests
        };
        let statements = policy(&template, binary);
        for need in needs(&request) {
            let grouped = (binary.to_owned(), need.action.clone(), prefix(&need.on));
            if allows(&statements, &need) {
                used.insert(grouped);
            } else {
                refused.insert(grouped);
            }
        }
    }
    println!("requests made, by function, action and key:");
    for (binary, action, on) in &used {
        println!("  {binary:15} {action:28} {on}");
    }
    assert!(
        refused.is_empty(),
        "requests the template's policies would refuse: {refused:#?}"
    );
    // The event functions never touch the table: the stream reaches the consumer through its
    // event source, and the delivery function reads only its queue.
    let untouched = [Function::PaymentEvents, Function::WebhookDelivery];
    for function in Function::ALL {
        if untouched.contains(&function) {
            assert!(
                policy(&template, function.name()).is_empty(),
                "{function} may touch the table"
            );
            continue;
        }
        assert!(
            used.iter().any(|(binary, _, _)| binary == function.name()),
            "no request seen from {}",
            function.name()
        );
    }

    // And what they refuse: what each function has no business doing.
    let forbidden = [
        ("payment-status", "dynamodb:GetItem", "TOKEN#daraja"),
        ("payment-status", "dynamodb:UpdateItem", "PAY#ws_CO_1"),
        ("payment-status", "dynamodb:GetItem", "RAW#x"),
        ("stk-push", "dynamodb:DeleteItem", "PAY#ws_CO_1"),
        ("stk-push", "dynamodb:PutItem", "RCPT#TLP0000003"),
        ("stk-push", "dynamodb:PutItem", "TOKEN#daraja"),
        ("stk-callback", "dynamodb:PutItem", "PAY#ws_CO_1"),
        ("stk-callback", "dynamodb:GetItem", "TOKEN#daraja"),
        ("stk-callback", "dynamodb:DeleteItem", "PAY#ws_CO_1"),
        ("stk-callback", "dynamodb:DeleteItem", "IDEM#x"),
        ("reconcile", "dynamodb:DeleteItem", "PAY#ws_CO_1"),
        ("reconcile", "dynamodb:PutItem", "PAY#ws_CO_1"),
    ];
    for (binary, action, on) in forbidden {
        let need = Need {
            action: action.to_owned(),
            on: on.to_owned(),
        };
        assert!(
            !allows(&policy(&template, binary), &need),
            "{binary} may {action} {on}"
        );
    }
    s.stack.shutdown().await;
}

#[test]
fn string_like_matches_as_iam_does() {
    assert!(like("PAY#*", "PAY#ws_CO_1"));
    assert!(like("PAY#*", "PAY#"));
    assert!(like("TOKEN#daraja", "TOKEN#daraja"));
    assert!(!like("TOKEN#daraja", "TOKEN#daraja2"));
    assert!(!like("PAY#*", "RCPT#PAY#1"));
    assert!(like("*#x", "IDEM#x"));
}
