//! Checking the settings against each other, before any port is bound.

use super::{ConfigError, RelayConfig, Secret};

impl RelayConfig {
    /// Checks the settings against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let empty = |t: &Option<Secret>| t.as_ref().is_some_and(|t| t.expose().is_empty());
        if empty(&self.token) || empty(&self.admin_token) {
            return Err(ConfigError::Invalid("tokens must not be empty".into()));
        }
        if let Some(url) = &self.webhook {
            if self.webhook_secret.as_ref().is_none_or(|s| s.expose().is_empty()) {
                return Err(ConfigError::Invalid(
                    "a webhook needs a secret to sign its deliveries: give --webhook-secret".into(),
                ));
            }
            if url.parse::<http::Uri>().map_or(true, |u| u.scheme().is_none() || u.host().is_none()) {
                return Err(ConfigError::Invalid(format!("--webhook {url:?} is not a URL")));
            }
        }
        for p in self.oidc_providers() {
            crate::visitor::oidc::Provider::new(&p).map_err(|e| ConfigError::Invalid(format!("OIDC provider: {e}")))?;
            if p.client_id.is_empty() || p.client_secret.is_empty() {
                return Err(ConfigError::Invalid(format!("OIDC provider {}: needs a client id and secret", p.issuer)));
            }
        }
        let named = self.policies.list().into_iter().any(|p| p.login.is_some());
        if named && self.oidc_providers().is_empty() {
            return Err(ConfigError::Invalid(
                "a [[policy]] names emails, email_domains or groups, but no identity provider is configured \
                 (--oidc-issuer or [[oidc]])"
                    .into(),
            ));
        }
        if self.session_ttl.is_zero() {
            return Err(ConfigError::Invalid("the session TTL must be above zero".into()));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConfigError::Invalid("tls_cert and tls_key must be given together".into()));
        }
        for (name, d) in [
            ("handshake timeout", self.handshake_timeout),
            ("heartbeat interval", self.heartbeat_interval),
            ("heartbeat timeout", self.heartbeat_timeout),
            ("HTTP header timeout", self.http_header_timeout),
            ("HTTP idle timeout", self.http_idle_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Invalid(format!("the {name} must be above zero")));
            }
        }
        for name in self.inspect_redact.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(ConfigError::Invalid(format!("--inspect-redact: {name:?} is not a header name")));
            }
        }
        let most = postern_transport::mux::MAX_PUBLIC_HEADER_BYTES;
        if !(8192..=most).contains(&self.http_max_header_bytes) {
            return Err(ConfigError::Invalid(format!("the HTTP header limit must be between 8192 and {most} bytes")));
        }
        if self.http_max_streams == 0 {
            return Err(ConfigError::Invalid("HTTP/2 streams per connection must be above zero".into()));
        }
        if !postern_proto::hostname::normalize(&self.domain).is_ok_and(|d| d == self.domain.to_ascii_lowercase()) {
            return Err(ConfigError::Invalid(format!("domain {:?} is not a valid host name", self.domain)));
        }
        if self.max_connections_per_ip == 0 || self.max_streams_per_agent == 0 || self.max_auth_failures == 0 {
            return Err(ConfigError::Invalid("per-address and per-agent limits must be above zero".into()));
        }
        let most = postern_transport::mux::MAX_CONCURRENT_STREAMS as usize;
        if self.max_streams_per_agent > most {
            return Err(ConfigError::Invalid(format!(
                "streams per agent connection can be at most {most}, the most an agent accepts at once"
            )));
        }
        if self.max_agents == 0 || self.max_tunnels_per_agent == 0 || self.max_public_connections == 0 {
            return Err(ConfigError::Invalid("connection and tunnel caps must be above zero".into()));
        }
        self.validate_cluster()?;
        if let Some(acme) = self.acme() {
            if self.state_dir.is_none() {
                return Err(ConfigError::Invalid(
                    "ACME needs a state directory for its account and certificates".into(),
                ));
            }
            if acme.wildcard && acme.dns_hook.is_none() {
                return Err(ConfigError::Invalid(
                    "an ACME wildcard certificate needs DNS-01: give --acme-dns-hook".into(),
                ));
            }
            if acme.wildcard && self.domain == "localhost" {
                return Err(ConfigError::Invalid("no CA issues certificates for localhost; set --domain".into()));
            }
            if !acme.directory.starts_with("https://") {
                return Err(ConfigError::Invalid(format!(
                    "the ACME directory must be an https URL, not {:?}",
                    acme.directory
                )));
            }
        }
        Ok(())
    }

    /// A clustered relay needs a directory it can parse, a secret, a name and a peer address
    /// its peers can dial.
    fn validate_cluster(&self) -> Result<(), ConfigError> {
        let Some(url) = &self.cluster else { return Ok(()) };
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return invalid(format!("--cluster {url:?}: expected redis://HOST:PORT or rediss://HOST:PORT"));
        }
        if let Err(e) = redis::Client::open(url.as_str()) {
            return invalid(format!("--cluster {url:?}: {e}"));
        }
        if self.cluster_secret.as_ref().is_none_or(|s| s.expose().len() < 16) {
            return invalid("a cluster needs --cluster-secret, at least 16 characters, the same on every relay".into());
        }
        if let Some(id) = &self.relay_id {
            if !postern_proto::hostname::is_label(id) {
                return invalid(format!("--relay-id {id:?}: use a DNS label (a-z, 0-9, '-')"));
            }
        }
        let Some(peer) = self.peer_addr.on(&self.domain).0 else {
            return invalid("a clustered relay needs --peer-addr: its peers forward to it there".into());
        };
        if self.peer_advertise.is_none() && peer.ip().is_unspecified() {
            return invalid(format!(
                "--peer-addr {peer} is every interface: say where peers reach it with --peer-advertise"
            ));
        }
        if self.cluster_node_ttl < std::time::Duration::from_secs(1) {
            return invalid("--cluster-node-ttl must be at least 1s".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_agents_only_on_a_loopback_development_relay() {
        let cfg = RelayConfig::default();
        assert!(cfg.anonymous_allowed("127.0.0.1:7000".parse().expect("addr")));
        assert!(!cfg.anonymous_allowed("0.0.0.0:7000".parse().expect("addr")));
        let with_token = RelayConfig { token: Some("t".into()), ..RelayConfig::default() };
        assert!(!with_token.anonymous_allowed("127.0.0.1:7000".parse().expect("addr")));
        let allowed = RelayConfig { allow_anonymous: true, ..RelayConfig::default() };
        assert!(allowed.anonymous_allowed("0.0.0.0:7000".parse().expect("addr")));
    }

    fn clustered(edit: impl FnOnce(&mut RelayConfig)) -> Result<(), ConfigError> {
        let mut cfg = RelayConfig {
            cluster: Some("redis://127.0.0.1:6379".into()),
            cluster_secret: Some("sixteen characters".into()),
            relay_id: Some("a".into()),
            ..RelayConfig::default()
        };
        edit(&mut cfg);
        cfg.validate_cluster()
    }

    fn says(r: Result<(), ConfigError>, what: &str) {
        match r {
            Err(e) => assert!(e.to_string().contains(what), "{e} does not mention {what:?}"),
            Ok(()) => panic!("accepted; expected an error about {what:?}"),
        }
    }

    #[test]
    fn a_cluster_needs_a_usable_directory_a_secret_a_name_and_a_peer_address() {
        assert!(clustered(|_| {}).is_ok());
        assert!(clustered(|c| c.cluster = Some("rediss://user:pw@redis.internal:6380/0".into())).is_ok());
        says(clustered(|c| c.cluster = Some("http://redis:6379".into())), "expected redis://HOST:PORT");
        says(clustered(|c| c.cluster = Some("redis://".into())), "--cluster");
        says(clustered(|c| c.cluster_secret = None), "--cluster-secret");
        says(clustered(|c| c.cluster_secret = Some("short".into())), "at least 16 characters");
        says(clustered(|c| c.relay_id = Some("Not A Label".into())), "--relay-id");
        says(
            clustered(|c| {
                c.domain = "tunnel.example.com".into();
            }),
            "--peer-advertise",
        );
        assert!(clustered(|c| {
            c.domain = "tunnel.example.com".into();
            c.peer_advertise = Some("10.0.0.5:7002".into());
        })
        .is_ok());
        says(clustered(|c| c.cluster_node_ttl = std::time::Duration::from_millis(500)), "--cluster-node-ttl");
        // Without --cluster, none of this is looked at.
        assert!(RelayConfig { cluster_secret: Some("short".into()), ..RelayConfig::default() }
            .validate_cluster()
            .is_ok());
    }
}
