//! The token signing key in the state directory, created on first start.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use postern_proto::token::TokenKey;
use rand::RngCore;

/// File name of the key inside `--state-dir`.
pub const KEY_FILE: &str = "token.key";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The file could not be read or written.
    #[error("token key {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file exists but is not 64 hex digits.
    #[error("token key {0} is corrupt: expected 64 hex digits; restore it from a backup (deleting it invalidates every token)")]
    Corrupt(PathBuf),
}

/// Loads `<state_dir>/token.key`, creating it (mode 0600) with 32 random bytes if missing.
pub fn load_or_create(state_dir: &Path) -> Result<TokenKey, KeyError> {
    let path = state_dir.join(KEY_FILE);
    let io = |source| KeyError::Io { path: path.clone(), source };
    match fs::read_to_string(&path) {
        Ok(text) => parse(text.trim()).ok_or_else(|| KeyError::Corrupt(path.clone())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(state_dir).map_err(io)?;
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            match opts.open(&path) {
                Ok(mut f) => {
                    f.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
                    f.sync_all().map_err(io)?;
                    Ok(TokenKey::from_bytes(bytes))
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(state_dir),
                Err(e) => Err(io(e)),
            }
        }
        Err(e) => Err(io(e)),
    }
}

/// Loads the key in `path` (`--token-key`, shared by the relays of a cluster); it must exist.
pub fn load(path: &Path) -> Result<TokenKey, KeyError> {
    let text = fs::read_to_string(path).map_err(|source| KeyError::Io { path: path.to_path_buf(), source })?;
    parse(text.trim()).ok_or_else(|| KeyError::Corrupt(path.to_path_buf()))
}

fn parse(hex: &str) -> Option<TokenKey> {
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in hex.as_bytes().chunks(2).enumerate() {
        out[i] = u8::from_str_radix(std::str::from_utf8(chunk).ok()?, 16).ok()?;
    }
    Some(TokenKey::from_bytes(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("postern-key-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let a = load_or_create(&dir).expect("create");
        let b = load_or_create(&dir).expect("load");
        assert_eq!(a.as_bytes(), b.as_bytes());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(dir.join(KEY_FILE)).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(dir.join(KEY_FILE), "zz").expect("write");
        assert!(matches!(load_or_create(&dir), Err(KeyError::Corrupt(_))));
        let _ = fs::remove_dir_all(&dir);
    }
}
