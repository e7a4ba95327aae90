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
mod tests;
