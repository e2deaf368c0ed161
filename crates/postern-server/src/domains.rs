//! Custom domains: which client may claim `app.example.com` for its HTTP tunnel.
//!
//! A client names a domain it wants (`postern http 3000 --domain app.example.com`). The relay
//! grants it when either
//!
//! - the operator allows it: the domain matches one of `--allow-domain` patterns
//!   (`*.example.com`, `shop.example.org`), or
//! - the domain's DNS proves it: a TXT record `_postern.<domain>` whose value is
//!   `postern-owner=<subject>`, where `<subject>` is the subject of the client's token. Only who
//!   controls the domain's DNS can publish that, so a tenant cannot take a name it does not own.
//!
//! Names under the relay's own domain are never custom domains (they follow `<id>-<port>`).
//! Certificates for granted domains come from ACME when `--acme` is on (see [`crate::acme`]).

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use postern_proto::hostname;
use postern_proto::token::glob;

/// The TXT record label that proves ownership: `_postern.<domain>`.
pub const TXT_LABEL: &str = "_postern";

/// Why a custom domain was not granted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// Not a DNS name.
    #[error("{0:?} is not a domain name")]
    Invalid(String),
    /// One label only, or an IP address.
    #[error("{0:?} is not a fully qualified domain name (it needs a dot)")]
    NotQualified(String),
    /// Under the relay's own domain, where names are `<id>-<port>`.
    #[error("{domain} is under the relay's own domain {base}; use --id instead")]
    OurOwn {
        /// The domain asked for.
        domain: String,
        /// The relay's domain.
        base: String,
    },
    /// Neither allowed by the operator nor proven by DNS.
    #[error(
        "{domain} is not allowed on this relay: ask the operator to allow it (--allow-domain), or publish \
         the DNS record {TXT_LABEL}.{domain} TXT \"postern-owner={subject}\""
    )]
    NotAllowed {
        /// The domain asked for.
        domain: String,
        /// The client's token subject.
        subject: String,
    },
}

/// How a grant was justified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// An `--allow-domain` pattern matched.
    Allowed,
    /// The `_postern` TXT record names the client.
    Txt,
}

/// The relay's rules for custom domains.
#[derive(Clone)]
pub struct DomainPolicy {
    base: String,
    allow: Vec<String>,
    txt: TxtLookup,
    /// Built on the first TXT lookup: most relays never need one, and an idle relay should not
    /// carry a resolver.
    resolver: Arc<OnceLock<Option<TokioResolver>>>,
}

impl std::fmt::Debug for DomainPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DomainPolicy")
            .field("base", &self.base)
            .field("allow", &self.allow)
            .field("txt_proof", &self.txt)
            .finish()
    }
}

/// How TXT proofs are looked up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TxtLookup {
    /// No TXT proof: only `--allow-domain` grants domains.
    Off,
    /// The system's resolvers (`/etc/resolv.conf`).
    System,
    /// This DNS server (UDP and TCP).
    Server(SocketAddr),
}

impl std::str::FromStr for TxtLookup {
    type Err = String;

    /// `system`, `off` (also `none` or empty), or a DNS server `IP:PORT`.
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "system" => Ok(Self::System),
            "off" | "none" | "" => Ok(Self::Off),
            v => v
                .parse()
                .map(Self::Server)
                .map_err(|_| format!("{v:?} is not `system`, `off` or a DNS server like 127.0.0.1:53")),
        }
    }
}

impl DomainPolicy {
    /// Rules for a relay on `base`; `allow` are patterns (`*` matches any run of characters).
    pub fn new(base: &str, allow: Vec<String>, txt: TxtLookup) -> Self {
        Self { base: base.to_ascii_lowercase(), allow, txt, resolver: Arc::new(OnceLock::new()) }
    }

    /// The resolver for TXT proofs, built on first use; `None` when proofs are off or the
    /// system has no usable DNS configuration (then only `--allow-domain` grants domains).
    fn resolver(&self) -> Option<&TokioResolver> {
        self.resolver
            .get_or_init(|| match self.txt {
                TxtLookup::Off => None,
                TxtLookup::System => match TokioResolver::builder_tokio().and_then(|b| b.build()) {
                    Ok(r) => Some(r),
                    Err(e) => {
                        tracing::warn!(error = %e, "no system DNS resolver: custom domains need --allow-domain");
                        None
                    }
                },
                TxtLookup::Server(addr) => {
                    let connections = [ConnectionConfig::udp(), ConnectionConfig::tcp()]
                        .into_iter()
                        .map(|mut c| {
                            c.port = addr.port();
                            c
                        })
                        .collect();
                    let mut server = NameServerConfig::udp_and_tcp(addr.ip());
                    server.connections = connections;
                    let mut builder = TokioResolver::builder_with_config(
                        ResolverConfig::from_name_servers(vec![server]),
                        TokioRuntimeProvider::default(),
                    );
                    builder.options_mut().timeout = Duration::from_secs(3);
                    builder.options_mut().attempts = 2;
                    // A proof just published must count at once: no caching of misses.
                    builder.options_mut().negative_max_ttl = Some(Duration::ZERO);
                    builder.options_mut().positive_max_ttl = Some(Duration::from_secs(60));
                    match builder.build() {
                        Ok(r) => Some(r),
                        Err(e) => {
                            tracing::warn!(error = %e, %addr, "DNS resolver for TXT proofs failed");
                            None
                        }
                    }
                }
            })
            .as_ref()
    }

    /// No custom domains at all.
    #[cfg(test)]
    pub fn none(base: &str) -> Self {
        Self::new(base, Vec::new(), TxtLookup::Off)
    }

    /// Lowercase form of `domain`, if it can be a custom domain on this relay.
    pub fn normalize(&self, domain: &str) -> Result<String, DomainError> {
        let name = hostname::normalize(domain).map_err(|_| DomainError::Invalid(domain.chars().take(300).collect()))?;
        if name != domain.trim().trim_end_matches('.').to_ascii_lowercase() {
            // A port or other decoration: not a bare name.
            return Err(DomainError::Invalid(domain.chars().take(300).collect()));
        }
        let (_, tld) = name.rsplit_once('.').ok_or_else(|| DomainError::NotQualified(name.clone()))?;
        if tld.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DomainError::NotQualified(name));
        }
        if name == self.base || name.ends_with(&format!(".{}", self.base)) {
            return Err(DomainError::OurOwn { domain: name, base: self.base.clone() });
        }
        Ok(name)
    }

    /// True when an operator pattern allows `domain` (already normalized).
    pub fn allowed(&self, domain: &str) -> bool {
        self.allow.iter().any(|p| glob(&p.to_ascii_lowercase(), domain))
    }

    /// Grants `domain` (already normalized) to the holder of a token with `subject`, or says
    /// why not.
    pub async fn authorize(&self, domain: &str, subject: &str) -> Result<Proof, DomainError> {
        if self.allowed(domain) {
            return Ok(Proof::Allowed);
        }
        let not_allowed = || DomainError::NotAllowed { domain: domain.to_string(), subject: subject.to_string() };
        let Some(resolver) = self.resolver() else { return Err(not_allowed()) };
        let want = format!("postern-owner={subject}");
        let query = format!("{TXT_LABEL}.{domain}.");
        let lookup = match tokio::time::timeout(Duration::from_secs(10), resolver.txt_lookup(query.as_str())).await {
            Ok(Ok(l)) => l,
            Ok(Err(e)) => {
                tracing::debug!(%domain, error = %e, "no ownership TXT record");
                return Err(not_allowed());
            }
            Err(_) => return Err(not_allowed()),
        };
        let proven = lookup.answers().iter().any(|r| match &r.data {
            RData::TXT(txt) => {
                let value: Vec<u8> = txt.txt_data.iter().flat_map(|part| part.iter().copied()).collect();
                String::from_utf8_lossy(&value).trim() == want
            }
            _ => false,
        });
        if proven {
            Ok(Proof::Txt)
        } else {
            Err(not_allowed())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_and_rejects() {
        let p = DomainPolicy::none("tunnel.example.net");
        assert_eq!(p.normalize("App.Example.COM.").unwrap(), "app.example.com");
        assert!(matches!(p.normalize("localhost"), Err(DomainError::NotQualified(_))));
        assert!(matches!(p.normalize("10.0.0.1"), Err(DomainError::NotQualified(_))));
        assert!(matches!(p.normalize("app.example.com:443"), Err(DomainError::Invalid(_))));
        assert!(matches!(p.normalize("*.example.com"), Err(DomainError::Invalid(_))));
        assert!(matches!(p.normalize("a_b.example.com"), Err(DomainError::Invalid(_))));
        assert!(matches!(p.normalize("x-80.tunnel.example.net"), Err(DomainError::OurOwn { .. })));
        assert!(matches!(p.normalize("tunnel.example.net"), Err(DomainError::OurOwn { .. })));
        // A look-alike suffix is not ours.
        assert_eq!(p.normalize("eviltunnel.example.net").unwrap(), "eviltunnel.example.net");
    }

    #[tokio::test]
    async fn allowlist_grants_and_the_rest_is_refused_with_the_txt_hint() {
        let p =
            DomainPolicy::new("t.example.net", vec!["*.example.com".into(), "Shop.Example.org".into()], TxtLookup::Off);
        assert_eq!(p.authorize("app.example.com", "alice").await, Ok(Proof::Allowed));
        assert_eq!(p.authorize("shop.example.org", "alice").await, Ok(Proof::Allowed));
        let err = p.authorize("example.org", "alice").await.unwrap_err();
        assert!(err.to_string().contains("_postern.example.org TXT \"postern-owner=alice\""), "{err}");
    }
}
