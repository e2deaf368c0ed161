//! `POST /api/v1/tokens` (mint), `GET /api/v1/tokens` (the ledger of minted tokens, with
//! whether each is revoked or expired) and `DELETE /api/v1/tokens/{id}` (revoke), for
//! orchestrators and the dashboard. Admin only. The request and its validation are shared with the command line
//! ([`crate::tokens`]).

use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use postern_proto::claims::MintRequest;

use super::{fail, json, read_body, Admin, AdminBody};
use crate::auth::Identity;
use crate::clock::rfc3339_secs;
use crate::tokens::{self, TokenFault};

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;

fn admin_only(who: &Identity) -> Option<Response<AdminBody>> {
    (!who.admin).then(|| fail(StatusCode::FORBIDDEN, "forbidden", "only the admin may manage tokens"))
}

fn failed(e: TokenFault) -> Response<AdminBody> {
    match e {
        TokenFault::Invalid(e) => fail(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
        TokenFault::NoStateDir => fail(StatusCode::CONFLICT, "no_state_dir", e.to_string()),
        TokenFault::UnknownId(_) => fail(StatusCode::NOT_FOUND, "not_found", e.to_string()),
        e @ TokenFault::Revocation(crate::revocation::RevocationError::Full { .. }) => {
            fail(StatusCode::INSUFFICIENT_STORAGE, "revocation_list_full", e.to_string())
        }
        e => fail(StatusCode::INTERNAL_SERVER_ERROR, "persist", e.to_string()),
    }
}

/// Mints a token.
pub async fn mint(req: Request<Incoming>, who: &Identity, admin: &Admin) -> Response<AdminBody> {
    if let Some(denied) = admin_only(who) {
        return denied;
    }
    let Some(key) = admin.auth.key() else {
        return fail(StatusCode::CONFLICT, "no_key", "this relay has no token signing key");
    };
    let body = match read_body(req, MAX_BODY, admin).await {
        Ok(b) => b,
        Err(resp) => return resp,
    };
    let r: MintRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    let minted = match tokens::mint(key, &r, admin.state_dir.as_deref(), crate::clock::unix_secs()) {
        Ok(m) => m,
        Err(e) => return failed(e),
    };
    let claims = &minted.claims;
    tracing::info!(token_id = %claims.jti, subject = %claims.sub, by = %who.subject, "token minted through the admin API");
    let expires = claims.exp.map(rfc3339_secs);
    json(
        StatusCode::CREATED,
        &serde_json::json!({
            "token": minted.token,
            "id": claims.jti,
            "subject": claims.sub,
            "expires": expires,
            "kind": minted.kind.as_str(),
        }),
    )
}

/// Lists the tokens minted with this relay's state directory, newest first.
pub fn list(who: &Identity, admin: &Admin) -> Response<AdminBody> {
    if let Some(denied) = admin_only(who) {
        return denied;
    }
    let Some(dir) = &admin.state_dir else {
        return json(StatusCode::OK, &serde_json::json!({ "tokens": [] }));
    };
    let entries = match crate::ledger::Ledger::new(dir).list() {
        Ok(list) => list,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, "ledger", e.to_string()),
    };
    let now = crate::clock::unix_secs();
    let revocations = admin.auth.revocations();
    let tokens: Vec<serde_json::Value> = entries
        .iter()
        .map(|e| {
            let c = &e.claims;
            serde_json::json!({
                "id": c.jti,
                "subject": c.sub,
                "kind": e.kind,
                "ids": c.ids,
                "ports": c.ports,
                "admin": c.admin,
                "share": c.share,
                "limits": c.limits,
                "volume_used": c.limits.volume.map(|v| admin.volumes.usage(&c.jti, v)),
                "minted": rfc3339_secs(e.minted),
                "expires": c.exp.map(rfc3339_secs),
                "expired": c.exp.is_some_and(|exp| exp <= now),
                "revoked": revocations.is_revoked(&c.jti),
            })
        })
        .collect();
    json(StatusCode::OK, &serde_json::json!({ "tokens": tokens }))
}

/// Revokes a token and ends its sessions (on every relay of a cluster).
pub async fn revoke(id: &str, who: &Identity, admin: &Admin) -> Response<AdminBody> {
    if let Some(denied) = admin_only(who) {
        return denied;
    }
    if let Err(e) = tokens::revoke(admin.auth.revocations(), id) {
        return failed(e);
    }
    if let Some(cluster) = &admin.cluster {
        cluster.revoke(id).await;
    }
    let n = admin.registry.kick_token(id);
    tracing::info!(token_id = %id, sessions = n, by = %who.subject, "token revoked through the admin API");
    json(StatusCode::OK, &serde_json::json!({"revoked": id, "disconnected": n}))
}
