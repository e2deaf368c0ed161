//! Visitor access through the API, tenant-scoped (a tunnel, grant, pass or session of another
//! subject is answered as unknown):
//!
//! | route | what |
//! |---|---|
//! | `POST /api/v1/tunnels/{name}/grants` | `{email, expires?}`: let an address in; `201` |
//! | `GET /api/v1/tunnels/{name}/grants` | the tunnel's grants |
//! | `DELETE /api/v1/tunnels/{name}/grants?email=` | take a grant back; that person's sessions end |
//! | `POST /api/v1/tunnels/{name}/shares` | `{ttl_secs, max_uses?, name?}`: a share link; `201 {id, url, expires}` |
//! | `GET /api/v1/tunnels/{name}/shares` | the tunnel's share links (without their secret) |
//! | `DELETE /api/v1/shares/{id}` | revoke a share link; the sessions it opened end |
//! | `POST /api/v1/tunnels/{name}/service-tokens` | `{ttl_secs, name?}`: a token for programs; `201 {id, token, expires}` |
//! | `GET /api/v1/tunnels/{name}/service-tokens` | the tunnel's service tokens (without their secret) |
//! | `DELETE /api/v1/service-tokens/{id}` | revoke a service token |
//! | `GET /api/v1/sessions?email=&tunnel=` | open sessions |
//! | `DELETE /api/v1/sessions?email=&tunnel=` | end them at once (at least one filter) |
//!
//! Grants and passes are made on a live tunnel that requires sign-in (`409 no_sign_in`
//! otherwise); they are kept (state directory) by tunnel name and owner, so they outlive a
//! reconnect, and a name another owner takes later inherits none of them.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;

use super::{fail, json, read_body, Admin, AdminBody};
use crate::auth::Identity;
use crate::clock::{rfc3339_secs, unix_secs};
use crate::visitor::edge::{query_param, SHARE_PATH};
use crate::visitor::passes::NewPass;
use crate::visitor::{Grant, Pass, PassKind, Session};

/// Longest a share link or service token may live: a year.
const MAX_TTL: u64 = 366 * 24 * 3600;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewGrant {
    email: String,
    /// RFC 3339; none: until taken back.
    expires: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewPassBody {
    ttl_secs: u64,
    max_uses: Option<u32>,
    name: Option<String>,
}

fn grant_view(g: &Grant) -> serde_json::Value {
    serde_json::json!({
        "tunnel": g.tunnel,
        "email": g.email,
        "created": rfc3339_secs(g.created),
        "expires": (g.expires != u64::MAX).then(|| rfc3339_secs(g.expires)),
    })
}

fn pass_view(p: &Pass) -> serde_json::Value {
    serde_json::json!({
        "id": p.id,
        "kind": p.kind.as_str(),
        "tunnel": p.tunnel,
        "name": p.name,
        "created": rfc3339_secs(p.created),
        "expires": rfc3339_secs(p.expires),
        "max_uses": p.max_uses,
        "uses": p.uses,
    })
}

fn session_view(s: &Session) -> serde_json::Value {
    let (via, email, pass) = match &s.who {
        crate::visitor::records::Who::Oidc { email, .. } => ("oidc", Some(email.as_str()), None),
        crate::visitor::records::Who::Share { pass } => ("share", None, Some(pass.as_str())),
    };
    serde_json::json!({
        "id": s.id,
        "tunnel": s.tunnel,
        "host": s.host,
        "via": via,
        "email": email,
        "pass": pass,
        "created": rfc3339_secs(s.created),
        "expires": rfc3339_secs(s.expires),
    })
}

/// A visitor-route request, its body already read (at most [`MAX_BODY`] bytes), so that a
/// clustered relay can answer it or send it on to the relay holding the tunnel.
#[derive(Debug, Clone)]
pub struct Asked {
    /// The method.
    pub method: Method,
    /// The query string.
    pub query: Option<String>,
    /// The body.
    pub body: Bytes,
}

/// The largest body a visitor route takes.
pub const MAX_BODY: usize = 4096;

impl Asked {
    /// Reads `req`'s body (bounded) into an [`Asked`], or answers with the error.
    pub async fn read(req: Request<Incoming>, admin: &Admin) -> Result<Self, Response<AdminBody>> {
        let (method, query) = (req.method().clone(), req.uri().query().map(str::to_string));
        let body = read_body(req, MAX_BODY, admin).await?;
        Ok(Self { method, query, body })
    }
}

fn bad(message: impl Into<String>) -> Response<AdminBody> {
    fail(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// Answers the routes above, or `None` when `rest` (the path after `/api/v1/`) is none of them.
pub fn route(asked: &Asked, rest: &[&str], who: &Identity, admin: &Admin) -> Option<Response<AdminBody>> {
    let (method, query, body) = (asked.method.clone(), asked.query.clone(), &asked.body);
    let v = &admin.visitors;
    let now = unix_secs();
    let mine = |owner: &str| who.may_access(owner);
    Some(match (&method, rest) {
        (_, ["tunnels", name, what @ ("grants" | "shares" | "service-tokens")]) => {
            let Some(tunnel) = admin.registry.get(name).filter(|t| t.info.name == *name && mine(&t.info.owner)) else {
                return Some(fail(StatusCode::NOT_FOUND, "not_found", format!("no tunnel {name:?}")));
            };
            let (name, owner) = (tunnel.info.name.clone(), tunnel.info.owner.clone());
            if tunnel.access.login().is_none() {
                let why = "this tunnel lets everyone in: its client starts it with --login or --allow-email to use \
                           grants, share links and service tokens";
                return Some(fail(StatusCode::CONFLICT, "no_sign_in", why));
            }
            let kind = if *what == "shares" { PassKind::Share } else { PassKind::Service };
            match (&method, *what) {
                (&Method::GET, "grants") => {
                    let list: Vec<_> =
                        v.grants.list(now, |g| g.tunnel == name && g.owner == owner).iter().map(grant_view).collect();
                    json(StatusCode::OK, &serde_json::json!({ "grants": list }))
                }
                (&Method::POST, "grants") => {
                    let g: NewGrant = match serde_json::from_slice(body) {
                        Ok(g) => g,
                        Err(e) => return Some(bad(format!("expected {{\"email\", \"expires\"?}}: {e}"))),
                    };
                    let email = g.email.trim().to_ascii_lowercase();
                    if !postern_proto::access::valid_email_pattern(&email) || email.contains('*') {
                        return Some(bad(format!("{:?} is not an e-mail address", g.email)));
                    }
                    let expires = match g.expires.as_deref().map(humantime::parse_rfc3339_weak) {
                        None => u64::MAX,
                        Some(Ok(t)) => t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
                        Some(Err(e)) => {
                            return Some(bad(format!("expires: {e} (RFC 3339, e.g. 2026-12-31T00:00:00Z)")))
                        }
                    };
                    if expires <= now {
                        return Some(bad("expires is in the past"));
                    }
                    let grant = Grant { tunnel: name.clone(), owner, email: email.clone(), created: now, expires };
                    v.grants.edit(now, |items| {
                        items.retain(|x| !(x.tunnel == name && x.owner == grant.owner && x.email == email));
                        items.push(grant.clone());
                        ((), true)
                    });
                    tracing::info!(tunnel = %name, email = %email, by = %who.subject, "access granted");
                    json(StatusCode::CREATED, &grant_view(&grant))
                }
                (&Method::DELETE, "grants") => {
                    let Some(email) = query_param(query.as_deref(), "email").map(|e| e.to_ascii_lowercase()) else {
                        return Some(bad("give ?email="));
                    };
                    let gone = v.grants.remove(now, |g| g.tunnel == name && g.owner == owner && g.email == email);
                    if gone.is_empty() {
                        return Some(fail(StatusCode::NOT_FOUND, "not_found", format!("no grant for {email:?}")));
                    }
                    let ended =
                        v.end_sessions(|s| s.tunnel == name && s.owner == owner && s.email() == Some(email.as_str()));
                    tracing::info!(tunnel = %name, email = %email, sessions = ended, by = %who.subject, "access taken back");
                    json(StatusCode::OK, &serde_json::json!({ "revoked": email, "sessions_ended": ended }))
                }
                (&Method::GET, _) => {
                    let list: Vec<_> = v
                        .passes
                        .list(now, |p| p.tunnel == name && p.owner == owner && p.kind == kind)
                        .iter()
                        .map(pass_view)
                        .collect();
                    json(StatusCode::OK, &serde_json::json!({ what.replace('-', "_"): list }))
                }
                (&Method::POST, _) => {
                    let b: NewPassBody = match serde_json::from_slice(body) {
                        Ok(b) => b,
                        Err(e) => {
                            return Some(bad(format!("expected {{\"ttl_secs\", \"max_uses\"?, \"name\"?}}: {e}")))
                        }
                    };
                    if b.ttl_secs == 0 || b.ttl_secs > MAX_TTL {
                        return Some(bad(format!("ttl_secs must be 1 to {MAX_TTL}")));
                    }
                    if kind == PassKind::Service && b.max_uses.is_some() {
                        return Some(bad("max_uses is for share links"));
                    }
                    if b.max_uses == Some(0) || b.name.as_ref().is_some_and(|n| n.len() > 128) {
                        return Some(bad("max_uses must be at least 1, and a name at most 128 characters"));
                    }
                    let new = NewPass {
                        kind,
                        tunnel: &name,
                        owner: &owner,
                        name: b.name,
                        ttl_secs: b.ttl_secs,
                        max_uses: b.max_uses,
                    };
                    let (pass, credential) = v.issue_pass(new);
                    tracing::info!(tunnel = %name, pass = %pass.id, kind = kind.as_str(), by = %who.subject, "pass issued");
                    let mut view = pass_view(&pass);
                    match kind {
                        PassKind::Share => {
                            view["url"] = format!("{}{SHARE_PATH}?pass={credential}", tunnel.info.public_url).into()
                        }
                        PassKind::Service => view["token"] = credential.into(),
                    }
                    json(StatusCode::CREATED, &view)
                }
                _ => fail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET, POST or DELETE"),
            }
        }
        (&Method::DELETE, [what @ ("shares" | "service-tokens"), id]) => {
            let kind = if *what == "shares" { PassKind::Share } else { PassKind::Service };
            if v.passes.find(now, |p| p.id == *id && p.kind == kind && mine(&p.owner)).is_none() {
                return Some(fail(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!("no {} {id:?}", &what[..what.len() - 1]),
                ));
            }
            let pass = v.revoke_pass(id);
            tracing::info!(pass = %id, by = %who.subject, "pass revoked");
            json(StatusCode::OK, &serde_json::json!({ "revoked": pass.map(|p| p.id) }))
        }
        (_, ["sessions"]) => {
            let email = query_param(query.as_deref(), "email").map(|e| e.to_ascii_lowercase());
            let tunnel = query_param(query.as_deref(), "tunnel");
            let pick = |s: &Session| {
                mine(&s.owner)
                    && email.as_deref().is_none_or(|e| s.email() == Some(e))
                    && tunnel.as_deref().is_none_or(|t| s.tunnel == t)
            };
            match method {
                Method::GET => {
                    let list: Vec<_> = v.sessions.list(now, pick).iter().map(session_view).collect();
                    json(StatusCode::OK, &serde_json::json!({ "sessions": list }))
                }
                Method::DELETE if email.is_none() && tunnel.is_none() => bad("give ?email= or ?tunnel= (or both)"),
                Method::DELETE => {
                    let ended = v.end_sessions(pick);
                    tracing::info!(?email, ?tunnel, sessions = ended, by = %who.subject, "sessions ended");
                    json(StatusCode::OK, &serde_json::json!({ "ended": ended }))
                }
                _ => fail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET or DELETE"),
            }
        }
        _ => return None,
    })
}
