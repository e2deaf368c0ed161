//! Letting the public in: the one admission path of every edge (TCP, bore, HTTP).
//!
//! A public **connection** first takes a place under the per-address cap
//! (`--max-connections-per-ip`) and, last, one under the relay-wide cap
//! (`--max-public-connections`); HTTP takes both once per connection ([`Gate::connection`]),
//! the TCP edge and bore once per connection they hand to a tunnel.
//!
//! A connection another relay of the cluster accepted took those places there; it arrives
//! here already capped (`Via::Peer`).
//!
//! Entering a **tunnel** ([`Gate::admit_public`]), in this order:
//!
//! 1. the tunnel's and the operator's address rules ([`access::check_ip`]);
//! 2. for an HTTP request, the tunnel's credentials, its sign-in (a session or service token,
//!    [`crate::visitor`]) and the operator's forward-auth;
//! 3. the token's quotas: volume for this period, request rate (HTTP), then concurrent
//!    streams;
//! 4. a member of the tunnel with a free stream slot (not for bore, whose client claims its
//!    connections itself).
//!
//! Everything taken is held by the [`Admitted`] value and given back when it is dropped. A
//! connection refused on the way is counted in `postern_public_connections_refused_total`
//! with the [`Refusal`]'s label; an HTTP request's refusal is its error page, counted with the
//! other answers.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Response};
use http_body_util::Full;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{debug, warn};

use super::{Member, Tunnel};
use crate::abuse::{IpLimits, IpPermit};
use crate::access::forward_auth::{self, Asking, Verdict};
use crate::access::{self, Denied, Policies};
use crate::metrics::RelayMetrics;
use crate::outbound::HttpsClient;
use crate::quota::QuotaExceeded;
use crate::visitor::Visitors;

/// Why the public was not let in.
#[derive(Debug)]
pub enum Refusal {
    /// The visitor's address has `--max-connections-per-ip` connections open.
    PerIpCap,
    /// The relay has `--max-public-connections` connections open.
    ConnectionCap,
    /// The visitor's address is not allowed on this tunnel.
    NotAllowed,
    /// The tunnel needs credentials the request did not carry (`basic`: basic auth is one way
    /// in).
    Credentials {
        /// Basic auth would be accepted.
        basic: bool,
    },
    /// The operator's forward-auth service said no; its answer goes to the visitor.
    AuthDenied(Box<Response<Full<Bytes>>>),
    /// The operator's forward-auth service could not be asked.
    AuthUnavailable,
    /// The tunnel requires sign-in; the request has no session or service token.
    SignIn,
    /// The token that opened the tunnel is over a quota.
    Quota(QuotaExceeded),
    /// Every member serving the tunnel is at its stream cap.
    AgentBusy,
    /// No member serving the tunnel is connected.
    AgentUnavailable,
}

impl Refusal {
    /// The `reason` label of `postern_public_connections_refused_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::PerIpCap => "per_ip_cap",
            Self::ConnectionCap => "connection_cap",
            Self::NotAllowed => "not_allowed",
            Self::Credentials { .. } | Self::AuthDenied(_) | Self::AuthUnavailable | Self::SignIn => "unauthorized",
            Self::Quota(_) => "quota",
            Self::AgentBusy => "agent_cap",
            Self::AgentUnavailable => "agent_unavailable",
        }
    }
}

/// How the visitor comes in.
#[derive(Debug)]
pub enum Via<'a> {
    /// A connection to a TCP tunnel's public port, to be spliced to a member's stream.
    TcpEdge,
    /// A connection to a bore tunnel's public port, held until the bore client claims it.
    Bore,
    /// An HTTP request, on a connection that [`Gate::connection`] already admitted.
    Http(Asking<'a>),
    /// A TCP connection another relay of the cluster accepted (and capped) and forwarded here.
    Peer,
    /// The same, for a bore tunnel.
    PeerBore,
}

/// What an admitted connection or request holds; dropping it gives everything back.
#[derive(Debug)]
pub struct Admitted {
    /// The member to open the stream on (`None` for bore).
    pub member: Option<Member>,
    /// Headers to add to the request: the visitor's identity, and what forward-auth asked for.
    pub add_headers: HeaderMap,
    _connection: Option<ConnectionPermit>,
    _quota: Option<OwnedSemaphorePermit>,
    _slot: Option<OwnedSemaphorePermit>,
}

/// A public connection's place under the per-address and relay-wide caps.
#[derive(Debug)]
pub struct ConnectionPermit {
    _address: IpPermit,
    _relay: OwnedSemaphorePermit,
}

/// The relay-wide state admission reads: caps, policies, the forward-auth client.
#[derive(Debug)]
pub struct Gate {
    ip_limits: Arc<IpLimits>,
    public_conns: Arc<Semaphore>,
    policies: Policies,
    metrics: Arc<RelayMetrics>,
    outbound: Option<HttpsClient>,
    visitors: Arc<Visitors>,
}

impl Gate {
    /// A gate over these caps and policies; `outbound` asks forward-auth services (without
    /// one, forward-auth fails closed); `visitors` knows who signed in.
    pub fn new(
        ip_limits: Arc<IpLimits>,
        max_public_connections: usize,
        policies: Policies,
        metrics: Arc<RelayMetrics>,
        outbound: Option<HttpsClient>,
        visitors: Arc<Visitors>,
    ) -> Arc<Self> {
        let public_conns = Arc::new(Semaphore::new(max_public_connections));
        Arc::new(Self { ip_limits, public_conns, policies, metrics, outbound, visitors })
    }

    /// The operator's policies.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Visitor sign-in: sessions, grants, passes.
    pub fn visitors(&self) -> &Arc<Visitors> {
        &self.visitors
    }

    /// The per-address caps and lockout (the admin API and the control port use them too).
    pub fn ip_limits(&self) -> &Arc<IpLimits> {
        &self.ip_limits
    }

    fn refused(&self, peer: SocketAddr, why: Refusal) -> Refusal {
        self.metrics.public_refused.with_label_values(&[why.label()]).inc();
        if matches!(why, Refusal::ConnectionCap) {
            warn!(%peer, "public connection refused: relay is at its connection cap");
        } else {
            debug!(%peer, reason = why.label(), "public connection refused");
        }
        why
    }

    /// Admits a public connection to the relay (HTTP takes this once per connection).
    pub fn connection(&self, peer: SocketAddr) -> Result<ConnectionPermit, Refusal> {
        let admitted = match self.ip_limits.admit(peer.ip()) {
            None => Err(Refusal::PerIpCap),
            Some(address) => self.relay_permit().map(|relay| ConnectionPermit { _address: address, _relay: relay }),
        };
        admitted.map_err(|why| self.refused(peer, why))
    }

    fn relay_permit(&self) -> Result<OwnedSemaphorePermit, Refusal> {
        self.public_conns.clone().try_acquire_owned().map_err(|_| Refusal::ConnectionCap)
    }

    /// Lets a visitor from `peer` into `tunnel`, or says why not.
    pub async fn admit_public(&self, tunnel: &Tunnel, peer: SocketAddr, via: Via<'_>) -> Result<Admitted, Refusal> {
        let connection = matches!(via, Via::TcpEdge | Via::Bore);
        let result = self.admit(tunnel, peer, via).await;
        match result {
            Err(why) if connection => Err(self.refused(peer, why)),
            other => other,
        }
    }

    async fn admit(&self, tunnel: &Tunnel, peer: SocketAddr, via: Via<'_>) -> Result<Admitted, Refusal> {
        let address = match via {
            Via::TcpEdge | Via::Bore => Some(self.ip_limits.admit(peer.ip()).ok_or(Refusal::PerIpCap)?),
            Via::Http(_) | Via::Peer | Via::PeerBore => None,
        };
        let policies = self.policies.matching(&tunnel.info.id);
        access::check_ip(&tunnel.access, &policies, peer.ip()).map_err(|_| Refusal::NotAllowed)?;
        let mut add_headers = HeaderMap::new();
        if let Via::Http(asking) = &via {
            if let Err(Denied::Credentials { basic }) = access::check_credentials(&tunnel.access, asking.headers) {
                return Err(Refusal::Credentials { basic });
            }
            if access::login_required(&tunnel.access, &policies) {
                let identity = self.visitors.admit(tunnel, &policies, asking.headers, asking.host);
                add_headers.extend(identity.map_err(|_| Refusal::SignIn)?);
            }
            for fa in policies.iter().filter_map(|p| p.forward_auth.as_ref()) {
                let client = self.outbound.as_ref().ok_or(Refusal::AuthUnavailable)?;
                match forward_auth::check(client, fa, asking).await {
                    Verdict::Allow(headers) => add_headers.extend(headers),
                    Verdict::Deny(resp) => return Err(Refusal::AuthDenied(Box::new(resp))),
                    Verdict::Unavailable(why) => {
                        warn!(url = %fa.url, error = %why, "forward-auth service failed");
                        return Err(Refusal::AuthUnavailable);
                    }
                }
            }
        }
        let quota = match &tunnel.quota {
            None => None,
            Some(q) => {
                q.admit_volume().map_err(Refusal::Quota)?;
                if matches!(via, Via::Http(_)) {
                    q.admit_request().map_err(Refusal::Quota)?;
                }
                q.admit_stream().map_err(Refusal::Quota)?
            }
        };
        let (member, slot) = match via {
            Via::Bore | Via::PeerBore => (None, None),
            _ => match tunnel.pick() {
                Ok((m, slot)) => (Some(m), Some(slot)),
                Err(true) => return Err(Refusal::AgentBusy),
                Err(false) => return Err(Refusal::AgentUnavailable),
            },
        };
        let connection = match address {
            Some(address) => Some(ConnectionPermit { _address: address, _relay: self.relay_permit()? }),
            None => None,
        };
        Ok(Admitted { member, add_headers, _connection: connection, _quota: quota, _slot: slot })
    }
}
