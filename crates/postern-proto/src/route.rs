//! Which tunnel a public HTTP request is for, from its request target and `Host` fields alone:
//! the HTTP edge's routing decision, kept free of I/O so it can be fuzzed.
//!
//! - The host comes from the request target's authority (HTTP/2 `:authority`, or an HTTP/1.1
//!   absolute-form target), else from the `Host` field.
//! - More than one `Host` field, or a `Host` that names another host than the target's
//!   authority, is refused (RFC 9112 §3.2, RFC 9113 §8.3.1): two parties reading the same
//!   request must never pick two different tunnels.
//! - `<id>-<port>.<domain>` and `<id>.<domain>` name a tunnel by label ([`crate::hostname`]);
//!   any other dotted name may be a custom domain, which the registry holds as a key of its
//!   own. A single label that is not under the domain names nothing.
//! - The path is what the local service receives: the target's path and query, `/` when
//!   there is none, or `*` (only for `OPTIONS *`).

use crate::hostname::{self, HostError};

/// The parts of a request that routing reads.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    /// The request method.
    pub method: &'a str,
    /// The request target's authority, when it has one.
    pub authority: Option<&'a str>,
    /// The request target's path and query (`/a?b`, or `*`), when it has one.
    pub path: Option<&'a str>,
    /// Every `Host` field line, raw.
    pub hosts: &'a [&'a [u8]],
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    /// The host as the client named it (for pages, redirects and `X-Forwarded-Host`).
    pub host: String,
    /// The registry key: a tunnel label, or a custom domain.
    pub key: String,
    /// What the local service is asked for.
    pub path: Path,
}

/// The target a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Path {
    /// A path and query, starting with `/`.
    Origin(String),
    /// `OPTIONS *`: the server as a whole.
    Asterisk,
}

/// Why a request routes nowhere. Each maps to one of the edge's error pages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    /// No host at all, or one that is not a host name.
    #[error("the request's host is missing or malformed")]
    BadHost,
    /// More than one `Host` field.
    #[error("the request has more than one Host field")]
    RepeatedHost,
    /// A `Host` field that disagrees with the request target.
    #[error("the Host field names another host than the request target")]
    HostMismatch,
    /// A host no tunnel could ever have.
    #[error("no tunnel is named {0:?}")]
    NotFound(String),
    /// A `*` target for another method than OPTIONS, or a path that does not start with `/`.
    #[error("the request target is malformed")]
    BadTarget,
}

/// Optional whitespace around a field value (RFC 9110 §5.6.3).
const OWS: [char; 2] = [' ', '\t'];

/// Longest host kept from a request (a DNS name is at most 253 characters, plus a port).
const MAX_HOST: usize = 300;

/// Routes one request under the relay's `domain`.
pub fn route(head: &RequestHead<'_>, domain: &str) -> Result<Routed, RouteError> {
    let host = host(head)?;
    let key = match hostname::parse(&host, domain) {
        Ok(r) => r.label,
        Err(HostError::NotOurs(name)) if name.contains('.') => name,
        Err(HostError::NotOurs(name)) => return Err(RouteError::NotFound(name)),
        Err(_) => return Err(RouteError::BadHost),
    };
    let path = match head.path {
        None | Some("") => Path::Origin("/".into()),
        Some("*") if head.method == "OPTIONS" => Path::Asterisk,
        Some(p) if p.starts_with('/') => Path::Origin(p.into()),
        Some(_) => return Err(RouteError::BadTarget),
    };
    Ok(Routed { host, key, path })
}

/// The one host a request names.
fn host(head: &RequestHead<'_>) -> Result<String, RouteError> {
    let field = match head.hosts {
        [] => None,
        [one] => Some(std::str::from_utf8(one).map_err(|_| RouteError::BadHost)?.trim_matches(OWS)),
        _ => return Err(RouteError::RepeatedHost),
    };
    let host = match (head.authority, field) {
        (Some(a), Some(f)) if !a.eq_ignore_ascii_case(f) => return Err(RouteError::HostMismatch),
        (Some(a), _) => a,
        (None, Some(f)) => f,
        (None, None) => return Err(RouteError::BadHost),
    };
    if host.is_empty() || host.len() > MAX_HOST {
        return Err(RouteError::BadHost);
    }
    Ok(host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head<'a>(authority: Option<&'a str>, hosts: &'a [&'a [u8]], path: Option<&'a str>) -> RequestHead<'a> {
        RequestHead { method: "GET", authority, path, hosts }
    }

    #[test]
    fn routes_by_label_or_custom_domain() {
        let r = route(&head(None, &[b"App-3000.Tunnel.Example"], Some("/x?y")), "tunnel.example").unwrap();
        assert_eq!((r.key.as_str(), r.path), ("app-3000", Path::Origin("/x?y".into())));
        assert_eq!(r.host, "App-3000.Tunnel.Example");
        let r = route(&head(Some("shop.example.org:8443"), &[], None), "tunnel.example").unwrap();
        assert_eq!((r.key.as_str(), r.path), ("shop.example.org", Path::Origin("/".into())));
        assert_eq!(
            route(&head(None, &[b"localhost"], None), "tunnel.example"),
            Err(RouteError::NotFound("localhost".into()))
        );
        assert_eq!(route(&head(None, &[b"a_b.tunnel.example"], None), "tunnel.example"), Err(RouteError::BadHost));
        assert_eq!(route(&head(None, &[], None), "tunnel.example"), Err(RouteError::BadHost));
    }

    #[test]
    fn one_host_only() {
        let two: &[&[u8]] = &[b"a-1.t.example", b"b-1.t.example"];
        assert_eq!(route(&head(None, two, None), "t.example"), Err(RouteError::RepeatedHost));
        let same: &[&[u8]] = &[b"A-1.t.example"];
        assert!(route(&head(Some("a-1.t.example"), same, None), "t.example").is_ok());
        let other: &[&[u8]] = &[b"b-1.t.example"];
        assert_eq!(route(&head(Some("a-1.t.example"), other, None), "t.example"), Err(RouteError::HostMismatch));
        let bad: &[&[u8]] = &[b"\xff"];
        assert_eq!(route(&head(None, bad, None), "t.example"), Err(RouteError::BadHost));
    }

    #[test]
    fn asterisk_only_for_options() {
        let hosts: &[&[u8]] = &[b"a-1.t.example"];
        let options = RequestHead { method: "OPTIONS", authority: None, path: Some("*"), hosts };
        assert_eq!(route(&options, "t.example").map(|r| r.path), Ok(Path::Asterisk));
        assert_eq!(route(&head(None, hosts, Some("*")), "t.example"), Err(RouteError::BadTarget));
    }
}
