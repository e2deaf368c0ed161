//! The relay's TOML config file. Unknown keys are errors, so typos do not pass silently.
//!
//! ```toml
//! control_addr = "0.0.0.0:7000"
//! domain = "tunnel.example.com"
//! tcp_bind = "0.0.0.0"
//! tcp_ports = "20000-29999"
//! token = "a long random secret"
//! state_dir = "/var/lib/postern"
//! tls_cert = "/etc/letsencrypt/live/tunnel.example.com/fullchain.pem"
//! tls_key = "/etc/letsencrypt/live/tunnel.example.com/privkey.pem"
//! handshake_timeout = "10s"
//! heartbeat_interval = "10s"
//! heartbeat_timeout = "30s"
//! max_agents = 10000
//! max_public_connections = 50000
//! allow_anonymous = false
//! http_addr = "0.0.0.0:80"        # or "off"
//! https_addr = "0.0.0.0:443"      # or "off"
//! tls_dir = "/etc/letsencrypt/live"
//! http_redirect = true
//! http_header_timeout = "10s"
//! http_idle_timeout = "5m"
//! http_max_header_bytes = 65536
//! http_max_streams = 128
//! admin_addr = "127.0.0.1:7001"   # or "off"
//! bore_addr = "0.0.0.0:7835"      # bore-compatible endpoint; default off
//! admin_token = "..."             # better: POSTERN_ADMIN_TOKEN
//! webhook = "https://hooks.example.com/postern"
//! webhook_secret = "..."          # better: POSTERN_WEBHOOK_SECRET
//! metrics_per_tunnel = false
//! lease_grace = "60s"
//! max_connections_per_ip = 1024
//! max_auth_failures = 10
//! max_streams_per_agent = 10000
//! drain_timeout = "30s"
//! allow_domains = ["*.example.com"] # custom domains any client may claim
//! txt_proof = "system"             # or "IP:PORT" of a DNS server, or "off"
//! acme = true                      # certificates for custom domains (HTTP-01)
//! acme_directory = "https://acme-v02.api.letsencrypt.org/directory"
//! acme_email = "ops@example.com"
//! acme_wildcard = true             # *.<domain> by DNS-01 through acme_dns_hook
//! acme_dns_hook = "/usr/local/bin/postern-dns-hook"
//! acme_renew_before = "30d"
//!
//! [[policy]]                       # operator access policy, by tunnel id
//! ids = "internal-*"
//! allow_ips = ["10.0.0.0/8"]
//! forward_auth = "http://127.0.0.1:4181/verify"
//! forward_auth_headers = ["Remote-User"]
//! ```

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

/// Everything the file may set; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub control_addr: Option<SocketAddr>,
    pub domain: Option<String>,
    pub tcp_bind: Option<IpAddr>,
    pub tcp_ports: Option<String>,
    pub token: Option<String>,
    pub allow_anonymous: Option<bool>,
    pub state_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub handshake_timeout: Option<String>,
    pub heartbeat_interval: Option<String>,
    pub heartbeat_timeout: Option<String>,
    pub max_agents: Option<usize>,
    pub max_public_connections: Option<usize>,
    pub http_addr: Option<String>,
    pub https_addr: Option<String>,
    pub tls_dir: Option<PathBuf>,
    pub http_redirect: Option<bool>,
    pub http_header_timeout: Option<String>,
    pub http_idle_timeout: Option<String>,
    pub http_max_header_bytes: Option<usize>,
    pub http_max_streams: Option<u32>,
    pub admin_addr: Option<String>,
    pub bore_addr: Option<String>,
    pub admin_token: Option<String>,
    pub webhook: Option<String>,
    pub webhook_secret: Option<String>,
    pub metrics_per_tunnel: Option<bool>,
    pub lease_grace: Option<String>,
    pub max_connections_per_ip: Option<usize>,
    pub max_auth_failures: Option<u32>,
    pub max_streams_per_agent: Option<usize>,
    pub drain_timeout: Option<String>,
    #[serde(default)]
    pub allow_domains: Vec<String>,
    pub txt_proof: Option<String>,
    pub acme: Option<bool>,
    pub acme_directory: Option<String>,
    pub acme_email: Option<String>,
    pub acme_ca: Option<PathBuf>,
    pub acme_wildcard: Option<bool>,
    pub acme_dns_hook: Option<PathBuf>,
    pub acme_renew_before: Option<String>,
    #[serde(default, rename = "policy")]
    pub policies: Vec<FilePolicy>,
}

/// An operator access policy (`[[policy]]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilePolicy {
    /// Tunnel ids it applies to (`*` globs).
    pub ids: String,
    #[serde(default)]
    pub allow_ips: Vec<String>,
    pub forward_auth: Option<String>,
    #[serde(default)]
    pub forward_auth_headers: Vec<String>,
}

impl FilePolicy {
    /// Validates and converts.
    pub fn to_policy(&self) -> anyhow::Result<postern_server::access::Policy> {
        use postern_server::access::{parse_nets, ForwardAuth, Policy};
        let allow_ips = parse_nets(&self.allow_ips).map_err(|e| anyhow::anyhow!("policy {:?}: {e}", self.ids))?;
        let forward_auth = match &self.forward_auth {
            None => None,
            Some(url) => Some(ForwardAuth {
                url: url
                    .parse()
                    .with_context(|| format!("policy {:?}: forward_auth {url:?} is not a URL", self.ids))?,
                copy_headers: self
                    .forward_auth_headers
                    .iter()
                    .map(|h| http::HeaderName::from_bytes(h.as_bytes()))
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("policy {:?}: forward_auth_headers", self.ids))?,
            }),
        };
        Ok(Policy { ids: self.ids.clone(), allow_ips, forward_auth })
    }
}

impl FileConfig {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }
}

/// Parses a duration such as `10s` or `1m 30s` from the config file.
pub fn duration(key: &str, value: Option<&str>) -> anyhow::Result<Option<std::time::Duration>> {
    value
        .map(|v| {
            humantime::parse_duration(v)
                .with_context(|| format!("config key {key}: {v:?} is not a duration like \"10s\""))
        })
        .transpose()
}
