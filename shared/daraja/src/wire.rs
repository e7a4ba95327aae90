//! Request and response bodies as they travel to and from Daraja (PascalCase field names).
//!
//! Responses ignore unknown fields and accept a number where Daraja has sent a string and the
//! other way round.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use super::result_code::ResultCode;
use super::secret::Secret;

/// `POST /mpesa/stkpush/v1/processrequest`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkPushRequest {
    #[serde(deserialize_with = "string_or_number")]
    pub business_short_code: String,
    pub password: String,
    pub timestamp: String,
    pub transaction_type: String,
    #[serde(deserialize_with = "u32_or_string")]
    pub amount: u32,
    #[serde(deserialize_with = "string_or_number")]
    pub party_a: String,
    #[serde(deserialize_with = "string_or_number")]
    pub party_b: String,
    #[serde(deserialize_with = "string_or_number")]
    pub phone_number: String,
    #[serde(rename = "CallBackURL")]
    pub callback_url: String,
    pub account_reference: String,
    pub transaction_desc: String,
}

/// The password is derived from the passkey and the phone is personal: neither is printed.
impl fmt::Debug for StkPushRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StkPushRequest")
            .field("business_short_code", &self.business_short_code)
            .field("password", &"<redacted>")
            .field("timestamp", &self.timestamp)
            .field("transaction_type", &self.transaction_type)
            .field("amount", &self.amount)
            .field("party_a", &super::values::mask_msisdn(&self.party_a))
            .field("party_b", &self.party_b)
            .field(
                "phone_number",
                &super::values::mask_msisdn(&self.phone_number),
            )
            .field("callback_url", &"<redacted>")
            .field("account_reference", &self.account_reference)
            .field("transaction_desc", &self.transaction_desc)
            .finish()
    }
}

/// The acknowledgement of a push. Nothing is paid yet. `Debug` masks the CheckoutRequestID
/// (it can embed the phone number).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkPushResponse {
    #[serde(rename = "MerchantRequestID")]
    pub merchant_request_id: String,
    #[serde(rename = "CheckoutRequestID")]
    pub checkout_request_id: String,
    /// `"0"` when accepted. A string on the wire; a number is accepted too.
    #[serde(default, deserialize_with = "string_or_number")]
    pub response_code: String,
    #[serde(default)]
    pub response_description: String,
    #[serde(default)]
    pub customer_message: String,
}

impl fmt::Debug for StkPushResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StkPushResponse")
            .field("merchant_request_id", &self.merchant_request_id)
            .field(
                "checkout_request_id",
                &crate::mask::mask_id(&self.checkout_request_id),
            )
            .field("response_code", &self.response_code)
            .field("response_description", &self.response_description)
            .field("customer_message", &self.customer_message)
            .finish()
    }
}

/// `POST /mpesa/stkpushquery/v1/query`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkQueryRequest {
    #[serde(deserialize_with = "string_or_number")]
    pub business_short_code: String,
    pub password: String,
    pub timestamp: String,
    #[serde(rename = "CheckoutRequestID")]
    pub checkout_request_id: String,
}

impl fmt::Debug for StkQueryRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StkQueryRequest")
            .field("business_short_code", &self.business_short_code)
            .field("password", &"<redacted>")
            .field("timestamp", &self.timestamp)
            .field(
                "checkout_request_id",
                &crate::mask::mask_id(&self.checkout_request_id),
            )
            .finish()
    }
}

/// The answer to a query. Every field is optional so that a partial answer is still read;
/// the client decides what is missing. `Debug` masks the CheckoutRequestID.
#[derive(Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct StkQueryResponse {
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub response_code: Option<String>,
    #[serde(default)]
    pub response_description: Option<String>,
    #[serde(rename = "MerchantRequestID", default)]
    pub merchant_request_id: Option<String>,
    #[serde(rename = "CheckoutRequestID", default)]
    pub checkout_request_id: Option<String>,
    /// A string on the query API (`"1032"`), a number elsewhere: both accepted.
    #[serde(default)]
    pub result_code: Option<ResultCode>,
    #[serde(default)]
    pub result_desc: Option<String>,
}

impl fmt::Debug for StkQueryResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StkQueryResponse")
            .field("response_code", &self.response_code)
            .field("response_description", &self.response_description)
            .field("merchant_request_id", &self.merchant_request_id)
            .field(
                "checkout_request_id",
                &self
                    .checkout_request_id
                    .as_deref()
                    .map(crate::mask::mask_id),
            )
            .field("result_code", &self.result_code)
            .field("result_desc", &self.result_desc)
            .finish()
    }
}

/// Daraja's error body: `{"requestId", "errorCode", "errorMessage"}`, any of them may be missing.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DarajaErrorBody {
    #[serde(
        rename = "requestId",
        default,
        deserialize_with = "opt_string_or_number"
    )]
    pub request_id: Option<String>,
    #[serde(
        rename = "errorCode",
        default,
        deserialize_with = "opt_string_or_number"
    )]
    pub error_code: Option<String>,
    #[serde(rename = "errorMessage", default)]
    pub error_message: Option<String>,
}

/// `GET /oauth/v1/generate?grant_type=client_credentials`.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    pub access_token: Secret,
    /// Seconds. Usually sent as a string (`"3599"`); a number is accepted. Absent means the
    /// documented lifetime.
    #[serde(default = "default_expires_in", deserialize_with = "u64_or_string")]
    pub expires_in: u64,
}

fn default_expires_in() -> u64 {
    3599
}

// ---------------------------------------------------------------------------------------------
// Lenient field readers

struct TextVisitor;

impl Visitor<'_> for TextVisitor {
    type Value = String;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a number")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<String, E> {
        Ok(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
        Ok(v.to_string())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<String, E> {
        Ok(v.to_string())
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    deserializer.deserialize_any(TextVisitor)
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    struct OptVisitor;
    impl<'de> Visitor<'de> for OptVisitor {
        type Value = Option<String>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string, a number or null")
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            // A blank value says nothing: the same as an absent one.
            string_or_number(d).map(|text| Some(text).filter(|t| !t.trim().is_empty()))
        }
    }
    deserializer.deserialize_option(OptVisitor)
}

fn u64_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    let text = string_or_number(deserializer)?;
    text.trim()
        .parse()
        .map_err(|_| de::Error::custom(format!("expected a whole number, got {text:?}")))
}

fn u32_or_string<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u32, D::Error> {
    let text = string_or_number(deserializer)?;
    text.trim()
        .parse()
        .map_err(|_| de::Error::custom(format!("expected a whole number, got {text:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn push_request() -> StkPushRequest {
        StkPushRequest {
            business_short_code: "174379".into(),
            password: "cGFzc3dvcmQ=".into(),
            timestamp: "20191219102115".into(),
            transaction_type: "CustomerPayBillOnline".into(),
            amount: 1,
            party_a: "254708374149".into(),
            party_b: "174379".into(),
            phone_number: "254708374149".into(),
            callback_url: "https://example.com/cb".into(),
            account_reference: "INV-1".into(),
            transaction_desc: "Payment".into(),
        }
    }

    #[test]
    fn push_request_uses_the_wire_field_names() {
        let value = serde_json::to_value(push_request()).unwrap();
        let keys: Vec<_> = value.as_object().unwrap().keys().cloned().collect();
        let mut expected = vec![
            "BusinessShortCode",
            "Password",
            "Timestamp",
            "TransactionType",
            "Amount",
            "PartyA",
            "PartyB",
            "PhoneNumber",
            "CallBackURL",
            "AccountReference",
            "TransactionDesc",
        ];
        expected.sort();
        let mut keys = keys;
        keys.sort();
        assert_eq!(keys, expected);
        assert_eq!(value["Amount"], json!(1));
    }

    #[test]
    fn push_request_debug_hides_password_and_phone() {
        let debug = format!("{:?}", push_request());
        assert!(!debug.contains("cGFzc3dvcmQ="), "{debug}");
        assert!(!debug.contains("254708374149"), "{debug}");
        assert!(debug.contains("2547•••••149"), "{debug}");
    }

    #[test]
    fn push_request_reads_numbers_where_strings_are_expected() {
        let body = json!({"BusinessShortCode": 174379, "Password": "p", "Timestamp": "20191219102115",
            "TransactionType": "CustomerPayBillOnline", "Amount": "1", "PartyA": 254708374149u64,
            "PartyB": 174379, "PhoneNumber": 254708374149u64, "CallBackURL": "https://e.com/c",
            "AccountReference": "A", "TransactionDesc": "B"});
        let req: StkPushRequest = serde_json::from_value(body).unwrap();
        assert_eq!(req.business_short_code, "174379");
        assert_eq!(req.phone_number, "254708374149");
        assert_eq!(req.amount, 1);
    }

    #[test]
    fn push_response_accepts_documented_sample_and_numeric_code() {
        let body = r#"{"MerchantRequestID":"29115-34620561-1","CheckoutRequestID":"ws_CO_191220191020363925",
            "ResponseCode":"0","ResponseDescription":"Success. Request accepted for processing",
            "CustomerMessage":"Success. Request accepted for processing","Extra":true}"#;
        let response: StkPushResponse = serde_json::from_str(body).unwrap();
        assert_eq!(response.checkout_request_id, "ws_CO_191220191020363925");
        assert!(!format!("{response:?}").contains("191220191020363925"));
        assert_eq!(response.response_code, "0");

        let numeric = r#"{"MerchantRequestID":"m","CheckoutRequestID":"c","ResponseCode":0}"#;
        let response: StkPushResponse = serde_json::from_str(numeric).unwrap();
        assert_eq!(response.response_code, "0");
        assert!(serde_json::from_str::<StkPushResponse>(r#"{"ResponseCode":"0"}"#).is_err());
    }

    #[test]
    fn query_response_accepts_result_code_as_string_or_number() {
        let body = r#"{"ResponseCode":"0","ResponseDescription":"The service request has been accepted successsfully",
            "MerchantRequestID":"22205-34066-1","CheckoutRequestID":"ws_CO_13012021093521236557",
            "ResultCode":"1032","ResultDesc":"Request cancelled by user"}"#;
        let response: StkQueryResponse = serde_json::from_str(body).unwrap();
        assert_eq!(response.result_code, Some(ResultCode::from_number(1032)));
        let numeric: StkQueryResponse = serde_json::from_str(r#"{"ResultCode":0}"#).unwrap();
        assert_eq!(numeric.result_code, Some(ResultCode::success()));
        let empty: StkQueryResponse = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, StkQueryResponse::default());
    }

    #[test]
    fn error_body_tolerates_missing_and_odd_fields() {
        let body = r#"{"requestId":"11728-2929992-1","errorCode":"404.001.03","errorMessage":"Invalid Access Token"}"#;
        let parsed: DarajaErrorBody = serde_json::from_str(body).unwrap();
        assert_eq!(parsed.error_code.as_deref(), Some("404.001.03"));
        let partial: DarajaErrorBody = serde_json::from_str(r#"{"errorCode":null,"x":1}"#).unwrap();
        assert_eq!(partial, DarajaErrorBody::default());
    }

    #[test]
    fn token_expiry_is_read_from_string_or_number() {
        let text: TokenResponse =
            serde_json::from_str(r#"{"access_token":"abc","expires_in":"3599"}"#).unwrap();
        assert_eq!(text.expires_in, 3599);
        assert_eq!(text.access_token.expose(), "abc");
        let number: TokenResponse =
            serde_json::from_str(r#"{"access_token":"abc","expires_in":120}"#).unwrap();
        assert_eq!(number.expires_in, 120);
        assert!(
            serde_json::from_str::<TokenResponse>(r#"{"access_token":"a","expires_in":"x"}"#)
                .is_err()
        );
        assert!(!format!("{text:?}").contains("abc"));
    }
}
