//! Opening a TCP tunnel: the one path for agent sessions and bore clients.
//!
//! 1. A port asked for by number must be in the relay's range (`--tcp-ports`), allowed by the
//!    token, and not leased to another owner.
//! 2. The token's tunnel quota gives a slot.
//! 3. A public port is bound: the one asked for; else the one this client had before, if it is
//!    still free; else a free port of the range that nobody holds a lease on. So a tunnel is
//!    never promised a port the relay does not hold. In a cluster, a port this relay forwards
//!    for a tunnel held elsewhere is let go first (the directory then decides who owns it).
//! 4. The tunnel is named `tcp-<port>`, gets its URL, and is registered.

use std::net::SocketAddr;
use std::sync::Arc;

use postern_proto::{hostname, RefuseCode};
use rand::Rng;
use tokio::net::TcpListener;

use super::registry::{NameTaken, Registration};
use super::{Member, Tunnel, TunnelInfo};
use crate::auth::Identity;
use crate::config::{PortRange, RelayConfig};
use crate::leases::{Claim, Leases};
use crate::quota::{QuotaExceeded, TokenQuota};

/// Why a TCP tunnel was not opened. The message is safe to send to the client.
#[derive(Debug, thiserror::Error)]
pub enum OpenRefusal {
    /// The port asked for is outside the relay's range.
    #[error("port {port} is outside this relay's TCP port range {range}")]
    OutOfRange {
        /// The port asked for.
        port: u16,
        /// The relay's range.
        range: PortRange,
    },
    /// The token does not allow asking for this port.
    #[error("your token does not allow public port {0}")]
    NotAllowed(u16),
    /// Another owner's lease holds the port.
    #[error("port {port} is reserved for another client for {secs}s")]
    Reserved {
        /// The port.
        port: u16,
        /// Seconds left on the lease.
        secs: u64,
    },
    /// The token's tunnel quota is used up.
    #[error(transparent)]
    Quota(#[from] QuotaExceeded),
    /// The port asked for, or every port of the range, is in use.
    #[error("{0}")]
    Unavailable(String),
    /// Another tunnel holds the name (a race with another client).
    #[error("{0}: another client holds it")]
    Taken(#[from] NameTaken),
}

impl OpenRefusal {
    /// The refusal code an agent gets.
    pub fn code(&self) -> RefuseCode {
        match self {
            Self::OutOfRange { .. } | Self::NotAllowed(_) => RefuseCode::PortNotAllowed,
            Self::Reserved { .. } | Self::Quota(_) | Self::Unavailable(_) | Self::Taken(_) => RefuseCode::Unavailable,
        }
    }
}

/// What a TCP tunnel is opened with.
#[derive(Debug)]
pub struct TcpOpen<'a> {
    /// The relay's settings (range, bind address, domain).
    pub config: &'a RelayConfig,
    /// Who asks: owner and port rights.
    pub identity: &'a Identity,
    /// The token's quota, if limited.
    pub quota: Option<Arc<TokenQuota>>,
    /// A public port asked for by number.
    pub requested: Option<u16>,
    /// The port this client had before (its lease), tried first when none is asked for.
    pub leased: Option<u16>,
    /// The cluster, on a clustered relay (its forwarding listeners).
    pub cluster: Option<&'a crate::cluster::Cluster>,
}

/// Opens and registers a TCP tunnel described by `info` (its name, URL and public port are
/// filled in here), served by `member` (none for bore, whose client claims connections
/// itself); `shape` sets what else the caller's tunnel carries.
pub async fn tcp(
    open: TcpOpen<'_>,
    mut info: TunnelInfo,
    member: Option<Member>,
    registration: &mut Registration,
    shape: impl FnOnce(&mut Tunnel),
) -> Result<Arc<Tunnel>, OpenRefusal> {
    let TcpOpen { config, identity, quota, requested, leased, cluster } = open;
    let leases = registration.leases().clone();
    if let Some(port) = requested {
        if !config.tcp_ports.contains(port) {
            return Err(OpenRefusal::OutOfRange { port, range: config.tcp_ports });
        }
        if !identity.may_request_port(port) {
            return Err(OpenRefusal::NotAllowed(port));
        }
        if let Claim::Held(left) = leases.check_port(port, &identity.subject) {
            return Err(OpenRefusal::Reserved { port, secs: left.as_secs() + 1 });
        }
    }
    let slot = quota.as_ref().map(|q| q.add_tunnel()).transpose()?;
    if let (Some(cluster), Some(port)) = (cluster, requested.or(leased)) {
        cluster.ports.release(port).await;
    }
    let listener = bind(config, requested, leased, &leases).await?;
    let port = listener.local_addr().map_err(|e| OpenRefusal::Unavailable(e.to_string()))?.port();
    info.name = hostname::tcp_name(port);
    info.public_url = format!("tcp://{}:{port}", config.domain);
    info.public_port = Some(port);
    let mut tunnel = Tunnel::with_members(info, member.into_iter().collect());
    tunnel.quota = quota;
    tunnel.slot = std::sync::Mutex::new(slot);
    tunnel.listener = std::sync::Mutex::new(Some(listener));
    shape(&mut tunnel);
    Ok(registration.insert(tunnel)?)
}

/// Binds a public listener: the `requested` port; else the `leased` port if it is still free;
/// else a free port from the range that nobody holds a lease on.
async fn bind(
    config: &RelayConfig,
    requested: Option<u16>,
    leased: Option<u16>,
    leases: &Leases,
) -> Result<TcpListener, OpenRefusal> {
    let ip = config.tcp_bind();
    if let Some(port) = requested {
        return TcpListener::bind(SocketAddr::new(ip, port))
            .await
            .map_err(|e| OpenRefusal::Unavailable(format!("port {port} is not available: {e}")));
    }
    if let Some(port) = leased {
        if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)).await {
            return Ok(l);
        }
    }
    match config.tcp_ports {
        PortRange::Ephemeral => {
            for _ in 0..16 {
                let l = TcpListener::bind(SocketAddr::new(ip, 0))
                    .await
                    .map_err(|e| OpenRefusal::Unavailable(format!("no ephemeral port available: {e}")))?;
                if !l.local_addr().is_ok_and(|a| leases.port_leased(a.port())) {
                    return Ok(l);
                }
            }
            Err(OpenRefusal::Unavailable("no free ephemeral port without a lease".into()))
        }
        PortRange::Range(lo, hi) => {
            // Start at a random place so ports are not predictable and restarts spread out.
            let span = u32::from(hi - lo) + 1;
            let start = rand::rng().random_range(0..span);
            for i in 0..span {
                let port = lo + ((start + i) % span) as u16;
                if leases.port_leased(port) {
                    continue;
                }
                if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, port)).await {
                    return Ok(l);
                }
            }
            Err(OpenRefusal::Unavailable(format!("every port in {lo}-{hi} is in use or reserved")))
        }
    }
}
