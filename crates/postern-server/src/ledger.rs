//! The ledger of minted tokens: what `GET /api/v1/tokens` and the dashboard list.
//!
//! Every token minted with the relay's state directory, by `postern token mint` or
//! `POST /api/v1/tokens`, is recorded in `<state-dir>/tokens.json`: its claims (id, subject,
//! scope, expiry, limits), its kind and when it was minted, never the token itself. Tokens are
//! still verified by signature alone; the ledger only lets an operator see and revoke what was
//! handed out. It keeps at most [`MAX_ENTRIES`]: when full, expired tokens go first, then the
//! oldest.

use std::path::{Path, PathBuf};

use postern_proto::claims::TokenKind;
use postern_proto::token::Claims;
use serde::{Deserialize, Serialize};

/// Tokens the ledger keeps.
pub const MAX_ENTRIES: usize = 10_000;

const FILE: &str = "tokens.json";

/// One minted token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// What it allows (its id is `claims.jti`).
    pub claims: Claims,
    /// `postern` or `bore`.
    pub kind: String,
    /// When it was minted, Unix seconds.
    pub minted: u64,
}

/// Why the ledger could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The ledger's file.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not a ledger.
    #[error("{path}: not a token ledger: {source}")]
    Corrupt {
        /// The ledger's file.
        path: PathBuf,
        /// What failed.
        source: serde_json::Error,
    },
}

/// The ledger in a state directory. Writers (the relay, the command line) take turns under an
/// exclusive lock on `.tokens.lock`, and write the file atomically, so a reader never sees half
/// of it and no record is lost.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    lock: PathBuf,
}

impl Ledger {
    /// The ledger of `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self { path: state_dir.join(FILE), lock: state_dir.join(".tokens.lock") }
    }

    /// Every recorded token, newest first (none before the first mint).
    pub fn list(&self) -> Result<Vec<Entry>, LedgerError> {
        let text = match std::fs::read(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(LedgerError::Io { path: self.path.clone(), source }),
        };
        let mut list: Vec<Entry> =
            serde_json::from_slice(&text).map_err(|source| LedgerError::Corrupt { path: self.path.clone(), source })?;
        list.sort_by_key(|e| std::cmp::Reverse(e.minted));
        Ok(list)
    }

    /// Records a token minted at `now` (Unix seconds), within [`MAX_ENTRIES`].
    pub fn record(&self, claims: &Claims, kind: TokenKind, now: u64) -> Result<(), LedgerError> {
        let io = |source| LedgerError::Io { path: self.lock.clone(), source };
        if let Some(dir) = self.lock.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let lock = std::fs::File::options().create(true).truncate(false).write(true).open(&self.lock).map_err(io)?;
        lock.lock().map_err(io)?;
        let mut list = self.list()?;
        if list.len() >= MAX_ENTRIES {
            list.retain(|e| e.claims.exp.is_none_or(|exp| exp > now));
            list.truncate(MAX_ENTRIES - 1);
        }
        list.insert(0, Entry { claims: claims.clone(), kind: kind.as_str().to_string(), minted: now });
        let data =
            serde_json::to_vec(&list).map_err(|source| LedgerError::Corrupt { path: self.path.clone(), source })?;
        crate::state_file::write_atomic(&self.path, &data, false)
            .map_err(|source| LedgerError::Io { path: self.path.clone(), source })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_proto::claims::MintRequest;

    fn claims(sub: &str, now: u64, ttl: u64) -> Claims {
        let request = MintRequest { subject: sub.into(), ttl_secs: Some(ttl), ..MintRequest::default() };
        request.claims(postern_proto::token::new_id(rand::random()), now).unwrap()
    }

    #[test]
    fn records_newest_first_and_bounds_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path());
        assert!(ledger.list().unwrap().is_empty());
        ledger.record(&claims("a", 100, 10), TokenKind::Postern, 100).unwrap();
        ledger.record(&claims("b", 200, 1_000_000), TokenKind::Bore, 200).unwrap();
        let list = ledger.list().unwrap();
        assert_eq!(list.iter().map(|e| e.claims.sub.as_str()).collect::<Vec<_>>(), ["b", "a"]);
        assert_eq!(list[0].kind, "bore");
        // At the cap, the expired token goes first.
        let full: Vec<Entry> = (0..MAX_ENTRIES - 2)
            .map(|i| Entry { claims: claims("x", 300, 1_000_000), kind: "postern".into(), minted: 300 + i as u64 })
            .chain(list)
            .collect();
        std::fs::write(dir.path().join(FILE), serde_json::to_vec(&full).unwrap()).unwrap();
        ledger.record(&claims("new", 20_000, 10), TokenKind::Postern, 20_000).unwrap();
        let list = ledger.list().unwrap();
        assert_eq!(list.len(), MAX_ENTRIES);
        assert_eq!(list[0].claims.sub, "new");
        assert!(list.iter().all(|e| e.claims.sub != "a"), "the expired token stayed");
    }
}
