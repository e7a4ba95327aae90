//! The `Idempotency-Key` header: what `POST /payments` accepts, and what a lookup by key takes.

use super::ApiError;

/// The longest `Idempotency-Key` accepted (Stripe's limit).
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Checks an `Idempotency-Key` value: 1 to 255 visible ASCII characters.
pub fn parse_idempotency_key(raw: &[u8]) -> Result<&str, ApiError> {
    let visible = |b: &u8| (0x21..=0x7e).contains(b);
    if raw.is_empty() || raw.len() > MAX_IDEMPOTENCY_KEY_LEN || !raw.iter().all(visible) {
        return Err(ApiError::invalid_idempotency_key());
    }
    std::str::from_utf8(raw).map_err(|_| ApiError::invalid_idempotency_key())
}
