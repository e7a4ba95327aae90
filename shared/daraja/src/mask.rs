//! Masking for logs: the ids Daraja hands out can embed the customer's phone number.

/// Masks an opaque Daraja ID for logs. CheckoutRequestIDs can embed the phone number
/// (`ws_CO_<timestamp><millis><msisdn>`), so in every run of nine or more digits (long enough to
/// hold a subscriber number) the six digits before the last three are hidden. What stays (the
/// timestamp part, the last three digits) tells IDs apart without revealing a customer.
pub fn mask_id(id: &str) -> String {
    const HIDDEN: usize = 6;
    const SHOWN_TAIL: usize = 3;
    let chars: Vec<char> = id.chars().collect();
    let mut masked = String::with_capacity(id.len() + 12);
    let mut i = 0;
    while i < chars.len() {
        let run = chars[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if run == 0 {
            masked.push(chars[i]);
            i += 1;
            continue;
        }
        let digits = &chars[i..i + run];
        if run >= 9 {
            let keep = run - HIDDEN - SHOWN_TAIL;
            masked.extend(&digits[..keep]);
            masked.extend(std::iter::repeat_n('•', HIDDEN));
            masked.extend(&digits[run - SHOWN_TAIL..]);
        } else {
            masked.extend(digits);
        }
        i += run;
    }
    masked
}
