//! Test certificate authorities, made with rcgen at test time (no secrets committed).

use std::path::Path;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// A throwaway CA that can sign leaves.
#[derive(Debug)]
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub cert_pem: String,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        Ok(Self { cert_pem: cert.pem(), issuer: Issuer::new(params, key) })
    }

    /// Writes `ca.pem` into `dir`.
    pub fn write_ca(&self, path: &Path) -> anyhow::Result<()> {
        std::fs::write(path, &self.cert_pem)?;
        Ok(())
    }

    /// Signs a leaf for `names`; writes `fullchain.pem` and `privkey.pem` into `dir` (certbot's
    /// layout).
    pub fn write_leaf(&self, dir: &Path, names: &[&str]) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let key = KeyPair::generate()?;
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())?;
        let cert = params.signed_by(&key, &self.issuer)?;
        // Write the key first: a watcher that sees the new chain must find the matching key.
        std::fs::write(dir.join("privkey.pem"), key.serialize_pem())?;
        std::fs::write(dir.join("fullchain.pem"), cert.pem())?;
        Ok(())
    }
}
