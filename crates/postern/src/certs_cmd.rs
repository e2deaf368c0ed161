//! `postern certs`: development certificates, and the certbot command for real ones.

use anyhow::Context;
use postern_server::dev_ca;

use crate::cli::CertsCommand;

/// Runs a `postern certs` subcommand.
pub fn run(cmd: CertsCommand) -> anyhow::Result<()> {
    match cmd {
        CertsCommand::Dev { out } => {
            let dev = dev_ca::ensure(&out).with_context(|| format!("writing certificates to {}", out.display()))?;
            say!("{} the development CA: {}", if dev.created { "created" } else { "kept" }, dev.ca_cert.display());
            say!("certificate for localhost and *.localhost: {} (key {})", dev.cert.display(), dev.key.display());
            say!("serve it:  postern server --tls-cert {} --tls-key {}", dev.cert.display(), dev.key.display());
            say!(
                "trust it:  postern http <port> --ca {}   /   curl --cacert {} ...",
                dev.ca_cert.display(),
                dev.ca_cert.display()
            );
            Ok(())
        }
        CertsCommand::Certbot { domain, dns_plugin } => {
            anyhow::ensure!(
                postern_proto::hostname::normalize(&domain).is_ok() && domain.contains('.'),
                "{domain:?} is not a domain name"
            );
            say!("# A wildcard needs the DNS-01 challenge; install certbot and python3-certbot-dns-{dns_plugin}.");
            say!(
                "certbot certonly --dns-{dns_plugin} --dns-{dns_plugin}-credentials /etc/letsencrypt/{dns_plugin}.ini \\\n  -d {domain} -d '*.{domain}'"
            );
            say!("# Then run the relay with:");
            say!(
                "postern server --domain {domain} --tls-cert /etc/letsencrypt/live/{domain}/fullchain.pem --tls-key /etc/letsencrypt/live/{domain}/privkey.pem"
            );
            say!("# Renewals are picked up without a restart (the relay watches the files).");
            Ok(())
        }
    }
}
