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
