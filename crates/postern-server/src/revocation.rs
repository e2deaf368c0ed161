//! Revoked token ids, persisted in `<state-dir>/revoked.json`.
//!
//! The relay refuses a revoked token at once and disconnects the sessions opened with it. Ids
//! can be revoked through the admin API (which writes the file) or with `postern token revoke`
//! while the relay runs (which writes the file; the relay notices within a second).
//!
//! ```json
//! {"revoked": [{"id": "9c1e55d0a4b3f2e1", "at": "2026-11-23T17:00:00Z"}]}
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, RwLock};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name inside the state directory.
pub const FILE: &str = "revoked.json";

/// Most ids the list holds (about 6 MB of JSON); revoking past it is refused until the
/// operator prunes the file. Token ids are random, so the list cannot be filled by accident.
pub const MAX_REVOKED: usize = 100_000;

/// Why the revocation list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum RevocationError {
    /// File system error.
    #[error("revocation list {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The list holds [`MAX_REVOKED`] ids already.
    #[error("the revocation list is full ({MAX_REVOKED} ids); prune {path} of tokens that have expired")]
    Full {
        /// The file.
        path: PathBuf,
    },
    /// The file is not the expected JSON.
    #[error("revocation list {path} is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct OnDisk {
    revoked: Vec<Entry>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    id: String,
    at: String,
}

/// The set of revoked token ids.
#[derive(Debug)]
pub struct Revocations {
    path: Option<PathBuf>,
    ids: RwLock<BTreeMap<String, String>>,
    seen: Mutex<Option<[u8; 32]>>,
}

impl Revocations {
    /// An empty list kept only in memory.
    pub fn in_memory() -> Self {
        Self { path: None, ids: RwLock::default(), seen: Mutex::new(None) }
    }

    /// Loads `<state_dir>/revoked.json` (missing means empty).
    pub fn load(state_dir: &Path) -> Result<Self, RevocationError> {
        let this = Self { path: Some(state_dir.join(FILE)), ids: RwLock::default(), seen: Mutex::new(None) };
        this.refresh()?;
        Ok(this)
    }

    /// True when `id` is revoked.
    pub fn is_revoked(&self, id: &str) -> bool {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).contains_key(id)
    }

    /// Number of revoked ids.
    pub fn len(&self) -> usize {
        self.ids.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// True when nothing is revoked.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Revokes `id` and persists the list. Returns false when it was already revoked.
    pub fn revoke(&self, id: &str) -> Result<bool, RevocationError> {
        // Merge what another process (the CLI) may have written first.
        self.refresh()?;
        let at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let added = {
            let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
            if ids.len() >= MAX_REVOKED && !ids.contains_key(id) {
                return Err(RevocationError::Full { path: self.path.clone().unwrap_or_default() });
            }
            ids.insert(id.to_string(), at).is_none()
        };
        if added {
            self.persist()?;
        }
        Ok(added)
    }

    /// Re-reads the file if its content changed; returns the ids revoked since the last read.
    pub fn refresh(&self) -> Result<Vec<String>, RevocationError> {
        let Some(path) = &self.path else { return Ok(Vec::new()) };
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(source) => return Err(RevocationError::Io { path: path.clone(), source }),
        };
        let fingerprint: [u8; 32] = Sha256::digest(&bytes).into();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == Some(fingerprint) {
            return Ok(Vec::new());
        }
        let disk: OnDisk = if bytes.is_empty() {
            OnDisk::default()
        } else {
            serde_json::from_slice(&bytes)
                .map_err(|e| RevocationError::Corrupt { path: path.clone(), reason: e.to_string() })?
        };
        let mut ids = self.ids.write().unwrap_or_else(|p| p.into_inner());
        let mut new = Vec::new();
        for e in disk.revoked {
            if let std::collections::btree_map::Entry::Vacant(slot) = ids.entry(e.id.clone()) {
                slot.insert(e.at);
                new.push(e.id);
            }
        }
        *seen = Some(fingerprint);
        Ok(new)
    }

    fn persist(&self) -> Result<(), RevocationError> {
        let Some(path) = &self.path else { return Ok(()) };
        let disk = OnDisk {
            revoked: self
                .ids
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .map(|(id, at)| Entry { id: id.clone(), at: at.clone() })
                .collect(),
        };
        let bytes = serde_json::to_vec_pretty(&disk).unwrap_or_default();
        let io = |source| RevocationError::Io { path: path.clone(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, &bytes).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)?;
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Sha256::digest(&bytes).into());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn persists_and_merges_across_processes() {
        let dir = std::env::temp_dir().join(format!("postern-revoke-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let relay = Revocations::load(&dir).expect("load");
        assert!(relay.revoke("a").expect("revoke"));
        assert!(!relay.revoke("a").expect("again"));
        // Another process (the CLI) revokes b.
        let cli = Revocations::load(&dir).expect("load");
        assert!(cli.is_revoked("a"));
        cli.revoke("b").expect("revoke");
        assert_eq!(relay.refresh().expect("refresh"), vec!["b".to_string()]);
        assert!(relay.is_revoked("b"));
        assert!(relay.refresh().expect("unchanged").is_empty());
        std::fs::write(dir.join(FILE), "{not json").expect("write");
        assert!(matches!(relay.refresh(), Err(RevocationError::Corrupt { .. })));
        assert!(relay.is_revoked("a"), "a corrupt file keeps the list in memory");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
