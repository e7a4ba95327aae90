//! Arbitrary bytes as a callback body: the parser must never panic, must be deterministic, and
//! whatever it accepts must satisfy what the store and the status API rely on.

#![no_main]

use chrono::{TimeZone, Utc};
use libfuzzer_sys::fuzz_target;
use app::api::payment_result;
use daraja::callback::{parse_callback, AmountPaid};
use daraja::result_code::{OutcomeCategory, ResultCode};
use payments::payment::ResultSource;

fuzz_target!(|body: &[u8]| {
    let parsed = parse_callback(body);
    assert_eq!(parsed, parse_callback(body), "parsing is not deterministic");

    let callback = match parsed {
        Ok(callback) => callback,
        Err(e) => {
            assert!(matches!(e.code(), "invalid_json" | "invalid_callback"));
            let message = e.to_string();
            assert!(!message.is_empty());
            // The body may hold a phone number; a refusal must never repeat it.
            assert!(
                longest_digit_run(&message) < 9,
                "error message quotes a number: {message}"
            );
            return;
        }
    };

    // Correlation depends on the id alone.
    assert!(!callback.checkout_request_id.trim().is_empty());

    let code = &callback.result_code;
    assert!(!code.code().is_empty());
    assert_eq!(code.code(), code.code().trim());
    // One canonical form: re-reading the stored text gives the same code.
    assert_eq!(&ResultCode::from_text(code.code()), code);
    let category = code.category();
    assert_eq!(code.is_final(), category.is_final());
    assert_eq!(code.is_success(), category == OutcomeCategory::Success);
    assert_eq!(code.is_success(), code.as_number() == Some(0));
    assert_eq!(!code.is_final(), category == OutcomeCategory::Processing);

    let meta = &callback.metadata;
    if let Some(amount) = meta.amount {
        assert!(amount.cents() < 100);
        // Stored as text and read back: must be exact.
        assert_eq!(AmountPaid::parse(&amount.to_string()), Some(amount));
        assert_eq!(
            amount.whole_shillings().is_some(),
            amount.cents() == 0,
            "whole_shillings disagrees with cents"
        );
    }
    if let Some(date) = &meta.transaction_date {
        assert!(!date.is_empty() && date.bytes().all(|b| b.is_ascii_digit()));
    }
    for text in [&meta.receipt, &meta.phone, &meta.balance]
        .into_iter()
        .flatten()
    {
        assert!(!text.is_empty());
    }

    // The record the store would write must agree with the parse.
    let received_at = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let result = payment_result(&callback, body, ResultSource::Callback, received_at);
    assert_eq!(result.checkout_request_id, callback.checkout_request_id);
    assert_eq!(result.result_code.code(), code.code());
    assert_eq!(result.outcome(), category.as_str());
    assert_eq!(result.is_success(), code.is_success());
    assert_eq!(
        result.amount_paid_whole.map(u128::from),
        meta.amount
            .and_then(|a| a.whole_shillings())
            .map(u128::from)
    );
});

fn longest_digit_run(text: &str) -> usize {
    text.split(|c: char| !c.is_ascii_digit())
        .map(str::len)
        .max()
        .unwrap_or(0)
}
