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
//! - A host may be shared by tunnels that each serve a path prefix ([`path_prefix`]); a prefix
//!   covers whole segments only ([`covers`]), and a tunnel may have it taken off ([`strip`]).

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

/// Longest path prefix a tunnel may claim.
pub const MAX_PREFIX: usize = 128;

/// Checks a path prefix a tunnel asks for (`/api`, `/v1/ws`) and gives its one spelling: it
/// starts with `/`, has no empty, `.` or `..` segment, no query or fragment, only unreserved
/// and sub-delim characters (no `%`: the edge matches the path as sent, undecoded), and no
/// trailing `/`. `/` alone is not a prefix: the whole host is what a tunnel without a path
/// serves.
pub fn path_prefix(asked: &str) -> Result<String, String> {
    let p = asked.trim_end_matches('/');
    if !asked.starts_with('/') {
        return Err(format!("path {asked:?} must start with '/'"));
    }
    if p.is_empty() {
        return Err("path '/' is the whole host: leave --path out for that".into());
    }
    if p.len() > MAX_PREFIX {
        return Err(format!("path is longer than {MAX_PREFIX} characters"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@".contains(c);
    for segment in p[1..].split('/') {
        if segment.is_empty() || segment == "." || segment == ".." || !segment.chars().all(allowed) {
            return Err(format!(
                "path {asked:?}: use segments of letters, digits and -._~!$&'()*+,;=:@ separated by single '/'"
            ));
        }
    }
    Ok(p.to_string())
}

/// Whether `prefix` (as [`path_prefix`] spells it) covers the request target `path` (path and
/// query): the same path, or one that goes on after a `/`, `?` or `#` (so `/api` covers
/// `/api`, `/api/x` and `/api?q`, not `/apix`).
pub fn covers(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with(['/', '?', '#']),
        None => false,
    }
}

/// The request target `path` without `prefix` (which must cover it), for a tunnel that strips
/// it: `/api/users?x` becomes `/users?x`, `/api` and `/api?x` become `/` and `/?x`.
pub fn strip(prefix: &str, path: &str) -> String {
    let rest = path.strip_prefix(prefix).unwrap_or(path);
    if rest.starts_with('/') {
        rest.to_string()
    } else {
        format!("/{rest}")
    }
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
    fn prefixes_have_one_spelling() {
        assert_eq!(path_prefix("/api/"), Ok("/api".into()));
        assert_eq!(path_prefix("/v1/ws"), Ok("/v1/ws".into()));
        for bad in ["", "api", "/", "//", "/a//b", "/a/../b", "/./a", "/a?b", "/a#b", "/a%2fb", "/a b", "/ä"] {
            assert!(path_prefix(bad).is_err(), "{bad:?}");
        }
        assert!(path_prefix(&format!("/{}", "a".repeat(MAX_PREFIX))).is_err());
    }

    #[test]
    fn a_prefix_covers_whole_segments_only() {
        for yes in ["/api", "/api/", "/api/users", "/api?x=1", "/api#f"] {
            assert!(covers("/api", yes), "{yes}");
        }
        for no in ["/apix", "/ap", "/", "/API", "/x/api"] {
            assert!(!covers("/api", no), "{no}");
        }
        assert_eq!(strip("/api", "/api/users?x"), "/users?x");
        assert_eq!(strip("/api", "/api"), "/");
        assert_eq!(strip("/api", "/api?x"), "/?x");
        assert_eq!(strip("/api", "/api/"), "/");
    }

    #[test]
    fn asterisk_only_for_options() {
        let hosts: &[&[u8]] = &[b"a-1.t.example"];
        let options = RequestHead { method: "OPTIONS", authority: None, path: Some("*"), hosts };
        assert_eq!(route(&options, "t.example").map(|r| r.path), Ok(Path::Asterisk));
        assert_eq!(route(&head(None, hosts, Some("*")), "t.example"), Err(RouteError::BadTarget));
    }
}
