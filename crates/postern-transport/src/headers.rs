//! Header hygiene for proxied HTTP: hop-by-hop headers never cross a proxy (RFC 9110 §7.6.1),
//! and HTTP/2 forbids connection-specific ones outright.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that only describe one hop.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`. `TE: trailers` survives,
/// because gRPC needs it end to end and HTTP/2 allows exactly that value.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    let te_trailers = headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("trailers")));
    headers.remove(header::TE);
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Removes every header whose name starts with `prefix` (our own metadata, `postern-`).
pub fn strip_prefixed(headers: &mut HeaderMap, prefix: &str) {
    let ours: Vec<HeaderName> = headers.keys().filter(|k| k.as_str().starts_with(prefix)).cloned().collect();
    for name in ours {
        headers.remove(name);
    }
}

/// Removes what never crosses the agent link's edges: hop-by-hop headers and postern's own
/// `postern-` metadata. The relay applies it to what the public sends and what the agent
/// answers; the agent to what the relay forwards and what the local service answers. So a
/// visitor cannot forge stream metadata, and a local service's `postern-reason` header cannot
/// pass for the agent's refusal.
pub fn strip_for_forwarding(headers: &mut HeaderMap) {
    strip_hop_by_hop(headers);
    strip_prefixed(headers, postern_proto::stream::PREFIX);
}

/// True when the request asks to switch protocols (`Connection: upgrade` plus `Upgrade`).
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<HeaderValue> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    if connection_upgrade {
        headers.get(header::UPGRADE).cloned()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop_and_connection_named() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, x-secret-hop"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2, "{h:?}");
        assert_eq!(h.get(header::TE).map(|v| v.as_bytes()), Some(&b"trailers"[..]));
        assert!(h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn detects_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert!(upgrade_protocol(&h).is_none());
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(upgrade_protocol(&h), Some(HeaderValue::from_static("websocket")));
    }
}
