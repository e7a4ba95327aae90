//! Result codes from callbacks and STK queries, and what to do with them.

use std::fmt;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A Daraja result code exactly as sent. Usually a number (`0`, `1032`), sometimes a
/// non-numeric string (`"SFC_IC0003"`); the query API sends numbers as strings (`"1032"`).
/// `1032` and `"1032"` are the same code.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ResultCode(String);

impl ResultCode {
    pub fn from_number(code: i64) -> Self {
        Self(code.to_string())
    }

    /// Surrounding whitespace is dropped; a numeric string is kept as its digits.
    pub fn from_text(code: &str) -> Self {
        let trimmed = code.trim();
        match trimmed.parse::<i64>() {
            Ok(number) => Self::from_number(number),
            Err(_) => Self(trimmed.to_owned()),
        }
    }

    pub fn success() -> Self {
        Self::from_number(0)
    }

    /// The code as text: `"0"`, `"1032"`, `"SFC_IC0003"`.
    pub fn code(&self) -> &str {
        &self.0
    }

    /// The numeric value, if the code is a number.
    pub fn as_number(&self) -> Option<i64> {
        self.0.parse().ok()
    }

    pub fn is_success(&self) -> bool {
        self.as_number() == Some(0)
    }

    /// What the code means, from Daraja's documentation.
    pub fn meaning(&self) -> &'static str {
        match self.as_number() {
            Some(0) => "success",
            Some(1) => "insufficient balance",
            Some(2) => "amount below the minimum",
            Some(3) => "amount above the maximum",
            Some(4) => "would exceed the customer's daily limit",
            Some(8) => "would exceed the paybill or till balance limit",
            Some(17) => "rule limited: same amount to the same customer within about 2 minutes",
            Some(26) => "system busy",
            Some(1001) => "subscriber busy: another STK transaction is in progress",
            Some(1019) => "transaction expired",
            Some(1025) | Some(9999) => "the prompt could not be sent to the phone",
            Some(1032) => "cancelled by the customer",
            Some(1037) => "customer unreachable: phone off, no STK applet or no answer in time",
            Some(2001) => "wrong PIN",
            Some(2028) => "not permitted: wrong TransactionType or PartyB",
            Some(4999) => "still processing",
            Some(8006) => "security credential locked",
            _ if self.0 == "SFC_IC0003" => "operator does not exist: till and PartyB mixed up",
            _ => "unknown result code",
        }
    }

    pub fn category(&self) -> OutcomeCategory {
        use OutcomeCategory::*;
        match self.as_number() {
            Some(0) => Success,
            Some(1) => InsufficientFunds,
            Some(2) | Some(3) => AmountOutOfRange,
            Some(4) | Some(8) => LimitExceeded,
            Some(17) => DuplicateRule,
            Some(26) => SystemBusy,
            Some(1001) => SubscriberBusy,
            Some(1019) => Expired,
            Some(1025) | Some(9999) => PushFailed,
            Some(1032) => Cancelled,
            Some(1037) => Unreachable,
            Some(2001) => WrongPin,
            Some(2028) => NotPermitted,
            Some(4999) => Processing,
            Some(8006) => CredentialLocked,
            _ if self.0 == "SFC_IC0003" => NotPermitted,
            _ => Unknown,
        }
    }

    /// Whether the payment's outcome is settled. Only "still processing" is not; an unknown code
    /// is treated as a final failure because Daraja sends no second result.
    pub fn is_final(&self) -> bool {
        self.category().is_final()
    }
}

impl fmt::Display for ResultCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<i64> for ResultCode {
    fn from(code: i64) -> Self {
        Self::from_number(code)
    }
}

impl From<&str> for ResultCode {
    fn from(code: &str) -> Self {
        Self::from_text(code)
    }
}

/// Serialized as its text, so numeric and string codes store the same way.
impl Serialize for ResultCode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

/// Accepts a JSON integer, a whole float (`0.0`) or a string.
impl<'de> Deserialize<'de> for ResultCode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct CodeVisitor;
        impl Visitor<'_> for CodeVisitor {
            type Value = ResultCode;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a result code as a number or a string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<ResultCode, E> {
                Ok(ResultCode::from_number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ResultCode, E> {
                Ok(match i64::try_from(v) {
                    Ok(n) => ResultCode::from_number(n),
                    Err(_) => ResultCode(v.to_string()),
                })
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<ResultCode, E> {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(ResultCode::from_number(v as i64))
                } else {
                    Ok(ResultCode(v.to_string()))
                }
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ResultCode, E> {
                Ok(ResultCode::from_text(v))
            }
        }
        deserializer.deserialize_any(CodeVisitor)
    }
}

/// What a result code means for the payment, in words a merchant's system can branch on.
/// [`OutcomeCategory::as_str`] is stable and stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutcomeCategory {
    Success,
    InsufficientFunds,
    AmountOutOfRange,
    LimitExceeded,
    Cancelled,
    /// 1037: phone off, no STK applet, or no answer.
    Unreachable,
    /// 1019: the prompt timed out.
    Expired,
    WrongPin,
    SubscriberBusy,
    SystemBusy,
    /// 1025 / 9999: the prompt never reached the phone.
    PushFailed,
    /// 2028 / SFC_IC0003: paybill/till configuration mismatch.
    NotPermitted,
    /// 4999: transient, seen only on queries.
    Processing,
    CredentialLocked,
    /// 17: same amount to the same customer within about two minutes.
    DuplicateRule,
    Unknown,
}

impl OutcomeCategory {
    pub const ALL: [OutcomeCategory; 16] = [
        Self::Success,
        Self::InsufficientFunds,
        Self::AmountOutOfRange,
        Self::LimitExceeded,
        Self::Cancelled,
        Self::Unreachable,
        Self::Expired,
        Self::WrongPin,
        Self::SubscriberBusy,
        Self::SystemBusy,
        Self::PushFailed,
        Self::NotPermitted,
        Self::Processing,
        Self::CredentialLocked,
        Self::DuplicateRule,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::InsufficientFunds => "insufficient_funds",
            Self::AmountOutOfRange => "amount_out_of_range",
            Self::LimitExceeded => "limit_exceeded",
            Self::Cancelled => "cancelled",
            Self::Unreachable => "unreachable",
            Self::Expired => "expired",
            Self::WrongPin => "wrong_pin",
            Self::SubscriberBusy => "subscriber_busy",
            Self::SystemBusy => "system_busy",
            Self::PushFailed => "push_failed",
            Self::NotPermitted => "not_permitted",
            Self::Processing => "processing",
            Self::CredentialLocked => "credential_locked",
            Self::DuplicateRule => "duplicate_rule",
            Self::Unknown => "unknown",
        }
    }

    pub fn is_final(self) -> bool {
        self != Self::Processing
    }
}

impl fmt::Display for OutcomeCategory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn every_documented_code_has_its_category_and_meaning() {
        let table: [(&str, &str); 19] = [
            ("0", "success"),
            ("1", "insufficient_funds"),
            ("2", "amount_out_of_range"),
            ("3", "amount_out_of_range"),
            ("4", "limit_exceeded"),
            ("8", "limit_exceeded"),
            ("17", "duplicate_rule"),
            ("26", "system_busy"),
            ("1001", "subscriber_busy"),
            ("1019", "expired"),
            ("1025", "push_failed"),
            ("9999", "push_failed"),
            ("1032", "cancelled"),
            ("1037", "unreachable"),
            ("2001", "wrong_pin"),
            ("2028", "not_permitted"),
            ("4999", "processing"),
            ("8006", "credential_locked"),
            ("SFC_IC0003", "not_permitted"),
        ];
        for (code, category) in table {
            let code = ResultCode::from_text(code);
            assert_eq!(code.category().as_str(), category, "{code}");
            assert_ne!(code.meaning(), "unknown result code", "{code}");
        }
        let odd = ResultCode::from_text("77");
        assert_eq!(odd.category(), OutcomeCategory::Unknown);
        assert_eq!(odd.meaning(), "unknown result code");
    }

    #[test]
    fn only_processing_is_not_final() {
        assert!(!ResultCode::from_number(4999).is_final());
        for code in [0, 1, 1032, 1037, 2001, 123_456] {
            assert!(ResultCode::from_number(code).is_final(), "{code}");
        }
        assert!(ResultCode::from_text("SFC_IC0003").is_final());
    }

    #[test]
    fn numeric_and_string_forms_are_the_same_code() {
        let from_number: ResultCode = serde_json::from_str("1032").unwrap();
        let from_string: ResultCode = serde_json::from_str("\"1032\"").unwrap();
        let from_float: ResultCode = serde_json::from_str("1032.0").unwrap();
        assert_eq!(from_number, from_string);
        assert_eq!(from_number, from_float);
        assert_eq!(from_number.to_string(), "1032");
        assert_eq!(from_number.as_number(), Some(1032));

        let text: ResultCode = serde_json::from_str("\"SFC_IC0003\"").unwrap();
        assert_eq!(text.to_string(), "SFC_IC0003");
        assert_eq!(text.as_number(), None);
        assert_eq!(serde_json::to_string(&text).unwrap(), "\"SFC_IC0003\"");
        assert!(serde_json::from_str::<ResultCode>("null").is_err());
    }

    #[test]
    fn category_names_are_distinct() {
        let names: HashSet<_> = OutcomeCategory::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), OutcomeCategory::ALL.len());
    }
}
