//! What the simulator checks in a request, with the codes Daraja answers for each problem.

use super::*;

/// Hosts of tunnelling services Daraja refuses as callback hosts.
const TUNNEL_HOSTS: &[&str] = &[
    "ngrok",
    "localtunnel",
    "loca.lt",
    "serveo",
    "localhost.run",
    "trycloudflare",
    "pagekite",
    "telebit",
    "localxpose",
    "loclx",
];
/// Words Daraja refuses anywhere in a CallBackURL.
const FORBIDDEN_WORDS: &[&str] = &[
    "mpesa",
    "m-pesa",
    "safaricom",
    "exe",
    "exec",
    "cmd",
    "sql",
    "query",
];

/// Daraja cannot read a body that is not declared as JSON, and reports the first field it
/// needed: the shortcode.
pub(super) fn json_object(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<Map<String, Value>, DarajaError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
    match serde_json::from_slice(body) {
        Ok(Value::Object(map)) if is_json => Ok(map),
        _ => Err(DarajaError::Invalid("BusinessShortCode")),
    }
}

/// The body as recorded for `requests()`: the Password is base64 of the passkey, so it is
/// never kept.
pub(super) fn recorded_body(body: &Bytes) -> Value {
    let mut value = serde_json::from_slice(body).unwrap_or(Value::Null);
    if let Some(password) = value.get_mut("Password") {
        *password = json!("<redacted>");
    }
    value
}

// ---- field rules ----

/// A string field; Daraja also takes numbers for numeric-looking fields.
pub(super) fn text(map: &Map<String, Value>, name: &str) -> Option<String> {
    match map.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

pub(super) fn digits(s: &str, len: std::ops::RangeInclusive<usize>) -> bool {
    len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

pub(super) fn shortcode(map: &Map<String, Value>) -> Result<String, DarajaError> {
    text(map, "BusinessShortCode")
        .filter(|s| digits(s, 5..=7))
        .ok_or(DarajaError::Invalid("BusinessShortCode"))
}

pub(super) fn msisdn(map: &Map<String, Value>, name: &'static str) -> Result<String, DarajaError> {
    text(map, name)
        .filter(|s| digits(s, 12..=12) && (s.starts_with("2547") || s.starts_with("2541")))
        .ok_or(DarajaError::Invalid(name))
}

/// `YYYYMMDDHHmmss` read as Nairobi time, within the configured skew of now.
pub(super) fn timestamp(shared: &Shared, map: &Map<String, Value>) -> Result<String, DarajaError> {
    let invalid = DarajaError::Invalid("Timestamp");
    let ts = text(map, "Timestamp")
        .filter(|s| digits(s, 14..=14))
        .ok_or(DarajaError::Invalid("Timestamp"))?;
    let naive = NaiveDateTime::parse_from_str(&ts, "%Y%m%d%H%M%S")
        .map_err(|_| DarajaError::Invalid("Timestamp"))?;
    let at = eat()
        .from_local_datetime(&naive)
        .single()
        .ok_or(DarajaError::Invalid("Timestamp"))?;
    let skew = (Utc::now() - at.with_timezone(&Utc)).abs();
    let max = chrono::Duration::from_std(shared.config.timestamp_max_skew)
        .unwrap_or(chrono::Duration::MAX);
    if skew > max {
        return Err(invalid);
    }
    Ok(ts)
}

/// Whole shillings, 1..=250 000. Numeric strings (`"10"`) and whole floats (`10.0`) are
/// taken as Daraja takes them; fractions are refused.
pub(super) fn amount(map: &Map<String, Value>) -> Result<u64, DarajaError> {
    let value = match map.get("Amount") {
        Some(Value::Number(n)) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Some(Value::String(s)) if digits(s.trim(), 1..=7) => s.trim().parse().ok(),
        _ => None,
    };
    value
        .filter(|a| (1..=250_000).contains(a))
        .ok_or(DarajaError::Invalid("Amount"))
}

pub(super) fn callback_url(map: &Map<String, Value>) -> Result<String, DarajaError> {
    let invalid = || DarajaError::Invalid("CallBackURL");
    let url = text(map, "CallBackURL").ok_or_else(invalid)?;
    let lower = url.to_ascii_lowercase();
    let rest = lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .ok_or_else(invalid)?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    let host = host.split(':').next().unwrap_or_default();
    if host.is_empty() || url.chars().any(char::is_whitespace) {
        return Err(invalid());
    }
    if FORBIDDEN_WORDS.iter().any(|w| lower.contains(w))
        || TUNNEL_HOSTS.iter().any(|t| host.contains(t))
    {
        return Err(invalid());
    }
    Ok(url)
}

pub(super) fn account_reference(map: &Map<String, Value>) -> Result<(), DarajaError> {
    text(map, "AccountReference")
        .filter(|s| (1..=12).contains(&s.chars().count()))
        .map(|_| ())
        .ok_or(DarajaError::Invalid("AccountReference"))
}

pub(super) fn transaction_desc(map: &Map<String, Value>) -> Result<(), DarajaError> {
    match map.get("TransactionDesc") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if s.chars().count() <= 13 => Ok(()),
        Some(_) => Err(DarajaError::Invalid("TransactionDesc")),
    }
}

/// The shortcode is ours and the password is base64(shortcode + passkey + timestamp).
pub(super) fn credentials(
    shared: &Shared,
    map: &Map<String, Value>,
    shortcode: &str,
    timestamp: &str,
) -> Result<(), DarajaError> {
    if shortcode != shared.config.shortcode {
        return Err(DarajaError::UnknownMerchant);
    }
    let expected = BASE64.encode(format!("{shortcode}{}{timestamp}", shared.config.passkey));
    if text(map, "Password").as_deref() == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(DarajaError::WrongCredentials)
    }
}

// ---- STK push ----

pub(super) struct ValidPush {
    pub(super) push: NewPush,
}

pub(super) fn validate_push(
    shared: &Shared,
    map: &Map<String, Value>,
) -> Result<ValidPush, DarajaError> {
    let shortcode = shortcode(map)?;
    let timestamp = timestamp(shared, map)?;
    let transaction_type = text(map, "TransactionType");
    let paybill = match transaction_type.as_deref() {
        Some("CustomerPayBillOnline") => true,
        Some("CustomerBuyGoodsOnline") => false,
        _ => return Err(DarajaError::Invalid("TransactionType")),
    };
    let amount = amount(map)?;
    msisdn(map, "PartyA")?;
    let party_b = text(map, "PartyB")
        .filter(|s| digits(s, 5..=7))
        .ok_or(DarajaError::Invalid("PartyB"))?;
    let phone = msisdn(map, "PhoneNumber")?;
    let callback_url = callback_url(map)?;
    account_reference(map)?;
    transaction_desc(map)?;
    credentials(shared, map, &shortcode, &timestamp)?;
    // Mix-ups pass validation and fail in the callback, as on Daraja: a paybill push to
    // another PartyB is "not permitted" (2028); a till push whose PartyB is the store
    // number names no till ("SFC_IC0003").
    let forced_result = match (paybill, party_b == shortcode) {
        (true, false) => Some(json!(2028)),
        (false, true) => Some(json!("SFC_IC0003")),
        _ => None,
    };
    Ok(ValidPush {
        push: NewPush {
            phone,
            amount,
            callback_url,
            forced_result,
        },
    })
}
