//! The values Daraja accepts, validated before a request is built.
//!
//! Each constructor returns a [`ValidationError`] whose `code` is stable (clients branch on it)
//! and whose `message` says what was wrong and what is accepted (people read it).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Why a value was refused. `Display` is the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ValidationError {
    /// The request field at fault, e.g. `"phone"`.
    pub field: &'static str,
    /// Stable machine-readable code, e.g. `"invalid_phone"`.
    pub code: &'static str,
    /// What is wrong and what is accepted.
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            field,
            code,
            message: message.into(),
        }
    }
}

/// Shows at most this many characters of rejected input in a message, so that a huge or
/// hostile value cannot bloat the answer.
const ECHO_LIMIT: usize = 24;

fn echo(input: &str) -> String {
    let mut shown: String = input.chars().take(ECHO_LIMIT).collect();
    if input.chars().count() > ECHO_LIMIT {
        shown.push('…');
    }
    format!("{shown:?}")
}

// ---------------------------------------------------------------------------------------------
// Phone number

/// A Kenyan mobile number normalised to the 12-digit MSISDN Daraja wants (`2547XXXXXXXX` or
/// `2541XXXXXXXX`).
///
/// `Debug` and `Display` print the masked form (`2547•••••678`) so a phone number cannot reach a
/// log by accident; [`PhoneNumber::as_str`] gives the full number for Daraja and for storage.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PhoneNumber(String);

impl PhoneNumber {
    const FIELD: &'static str = "phone";
    const CODE: &'static str = "invalid_phone";

    /// Accepts `07…`/`01…`, `+2547…`/`+2541…`, `2547…`/`2541…` and the bare subscriber number
    /// `7…`/`1…`, with spaces or dashes anywhere; refuses everything else.
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        let refuse = || {
            ValidationError::new(
                Self::FIELD,
                Self::CODE,
                format!(
                    "phone {} is not a Kenyan mobile number; use 07XXXXXXXX, 01XXXXXXXX, \
                     +2547XXXXXXXX, 2547XXXXXXXX (or the 2541 forms)",
                    echo(input)
                ),
            )
        };
        let compact: String = input
            .trim()
            .chars()
            .filter(|c| !matches!(c, ' ' | '-'))
            .collect();
        let (plus, digits) = match compact.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, compact.as_str()),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(refuse());
        }
        let subscriber = match (plus, digits.len()) {
            (_, 12) if digits.starts_with("254") => &digits[3..],
            (false, 10) if digits.starts_with('0') => &digits[1..],
            (false, 9) => digits,
            _ => return Err(refuse()),
        };
        if !(subscriber.starts_with('7') || subscriber.starts_with('1')) {
            return Err(refuse());
        }
        Ok(Self(format!("254{subscriber}")))
    }

    /// The full MSISDN, e.g. `254712345678`. For Daraja requests and storage only; never log it.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `2547•••••678`: enough to recognise a number, not enough to call it.
    pub fn masked(&self) -> String {
        mask_msisdn(&self.0)
    }
}

/// Masks any phone-like string the same way as [`PhoneNumber::masked`]: first four and last
/// three characters kept. Shorter strings are masked entirely.
pub fn mask_msisdn(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    if chars.len() < 8 {
        return "•".repeat(chars.len().max(3));
    }
    let head: String = chars[..4].iter().collect();
    let tail: String = chars[chars.len() - 3..].iter().collect();
    format!("{head}{}{tail}", "•".repeat(chars.len() - 7))
}

impl fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PhoneNumber({})", self.masked())
    }
}

impl fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl FromStr for PhoneNumber {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for PhoneNumber {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<PhoneNumber> for String {
    fn from(value: PhoneNumber) -> Self {
        value.0
    }
}

// ---------------------------------------------------------------------------------------------
// Amount

/// Whole Kenyan shillings, 1 to 250,000: Daraja's per-transaction range. Daraja has no cents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u32")]
pub struct Amount(u32);

impl Amount {
    pub const MIN: u32 = 1;
    pub const MAX: u32 = 250_000;
    const FIELD: &'static str = "amount";
    const CODE: &'static str = "invalid_amount";

    pub fn new(shillings: u64) -> Result<Self, ValidationError> {
        if (u64::from(Self::MIN)..=u64::from(Self::MAX)).contains(&shillings) {
            // In range, so it fits in u32.
            Ok(Self(shillings as u32))
        } else {
            Err(Self::refuse(format!(
                "amount {shillings} is out of range; Daraja accepts whole shillings from {} to {}",
                Self::MIN,
                Self::MAX
            )))
        }
    }

    /// Reads an amount from a JSON request body.
    ///
    /// Only a JSON integer is accepted. A number written with a decimal point is refused even
    /// when it is whole (`100.0`): JSON numbers with a point are parsed as binary floats, which
    /// cannot tell `100.0` from `100.0000000000000001`, and money must not be rounded silently.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, ValidationError> {
        use serde_json::Value;
        match value {
            Value::Number(n) => {
                if let Some(whole) = n.as_u64() {
                    Self::new(whole)
                } else if n.as_i64().is_some() || n.as_f64().is_some_and(|f| f < 0.0) {
                    Err(Self::refuse(format!(
                        "amount {n} is negative; send whole shillings from {} to {}",
                        Self::MIN,
                        Self::MAX
                    )))
                } else {
                    Err(Self::refuse(format!(
                        "amount {n} is not a whole number of shillings; M-Pesa Express takes \
                         whole shillings only, written as an integer such as 100"
                    )))
                }
            }
            Value::String(s) => Err(Self::refuse(format!(
                "amount must be a JSON number such as 100, not the string {}",
                echo(s)
            ))),
            Value::Null => Err(Self::refuse(format!(
                "amount is required: whole shillings from {} to {}",
                Self::MIN,
                Self::MAX
            ))),
            _ => Err(Self::refuse(
                "amount must be a JSON number of whole shillings such as 100",
            )),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    fn refuse(message: impl Into<String>) -> ValidationError {
        ValidationError::new(Self::FIELD, Self::CODE, message)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl TryFrom<u64> for Amount {
    type Error = ValidationError;
    fn try_from(value: u64) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<Amount> for u32 {
    fn from(value: Amount) -> Self {
        value.0
    }
}

// ---------------------------------------------------------------------------------------------
// Text fields

/// Characters allowed in [`AccountReference`] and [`TransactionDesc`] besides ASCII letters and
/// digits.
///
/// Daraja documents these fields as "alphanumeric". Invoice and order numbers need a separator,
/// so `-`, `_` and `.` are allowed: they are plain ASCII that the SIM-toolkit prompt shows as-is.
/// Anything else (spaces, `&`, `#`, `/`, non-ASCII) is refused up front rather than risking a
/// Daraja rejection or a garbled prompt on the customer's phone.
const SEPARATORS: [char; 3] = ['-', '_', '.'];

/// What a text field accepts besides letters, digits and [`SEPARATORS`]: descriptions read as
/// words ("Order 1001", as in Daraja's own samples), so they may also hold spaces.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Spaces {
    Refused,
    Allowed,
}

impl Spaces {
    fn allows(self, c: char) -> bool {
        c.is_ascii_alphanumeric()
            || SEPARATORS.contains(&c)
            || (self == Spaces::Allowed && c == ' ')
    }

    fn accepted(self) -> &'static str {
        match self {
            Spaces::Refused => "letters, digits, '-', '_' or '.'",
            Spaces::Allowed => "letters, digits, spaces, '-', '_' or '.'",
        }
    }
}

fn check_text(
    input: &str,
    field: &'static str,
    code: &'static str,
    max: usize,
    spaces: Spaces,
) -> Result<String, ValidationError> {
    let value = input.trim();
    if value.is_empty() {
        return Err(ValidationError::new(
            field,
            code,
            format!(
                "{field} must not be empty: up to {max} {}",
                spaces.accepted()
            ),
        ));
    }
    let len = value.chars().count();
    if len > max {
        return Err(ValidationError::new(
            field,
            code,
            format!(
                "{field} {} is {len} characters long; Daraja accepts at most {max}",
                echo(value)
            ),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !spaces.allows(*c)) {
        return Err(ValidationError::new(
            field,
            code,
            format!(
                "{field} {} contains {bad:?}; use only {}",
                echo(value),
                spaces.accepted()
            ),
        ));
    }
    Ok(value.to_owned())
}

macro_rules! string_value {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> Self {
                value.0
            }
        }
    };
}

/// The account reference shown to the customer: 1 to 12 letters, digits, `-`, `_` or `.`.
/// Surrounding whitespace is trimmed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct AccountReference(String);

impl AccountReference {
    pub const MAX_LEN: usize = 12;

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_text(
            input,
            "reference",
            "invalid_reference",
            Self::MAX_LEN,
            Spaces::Refused,
        )
        .map(Self)
    }
}

string_value!(AccountReference);

/// The transaction description: 1 to 13 letters, digits, spaces, `-`, `_` or `.`. Optional in requests;
/// [`TransactionDesc::default`] is used when absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TransactionDesc(String);

impl TransactionDesc {
    pub const MAX_LEN: usize = 13;
    /// Used when the caller gives no description. Daraja marks the field optional; sending a
    /// neutral word avoids depending on how an empty one is handled.
    pub const DEFAULT: &'static str = "Payment";

    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_text(
            input,
            "description",
            "invalid_description",
            Self::MAX_LEN,
            Spaces::Allowed,
        )
        .map(Self)
    }

    /// `None`, empty or blank gives the default; anything else must be valid.
    pub fn parse_optional(input: Option<&str>) -> Result<Self, ValidationError> {
        match input.map(str::trim) {
            None | Some("") => Ok(Self::default()),
            Some(text) => Self::parse(text),
        }
    }
}

impl Default for TransactionDesc {
    fn default() -> Self {
        Self(Self::DEFAULT.to_owned())
    }
}

string_value!(TransactionDesc);

fn check_code(
    input: &str,
    field: &'static str,
    code: &'static str,
) -> Result<String, ValidationError> {
    let value = input.trim();
    if (5..=7).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_digit()) {
        Ok(value.to_owned())
    } else {
        Err(ValidationError::new(
            field,
            code,
            format!("{field} {} must be 5 to 7 digits", echo(input)),
        ))
    }
}

/// The business shortcode (paybill number, or the store number for till payments): 5–7 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ShortCode(String);

impl ShortCode {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_code(input, "shortcode", "invalid_shortcode").map(Self)
    }
}

string_value!(ShortCode);

/// A Buy Goods till number: 5–7 digits. Goes in `PartyB` for till payments.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TillNumber(String);

impl TillNumber {
    pub fn parse(input: &str) -> Result<Self, ValidationError> {
        check_code(input, "till", "invalid_till").map(Self)
    }
}

string_value!(TillNumber);

/// Which kind of business receives the money. Decides `TransactionType` and `PartyB`;
/// mixing them up is what produces `SFC_IC0003` / 2028.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransactionKind {
    /// Paybill: `PartyB` is the shortcode itself.
    PayBill,
    /// Buy Goods: `PartyB` is the till; `BusinessShortCode` stays the store number.
    Till(TillNumber),
}

impl TransactionKind {
    /// The `TransactionType` value Daraja expects.
    pub fn transaction_type(&self) -> &'static str {
        match self {
            Self::PayBill => "CustomerPayBillOnline",
            Self::Till(_) => "CustomerBuyGoodsOnline",
        }
    }

    /// The `PartyB` value for a request made under `shortcode`.
    pub fn party_b<'a>(&'a self, shortcode: &'a ShortCode) -> &'a str {
        match self {
            Self::PayBill => shortcode.as_str(),
            Self::Till(till) => till.as_str(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    #[test]
    fn every_accepted_phone_spelling_normalises_to_the_msisdn() {
        for input in [
            "0712345678",
            "+254712345678",
            "254712345678",
            "712345678",
            " 0712 345 678 ",
            "0712-345-678",
            "+254 712 345 678",
            "+254-712-345678",
        ] {
            let phone = PhoneNumber::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(phone.as_str(), "254712345678", "{input}");
        }
        for input in ["0110345678", "+254110345678", "254110345678", "110345678"] {
            assert_eq!(
                PhoneNumber::parse(input).unwrap().as_str(),
                "254110345678",
                "{input}"
            );
        }
    }

    #[test]
    fn phone_numbers_outside_the_kenyan_mobile_ranges_are_refused() {
        for input in [
            "",
            "   ",
            "+",
            "071234567",       // one digit short
            "07123456789",     // one digit long
            "0212345678",      // landline prefix
            "255712345678",    // Tanzania
            "+0712345678",     // plus before a local number
            "+712345678",      // plus before a bare subscriber number
            "2540712345678",   // 254 followed by the trunk zero
            "254812345678",    // not 7 or 1 after 254
            "812345678",       // bare number not starting 7 or 1
            "07123x5678",      // letter
            "(0712)345678",    // parentheses are not accepted
            "0712.345.678",    // dots are not accepted
            "٠٧١٢٣٤٥٦٧٨",      // non-ASCII digits
            "+254712345678\0", // control character
        ] {
            let err = PhoneNumber::parse(input).expect_err(input);
            assert_eq!(err.code, "invalid_phone");
            assert_eq!(err.field, "phone");
            assert!(err.message.contains("07XXXXXXXX"), "{}", err.message);
        }
    }

    #[test]
    fn phone_debug_and_display_are_masked() {
        let phone = PhoneNumber::parse("0712345678").unwrap();
        assert_eq!(phone.masked(), "2547•••••678");
        assert_eq!(phone.to_string(), "2547•••••678");
        let debug = format!("{phone:?}");
        assert!(debug.contains("2547•••••678"), "{debug}");
        assert!(!debug.contains("254712345678"), "{debug}");
    }

    #[test]
    fn phone_serializes_in_full_for_storage_and_validates_on_read() {
        let phone = PhoneNumber::parse("0712345678").unwrap();
        assert_eq!(serde_json::to_value(&phone).unwrap(), json!("254712345678"));
        let back: PhoneNumber = serde_json::from_value(json!("0712345678")).unwrap();
        assert_eq!(back, phone);
        assert!(serde_json::from_value::<PhoneNumber>(json!("12")).is_err());
    }

    #[test]
    fn mask_msisdn_hides_short_strings_entirely() {
        assert_eq!(mask_msisdn("1234"), "••••");
        assert_eq!(mask_msisdn(""), "•••");
        assert_eq!(mask_msisdn("254708374149"), "2547•••••149");
    }

    proptest! {
        #[test]
        fn every_subscriber_number_in_every_spelling_gives_one_msisdn(
            first in prop::sample::select(vec!['7', '1']),
            rest in "[0-9]{8}",
        ) {
            let subscriber = format!("{first}{rest}");
            let expected = format!("254{subscriber}");
            let spaced = format!("{} {} {}", &subscriber[..3], &subscriber[3..6], &subscriber[6..]);
            for input in [
                format!("0{subscriber}"),
                format!("+254{subscriber}"),
                format!("254{subscriber}"),
                subscriber.clone(),
                format!("0{spaced}"),
                format!("+254 {spaced}"),
                format!("0{}-{}", &subscriber[..3], &subscriber[3..]),
            ] {
                let phone = PhoneNumber::parse(&input);
                prop_assert_eq!(phone.map(|p| p.as_str().to_owned()).ok(), Some(expected.clone()));
            }
        }

        #[test]
        fn arbitrary_phone_input_never_panics_and_accepted_output_is_canonical(input in ".{0,40}") {
            if let Ok(phone) = PhoneNumber::parse(&input) {
                let msisdn = phone.as_str();
                prop_assert_eq!(msisdn.len(), 12);
                prop_assert!(msisdn.starts_with("2547") || msisdn.starts_with("2541"));
                prop_assert!(msisdn.bytes().all(|b| b.is_ascii_digit()));
            }
        }
    }

    #[test]
    fn amount_accepts_the_documented_range() {
        assert_eq!(Amount::new(1).unwrap().get(), 1);
        assert_eq!(Amount::new(250_000).unwrap().get(), 250_000);
        for bad in [0, 250_001, u64::MAX] {
            let err = Amount::new(bad).unwrap_err();
            assert_eq!(err.code, "invalid_amount");
            assert!(err.message.contains("1 to 250000"), "{}", err.message);
        }
    }

    #[test]
    fn amount_from_json_takes_integers_only_and_says_why_not() {
        assert_eq!(Amount::from_json(&json!(100)).unwrap().get(), 100);

        let cases = [
            (json!(100.5), "whole number"),
            (json!(100.0), "whole number"),
            (json!(-5), "negative"),
            (json!(-5.5), "negative"),
            (json!("100"), "not the string"),
            (json!(null), "required"),
            (json!(true), "JSON number"),
            (json!([100]), "JSON number"),
            (json!(0), "out of range"),
            (json!(250_001), "out of range"),
        ];
        for (value, expected) in cases {
            let err = Amount::from_json(&value).unwrap_err();
            assert_eq!(err.code, "invalid_amount");
            assert_eq!(err.field, "amount");
            assert!(err.message.contains(expected), "{value}: {}", err.message);
        }
    }

    #[test]
    fn account_reference_rules() {
        for ok in ["INV-001", "A", "order_12.3", "ABCDEFGHIJKL", "  trimmed  "] {
            let reference = AccountReference::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
            assert_eq!(reference.as_str(), ok.trim());
        }
        for (bad, why) in [
            ("", "empty"),
            ("   ", "empty"),
            ("ABCDEFGHIJKLM", "13 characters"),
            ("INV 001", "' '"),
            ("INV#1", "'#'"),
            ("INV/1", "'/'"),
            ("Malipo€", "'€'"),
        ] {
            let err = AccountReference::parse(bad).unwrap_err();
            assert_eq!(err.code, "invalid_reference");
            assert!(err.message.contains(why), "{bad}: {}", err.message);
        }
    }

    #[test]
    fn transaction_desc_rules_and_default() {
        assert_eq!(
            TransactionDesc::parse("Order-123456").unwrap().as_str(),
            "Order-123456"
        );
        assert_eq!(
            TransactionDesc::parse("Order 1001").unwrap().as_str(),
            "Order 1001"
        );
        assert_eq!(
            TransactionDesc::parse("ABCDEFGHIJKLM")
                .unwrap()
                .as_str()
                .len(),
            13
        );
        assert_eq!(
            TransactionDesc::parse("ABCDEFGHIJKLMN").unwrap_err().code,
            "invalid_description"
        );
        assert_eq!(
            TransactionDesc::parse("a&b").unwrap_err().code,
            "invalid_description"
        );
        assert_eq!(
            TransactionDesc::parse_optional(None).unwrap().as_str(),
            "Payment"
        );
        assert_eq!(
            TransactionDesc::parse_optional(Some("  "))
                .unwrap()
                .as_str(),
            "Payment"
        );
        assert_eq!(
            TransactionDesc::parse_optional(Some("Rent"))
                .unwrap()
                .as_str(),
            "Rent"
        );
        assert!(TransactionDesc::parse_optional(Some("far too long text")).is_err());
    }

    #[test]
    fn shortcode_and_till_are_five_to_seven_digits() {
        for ok in ["12345", "174379", "1234567"] {
            assert_eq!(ShortCode::parse(ok).unwrap().as_str(), ok);
            assert_eq!(TillNumber::parse(ok).unwrap().as_str(), ok);
        }
        for bad in ["1234", "12345678", "17437a", "", "17 4379", "-12345"] {
            assert_eq!(
                ShortCode::parse(bad).unwrap_err().code,
                "invalid_shortcode",
                "{bad}"
            );
            assert_eq!(
                TillNumber::parse(bad).unwrap_err().code,
                "invalid_till",
                "{bad}"
            );
        }
    }

    #[test]
    fn till_payments_send_the_till_as_party_b() {
        let store = ShortCode::parse("174379").unwrap();
        let till = TransactionKind::Till(TillNumber::parse("5432100").unwrap());
        assert_eq!(till.transaction_type(), "CustomerBuyGoodsOnline");
        assert_eq!(till.party_b(&store), "5432100");
        assert_eq!(
            TransactionKind::PayBill.transaction_type(),
            "CustomerPayBillOnline"
        );
        assert_eq!(TransactionKind::PayBill.party_b(&store), "174379");
    }
}
