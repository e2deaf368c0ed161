//! The admin API of a clustered relay: cluster-wide views made of each relay's own, and acting
//! on things another relay holds.
//!
//! - `GET /api/v1/tunnels` and `/api/v1/agents` ask every live relay for its own list over the
//!   peer links and merge them (a tunnel served by several relays is listed once, with each
//!   relay in `relays`); `?scope=local` answers for this relay alone.
//! - `DELETE` of a tunnel or an agent held elsewhere goes to the relay holding it.
//! - `GET /api/v1/relays` lists the members: id, address, up or down, tunnels, agents.
//! - Visitor routes ([`visitors`]): a tunnel's grants, share links and service tokens are
//!   managed on the relay holding the tunnel; sessions, and links revoked by id, on every relay.
//! - Remote management ([`remote`]): an agent's tunnels are changed by the relay it is
//!   connected to.
//!
//! A peer answers the internal `admin` stream ([`peer_view`]) with its own lists, unfiltered;
//! the relay the caller asked filters them by the caller's subject, as for its own.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{json, Value};

use super::remote;
use super::views::{AgentView, TunnelView};
use super::visitors::{self, Asked};
use super::{fail, json, Admin, AdminBody};
use crate::auth::Identity;
use crate::cluster::forward::{FWD_ADMIN, FWD_SUBJECT};
use crate::cluster::Cluster;

/// This relay's own lists, for a peer building a cluster-wide view (the `admin` stream).
pub async fn peer_view(req: Request<Incoming>, admin: &Admin) -> Response<Full<Bytes>> {
    let path = req.uri().path().trim_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').collect();
    if let ["visitors", rest @ ..] = parts.as_slice() {
        return peer_visitors(req, rest, admin).await;
    }
    if let ["remote", rest @ ..] = parts.as_slice() {
        return peer_remote(req, rest, admin).await;
    }
    let reg = &admin.registry;
    let body = match (req.method(), parts.as_slice()) {
        (&Method::GET, ["tunnels"]) => {
            json!(reg.tunnels().iter().map(|t| TunnelView::from(&**t)).collect::<Vec<_>>())
        }
        (&Method::GET, ["agents"]) => json!(reg.agents().iter().map(|a| AgentView::from(&**a)).collect::<Vec<_>>()),
        (&Method::DELETE, ["tunnels", name]) => json!({"closed": reg.kick_tunnel(name).is_some()}),
        (&Method::DELETE, ["agents", id]) => json!({"disconnected": reg.agent(id).map(|a| a.kick.cancel()).is_some()}),
        _ => {
            let mut resp = Response::new(Full::new(Bytes::new()));
            *resp.status_mut() = StatusCode::NOT_FOUND;
            return resp;
        }
    };
    Response::new(Full::new(Bytes::from(body.to_string())))
}

/// Every live relay's list at `path` (`/tunnels` or `/agents`), this one's first, each entry
/// tagged with the relay it came from.
async fn gather(cluster: &Cluster, admin: &Admin, path: &str) -> Vec<(String, Value)> {
    let own = match path {
        "/tunnels" => json!(admin.registry.tunnels().iter().map(|t| TunnelView::from(&**t)).collect::<Vec<_>>()),
        _ => json!(admin.registry.agents().iter().map(|a| AgentView::from(&**a)).collect::<Vec<_>>()),
    };
    let mut out: Vec<(String, Value)> =
        own.as_array().into_iter().flatten().map(|v| (cluster.id.clone(), v.clone())).collect();
    let peers: Vec<String> = cluster.live_relays().await.into_iter().filter(|p| *p != cluster.id).collect();
    let asks = peers.iter().map(|p| cluster.ask_peer(p, Method::GET, path));
    for (peer, answer) in peers.iter().zip(futures_util::future::join_all(asks).await) {
        let list: Value = answer.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(Value::Null);
        out.extend(list.as_array().into_iter().flatten().map(|v| (peer.clone(), v.clone())));
    }
    out
}

fn owner(v: &Value) -> &str {
    v.get("owner").and_then(Value::as_str).unwrap_or_default()
}

/// The cluster-wide tunnel list the caller may see: one entry per name, with its relays.
pub async fn tunnels(cluster: &Cluster, admin: &Admin, who: &Identity) -> Vec<Value> {
    let mut by_name: BTreeMap<String, Value> = BTreeMap::new();
    for (relay, mut view) in gather(cluster, admin, "/tunnels").await {
        if !who.may_access(owner(&view)) {
            continue;
        }
        let name = view.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
        let entry = by_name.entry(name).or_insert_with(|| {
            view["relays"] = json!([]);
            view.clone()
        });
        if let Some(relays) = entry["relays"].as_array_mut() {
            if !relays.iter().any(|r| r == &json!(relay)) {
                relays.push(json!(relay));
            }
        }
    }
    by_name.into_values().collect()
}

/// The cluster-wide agent list the caller may see, each with its relay.
pub async fn agents(cluster: &Cluster, admin: &Admin, who: &Identity) -> Vec<Value> {
    gather(cluster, admin, "/agents")
        .await
        .into_iter()
        .filter(|(_, v)| who.may_access(owner(v)))
        .map(|(relay, mut v)| {
            v["relay"] = json!(relay);
            v
        })
        .collect()
}

/// Closes tunnel `name` or disconnects agent `id` (`what`: `tunnels` or `agents`) on whichever
/// relay holds it.
pub async fn delete(cluster: &Cluster, admin: &Admin, who: &Identity, what: &str, key: &str) -> Response<AdminBody> {
    let field = if what == "tunnels" { "name" } else { "id" };
    let holders: Vec<(String, Value)> = gather(cluster, admin, &format!("/{what}"))
        .await
        .into_iter()
        .filter(|(_, v)| v.get(field).and_then(Value::as_str) == Some(key))
        .collect();
    let Some((_, first)) = holders.first() else {
        return fail(StatusCode::NOT_FOUND, "not_found", format!("no {} {key:?}", &what[..what.len() - 1]));
    };
    if !who.may_access(owner(first)) {
        return fail(StatusCode::FORBIDDEN, "forbidden", format!("{key:?} belongs to another client"));
    }
    let mut relays = Vec::new();
    for (relay, _) in &holders {
        if *relay == cluster.id {
            match what {
                "tunnels" => {
                    admin.registry.kick_tunnel(key);
                }
                _ => {
                    if let Some(a) = admin.registry.agent(key) {
                        a.kick.cancel();
                    }
                }
            }
        } else {
            cluster.ask_peer(relay, Method::DELETE, &format!("/{what}/{key}")).await;
        }
        relays.push(relay.clone());
    }
    tracing::info!(what, key, by = %who.subject, ?relays, "closed through the admin API");
    let done = if what == "tunnels" { "closed" } else { "disconnected" };
    json(StatusCode::OK, &json!({ done: key, "relays": relays }))
}

/// `GET /api/v1/relays`: the members, from the directory (or, when it is down, this relay).
/// The admin's alone: a tenant has no business with the relays' addresses.
pub async fn relays(cluster: &Cluster, admin: &Admin, who: &Identity) -> Response<AdminBody> {
    if !who.admin {
        return fail(StatusCode::FORBIDDEN, "forbidden", "only the admin may list the relays");
    }
    let agents = agents(cluster, admin, &Identity::admin()).await;
    let count_agents = |id: &str| agents.iter().filter(|a| a["relay"] == json!(id)).count();
    let listed = cluster.store.relays().await;
    let store = if listed.is_ok() && cluster.store_up() { "up" } else { "down" };
    let mut out = Vec::new();
    match listed {
        Ok(relays) => {
            for (id, value) in relays {
                let node: Option<crate::cluster::routes::Node> = value.and_then(|v| serde_json::from_str(&v).ok());
                out.push(json!({
                    "id": id,
                    "addr": node.as_ref().map(|n| n.addr.clone()),
                    "up": node.is_some(),
                    "tunnels": cluster.store.name_count(&id).await.unwrap_or(0),
                    "agents": count_agents(&id),
                    "self": id == cluster.id,
                }));
            }
        }
        Err(_) => out.push(json!({
            "id": cluster.id,
            "addr": null,
            "up": true,
            "tunnels": admin.registry.len(),
            "agents": count_agents(&cluster.id),
            "self": true,
        })),
    }
    json(StatusCode::OK, &json!({ "store": store, "relays": out }))
}

/// A visitor route another relay sent on for its caller (the `admin` stream, path
/// `/visitors/<route>`): answered here, for this relay's tunnels and records alone.
async fn peer_visitors(req: Request<Incoming>, rest: &[&str], admin: &Admin) -> Response<Full<Bytes>> {
    let who = forwarded_caller(&req);
    let answer = match Asked::read(req, admin).await {
        Ok(asked) => visitors::route(&asked, rest, &who, admin)
            .unwrap_or_else(|| fail(StatusCode::NOT_FOUND, "not_found", "no such API route")),
        Err(resp) => resp,
    };
    whole(answer).await
}

/// A remote-management route another relay sent on for its caller (path `/remote/<route>`):
/// answered here, for an agent connected to this relay.
async fn peer_remote(req: Request<Incoming>, rest: &[&str], admin: &Admin) -> Response<Full<Bytes>> {
    let who = forwarded_caller(&req);
    let answer = match Asked::read(req, admin).await {
        Ok(asked) => remote::route(&asked, rest, &who, admin)
            .await
            .unwrap_or_else(|| fail(StatusCode::NOT_FOUND, "not_found", "no such API route")),
        Err(resp) => resp,
    };
    whole(answer).await
}

/// The caller a peer forwarded a route for: its subject and admin flag, from the peer link's
/// headers (the link is the cluster's own, so they are the entry relay's word).
fn forwarded_caller(req: &Request<Incoming>) -> Identity {
    let header = |name: &str| req.headers().get(name).and_then(|v| String::from_utf8(v.as_bytes().to_vec()).ok());
    Identity {
        subject: header(FWD_SUBJECT).unwrap_or_default(),
        token_id: None,
        admin: header(FWD_ADMIN).as_deref() == Some("1"),
        claims: None,
    }
}

/// An answer with its whole body, to go back over the peer link.
async fn whole(answer: Response<AdminBody>) -> Response<Full<Bytes>> {
    let (parts, body) = answer.into_parts();
    let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    Response::from_parts(parts, Full::new(bytes))
}

/// A remote-management route for an agent connected to another relay: asked of that relay, as
/// the caller, which answers as it would for its own caller.
pub async fn remote(
    cluster: &Cluster,
    admin: &Admin,
    who: &Identity,
    asked: &Asked,
    rest: &[&str],
) -> Response<AdminBody> {
    let agents = gather(cluster, admin, "/agents").await;
    let holder = match rest {
        ["agents", "by-client", client, ..] => {
            let client = client.to_ascii_lowercase();
            agents.into_iter().find(|(_, v)| v["client_id"] == client.as_str() && who.may_access(owner(v)))
        }
        ["agents", id, ..] => agents.into_iter().find(|(_, v)| v["id"] == *id),
        _ => None,
    };
    let Some((relay, _)) = holder.filter(|(relay, _)| *relay != cluster.id) else {
        // Nowhere else: this relay's own answer (not found, or forbidden).
        return remote::route(asked, rest, who, admin)
            .await
            .unwrap_or_else(|| fail(StatusCode::NOT_FOUND, "not_found", "no such API route"));
    };
    let path = format!("/remote/{}", rest.join("/"));
    let within = remote::ANSWER_WITHIN + std::time::Duration::from_secs(5);
    match cluster.ask_peer_within(&relay, (asked.method.clone(), &path), who, asked.body.clone(), within).await {
        Some((status, body)) => relayed(status, body),
        None => fail(
            StatusCode::SERVICE_UNAVAILABLE,
            "relay_unreachable",
            format!("relay {relay:?}, which the agent is connected to, did not answer"),
        ),
    }
}

/// A visitor route on a clustered relay. A tunnel's grants, share links and service tokens
/// are asked of the relay that holds the tunnel (its records live there, beside the sessions
/// its visitors open); revoking a link or token by id, and listing or ending sessions, is done
/// on every live relay and the answers merged.
pub async fn visitors(
    cluster: &Cluster,
    admin: &Admin,
    who: &Identity,
    asked: &Asked,
    rest: &[&str],
) -> Response<AdminBody> {
    let here = || {
        visitors::route(asked, rest, who, admin)
            .unwrap_or_else(|| fail(StatusCode::NOT_FOUND, "not_found", "no such API route"))
    };
    let path = match &asked.query {
        Some(q) => format!("/visitors/{}?{q}", rest.join("/")),
        None => format!("/visitors/{}", rest.join("/")),
    };
    if let ["tunnels", name, _] = rest {
        if admin.registry.get(name).is_some_and(|t| t.info.name == *name) {
            return here();
        }
        let holder = gather(cluster, admin, "/tunnels").await.into_iter().find(|(_, v)| v["name"] == *name);
        let Some((relay, _)) = holder else { return here() };
        return match cluster.ask_peer_as(&relay, (asked.method.clone(), &path), who, asked.body.clone()).await {
            Some((status, body)) => relayed(status, body),
            None => fail(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay_unreachable",
                format!("relay {relay:?}, which holds {name:?}, did not answer"),
            ),
        };
    }
    // Revocations by id, and sessions: every relay.
    let own = here();
    let peers: Vec<String> = cluster.live_relays().await.into_iter().filter(|p| *p != cluster.id).collect();
    let asks = peers.iter().map(|p| cluster.ask_peer_as(p, (asked.method.clone(), &path), who, asked.body.clone()));
    let answers: Vec<(StatusCode, Bytes)> = futures_util::future::join_all(asks).await.into_iter().flatten().collect();
    match rest {
        ["sessions"] if own.status() == StatusCode::OK => {
            let (_, body) = own.into_parts();
            let mine: Value = serde_json::from_slice(&body.collect().await.map(|b| b.to_bytes()).unwrap_or_default())
                .unwrap_or(Value::Null);
            let theirs = answers
                .iter()
                .filter(|(s, _)| *s == StatusCode::OK)
                .filter_map(|(_, b)| serde_json::from_slice::<Value>(b).ok());
            let all: Vec<Value> = std::iter::once(mine).chain(theirs).collect();
            if asked.method == Method::GET {
                let list: Vec<Value> =
                    all.iter().flat_map(|v| v["sessions"].as_array().cloned().unwrap_or_default()).collect();
                json(StatusCode::OK, &json!({ "sessions": list }))
            } else {
                json(StatusCode::OK, &json!({ "ended": all.iter().filter_map(|v| v["ended"].as_u64()).sum::<u64>() }))
            }
        }
        // A link or token lives on one relay: its answer, if any relay had it.
        _ if own.status() == StatusCode::NOT_FOUND => {
            match answers.into_iter().find(|(s, _)| *s != StatusCode::NOT_FOUND) {
                Some((status, body)) => relayed(status, body),
                None => own,
            }
        }
        _ => own,
    }
}

/// A peer's answer, as this relay's.
fn relayed(status: StatusCode, body: Bytes) -> Response<AdminBody> {
    let mut resp = Response::new(Full::new(body).map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp
}
