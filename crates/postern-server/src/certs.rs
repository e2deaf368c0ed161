//! Where the relay's certificate comes from: PEM files given by the operator, or the
//! development CA in the state directory.

use std::path::{Path, PathBuf};

use postern_transport::tls::{load_certs, load_key, server_config, TlsError};

use crate::dev_ca::{self, DevCaError, DevCert};

/// The relay's TLS identity.
#[derive(Debug)]
pub struct RelayIdentity {
    /// Ready-to-use rustls config (ALPN is set by whoever serves with it).
    pub config: rustls::ServerConfig,
    /// Set when the development CA is in use: what clients must trust.
    pub dev: Option<DevCert>,
}

/// Why the certificate could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or parsing PEM files failed, or the key does not match.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The development CA could not be prepared.
    #[error(transparent)]
    DevCa(#[from] DevCaError),
}

/// Loads `cert` and `key` when given, else the development certificate in `state_dir`.
pub fn load(state_dir: &Path, files: Option<(PathBuf, PathBuf)>) -> Result<RelayIdentity, CertError> {
    let (cert, key, dev) = match files {
        Some((cert, key)) => (cert, key, None),
        None => {
            let dev = dev_ca::ensure(state_dir)?;
            (dev.cert.clone(), dev.key.clone(), Some(dev))
        }
    };
    let config = server_config(load_certs(&cert)?, load_key(&key)?, &[])?;
    Ok(RelayIdentity { config, dev })
}
