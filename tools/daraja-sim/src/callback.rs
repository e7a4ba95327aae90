//! Building the STK callback and delivering it to the merchant.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{json, Map, Value};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::model::{Delivery, Quirk, SentCallback};
use crate::state::{mask_id, CallbackPlan, Shared, Txn};

/// `{"Body":{"stkCallback":{…}}}` for a closed prompt, quirks applied.
pub(crate) fn body(txn: &Txn, receipt: Option<&str>) -> Value {
    let outcome = &txn.outcome;
    let has = |q: Quirk| outcome.quirks.contains(&q);
    let result_code = match (&outcome.result_code, has(Quirk::ResultCodeAsString)) {
        (Value::Number(n), true) => Value::String(n.to_string()),
        (code, _) => code.clone(),
    };
    let mut stk = Map::new();
    stk.insert("MerchantRequestID".into(), json!(txn.merchant_request_id));
    stk.insert("CheckoutRequestID".into(), json!(txn.checkout_request_id));
    stk.insert("ResultCode".into(), result_code);
    stk.insert("ResultDesc".into(), json!(outcome.effective_desc()));
    // Daraja sends metadata only with a success.
    if let (Some(receipt), false) = (receipt, has(Quirk::NoMetadata)) {
        let amount = match &outcome.amount_paid {
            Some(value) => value.clone(),
            None if has(Quirk::AmountAsString) => json!(txn.amount.to_string()),
            // u64 → f64 is exact for every amount Daraja accepts (≤ 250 000).
            None if has(Quirk::AmountAsFloat) => json!(txn.amount as f64),
            None => json!(txn.amount),
        };
        let balance = if has(Quirk::BalanceWithoutValue) {
            json!({"Name": "Balance"})
        } else {
            json!({"Name": "Balance", "Value": 0})
        };
        let transaction_date: u64 = crate::daraja::nairobi_now()
            .format("%Y%m%d%H%M%S")
            .to_string()
            .parse()
            .unwrap_or_default();
        let mut items = vec![
            json!({"Name": "Amount", "Value": amount}),
            json!({"Name": "MpesaReceiptNumber", "Value": receipt}),
            balance,
            json!({"Name": "TransactionDate", "Value": transaction_date}),
        ];
        if has(Quirk::PhoneMasked) {
            let masked = format!("{}***{}", &txn.phone[..6], &txn.phone[9..]);
            items.push(json!({"Name": "PhoneNumber", "Value": masked}));
        } else if !has(Quirk::PhoneMissing) {
            let phone: u64 = txn.phone.parse().unwrap_or_default();
            items.push(json!({"Name": "PhoneNumber", "Value": phone}));
        }
        stk.insert("CallbackMetadata".into(), json!({ "Item": items }));
    }
    json!({"Body": {"stkCallback": stk}})
}

/// Waits for the customer (the delay, or `complete_now`), then closes the prompt and
/// delivers its callback.
pub(crate) async fn run_prompt(
    shared: Arc<Shared>,
    checkout_request_id: String,
    delay: Duration,
    wake: Arc<Notify>,
) {
    tokio::select! {
        () = tokio::time::sleep(delay) => {}
        () = wake.notified() => {}
        () = shared.stopped() => return,
    }
    if let Some(plan) = shared.close_prompt(&checkout_request_id) {
        deliver(&shared, plan).await;
    }
}

pub(crate) async fn deliver(shared: &Arc<Shared>, plan: CallbackPlan) {
    match plan.delivery {
        Delivery::Normal | Delivery::BeforeResponse => post(shared, &plan).await,
        Delivery::Lost => {
            tracing::info!(checkout = %mask_id(&plan.checkout_request_id), "callback lost on purpose");
        }
        Delivery::Late(by) => {
            tokio::select! {
                () = tokio::time::sleep(by) => post(shared, &plan).await,
                () = shared.stopped() => {}
            }
        }
        Delivery::Duplicate {
            times,
            concurrent: false,
        } => {
            for _ in 0..times.max(1) {
                post(shared, &plan).await;
            }
        }
        Delivery::Duplicate {
            times,
            concurrent: true,
        } => {
            let plan = Arc::new(plan);
            let mut posts = JoinSet::new();
            for _ in 0..times.max(1) {
                let (shared, plan) = (shared.clone(), plan.clone());
                posts.spawn(async move { post(&shared, &plan).await });
            }
            while posts.join_next().await.is_some() {}
        }
    }
}

async fn post(shared: &Shared, plan: &CallbackPlan) {
    let sent_at = Utc::now();
    let status = match shared.http.post(&plan.url).json(&plan.body).send().await {
        Ok(response) => {
            tracing::info!(
                checkout = %mask_id(&plan.checkout_request_id),
                status = response.status().as_u16(),
                "callback answered"
            );
            Some(response.status().as_u16())
        }
        Err(error) => {
            tracing::warn!(
                checkout = %mask_id(&plan.checkout_request_id),
                error = %error.without_url(),
                "callback not delivered"
            );
            None
        }
    };
    shared.record_callback(SentCallback {
        checkout_request_id: plan.checkout_request_id.clone(),
        url: plan.url.clone(),
        body: plan.body.clone(),
        status,
        sent_at,
    });
}
