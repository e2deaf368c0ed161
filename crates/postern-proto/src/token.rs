//! Signed, scoped tokens, verified offline by the relay.
//!
//! ```text
//! pst1.<payload>.<signature>
//!      payload   = base64url(JSON claims), no padding
//!      signature = base64url(HMAC-SHA256(key, "pst1." + payload)), no padding
//! ```
//!
//! The key is 32 random bytes the relay keeps in its state directory. Anyone can read the claims
//! (they are not secret: the client uses `sub` as its default id); only the relay can make or
//! check a signature. Verification is constant-time (the `hmac` crate's `verify_slice`) and checks
//! expiry against a time the caller supplies, so this module stays free of clocks and I/O.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub use crate::claims::{Claims, Limits};

/// Prefix and format version of every token.
pub const PREFIX: &str = "pst1.";
/// Longest token accepted, checked before any decoding.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The length of the token `claims` sign into (the prefix, the claims in base64, a dot and the
/// 43 characters of the HMAC-SHA256 signature), whatever the key.
pub fn signed_len(claims: &Claims) -> usize {
    let json = serde_json::to_vec(claims).map_or(usize::MAX / 2, |j| j.len());
    PREFIX.len() + base64::encoded_len(json, false).unwrap_or(usize::MAX / 2) + 1 + 43
}

/// Why a token was not accepted. Safe to show to the token's holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the form `pst1.<payload>.<signature>`, or too long.
    #[error("the token is malformed")]
    Malformed,
    /// The signature does not match: forged, altered, or from another relay.
    #[error("the token's signature is not valid for this relay")]
    BadSignature,
    /// Past its expiry.
    #[error("the token expired at {at} (Unix time); ask for a new one")]
    Expired {
        /// Expiry, Unix seconds.
        at: u64,
    },
}

/// The relay's signing key.
#[derive(Clone)]
pub struct TokenKey([u8; 32]);

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<secret>)")
    }
}

impl TokenKey {
    /// A key from 32 secret bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret bytes, for storing.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn mac(&self, signed: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length; 32 bytes cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).unwrap_or_else(|_| unreachable!());
        mac.update(signed);
        mac
    }

    /// Signs `claims` into a token string.
    pub fn sign(&self, claims: &Claims) -> Result<String, serde_json::Error> {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?);
        let signed = format!("{PREFIX}{payload}");
        let sig = URL_SAFE_NO_PAD.encode(self.mac(signed.as_bytes()).finalize().into_bytes());
        Ok(format!("{signed}.{sig}"))
    }

    /// Verifies `token` and returns its claims. `now` is Unix seconds.
    pub fn verify(&self, token: &str, now: u64) -> Result<Claims, TokenError> {
        let claims_b64 = split(token)?;
        let (signed, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| TokenError::Malformed)?;
        self.mac(signed.as_bytes()).verify_slice(&sig).map_err(|_| TokenError::BadSignature)?;
        let claims: Claims = decode_claims(claims_b64)?;
        match claims.exp {
            Some(at) if now >= at => Err(TokenError::Expired { at }),
            _ => Ok(claims),
        }
    }
}

fn split(token: &str) -> Result<&str, TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed);
    }
    let rest = token.strip_prefix(PREFIX).ok_or(TokenError::Malformed)?;
    let (payload, sig) = rest.split_once('.').ok_or(TokenError::Malformed)?;
    if payload.is_empty() || sig.is_empty() || sig.contains('.') {
        return Err(TokenError::Malformed);
    }
    Ok(payload)
}

fn decode_claims(payload: &str) -> Result<Claims, TokenError> {
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)
}

/// The id of a new token, from 64 random bits: 16 lowercase hexadecimal digits.
pub fn new_id(random: u64) -> String {
    format!("{random:016x}")
}

/// True when `id` has the form of a token id ([`new_id`]).
pub fn is_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True when `token` looks like a signed token (as opposed to a shared secret).
pub fn is_signed(token: &str) -> bool {
    token.starts_with(PREFIX)
}

/// Reads the claims without checking the signature: for the token's holder (the client uses
/// `sub` as its default id). Never use this to make an access decision.
pub fn peek(token: &str) -> Result<Claims, TokenError> {
    decode_claims(split(token)?)
}

/// `*`-glob match: `*` matches any run of characters (including none); everything else matches
/// itself, ASCII case-insensitively.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && p[pi] != b'*' && p[pi].eq_ignore_ascii_case(&t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            jti: "t1".into(),
            sub: "ws-123".into(),
            ids: vec!["ws-123*".into()],
            ports: vec!["20000-20009".into(), "5432".into()],
            iat: 1_000,
            exp: Some(2_000),
            admin: false,
            limits: Limits { max_tunnels: Some(2), ..Limits::default() },
            share: false,
        }
    }

    #[test]
    fn sign_verify_roundtrip() {
        let key = TokenKey::from_bytes([7; 32]);
        let token = key.sign(&claims()).expect("sign");
        assert!(token.starts_with("pst1."));
        assert_eq!(key.verify(&token, 1_500), Ok(claims()));
        assert_eq!(peek(&token), Ok(claims()));
    }

    #[test]
    fn rejects_tampering_other_keys_and_expiry() {
        let key = TokenKey::from_bytes([7; 32]);
        let token = key.sign(&claims()).expect("sign");
        assert_eq!(TokenKey::from_bytes([8; 32]).verify(&token, 1_500), Err(TokenError::BadSignature));
        assert_eq!(key.verify(&token, 2_000), Err(TokenError::Expired { at: 2_000 }));
        // Swap in other claims under the old signature.
        let mut forged = claims();
        forged.admin = true;
        let other = key.sign(&forged).expect("sign");
        let (_, sig) = token.rsplit_once('.').expect("sig");
        let (head, _) = other.rsplit_once('.').expect("sig");
        assert_eq!(key.verify(&format!("{head}.{sig}"), 1_500), Err(TokenError::BadSignature));
        for bad in ["", "pst1.", "pst1..", "pst1.abc", "pst2.a.b", "pst1.a.b.c", "shared-secret"] {
            assert!(key.verify(bad, 1_500).is_err(), "{bad:?}");
        }
        assert_eq!(key.verify(&"x".repeat(MAX_TOKEN_LEN + 1), 0), Err(TokenError::Malformed));
    }

    #[test]
    fn scopes() {
        let c = claims();
        assert!(c.allows_id("ws-123") && c.allows_id("ws-123-api") && !c.allows_id("ws-124"));
        assert!(c.allows_port(20005) && c.allows_port(5432) && !c.allows_port(20010));
        let bare = Claims { ids: vec![], ..claims() };
        assert!(bare.allows_id("ws-123") && !bare.allows_id("ws-123-x"));
    }

    #[test]
    fn glob_matching() {
        for (p, t, want) in [
            ("*", "", true),
            ("ws-*", "ws-1", true),
            ("ws-*", "ws-", true),
            ("ws-*", "w", false),
            ("*-api", "ws-1-api", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("WS-*", "ws-9", true),
            ("exact", "exact", true),
            ("exact", "exact2", false),
        ] {
            assert_eq!(glob(p, t), want, "{p} vs {t}");
        }
    }
}
