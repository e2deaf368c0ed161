//! Checks an agent's credential.
//!
//! Today the relay knows one shared secret (or none, in development). The comparison hashes both
//! sides with SHA-256 and compares the digests in constant time, so neither the content nor the
//! length of the secret leaks through timing. Signed, scoped tokens plug in here later.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Who may open tunnels.
#[derive(Clone)]
pub enum Authenticator {
    /// Anyone (development relays on loopback).
    Open,
    /// Holders of this secret, stored as its SHA-256 digest.
    SharedSecret([u8; 32]),
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Open => f.write_str("Open"),
            Self::SharedSecret(_) => f.write_str("SharedSecret(<redacted>)"),
        }
    }
}

/// Why a credential was refused. The message is safe to send to the agent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    /// No token was sent but one is required.
    #[error("this relay requires a token: pass --token or set POSTERN_TOKEN")]
    Missing,
    /// The token does not match.
    #[error("the token was not accepted by this relay")]
    Invalid,
}

impl Authenticator {
    /// Builds the authenticator for an optional shared secret.
    pub fn new(token: Option<&str>) -> Self {
        match token {
            None => Self::Open,
            Some(t) => Self::SharedSecret(Sha256::digest(t.as_bytes()).into()),
        }
    }

    /// Checks a presented token.
    pub fn check(&self, presented: &str) -> Result<(), AuthError> {
        match self {
            Self::Open => Ok(()),
            Self::SharedSecret(_) if presented.is_empty() => Err(AuthError::Missing),
            Self::SharedSecret(want) => {
                let got: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                if bool::from(got.ct_eq(want)) {
                    Ok(())
                } else {
                    Err(AuthError::Invalid)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_secret() {
        let a = Authenticator::new(Some("hunter2"));
        assert_eq!(a.check("hunter2"), Ok(()));
        assert_eq!(a.check("hunter3"), Err(AuthError::Invalid));
        assert_eq!(a.check(""), Err(AuthError::Missing));
        assert!(!format!("{a:?}").contains("hunter2"));
        assert_eq!(Authenticator::new(None).check("anything"), Ok(()));
    }
}
