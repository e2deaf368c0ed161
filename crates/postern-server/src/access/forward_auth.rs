//! Forward-auth: before a request is proxied, the relay asks the operator's auth service
//! (Traefik's and Caddy's model, so existing SSO gateways such as oauth2-proxy or Authelia
//! work).
//!
//! The relay sends `GET <url>` with the visitor's headers (hop-by-hop ones removed) plus
//! `X-Forwarded-Method`, `-Proto`, `-Host`, `-Uri` and `-For`. A 2xx answer lets the request
//! through, with the configured headers of that answer (e.g. `Remote-User`) copied onto it. Any
//! other answer is returned to the visitor as is (so a login redirect works), its body capped at
//! 64 KiB. No answer within 5 s is a `502`.

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full, Limited};
use postern_transport::headers::strip_hop_by_hop;

use crate::access::ForwardAuth;
use crate::outbound::HttpsClient;

const TIMEOUT: Duration = Duration::from_secs(5);
const MAX_BODY: usize = 64 * 1024;

/// What the auth service decided.
#[derive(Debug)]
pub enum Verdict {
    /// Let the request through, adding these headers.
    Allow(HeaderMap),
    /// Answer the visitor with this.
    Deny(Response<Full<Bytes>>),
    /// The service failed.
    Unavailable(String),
}

/// The request being asked about.
#[derive(Debug)]
pub struct Asking<'a> {
    /// Its method.
    pub method: &'a Method,
    /// Its path and query.
    pub uri: &'a str,
    /// Its headers.
    pub headers: &'a HeaderMap,
    /// The visitor's address.
    pub peer: IpAddr,
    /// Whether it came over HTTPS.
    pub secure: bool,
    /// Its host.
    pub host: &'a str,
}

/// Asks the auth service about a request.
pub async fn check(client: &HttpsClient, fa: &ForwardAuth, a: &Asking<'_>) -> Verdict {
    let (method, uri, peer, secure, host) = (a.method, a.uri, a.peer, a.secure, a.host);
    let mut h = a.headers.clone();
    strip_hop_by_hop(&mut h);
    for name in [header::HOST, header::CONTENT_LENGTH] {
        h.remove(name);
    }
    let mut put = |name: &'static str, value: &str| {
        if let Ok(v) = HeaderValue::from_str(value) {
            h.insert(name, v);
        }
    };
    put("x-forwarded-method", method.as_str());
    put("x-forwarded-proto", if secure { "https" } else { "http" });
    put("x-forwarded-host", host);
    put("x-forwarded-uri", uri);
    put("x-forwarded-for", &peer.to_string());
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.uri_mut() = fa.url.clone();
    *req.headers_mut() = h;
    let resp = match tokio::time::timeout(TIMEOUT, client.request(req)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Verdict::Unavailable(e.to_string()),
        Err(_) => return Verdict::Unavailable(format!("no answer within {TIMEOUT:?}")),
    };
    if resp.status().is_success() {
        let mut add = HeaderMap::new();
        for name in &fa.copy_headers {
            for v in resp.headers().get_all(name) {
                add.append(name.clone(), v.clone());
            }
        }
        return Verdict::Allow(add);
    }
    let (mut parts, body) = resp.into_parts();
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::CONTENT_LENGTH);
    Verdict::Deny(Response::from_parts(parts, Full::new(body)))
}
