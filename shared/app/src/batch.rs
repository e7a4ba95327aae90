//! Lambda's partial batch response, for a stream or an SQS event source
//! (`FunctionResponseTypes: ReportBatchItemFailures`): the items to be tried again.

use serde::Serialize;

#[derive(Debug, Default, PartialEq, Eq, Serialize)]
pub struct BatchResponse {
    #[serde(rename = "batchItemFailures")]
    pub failures: Vec<ItemFailure>,
}

/// A stream record's sequence number, or an SQS message's id.
#[derive(Debug, PartialEq, Eq, Serialize)]
pub struct ItemFailure {
    #[serde(rename = "itemIdentifier")]
    pub item_identifier: String,
}

impl BatchResponse {
    /// A response naming `items` (none: the whole batch was handled).
    pub fn failing(items: impl IntoIterator<Item = String>) -> Self {
        Self {
            failures: items
                .into_iter()
                .map(|item_identifier| ItemFailure { item_identifier })
                .collect(),
        }
    }
}
