//! `POST /api/v1/tokens` (mint) and `DELETE /api/v1/tokens/{id}` (revoke), for orchestrators.
//! Admin only.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use postern_proto::token::{Claims, Limits};
use serde::Deserialize;

use super::{fail, json, Admin, AdminBody};
use crate::auth::Identity;

/// Largest request body accepted.
const MAX_BODY: usize = 16 * 1024;

/// The mint request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    subject: String,
    #[serde(default)]
    ids: Vec<String>,
    #[serde(default)]
    ports: Vec<String>,
    /// Seconds; absent or 0 never expires.
    #[serde(default)]
    ttl_secs: u64,
    #[serde(default)]
    admin: bool,
    #[serde(default)]
    limits: Limits,
    #[serde(default)]
    share: bool,
    /// `postern` (default) or `bore`: also a secret for `bore local --secret`.
    #[serde(default)]
    kind: TokenKind,
}

/// What a minted token is for.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
enum TokenKind {
    #[default]
    Postern,
    Bore,
}

fn admin_only(who: &Identity) -> Option<Response<AdminBody>> {
    (!who.admin).then(|| fail(StatusCode::FORBIDDEN, "forbidden", "only the admin may manage tokens"))
}

/// Mints a token.
pub async fn mint(req: Request<Incoming>, who: &Identity, admin: &Admin) -> Response<AdminBody> {
    if let Some(denied) = admin_only(who) {
        return denied;
    }
    let Some(key) = admin.auth.key() else {
        return fail(StatusCode::CONFLICT, "no_key", "this relay has no token signing key");
    };
    let body: Bytes = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return fail(StatusCode::PAYLOAD_TOO_LARGE, "bad_request", format!("body over {MAX_BODY} bytes")),
    };
    let r: MintRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, "bad_request", e.to_string()),
    };
    if r.subject.trim().is_empty() {
        return fail(StatusCode::BAD_REQUEST, "bad_request", "subject must not be empty");
    }
    let now = crate::clock::unix_secs();
    let exp = (r.ttl_secs > 0).then(|| now + r.ttl_secs);
    let claims = Claims {
        jti: format!("{:016x}", rand::random::<u64>()),
        sub: r.subject,
        ids: r.ids,
        ports: r.ports,
        iat: now,
        exp,
        admin: r.admin,
        limits: r.limits,
        share: r.share,
    };
    let token = match key.sign(&claims) {
        Ok(t) => t,
        Err(e) => return fail(StatusCode::INTERNAL_SERVER_ERROR, "sign", e.to_string()),
    };
    if r.kind == TokenKind::Bore {
        let Some(dir) = &admin.state_dir else {
            return fail(StatusCode::CONFLICT, "no_state_dir", "bore tokens need a state directory to be recorded in");
        };
        if let Err(e) = crate::bore::secrets::add(dir, &token) {
            return fail(StatusCode::INTERNAL_SERVER_ERROR, "persist", e.to_string());
        }
    }
    tracing::info!(token_id = %claims.jti, subject = %claims.sub, by = %who.subject, "token minted through the admin API");
    let expires =
        exp.map(|e| humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + Duration::from_secs(e)).to_string());
    json(
        StatusCode::CREATED,
        &serde_json::json!({
            "token": token,
            "id": claims.jti,
            "subject": claims.sub,
            "expires": expires,
            "kind": if r.kind == TokenKind::Bore { "bore" } else { "postern" },
        }),
    )
}

/// Revokes a token and ends its sessions.
pub fn revoke(id: &str, who: &Identity, admin: &Admin) -> Response<AdminBody> {
    if let Some(denied) = admin_only(who) {
        return denied;
    }
    if let Err(e) = admin.auth.revocations().revoke(id) {
        return fail(StatusCode::INTERNAL_SERVER_ERROR, "persist", e.to_string());
    }
    let n = admin.registry.kick_token(id);
    tracing::info!(token_id = %id, sessions = n, by = %who.subject, "token revoked through the admin API");
    json(StatusCode::OK, &serde_json::json!({"revoked": id, "disconnected": n}))
}
