//! Per-payment callback URLs. Each push gets its own path token, `{key id}.{nonce}.{tag}`:
//! a fresh nonce, and an HMAC-SHA256 tag of it under a server-side key. The nonce is stored with
//! the payment (and its intent), and the callback's write requires the stored nonce to be the
//! URL's, so a URL seen once settles no other payment. A token whose tag does not verify is
//! refused before any DynamoDB request.
//!
//! Keys are versioned for rotation: the first key of [`CallbackKeys`] signs new URLs, every
//! key verifies, so URLs already sent keep working while the previous key is still listed.
//!
//! Nonce and tag are lowercase hex: Daraja refuses a CallBackURL holding `exe`, `cmd`, `sql`
//! and other words anywhere (`DARAJA.md`), which random base64 forms about once in 250 URLs;
//! hex has no `x`, `m`, `s`, `q`, `l`, `p`, so it can form none of them.

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use daraja::Secret;

type HmacSha256 = Hmac<Sha256>;

/// Bytes of randomness in a nonce, and of the tag kept (128 bits each).
const NONCE_BYTES: usize = 16;
const TAG_BYTES: usize = 16;
/// The tag covers this label too, so a key shared by mistake with another use signs nothing here.
const LABEL: &[u8] = b"mpesa-express/stk-callback/v1/";
/// The shortest key accepted: 128 bits as hex or base64 is at least 22 characters.
const MIN_KEY_CHARS: usize = 22;
/// Words Daraja refuses anywhere in a CallBackURL (case-insensitive): no key id may hold one.
pub const WORDS_DARAJA_REFUSES: [&str; 8] = [
    "mpesa",
    "m-pesa",
    "safaricom",
    "exe",
    "exec",
    "cmd",
    "sql",
    "query",
];

/// The keys callback URLs are signed with: the first signs, all verify.
#[derive(Clone)]
pub struct CallbackKeys {
    keys: Vec<(String, Secret)>,
}

impl std::fmt::Debug for CallbackKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("CallbackKeys")
            .field("ids", &ids)
            .finish_non_exhaustive()
    }
}

/// A callback URL's token and the nonce it binds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capability {
    /// The path segment after `/callbacks/stk/`.
    pub token: String,
    /// Stored with the payment; the callback must bring the same.
    pub nonce: String,
}

impl CallbackKeys {
    /// `id:key` pairs separated by commas, the signing key first (`CALLBACK_KEYS`, or the
    /// secret's `callback_keys`). A value without any `id:` is one key with id `0`: the
    /// secret's `callback_token` of a stack that never rotated.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if !text.contains(':') {
            return Self::from_pairs(vec![("0".to_owned(), text.to_owned())]);
        }
        let pairs = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| match entry.split_once(':') {
                Some((id, key)) => Ok((id.trim().to_owned(), key.trim().to_owned())),
                None => Err(format!(
                    "callback key entries are id:key; one has no id ({} characters)",
                    entry.len()
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_pairs(pairs)
    }

    fn from_pairs(pairs: Vec<(String, String)>) -> Result<Self, String> {
        if pairs.is_empty() {
            return Err("no callback key".to_owned());
        }
        let mut keys: Vec<(String, Secret)> = Vec::with_capacity(pairs.len());
        for (id, key) in pairs {
            let id_ok = !id.is_empty()
                && id.len() <= 16
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !id_ok {
                return Err(format!(
                    "callback key id {id:?} must be 1-16 letters, digits, '_' or '-'"
                ));
            }
            let lower = id.to_ascii_lowercase();
            if let Some(word) = WORDS_DARAJA_REFUSES.iter().find(|w| lower.contains(*w)) {
                return Err(format!(
                    "callback key id {id:?} holds {word:?}, which Daraja refuses in a CallBackURL"
                ));
            }
            if key.len() < MIN_KEY_CHARS {
                return Err(format!(
                    "callback key {id} is {} characters; at least {MIN_KEY_CHARS} are needed",
                    key.len()
                ));
            }
            if keys.iter().any(|(known, _)| *known == id) {
                return Err(format!("callback key id {id} is listed twice"));
            }
            keys.push((id, Secret::new(key)));
        }
        Ok(Self { keys })
    }

    /// The id of the key that signs new URLs.
    pub fn signing_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The ids of every key that verifies, signing key first.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// A fresh capability, signed with the first key.
    pub fn mint(&self) -> Capability {
        let mut raw = [0u8; NONCE_BYTES];
        rand::rng().fill_bytes(&mut raw);
        let nonce = hex::encode(raw);
        let (id, key) = &self.keys[0];
        let tag = hex::encode(&tag(key, &nonce)[..TAG_BYTES]);
        Capability {
            token: format!("{id}.{nonce}.{tag}"),
            nonce,
        }
    }

    /// The nonce of `token` when its tag verifies under the key it names (in constant time);
    /// `None` for anything else: a malformed token, an unknown key id, a wrong tag.
    pub fn verify(&self, token: &str) -> Option<String> {
        let mut parts = token.split('.');
        let (id, nonce, tag_text) = (parts.next()?, parts.next()?, parts.next()?);
        let lower_hex = |text: &str| text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
        if parts.next().is_some() || nonce.len() != 2 * NONCE_BYTES || !lower_hex(nonce) {
            return None;
        }
        if !lower_hex(tag_text) {
            return None;
        }
        let given = hex::decode(tag_text).ok()?;
        if given.len() != TAG_BYTES {
            return None;
        }
        let (_, key) = self.keys.iter().find(|(known, _)| known == id)?;
        mac(key, nonce).verify_truncated_left(&given).ok()?;
        Some(nonce.to_owned())
    }
}

fn mac(key: &Secret, nonce: &str) -> HmacSha256 {
    let mut mac =
        HmacSha256::new_from_slice(key.expose().as_bytes()).expect("HMAC takes keys of any size");
    mac.update(LABEL);
    mac.update(nonce.as_bytes());
    mac
}

fn tag(key: &Secret, nonce: &str) -> Vec<u8> {
    mac(key, nonce).finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY_A: &str = "a-key-of-thirty-two-characters!!";
    const KEY_B: &str = "another-key-of-thirty-two-chars!";

    #[test]
    fn a_minted_token_verifies_and_names_its_nonce() {
        let keys = CallbackKeys::parse(KEY_A).unwrap();
        let cap = keys.mint();
        assert_eq!(keys.verify(&cap.token), Some(cap.nonce.clone()));
        assert!(cap.token.starts_with("0."));
        assert_ne!(keys.mint().nonce, cap.nonce, "a fresh nonce per push");
    }

    #[test]
    fn no_token_holds_a_word_daraja_refuses_in_a_callback_url() {
        let keys = CallbackKeys::parse(&format!("k_9-Z:{KEY_A}")).unwrap();
        for _ in 0..20_000 {
            let token = keys.mint().token.to_ascii_lowercase();
            assert!(
                !WORDS_DARAJA_REFUSES.iter().any(|w| token.contains(w)),
                "{token}"
            );
        }
        for id in ["exec", "SQL1", "a-mpesa"] {
            let err = CallbackKeys::parse(&format!("{id}:{KEY_A}")).unwrap_err();
            assert!(err.contains("Daraja refuses"), "{id}: {err}");
        }
    }

    #[test]
    fn every_altered_token_is_refused() {
        let keys = CallbackKeys::parse(KEY_A).unwrap();
        let cap = keys.mint();
        let other = CallbackKeys::parse(KEY_B).unwrap();
        assert_eq!(other.verify(&cap.token), None, "another stack's key");
        let mut refused = vec![
            String::new(),
            "0".to_owned(),
            format!("{}.", cap.token),
            cap.token.to_uppercase(),
            cap.token.replacen("0.", "1.", 1),
            KEY_A.to_owned(),
        ];
        // Every single character changed.
        for i in 0..cap.token.len() {
            let mut bytes = cap.token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'0' { b'1' } else { b'0' };
            refused.push(String::from_utf8(bytes).unwrap());
        }
        // Another nonce under the same tag.
        let second = keys.mint();
        let tag = cap.token.rsplit('.').next().unwrap();
        refused.push(format!("0.{}.{tag}", second.nonce));
        for token in refused {
            assert_eq!(keys.verify(&token), None, "{token}");
        }
    }

    #[test]
    fn the_first_key_signs_and_every_listed_key_verifies() {
        let old = CallbackKeys::parse(&format!("1:{KEY_A}")).unwrap();
        let sent_before = old.mint();
        // Rotation: the new key signs, the previous one still verifies.
        let both = CallbackKeys::parse(&format!("2:{KEY_B}, 1:{KEY_A}")).unwrap();
        assert_eq!(both.signing_id(), "2");
        assert_eq!(both.ids().collect::<Vec<_>>(), ["2", "1"]);
        assert!(both.mint().token.starts_with("2."));
        assert_eq!(both.verify(&sent_before.token), Some(sent_before.nonce));
        // Once the previous key is dropped its URLs settle nothing.
        let new_only = CallbackKeys::parse(&format!("2:{KEY_B}")).unwrap();
        assert_eq!(new_only.verify(&old.mint().token), None);
        assert!(new_only.verify(&both.mint().token).is_some());
    }

    #[test]
    fn bad_key_lists_are_refused_without_showing_the_keys() {
        for (text, says) in [
            ("", "characters"),
            ("short", "characters"),
            (&format!("1:{KEY_A},1:{KEY_B}") as &str, "twice"),
            (&format!("bad id:{KEY_A}"), "letters"),
            (&format!("cmd:{KEY_A}"), "refuses"),
            (&format!("1:{KEY_A},{KEY_B}"), "no id"),
        ] {
            let err = CallbackKeys::parse(text).unwrap_err();
            assert!(err.contains(says), "{text:?}: {err}");
            assert!(!err.contains(KEY_A) && !err.contains(KEY_B), "{err}");
        }
    }
}
