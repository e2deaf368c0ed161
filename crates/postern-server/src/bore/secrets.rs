//! Which secrets a bore client may use: the relay's shared `--token`, and tokens minted with
//! `--kind bore` (`postern token mint --kind bore`, or `"kind": "bore"` on the token API).
//!
//! bore never sends its secret, only an HMAC keyed with its SHA-256, so the relay must know
//! each candidate. Minting a bore token therefore records it in
//! `<state-dir>/bore-tokens.json` (mode 0600, like the signing key next to it). The relay
//! re-reads the file when it changes, so tokens minted by the CLI work at once; a matching token
//! is then checked like any other (signature, expiry, revocation) and gives its subject and
//! port permissions to the bore tunnel.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

/// The store's file name inside the state directory.
pub const FILE: &str = "bore-tokens.json";

/// Most tokens kept; minting past it drops the oldest.
const MAX_TOKENS: usize = 10_000;

/// Records `token` as usable by bore clients.
pub fn add(state_dir: &Path, token: &str) -> std::io::Result<()> {
    let path = state_dir.join(FILE);
    let mut tokens = read(&path)?;
    if !tokens.iter().any(|t| t == token) {
        tokens.push(token.to_string());
    }
    if tokens.len() > MAX_TOKENS {
        let extra = tokens.len() - MAX_TOKENS;
        tokens.drain(..extra);
    }
    let json = serde_json::to_vec_pretty(&tokens).map_err(std::io::Error::other)?;
    crate::state_file::write_atomic(&path, &json, true)
}

fn read(path: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| std::io::Error::other(format!("{}: not a JSON list of tokens: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// A recorded token and its HMAC key (SHA-256 of it).
pub type Candidate = (String, [u8; 32]);

/// The file's modification time and length when it was last read.
type Stamp = Option<(SystemTime, u64)>;

/// The relay's view of the store, re-read when the file changes.
#[derive(Debug)]
pub struct BoreSecrets {
    path: Option<PathBuf>,
    cached: Mutex<(Stamp, Vec<Candidate>)>,
}

impl BoreSecrets {
    /// The store in `state_dir` (none: only the shared token).
    pub fn new(state_dir: Option<&Path>) -> Self {
        Self { path: state_dir.map(|d| d.join(FILE)), cached: Mutex::new((None, Vec::new())) }
    }

    /// Every recorded token with its HMAC key, reloading if the file changed.
    pub fn tokens(&self) -> Vec<Candidate> {
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let Some(path) = &self.path else { return Vec::new() };
        let stamp = std::fs::metadata(path).ok().map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
        if stamp != cached.0 {
            let tokens = match read(path) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(error = %e, "bore tokens could not be read; keeping the previous list");
                    return cached.1.clone();
                }
            };
            *cached = (stamp, tokens.into_iter().map(|t| (t.clone(), postern_proto::bore::key(&t))).collect());
        }
        cached.1.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_are_seen_without_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = BoreSecrets::new(Some(dir.path()));
        assert!(store.tokens().is_empty());
        add(dir.path(), "pst1.a.b").unwrap();
        add(dir.path(), "pst1.a.b").unwrap();
        add(dir.path(), "pst1.c.d").unwrap();
        let tokens: Vec<String> = store.tokens().into_iter().map(|(t, _)| t).collect();
        assert_eq!(tokens, ["pst1.a.b", "pst1.c.d"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(dir.path().join(FILE)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
