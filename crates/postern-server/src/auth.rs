//! Who is calling: checks the credential an agent sends in its `Hello`, or a bearer token on the
//! admin API, and says who it belongs to.
//!
//! Credentials, in the order they are tried:
//!
//! - a signed token (`pst1.…`, see `postern_proto::token`), verified offline with the relay's
//!   key: its subject owns the tunnels it opens, and its claims limit ids and ports;
//! - the shared secret (`--token`): subject `shared`, no limits;
//! - the admin token (`--admin-token`), on the admin API only: sees and may do everything;
//! - nothing, when anonymous agents are allowed (a development relay on loopback, or
//!   `--allow-anonymous`): subject `anonymous`, no limits.
//!
//! Secrets are compared as SHA-256 digests in constant time, so neither content nor length
//! leaks through timing. No credential is ever logged.

use std::sync::Arc;

use postern_proto::token::{self, Claims, TokenError, TokenKey};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::revocation::Revocations;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Owner of the tunnels this caller opens; what the API filters on.
    pub subject: String,
    /// Id of the signed token, if one was used.
    pub token_id: Option<String>,
    /// May see and do everything on the admin API.
    pub admin: bool,
    /// The signed token's claims; `None` means no limits beyond the relay's own.
    pub claims: Option<Claims>,
}

impl Identity {
    fn unrestricted(subject: &str) -> Self {
        Self { subject: subject.into(), token_id: None, admin: false, claims: None }
    }

    /// The admin.
    pub fn admin() -> Self {
        Self { subject: "admin".into(), token_id: None, admin: true, claims: None }
    }

    /// True when this caller may open a tunnel with id `id`.
    pub fn may_use_id(&self, id: &str) -> bool {
        self.claims.as_ref().is_none_or(|c| c.allows_id(id))
    }

    /// True when this caller may ask for public port `port` by number.
    pub fn may_request_port(&self, port: u16) -> bool {
        self.claims.as_ref().is_none_or(|c| c.allows_port(port))
    }

    /// True when this caller may see and act on things owned by `owner`.
    pub fn may_access(&self, owner: &str) -> bool {
        self.admin || self.subject == owner
    }
}

/// Why a credential was refused. The message is safe to send to the caller.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No credential, and one is required.
    #[error("this relay requires a token: pass --token or set POSTERN_TOKEN")]
    Missing,
    /// No bearer token on an admin API request.
    #[error(
        "the admin API needs a bearer token (Authorization: Bearer <token>): the relay's admin \
         token (--admin-token, POSTERN_ADMIN_TOKEN), or a client token to see its own tunnels"
    )]
    MissingBearer,
    /// A credential that matches nothing.
    #[error("the token was not accepted by this relay")]
    Invalid,
    /// A signed token that failed verification.
    #[error("{0}")]
    Token(#[from] TokenError),
    /// A signed token that was revoked.
    #[error("the token {0} has been revoked; ask for a new one")]
    Revoked(String),
}

impl AuthError {
    /// Short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Missing | Self::MissingBearer => "missing",
            Self::Invalid => "invalid",
            Self::Token(TokenError::Expired { .. }) => "expired",
            Self::Token(TokenError::BadSignature) => "bad_signature",
            Self::Token(TokenError::Malformed) => "malformed",
            Self::Revoked(_) => "revoked",
        }
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn same(presented: &[u8; 32], want: &Option<[u8; 32]>) -> bool {
    want.as_ref().is_some_and(|w| bool::from(presented.ct_eq(w)))
}

/// Checks credentials.
#[derive(Clone)]
pub struct Authenticator {
    shared: Option<[u8; 32]>,
    admin: Option<[u8; 32]>,
    key: Option<TokenKey>,
    anonymous: bool,
    revoked: Arc<Revocations>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("shared", &self.shared.is_some())
            .field("admin", &self.admin.is_some())
            .field("signed_tokens", &self.key.is_some())
            .field("anonymous", &self.anonymous)
            .finish()
    }
}

impl Authenticator {
    /// Builds the checker. `anonymous` lets agents in without any credential.
    pub fn new(shared: Option<&str>, admin: Option<&str>, key: Option<TokenKey>, anonymous: bool) -> Self {
        Self {
            shared: shared.map(digest),
            admin: admin.map(digest),
            key,
            anonymous,
            revoked: Arc::new(Revocations::in_memory()),
        }
    }

    /// Refuses the token ids in `revoked`.
    pub fn with_revocations(mut self, revoked: Arc<Revocations>) -> Self {
        self.revoked = revoked;
        self
    }

    /// The key signed tokens are checked with.
    pub fn key(&self) -> Option<&TokenKey> {
        self.key.as_ref()
    }

    /// The revocation list.
    pub fn revocations(&self) -> &Arc<Revocations> {
        &self.revoked
    }

    fn signed(&self, presented: &str, now: u64) -> Result<Identity, AuthError> {
        let key = self.key.as_ref().ok_or(AuthError::Invalid)?;
        let claims = key.verify(presented, now)?;
        if self.revoked.is_revoked(&claims.jti) {
            return Err(AuthError::Revoked(claims.jti));
        }
        Ok(Identity {
            subject: claims.sub.clone(),
            token_id: Some(claims.jti.clone()),
            admin: claims.admin,
            claims: Some(claims),
        })
    }

    /// Checks the token in an agent's Hello. `now` is Unix seconds.
    pub fn agent(&self, presented: &str, now: u64) -> Result<Identity, AuthError> {
        if presented.is_empty() {
            return if self.anonymous { Ok(Identity::unrestricted("anonymous")) } else { Err(AuthError::Missing) };
        }
        if token::is_signed(presented) {
            return self.signed(presented, now);
        }
        if same(&digest(presented), &self.shared) {
            return Ok(Identity::unrestricted("shared"));
        }
        if self.anonymous && self.shared.is_none() {
            // An open development relay ignores a stray credential rather than failing on it.
            return Ok(Identity::unrestricted("anonymous"));
        }
        Err(AuthError::Invalid)
    }

    /// Checks a bearer token on the admin API.
    pub fn api(&self, presented: Option<&str>, now: u64) -> Result<Identity, AuthError> {
        let presented = presented.filter(|p| !p.is_empty()).ok_or(AuthError::MissingBearer)?;
        let d = digest(presented);
        if same(&d, &self.admin) {
            return Ok(Identity::admin());
        }
        if token::is_signed(presented) {
            return self.signed(presented, now);
        }
        if same(&d, &self.shared) {
            return Ok(Identity::unrestricted("shared"));
        }
        Err(AuthError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::from_bytes([3; 32])
    }

    fn mint(sub: &str, admin: bool, exp: Option<u64>) -> String {
        let claims = Claims {
            jti: "j".into(),
            sub: sub.into(),
            ids: vec![],
            ports: vec![],
            iat: 0,
            exp,
            admin,
            limits: Default::default(),
            share: false,
        };
        key().sign(&claims).expect("sign")
    }

    #[test]
    fn shared_secret_and_signed_tokens() {
        let a = Authenticator::new(Some("hunter2"), Some("root"), Some(key()), false);
        assert_eq!(a.agent("hunter2", 0).map(|i| i.subject), Ok("shared".into()));
        assert_eq!(a.agent("hunter3", 0), Err(AuthError::Invalid));
        assert_eq!(a.agent("", 0), Err(AuthError::Missing));
        assert_eq!(a.agent(&mint("ws-1", false, None), 0).map(|i| i.subject), Ok("ws-1".into()));
        assert_eq!(
            a.agent(&mint("ws-1", false, Some(10)), 10).map(|i| i.subject),
            Err(AuthError::Token(TokenError::Expired { at: 10 }))
        );
        // The admin token is for the API, not for agents.
        assert_eq!(a.agent("root", 0), Err(AuthError::Invalid));
        assert!(!format!("{a:?}").contains("hunter2"));
    }

    #[test]
    fn api_identities() {
        let a = Authenticator::new(Some("hunter2"), Some("root"), Some(key()), false);
        assert!(a.api(Some("root"), 0).map(|i| i.admin).unwrap_or(false));
        assert_eq!(a.api(None, 0), Err(AuthError::MissingBearer));
        assert_eq!(a.api(Some("nope"), 0), Err(AuthError::Invalid));
        let ws = a.api(Some(&mint("ws-1", false, None)), 0).expect("client");
        assert!(!ws.admin && ws.may_access("ws-1") && !ws.may_access("ws-2"));
        assert!(a.api(Some(&mint("ops", true, None)), 0).map(|i| i.admin).unwrap_or(false));
    }

    #[test]
    fn revoked_tokens_are_refused() {
        let revoked = Arc::new(Revocations::in_memory());
        let a = Authenticator::new(None, None, Some(key()), false).with_revocations(revoked.clone());
        let t = mint("ws-1", false, None);
        assert!(a.agent(&t, 0).is_ok());
        revoked.revoke("j").expect("revoke");
        assert_eq!(a.agent(&t, 0), Err(AuthError::Revoked("j".into())));
        assert_eq!(a.api(Some(&t), 0), Err(AuthError::Revoked("j".into())));
    }

    #[test]
    fn anonymous_only_when_allowed() {
        let open = Authenticator::new(None, None, Some(key()), true);
        assert_eq!(open.agent("", 0).map(|i| i.subject), Ok("anonymous".into()));
        let closed = Authenticator::new(None, None, Some(key()), false);
        assert_eq!(closed.agent("", 0), Err(AuthError::Missing));
        assert_eq!(closed.agent("guess", 0), Err(AuthError::Invalid));
    }
}
