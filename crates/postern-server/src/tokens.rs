//! Minting and revoking tokens: the one path behind `postern token mint|revoke` and
//! `POST|DELETE /api/v1/tokens`, so the command line and the API accept and refuse the same
//! things with the same messages.
//!
//! The request and its validation are in `postern_proto::claims`; here the token gets its id,
//! is signed with the relay's key and recorded in the ledger of minted tokens, and a bore token
//! is recorded for the bore endpoint.

use std::path::{Path, PathBuf};

use clap::Args;
use postern_proto::claims::{MintError, MintRequest, TokenKind};
use postern_proto::token::{self, Claims, TokenKey};

use crate::ledger::{Ledger, LedgerError};
use crate::revocation::{RevocationError, Revocations};

/// `postern token mint`: the mint request's flags, its lifetime and where the key is.
#[derive(Debug, Args)]
pub struct MintArgs {
    #[command(flatten)]
    pub request: MintRequest,
    /// Lifetime, e.g. 30d, 12h (above zero); `never` for a token that does not expire
    #[arg(long, default_value = "30d")]
    pub ttl: String,
    /// The relay's state directory (holds token.key, created if missing)
    #[arg(long, env = "POSTERN_STATE_DIR", default_value = "postern-state")]
    pub state_dir: PathBuf,
}

impl MintArgs {
    /// The request the flags describe, its lifetime from `--ttl`.
    pub fn request(&self) -> Result<MintRequest, MintError> {
        let mut request = self.request.clone();
        match self.ttl.trim() {
            "never" => request.never_expires = true,
            ttl => {
                let d = humantime::parse_duration(ttl).map_err(|e| MintError::Invalid {
                    field: "ttl",
                    reason: format!("{ttl:?} is not a duration like 30d or 12h: {e}"),
                })?;
                request.ttl_secs = Some(d.as_secs());
            }
        }
        Ok(request)
    }

    /// Mints the token with the key in the state directory (created if missing).
    pub fn mint(&self) -> Result<Minted, TokenFault> {
        let request = self.request()?;
        let key = crate::keys::load_or_create(&self.state_dir)?;
        mint(&key, &request, Some(&self.state_dir), crate::clock::unix_secs())
    }
}

/// A freshly signed token.
#[derive(Debug, Clone)]
pub struct Minted {
    /// The token string, to hand to the client.
    pub token: String,
    /// What it allows.
    pub claims: Claims,
    /// What it is for.
    pub kind: TokenKind,
}

/// Why a token could not be minted or revoked.
#[derive(Debug, thiserror::Error)]
pub enum TokenFault {
    /// The request is not acceptable (the caller's fault).
    #[error(transparent)]
    Invalid(#[from] MintError),
    /// A bore token needs a state directory to be recorded in.
    #[error("bore tokens need a state directory to be recorded in")]
    NoStateDir,
    /// The claims could not be serialized (the relay's fault).
    #[error("signing the token: {0}")]
    Sign(#[from] serde_json::Error),
    /// The bore token could not be recorded.
    #[error("recording the bore token: {0}")]
    Record(#[source] std::io::Error),
    /// Not a token id postern ever hands out.
    #[error("{0:?} is not a token id (ids are 16 hexadecimal digits)")]
    UnknownId(String),
    /// The revocation list could not be updated.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// The signing key could not be read or created.
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    /// The token could not be recorded in the ledger.
    #[error("recording the token in the ledger: {0}")]
    Ledger(#[from] LedgerError),
}

/// Validates `request`, signs it with `key`, records it in `state_dir`'s ledger
/// ([`crate::ledger`]) and, for a bore token, for the bore endpoint.
/// `now` is Unix seconds.
pub fn mint(key: &TokenKey, request: &MintRequest, state_dir: Option<&Path>, now: u64) -> Result<Minted, TokenFault> {
    let claims = request.claims(token::new_id(rand::random()), now)?;
    let token = key.sign(&claims)?;
    if request.kind == TokenKind::Bore {
        let dir = state_dir.ok_or(TokenFault::NoStateDir)?;
        crate::bore::secrets::add(dir, &token).map_err(TokenFault::Record)?;
    }
    if let Some(dir) = state_dir {
        Ledger::new(dir).record(&claims, request.kind, now)?;
    }
    Ok(Minted { token, claims, kind: request.kind })
}

/// Revokes token `id`. Returns false when it was already revoked. Only ids of the form postern
/// mints are taken: tokens are minted offline too, so the relay cannot know every id, but the
/// list (bounded, see [`crate::revocation`]) never fills with strings no token could have.
pub fn revoke(list: &Revocations, id: &str) -> Result<bool, TokenFault> {
    if !token::is_id(id) {
        return Err(TokenFault::UnknownId(id.chars().take(64).collect()));
    }
    Ok(list.revoke(id)?)
}
