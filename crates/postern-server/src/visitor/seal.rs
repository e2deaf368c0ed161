//! Sealed values: what the relay hands a browser and must get back unchanged and unread (the
//! login flow's cookie, the one-time code, the session cookie).
//!
//! ChaCha20-Poly1305 (*ring*) under a key derived from the token signing key, so every relay of
//! a cluster opens what another sealed. Each value is bound to its **purpose** (and, for a
//! session, its host) as associated data: a code cannot be replayed as a cookie, nor a cookie
//! of one tunnel's host on another's. Text form: base64url(nonce ‖ ciphertext ‖ tag).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use postern_proto::token::TokenKey;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::Sha256;

/// Longest sealed text accepted, checked before decoding.
pub const MAX_SEALED: usize = 4096;

/// Seals and opens values for the browser.
pub struct Sealer {
    key: LessSafeKey,
    mac_key: [u8; 32],
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(<secret>)")
    }
}

impl Sealer {
    /// The sealer of the relay whose token signing key is `key` (HMAC-SHA256 of a fixed label,
    /// so the sealing key is never the signing key itself).
    pub fn new(key: &TokenKey) -> Self {
        let derived = mac(key.as_bytes(), b"postern visitor seal v1");
        let unbound = UnboundKey::new(&CHACHA20_POLY1305, &derived).unwrap_or_else(|_| unreachable!());
        Self { key: LessSafeKey::new(unbound), mac_key: mac(key.as_bytes(), b"postern visitor pass v1") }
    }

    /// An HMAC-SHA256 signature of `data`, base64url (43 characters): what makes share links
    /// and service tokens.
    pub fn sign(&self, data: &str) -> String {
        URL_SAFE_NO_PAD.encode(mac(&self.mac_key, data.as_bytes()))
    }

    /// Checks a [`Sealer::sign`] signature, in constant time.
    pub fn verify(&self, data: &str, signature: &str) -> bool {
        let Ok(sig) = URL_SAFE_NO_PAD.decode(signature) else { return false };
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(&self.mac_key).unwrap_or_else(|_| unreachable!());
        m.update(data.as_bytes());
        m.verify_slice(&sig).is_ok()
    }

    /// Seals `value` for `purpose`.
    pub fn seal<T: Serialize>(&self, purpose: &str, value: &T) -> String {
        let mut buf = serde_json::to_vec(value).unwrap_or_default();
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = Nonce::assume_unique_for_key(nonce_bytes);
        // Sealing a buffer in memory cannot fail for lengths far below 2^32 blocks.
        let _ = self.key.seal_in_place_append_tag(nonce, Aad::from(purpose.as_bytes()), &mut buf);
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&buf);
        URL_SAFE_NO_PAD.encode(out)
    }

    /// Opens what [`Sealer::seal`] made for the same `purpose`; `None` for anything forged,
    /// altered, sealed for another purpose, or too long.
    pub fn open<T: DeserializeOwned>(&self, purpose: &str, sealed: &str) -> Option<T> {
        if sealed.len() > MAX_SEALED {
            return None;
        }
        let raw = URL_SAFE_NO_PAD.decode(sealed).ok()?;
        if raw.len() < NONCE_LEN {
            return None;
        }
        let (nonce, rest) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
        let mut buf = rest.to_vec();
        let plain = self.key.open_in_place(nonce, Aad::from(purpose.as_bytes()), &mut buf).ok()?;
        serde_json::from_slice(plain).ok()
    }
}

fn mac(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes keys of any length; it cannot fail.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    m.update(data);
    m.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tampering() {
        let s = Sealer::new(&TokenKey::from_bytes([7; 32]));
        let sealed = s.seal("session:a.localhost", &("alice", 42u64));
        assert_eq!(s.open::<(String, u64)>("session:a.localhost", &sealed), Some(("alice".into(), 42)));
        // Another purpose, another host, another key: nothing.
        assert_eq!(s.open::<(String, u64)>("session:b.localhost", &sealed), None);
        assert_eq!(s.open::<(String, u64)>("code", &sealed), None);
        let other = Sealer::new(&TokenKey::from_bytes([8; 32]));
        assert_eq!(other.open::<(String, u64)>("session:a.localhost", &sealed), None);
        // Any flipped bit fails.
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).expect("base64");
        for i in 0..raw.len() {
            raw[i] ^= 1;
            assert_eq!(s.open::<(String, u64)>("session:a.localhost", &URL_SAFE_NO_PAD.encode(&raw)), None);
            raw[i] ^= 1;
        }
        assert_eq!(s.open::<(String, u64)>("x", "not base64!"), None);
        assert_eq!(s.open::<(String, u64)>("x", ""), None);
        assert_eq!(s.open::<(String, u64)>("x", &"A".repeat(MAX_SEALED + 1)), None);
        let sig = s.sign("share|1|t");
        assert!(s.verify("share|1|t", &sig));
        assert!(!s.verify("share|1|u", &sig));
        assert!(!other.verify("share|1|t", &sig));
        assert!(!s.verify("share|1|t", "!!"));
        // Two seals of one value differ (random nonces).
        assert_ne!(s.seal("p", &1), s.seal("p", &1));
    }
}
