//! The public host name grammar: `<id>-<port>.<domain>` and `<id>.<domain>`.
//!
//! - The tunnel label is the single DNS label in front of the relay's domain.
//! - When the label's last `-` segment is a port number (1-65535, no leading zero), the label
//!   is `<id>-<port>`; `<id>` may itself contain hyphens (`my-app-3000` is id `my-app`, port
//!   3000). Otherwise the whole label is an `<id>` that means the client's default port.
//! - Matching is case-insensitive; a trailing dot and a `:port` suffix (as in a Host header) are
//!   ignored. Labels follow DNS rules: 1-63 characters of `a-z`, `0-9` and `-`, not starting or
//!   ending with `-`.

/// Where a host name points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The whole label, lowercase: the registry key (`my-app-3000` or `my-app`).
    pub label: String,
    /// The `<id>` part.
    pub id: String,
    /// The port, when the label names one.
    pub port: Option<u16>,
}

/// Why a host name does not route.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// No host at all.
    #[error("the request has no Host")]
    Empty,
    /// Not syntactically a host name (bad characters, empty or overlong labels).
    #[error("{0:?} is not a valid host name")]
    Invalid(String),
    /// A valid name, but not under this relay's domain, or with more than one label in front.
    #[error("{0:?} is not a tunnel name under this relay's domain")]
    NotOurs(String),
}

/// Checks one DNS label (already lowercase).
pub fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Strips `:port` and a trailing dot, lowercases, and checks every label.
pub fn normalize(host: &str) -> Result<String, HostError> {
    let host = host.trim();
    if host.is_empty() {
        return Err(HostError::Empty);
    }
    let invalid = || HostError::Invalid(host.chars().take(300).collect());
    // IPv6 literals are never tunnel names.
    if host.starts_with('[') {
        return Err(invalid());
    }
    let name = match host.rsplit_once(':') {
        Some((name, port)) => {
            if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) || port.len() > 5 {
                return Err(invalid());
            }
            name
        }
        None => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
    if name.is_empty() || name.len() > 253 || !name.split('.').all(is_label) {
        return Err(invalid());
    }
    Ok(name)
}

/// Parses a port segment: 1-65535, digits only, no leading zero.
fn port_segment(s: &str) -> Option<u16> {
    if s.is_empty() || s.len() > 5 || s.starts_with('0') || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok().filter(|p| *p != 0)
}

/// Splits a tunnel label into id and port.
pub fn split_label(label: &str) -> Route {
    if let Some((id, port)) = label.rsplit_once('-') {
        if let Some(port) = port_segment(port) {
            if is_label(id) {
                return Route { label: label.to_string(), id: id.to_string(), port: Some(port) };
            }
        }
    }
    Route { label: label.to_string(), id: label.to_string(), port: None }
}

/// Routes `host` (a Host header or `:authority`) under `domain`.
pub fn parse(host: &str, domain: &str) -> Result<Route, HostError> {
    let name = normalize(host)?;
    let domain = domain.strip_suffix('.').unwrap_or(domain).to_ascii_lowercase();
    let label = name
        .strip_suffix(domain.as_str())
        .and_then(|rest| rest.strip_suffix('.'))
        .filter(|label| !label.contains('.'))
        .ok_or_else(|| HostError::NotOurs(name.clone()))?;
    Ok(split_label(label))
}

/// The label for `id` and `port`, as the relay registers it.
pub fn label(id: &str, port: u16) -> String {
    format!("{id}-{port}")
}

/// Prefix of TCP tunnel names.
pub const TCP_PREFIX: &str = "tcp-";

/// The name of the TCP tunnel on public port `port`: `tcp-<port>`.
pub fn tcp_name(port: u16) -> String {
    format!("{TCP_PREFIX}{port}")
}

/// The label of the relay's sign-in host, `auth.<domain>`.
pub const AUTH_LABEL: &str = "auth";

/// True when an HTTP tunnel id would take names the relay keeps: `tcp` (whose labels are
/// `tcp-<port>`), every id starting with `tcp-` (whose bare label could be `tcp-<port>`), and
/// `auth` (the sign-in host).
pub fn is_reserved_id(id: &str) -> bool {
    id.eq_ignore_ascii_case("tcp")
        || id.eq_ignore_ascii_case(AUTH_LABEL)
        || id.get(..TCP_PREFIX.len()).is_some_and(|p| p.eq_ignore_ascii_case(TCP_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(label: &str, id: &str, port: Option<u16>) -> Route {
        Route { label: label.into(), id: id.into(), port }
    }

    #[test]
    fn id_and_port() {
        assert_eq!(parse("myapp-3000.example.com", "example.com"), Ok(route("myapp-3000", "myapp", Some(3000))));
        assert_eq!(parse("my-app-3000.example.com", "example.com"), Ok(route("my-app-3000", "my-app", Some(3000))));
        assert_eq!(parse("ws-123-8080.localhost", "localhost"), Ok(route("ws-123-8080", "ws-123", Some(8080))));
    }

    #[test]
    fn default_port_form() {
        assert_eq!(parse("myapp.example.com", "example.com"), Ok(route("myapp", "myapp", None)));
        // Not a port: leading zero, zero, too large, not numeric.
        assert_eq!(parse("app-v2.example.com", "example.com"), Ok(route("app-v2", "app-v2", None)));
        assert_eq!(parse("app-080.example.com", "example.com"), Ok(route("app-080", "app-080", None)));
        assert_eq!(parse("app-0.example.com", "example.com"), Ok(route("app-0", "app-0", None)));
        assert_eq!(parse("app-70000.example.com", "example.com"), Ok(route("app-70000", "app-70000", None)));
        // A bare number is an id, not a port with an empty id.
        assert_eq!(parse("3000.example.com", "example.com"), Ok(route("3000", "3000", None)));
    }

    #[test]
    fn case_trailing_dot_and_port_suffix() {
        let want = Ok(route("myapp-3000", "myapp", Some(3000)));
        assert_eq!(parse("MyApp-3000.Example.COM", "example.com"), want);
        assert_eq!(parse("myapp-3000.example.com.", "example.com"), want);
        assert_eq!(parse("myapp-3000.example.com:8443", "example.com"), want);
        assert_eq!(parse("myapp-3000.example.com.:443", "example.com."), want);
    }

    #[test]
    fn invalid_hosts() {
        for bad in [
            "",
            " ",
            "my_app-3000.example.com",
            "-app-3000.example.com",
            "app-.example.com",
            "a..example.com",
            "app-3000.example.com:",
            "app-3000.example.com:abc",
            "app-3000.example.com:123456",
            "[::1]:8443",
            "app 3000.example.com",
            "app-3000.exa%mple.com",
        ] {
            assert!(matches!(parse(bad, "example.com"), Err(HostError::Invalid(_) | HostError::Empty)), "{bad:?}");
        }
        let long = format!("{}.example.com", "a".repeat(64));
        assert!(matches!(parse(&long, "example.com"), Err(HostError::Invalid(_))));
    }

    #[test]
    fn not_under_our_domain() {
        for other in ["example.com", "app.other.com", "a.b.example.com", "app.notexample.com", "app-3000.example.co"] {
            assert!(matches!(parse(other, "example.com"), Err(HostError::NotOurs(_))), "{other:?}");
        }
    }
}
