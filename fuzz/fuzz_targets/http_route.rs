//! Fuzzes the HTTP edge's routing decision (`postern_proto::route`): method, authority, path
//! and any number of `Host` fields, never a panic; a routed request names exactly one host,
//! its key is a valid tunnel label or a normalized custom domain, and its path is `*` only
//! for OPTIONS. The path-prefix helpers (`path_prefix`, `covers`, `strip`) run on the same path.
#![no_main]

use libfuzzer_sys::fuzz_target;
use postern_proto::hostname::{is_label, normalize};
use postern_proto::route::{covers, path_prefix, route, strip, Path, RequestHead};

fuzz_target!(|data: &[u8]| {
    // Fields separated by newlines: method, authority ("" for none), path ("" for none),
    // then Host field lines.
    let mut parts = data.split(|&b| b == b'\n');
    let (Some(method), Some(authority), Some(path)) = (parts.next(), parts.next(), parts.next()) else { return };
    let (Ok(method), Ok(authority), Ok(path)) =
        (std::str::from_utf8(method), std::str::from_utf8(authority), std::str::from_utf8(path))
    else {
        return;
    };
    let hosts: Vec<&[u8]> = parts.collect();
    let head = RequestHead {
        method,
        authority: (!authority.is_empty()).then_some(authority),
        path: (!path.is_empty()).then_some(path),
        hosts: &hosts,
    };
    // The path-prefix helpers on the same input: a prefix that passes has one spelling, covers
    // itself, and stripping any path it covers leaves a path.
    if let Ok(prefix) = path_prefix(path) {
        assert_eq!(path_prefix(&prefix).as_deref(), Ok(prefix.as_str()), "a prefix is spelt one way");
        assert!(covers(&prefix, &prefix) && !prefix.contains("//") && !prefix.ends_with('/'));
        assert!(!covers(&prefix, &format!("{prefix}x")), "a prefix covers whole segments only");
    }
    if covers("/api", path) {
        assert!(strip("/api", path).starts_with('/'));
    }
    let Ok(routed) = route(&head, "tunnel.example") else { return };
    assert!(hosts.len() <= 1, "routed with {} Host fields", hosts.len());
    if let (Some(a), [h]) = (head.authority, hosts.as_slice()) {
        let h = std::str::from_utf8(h).expect("a routed Host is UTF-8").trim_matches([' ', '\t']);
        assert!(a.eq_ignore_ascii_case(h), "authority and Host disagree");
    }
    let name = normalize(&routed.host).expect("a routed host is a host name");
    if routed.key.contains('.') {
        assert_eq!(routed.key, name, "a custom-domain key is the normalized host");
    } else {
        assert!(is_label(&routed.key), "a tunnel key is one DNS label");
    }
    match routed.path {
        Path::Asterisk => assert_eq!(method, "OPTIONS"),
        Path::Origin(p) => assert!(p.starts_with('/')),
    }
});
