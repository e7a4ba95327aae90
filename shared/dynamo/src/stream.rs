//! The table's change stream (DynamoDB Streams, `NEW_AND_OLD_IMAGES`), as Lambda delivers it: a
//! record's images in DynamoDB's JSON (`{"S": "…"}`), decoded with the same codec as every read,
//! and turned into the payment event the change produced ([`payments::event::change_event`]).

use std::collections::HashMap;

use aws_sdk_dynamodb::types::AttributeValue;
use aws_smithy_types::Blob;
use base64::Engine;
use serde::Deserialize;
use serde_json::Value;

use payments::event::{change_event, PaymentEvent};
use payments::StoreError;

use crate::item::{self, Item};

/// One record of a DynamoDB stream event (Lambda's `Records[]`), with what the consumer reads.
#[derive(Debug, Clone, Deserialize)]
pub struct StreamRecord {
    #[serde(rename = "eventID", default)]
    pub event_id: String,
    #[serde(rename = "eventName", default)]
    pub event_name: String,
    pub dynamodb: StreamChange,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StreamChange {
    #[serde(default)]
    pub keys: HashMap<String, Value>,
    pub new_image: Option<HashMap<String, Value>>,
    pub old_image: Option<HashMap<String, Value>>,
    /// What a partial batch failure names to retry from.
    pub sequence_number: String,
}

impl StreamRecord {
    /// The item's partition key, if it is a string.
    pub fn pk(&self) -> Option<&str> {
        self.dynamodb.keys.get(item::PK)?.get("S")?.as_str()
    }

    /// The payment event this change produced: `None` for an item that is not a payment or a
    /// write that did not change a recorded payment's status; an error for an image that does
    /// not decode (a poison record: the consumer reports it, and Lambda's retries, bisection
    /// and on-failure destination take it out of the stream).
    pub fn payment_event(&self) -> Result<Option<PaymentEvent>, StoreError> {
        if !self.pk().is_some_and(|pk| pk.starts_with(item::PK_PREFIX)) {
            return Ok(None);
        }
        let decode = |image: &Option<HashMap<String, Value>>| -> Result<_, StoreError> {
            image
                .as_ref()
                .map(|image| item::record_from_item(&item_from_image(image)?))
                .transpose()
        };
        let before = decode(&self.dynamodb.old_image)?;
        let after = decode(&self.dynamodb.new_image)?;
        Ok(change_event(before.as_ref(), after.as_ref()))
    }
}

/// An image in DynamoDB's JSON as an item.
pub fn item_from_image(image: &HashMap<String, Value>) -> Result<Item, StoreError> {
    image
        .iter()
        .map(|(name, value)| Ok((name.clone(), attribute(value)?)))
        .collect()
}

fn attribute(value: &Value) -> Result<AttributeValue, StoreError> {
    let corrupt = || StoreError::Corrupt {
        pk: "stream image".into(),
        detail: format!("not an attribute value: {value}"),
    };
    let object = value
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(corrupt)?;
    let (kind, inner) = object.iter().next().ok_or_else(corrupt)?;
    let text = || inner.as_str().map(str::to_owned).ok_or_else(corrupt);
    let texts = || -> Result<Vec<String>, StoreError> {
        inner
            .as_array()
            .ok_or_else(corrupt)?
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(corrupt))
            .collect()
    };
    let blob = |text: &str| {
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map(Blob::new)
            .map_err(|_| corrupt())
    };
    Ok(match kind.as_str() {
        "S" => AttributeValue::S(text()?),
        "N" => AttributeValue::N(text()?),
        "B" => AttributeValue::B(blob(&text()?)?),
        "BOOL" => AttributeValue::Bool(inner.as_bool().ok_or_else(corrupt)?),
        "NULL" => AttributeValue::Null(true),
        "SS" => AttributeValue::Ss(texts()?),
        "NS" => AttributeValue::Ns(texts()?),
        "BS" => AttributeValue::Bs(texts()?.iter().map(|t| blob(t)).collect::<Result<_, _>>()?),
        "L" => AttributeValue::L(
            inner
                .as_array()
                .ok_or_else(corrupt)?
                .iter()
                .map(attribute)
                .collect::<Result<_, _>>()?,
        ),
        "M" => AttributeValue::M(
            inner
                .as_object()
                .ok_or_else(corrupt)?
                .iter()
                .map(|(k, v)| Ok((k.clone(), attribute(v)?)))
                .collect::<Result<_, StoreError>>()?,
        ),
        _ => return Err(corrupt()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use payments::PaymentStatus;
    use serde_json::json;

    fn image(status: &str, details: bool) -> Value {
        json!({
            "pk": {"S": "PAY#ws_CO_1"},
            "checkout_request_id": {"S": "ws_CO_1"},
            "status": {"S": status},
            "amount": {"N": "10"},
            "phone": {"S": "254708374149"},
            "updated_at": {"S": if status == "PENDING" { "2026-12-01T10:00:00.000Z" } else { "2026-12-01T10:00:09.000Z" }},
            "details_recorded": {"BOOL": details},
            "history": {"L": [{"M": {"received_at": {"S": "2026-12-01T10:00:09.000Z"},
                "result_code": {"S": "1032"}, "result_desc": {"S": "cancelled"}, "source": {"S": "callback"}}}]},
        })
    }

    fn record(old: Option<Value>, new: Option<Value>) -> StreamRecord {
        serde_json::from_value(json!({
            "eventID": "1", "eventName": "MODIFY",
            "dynamodb": {"Keys": {"pk": {"S": "PAY#ws_CO_1"}}, "OldImage": old, "NewImage": new,
                "SequenceNumber": "100", "StreamViewType": "NEW_AND_OLD_IMAGES"}
        }))
        .unwrap()
    }

    #[test]
    fn a_status_change_in_the_stream_is_its_payment_event() {
        let change = record(Some(image("PENDING", true)), Some(image("COMPLETED", true)));
        let event = change.payment_event().unwrap().unwrap();
        assert_eq!(event.previous_status, PaymentStatus::Pending);
        assert_eq!(event.status, PaymentStatus::Completed);
        assert_eq!(event.amount, Some(10));
    }

    #[test]
    fn other_items_and_unchanged_statuses_are_no_event() {
        let same = record(Some(image("FAILED", true)), Some(image("FAILED", true)));
        assert_eq!(same.payment_event().unwrap(), None);
        let mut lock = record(None, Some(image("PENDING", true)));
        lock.dynamodb.keys = HashMap::from([("pk".into(), json!({"S": "PHONE#254708374149"}))]);
        assert_eq!(lock.payment_event().unwrap(), None);
    }

    #[test]
    fn an_image_that_does_not_decode_is_an_error_not_a_skipped_event() {
        let mut broken = image("COMPLETED", true);
        broken["status"] = json!({"S": "PAID"});
        let change = record(Some(image("PENDING", true)), Some(broken));
        assert!(matches!(
            change.payment_event(),
            Err(StoreError::Corrupt { .. })
        ));
        let mut untyped = image("COMPLETED", true);
        untyped["amount"] = json!(10);
        assert!(record(None, Some(untyped)).payment_event().is_err());
    }
}
