//! Sign-in at the HTTP edge: the auth host's `/login` and `/callback`, a tunnel host's
//! `/.postern/auth` (the one-time code hop) and `/.postern/share` (share links), and the check
//! of each request to a tunnel that requires sign-in ([`Visitors::admit`]). The flow is
//! described in [`super`].

use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::Method;
use openidconnect::RedirectUrl;
use postern_proto::hostname;
use serde::{Deserialize, Serialize};

use super::oidc::{Pending, Person};
use super::records::{PassKind, Who};
use super::Visitors;
use crate::access::{self, Policy};
use crate::clock::unix_secs;
use crate::tunnel::registry::Registry;
use crate::tunnel::Tunnel;

/// The session cookie: `__Host-` makes browsers keep it to the exact host, `Secure`, `Path=/`.
pub const COOKIE: &str = "__Host-postern";
/// A tunnel host's path that turns a one-time code into a session.
pub const AUTH_PATH: &str = "/.postern/auth";
/// A tunnel host's path that turns a share link into a session.
pub const SHARE_PATH: &str = "/.postern/share";
/// The label of the relay-wide auth host, `auth.<domain>`; no tunnel may take it.
pub use postern_proto::hostname::AUTH_LABEL;
pub(super) const FLOW_COOKIE: &str = "postern_flow_";
/// Headers that carry identity to the local service, never taken from the public.
pub const IDENTITY_HEADERS: [&str; 4] = ["x-postern-email", "x-postern-groups", "x-postern-pass", SERVICE_HEADER];
/// Where a program puts its service token when `Authorization` is the local service's own.
pub const SERVICE_HEADER: &str = "x-postern-service-token";

/// Where the edge is reached: for building the URLs of the flow.
#[derive(Debug, Clone, Copy)]
pub struct Site<'a> {
    /// The relay's domain.
    pub domain: &'a str,
    /// The public HTTPS port (left out of URLs when 443).
    pub https_port: u16,
}

impl Site<'_> {
    /// `https://<host>[:port]`.
    pub fn origin(&self, host: &str) -> String {
        let name = hostname::normalize(host).unwrap_or_default();
        if self.https_port == 443 {
            format!("https://{name}")
        } else {
            format!("https://{name}:{}", self.https_port)
        }
    }

    /// `auth.<domain>`.
    pub fn auth_host(&self) -> String {
        format!("{AUTH_LABEL}.{}", self.domain)
    }

    pub(super) fn redirect_uri(&self) -> Option<RedirectUrl> {
        RedirectUrl::new(format!("{}/callback", self.origin(&self.auth_host()))).ok()
    }

    /// Where a browser without a session goes to sign in, to come back to `host` + `path`.
    pub fn login_url(&self, host: &str, path: &str) -> String {
        let back = format!("{}{path}", self.origin(host));
        format!("{}/login?rd={}", self.origin(&self.auth_host()), encode(&back))
    }
}

pub(super) fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let mut out = Vec::with_capacity(s.len());
    let mut bytes = s.bytes();
    while let Some(b) = bytes.next() {
        match b {
            b'%' => {
                let hex = [bytes.next()?, bytes.next()?];
                out.push(u8::from_str_radix(std::str::from_utf8(&hex).ok()?, 16).ok()?);
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
    }
    String::from_utf8(out).ok()
}

/// The value of query parameter `name`.
pub fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == name).then(|| decode(v)).flatten()
    })
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (k, v) = c.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

/// Removes from a public request what only the relay may say or see: identity headers, the
/// session cookie, and a service token in `Authorization`.
pub fn strip_public(headers: &mut HeaderMap) {
    for name in IDENTITY_HEADERS {
        headers.remove(name);
    }
    let bearer_pass = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().get(7..).is_some_and(|t| t.starts_with(super::passes::SERVICE_PREFIX)));
    if bearer_pass {
        headers.remove(header::AUTHORIZATION);
    }
    if !headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| v.as_bytes().windows(COOKIE.len()).any(|w| w == COOKIE.as_bytes()))
    {
        return;
    }
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty() && c.split_once('=').is_none_or(|(k, _)| k != COOKIE))
        .map(str::to_string)
        .collect();
    headers.remove(header::COOKIE);
    if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
        if !kept.is_empty() {
            headers.insert(header::COOKIE, v);
        }
    }
}

/// Why a request to a tunnel that requires sign-in was not let in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignIn {
    /// No valid session or service token: a browser is sent to sign in, a program gets `401`.
    Needed,
}

/// True when the request is a browser asking for a page (it gets a redirect, not a `401`).
pub fn is_navigation(method: &Method, headers: &HeaderMap) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && !headers.contains_key(header::UPGRADE)
        && headers.get_all(header::ACCEPT).iter().any(|v| v.as_bytes().windows(9).any(|w| w == b"text/html"))
}

impl Visitors {
    /// Lets a request into `tunnel` (which requires sign-in) by its session cookie or service
    /// token; returns the identity headers for the local service.
    pub fn admit(
        &self,
        tunnel: &Tunnel,
        policies: &[Policy],
        headers: &HeaderMap,
        host: &str,
    ) -> Result<HeaderMap, SignIn> {
        let mut out = HeaderMap::new();
        let put = |out: &mut HeaderMap, name: &'static str, value: &str| {
            if let Ok(v) = HeaderValue::from_str(value) {
                out.insert(name, v);
            }
        };
        let presented = headers.get(SERVICE_HEADER).and_then(|v| v.to_str().ok()).or_else(|| {
            let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
            auth.strip_prefix("Bearer ").filter(|t| t.starts_with(super::passes::SERVICE_PREFIX))
        });
        if let Some(token) = presented {
            if let Some(pass) =
                self.check_pass(PassKind::Service, token.trim(), (&tunnel.info.name, &tunnel.info.owner))
            {
                if access::pass_allowed(policies) {
                    put(&mut out, "x-postern-pass", &format!("service:{}", pass.id));
                    return Ok(out);
                }
            }
            return Err(SignIn::Needed);
        }
        let host = hostname::normalize(host).map_err(|_| SignIn::Needed)?;
        let sealed = cookie(headers, COOKIE).ok_or(SignIn::Needed)?;
        let sid: String = self.sealer.open(&format!("session:{host}"), sealed).ok_or(SignIn::Needed)?;
        let session = self
            .sessions
            .get(&sid, unix_secs(), |s| s.tunnel == tunnel.info.name && s.owner == tunnel.info.owner)
            .ok_or(SignIn::Needed)?;
        match &session.who {
            Who::Oidc { email, groups } => {
                put(&mut out, "x-postern-email", email);
                if !groups.is_empty() {
                    put(&mut out, "x-postern-groups", &groups.join(","));
                }
            }
            Who::Share { pass } if access::pass_allowed(policies) => {
                put(&mut out, "x-postern-pass", &format!("share:{pass}"));
            }
            Who::Share { .. } => return Err(SignIn::Needed),
        }
        Ok(out)
    }
}

/// A sealed one-time code: the person, for one host, back to one path.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Code {
    pub(super) id: String,
    pub(super) person: Person,
    pub(super) host: String,
    pub(super) path: String,
    pub(super) exp: u64,
}

/// The login flow's state, sealed in a cookie of the auth host.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Flow {
    pub(super) pending: Pending,
    pub(super) provider: usize,
    pub(super) rd: String,
    pub(super) exp: u64,
}

/// Splits `https://host[:port]/path` into its host and path.
pub(super) fn split_url(url: &str) -> Option<(String, String)> {
    let rest = url.strip_prefix("https://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    // `//x` and `/\x` are other hosts to a browser; no control characters either.
    if path.starts_with("//") || path.contains('\\') || path.chars().any(char::is_control) || authority.contains('@') {
        return None;
    }
    Some((hostname::normalize(authority).ok()?, path.to_string()))
}

/// The tunnel `host` names on this relay.
pub(super) fn tunnel_of(registry: &Registry, host: &str, domain: &str) -> Option<Arc<Tunnel>> {
    let key = match hostname::parse(host, domain) {
        Ok(r) => r.label,
        Err(_) => host.to_string(),
    };
    registry.get(&key)
}
