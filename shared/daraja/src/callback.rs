//! The result Safaricom posts to the callback URL.
//!
//! Lenient exactly where Daraja is inconsistent: the result code may be a number
//! or a string, the amount a number, a float or a string, `Balance` may have no value, metadata
//! is present only on success, and any item may be missing. Strict only about what correlation
//! needs: a `Body.stkCallback` object with a `CheckoutRequestID` and a `ResultCode`.
//! Never panics, whatever the input.

use std::fmt;

use serde_json::{Map, Value};

use super::result_code::ResultCode;
use super::values::mask_msisdn;
use crate::mask::mask_id;

/// A parsed callback. `Debug` masks the CheckoutRequestID and the phone number.
#[derive(Clone, PartialEq, Eq)]
pub struct StkCallback {
    /// Empty when Daraja left it out.
    pub merchant_request_id: String,
    pub checkout_request_id: String,
    pub result_code: ResultCode,
    /// Empty when Daraja left it out.
    pub result_desc: String,
    /// Empty (all `None`) on failures, which carry no metadata.
    pub metadata: CallbackMetadata,
}

/// The `CallbackMetadata.Item` values, looked up by `Name`. `Debug` masks the phone number.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct CallbackMetadata {
    pub amount: Option<AmountPaid>,
    pub receipt: Option<String>,
    /// `YYYYMMDDHHmmss` as sent, e.g. `"20191219102115"`.
    pub transaction_date: Option<String>,
    /// As given: may be masked (`2547*****149`) or absent.
    pub phone: Option<String>,
    pub balance: Option<String>,
    /// Items the body holds twice with different values (`Amount`, `MpesaReceiptNumber`): the
    /// first is read above, but the body contradicts itself and nobody can say which is true.
    pub contradictions: Vec<&'static str>,
}

impl fmt::Debug for StkCallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StkCallback")
            .field("merchant_request_id", &self.merchant_request_id)
            .field("checkout_request_id", &mask_id(&self.checkout_request_id))
            .field("result_code", &self.result_code)
            .field("result_desc", &self.result_desc)
            .field("metadata", &self.metadata)
            .finish()
    }
}

impl fmt::Debug for CallbackMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CallbackMetadata")
            .field("amount", &self.amount)
            .field("receipt", &self.receipt)
            .field("transaction_date", &self.transaction_date)
            .field("phone", &self.phone.as_deref().map(mask_msisdn))
            .field("balance", &self.balance)
            .field("contradictions", &self.contradictions)
            .finish()
    }
}

/// The amount the customer paid, kept exact: shillings and cents as integers, never a float.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AmountPaid {
    shillings: u64,
    cents: u8,
}

impl AmountPaid {
    pub fn new(shillings: u64, cents: u8) -> Option<Self> {
        (cents < 100).then_some(Self { shillings, cents })
    }

    /// Reads a plain decimal such as `1`, `1.0`, `1.00` or `100.5`. Digits beyond the second
    /// decimal place must be zeros; anything else (signs, exponents, `NaN`) is refused.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, fraction),
            None => (text, ""),
        };
        if whole.is_empty() || !whole.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if !fraction.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        if fraction.len() > 2 && !fraction[2..].bytes().all(|b| b == b'0') {
            return None;
        }
        let shillings = whole.parse().ok()?;
        let mut cents = 0u8;
        for (i, digit) in fraction.bytes().take(2).enumerate() {
            let value = digit - b'0';
            cents += if i == 0 { value * 10 } else { value };
        }
        Self::new(shillings, cents)
    }

    pub fn shillings(&self) -> u64 {
        self.shillings
    }

    pub fn cents(&self) -> u8 {
        self.cents
    }

    /// The amount in whole shillings, or `None` if it has cents (an M-Pesa Express amount never
    /// should, so a caller treats `None` as a mismatch).
    pub fn whole_shillings(&self) -> Option<u64> {
        (self.cents == 0).then_some(self.shillings)
    }
}

/// `1` or `1.50`.
impl fmt::Display for AmountPaid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cents == 0 {
            write!(f, "{}", self.shillings)
        } else {
            write!(f, "{}.{:02}", self.shillings, self.cents)
        }
    }
}

/// Why a callback body was refused. Messages never quote the body (it holds a phone number).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackParseError {
    #[error("callback body is not JSON: {0}")]
    InvalidJson(String),
    #[error("callback is JSON but not a Daraja STK callback: {0}")]
    InvalidCallback(&'static str),
}

impl CallbackParseError {
    /// `"invalid_json"` or `"invalid_callback"`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidJson(_) => "invalid_json",
            Self::InvalidCallback(_) => "invalid_callback",
        }
    }
}

pub fn parse_callback(body: &[u8]) -> Result<StkCallback, CallbackParseError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| {
        // serde_json's message gives a position, never the content.
        CallbackParseError::InvalidJson(e.to_string())
    })?;
    let invalid = CallbackParseError::InvalidCallback;
    let callback = root
        .get("Body")
        .ok_or(invalid("missing Body"))?
        .get("stkCallback")
        .and_then(Value::as_object)
        .ok_or(invalid("missing Body.stkCallback object"))?;

    let checkout_request_id = text(callback.get("CheckoutRequestID"))
        .filter(|id| !id.trim().is_empty())
        .ok_or(invalid("missing CheckoutRequestID"))?;
    let result_code = result_code(callback.get("ResultCode"))
        .ok_or(invalid("missing or malformed ResultCode"))?;

    Ok(StkCallback {
        merchant_request_id: text(callback.get("MerchantRequestID")).unwrap_or_default(),
        checkout_request_id,
        result_code,
        result_desc: text(callback.get("ResultDesc")).unwrap_or_default(),
        metadata: metadata(callback),
    })
}

fn result_code(value: Option<&Value>) -> Option<ResultCode> {
    match value? {
        Value::Number(n) => {
            if let Some(code) = n.as_i64() {
                Some(ResultCode::from_number(code))
            } else {
                serde_json::from_value(Value::Number(n.clone())).ok()
            }
        }
        Value::String(s) if !s.trim().is_empty() => Some(ResultCode::from_text(s)),
        _ => None,
    }
}

/// A string value, or a number written as text.
fn text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn metadata(callback: &Map<String, Value>) -> CallbackMetadata {
    let items: Vec<&Map<String, Value>> =
        match callback.get("CallbackMetadata").and_then(|m| m.get("Item")) {
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_object).collect(),
            // A single item not wrapped in an array.
            Some(Value::Object(item)) => vec![item],
            _ => Vec::new(),
        };
    let find = |name: &str| -> Option<&Value> {
        items
            .iter()
            .find(|item| item.get("Name").and_then(Value::as_str) == Some(name))
            .and_then(|item| item.get("Value"))
    };

    let values = |name: &str| -> Vec<&Value> {
        items
            .iter()
            .filter(|item| item.get("Name").and_then(Value::as_str) == Some(name))
            .filter_map(|item| item.get("Value"))
            .collect()
    };
    let mut contradictions = Vec::new();
    let amounts: Vec<Option<AmountPaid>> = values("Amount").into_iter().map(amount).collect();
    if amounts.windows(2).any(|pair| pair[0] != pair[1]) {
        contradictions.push("Amount");
    }
    let receipts: Vec<Option<String>> = values("MpesaReceiptNumber")
        .into_iter()
        .map(|v| text(Some(v)))
        .collect();
    if receipts.windows(2).any(|pair| pair[0] != pair[1]) {
        contradictions.push("MpesaReceiptNumber");
    }

    CallbackMetadata {
        contradictions,
        amount: find("Amount").and_then(amount),
        receipt: text(find("MpesaReceiptNumber")).filter(|r| !r.is_empty()),
        transaction_date: find("TransactionDate").and_then(transaction_date),
        phone: text(find("PhoneNumber")).filter(|p| !p.is_empty()),
        balance: text(find("Balance")).filter(|b| !b.is_empty()),
    }
}

fn amount(value: &Value) -> Option<AmountPaid> {
    match value {
        // serde_json prints an f64 in its shortest exact form (`1.0`, `100.5`), so the text
        // holds exactly what was parsed; huge or exponent forms are refused by `parse`.
        Value::Number(n) => AmountPaid::parse(&n.to_string()),
        Value::String(s) => AmountPaid::parse(s),
        _ => None,
    }
}

fn transaction_date(value: &Value) -> Option<String> {
    let digits = match value {
        Value::Number(n) => match n.as_u64() {
            Some(date) => date.to_string(),
            // A float that holds a whole 14-digit number is exact in f64.
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 && (0.0..1e15).contains(&f) => (f as u64).to_string(),
                _ => return None,
            },
        },
        Value::String(s) => s.trim().to_owned(),
        _ => return None,
    };
    (!digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())).then_some(digits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DOCUMENTED_SUCCESS: &str = r#"{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",
        "CheckoutRequestID":"ws_CO_191220191020363925","ResultCode":0,
        "ResultDesc":"The service request is processed successfully.",
        "CallbackMetadata":{"Item":[{"Name":"Amount","Value":1.00},{"Name":"MpesaReceiptNumber","Value":"NLJ7RT61SV"},
        {"Name":"Balance"},{"Name":"TransactionDate","Value":20191219102115},{"Name":"PhoneNumber","Value":254708374149}]}}}}"#;

    const DOCUMENTED_CANCEL: &str = r#"{"Body":{"stkCallback":{"MerchantRequestID":"29115-34620561-1",
        "CheckoutRequestID":"ws_CO_191220191020363925","ResultCode":1032,"ResultDesc":"Request cancelled by user."}}}"#;

    fn with_items(items: &str) -> Vec<u8> {
        format!(
            r#"{{"Body":{{"stkCallback":{{"MerchantRequestID":"m","CheckoutRequestID":"ws_CO_1",
            "ResultCode":0,"ResultDesc":"ok","CallbackMetadata":{{"Item":[{items}]}}}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn documented_success_sample_is_read_in_full() {
        let callback = parse_callback(DOCUMENTED_SUCCESS.as_bytes()).unwrap();
        assert_eq!(callback.merchant_request_id, "29115-34620561-1");
        assert_eq!(callback.checkout_request_id, "ws_CO_191220191020363925");
        assert!(callback.result_code.is_success());
        assert_eq!(
            callback.result_desc,
            "The service request is processed successfully."
        );
        let m = callback.metadata;
        assert_eq!(m.amount, AmountPaid::new(1, 0));
        assert_eq!(m.amount.and_then(|a| a.whole_shillings()), Some(1));
        assert_eq!(m.receipt.as_deref(), Some("NLJ7RT61SV"));
        assert_eq!(m.transaction_date.as_deref(), Some("20191219102115"));
        assert_eq!(m.phone.as_deref(), Some("254708374149"));
        assert_eq!(m.balance, None);
    }

    #[test]
    fn debug_masks_phone_and_checkout_id() {
        let callback = parse_callback(DOCUMENTED_SUCCESS.as_bytes()).unwrap();
        let debug = format!("{callback:?}");
        assert!(!debug.contains("254708374149"), "{debug}");
        assert!(!debug.contains("191220191020363925"), "{debug}");
        assert!(debug.contains("NLJ7RT61SV"), "{debug}");
    }

    #[test]
    fn documented_failure_sample_has_no_metadata() {
        let callback = parse_callback(DOCUMENTED_CANCEL.as_bytes()).unwrap();
        assert_eq!(callback.result_code, ResultCode::from_number(1032));
        assert_eq!(callback.result_code.category().as_str(), "cancelled");
        assert_eq!(callback.metadata, CallbackMetadata::default());
    }

    #[test]
    fn result_code_as_non_numeric_string_is_kept() {
        let body = br#"{"Body":{"stkCallback":{"MerchantRequestID":"m","CheckoutRequestID":"c",
            "ResultCode":"SFC_IC0003","ResultDesc":"Operator does not exist"}}}"#;
        let callback = parse_callback(body).unwrap();
        assert_eq!(callback.result_code.to_string(), "SFC_IC0003");
        assert_eq!(callback.result_code.category().as_str(), "not_permitted");
    }

    #[test]
    fn result_code_as_numeric_string_equals_the_number() {
        let body = br#"{"Body":{"stkCallback":{"CheckoutRequestID":"c","ResultCode":"1037"}}}"#;
        let callback = parse_callback(body).unwrap();
        assert_eq!(callback.result_code, ResultCode::from_number(1037));
        assert_eq!(callback.merchant_request_id, "");
        assert_eq!(callback.result_desc, "");
    }

    #[test]
    fn amount_as_integer_float_or_string_is_exact() {
        for (value, shillings, cents) in [
            ("1", 1, 0),
            ("1.00", 1, 0),
            ("250000.0", 250_000, 0),
            (r#""10""#, 10, 0),
            (r#""10.00""#, 10, 0),
            (r#"" 10.5 ""#, 10, 50),
            ("99.99", 99, 99),
        ] {
            let body = with_items(&format!(r#"{{"Name":"Amount","Value":{value}}}"#));
            let amount = parse_callback(&body).unwrap().metadata.amount;
            assert_eq!(amount, AmountPaid::new(shillings, cents), "{value}");
        }
        let with_cents = AmountPaid::parse("10.5").unwrap();
        assert_eq!(with_cents.whole_shillings(), None);
        assert_eq!(with_cents.to_string(), "10.50");
    }

    #[test]
    fn unreadable_amounts_become_none_not_errors() {
        for value in [
            r#""ten""#,
            "-1",
            r#""1e3""#,
            r#""1.005""#,
            "null",
            "[]",
            r#""""#,
            r#"".5""#,
        ] {
            let body = with_items(&format!(r#"{{"Name":"Amount","Value":{value}}}"#));
            let callback = parse_callback(&body).unwrap_or_else(|e| panic!("{value}: {e}"));
            assert_eq!(callback.metadata.amount, None, "{value}");
        }
    }

    #[test]
    fn balance_without_value_and_with_value() {
        let without = with_items(r#"{"Name":"Balance"}"#);
        assert_eq!(parse_callback(&without).unwrap().metadata.balance, None);
        let with = with_items(r#"{"Name":"Balance","Value":"{Amount={BasicAmount=46.00}}"}"#);
        assert_eq!(
            parse_callback(&with).unwrap().metadata.balance.as_deref(),
            Some("{Amount={BasicAmount=46.00}}")
        );
    }

    #[test]
    fn phone_masked_absent_or_string() {
        let masked = with_items(r#"{"Name":"PhoneNumber","Value":"2547*****149"}"#);
        assert_eq!(
            parse_callback(&masked).unwrap().metadata.phone.as_deref(),
            Some("2547*****149")
        );
        let absent = with_items(r#"{"Name":"Amount","Value":5}"#);
        assert_eq!(parse_callback(&absent).unwrap().metadata.phone, None);
    }

    #[test]
    fn transaction_date_as_number_or_string() {
        for value in ["20191219102115", r#""20191219102115""#, "20191219102115.0"] {
            let body = with_items(&format!(r#"{{"Name":"TransactionDate","Value":{value}}}"#));
            assert_eq!(
                parse_callback(&body)
                    .unwrap()
                    .metadata
                    .transaction_date
                    .as_deref(),
                Some("20191219102115"),
                "{value}"
            );
        }
        let bad = with_items(r#"{"Name":"TransactionDate","Value":"yesterday"}"#);
        assert_eq!(
            parse_callback(&bad).unwrap().metadata.transaction_date,
            None
        );
    }

    #[test]
    fn items_are_found_by_name_in_any_order_with_unknown_fields_ignored() {
        let body = with_items(
            r#"{"Name":"PhoneNumber","Value":254708374149},{"Name":"Surprise","Value":{"x":1}},
               {"Name":"MpesaReceiptNumber","Value":"ABC123","Extra":1},"junk",{"Value":3},
               {"Name":"Amount","Value":7}"#,
        );
        let m = parse_callback(&body).unwrap().metadata;
        assert_eq!(m.amount, AmountPaid::new(7, 0));
        assert_eq!(m.receipt.as_deref(), Some("ABC123"));
        assert_eq!(m.phone.as_deref(), Some("254708374149"));
    }

    #[test]
    fn not_json_and_not_daraja_are_told_apart() {
        for body in [&b""[..], b"{", b"<xml/>", b"\xff\xfe"] {
            assert_eq!(parse_callback(body).unwrap_err().code(), "invalid_json");
        }
        for body in [
            &br#"{}"#[..],
            br#"[]"#,
            br#"{"Body":{}}"#,
            br#"{"Body":{"stkCallback":[]}}"#,
            br#"{"Body":{"stkCallback":{"ResultCode":0}}}"#,
            br#"{"Body":{"stkCallback":{"CheckoutRequestID":"","ResultCode":0}}}"#,
            br#"{"Body":{"stkCallback":{"CheckoutRequestID":"c"}}}"#,
            br#"{"Body":{"stkCallback":{"CheckoutRequestID":"c","ResultCode":null}}}"#,
            br#"{"Body":{"stkCallback":{"CheckoutRequestID":"c","ResultCode":{}}}}"#,
        ] {
            let err = parse_callback(body).unwrap_err();
            assert_eq!(
                err.code(),
                "invalid_callback",
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn error_messages_never_quote_the_body() {
        let body = br#"{"Body":{"stkCallback":{"PhoneNumber":254708374149}}}"#;
        let err = parse_callback(body).unwrap_err();
        assert!(!err.to_string().contains("254708374149"), "{err}");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(body in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_callback(&body);
        }

        #[test]
        fn arbitrary_item_values_never_panic(
            value in prop_oneof![
                any::<i64>().prop_map(|v| v.to_string()),
                any::<u64>().prop_map(|v| v.to_string()),
                any::<f64>().prop_filter("finite", |v| v.is_finite()).prop_map(|v| v.to_string()),
                ".{0,20}".prop_map(|s| serde_json::to_string(&s).unwrap_or_default()),
                Just("null".to_owned()),
            ],
            name in prop::sample::select(vec!["Amount", "MpesaReceiptNumber", "Balance", "TransactionDate", "PhoneNumber"]),
        ) {
            let body = with_items(&format!(r#"{{"Name":"{name}","Value":{value}}}"#));
            let _ = parse_callback(&body);
        }
    }
}
