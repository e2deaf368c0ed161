//! What a session is granted: its identity's names and ports, reserved before the `Welcome`
//! promises them, and its custom domains.
//!
//! Every requested tunnel is reserved in turn ([`reserve_all`]): a TCP tunnel binds its public
//! port ([`crate::tunnel::open`]); an HTTP tunnel claims `<id>-<port>` (and, if free, the bare
//! `<id>`) under the token's id patterns and the leases; a custom domain is granted by the
//! domain policy. A connection of the same client (or of a sharing client) joins a tunnel that
//! is already up instead. Whatever was reserved is released when the session's
//! [`Registration`] is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;

use postern_proto::{hostname, route, Hello, RefuseCode, TunnelGrant, TunnelKind, TunnelSpec};

use super::Shared;
use crate::access::ClientAccess;
use crate::agent::AgentHandle;
use crate::auth::Identity;
use crate::leases::Claim;
use crate::quota::TokenQuota;
use crate::tunnel::open::{self, TcpOpen};
use crate::tunnel::registry::Registration;
use crate::tunnel::{Member, Tunnel, TunnelInfo};

/// A refusal of the whole Hello: its code and a message for the agent.
pub(super) type Refusal = (RefuseCode, String);

/// When a reserved tunnel starts taking the session's streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Serve {
    /// At once: a tunnel of the `Hello`, reserved before the connection can carry streams.
    Now,
    /// Once the agent has routed its name (`Serving`): a tunnel opened live, on a connection
    /// that already carries streams.
    Later,
}

impl Serve {
    fn member(self, agent: &AgentHandle) -> Option<Member> {
        match self {
            Self::Now => Some(Member::Agent(agent.clone())),
            Self::Later => None,
        }
    }
}

/// What was reserved for one tunnel.
pub(super) enum Reserved {
    /// A tunnel of this session's own (for [`Serve::Later`], not served yet).
    Own(Arc<Tunnel>),
    /// A tunnel another connection of the client serves, which this one joins (for
    /// [`Serve::Later`], once the agent is ready).
    Joins(Arc<Tunnel>),
}

/// The tunnels a session was granted.
pub(super) struct Granted {
    /// What the `Welcome` tells the agent.
    pub grants: Vec<TunnelGrant>,
    /// TCP tunnels whose public listeners are served once the mux is up.
    pub listeners: Vec<Arc<Tunnel>>,
}

/// Reserves every tunnel `hello` asks for, or none.
pub(super) async fn reserve_all(
    hello: &Hello,
    who: &Who<'_>,
    shared: &Shared,
    agent: &AgentHandle,
    registration: &mut Registration,
) -> Result<Granted, Refusal> {
    let most = shared.config.max_tunnels_per_agent;
    if hello.tunnels.len() > most {
        return Err((
            RefuseCode::BadRequest,
            format!("{} tunnels requested, this relay allows {most} per client", hello.tunnels.len()),
        ));
    }
    let mut granted = Granted { grants: Vec::new(), listeners: Vec::new() };
    for spec in &hello.tunnels {
        let (grant, reserved) = reserve(spec, who, shared, agent, registration, Serve::Now).await?;
        granted.grants.push(grant);
        if let Reserved::Own(t) = reserved {
            if t.info.kind == TunnelKind::Tcp {
                granted.listeners.push(t);
            }
        }
    }
    Ok(granted)
}

/// Who is asking for a tunnel.
pub(super) struct Who<'a> {
    client_id: &'a str,
    identity: &'a Identity,
    session_id: &'a str,
    peer: SocketAddr,
    quota: Option<Arc<TokenQuota>>,
    group: Option<&'a str>,
    /// The client id came from the Hello or the token, not from the relay.
    explicit_id: bool,
}

impl<'a> Who<'a> {
    /// The agent of session `session_id` from `peer`, settled on `client_id`.
    pub(super) fn new(
        hello: &'a Hello,
        identity: &'a Identity,
        client_id: &'a str,
        session_id: &'a str,
        peer: SocketAddr,
        quota: Option<Arc<TokenQuota>>,
    ) -> Self {
        Who {
            client_id,
            identity,
            session_id,
            peer,
            quota,
            group: hello.group.as_deref().filter(|g| !g.is_empty() && g.len() <= 64),
            explicit_id: hello.client_id.is_some()
                || identity.claims.as_ref().is_some_and(|c| hostname::is_label(&c.sub.to_ascii_lowercase())),
        }
    }
}

impl Who<'_> {
    /// What identifies this client across reconnects and restarts: the client id when the
    /// client or its token chose it, else the process's instance id.
    pub(super) fn instance(&self) -> &str {
        if self.explicit_id {
            self.client_id
        } else {
            self.group.unwrap_or(self.client_id)
        }
    }

    fn shareable(&self) -> bool {
        self.identity.claims.as_ref().is_some_and(|c| c.share)
    }

    /// The credential's identity.
    pub(super) fn identity(&self) -> &Identity {
        self.identity
    }

    /// Makes `agent` serve tunnel `name`, found joinable at [`Serve::Later`] reservation, if it
    /// still may.
    pub(super) fn join(&self, registration: &mut Registration, name: &str, agent: &AgentHandle) -> Option<Arc<Tunnel>> {
        registration.join(name, agent, &self.identity.subject, self.group, self.shareable())
    }
}

/// Reserves one requested tunnel: binds its public port (tcp) or claims its name (http), and
/// registers it, served by `agent` now or later (`serve`). Returns the grant and what was
/// reserved.
pub(super) async fn reserve(
    spec: &TunnelSpec,
    who: &Who<'_>,
    shared: &Shared,
    agent: &AgentHandle,
    registration: &mut Registration,
    serve: Serve,
) -> Result<(TunnelGrant, Reserved), Refusal> {
    if spec.local_port == 0 {
        return Err((RefuseCode::BadRequest, "local port 0 is not a port a service can listen on".into()));
    }
    let access = ClientAccess::from_spec(spec.access.as_ref())
        .map_err(|e| (RefuseCode::BadRequest, format!("invalid access rules: {e}")))?;
    if access.login().is_some() && spec.kind != TunnelKind::Http {
        return Err((RefuseCode::BadRequest, "visitor sign-in (--allow-email, --login) is for HTTP tunnels".into()));
    }
    if access.login().is_some_and(|emails| !emails.is_empty()) && shared.config.oidc_providers().is_empty() {
        return Err((
            RefuseCode::BadRequest,
            "this relay has no identity provider (--oidc-issuer), so --allow-email cannot work; \
             --login lets in share links and service tokens only"
                .into(),
        ));
    }
    let path = match (&spec.path, spec.kind) {
        (None, _) if spec.strip_prefix => return Err((RefuseCode::BadRequest, "strip_prefix needs a path".into())),
        (None, _) => None,
        (Some(_), TunnelKind::Tcp) => return Err((RefuseCode::BadRequest, "--path is for HTTP tunnels".into())),
        (Some(_), _) if access.login().is_some() => {
            let why = "visitor sign-in is per host, and --path shares its host: use one or the other for now";
            return Err((RefuseCode::BadRequest, why.into()));
        }
        (Some(p), _) => Some(route::path_prefix(p).map_err(|e| (RefuseCode::BadRequest, e))?),
    };
    if let Some(joined) = join_existing(spec, path.as_deref(), who, shared, agent, registration, serve) {
        return Ok(joined);
    }
    let owner = who.identity.subject.as_str();
    let info = TunnelInfo {
        name: String::new(),
        kind: spec.kind,
        public_url: String::new(),
        public_port: None,
        local_port: spec.local_port,
        id: who.client_id.to_string(),
        client_id: who.client_id.to_string(),
        owner: owner.to_string(),
        session_id: who.session_id.to_string(),
        agent_addr: who.peer,
        since: SystemTime::now(),
    };
    let shape = |t: &mut Tunnel| {
        t.instance = who.instance().to_string();
        t.group = who.group.map(str::to_string);
        t.shareable = who.shareable();
        t.access = access;
        t.inspector.set(spec.inspect && spec.kind == TunnelKind::Http);
        t.strip_prefix = spec.strip_prefix && path.is_some();
        t.path = path.clone();
    };
    let id = spec.id.as_deref().unwrap_or(who.client_id).to_ascii_lowercase();
    let tunnel = match spec.kind {
        TunnelKind::Tcp => {
            let mut leased = registration.leases().port_for(owner, who.instance(), spec.local_port);
            if let (None, Some(cluster)) = (leased, &shared.cluster) {
                leased = cluster.leased_port(owner, who.instance(), spec.local_port).await;
            }
            let open = TcpOpen {
                config: &shared.config,
                identity: who.identity,
                quota: who.quota.clone(),
                requested: spec.remote_port,
                leased,
                cluster: shared.cluster.as_deref(),
            };
            open::tcp(open, info, serve.member(agent), registration, shape)
                .await
                .map_err(|e| (e.code(), e.to_string()))?
        }
        TunnelKind::Http => {
            let info = http_info(info, &id, who, shared, registration)?;
            let mut tunnel = Tunnel::with_members(info, serve.member(agent).into_iter().collect());
            tunnel.quota = who.quota.clone();
            let slot = who.quota.as_ref().map(|q| q.add_tunnel()).transpose();
            tunnel.slot = std::sync::Mutex::new(slot.map_err(|e| (RefuseCode::Unavailable, e.to_string()))?);
            shape(&mut tunnel);
            registration
                .insert(tunnel)
                .map_err(|e| (RefuseCode::Unavailable, format!("{e}: another client holds it")))?
        }
    };
    let kind = tunnel.info.kind;
    let (default_url, domain_url) = match kind {
        TunnelKind::Tcp => (None, None),
        TunnelKind::Http => match expose(spec, &id, who, shared, registration, &tunnel).await {
            Ok(urls) => urls,
            Err(refusal) => {
                // A live open goes on without it; a Hello is refused as a whole anyway.
                registration.leave(&tunnel.info.name);
                return Err(refusal);
            }
        },
    };
    let grant = TunnelGrant {
        name: tunnel.info.name.clone(),
        kind,
        local_port: spec.local_port,
        public_url: tunnel.info.public_url.clone(),
        default_url,
        domain_url,
    };
    Ok((grant, Reserved::Own(tunnel)))
}

/// Names an HTTP tunnel `<id>-<local port>`, if the id is usable, allowed by the token and
/// not leased to another owner.
fn http_info(
    mut info: TunnelInfo,
    id: &str,
    who: &Who<'_>,
    shared: &Shared,
    registration: &Registration,
) -> Result<TunnelInfo, Refusal> {
    let Some(urls) = &shared.urls else {
        return Err((RefuseCode::BadRequest, "this relay has no HTTP listener; use a tcp tunnel".into()));
    };
    let name = hostname::label(id, info.local_port);
    if hostname::is_reserved_id(id) {
        return Err((
            RefuseCode::BadRequest,
            format!("tunnel id {id:?} is reserved: names starting with \"tcp-\" belong to TCP tunnels"),
        ));
    }
    if !hostname::is_label(id) || !hostname::is_label(&name) {
        return Err((
            RefuseCode::BadRequest,
            format!(
                "tunnel id {id:?} is not usable in a host name: use a-z, 0-9 and '-', \
                 not starting or ending with '-', and keep \"{name}\" within 63 characters"
            ),
        ));
    }
    if !who.identity.may_use_id(id) {
        return Err((RefuseCode::Unauthorized, format!("your token does not allow the tunnel id {id:?}")));
    }
    if let Claim::Held(left) = registration.leases().check_name(&name, &info.owner) {
        return Err((
            RefuseCode::Unavailable,
            format!("{name} is reserved for another client for {}s", left.as_secs() + 1),
        ));
    }
    info.public_url = urls.url(&name, &shared.config.domain);
    info.name = name;
    info.id = id.to_string();
    Ok(info)
}

/// Makes HTTP `tunnel` reachable beyond its own name: the first tunnel of an id also answers at
/// the bare `<id>` (the default port), a tunnel with a path at that prefix of `<id>`; its
/// custom domain, whole or at its prefix. Returns those URLs.
async fn expose(
    spec: &TunnelSpec,
    id: &str,
    who: &Who<'_>,
    shared: &Shared,
    registration: &mut Registration,
    tunnel: &Arc<Tunnel>,
) -> Result<(Option<String>, Option<String>), Refusal> {
    let (urls, domain) = (shared.urls.as_ref(), shared.config.domain.as_str());
    let prefix = tunnel.path.as_deref().unwrap_or_default();
    let default_url = match &tunnel.path {
        None => registration.insert_alias(id, tunnel).ok().and_then(|()| urls.map(|u| u.url(id, domain))),
        Some(_) => {
            let taken = |_| (RefuseCode::Unavailable, format!("{id}.{domain}{prefix} is served by another client"));
            registration.insert_path(id, tunnel).map_err(taken)?;
            urls.map(|u| format!("{}{prefix}", u.url(id, domain)))
        }
    };
    let mut domain_url = None;
    if let Some(asked) = &spec.domain {
        let granted = grant_domain(asked, who, shared, registration, tunnel).await?;
        domain_url = urls.map(|u| format!("{}{prefix}", u.host_url(&granted)));
    }
    Ok((default_url, domain_url))
}

/// Grants custom `domain` to `tunnel` (the whole host, or the tunnel's path prefix of it) if
/// the policy allows it for this client and nobody else holds it; asks ACME for its
/// certificate.
async fn grant_domain(
    domain: &str,
    who: &Who<'_>,
    shared: &Shared,
    registration: &mut Registration,
    tunnel: &Arc<Tunnel>,
) -> Result<String, Refusal> {
    let domain = shared.domains.normalize(domain).map_err(|e| (RefuseCode::BadRequest, e.to_string()))?;
    let owner = who.identity.subject.as_str();
    shared.domains.authorize(&domain, owner).await.map_err(|e| (RefuseCode::Unauthorized, e.to_string()))?;
    let inserted = match tunnel.path {
        None => registration.insert_alias(&domain, tunnel),
        Some(_) => registration.insert_path(&domain, tunnel),
    };
    inserted.map_err(|_| (RefuseCode::Unavailable, format!("{domain} is served by another client")))?;
    if let Some(acme) = &shared.acme {
        acme.ensure(&domain);
    }
    Ok(domain)
}

/// Another connection of the same client (or a sharing client) serves a tunnel that is already
/// up: join it (now, or once the agent is ready) instead of opening a second one.
fn join_existing(
    spec: &TunnelSpec,
    path: Option<&str>,
    who: &Who<'_>,
    shared: &Shared,
    agent: &AgentHandle,
    registration: &mut Registration,
    serve: Serve,
) -> Option<(TunnelGrant, Reserved)> {
    let owner = who.identity.subject.as_str();
    let reg = &shared.registry;
    let name = match spec.kind {
        TunnelKind::Tcp => match spec.remote_port {
            Some(port) => hostname::tcp_name(port),
            None => reg.find_tcp(owner, who.group?, spec.local_port, who.session_id)?,
        },
        TunnelKind::Http => {
            let id = spec.id.as_deref().unwrap_or(who.client_id).to_ascii_lowercase();
            if !who.identity.may_use_id(&id) {
                return None;
            }
            hostname::label(&id, spec.local_port)
        }
    };
    let existing = reg.get(&name).filter(|t| t.info.name == name)?;
    if existing.info.local_port != spec.local_port
        || existing.info.kind != spec.kind
        || existing.path.as_deref() != path
    {
        return None;
    }
    let t = match serve {
        Serve::Now => registration.join(&name, agent, owner, who.group, who.shareable())?,
        Serve::Later => reg.joinable(&name, who.session_id, owner, who.group, who.shareable())?,
    };
    let prefix = t.path.as_deref().unwrap_or_default();
    let default_url = match (t.alias.get(), &t.path, &shared.urls) {
        (Some(alias), _, Some(urls)) => Some(urls.url(alias, &shared.config.domain)),
        (None, Some(_), Some(urls)) => Some(format!("{}{prefix}", urls.url(&t.info.id, &shared.config.domain))),
        _ => None,
    };
    let domain_url = match (t.domain.get(), &shared.urls) {
        (Some(domain), Some(urls)) => Some(format!("{}{prefix}", urls.host_url(domain))),
        _ => None,
    };
    let grant = TunnelGrant {
        name: t.info.name.clone(),
        kind: t.info.kind,
        local_port: t.info.local_port,
        public_url: t.info.public_url.clone(),
        default_url,
        domain_url,
    };
    Some((grant, Reserved::Joins(t)))
}

/// Settles the client id: the requested one if it is a valid DNS label, else the token's
/// subject if that is one, else derived from the session id.
pub(super) fn client_id(hello: &Hello, identity: &Identity, session_id: &str) -> Result<String, String> {
    let from_token = identity.claims.as_ref().map(|c| c.sub.to_ascii_lowercase()).filter(|s| hostname::is_label(s));
    match &hello.client_id {
        None => Ok(from_token.unwrap_or_else(|| format!("agent-{}", &session_id[..8]))),
        Some(id) => {
            let id = id.to_ascii_lowercase();
            if hostname::is_label(&id) {
                Ok(id)
            } else {
                Err(format!(
                    "client id {id:?} is not a DNS label: use 1-63 characters a-z, 0-9 and '-', not starting or ending with '-'"
                ))
            }
        }
    }
}
