//! The payments table and the few requests every store makes of it: a conditional update that
//! hands back the old item when its condition fails, a conditional put, a consistent
//! read, a read of one sparse index partition in key order, and a transaction.

use aws_sdk_dynamodb::error::SdkError;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::{
    AttributeValue, CancellationReason, Delete, Put, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use aws_sdk_dynamodb::Client;
use payments::StoreError;

use crate::error::unavailable;
use crate::expr::Expr;
use crate::item::{s, Item, PK};

/// What a conditional write did: `Ok(new item)`, or `Err(old item)` when the condition failed
/// (`None`: there was no item).
pub type Conditional = Result<Item, Option<Item>>;

/// What a conditional write that returns nothing did: `Ok(true)` written, `Ok(false)` its
/// condition failed (`failed` says which service error that is).
fn held<T, E, R>(
    answer: Result<T, SdkError<E, R>>,
    failed: fn(&E) -> bool,
) -> Result<bool, StoreError>
where
    E: std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match answer {
        Ok(_) => Ok(true),
        Err(SdkError::ServiceError(failure)) if failed(failure.err()) => Ok(false),
        Err(other) => Err(unavailable(other)),
    }
}

/// The table's client and name.
#[derive(Debug, Clone)]
pub struct Table {
    client: Client,
    name: String,
}

impl Table {
    pub fn new(client: Client, name: impl Into<String>) -> Self {
        Self {
            client,
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// One conditional `UpdateItem` on `pk`, returning the item as it is after the write, or as
    /// it was when the condition failed.
    pub async fn update(&self, pk: String, expr: Expr) -> Result<Conditional, StoreError> {
        let answer = self
            .update_request(pk, expr)
            .return_values(ReturnValue::AllNew)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match answer {
            Ok(output) => Ok(Ok(output.attributes.unwrap_or_default())),
            Err(SdkError::ServiceError(failure)) => match failure.err() {
                UpdateItemError::ConditionalCheckFailedException(failed) => {
                    Ok(Err(failed.item().filter(|old| !old.is_empty()).cloned()))
                }
                _ => Err(unavailable(SdkError::ServiceError(failure))),
            },
            Err(other) => Err(unavailable(other)),
        }
    }

    /// One conditional `UpdateItem` on `pk` that returns nothing: `Ok(false)` when the
    /// condition failed.
    pub async fn write(&self, pk: String, expr: Expr) -> Result<bool, StoreError> {
        let answer = self.update_request(pk, expr).send().await;
        held(
            answer,
            UpdateItemError::is_conditional_check_failed_exception,
        )
    }

    /// One conditional `PutItem` of `item`: `Ok(Err(old))` when the condition failed, with the
    /// item that was there.
    pub async fn put_if(&self, item: Item, expr: Expr) -> Result<Conditional, StoreError> {
        let parts = expr.finish();
        let answer = self
            .client
            .put_item()
            .table_name(&self.name)
            .set_item(Some(item))
            .set_condition_expression(parts.condition)
            .set_expression_attribute_names(parts.names)
            .set_expression_attribute_values(parts.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match answer {
            Ok(_) => Ok(Ok(Item::new())),
            Err(SdkError::ServiceError(failure)) => match failure.err() {
                PutItemError::ConditionalCheckFailedException(failed) => {
                    Ok(Err(failed.item().filter(|old| !old.is_empty()).cloned()))
                }
                _ => Err(unavailable(SdkError::ServiceError(failure))),
            },
            Err(other) => Err(unavailable(other)),
        }
    }

    /// One conditional `DeleteItem` of `pk`: `Ok(false)` when the condition failed.
    pub async fn delete_if(&self, pk: String, expr: Expr) -> Result<bool, StoreError> {
        let parts = expr.finish();
        let answer = self
            .client
            .delete_item()
            .table_name(&self.name)
            .key(PK, s(pk))
            .set_condition_expression(parts.condition)
            .set_expression_attribute_names(parts.names)
            .set_expression_attribute_values(parts.values)
            .send()
            .await;
        held(
            answer,
            DeleteItemError::is_conditional_check_failed_exception,
        )
    }

    /// The `UpdateItem` of `expr` on `pk`, before its return values are chosen.
    fn update_request(&self, pk: String, expr: Expr) -> UpdateItemFluentBuilder {
        let parts = expr.finish();
        self.client
            .update_item()
            .table_name(&self.name)
            .key(PK, s(pk))
            .set_update_expression(parts.update)
            .set_condition_expression(parts.condition)
            .set_expression_attribute_names(parts.names)
            .set_expression_attribute_values(parts.values)
    }

    /// A strongly consistent read of `pk`, of the `only` attributes when given.
    pub async fn get(&self, pk: String, only: &[&str]) -> Result<Option<Item>, StoreError> {
        let mut request = self
            .client
            .get_item()
            .table_name(&self.name)
            .key(PK, s(pk))
            .consistent_read(true);
        if !only.is_empty() {
            let mut expr = Expr::new();
            let names: Vec<String> = only.iter().map(|attr| expr.name(attr)).collect();
            request = request
                .projection_expression(names.join(", "))
                .set_expression_attribute_names(expr.finish().names);
        }
        Ok(request.send().await.map_err(unavailable)?.item)
    }

    /// Reads one partition of a sparse index in key order, up to `limit` items, with sort keys
    /// below `sort_below` when given.
    pub async fn query_partition(
        &self,
        index: &str,
        partition: (&str, &str),
        sort_below: Option<(&str, AttributeValue)>,
        limit: u32,
    ) -> Result<Vec<Item>, StoreError> {
        self.query_index(index, partition, sort_below, limit, true)
            .await
    }

    /// Reads one partition of an index, the highest sort keys first, up to `limit` items.
    pub async fn query_partition_newest_first(
        &self,
        index: &str,
        partition: (&str, &str),
        limit: u32,
    ) -> Result<Vec<Item>, StoreError> {
        self.query_index(index, partition, None, limit, false).await
    }

    async fn query_index(
        &self,
        index: &str,
        partition: (&str, &str),
        sort_below: Option<(&str, AttributeValue)>,
        limit: u32,
        ascending: bool,
    ) -> Result<Vec<Item>, StoreError> {
        let mut expr = Expr::new();
        let mut key_condition = expr.equals(partition.0, "partition", s(partition.1));
        if let Some((sort_attr, below)) = sort_below {
            let sort = expr.name(sort_attr);
            let below = expr.value("below", below);
            key_condition = format!("{key_condition} AND {sort} < {below}");
        }
        let parts = expr.finish();
        let mut found = Vec::new();
        let mut start: Option<Item> = None;
        while found.len() < limit as usize {
            let remaining = limit as usize - found.len();
            let page = self
                .client
                .query()
                .table_name(&self.name)
                .index_name(index)
                .scan_index_forward(ascending)
                .key_condition_expression(&key_condition)
                .set_expression_attribute_names(parts.names.clone())
                .set_expression_attribute_values(parts.values.clone())
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

    /// One transaction. `Ok(Err(reasons))`: it was cancelled, one reason per item in order.
    pub async fn transact(
        &self,
        items: Vec<TransactWriteItem>,
    ) -> Result<Result<(), Vec<CancellationReason>>, StoreError> {
        match self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(Ok(())),
            Err(SdkError::ServiceError(failure)) => match failure.err() {
                TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                    Ok(Err(cancelled.cancellation_reasons().to_vec()))
                }
                _ => Err(unavailable(SdkError::ServiceError(failure))),
            },
            Err(other) => Err(unavailable(other)),
        }
    }

    /// A transaction item writing `item` whole under `expr`'s condition.
    pub fn put(&self, item: Item, expr: Expr) -> TransactWriteItem {
        let parts = expr.finish();
        let put = Put::builder()
            .table_name(&self.name)
            .set_item(Some(item))
            .set_condition_expression(parts.condition)
            .set_expression_attribute_names(parts.names)
            .set_expression_attribute_values(parts.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table and item are set");
        TransactWriteItem::builder().put(put).build()
    }

    /// A transaction item updating `pk` with `expr`.
    pub fn update_item(&self, pk: String, expr: Expr) -> TransactWriteItem {
        let parts = expr.finish();
        let update = Update::builder()
            .table_name(&self.name)
            .key(PK, s(pk))
            .set_update_expression(parts.update)
            .set_condition_expression(parts.condition)
            .set_expression_attribute_names(parts.names)
            .set_expression_attribute_values(parts.values)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .expect("table, key and expression are set");
        TransactWriteItem::builder().update(update).build()
    }

    /// A transaction item deleting `pk` under `expr`'s condition.
    pub fn delete(&self, pk: String, expr: Expr) -> TransactWriteItem {
        let parts = expr.finish();
        let delete = Delete::builder()
            .table_name(&self.name)
            .key(PK, s(pk))
            .set_condition_expression(parts.condition)
            .set_expression_attribute_names(parts.names)
            .set_expression_attribute_values(parts.values)
            .build()
            .expect("table and key are set");
        TransactWriteItem::builder().delete(delete).build()
    }
}
