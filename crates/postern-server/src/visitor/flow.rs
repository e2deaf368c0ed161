//! The pages of the sign-in flow ([`super`] describes it): the auth host's `/login` and
//! `/callback`, and a tunnel host's `/.postern/auth` and `/.postern/share`.
//!
//! Every failure is one of the relay's small pages (`http_edge::pages`): a forged, expired or
//! replayed state or code is `400 sign-in-failed`; a person or link not let in is `403
//! sign-in-denied`; a provider that cannot be reached, or whose answer does not verify, is
//! `502 idp-unavailable`. The pages never show the provider's address or its error text (the
//! log has them).

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue};
use http::{Method, Response, Uri};
use http_body_util::Full;
use postern_proto::hostname;
use subtle::ConstantTimeEq;
use tracing::{info, warn};

use super::edge::{cookie, query_param, split_url, tunnel_of, Code, Flow, Site, COOKIE, FLOW_COOKIE};
use super::oidc::OidcError;
use super::records::{random_id, Who};
use super::{Visitors, CODE_TTL, FLOW_TTL};
use crate::access::{self, Policies};
use crate::clock::unix_secs;
use crate::http_edge::pages::{found, page, EdgeError};
use crate::tunnel::registry::Registry;
use crate::tunnel::Tunnel;

/// What the auth host's pages read.
#[derive(Debug)]
pub struct AuthHost<'a> {
    /// URLs.
    pub site: Site<'a>,
    /// Tunnels on this relay (a sign-in is checked against the tunnel's rules before the hop
    /// when the tunnel is here).
    pub registry: &'a Registry,
    /// The operator's policies.
    pub policies: &'a Policies,
}

type Page = Response<Full<Bytes>>;

fn fail(err: EdgeError, host: &str) -> Page {
    page(err, Some(host))
}

fn set_cookie(resp: &mut Page, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        resp.headers_mut().append(http::header::SET_COOKIE, v);
    }
}

fn escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '<' => "&lt;".into(),
            '>' => "&gt;".into(),
            '&' => "&amp;".into(),
            '"' => "&quot;".into(),
            '\'' => "&#39;".into(),
            c => c.to_string(),
        })
        .collect()
}

/// The page listing the providers, when there are several.
fn choose(visitors: &Visitors, rd: &str) -> Page {
    let links: String = visitors
        .providers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let href = format!("/login?provider={i}&rd={}", super::edge::encode(rd));
            format!("<li><a href=\"{}\">{}</a></li>", escape(&href), escape(&p.name))
        })
        .collect();
    let body = format!(
        "<!doctype html><meta charset=\"utf-8\"><title>Sign in · postern</title>\
         <h1>Sign in</h1><p>Choose how to sign in:</p><ul>{links}</ul>"
    );
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut().insert(http::header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

impl Visitors {
    /// Answers a request to the auth host.
    pub async fn auth_host(&self, method: &Method, uri: &Uri, headers: &HeaderMap, at: &AuthHost<'_>) -> Page {
        let host = at.site.auth_host();
        if method != Method::GET && method != Method::HEAD {
            return fail(EdgeError::MethodNotAllowed, &host);
        }
        match uri.path() {
            "/login" => self.login(uri, at).await,
            "/callback" => self.callback(uri, headers, at).await,
            _ => fail(EdgeError::TunnelNotFound, &host),
        }
    }

    async fn login(&self, uri: &Uri, at: &AuthHost<'_>) -> Page {
        let auth = at.site.auth_host();
        let Some(rd) = query_param(uri.query(), "rd") else { return fail(EdgeError::SignInFailed, &auth) };
        // Only back to a tunnel host of this relay: never an open redirect.
        let ours = split_url(&rd).is_some_and(|(host, _)| {
            host != auth
                && (hostname::parse(&host, at.site.domain).is_ok()
                    || tunnel_of(at.registry, &host, at.site.domain).is_some())
        });
        if !ours {
            return fail(EdgeError::SignInFailed, &auth);
        }
        let chosen = match (self.providers.len(), query_param(uri.query(), "provider")) {
            (0, _) => return fail(EdgeError::SignInUnavailable, &auth),
            (1, _) => 0,
            (_, Some(i)) => match i.parse::<usize>().ok().filter(|i| *i < self.providers.len()) {
                Some(i) => i,
                None => return fail(EdgeError::SignInFailed, &auth),
            },
            (_, None) => return choose(self, &rd),
        };
        let (Some(http), Some(redirect_uri)) = (&self.http, at.site.redirect_uri()) else {
            return fail(EdgeError::IdpUnavailable, &auth);
        };
        let provider = &self.providers[chosen];
        let (url, pending) = match provider.begin(http, &redirect_uri).await {
            Ok(x) => x,
            Err(e) => {
                warn!(issuer = provider.issuer(), error = %e, "sign-in could not start");
                return fail(EdgeError::IdpUnavailable, &auth);
            }
        };
        let name = format!("{FLOW_COOKIE}{}", &pending.state[..pending.state.len().min(16)]);
        let flow = Flow { pending, provider: chosen, rd, exp: unix_secs() + FLOW_TTL };
        let sealed = self.sealer.seal("flow", &flow);
        let mut resp = found(&url);
        set_cookie(
            &mut resp,
            &format!("{name}={sealed}; Path=/callback; Max-Age={FLOW_TTL}; HttpOnly; Secure; SameSite=Lax"),
        );
        resp
    }

    async fn callback(&self, uri: &Uri, headers: &HeaderMap, at: &AuthHost<'_>) -> Page {
        let auth = at.site.auth_host();
        let q = uri.query();
        if let Some(error) = query_param(q, "error") {
            info!(error = %error.chars().take(64).collect::<String>(), "the identity provider ended a sign-in");
            return fail(EdgeError::SignInDenied, &auth);
        }
        let (Some(state), Some(code)) = (query_param(q, "state"), query_param(q, "code")) else {
            return fail(EdgeError::SignInFailed, &auth);
        };
        let name = format!("{FLOW_COOKIE}{}", &state[..state.len().min(16)]);
        let flow: Option<Flow> = cookie(headers, &name).and_then(|c| self.sealer.open("flow", c));
        let Some(flow) =
            flow.filter(|f| f.exp > unix_secs() && bool::from(f.pending.state.as_bytes().ct_eq(state.as_bytes())))
        else {
            info!("sign-in callback with a missing, forged or expired state");
            return fail(EdgeError::SignInFailed, &auth);
        };
        if !self.spend(&format!("state:{state}"), flow.exp) {
            info!("sign-in callback replayed");
            return fail(EdgeError::SignInFailed, &auth);
        }
        let (Some(provider), Some(http), Some(redirect_uri)) =
            (self.providers.get(flow.provider), &self.http, at.site.redirect_uri())
        else {
            return fail(EdgeError::SignInFailed, &auth);
        };
        let person = match provider
            .finish(http, &redirect_uri, &code, &flow.pending, std::time::SystemTime::now())
            .await
        {
            Ok(p) => p,
            Err(e) => {
                warn!(issuer = provider.issuer(), error = %e, "sign-in failed");
                return match e {
                    OidcError::CodeRefused(_) => fail(EdgeError::SignInFailed, &auth),
                    OidcError::Unavailable(_) | OidcError::TokenInvalid(_) => fail(EdgeError::IdpUnavailable, &auth),
                };
            }
        };
        let Some((host, path)) = split_url(&flow.rd) else { return fail(EdgeError::SignInFailed, &auth) };
        // Refuse now when the tunnel is here and will not let this person in.
        if let Some(tunnel) = tunnel_of(at.registry, &host, at.site.domain) {
            if !self.person_may_enter(&tunnel, at.policies, &person.email, &person.groups) {
                info!(tunnel = %tunnel.info.name, email = %person.email, "signed-in person not allowed");
                return fail(EdgeError::SignInDenied, &host);
            }
        }
        info!(email = %person.email, host = %host, "signed in");
        let code = Code { id: random_id(), person, host: host.clone(), path, exp: unix_secs() + CODE_TTL };
        let sealed = self.sealer.seal("code", &code);
        let mut resp = found(&format!("{}{}?code={sealed}", at.site.origin(&host), super::edge::AUTH_PATH));
        set_cookie(&mut resp, &format!("{name}=; Path=/callback; Max-Age=0; HttpOnly; Secure; SameSite=Lax"));
        resp
    }

    /// True when a signed-in person may enter `tunnel` (its rules, its grants, the policies).
    pub fn person_may_enter(&self, tunnel: &Tunnel, policies: &Policies, email: &str, groups: &[String]) -> bool {
        let matching = policies.matching(&tunnel.info.id);
        let granted = self.granted((&tunnel.info.name, &tunnel.info.owner), email);
        access::person_allowed(&tunnel.access, &matching, email, groups, granted)
    }

    /// Answers `/.postern/auth` and `/.postern/share` on the host of `tunnel` (which requires
    /// sign-in); `None` for any other path.
    pub fn tunnel_page(&self, uri: &Uri, host: &str, tunnel: &Tunnel, policies: &Policies) -> Option<Page> {
        let host = hostname::normalize(host).ok()?;
        let (who, back) = match uri.path() {
            super::edge::AUTH_PATH => {
                let sealed = query_param(uri.query(), "code")?;
                let code: Option<Code> = self.sealer.open("code", &sealed);
                let Some(code) = code.filter(|c| c.host == host && c.exp > unix_secs()) else {
                    info!(host = %host, "one-time code forged, expired or for another host");
                    return Some(fail(EdgeError::SignInFailed, &host));
                };
                if !self.spend(&format!("code:{}", code.id), code.exp) {
                    info!(host = %host, "one-time code replayed");
                    return Some(fail(EdgeError::SignInFailed, &host));
                }
                let (email, groups) = (code.person.email, code.person.groups);
                if !self.person_may_enter(tunnel, policies, &email, &groups) {
                    return Some(fail(EdgeError::SignInDenied, &host));
                }
                (Who::Oidc { email, groups }, code.path)
            }
            super::edge::SHARE_PATH => {
                let credential = query_param(uri.query(), "pass")?;
                let matching = policies.matching(&tunnel.info.id);
                let pass = access::pass_allowed(&matching)
                    .then(|| self.use_share(&credential, (&tunnel.info.name, &tunnel.info.owner)));
                let Some(Some(pass)) = pass else {
                    info!(host = %host, "share link refused");
                    return Some(fail(EdgeError::ShareInvalid, &host));
                };
                (Who::Share { pass: pass.id }, "/".to_string())
            }
            _ => return None,
        };
        let session = self.open_session(&tunnel.info.name, &tunnel.info.owner, &host, who);
        let sealed = self.sealer.seal(&format!("session:{host}"), &session.id);
        let mut resp = found(&back);
        let max_age = self.session_ttl.as_secs();
        set_cookie(&mut resp, &format!("{COOKIE}={sealed}; Path=/; Max-Age={max_age}; HttpOnly; Secure; SameSite=Lax"));
        Some(resp)
    }
}
