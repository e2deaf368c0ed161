//! The relay's certificates, chosen by SNI and reloadable without dropping anything.
//!
//! Sources, in lookup order for a TLS ClientHello's server name:
//!
//! 1. extra certificates from `--tls-dir` and those ACME got (`<state-dir>/acme/live`, see
//!    [`crate::acme`]), by exact name, then by wildcard;
//! 2. the main certificate: `--tls-cert`/`--tls-key` (e.g. certbot's DNS-01 wildcard
//!    `fullchain.pem` and `privkey.pem`, used as they are), or the development certificate for
//!    `localhost` and `*.localhost` created in `--state-dir`.
//!
//! `--tls-dir` holds one sub-directory per certificate with `fullchain.pem` and `privkey.pem`
//! inside: exactly the layout of `/etc/letsencrypt/live/`. Names come from each certificate's
//! subject alternative names.
//!
//! [`CertResolver::reload`] re-reads everything and swaps it in atomically; on any error the old
//! set stays. New handshakes use the new set; live connections and tunnels are untouched.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use postern_transport::tls::{load_certs, load_key, provider, TlsError};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;
use sha2::{Digest, Sha256};

use crate::dev_ca::{self, DevCaError, DevCert, DevIssuer};

/// Where the certificates come from.
#[derive(Debug, Clone)]
pub struct CertSource {
    /// State directory, for the development certificate.
    pub state_dir: PathBuf,
    /// Main certificate chain and key; `None` uses the development certificate.
    pub files: Option<(PathBuf, PathBuf)>,
    /// Directory of extra certificates (certbot `live/` layout).
    pub extra_dir: Option<PathBuf>,
    /// Certificates the relay got itself by ACME (same layout; `--tls-dir` wins on a tie).
    pub acme_dir: Option<PathBuf>,
}

/// Why certificates could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// Reading or parsing PEM files failed.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The development CA could not be prepared.
    #[error(transparent)]
    DevCa(#[from] DevCaError),
    /// The key cannot sign, or does not suit the certificate.
    #[error("certificate {path}: {reason}")]
    Key {
        /// The certificate file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The extra certificate directory could not be read.
    #[error("certificate directory {path}: {source}")]
    Dir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// One loaded set of certificates.
#[derive(Debug)]
struct CertSet {
    main: Arc<CertifiedKey>,
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the parent domain: `*.example.com` is stored under `example.com`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    /// Files whose content fingerprint says whether a reload is due. Content, not mtime:
    /// timestamps can be coarse or preserved by copies.
    watched: Vec<(PathBuf, Option<[u8; 32]>)>,
    /// The certificate pairs found in `--tls-dir`.
    extra_pairs: Vec<(PathBuf, PathBuf)>,
}

impl CertSet {
    /// The extra certificate for `name`, by exact name, then by wildcard.
    fn extra(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(c) = self.exact.get(&name) {
            return Some(c.clone());
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).cloned()
    }
}

/// Most names the development issuer keeps certificates for; past it the cache starts over.
const MINTED_CACHE: usize = 4096;

/// SNI certificate resolver with atomic reload.
#[derive(Debug)]
pub struct CertResolver {
    source: CertSource,
    current: RwLock<Arc<CertSet>>,
    dev: Option<DevCert>,
    minter: Option<Minter>,
    reload_lock: Mutex<()>,
}

/// Per-name development certificates, for clients that reject `*.localhost`.
#[derive(Debug)]
struct Minter {
    issuer: DevIssuer,
    cache: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Minter {
    fn get(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = cache.get(name) {
            return Some(c.clone());
        }
        let (chain, key) = self.issuer.issue(name).ok()?;
        let signing = provider().key_provider.load_private_key(key).ok()?;
        let ck = Arc::new(CertifiedKey::new(chain, signing));
        if cache.len() >= MINTED_CACHE {
            cache.clear();
        }
        cache.insert(name.to_string(), ck.clone());
        Some(ck)
    }
}

impl CertResolver {
    /// Loads every certificate from `source`.
    pub fn load(source: CertSource) -> Result<Arc<Self>, CertError> {
        let dev = match &source.files {
            Some(_) => None,
            None => Some(dev_ca::ensure(&source.state_dir)?),
        };
        let set = load_set(&source, dev.as_ref())?;
        let minter = match &dev {
            Some(d) => Some(Minter { issuer: DevIssuer::load(d)?, cache: Mutex::new(HashMap::new()) }),
            None => None,
        };
        Ok(Arc::new(Self { source, current: RwLock::new(Arc::new(set)), dev, minter, reload_lock: Mutex::new(()) }))
    }

    /// The development certificate in use, if any: what clients must trust.
    pub fn dev(&self) -> Option<&DevCert> {
        self.dev.as_ref()
    }

    /// Re-reads every certificate. On error the current set stays in use.
    pub fn reload(&self) -> Result<usize, CertError> {
        let _one_at_a_time = self.reload_lock.lock().unwrap_or_else(|p| p.into_inner());
        let set = load_set(&self.source, self.dev.as_ref())?;
        let names = set.exact.len() + set.wildcard.len() + 1;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(names)
    }

    /// True when a watched file's content changed, or certificates were added to or removed from
    /// `--tls-dir`, since the last load.
    pub fn changed_on_disk(&self) -> bool {
        let set = self.snapshot();
        if set.watched.iter().any(|(path, seen)| fingerprint(path) != *seen) {
            return true;
        }
        scan_all(&self.source).map(|pairs| pairs != set.extra_pairs).unwrap_or(false)
    }

    fn snapshot(&self) -> Arc<CertSet> {
        self.current.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A rustls server config that resolves through this store, offering `alpn`.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Result<ServerConfig, CertError> {
        let mut cfg = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(TlsError::from)?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Ok(cfg)
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.snapshot();
        let Some(name) = hello.server_name() else {
            return Some(set.main.clone());
        };
        if let Some(c) = set.extra(name) {
            return Some(c);
        }
        // Development relay: an exact certificate for `<label>.localhost`.
        if let Some(minter) = &self.minter {
            if let Ok(name) = postern_proto::hostname::normalize(name) {
                if name.strip_suffix(".localhost").is_some_and(|l| !l.contains('.')) {
                    if let Some(c) = minter.get(&name) {
                        return Some(c);
                    }
                }
            }
        }
        Some(set.main.clone())
    }
}

fn fingerprint(path: &Path) -> Option<[u8; 32]> {
    std::fs::read(path).ok().map(|b| Sha256::digest(&b).into())
}

fn certified(cert: &Path, key: &Path) -> Result<CertifiedKey, CertError> {
    let chain = load_certs(cert)?;
    let key = load_key(key)?;
    let signing = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key { path: cert.into(), reason: e.to_string() })?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| CertError::Key { path: cert.into(), reason: e.to_string() })?;
    Ok(ck)
}

/// Sub-directories of `dir` holding `fullchain.pem` and `privkey.pem`.
fn scan_dir(dir: &Path) -> Result<Vec<(PathBuf, PathBuf)>, CertError> {
    let entries = std::fs::read_dir(dir).map_err(|source| CertError::Dir { path: dir.into(), source })?;
    let mut pairs: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .map(|p| (p.join("fullchain.pem"), p.join("privkey.pem")))
        .filter(|(c, k)| c.is_file() && k.is_file())
        .collect();
    pairs.sort();
    Ok(pairs)
}

/// The pairs of the ACME directory (which may not exist yet), then of `--tls-dir`.
fn scan_all(source: &CertSource) -> Result<Vec<(PathBuf, PathBuf)>, CertError> {
    let mut pairs = match &source.acme_dir {
        Some(dir) if dir.is_dir() => scan_dir(dir)?,
        _ => Vec::new(),
    };
    if let Some(dir) = &source.extra_dir {
        pairs.extend(scan_dir(dir)?);
    }
    Ok(pairs)
}

/// DNS names in a certificate's subject alternative names, lowercase.
fn dns_names(ck: &CertifiedKey) -> Vec<String> {
    match ck.cert.first() {
        Some(leaf) => match x509_parser::parse_x509_certificate(leaf.as_ref()) {
            Ok((_, cert)) => san_dns_names(&cert),
            Err(_) => Vec::new(),
        },
        None => Vec::new(),
    }
}

/// DNS names in a parsed certificate's subject alternative names, lowercase.
pub fn san_dns_names(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    let Ok(Some(san)) = cert.subject_alternative_name() else { return Vec::new() };
    san.value
        .general_names
        .iter()
        .filter_map(|n| match n {
            x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

fn load_set(source: &CertSource, dev: Option<&DevCert>) -> Result<CertSet, CertError> {
    let (cert, key) = match (&source.files, dev) {
        (Some((c, k)), _) => (c.clone(), k.clone()),
        (None, Some(d)) => (d.cert.clone(), d.key.clone()),
        (None, None) => return Err(CertError::Key { path: source.state_dir.clone(), reason: "no certificate".into() }),
    };
    let mut watched = vec![(cert.clone(), fingerprint(&cert)), (key.clone(), fingerprint(&key))];
    let main = Arc::new(certified(&cert, &key)?);
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let extra_pairs = scan_all(source)?;
    for (c, k) in &extra_pairs {
        watched.push((c.clone(), fingerprint(c)));
        watched.push((k.clone(), fingerprint(k)));
        let ck = Arc::new(certified(c, k)?);
        for name in dns_names(&ck) {
            match name.strip_prefix("*.") {
                Some(parent) => wildcard.insert(parent.to_string(), ck.clone()),
                None => exact.insert(name, ck.clone()),
            };
        }
    }
    Ok(CertSet { main, exact, wildcard, watched, extra_pairs })
}
