//! Public access rules a client can put on its own tunnel, as carried in the `Hello`.
//!
//! Secrets never travel or rest in clear: the client sends `sha256:<salt hex>:<digest hex>`
//! where digest = SHA-256(salt ‖ secret), and the relay compares digests in constant time. The
//! salts are random per rule, so equal passwords do not look equal.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Access rules for one tunnel. Empty means public.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Access {
    /// HTTP basic-auth users, each `user:sha256:<salt>:<digest>`. Any one may pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub basic_auth: Vec<String>,
    /// A header every request must carry with a given value (for example
    /// `Authorization: Bearer …` or `X-Api-Key: …`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<HeaderRule>,
    /// Source addresses allowed (IPs or CIDRs); empty allows all. Applies to TCP tunnels too.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_ips: Vec<String>,
    /// Visitors must sign in (HTTP only): through the relay's identity provider, a share link
    /// or a service token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<Login>,
}

/// The sign-in a tunnel requires.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// E-mail addresses let in (`*` globs, e.g. `*@example.com`), besides those granted through
    /// the admin API. Empty: only granted addresses, share links and service tokens.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub emails: Vec<String>,
}

/// Most e-mail patterns one tunnel may carry.
pub const MAX_EMAIL_PATTERNS: usize = 64;

/// Checks an e-mail pattern: an address, or one with `*` globs, at most 254 characters, with
/// one `@` and no spaces or control characters.
pub fn valid_email_pattern(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 254
        && p.matches('@').count() == 1
        && p.chars().all(|c| c.is_ascii_graphic() || (!c.is_ascii() && !c.is_control()))
}

impl Access {
    /// True when there is no rule at all.
    pub fn is_public(&self) -> bool {
        *self == Self::default()
    }
}

/// A required header and its hashed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderRule {
    /// Header name, lowercase.
    pub name: String,
    /// `sha256:<salt>:<digest>` of the exact value.
    pub value: String,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

/// Hashes `secret` with `salt` into the stored form `sha256:<salt>:<digest>`.
pub fn hash_secret(secret: &str, salt: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(secret.as_bytes());
    format!("sha256:{}:{}", hex(salt), hex(&h.finalize()))
}

/// True when `stored` is a well-formed hash.
pub fn is_hash(stored: &str) -> bool {
    let mut parts = stored.splitn(3, ':');
    parts.next() == Some("sha256")
        && parts.next().and_then(unhex).is_some_and(|s| !s.is_empty())
        && parts.next().and_then(unhex).is_some_and(|d| d.len() == 32)
}

/// Checks `presented` against a stored hash, in constant time.
pub fn verify_secret(stored: &str, presented: &str) -> bool {
    let mut parts = stored.splitn(3, ':');
    let (Some("sha256"), Some(salt), Some(digest)) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let (Some(salt), Some(digest)) = (unhex(salt), unhex(digest)) else { return false };
    let mut h = Sha256::new();
    h.update(&salt);
    h.update(presented.as_bytes());
    bool::from(h.finalize().as_slice().ct_eq(&digest))
}

/// Splits a basic-auth rule `user:sha256:<salt>:<digest>` into user and hash.
pub fn split_basic(rule: &str) -> Option<(&str, &str)> {
    let (user, hash) = rule.split_once(':')?;
    (!user.is_empty() && is_hash(hash)).then_some((user, hash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let stored = hash_secret("s3cret", &[1, 2, 3, 4]);
        assert!(is_hash(&stored));
        assert!(verify_secret(&stored, "s3cret"));
        assert!(!verify_secret(&stored, "s3cret "));
        assert!(!verify_secret("sha256:zz:00", "x"));
        assert!(!verify_secret("md5:01:02", "x"));
        let rule = format!("alice:{stored}");
        assert_eq!(split_basic(&rule), Some(("alice", stored.as_str())));
        assert_eq!(split_basic("alice:plaintext"), None);
    }
}
