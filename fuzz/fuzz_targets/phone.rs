//! Arbitrary text as a phone number: normalisation must be idempotent, every accepted spelling
//! of a number must give the same MSISDN, and the full number must never print.

#![no_main]

use libfuzzer_sys::fuzz_target;
use daraja::values::PhoneNumber;

fuzz_target!(|input: &str| {
    let phone = match PhoneNumber::parse(input) {
        Ok(phone) => phone,
        Err(e) => {
            assert_eq!(e.field, "phone");
            assert_eq!(e.code, "invalid_phone");
            assert!(!e.message.is_empty());
            // The echo of the input is capped, so the message stays short whatever is sent.
            assert!(e.message.chars().count() <= 512, "{}", e.message);
            return;
        }
    };

    let msisdn = phone.as_str();
    assert_eq!(msisdn.len(), 12, "{msisdn:?}");
    assert!(msisdn.bytes().all(|b| b.is_ascii_digit()), "{msisdn:?}");
    assert!(
        msisdn.starts_with("2547") || msisdn.starts_with("2541"),
        "{msisdn:?}"
    );

    // Idempotent, and each documented spelling of the same number agrees.
    let subscriber = &msisdn[3..];
    for spelling in [
        msisdn.to_owned(),
        format!("+{msisdn}"),
        format!("0{subscriber}"),
        subscriber.to_owned(),
    ] {
        assert_eq!(
            PhoneNumber::parse(&spelling).as_ref(),
            Ok(&phone),
            "{spelling:?}"
        );
    }

    // Stored as JSON and read back unchanged.
    let json = serde_json::to_string(&phone).unwrap();
    assert_eq!(serde_json::from_str::<PhoneNumber>(&json).unwrap(), phone);

    for printed in [phone.to_string(), format!("{phone:?}"), phone.masked()] {
        assert!(!printed.contains(msisdn), "{printed:?} shows the number");
    }
});
