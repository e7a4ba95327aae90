//! A result that matched no recorded payment may be the result of a push in doubt (Daraja
//! accepted it, nothing recorded the acceptance). One prompt per phone at a time makes the push
//! on the result's phone the only candidate: linking them gives the payment the merchant's
//! details and amount check, and the intent's key the real answer. The callback links at once;
//! reconciliation links the results that came while their push was still running.

use chrono::{DateTime, Utc};

use crate::intent::{accepted_answer, IntentRecord, PushLedger};
use crate::payment::NewPayment;
use crate::store::{PendingWrite, StoreError};

/// The customer message of the `202` a linked intent replays.
pub const LINKED_MESSAGE: &str = "Success. Request accepted for processing";

/// The payer's phone a result names. Daraja's checkout ids end with the prompted number
/// (`ws_CO_`, a 14-digit time, 3 digits, then its last nine digits or more): that is the
/// candidate. The callback's own `PhoneNumber`, when it has one of the same length, must agree
/// wherever it shows a digit (it may be masked, `254708***430`); without a candidate from the id
/// an unmasked one is used.
pub fn payer_phone(checkout_request_id: &str, paying_phone: Option<&str>) -> Option<String> {
    let from_id = checkout_request_id
        .strip_prefix("ws_CO_")
        .filter(|digits| digits.len() >= 26 && digits.bytes().all(|b| b.is_ascii_digit()))
        .map(|digits| format!("254{}", &digits[digits.len() - 9..]));
    let full =
        |p: &str| p.len() == 12 && p.starts_with("254") && p.bytes().all(|b| b.is_ascii_digit());
    match (from_id, paying_phone) {
        (Some(candidate), Some(shown)) if shown.len() == candidate.len() => {
            let agrees = shown
                .bytes()
                .zip(candidate.bytes())
                .all(|(s, c)| !s.is_ascii_digit() || s == c);
            agrees.then_some(candidate)
        }
        (Some(candidate), _) => Some(candidate),
        (None, Some(shown)) if full(shown) => Some(shown.to_owned()),
        (None, _) => None,
    }
}

/// What [`link_to_push_in_doubt`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Link {
    /// No phone in the result, or no push in doubt on it (or it settled meanwhile).
    Nothing,
    /// Linked: the intent as it was, and what the pending write found.
    Linked {
        intent: Box<IntentRecord>,
        written: Box<PendingWrite>,
    },
    /// The push in doubt holds a charge that no longer validates: left for a person.
    BadIntent(Box<IntentRecord>),
}

/// Links the result for `checkout_request_id` (with `paying_phone` as the result carried it) to
/// the push in doubt on its phone, at `now`.
pub async fn link_to_push_in_doubt(
    ledger: &dyn PushLedger,
    checkout_request_id: &str,
    merchant_request_id: &str,
    paying_phone: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Link, StoreError> {
    let Some(phone) = payer_phone(checkout_request_id, paying_phone) else {
        return Ok(Link::Nothing);
    };
    let Some(intent) = ledger.in_doubt_for_phone(&phone, now).await? else {
        return Ok(Link::Nothing);
    };
    let Ok(charge) = intent.charge() else {
        return Ok(Link::BadIntent(Box::new(intent)));
    };
    let payment = NewPayment {
        checkout_request_id: checkout_request_id.to_owned(),
        merchant_request_id: merchant_request_id.to_owned(),
        charge,
        created_at: intent.created_at,
        callback_nonce: None,
        created_by: intent.created_by.clone(),
    };
    let answer = accepted_answer(checkout_request_id, merchant_request_id, LINKED_MESSAGE);
    Ok(match ledger.link(&intent, &payment, &answer, now).await? {
        Some(written) => Link::Linked {
            intent: Box::new(intent),
            written: Box::new(written),
        },
        None => Link::Nothing,
    })
}

#[cfg(test)]
mod tests {
    use super::payer_phone;

    #[test]
    fn the_payer_s_phone_comes_from_the_checkout_id_and_must_agree_with_the_callback() {
        let id = "ws_CO_21072024125243250722943992";
        assert_eq!(payer_phone(id, None).as_deref(), Some("254722943992"));
        // The simulator's ids end with the whole number.
        let whole = "ws_CO_21072024125243250254722943992";
        assert_eq!(payer_phone(whole, None).as_deref(), Some("254722943992"));
        // A masked number that agrees where it shows digits, and one that does not.
        assert_eq!(
            payer_phone(id, Some("254722***992")).as_deref(),
            Some("254722943992")
        );
        assert_eq!(payer_phone(id, Some("254711***992")), None);
        // An id without the number: only an unmasked callback number will do.
        let other = "ws_CO_DMZ_123_456";
        assert_eq!(
            payer_phone(other, Some("254722943992")).as_deref(),
            Some("254722943992")
        );
        assert_eq!(payer_phone(other, Some("254722***992")), None);
        assert_eq!(payer_phone(other, None), None);
    }
}
