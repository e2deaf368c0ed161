//! Every relay of a cluster listens on every claimed TCP port, so an L4 load balancer or DNS
//! round-robin may send port P to any relay. The relay that holds the agent binds P for its
//! tunnel as a single relay would; every other relay binds P when the directory announces a
//! route for `tcp-P` (bind on claim, not the whole range: a relay holds one socket per live TCP
//! tunnel, not ten thousand) and forwards what it accepts ([`Cluster::forward_tcp`]). When the
//! route goes, so does the listener; when an agent of that port connects here, its tunnel takes
//! the port over ([`Ports::release`]).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, Mutex};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn, Instrument};

use super::forward::Forwarded;
use super::Cluster;

/// A forwarding listener: its task's stop token, and a signal once it has let go of the port.
#[derive(Debug)]
struct Held {
    stop: CancellationToken,
    released: oneshot::Receiver<()>,
}

/// The forwarding listeners of this relay.
#[derive(Debug)]
pub struct Ports {
    bind: IpAddr,
    held: Mutex<HashMap<u16, Held>>,
}

impl Ports {
    /// Forwarding listeners that bind on `bind` (`--tcp-bind`).
    pub fn new(bind: IpAddr) -> Self {
        Self { bind, held: Mutex::default() }
    }

    /// Stops forwarding port `port` and waits until its socket is closed, so a local tunnel
    /// can bind it.
    pub async fn release(&self, port: u16) {
        let held = self.held.lock().await.remove(&port);
        if let Some(h) = held {
            h.stop.cancel();
            let _ = h.released.await;
        }
    }

    /// Brings the listener of TCP tunnel `name` in line with the directory: bound while other
    /// relays route it and no local tunnel holds it, closed otherwise.
    pub async fn sync(&self, cluster: &Arc<Cluster>, name: &str) {
        let Some(port) = name.strip_prefix(postern_proto::hostname::TCP_PREFIX).and_then(|p| p.parse::<u16>().ok())
        else {
            return;
        };
        let local = cluster.registry.get(name).is_some();
        cluster.routes.invalidate(name);
        let remote = !local
            && match cluster.routes.lookup(&cluster.store, name).await {
                Ok(relays) => !relays.is_empty(),
                // Unknown: leave the port as it is; the next announcement settles it.
                Err(_) => return,
            };
        let mut held = self.held.lock().await;
        if !remote {
            if let Some(h) = held.remove(&port) {
                h.stop.cancel();
            }
            return;
        }
        if held.contains_key(&port) {
            return;
        }
        let listener = match TcpListener::bind(SocketAddr::new(self.bind, port)).await {
            Ok(l) => l,
            Err(e) => {
                warn!(port, error = %e, "cannot listen on a cluster TCP port; it is served by the other relays");
                return;
            }
        };
        let stop = CancellationToken::new();
        let (done, released) = oneshot::channel();
        held.insert(port, Held { stop: stop.clone(), released });
        info!(port, "forwarding a cluster TCP port");
        let (cluster, name) = (cluster.clone(), name.to_string());
        tokio::spawn(
            async move {
                loop {
                    let (stream, peer) = tokio::select! {
                        _ = stop.cancelled() => break,
                        a = listener.accept() => match a {
                            Ok(a) => a,
                            Err(e) => {
                                debug!(error = %e, "accept failed");
                                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                                continue;
                            }
                        },
                    };
                    let Ok(permit) = cluster.gate.connection(peer) else { continue };
                    let (cluster, name) = (cluster.clone(), name.clone());
                    tokio::spawn(
                        async move {
                            if let Forwarded::Unreachable | Forwarded::NoRoute =
                                cluster.forward_tcp(stream, &name, peer).await
                            {
                                debug!("no relay could take the connection");
                            }
                            drop(permit);
                        }
                        .instrument(info_span!("forwarded", %peer)),
                    );
                }
                drop(listener);
                let _ = done.send(());
            }
            .instrument(info_span!("cluster_port", port)),
        );
    }
}
