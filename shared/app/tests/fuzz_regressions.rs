//! The nastiest inputs met while fuzzing (see `fuzz/`), kept as plain tests so they run in every
//! `cargo test` without the fuzzing toolchain. Each asserts the exact answer, not only "no panic".
#![cfg(feature = "push")]

use app::api::{parse_payment_request, MAX_PUSH_BYTES};
use daraja::callback::{parse_callback, AmountPaid};
use daraja::result_code::ResultCode;
use daraja::values::PhoneNumber;

fn callback_with(result_code: &str, items: &str) -> Vec<u8> {
    format!(
        r#"{{"Body":{{"stkCallback":{{"MerchantRequestID":"m","CheckoutRequestID":"ws_CO_1",
        "ResultCode":{result_code},"ResultDesc":"d","CallbackMetadata":{{"Item":[{items}]}}}}}}}}"#
    )
    .into_bytes()
}

fn push_body(phone: &str, amount: &str, reference: &str) -> Vec<u8> {
    format!(r#"{{"phone":{phone},"amount":{amount},"reference":{reference}}}"#).into_bytes()
}

#[test]
fn callback_nested_past_the_recursion_limit_is_invalid_json_not_a_stack_overflow() {
    let depth = 100_000;
    let mut body =
        br#"{"Body":{"stkCallback":{"CheckoutRequestID":"c","ResultCode":0,"x":"#.to_vec();
    body.extend(std::iter::repeat_n(b'[', depth));
    body.extend(std::iter::repeat_n(b']', depth));
    body.extend(b"}}}");
    assert_eq!(parse_callback(&body).unwrap_err().code(), "invalid_json");
}

#[test]
fn callback_with_deep_but_allowed_nesting_in_an_unknown_field_is_read() {
    let nested = format!("{}{}", "[".repeat(100), "]".repeat(100));
    let body = format!(
        r#"{{"Body":{{"stkCallback":{{"CheckoutRequestID":"c","ResultCode":1032,"x":{nested}}}}}}}"#
    );
    let callback = parse_callback(body.as_bytes()).unwrap();
    assert_eq!(callback.result_code, ResultCode::from_number(1032));
}

#[test]
fn callback_that_is_not_utf8_is_invalid_json() {
    for body in [
        &b"\xff\xfe\x00{"[..],
        b"{\"Body\":{\"stkCallback\":{\"CheckoutRequestID\":\"ws_\xc3\x28\",\"ResultCode\":0}}}",
        br#"{"Body":{"stkCallback":{"CheckoutRequestID":"\ud800","ResultCode":0}}}"#,
    ] {
        assert_eq!(parse_callback(body).unwrap_err().code(), "invalid_json");
    }
}

#[test]
fn callback_result_code_beyond_any_integer_is_kept_as_an_unknown_final_code() {
    let e300 = format!("1{}", "0".repeat(300));
    for (raw, expected) in [
        ("18446744073709551615", "18446744073709551615"),
        ("18446744073709551616", "18446744073709552000"),
        ("-9223372036854775809", "-9223372036854776000"),
        ("1e300", e300.as_str()),
    ] {
        let code = parse_callback(&callback_with(raw, "")).unwrap().result_code;
        assert_eq!(code.code(), expected, "{raw}");
        assert_eq!(code.meaning(), "unknown result code", "{raw}");
        assert!(!code.is_success(), "{raw}");
        assert!(code.is_final(), "{raw}");
    }
}

#[test]
fn callback_result_code_out_of_f64_range_is_invalid_json() {
    let err = parse_callback(&callback_with("1e400", "")).unwrap_err();
    assert_eq!(err.code(), "invalid_json");
}

#[test]
fn callback_amount_that_is_huge_negative_or_sub_cent_is_unread_not_rounded() {
    for value in [
        "1e300",
        "18446744073709551616",
        r#""99999999999999999999""#,
        r#""1e3""#,
        "0.001",
        "-0.0",
    ] {
        let body = callback_with("0", &format!(r#"{{"Name":"Amount","Value":{value}}}"#));
        let callback = parse_callback(&body).unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(callback.metadata.amount, None, "{value}");
    }
    // A small exponent is an exact whole number, so it is read as one.
    let body = callback_with("0", r#"{"Name":"Amount","Value":1e3}"#);
    assert_eq!(
        parse_callback(&body).unwrap().metadata.amount,
        AmountPaid::new(1000, 0)
    );
    let body = callback_with(
        "0",
        r#"{"Name":"Amount","Value":"18446744073709551615.00"}"#,
    );
    assert_eq!(
        parse_callback(&body).unwrap().metadata.amount,
        AmountPaid::new(u64::MAX, 0)
    );
}

#[test]
fn callback_fourteen_digit_dates_as_floats_are_exact() {
    for value in [
        "20191219102115.0",
        "2.0191219102115e13",
        "20191219102115.000",
    ] {
        let body = callback_with(
            "0",
            &format!(r#"{{"Name":"TransactionDate","Value":{value}}}"#),
        );
        let date = parse_callback(&body).unwrap().metadata.transaction_date;
        assert_eq!(date.as_deref(), Some("20191219102115"), "{value}");
    }
    for value in ["20191219102115.5", "-20191219102115", "1e15", "1e300"] {
        let body = callback_with(
            "0",
            &format!(r#"{{"Name":"TransactionDate","Value":{value}}}"#),
        );
        let date = parse_callback(&body).unwrap().metadata.transaction_date;
        assert_eq!(date, None, "{value}");
    }
}

#[test]
fn push_body_over_the_limit_is_413_before_it_is_read() {
    let body = vec![b'{'; MAX_PUSH_BYTES + 1];
    assert_eq!(parse_payment_request(&body).unwrap_err().status(), 413);
}

#[test]
fn push_body_nested_past_the_recursion_limit_is_400() {
    let body = format!(r#"{{"phone":{}{}}}"#, "[".repeat(5000), "]".repeat(5000));
    let err = parse_payment_request(body.as_bytes()).unwrap_err();
    assert_eq!((err.status(), err.code.as_str()), (400, "invalid_json"));
}

#[test]
fn push_body_that_is_not_utf8_is_400() {
    let err = parse_payment_request(b"{\"phone\":\"07\xff12345678\"}").unwrap_err();
    assert_eq!((err.status(), err.code.as_str()), (400, "invalid_json"));
}

#[test]
fn push_amounts_that_are_not_small_integers_are_422_with_a_short_message() {
    for amount in [
        "18446744073709551616",
        "250001",
        "0",
        "-0",
        "-1",
        "100.0",
        "1e3",
        "1e300",
        r#""100""#,
        "[100]",
    ] {
        let body = push_body(r#""0712345678""#, amount, r#""INV1""#);
        let err = parse_payment_request(&body).unwrap_err();
        assert_eq!(
            (err.status(), err.code.as_str()),
            (422, "invalid_amount"),
            "{amount}"
        );
        assert!(err.message.len() < 200, "{amount}: {}", err.message);
    }
    let err = parse_payment_request(&push_body(r#""0712345678""#, "1e400", r#""I""#)).unwrap_err();
    assert_eq!((err.status(), err.code.as_str()), (400, "invalid_json"));
}

#[test]
fn push_reference_of_a_huge_string_is_refused_with_a_capped_echo() {
    let reference = format!("\"{}\"", "A".repeat(10_000));
    let err = parse_payment_request(&push_body(r#""0712345678""#, "10", &reference)).unwrap_err();
    assert_eq!(
        (err.status(), err.code.as_str()),
        (422, "invalid_reference")
    );
    assert!(err.message.len() < 200, "{}", err.message);
}

#[test]
fn push_at_the_limits_is_accepted() {
    let body = push_body(r#""+254 112-345-678""#, "250000", r#""ABCDEFGHIJ-_""#);
    let request = parse_payment_request(&body).unwrap();
    assert_eq!(request.phone.as_str(), "254112345678");
    assert_eq!(request.amount.get(), 250_000);
    assert_eq!(request.reference.as_str(), "ABCDEFGHIJ-_");
}

#[test]
fn phone_digits_from_other_scripts_are_refused() {
    for input in [
        "٠٧١٢٣٤٥٦٧٨",
        "0７12345678",
        "07１2345678",
        "+0712345678",
        "+712345678",
    ] {
        let err = PhoneNumber::parse(input).unwrap_err();
        assert_eq!(err.code, "invalid_phone", "{input}");
    }
}

#[test]
fn phone_normalised_form_parses_to_itself() {
    for input in [
        "0712345678",
        " 07-12 34 56 78 ",
        "+254112345678",
        "112345678",
    ] {
        let phone = PhoneNumber::parse(input).unwrap();
        assert_eq!(PhoneNumber::parse(phone.as_str()), Ok(phone), "{input}");
    }
}
