//! Remote management of a connected agent's tunnels:
//!
//! | route | what |
//! |---|---|
//! | `GET /api/v1/agents/{agent}/tunnels` | the tunnels the agent serves |
//! | `POST /api/v1/agents/{agent}/tunnels` | ask the agent to open one (`TunnelRequest`) |
//! | `DELETE /api/v1/agents/{agent}/tunnels/{name}` | ask the agent to close one |
//!
//! `{agent}` is a session id, or `by-client/{client_id}`: the stable name an orchestrator knows
//! (`--client-id`, or the token's subject). The admin token or the agent owner's token may
//! call them. The change travels to the agent on its control stream; the agent decides (it
//! refuses unless started with `--allow-remote` covering the port) and the answer, the
//! tunnel's URL or the refusal, is this request's answer. On a cluster, a relay the agent is
//! not connected to asks the one it is (`admin::cluster::remote`).

use std::time::Duration;

use http::{Method, StatusCode};
use postern_proto::request::TunnelRequest;
use postern_proto::{ChangeOutcome, TunnelChange};

use http::Response;

use super::views::TunnelView;
use super::visitors::Asked;
use super::{fail, json, Admin, AdminBody};
use crate::agent::RemoteChange;
use crate::auth::Identity;
use crate::tunnel::registry::Agent;

/// How long the API waits for the agent's answer.
pub(super) const ANSWER_WITHIN: Duration = Duration::from_secs(15);

/// True when `rest` is a remote-management route.
pub(super) fn is_route(rest: &[&str]) -> bool {
    matches!(rest, ["agents", _, "tunnels", ..] | ["agents", "by-client", _, "tunnels", ..])
}

/// True when the agent `rest` names is connected to this relay (and visible to the caller, when
/// named by client id).
pub(super) fn is_here(rest: &[&str], who: &Identity, admin: &Admin) -> bool {
    match rest {
        ["agents", "by-client", client, "tunnels", ..] => by_client(client, who, admin).is_ok(),
        ["agents", id, "tunnels", ..] => admin.registry.agent(id).is_some(),
        _ => false,
    }
}

/// Serves a remote-management route (`asked`: its method and body, read first), or `None`
/// when `rest` is not one.
pub(super) async fn route(asked: &Asked, rest: &[&str], who: &Identity, admin: &Admin) -> Option<Response<AdminBody>> {
    let (agent, tail) = match rest {
        ["agents", "by-client", client, "tunnels", tail @ ..] => (by_client(client, who, admin), tail),
        ["agents", id, "tunnels", tail @ ..] => (by_session(id, who, admin), tail),
        _ => return None,
    };
    let agent = match agent {
        Ok(a) => a,
        Err((status, code, message)) => return Some(fail(status, code, message)),
    };
    Some(match (asked.method.clone(), tail) {
        (Method::GET, []) => list(&agent, admin),
        (Method::POST, []) => add(&asked.body, &agent, who).await,
        (Method::DELETE, [name]) => remove(name, &agent, who).await,
        _ => fail(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", "use GET or POST, or DELETE …/tunnels/{name}"),
    })
}

/// Why no agent was found: the answer's status, code and message.
type NotFound = (StatusCode, &'static str, String);

fn by_session(id: &str, who: &Identity, admin: &Admin) -> Result<std::sync::Arc<Agent>, NotFound> {
    match admin.registry.agent(id) {
        Some(a) if who.may_access(&a.info.owner) => Ok(a),
        Some(_) => Err((StatusCode::FORBIDDEN, "forbidden", format!("agent {id:?} belongs to another client"))),
        None => Err((StatusCode::NOT_FOUND, "not_found", format!("no agent {id:?}"))),
    }
}

/// The longest-connected agent with this client id that the caller may see.
fn by_client(client: &str, who: &Identity, admin: &Admin) -> Result<std::sync::Arc<Agent>, NotFound> {
    let client = client.to_ascii_lowercase();
    admin
        .registry
        .agents()
        .into_iter()
        .find(|a| a.info.client_id == client && who.may_access(&a.info.owner))
        .ok_or_else(|| (StatusCode::NOT_FOUND, "not_found", format!("no connected agent with client id {client:?}")))
}

fn list(agent: &Agent, admin: &Admin) -> Response<AdminBody> {
    let names = agent.tunnels();
    let tunnels: Vec<TunnelView> = names
        .iter()
        .filter_map(|n| admin.registry.get(n).filter(|t| t.info.name == *n))
        .map(|t| TunnelView::from(&*t))
        .collect();
    json(
        StatusCode::OK,
        &serde_json::json!({ "agent": agent.info.session_id, "client_id": agent.info.client_id, "tunnels": tunnels }),
    )
}

async fn add(body: &[u8], agent: &Agent, who: &Identity) -> Response<AdminBody> {
    let asked: TunnelRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return fail(StatusCode::BAD_REQUEST, "bad_request", format!("the tunnel request: {e}")),
    };
    let tunnel = match asked.spec() {
        Ok(s) => s,
        Err(e) => return fail(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let (port, kind) = (tunnel.local_port, tunnel.kind);
    match ask(agent, TunnelChange::Add { tunnel }).await {
        Ok(ChangeOutcome::Done { grant: Some(grant) }) => {
            tracing::info!(agent = %agent.info.session_id, tunnel = %grant.name, by = %who.subject, "tunnel added through the admin API");
            json(StatusCode::CREATED, &serde_json::json!({ "agent": agent.info.session_id, "tunnel": grant }))
        }
        Ok(ChangeOutcome::Done { grant: None }) => {
            fail(StatusCode::BAD_GATEWAY, "agent_error", "the agent answered without a tunnel")
        }
        Ok(other) => {
            tracing::info!(agent = %agent.info.session_id, kind = kind.as_str(), port, by = %who.subject, "tunnel not added");
            refused(other)
        }
        Err(resp) => resp,
    }
}

async fn remove(name: &str, agent: &Agent, who: &Identity) -> Response<AdminBody> {
    if !agent.tunnels().iter().any(|n| n == name) {
        return fail(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("agent {} serves no tunnel {name:?}", agent.info.session_id),
        );
    }
    match ask(agent, TunnelChange::Remove { name: name.to_string() }).await {
        Ok(ChangeOutcome::Done { .. }) => {
            tracing::info!(agent = %agent.info.session_id, tunnel = %name, by = %who.subject, "tunnel removed through the admin API");
            json(StatusCode::OK, &serde_json::json!({ "agent": agent.info.session_id, "closed": name }))
        }
        Ok(other) => refused(other),
        Err(resp) => resp,
    }
}

/// Sends `change` to the agent's session and waits for the agent's answer.
async fn ask(agent: &Agent, change: TunnelChange) -> Result<ChangeOutcome, Response<AdminBody>> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let gone = || fail(StatusCode::NOT_FOUND, "not_found", "the agent disconnected before it answered");
    let asked = async {
        agent.changes.send(RemoteChange { change, reply }).await.ok()?;
        answer.await.ok()
    };
    match tokio::time::timeout(ANSWER_WITHIN, asked).await {
        Ok(Some(outcome)) => Ok(outcome),
        Ok(None) => Err(gone()),
        Err(_) => Err(fail(
            StatusCode::GATEWAY_TIMEOUT,
            "agent_timeout",
            format!("the agent did not answer within {ANSWER_WITHIN:?}; it may still apply the change"),
        )),
    }
}

/// The answer for a change the agent refused, or the relay could not carry out.
fn refused(outcome: ChangeOutcome) -> Response<AdminBody> {
    match outcome {
        ChangeOutcome::Refused { message } => {
            fail(StatusCode::FORBIDDEN, "agent_refused", format!("the agent refused: {message}"))
        }
        ChangeOutcome::Failed { code, message } => {
            let (status, code) = code.http();
            fail(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY), code, message)
        }
        ChangeOutcome::Done { .. } => fail(StatusCode::BAD_GATEWAY, "agent_error", "unexpected answer from the agent"),
    }
}
