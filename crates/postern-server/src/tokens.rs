//! Minting and revoking tokens: the one path behind `postern token mint|revoke` and
//! `POST|DELETE /api/v1/tokens`, so the command line and the API accept and refuse the same
//! things with the same messages.
//!
//! The request and its validation are in `postern_proto::mint`; here the token gets its id,
//! is signed with the relay's key, and a bore token is recorded for the bore endpoint.

use std::path::{Path, PathBuf};

use clap::Args;
use postern_proto::mint::{MintError, MintRequest, TokenKind};
use postern_proto::token::{self, Claims, Limits, TokenKey};

use crate::revocation::{RevocationError, Revocations};

/// `postern token mint`: the flags of a [`MintRequest`].
#[derive(Debug, Args)]
pub struct MintArgs {
    /// Who the token is for; owns the tunnels it opens and is its default tunnel id
    #[arg(long)]
    pub subject: String,
    /// Tunnel id patterns it may register (`*` matches anything), repeatable [default: exactly
    /// the subject]
    #[arg(long = "ids", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Public TCP ports it may ask for by number (`20000`, `20000-20099`), repeatable [default:
    /// none; the relay still assigns ports from its range]
    #[arg(long = "ports", value_delimiter = ',')]
    pub ports: Vec<String>,
    /// Lifetime, e.g. 30d, 12h (above zero); `never` for a token that does not expire
    #[arg(long, default_value = "30d")]
    pub ttl: String,
    /// Grant full access to the admin API
    #[arg(long)]
    pub admin: bool,
    /// Let several clients with this subject serve the same names at once (load balanced)
    #[arg(long)]
    pub share: bool,
    /// Quota: tunnels open at once
    #[arg(long)]
    pub max_tunnels: Option<u32>,
    /// Quota: streams (TCP connections, HTTP requests) open at once
    #[arg(long)]
    pub max_streams: Option<u32>,
    /// Quota: bytes per second in each direction, across all its tunnels
    #[arg(long)]
    pub bandwidth: Option<u64>,
    /// Quota: HTTP requests per second across all its tunnels
    #[arg(long = "rps")]
    pub requests_per_sec: Option<u32>,
    /// `postern` (for the postern client) or `bore`: also usable as `bore local --secret <token>`
    /// against the relay's --bore-addr (recorded in the state directory so the relay can check
    /// bore's challenge)
    #[arg(long, default_value = "postern", value_parser = ["postern", "bore"])]
    pub kind: String,
    /// The relay's state directory (holds token.key, created if missing)
    #[arg(long, env = "POSTERN_STATE_DIR", default_value = "postern-state")]
    pub state_dir: PathBuf,
}

impl MintArgs {
    /// The request the flags describe.
    pub fn request(&self) -> Result<MintRequest, MintError> {
        let (ttl_secs, never_expires) = match self.ttl.trim() {
            "never" => (None, true),
            ttl => {
                let d = humantime::parse_duration(ttl).map_err(|e| MintError::Invalid {
                    field: "ttl",
                    reason: format!("{ttl:?} is not a duration like 30d or 12h: {e}"),
                })?;
                (Some(d.as_secs()), false)
            }
        };
        Ok(MintRequest {
            subject: self.subject.clone(),
            ids: self.ids.clone(),
            ports: self.ports.clone(),
            ttl_secs,
            never_expires,
            admin: self.admin,
            limits: Limits {
                max_tunnels: self.max_tunnels,
                max_streams: self.max_streams,
                bandwidth: self.bandwidth,
                requests_per_sec: self.requests_per_sec,
            },
            share: self.share,
            kind: if self.kind == "bore" { TokenKind::Bore } else { TokenKind::Postern },
        })
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
}

/// Validates `request`, signs it with `key` and, for a bore token, records it in `state_dir`.
/// `now` is Unix seconds.
pub fn mint(key: &TokenKey, request: &MintRequest, state_dir: Option<&Path>, now: u64) -> Result<Minted, TokenFault> {
    let claims = request.claims(token::new_id(rand::random()), now)?;
    let token = key.sign(&claims)?;
    if request.kind == TokenKind::Bore {
        let dir = state_dir.ok_or(TokenFault::NoStateDir)?;
        crate::bore::secrets::add(dir, &token).map_err(TokenFault::Record)?;
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
