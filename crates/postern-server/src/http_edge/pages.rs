//! The relay's own answers: small branded error pages that say which case happened and leak
//! nothing about the relay's internals. Each carries a `postern-error` header with a stable
//! machine-readable code.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::Full;
use postern_proto::hostname;

/// Which of the relay's own errors this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeError {
    /// The Host is missing, repeated, disagrees with the request target, or is not a valid
    /// host name.
    BadHost,
    /// The request target is malformed (`*` for another method than OPTIONS).
    BadTarget,
    /// An upgrade request (WebSocket) that carries a body.
    UpgradeWithBody,
    /// CONNECT: the relay is not a forward proxy.
    MethodNotAllowed,
    /// A forwarded request for a name this relay does not hold (to its peer, never the public).
    NotHere,
    /// The tunnel's agent is on another relay of the cluster, which cannot be reached.
    RelayUnreachable,
    /// No tunnel has this name.
    TunnelNotFound,
    /// The tunnel's agent is connecting or gone.
    AgentUnavailable,
    /// The agent is there but its local service refused the connection.
    LocalRefused,
    /// The local service answered with something that is not HTTP, or broke off.
    LocalFailed,
    /// The visitor's address is not allowed on this tunnel.
    Forbidden,
    /// The tunnel requires credentials the visitor did not give.
    Unauthorized,
    /// The tunnel's owner is over a quota (requests, streams).
    QuotaExceeded,
    /// The tunnel's owner has used its volume (bytes) for this period.
    VolumeExceeded,
    /// The tunnel's client has too many streams open.
    AgentBusy,
    /// The operator's forward-auth service could not be reached.
    AuthUnavailable,
    /// The tunnel requires sign-in and the request (not a browser's page) carries no session
    /// or service token.
    SignInRequired,
    /// A sign-in step with a forged, expired or replayed state or code, or a bad link.
    SignInFailed,
    /// The signed-in person is not let in, or the provider said no.
    SignInDenied,
    /// The tunnel requires sign-in and the relay has no identity provider.
    SignInUnavailable,
    /// The identity provider cannot be reached, or its answer does not verify.
    IdpUnavailable,
    /// A share link that is void, expired, used up or revoked.
    ShareInvalid,
}

impl EdgeError {
    /// HTTP status for the case.
    pub fn status(self) -> StatusCode {
        match self {
            Self::BadHost | Self::BadTarget | Self::UpgradeWithBody => StatusCode::BAD_REQUEST,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::NotHere => StatusCode::MISDIRECTED_REQUEST,
            Self::RelayUnreachable => StatusCode::SERVICE_UNAVAILABLE,
            Self::TunnelNotFound => StatusCode::NOT_FOUND,
            Self::AgentUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            Self::LocalRefused | Self::LocalFailed | Self::AuthUnavailable => StatusCode::BAD_GATEWAY,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::QuotaExceeded | Self::VolumeExceeded | Self::AgentBusy => StatusCode::TOO_MANY_REQUESTS,
            Self::SignInRequired | Self::SignInUnavailable => StatusCode::UNAUTHORIZED,
            Self::SignInFailed => StatusCode::BAD_REQUEST,
            Self::SignInDenied | Self::ShareInvalid => StatusCode::FORBIDDEN,
            Self::IdpUnavailable => StatusCode::BAD_GATEWAY,
        }
    }

    /// Stable code for the `postern-error` header.
    pub fn code(self) -> &'static str {
        match self {
            Self::BadHost => "bad-host",
            Self::BadTarget => "bad-target",
            Self::UpgradeWithBody => "upgrade-with-body",
            Self::MethodNotAllowed => "method-not-allowed",
            Self::NotHere => crate::cluster::forward::NOT_HERE,
            Self::RelayUnreachable => "relay-unreachable",
            Self::TunnelNotFound => "tunnel-not-found",
            Self::AgentUnavailable => "agent-unavailable",
            Self::LocalRefused => "local-refused",
            Self::LocalFailed => "local-failed",
            Self::Forbidden => "forbidden",
            Self::Unauthorized => "unauthorized",
            Self::QuotaExceeded | Self::VolumeExceeded => "quota-exceeded",
            Self::AgentBusy => "agent-busy",
            Self::AuthUnavailable => "auth-unavailable",
            Self::SignInRequired => "sign-in-required",
            Self::SignInFailed => "sign-in-failed",
            Self::SignInDenied => "sign-in-denied",
            Self::SignInUnavailable => "sign-in-unavailable",
            Self::IdpUnavailable => "idp-unavailable",
            Self::ShareInvalid => "share-invalid",
        }
    }

    fn headline(self) -> &'static str {
        match self {
            Self::BadHost => "Bad host name",
            Self::BadTarget => "Bad request target",
            Self::UpgradeWithBody => "Upgrade with a body",
            Self::MethodNotAllowed => "Method not allowed",
            Self::NotHere => "Not on this relay",
            Self::RelayUnreachable => "Tunnel unreachable",
            Self::TunnelNotFound => "No tunnel here",
            Self::AgentUnavailable => "Tunnel offline",
            Self::LocalRefused => "Local service unreachable",
            Self::LocalFailed => "Local service error",
            Self::Forbidden => "Forbidden",
            Self::Unauthorized => "Authentication required",
            Self::QuotaExceeded => "Too many requests",
            Self::VolumeExceeded => "Data transfer quota used up",
            Self::AgentBusy => "Tunnel busy",
            Self::AuthUnavailable => "Authentication service unavailable",
            Self::SignInRequired => "Sign-in required",
            Self::SignInFailed => "Sign-in failed",
            Self::SignInDenied => "Access denied",
            Self::SignInUnavailable => "Sign-in unavailable",
            Self::IdpUnavailable => "Identity provider unavailable",
            Self::ShareInvalid => "Share link not valid",
        }
    }

    fn explain(self) -> &'static str {
        match self {
            Self::BadHost => {
                "The request's host name is missing, malformed, given twice, or different from the one in the request target."
            }
            Self::BadTarget => "The request target is malformed.",
            Self::UpgradeWithBody => "A request that asks to switch protocols must not carry a body.",
            Self::MethodNotAllowed => "This relay forwards requests to tunnels; it is not a forward proxy (CONNECT).",
            Self::NotHere => "This relay does not hold the tunnel.",
            Self::RelayUnreachable => {
                "The tunnel's client is connected to another relay of this cluster, which cannot be reached right now. Try again shortly."
            }
            Self::TunnelNotFound => "No tunnel is registered under this name.",
            Self::AgentUnavailable => {
                "The tunnel exists, but its client is not connected right now. Try again shortly."
            }
            Self::LocalRefused => {
                "The tunnel's client is connected, but the service it forwards to refused the connection."
            }
            Self::LocalFailed => "The service behind this tunnel failed to answer properly.",
            Self::Forbidden => "Your address is not allowed to use this tunnel.",
            Self::Unauthorized => "This tunnel requires credentials.",
            Self::QuotaExceeded => "This tunnel's owner is over its request quota. Try again shortly.",
            Self::VolumeExceeded => {
                "This tunnel's owner has used all the data transfer its plan allows for this period. It opens again when the period renews; the Retry-After header says when."
            }
            Self::AgentBusy => "This tunnel has too many requests in flight. Try again shortly.",
            Self::AuthUnavailable => "The service that checks access to this tunnel could not be reached.",
            Self::SignInRequired => {
                "This tunnel requires sign-in. Open it in a browser to sign in; programs send a service token as `Authorization: Bearer pss1.…` or `X-Postern-Service-Token`."
            }
            Self::SignInFailed => {
                "This sign-in link is not valid: it expired, was already used, or was not made for this browser. Open the tunnel again to sign in."
            }
            Self::SignInDenied => "You are signed in, but not allowed to use this tunnel. Ask its owner for access.",
            Self::SignInUnavailable => {
                "This tunnel requires sign-in, but this relay has no identity provider. Ask the tunnel's owner for a share link."
            }
            Self::IdpUnavailable => {
                "The identity provider could not be reached, or its answer could not be verified. Try again shortly."
            }
            Self::ShareInvalid => "This share link has expired, was revoked, or was used up. Ask the tunnel's owner for a new one.",
        }
    }
}

/// Builds the page for `err`; `host` is shown (escaped) when known.
pub fn page(err: EdgeError, host: Option<&str>) -> Response<Full<Bytes>> {
    let status = err.status();
    let host = host.map(|h| format!("<p><code>{}</code></p>", escape(h))).unwrap_or_default();
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>{code} {headline} · postern</title>\
         <style>body{{font:16px/1.5 system-ui,sans-serif;max-width:36em;margin:4em auto;padding:0 1em;color:#222}}\
         h1{{font-size:1.4em}}small{{color:#888}}</style>\
         <h1>{code} · {headline}</h1><p>{explain}</p>{host}<small>postern relay</small>\n",
        code = status.as_u16(),
        headline = err.headline(),
        explain = err.explain(),
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("postern-error", HeaderValue::from_static(err.code()));
    match err {
        EdgeError::QuotaExceeded | EdgeError::AgentBusy | EdgeError::RelayUnreachable => {
            h.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        EdgeError::Unauthorized => {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"postern\""));
        }
        EdgeError::SignInRequired => {
            h.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"postern\""));
        }
        EdgeError::MethodNotAllowed => {
            h.insert(header::ALLOW, HeaderValue::from_static("OPTIONS, GET, HEAD, POST, PUT, PATCH, DELETE"));
        }
        _ => {}
    }
    resp
}

/// `302 Found` to `location`, not to be cached.
pub fn found(location: &str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// `308` to the same place over HTTPS.
pub fn redirect(host: &str, path: &str, https_port: u16) -> Response<Full<Bytes>> {
    let name = hostname::normalize(host).unwrap_or_default();
    let location =
        if https_port == 443 { format!("https://{name}{path}") } else { format!("https://{name}:{https_port}{path}") };
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

fn escape(s: &str) -> String {
    s.chars()
        .take(255)
        .map(|c| match c {
            '<' => "&lt;".to_string(),
            '>' => "&gt;".to_string(),
            '&' => "&amp;".to_string(),
            '"' => "&quot;".to_string(),
            c => c.to_string(),
        })
        .collect()
}
