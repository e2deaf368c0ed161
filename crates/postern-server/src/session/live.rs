//! Tunnels opened and closed on a live session, after the handshake: the agent's `Open`,
//! `Serving` and `Close`, and the changes the admin API asks of the agent (`Change`, answered
//! by `Changed`).
//!
//! A tunnel opened live is reserved first (its name, port and quota) without taking streams.
//! The relay answers `Opened`; the agent routes the name and answers `Serving`; only then does
//! the tunnel take this connection's streams and announce itself. So no stream ever reaches an
//! agent that cannot route it, although the control stream and the streams race each other.

use std::collections::HashMap;
use std::sync::Arc;

use postern_proto::{ChangeOutcome, Control, RefuseCode, TunnelKind, TunnelSpec};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument, Span};

use super::grant::{self, Reserved, Serve, Who};
use super::Shared;
use crate::agent::{AgentHandle, RemoteChange};
use crate::tunnel::registry::{Agent, Registration};

/// Opens in flight (reserved, waiting for the agent's `Serving`) one session may have.
const MAX_PENDING: usize = 16;

/// Admin API changes waiting for the agent's answer that one session may have.
const MAX_ASKED: usize = 64;

/// One session's tunnels, as they change while it lives. Dropping it leaves them all.
pub(super) struct Live<'a> {
    shared: &'a Shared,
    who: &'a Who<'a>,
    agent: AgentHandle,
    registration: Registration,
    entry: Option<Arc<Agent>>,
    pending: HashMap<u64, Reserved>,
    asked: HashMap<u64, oneshot::Sender<ChangeOutcome>>,
    next: u64,
    shutdown: CancellationToken,
}

impl<'a> Live<'a> {
    /// The session of `agent`, holding the tunnels of its `Hello` in `registration`.
    pub(super) fn new(
        shared: &'a Shared,
        who: &'a Who<'a>,
        agent: AgentHandle,
        registration: Registration,
        shutdown: CancellationToken,
    ) -> Self {
        let entry = shared.registry.agent(agent.session_id());
        Live {
            shared,
            who,
            agent,
            registration,
            entry,
            pending: HashMap::new(),
            asked: HashMap::new(),
            next: 0,
            shutdown,
        }
    }

    /// Reserves the tunnel of the agent's `Open`; the answer to send back.
    pub(super) async fn open(&mut self, request: u64, spec: TunnelSpec) -> Control {
        let not = |code, message: String| Control::NotOpened { request, code, message };
        let most = self.shared.config.max_tunnels_per_agent;
        if self.pending.len() >= MAX_PENDING {
            return not(RefuseCode::Overloaded, format!("more than {MAX_PENDING} tunnels are being opened at once"));
        }
        if self.pending.contains_key(&request) {
            return not(RefuseCode::BadRequest, format!("request {request} is already being opened"));
        }
        if self.registration.tunnels().len() >= most {
            return not(RefuseCode::BadRequest, format!("this relay allows {most} tunnels per client"));
        }
        let reserved =
            grant::reserve(&spec, self.who, self.shared, &self.agent, &mut self.registration, Serve::Later).await;
        let (grant, reserved) = match reserved {
            Ok(r) => r,
            Err((code, message)) => {
                info!(kind = spec.kind.as_str(), port = spec.local_port, %message, "live tunnel refused");
                return not(code, message);
            }
        };
        if let (Some(cluster), Reserved::Own(t)) = (&self.shared.cluster, &reserved) {
            if let Err((code, message)) = cluster.claim(std::slice::from_ref(t), self.who.identity()).await {
                self.registration.leave(&t.info.name);
                return not(code, message);
            }
        }
        self.pending.insert(request, reserved);
        Control::Opened { request, grant }
    }

    /// The agent routes the tunnel of `request`: it takes streams from now on. Returns a
    /// `NotOpened` when it could not after all.
    pub(super) fn serving(&mut self, request: u64) -> Option<Control> {
        let reserved = self.pending.remove(&request)?;
        let registry = &self.shared.registry;
        let t = match reserved {
            Reserved::Own(t) => {
                registry.attach(&t, &self.agent);
                if t.info.kind == TunnelKind::Tcp {
                    let (gate, metrics) = (self.shared.gate.clone(), registry.metrics().clone());
                    let edge = crate::tcp_edge::serve(
                        t.clone(),
                        gate,
                        metrics,
                        registry.access_log().clone(),
                        self.shutdown.clone(),
                    );
                    tokio::spawn(edge.instrument(Span::current()));
                }
                t
            }
            Reserved::Joins(t) => match self.who.join(&mut self.registration, &t.info.name, &self.agent) {
                Some(t) => t,
                None => {
                    let message = format!("tunnel {} closed before this connection could join it", t.info.name);
                    return Some(Control::NotOpened { request, code: RefuseCode::Unavailable, message });
                }
            },
        };
        registry.announce_up(&t);
        info!(tunnel = %t.info.name, url = %t.info.public_url, "tunnel up (opened live)");
        self.list();
        None
    }

    /// The agent no longer serves tunnel `name`.
    pub(super) fn close(&mut self, name: &str) {
        self.pending.retain(|_, r| match r {
            Reserved::Own(t) | Reserved::Joins(t) => t.info.name != name,
        });
        if self.registration.leave(name) {
            info!(tunnel = %name, "tunnel closed by the agent");
        }
        self.list();
    }

    /// Sends an admin API change on to the agent: the `Change` to send, if there is room to wait
    /// for its answer.
    pub(super) fn ask(&mut self, asked: RemoteChange) -> Option<Control> {
        self.asked.retain(|_, reply| !reply.is_closed());
        if self.asked.len() >= MAX_ASKED {
            let message = format!("more than {MAX_ASKED} changes are waiting for this agent's answer");
            let _ = asked.reply.send(ChangeOutcome::Failed { code: RefuseCode::Overloaded, message });
            return None;
        }
        self.next += 1;
        self.asked.insert(self.next, asked.reply);
        Some(Control::Change { request: self.next, change: asked.change })
    }

    /// The agent's answer to the change of `request`.
    pub(super) fn answered(&mut self, request: u64, outcome: ChangeOutcome) {
        match self.asked.remove(&request) {
            Some(reply) => {
                if let ChangeOutcome::Refused { message } = &outcome {
                    warn!(%message, "the agent refused a change asked through the admin API");
                }
                let _ = reply.send(outcome);
            }
            None => warn!(request, "the agent answered a change nobody asked for"),
        }
    }

    /// Lists the tunnels this connection serves on its agent's entry.
    fn list(&self) {
        let Some(entry) = &self.entry else { return };
        let names = self
            .registration
            .tunnels()
            .iter()
            .filter(|t| t.sessions().iter().any(|s| s == self.agent.session_id()))
            .map(|t| t.info.name.clone())
            .collect();
        *entry.serving.lock().unwrap_or_else(|p| p.into_inner()) = names;
    }
}
