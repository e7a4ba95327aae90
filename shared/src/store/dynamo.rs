//! The DynamoDB [`PaymentStore`]: one table, defined in `template.yaml`.
//!
//! Every state change is one `UpdateItem` whose condition states the state it expects.
//! When the guess is wrong, DynamoDB hands back the item as it was
//! (`ReturnValuesOnConditionCheckFailure::AllOld`), the shared rules pick the right
//! write, and that write is tried under its own condition. States only move forward
//! (absent → pending → final), so this settles in a few rounds.

use std::collections::HashMap;
use std::fmt;

use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chrono::{DateTime, Utc};

use super::item::{self, n, s, time, Item};
use super::{Applied, PaymentStore, PendingWrite, StoreError};
use crate::payment::{
    plan_pending, plan_result, NewPayment, PaymentRecord, PaymentResult, PaymentStatus,
    PendingPlan, ResultPlan, ResultSource,
};

/// More rounds than the forward-only state machine can need; reaching it means another
/// writer keeps changing the item, which only a bug can do.
const MAX_ROUNDS: usize = 6;

#[derive(Debug, Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
        }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// Runs one conditional update. `Ok(Err(old))` means the condition failed; `old` is
    /// the item as it was (`None`: there was none).
    async fn update(
        &self,
        checkout_request_id: &str,
        update: Update,
    ) -> Result<Result<PaymentRecord, Option<PaymentRecord>>, StoreError> {
        let Finished {
            expression,
            condition,
            names,
            values,
        } = update.finish();
        let answer = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(item::PK, s(item::pk(checkout_request_id)))
            .update_expression(expression)
            .set_condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match answer {
            Ok(output) => {
                let attributes = output.attributes.unwrap_or_default();
                item::record_from_item(&attributes).map(Ok)
            }
            Err(SdkError::ServiceError(failure)) => match failure.err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => failed
                    .item()
                    .filter(|old| !old.is_empty())
                    .map(item::record_from_item)
                    .transpose()
                    .map(Err),
                _ => Err(unavailable(SdkError::ServiceError(failure))),
            },
            Err(other) => Err(unavailable(other)),
        }
    }

    async fn transition(
        &self,
        result: &PaymentResult,
        status: PaymentStatus,
    ) -> Result<Result<PaymentRecord, Option<PaymentRecord>>, StoreError> {
        let mut update = result_update(result, status);
        let open = format!(
            "({st} = {pending} OR {st} = {expired})",
            st = update.name(item::STATUS),
            pending = update.value("open_pending", s(PaymentStatus::Pending.as_str())),
            expired = update.value("open_expired", s(PaymentStatus::Expired.as_str())),
        );
        let amount_check = amount_check(&mut update, status, result);
        update.condition(format!("{open}{amount_check}"));
        self.update(&result.checkout_request_id, update).await
    }

    /// Adds a success callback's details to a record an STK query completed. The
    /// condition is the whole rule ([`PaymentResult::enriches`]), so a failed record, a
    /// record with a receipt, or a race lost to another callback is never touched.
    async fn enrich(
        &self,
        result: &PaymentResult,
        status: PaymentStatus,
    ) -> Result<Result<PaymentRecord, Option<PaymentRecord>>, StoreError> {
        let mut update = Update::default();
        update.set(item::STATUS, s(status.as_str()));
        update.set(item::UPDATED_AT, time(Utc::now()));
        set_result_details(&mut update, result);
        let condition = format!(
            "{st} = {completed} AND {code} = {same_code} AND {by} = {query} AND attribute_not_exists({receipt})",
            st = update.name(item::STATUS),
            completed = update.value("completed", s(PaymentStatus::Completed.as_str())),
            code = update.name(item::RESULT_CODE),
            same_code = update.value("same_code", s(&result.result_code)),
            by = update.name(item::RECONCILED_BY),
            query = update.value("by_query", s(ResultSource::Query.as_str())),
            receipt = update.name(item::RECEIPT),
        );
        let amount_check = amount_check(&mut update, status, result);
        update.condition(format!("{condition}{amount_check}"));
        self.update(&result.checkout_request_id, update).await
    }

    async fn create_orphan(
        &self,
        result: &PaymentResult,
        status: PaymentStatus,
    ) -> Result<Result<PaymentRecord, Option<PaymentRecord>>, StoreError> {
        let mut update = result_update(result, status);
        update.set(item::ORPHAN_PK, s(item::ORPHAN_PARTITION));
        update.set(
            item::ORPHAN_SK,
            s(item::index_sk(
                result.received_at,
                &result.checkout_request_id,
            )),
        );
        let pk = update.name(item::PK);
        update.condition(format!("attribute_not_exists({pk})"));
        self.update(&result.checkout_request_id, update).await
    }

    /// Counts a repeated or contradicting result on a final record. The record's status
    /// and result fields never change once final, so no condition beyond existence.
    async fn note_repeat(
        &self,
        result: &PaymentResult,
        plan: ResultPlan,
        stored: PaymentRecord,
    ) -> Result<Applied, StoreError> {
        let mut update = Update::default();
        let conflict = plan == ResultPlan::Conflict;
        if conflict {
            let history = update.name(item::HISTORY);
            let empty = update.value("empty", AttributeValue::L(Vec::new()));
            let entry = update.value(
                "entry",
                AttributeValue::L(vec![item::history_entry(&result.history_entry())]),
            );
            update.set.push(format!(
                "{history} = list_append(if_not_exists({history}, {empty}), {entry})"
            ));
        }
        if result.source == ResultSource::Callback {
            let counter = if conflict {
                item::CONFLICTING_CALLBACKS
            } else {
                item::DUPLICATE_CALLBACKS
            };
            update.add(counter, 1);
        }
        let record = if update.is_empty() {
            // A query repeating the stored result: nothing to record.
            stored
        } else {
            let pk = update.name(item::PK);
            update.condition(format!("attribute_exists({pk})"));
            match self.update(&result.checkout_request_id, update).await? {
                Ok(record) => record,
                Err(_) => return Err(contention(&result.checkout_request_id)),
            }
        };
        Ok(if conflict {
            Applied::Conflict(record)
        } else {
            Applied::Duplicate(record)
        })
    }
}

/// The amount check of a write setting `status` from `result`, as a condition suffix. It
/// lives in the condition, so a pending write that lands between our guess and this write
/// cannot slip a wrong amount past it.
fn amount_check(update: &mut Update, status: PaymentStatus, result: &PaymentResult) -> String {
    match (status, result.amount_paid_whole) {
        (PaymentStatus::Completed, Some(paid)) => {
            let amount = update.name(item::AMOUNT);
            let paid = update.value("paid", n(paid));
            format!(" AND (attribute_not_exists({amount}) OR {amount} = {paid})")
        }
        (PaymentStatus::NeedsReview, Some(paid)) => {
            let amount = update.name(item::AMOUNT);
            let paid = update.value("paid", n(paid));
            format!(" AND attribute_exists({amount}) AND {amount} <> {paid}")
        }
        _ => String::new(),
    }
}

/// What a result says of the payment (receipt, amount paid, paying phone, date, raw callback):
/// written by a transition, an orphan creation and an enrichment alike.
fn set_result_details(update: &mut Update, result: &PaymentResult) {
    update.set_some(item::RECEIPT, result.receipt.as_deref());
    update.set_some(item::AMOUNT_PAID, result.amount_paid.as_deref());
    if let Some(paid) = result.amount_paid_whole {
        update.set(item::AMOUNT_PAID_WHOLE, n(paid));
    }
    update.set_some(item::PAYING_PHONE, result.paying_phone.as_deref());
    update.set_some(item::TRANSACTION_DATE, result.transaction_date.as_deref());
    update.set_some(item::RAW_CALLBACK, result.raw.as_deref());
}

/// The writes shared by a transition and an orphan creation.
fn result_update(result: &PaymentResult, status: PaymentStatus) -> Update {
    let mut update = Update::default();
    update.set(item::STATUS, s(status.as_str()));
    update.set(item::CHECKOUT_REQUEST_ID, s(&result.checkout_request_id));
    // The request's merchant id wins whichever write comes first.
    update.set_if_absent(item::MERCHANT_REQUEST_ID, s(&result.merchant_request_id));
    update.set(item::COMPLETED_AT, time(result.received_at));
    update.set(item::UPDATED_AT, time(Utc::now()));
    update.set(item::RESULT_CODE, s(&result.result_code));
    update.set(item::RESULT_DESC, s(&result.result_desc));
    update.set(item::OUTCOME, s(&result.outcome));
    set_result_details(&mut update, result);
    update.set(item::RECONCILED_BY, s(result.source.as_str()));
    update.set_if_absent(item::DETAILS_RECORDED, AttributeValue::Bool(false));
    update.remove(item::PENDING_PK);
    update.remove(item::PENDING_SK);
    update
}

/// The request details, written by both pending-write variants.
fn details_update(payment: &NewPayment) -> Update {
    let mut update = Update::default();
    update.set(item::CHECKOUT_REQUEST_ID, s(&payment.checkout_request_id));
    update.set(item::MERCHANT_REQUEST_ID, s(&payment.merchant_request_id));
    update.set(item::AMOUNT, n(payment.amount));
    update.set(item::PHONE, s(&payment.phone));
    update.set(item::REFERENCE, s(&payment.reference));
    update.set_some(item::DESCRIPTION, payment.description.as_deref());
    update.set(item::CREATED_AT, time(payment.created_at));
    update.set(item::UPDATED_AT, time(Utc::now()));
    update.set(item::DETAILS_RECORDED, AttributeValue::Bool(true));
    update
}

#[async_trait]
impl PaymentStore for DynamoStore {
    async fn record_pending(&self, payment: &NewPayment) -> Result<PendingWrite, StoreError> {
        // Common path first: nothing stored yet.
        let mut plan = PendingPlan::Open;
        for _ in 0..MAX_ROUNDS {
            let mut update = details_update(payment);
            let written = match plan {
                PendingPlan::Open => {
                    update.set(item::STATUS, s(PaymentStatus::Pending.as_str()));
                    update.set(item::PENDING_PK, s(item::PENDING_PARTITION));
                    update.set(
                        item::PENDING_SK,
                        s(item::index_sk(
                            payment.created_at,
                            &payment.checkout_request_id,
                        )),
                    );
                    let pk = update.name(item::PK);
                    let status = update.name(item::STATUS);
                    let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
                    update.condition(format!(
                        "attribute_not_exists({pk}) OR {status} = {pending}"
                    ));
                    self.update(&payment.checkout_request_id, update)
                        .await?
                        .map(PendingWrite::Created)
                }
                PendingPlan::AddDetails(target) => {
                    update.remove(item::ORPHAN_PK);
                    update.remove(item::ORPHAN_SK);
                    let status = update.name(item::STATUS);
                    let paid = update.name(item::AMOUNT_PAID_WHOLE);
                    let completed = update.value("completed", s(PaymentStatus::Completed.as_str()));
                    let asked = update.value("asked", n(payment.amount));
                    // The two conditions split "final" exactly: a success for another
                    // amount, and everything else, which keeps its status.
                    let mismatch = format!(
                        "{status} = {completed} AND attribute_exists({paid}) AND {paid} <> {asked}"
                    );
                    if target == PaymentStatus::NeedsReview {
                        update.set(item::STATUS, s(PaymentStatus::NeedsReview.as_str()));
                        update.condition(mismatch);
                    } else {
                        let pk = update.name(item::PK);
                        let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
                        update.condition(format!(
                            "attribute_exists({pk}) AND {status} <> {pending} AND NOT ({mismatch})"
                        ));
                    }
                    self.update(&payment.checkout_request_id, update)
                        .await?
                        .map(PendingWrite::ResultAlreadyKnown)
                }
            };
            match written {
                Ok(outcome) => return Ok(outcome),
                Err(stored) => plan = plan_pending(payment, stored.as_ref()),
            }
        }
        Err(contention(&payment.checkout_request_id))
    }

    async fn apply_result(&self, result: &PaymentResult) -> Result<Applied, StoreError> {
        // Common path first: the pending write is there and the amount matches.
        let mut plan = ResultPlan::Transition(result.final_status(None));
        for _ in 0..MAX_ROUNDS {
            let written = match plan {
                ResultPlan::Transition(status) => {
                    self.transition(result, status)
                        .await?
                        .map(|record| Applied::Transitioned {
                            record,
                            orphan: false,
                        })
                }
                ResultPlan::CreateOrphan(status) => {
                    self.create_orphan(result, status)
                        .await?
                        .map(|record| Applied::Transitioned {
                            record,
                            orphan: true,
                        })
                }
                ResultPlan::Enrich(status) => {
                    self.enrich(result, status)
                        .await?
                        .map(|record| Applied::Transitioned {
                            record,
                            orphan: false,
                        })
                }
                ResultPlan::Duplicate | ResultPlan::Conflict => {
                    unreachable!("a repeat is planned only from a stored record")
                }
            };
            let stored = match written {
                Ok(applied) => return Ok(applied),
                Err(stored) => stored,
            };
            plan = plan_result(result, stored.as_ref());
            if let (ResultPlan::Duplicate | ResultPlan::Conflict, Some(stored)) = (plan, stored) {
                return self.note_repeat(result, plan, stored).await;
            }
        }
        Err(contention(&result.checkout_request_id))
    }

    async fn get(&self, checkout_request_id: &str) -> Result<Option<PaymentRecord>, StoreError> {
        let output = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(item::PK, s(item::pk(checkout_request_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        output.item.as_ref().map(item::record_from_item).transpose()
    }

    async fn orphans(&self, limit: u32) -> Result<Vec<PaymentRecord>, StoreError> {
        let items = self
            .query_index(
                item::ORPHAN_INDEX,
                item::ORPHAN_PK,
                item::ORPHAN_PARTITION,
                None,
                limit,
            )
            .await?;
        items.iter().map(item::record_from_item).collect()
    }

    async fn pending_older_than(
        &self,
        cutoff: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        // `created_at#id` sorts after `created_at`, so a payment created exactly at the
        // cutoff is not older than it.
        let items = self
            .query_index(
                item::PENDING_INDEX,
                item::PENDING_PK,
                item::PENDING_PARTITION,
                Some((item::PENDING_SK, time(cutoff))),
                limit,
            )
            .await?;
        items
            .iter()
            .map(|found| match found.get(item::PK) {
                Some(AttributeValue::S(pk)) if pk.starts_with(item::PK_PREFIX) => {
                    Ok(pk[item::PK_PREFIX.len()..].to_owned())
                }
                _ => Err(StoreError::Corrupt {
                    pk: String::from("<pending-index entry>"),
                    detail: String::from("index entry without a payment key"),
                }),
            })
            .collect()
    }

    async fn record_query_attempt(&self, checkout_request_id: &str) -> Result<(), StoreError> {
        let mut update = Update::default();
        update.add(item::QUERY_ATTEMPTS, 1);
        let status = update.name(item::STATUS);
        let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
        update.condition(format!("{status} = {pending}"));
        // A failed condition means the payment is final (or unknown): nothing to count.
        self.update(checkout_request_id, update).await.map(|_| ())
    }

    async fn expire(
        &self,
        checkout_request_id: &str,
        at: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let mut update = Update::default();
        update.set(item::STATUS, s(PaymentStatus::Expired.as_str()));
        update.set(item::UPDATED_AT, time(at));
        update.remove(item::PENDING_PK);
        update.remove(item::PENDING_SK);
        let status = update.name(item::STATUS);
        let pending = update.value("pending", s(PaymentStatus::Pending.as_str()));
        update.condition(format!("{status} = {pending}"));
        Ok(self.update(checkout_request_id, update).await?.is_ok())
    }
}

impl DynamoStore {
    /// Reads a sparse index's single partition in key order, up to `limit` items.
    async fn query_index(
        &self,
        index: &str,
        partition_attr: &str,
        partition: &str,
        sort_below: Option<(&str, AttributeValue)>,
        limit: u32,
    ) -> Result<Vec<Item>, StoreError> {
        let mut names = HashMap::from([("#p".to_owned(), partition_attr.to_owned())]);
        let mut values = HashMap::from([(":p".to_owned(), s(partition))]);
        let mut key_condition = String::from("#p = :p");
        if let Some((sort_attr, below)) = sort_below {
            names.insert("#s".to_owned(), sort_attr.to_owned());
            values.insert(":s".to_owned(), below);
            key_condition.push_str(" AND #s < :s");
        }
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        while found.len() < limit as usize {
            let remaining = limit as usize - found.len();
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(index)
                .key_condition_expression(&key_condition)
                .set_expression_attribute_names(Some(names.clone()))
                .set_expression_attribute_values(Some(values.clone()))
                .limit(i32::try_from(remaining).unwrap_or(i32::MAX))
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable)?;
            found.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if !key.is_empty() => start = Some(key),
                _ => break,
            }
        }
        found.truncate(limit as usize);
        Ok(found)
    }
}

/// An update expression with its placeholders. Every attribute goes through a `#name`
/// placeholder (`status`, `raw`… are reserved words), and a value is registered only
/// when used, because DynamoDB rejects unused placeholders.
#[derive(Debug, Default)]
struct Update {
    set: Vec<String>,
    remove: Vec<String>,
    add: Vec<String>,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

struct Finished {
    expression: String,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

impl Update {
    fn name(&mut self, attr: &str) -> String {
        let placeholder = format!("#{attr}");
        self.names.insert(placeholder.clone(), attr.to_owned());
        placeholder
    }

    fn value(&mut self, key: &str, value: AttributeValue) -> String {
        let placeholder = format!(":{key}");
        self.values.insert(placeholder.clone(), value);
        placeholder
    }

    fn set(&mut self, attr: &str, value: AttributeValue) {
        let name = self.name(attr);
        let value = self.value(attr, value);
        self.set.push(format!("{name} = {value}"));
    }

    fn set_some(&mut self, attr: &str, value: Option<&str>) {
        if let Some(value) = value {
            self.set(attr, s(value));
        }
    }

    fn set_if_absent(&mut self, attr: &str, value: AttributeValue) {
        let name = self.name(attr);
        let value = self.value(attr, value);
        self.set
            .push(format!("{name} = if_not_exists({name}, {value})"));
    }

    fn remove(&mut self, attr: &str) {
        let name = self.name(attr);
        self.remove.push(name);
    }

    fn add(&mut self, attr: &str, by: u32) {
        let name = self.name(attr);
        let value = self.value(&format!("add_{attr}"), n(by));
        self.add.push(format!("{name} {value}"));
    }

    fn condition(&mut self, condition: String) {
        self.condition = Some(condition);
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty() && self.add.is_empty()
    }

    fn finish(self) -> Finished {
        let clauses = [
            ("SET", &self.set),
            ("REMOVE", &self.remove),
            ("ADD", &self.add),
        ];
        let expression = clauses
            .iter()
            .filter(|(_, parts)| !parts.is_empty())
            .map(|(keyword, parts)| format!("{keyword} {}", parts.join(", ")))
            .collect::<Vec<_>>()
            .join(" ");
        Finished {
            expression,
            condition: self.condition,
            names: self.names,
            values: self.values,
        }
    }
}

/// Keeps the SDK's full error chain in the message; its own `Display` says little.
#[derive(Debug)]
struct SdkFailure {
    context: String,
    source: BoxedSource,
}

type BoxedSource = Box<dyn std::error::Error + Send + Sync + 'static>;

impl fmt::Display for SdkFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.context)
    }
}

impl std::error::Error for SdkFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

fn unavailable<E>(error: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Unavailable(Box::new(SdkFailure {
        context: DisplayErrorContext(&error).to_string(),
        source: Box::new(error),
    }))
}

fn contention(checkout_request_id: &str) -> StoreError {
    StoreError::Unavailable(
        format!(
            "payment {} kept changing under a conditional write",
            crate::store::mask(checkout_request_id)
        )
        .into(),
    )
}
