//! The item codec: the attribute names of a payment item, the value constructors, and the one
//! [`Reader`] every item is decoded with (strict: a wrongly typed attribute is corrupt, never
//! read as absent).

use std::collections::HashMap;
use std::str::FromStr;

use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};

use payments::payment::{
    timestamp, HeldCallback, PaymentRecord, PaymentStatus, ResultHistoryEntry, ResultSource,
    ReviewReason,
};
use payments::StoreError;

pub type Item = HashMap<String, AttributeValue>;

pub const PK: &str = "pk";
pub const PK_PREFIX: &str = "PAY#";
pub const CHECKOUT_REQUEST_ID: &str = "checkout_request_id";
pub const MERCHANT_REQUEST_ID: &str = "merchant_request_id";
pub const STATUS: &str = "status";
pub const AMOUNT: &str = "amount";
pub const PHONE: &str = "phone";
pub const REFERENCE: &str = "reference";
pub const DESCRIPTION: &str = "description";
pub const CREATED_AT: &str = "created_at";
pub const UPDATED_AT: &str = "updated_at";
pub const COMPLETED_AT: &str = "completed_at";
pub const RESULT_CODE: &str = "result_code";
pub const RESULT_DESC: &str = "result_desc";
pub const OUTCOME: &str = "outcome";
pub const RECEIPT: &str = "receipt";
pub const AMOUNT_PAID: &str = "amount_paid";
pub const AMOUNT_PAID_WHOLE: &str = "amount_paid_whole";
pub const PAYING_PHONE: &str = "paying_phone";
pub const TRANSACTION_DATE: &str = "transaction_date";
pub const RAW_CALLBACK: &str = "raw_callback";
pub const RECONCILED_BY: &str = "reconciled_by";
pub const REVIEW_REASON: &str = "review_reason";
pub const RECEIPT_HOLDER: &str = "receipt_holder";
pub const CALLBACK_NONCE: &str = "callback_nonce";
/// The IAM principal that asked for the payment (on the payment and on its intent).
pub const CREATED_BY: &str = "created_by";
pub const LAST_QUERIED_AT: &str = "last_queried_at";
pub const QUERY_ATTEMPTS: &str = "query_attempts";
pub const CONFLICTING_CALLBACKS: &str = "conflicting_callbacks";
pub const HISTORY: &str = "history";
/// A success callback waiting for its STK query: a map of `raw`, `received_at`,
/// `callback_nonce` and `source_ip`.
pub const HELD_CALLBACK: &str = "held_callback";
/// The TTL attribute, epoch seconds.
pub const EXPIRES_AT: &str = "expires_at";
pub const DETAILS_RECORDED: &str = "details_recorded";
pub const PENDING_PK: &str = "pending_pk";
pub const PENDING_SK: &str = "pending_sk";
pub const ORPHAN_PK: &str = "orphan_pk";
pub const ORPHAN_SK: &str = "orphan_sk";

/// The single partition of the sparse `orphan-index`.
pub const ORPHAN_PARTITION: &str = "ORPHAN";
pub const PENDING_INDEX: &str = "pending-index";
/// Payments by the merchant's reference, newest first: `ref_pk` = the reference, `ref_sk` =
/// created time + id (keys only).
pub const REFERENCE_INDEX: &str = "reference-index";
pub const REF_PK: &str = "ref_pk";
pub const REF_SK: &str = "ref_sk";
pub const ORPHAN_INDEX: &str = "orphan-index";
/// The payment an accepted push wrote, by its intent's key: `push_intent` = the intent's key
/// (`IDEM#…` or `INTENT#…`), with `answer_body` (the `202` answered) and the ids projected.
pub const INTENT_INDEX: &str = "intent-index";
pub const PUSH_INTENT: &str = "push_intent";
/// The body of an answer kept for replay (on an intent, and on the payment of an accepted push).
pub const ANSWER_BODY: &str = "answer_body";

pub fn pk(checkout_request_id: &str) -> String {
    format!("{PK_PREFIX}{checkout_request_id}")
}

/// The receipt claim: `RCPT#<receipt>` holds the `checkout_request_id` of the payment the
/// M-Pesa receipt was first recorded on, and `claimed_at`. Never expires.
pub const RECEIPT_PREFIX: &str = "RCPT#";
pub const CLAIMED_AT: &str = "claimed_at";

pub fn receipt_pk(receipt: &str) -> String {
    format!("{RECEIPT_PREFIX}{receipt}")
}

/// Sort key of both indexes: the instant, then the id to keep keys unique.
pub fn index_sk(at: DateTime<Utc>, checkout_request_id: &str) -> String {
    format!("{}#{checkout_request_id}", timestamp::format(at))
}

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

pub fn time(at: DateTime<Utc>) -> AttributeValue {
    AttributeValue::S(timestamp::format(at))
}

pub fn history_entry(entry: &ResultHistoryEntry) -> AttributeValue {
    let mut map = HashMap::from([
        ("received_at".to_owned(), time(entry.received_at)),
        ("result_code".to_owned(), s(&entry.result_code)),
        ("result_desc".to_owned(), s(&entry.result_desc)),
        ("source".to_owned(), s(entry.source.as_str())),
    ]);
    if let Some(receipt) = &entry.receipt {
        map.insert("receipt".to_owned(), s(receipt));
    }
    if let Some(raw) = &entry.raw {
        map.insert("raw".to_owned(), s(raw));
    }
    AttributeValue::M(map)
}

/// The attribute holding a [`HeldCallback`].
pub fn held_callback(held: &HeldCallback) -> AttributeValue {
    let mut map = HashMap::from([
        ("raw".to_owned(), s(&held.raw)),
        ("received_at".to_owned(), time(held.received_at)),
    ]);
    if let Some(nonce) = &held.callback_nonce {
        map.insert("callback_nonce".to_owned(), s(nonce));
    }
    if let Some(ip) = &held.source_ip {
        map.insert("source_ip".to_owned(), s(ip));
    }
    AttributeValue::M(map)
}

/// Reads an item back. Every attribute written by the store is read here and nowhere else.
pub fn record_from_item(item: &Item) -> Result<PaymentRecord, StoreError> {
    let reader = Reader::new(item);
    let checkout_request_id = match reader.string(CHECKOUT_REQUEST_ID)? {
        Some(id) => id,
        None => reader
            .pk
            .strip_prefix(PK_PREFIX)
            .map(str::to_owned)
            .ok_or_else(|| reader.corrupt("key is not a payment key"))?,
    };
    Ok(PaymentRecord {
        checkout_request_id,
        merchant_request_id: reader.string(MERCHANT_REQUEST_ID)?,
        status: reader
            .parsed::<PaymentStatus>(STATUS)?
            .ok_or_else(|| reader.corrupt("status is missing"))?,
        amount: reader.number(AMOUNT)?,
        phone: reader.string(PHONE)?,
        reference: reader.string(REFERENCE)?,
        description: reader.string(DESCRIPTION)?,
        created_at: reader.time(CREATED_AT)?,
        updated_at: reader
            .time(UPDATED_AT)?
            .ok_or_else(|| reader.corrupt("updated_at is missing"))?,
        completed_at: reader.time(COMPLETED_AT)?,
        result_code: reader.string(RESULT_CODE)?,
        result_desc: reader.string(RESULT_DESC)?,
        outcome: reader.string(OUTCOME)?,
        receipt: reader.string(RECEIPT)?,
        amount_paid: reader.string(AMOUNT_PAID)?,
        amount_paid_whole: reader.number(AMOUNT_PAID_WHOLE)?,
        paying_phone: reader.string(PAYING_PHONE)?,
        transaction_date: reader.string(TRANSACTION_DATE)?,
        reconciled_by: reader.parsed::<ResultSource>(RECONCILED_BY)?,
        review_reason: reader.parsed::<ReviewReason>(REVIEW_REASON)?,
        receipt_holder: reader.string(RECEIPT_HOLDER)?,
        query_attempts: reader.number(QUERY_ATTEMPTS)?.unwrap_or(0),
        last_queried_at: reader.time(LAST_QUERIED_AT)?,
        conflicting_callbacks: reader.number(CONFLICTING_CALLBACKS)?.unwrap_or(0),
        details_recorded: reader.boolean(DETAILS_RECORDED)?.unwrap_or(false),
        callback_nonce: reader.string(CALLBACK_NONCE)?,
        created_by: reader.string(CREATED_BY)?,
        raw_callback: reader.string(RAW_CALLBACK)?,
        history: reader.history()?,
        held_callback: reader.held_callback()?,
    })
}

fn pk_of(item: &Item) -> String {
    match item.get(PK) {
        Some(AttributeValue::S(pk)) => pk.clone(),
        _ => String::from("<no pk>"),
    }
}

/// Reads the attributes of one item; every problem is [`StoreError::Corrupt`] with its key.
pub struct Reader<'a> {
    item: &'a Item,
    pk: String,
}

impl<'a> Reader<'a> {
    pub fn new(item: &'a Item) -> Self {
        Self {
            item,
            pk: pk_of(item),
        }
    }

    pub fn pk(&self) -> &str {
        &self.pk
    }

    pub fn corrupt(&self, detail: impl Into<String>) -> StoreError {
        StoreError::Corrupt {
            pk: self.pk.clone(),
            detail: detail.into(),
        }
    }

    pub fn string(&self, name: &str) -> Result<Option<String>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(value)) => Ok(Some(value.clone())),
            Some(_) => Err(self.corrupt(format!("{name} is not a string"))),
        }
    }

    pub fn parsed<T: FromStr>(&self, name: &str) -> Result<Option<T>, StoreError> {
        self.string(name)?
            .map(|text| {
                text.parse::<T>()
                    .map_err(|_| self.corrupt(format!("{name} has unknown value {text:?}")))
            })
            .transpose()
    }

    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.string(name)?
            .map(|text| {
                timestamp::parse(&text)
                    .map_err(|_| self.corrupt(format!("{name} is not an RFC 3339 time")))
            })
            .transpose()
    }

    pub fn number<T: FromStr>(&self, name: &str) -> Result<Option<T>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::N(text)) => text
                .parse::<T>()
                .map(Some)
                .map_err(|_| self.corrupt(format!("{name} is out of range: {text}"))),
            Some(_) => Err(self.corrupt(format!("{name} is not a number"))),
        }
    }

    pub fn boolean(&self, name: &str) -> Result<Option<bool>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::Bool(value)) => Ok(Some(*value)),
            Some(_) => Err(self.corrupt(format!("{name} is not a boolean"))),
        }
    }

    /// A string that must be there.
    pub fn required(&self, name: &str) -> Result<String, StoreError> {
        self.string(name)?
            .ok_or_else(|| self.corrupt(format!("{name} is missing")))
    }

    /// A number that must be there.
    pub fn required_number<T: FromStr>(&self, name: &str) -> Result<T, StoreError> {
        self.number(name)?
            .ok_or_else(|| self.corrupt(format!("{name} is missing")))
    }

    /// A time that must be there.
    pub fn required_time(&self, name: &str) -> Result<DateTime<Utc>, StoreError> {
        self.time(name)?
            .ok_or_else(|| self.corrupt(format!("{name} is missing")))
    }

    /// A string or a binary value, as bytes.
    pub fn bytes(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match self.item.get(name) {
            None | Some(AttributeValue::Null(_)) => Ok(None),
            Some(AttributeValue::S(text)) => Ok(Some(text.clone().into_bytes())),
            Some(AttributeValue::B(blob)) => Ok(Some(blob.as_ref().to_vec())),
            Some(_) => Err(self.corrupt(format!("{name} is neither a string nor binary"))),
        }
    }

    fn held_callback(&self) -> Result<Option<HeldCallback>, StoreError> {
        let map = match self.item.get(HELD_CALLBACK) {
            None | Some(AttributeValue::Null(_)) => return Ok(None),
            Some(AttributeValue::M(map)) => map,
            Some(_) => return Err(self.corrupt("held_callback is not a map")),
        };
        let inner = Reader {
            item: map,
            pk: self.pk.clone(),
        };
        Ok(Some(HeldCallback {
            raw: inner
                .string("raw")?
                .ok_or_else(|| inner.corrupt("held_callback lacks raw"))?,
            received_at: inner
                .time("received_at")?
                .ok_or_else(|| inner.corrupt("held_callback lacks received_at"))?,
            callback_nonce: inner.string("callback_nonce")?,
            source_ip: inner.string("source_ip")?,
        }))
    }

    fn history(&self) -> Result<Vec<ResultHistoryEntry>, StoreError> {
        let entries = match self.item.get(HISTORY) {
            None | Some(AttributeValue::Null(_)) => return Ok(Vec::new()),
            Some(AttributeValue::L(entries)) => entries,
            Some(_) => return Err(self.corrupt("history is not a list")),
        };
        entries
            .iter()
            .map(|entry| match entry {
                AttributeValue::M(map) => {
                    let inner = Reader {
                        item: map,
                        pk: self.pk.clone(),
                    };
                    let required = |name: &str| {
                        inner
                            .string(name)?
                            .ok_or_else(|| inner.corrupt(format!("history entry lacks {name}")))
                    };
                    Ok(ResultHistoryEntry {
                        received_at: inner
                            .time("received_at")?
                            .ok_or_else(|| inner.corrupt("history entry lacks received_at"))?,
                        result_code: required("result_code")?,
                        result_desc: required("result_desc")?,
                        receipt: inner.string("receipt")?,
                        source: inner
                            .parsed::<ResultSource>("source")?
                            .ok_or_else(|| inner.corrupt("history entry lacks source"))?,
                        raw: inner.string("raw")?,
                    })
                }
                _ => Err(self.corrupt("history entry is not a map")),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn minimal() -> Item {
        HashMap::from([
            (PK.to_owned(), s("PAY#ws_CO_1")),
            (STATUS.to_owned(), s("PENDING")),
            (UPDATED_AT.to_owned(), s("2024-05-01T10:00:00.000Z")),
        ])
    }

    #[test]
    fn minimal_item_decodes_with_defaults() {
        let record = record_from_item(&minimal()).unwrap();
        assert_eq!(record.checkout_request_id, "ws_CO_1");
        assert_eq!(record.status, PaymentStatus::Pending);
        assert_eq!(record.query_attempts, 0);
        assert!(!record.details_recorded);
        assert!(record.history.is_empty());
    }

    #[test]
    fn unknown_status_is_corrupt_with_its_key() {
        let mut item = minimal();
        item.insert(STATUS.to_owned(), s("PAID"));
        match record_from_item(&item) {
            Err(StoreError::Corrupt { pk, detail }) => {
                assert_eq!(pk, "PAY#ws_CO_1");
                assert!(detail.contains("PAID"), "{detail}");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn wrongly_typed_amount_is_corrupt() {
        let mut item = minimal();
        item.insert(AMOUNT.to_owned(), s("100"));
        assert!(matches!(
            record_from_item(&item),
            Err(StoreError::Corrupt { .. })
        ));
        item.insert(AMOUNT.to_owned(), n("-5"));
        assert!(matches!(
            record_from_item(&item),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn history_round_trips() {
        let entry = ResultHistoryEntry {
            received_at: timestamp::parse("2024-05-01T10:00:00.123Z").unwrap(),
            result_code: "1032".into(),
            result_desc: "Request cancelled by user".into(),
            receipt: None,
            source: ResultSource::Query,
            raw: Some("{}".into()),
        };
        let mut item = minimal();
        item.insert(
            HISTORY.to_owned(),
            AttributeValue::L(vec![history_entry(&entry)]),
        );
        assert_eq!(record_from_item(&item).unwrap().history, vec![entry]);
    }
}
