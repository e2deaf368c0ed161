//! Where ACME keeps its state under `--state-dir`:
//!
//! ```text
//! acme/account.json               the account's credentials (key included), mode 0600
//! acme/live/<name>/fullchain.pem  certificate chain, leaf first
//! acme/live/<name>/privkey.pem    its key, mode 0600
//! ```
//!
//! `live/` has certbot's layout, so [`crate::certs`] serves it like `--tls-dir`. A wildcard's
//! directory is `_wildcard.<domain>`. Files are written to a temporary name and renamed, so a
//! reader never sees half a certificate.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::state_file::write_atomic;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

/// The ACME directory inside the state directory.
pub fn root(state_dir: &Path) -> PathBuf {
    state_dir.join("acme")
}

/// Where issued certificates live (certbot `live/` layout).
pub fn live(state_dir: &Path) -> PathBuf {
    root(state_dir).join("live")
}

/// Directory name for a certificate whose first name is `name`.
pub fn dir_name(name: &str) -> String {
    match name.strip_prefix("*.") {
        Some(parent) => format!("_wildcard.{parent}"),
        None => name.to_string(),
    }
}

/// Stores a certificate chain and key for `names` (the first names the directory).
pub fn save(state_dir: &Path, names: &[String], chain_pem: &str, key_pem: &str) -> std::io::Result<PathBuf> {
    let first = names.first().ok_or_else(|| std::io::Error::other("no names"))?;
    let dir = live(state_dir).join(dir_name(first));
    // Key first: a chain without its key is never served, a key without its chain is ignored.
    write_atomic(&dir.join("privkey.pem"), key_pem.as_bytes(), true)?;
    write_atomic(&dir.join("fullchain.pem"), chain_pem.as_bytes(), false)?;
    Ok(dir)
}

/// One stored certificate: its names and validity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// Its directory under `live/`.
    pub dir: PathBuf,
    /// DNS names in the leaf's subject alternative names.
    pub names: Vec<String>,
    /// Start of validity.
    pub not_before: SystemTime,
    /// End of validity.
    pub not_after: SystemTime,
}

impl Stored {
    /// True when it should be renewed at `now`: when less than `before` of its validity is
    /// left, or by default (`None`) a third of its lifetime, which is 30 days for a 90-day
    /// certificate and 2 days for a 6-day one.
    pub fn due(&self, now: SystemTime, before: Option<Duration>) -> bool {
        let life = self.not_after.duration_since(self.not_before).unwrap_or_default();
        let window = before.unwrap_or(life / 3);
        match self.not_after.checked_sub(window) {
            Some(renew_at) => now >= renew_at,
            None => true,
        }
    }

    /// True while `now` is inside its validity.
    pub fn valid(&self, now: SystemTime) -> bool {
        now >= self.not_before && now < self.not_after
    }
}

/// Reads the leaf of `dir/fullchain.pem`.
pub fn read(dir: &Path) -> Option<Stored> {
    if !dir.join("privkey.pem").is_file() {
        return None;
    }
    let leaf = CertificateDer::pem_file_iter(dir.join("fullchain.pem")).ok()?.next()?.ok()?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf.as_ref()).ok()?;
    let at = |t: i64| UNIX_EPOCH + Duration::from_secs(t.max(0) as u64);
    let names = crate::certs::san_dns_names(&cert);
    Some(Stored {
        dir: dir.to_path_buf(),
        names,
        not_before: at(cert.validity().not_before.timestamp()),
        not_after: at(cert.validity().not_after.timestamp()),
    })
}

/// Every stored certificate.
pub fn list(state_dir: &Path) -> Vec<Stored> {
    let Ok(entries) = std::fs::read_dir(live(state_dir)) else { return Vec::new() };
    let mut v: Vec<_> = entries.filter_map(Result::ok).filter_map(|e| read(&e.path())).collect();
    v.sort_by(|a, b| a.dir.cmp(&b.dir));
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(life_days: u64, left_days: u64) -> (Stored, SystemTime) {
        let day = Duration::from_secs(86_400);
        let not_before = UNIX_EPOCH + day * 1000;
        let not_after = not_before + day * life_days as u32;
        let now = not_after - day * left_days as u32;
        (Stored { dir: PathBuf::new(), names: vec![], not_before, not_after }, now)
    }

    #[test]
    fn by_default_renews_with_a_third_of_the_lifetime_left() {
        let (c, now) = stored(90, 31);
        assert!(!c.due(now, None));
        let (c, now) = stored(90, 29);
        assert!(c.due(now, None));
        let (c, now) = stored(6, 3);
        assert!(!c.due(now, None));
        let (c, now) = stored(6, 1);
        assert!(c.due(now, None));
    }

    #[test]
    fn an_explicit_window_wins() {
        let week = Some(Duration::from_secs(7 * 86_400));
        let (c, now) = stored(90, 8);
        assert!(!c.due(now, week));
        let (c, now) = stored(90, 6);
        assert!(c.due(now, week));
    }

    #[test]
    fn wildcard_directory_names() {
        assert_eq!(dir_name("*.example.com"), "_wildcard.example.com");
        assert_eq!(dir_name("app.example.com"), "app.example.com");
    }
}
