//! Signed webhooks: the body a merchant's endpoint receives for each payment event, its
//! signature, the check a receiver makes, and (feature `webhook`) one delivery attempt.
//!
//! The signature is Stripe's scheme: the header `Mpesa-Signature: t=<unix seconds>,v1=<hex>`,
//! where the hex is HMAC-SHA256 over `"<t>.<body>"` keyed with the signing secret. While a secret
//! is being rotated both are used, and the header carries one `v1` per secret
//! (`t=…,v1=<new>,v1=<old>`): a receiver holding either accepts it. A receiver rejects a `t`
//! more than [`TOLERANCE`] away from its clock, so a captured request cannot be replayed later.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::Serialize;
use serde_json::Value;
use sha2::Sha256;

use payments::event::PaymentEvent;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "Mpesa-Signature";
/// The event id header (also the body's `id`): a receiver drops an id it has already seen.
pub const EVENT_ID_HEADER: &str = "Mpesa-Event-Id";
/// How far a signature's timestamp may be from the receiver's clock.
pub const TOLERANCE: Duration = Duration::from_secs(300);

/// The webhook body: `{"id", "type", "created_at", "data"}`, `data` being the event's detail
/// (the same JSON as EventBridge's `detail`).
#[derive(Debug, Serialize)]
pub struct WebhookBody<'a> {
    pub id: &'a str,
    #[serde(rename = "type")]
    pub kind: String,
    pub created_at: String,
    pub data: &'a PaymentEvent,
}

/// The JSON text POSTed for `event`.
pub fn body(event: &PaymentEvent) -> String {
    let body = WebhookBody {
        id: &event.event_id,
        kind: event.webhook_type(),
        created_at: payments::timestamp::format(event.changed_at),
        data: event,
    };
    serde_json::to_string(&body).expect("an event always serialises")
}

fn mac(secret: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// The `Mpesa-Signature` value for `body` sent at `timestamp`, one `v1` per secret.
pub fn sign(secrets: &[&str], timestamp: i64, body: &[u8]) -> String {
    let mut header = format!("t={timestamp}");
    for secret in secrets {
        let digest = mac(secret, timestamp, body).finalize().into_bytes();
        header.push_str(",v1=");
        header.push_str(&hex::encode(digest));
    }
    header
}

/// Why a receiver refuses a webhook.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the signature header has no t= timestamp or no v1= signature")]
    Malformed,
    #[error("the signature is {0} s away from now: older than 5 minutes, or a replay")]
    Stale(i64),
    #[error("no v1 signature matches the body with this secret")]
    Mismatch,
}

/// What a receiver checks: a `v1` signature by `secret` over `t` and the exact body bytes, with
/// `t` within [`TOLERANCE`] of `now` (unix seconds).
pub fn verify(header: &str, body: &[u8], secret: &str, now: i64) -> Result<(), VerifyError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = t.parse::<i64>().ok(),
            Some(("v1", v)) => signatures.extend(hex::decode(v).ok()),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(VerifyError::Malformed)?;
    if signatures.is_empty() {
        return Err(VerifyError::Malformed);
    }
    let age = now - timestamp;
    if age.unsigned_abs() > TOLERANCE.as_secs() {
        return Err(VerifyError::Stale(age));
    }
    // `verify_slice` compares in constant time.
    signatures
        .iter()
        .any(|signature| mac(secret, timestamp, body).verify_slice(signature).is_ok())
        .then_some(())
        .ok_or(VerifyError::Mismatch)
}

/// When a failed webhook is tried again: `base` doubled per failed attempt, at most `cap`
/// (SQS allows a message to stay invisible 12 hours at most).
pub fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
    base.saturating_mul(factor).min(cap)
}

/// The event id and type of a webhook body, for logs.
pub fn describe(body: &str) -> (Option<String>, Option<String>) {
    let value: Value = serde_json::from_str(body).unwrap_or_default();
    let field = |name: &str| value.get(name).and_then(Value::as_str).map(str::to_owned);
    (field("id"), field("type"))
}

#[cfg(feature = "webhook")]
pub use delivery::{Attempt, Delivery, SigningSecrets, WebhookSettings};

#[cfg(feature = "webhook")]
mod delivery {
    use std::time::Duration;

    use daraja::Secret;

    use super::{sign, EVENT_ID_HEADER, SIGNATURE_HEADER};

    /// Where and how webhooks go.
    #[derive(Debug, Clone)]
    pub struct WebhookSettings {
        pub url: String,
        /// One attempt's limit: a slow receiver costs this, then the attempt counts as failed.
        pub timeout: Duration,
        /// The first retry's delay; each further one doubles, up to `backoff_cap`.
        pub backoff_base: Duration,
        pub backoff_cap: Duration,
    }

    /// The secrets webhooks are signed with: the current one, and the previous one while a
    /// rotation is under way.
    #[derive(Clone)]
    pub struct SigningSecrets {
        pub current: Secret,
        pub previous: Option<Secret>,
    }

    impl std::fmt::Debug for SigningSecrets {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("SigningSecrets(<redacted>)")
        }
    }

    /// How one attempt went.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Attempt {
        Delivered {
            status: u16,
        },
        /// A non-2xx answer (`status`), or none (`status` `None`: timeout, refused, reset).
        Failed {
            status: Option<u16>,
            reason: String,
        },
    }

    /// Sends webhooks over one HTTP client (connections kept between invocations).
    pub struct Delivery {
        http: reqwest::Client,
        settings: WebhookSettings,
    }

    impl Delivery {
        pub fn new(settings: WebhookSettings) -> Result<Self, reqwest::Error> {
            let roots = crate::tls::system_roots()
                .certs()
                .iter()
                .filter_map(|der| reqwest::Certificate::from_der(der.as_ref()).ok());
            let http = reqwest::Client::builder()
                .timeout(settings.timeout)
                .tls_certs_only(roots)
                .user_agent(concat!(
                    "mpesa-express-webhooks/",
                    env!("CARGO_PKG_VERSION")
                ))
                .build()?;
            Ok(Self { http, settings })
        }

        pub fn settings(&self) -> &WebhookSettings {
            &self.settings
        }

        /// POSTs `body` (the event `event_id`), signed at `now` (unix seconds).
        pub async fn attempt(
            &self,
            event_id: &str,
            body: &str,
            secrets: &SigningSecrets,
            now: i64,
        ) -> Attempt {
            let keys: Vec<&str> = std::iter::once(secrets.current.expose())
                .chain(secrets.previous.as_ref().map(Secret::expose))
                .collect();
            let signature = sign(&keys, now, body.as_bytes());
            let sent = self
                .http
                .post(&self.settings.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, signature)
                .header(EVENT_ID_HEADER, event_id)
                .body(body.to_owned())
                .send()
                .await;
            match sent {
                Ok(answer) if answer.status().is_success() => Attempt::Delivered {
                    status: answer.status().as_u16(),
                },
                Ok(answer) => Attempt::Failed {
                    status: Some(answer.status().as_u16()),
                    reason: format!("answered {}", answer.status()),
                },
                Err(e) if e.is_timeout() => Attempt::Failed {
                    status: None,
                    reason: format!("no answer within {} ms", self.settings.timeout.as_millis()),
                },
                Err(e) => Attempt::Failed {
                    status: None,
                    reason: format!("not delivered: {}", without_url(&e)),
                },
            }
        }
    }

    /// The error without the URL (which may hold a token of the merchant's).
    fn without_url(e: &reqwest::Error) -> String {
        let mut text = e.to_string();
        if let Some(url) = e.url() {
            text = text.replace(url.as_str(), "<webhook url>");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_583_200;

    #[test]
    fn a_signature_verifies_with_either_secret_during_a_rotation() {
        let body = br#"{"id":"evt_1"}"#;
        let header = sign(&["new-secret", "old-secret"], NOW, body);
        assert_eq!(header.matches("v1=").count(), 2);
        assert_eq!(verify(&header, body, "new-secret", NOW + 10), Ok(()));
        assert_eq!(verify(&header, body, "old-secret", NOW + 10), Ok(()));
        assert_eq!(
            verify(&header, body, "another", NOW),
            Err(VerifyError::Mismatch)
        );
    }

    #[test]
    fn a_forged_body_a_replay_and_a_malformed_header_are_rejected() {
        let body = br#"{"id":"evt_1","data":{"amount":10}}"#;
        let header = sign(&["secret"], NOW, body);
        let forged = br#"{"id":"evt_1","data":{"amount":1000}}"#;
        assert_eq!(
            verify(&header, forged, "secret", NOW),
            Err(VerifyError::Mismatch)
        );
        assert_eq!(
            verify(&header, body, "secret", NOW + 301),
            Err(VerifyError::Stale(301))
        );
        assert_eq!(
            verify("v1=00", body, "secret", NOW),
            Err(VerifyError::Malformed)
        );
        assert_eq!(
            verify(&format!("t={NOW}"), body, "secret", NOW),
            Err(VerifyError::Malformed)
        );
    }

    #[test]
    fn backoff_doubles_from_the_base_up_to_the_cap() {
        let (base, cap) = (Duration::from_secs(30), Duration::from_secs(43_200));
        let delays: Vec<u64> = (1..=13).map(|n| backoff(n, base, cap).as_secs()).collect();
        assert_eq!(&delays[..4], &[30, 60, 120, 240]);
        assert_eq!(delays[11], 43_200);
        // With the deployed defaults, the 13th attempt comes more than 24 hours after the
        // first: the retry period (WEBHOOK_RETRY_FOR_SECONDS) ends before the back-off runs out.
        assert!(delays[..12].iter().sum::<u64>() > 24 * 3600);
    }
}
