//! Arbitrary bytes as a `POST /payments` body: validation must never panic, anything accepted
//! must be something Daraja takes, and every refusal must be a 4xx a person can act on.

#![no_main]

use libfuzzer_sys::fuzz_target;
use app::api::{parse_payment_request, MAX_PUSH_BYTES};
use daraja::values::{AccountReference, TransactionDesc};

/// Refusals echo at most a short slice of the input; a message longer than this means a hostile
/// body can bloat the answer.
const MAX_MESSAGE_CHARS: usize = 512;

fuzz_target!(|body: &[u8]| {
    let request = match parse_payment_request(body) {
        Ok(request) => request,
        Err(e) => {
            assert!(
                matches!(e.status(), 400 | 413 | 422),
                "status {} for bad input",
                e.status()
            );
            assert_eq!(e.status() == 413, body.len() > MAX_PUSH_BYTES);
            assert!(!e.code.as_str().is_empty());
            assert!(!e.message.trim().is_empty());
            assert!(
                e.message.chars().count() <= MAX_MESSAGE_CHARS,
                "message of {} chars",
                e.message.chars().count()
            );
            assert!(e.daraja_error_code.is_none());
            let answer = e.body();
            assert_eq!(answer["error"]["code"], e.code.as_str());
            return;
        }
    };

    assert!(body.len() <= MAX_PUSH_BYTES);

    let phone = request.phone.as_str();
    assert_eq!(phone.len(), 12, "phone {phone:?}");
    assert!(phone.bytes().all(|b| b.is_ascii_digit()), "phone {phone:?}");
    assert!(
        phone.starts_with("2547") || phone.starts_with("2541"),
        "phone {phone:?}"
    );
    // The number never reaches a log through formatting.
    assert!(!request.phone.masked().contains(phone));
    assert!(!format!("{:?}", request.phone).contains(phone));

    assert!((1..=250_000).contains(&request.amount.get()));

    let reference = request.reference.as_str();
    assert!((1..=AccountReference::MAX_LEN).contains(&reference.chars().count()));
    assert!(is_prompt_text(reference, false), "reference {reference:?}");
    assert_eq!(reference, reference.trim(), "reference {reference:?}");

    let description = request.description.as_str();
    assert!((1..=TransactionDesc::MAX_LEN).contains(&description.chars().count()));
    assert!(
        is_prompt_text(description, true),
        "description {description:?}"
    );
    // Trimmed, so a padded value cannot hide a length or an empty prompt line.
    assert_eq!(
        description,
        description.trim(),
        "description {description:?}"
    );
});

/// What the SIM-toolkit prompt shows as-is: ASCII letters, digits and `-`, `_`, `.`; descriptions
/// read as words and may also hold spaces.
fn is_prompt_text(text: &str, spaces: bool) -> bool {
    text.chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') || (spaces && c == ' '))
}
