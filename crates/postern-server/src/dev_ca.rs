//! The development certificate authority.
//!
//! `postern server` without `--tls-cert` creates, once, in `--state-dir`:
//!
//! | file           | what                                                    | mode |
//! |----------------|---------------------------------------------------------|------|
//! | `ca.pem`       | self-signed "postern development CA" (clients trust it) | 0644 |
//! | `ca-key.pem`   | its private key                                         | 0600 |
//! | `tls-cert.pem` | leaf for `localhost`, `*.localhost`, 127.0.0.1, ::1     | 0644 |
//! | `tls-key.pem`  | the leaf's private key                                  | 0600 |
//!
//! Existing files are reused, so clients that trust `ca.pem` keep trusting the relay across
//! restarts. Deleting the leaf re-issues it from the same CA; deleting the CA starts over.
//!
//! Some TLS stacks (OpenSSL, so curl; browsers) refuse a wildcard directly under a single-label
//! name such as `*.localhost`. For them [`DevIssuer`] signs, in memory, a certificate for the
//! exact name a client asks for (`demo-8000.localhost`); see `certs.rs`.

use std::fs;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use crate::state_file::write_atomic;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// Paths of the development material.
#[derive(Debug, Clone)]
pub struct DevCert {
    /// The CA certificate clients should trust.
    pub ca_cert: PathBuf,
    /// The leaf certificate the relay serves.
    pub cert: PathBuf,
    /// The leaf's key.
    pub key: PathBuf,
    /// True when this call created the CA.
    pub created: bool,
}

/// Why the development certificate could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum DevCaError {
    /// The state directory or a file in it could not be written or read.
    #[error("state directory {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// rcgen failed.
    #[error("certificate generation failed: {0}")]
    Rcgen(#[from] rcgen::Error),
}

const CA_NAME: &str = "postern development CA";

/// Makes sure the development CA and leaf exist in `state_dir`, creating what is missing.
pub fn ensure(state_dir: &Path) -> Result<DevCert, DevCaError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevCaError::Io { path, source }
    };
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    let out = DevCert {
        ca_cert: state_dir.join("ca.pem"),
        cert: state_dir.join("tls-cert.pem"),
        key: state_dir.join("tls-key.pem"),
        created: false,
    };
    let ca_key_path = state_dir.join("ca-key.pem");
    if out.cert.exists() && out.key.exists() && out.ca_cert.exists() {
        return Ok(out);
    }

    let (ca_key, created) = if ca_key_path.exists() && out.ca_cert.exists() {
        let pem = fs::read_to_string(&ca_key_path).map_err(io(&ca_key_path))?;
        (KeyPair::from_pem(&pem)?, false)
    } else {
        let key = KeyPair::generate()?;
        let cert = ca_params().self_signed(&key)?;
        write_atomic(&ca_key_path, key.serialize_pem().as_bytes(), true).map_err(io(&ca_key_path))?;
        write_atomic(&out.ca_cert, cert.pem().as_bytes(), false).map_err(io(&out.ca_cert))?;
        (key, true)
    };
    // The issuer is rebuilt from the same name and key, which is all a signature needs.
    let issuer = Issuer::new(ca_params(), ca_key);

    let leaf_key = KeyPair::generate()?;
    let leaf_cert =
        leaf_params(vec!["localhost".to_string(), "*.localhost".to_string()], true)?.signed_by(&leaf_key, &issuer)?;
    write_atomic(&out.key, leaf_key.serialize_pem().as_bytes(), true).map_err(io(&out.key))?;
    write_atomic(&out.cert, leaf_cert.pem().as_bytes(), false).map_err(io(&out.cert))?;
    Ok(DevCert { created, ..out })
}

/// Parameters of a development leaf for `names` (plus the loopback addresses when `loopback`).
fn leaf_params(names: Vec<String>, loopback: bool) -> Result<CertificateParams, rcgen::Error> {
    let cn = names.iter().find(|n| n.starts_with('*')).or(names.first()).cloned().unwrap_or_default();
    let mut leaf = CertificateParams::new(names)?;
    if loopback {
        leaf.subject_alt_names.push(SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)));
        leaf.subject_alt_names.push(SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)));
    }
    leaf.distinguished_name = DistinguishedName::new();
    leaf.distinguished_name.push(DnType::CommonName, cn);
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    leaf.not_before = rcgen::date_time_ymd(2025, 1, 1);
    leaf.not_after = rcgen::date_time_ymd(2035, 1, 1);
    Ok(leaf)
}

/// Signs development certificates for single names, in memory, with the development CA.
pub struct DevIssuer {
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for DevIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DevIssuer")
    }
}

impl DevIssuer {
    /// Loads the CA key from `dev`'s state directory.
    pub fn load(dev: &DevCert) -> Result<Self, DevCaError> {
        let key_path = dev.ca_cert.with_file_name("ca-key.pem");
        let pem = fs::read_to_string(&key_path).map_err(|source| DevCaError::Io { path: key_path, source })?;
        Ok(Self { issuer: Issuer::new(ca_params(), KeyPair::from_pem(&pem)?) })
    }

    /// A certificate chain (leaf only) and key for exactly `name`.
    pub fn issue(
        &self,
        name: &str,
    ) -> Result<(Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::PrivateKeyDer<'static>), DevCaError>
    {
        let key = KeyPair::generate()?;
        let cert = leaf_params(vec![name.to_string()], false)?.signed_by(&key, &self.issuer)?;
        let key_der = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        Ok((vec![cert.der().clone()], key_der.into()))
    }
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.distinguished_name.push(DnType::OrganizationName, "postern");
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    p.not_before = rcgen::date_time_ymd(2025, 1, 1);
    p.not_after = rcgen::date_time_ymd(2045, 1, 1);
    p
}
