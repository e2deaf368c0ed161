//! The peer listener: where other relays of the cluster forward what they accepted for tunnels
//! whose agents are here. Each link is authenticated ([`super::peer`]) and then serves HTTP/2;
//! each stream is one forwarded request or connection ([`super::forward`]):
//!
//! - `http`: goes through this relay's own HTTP edge, exactly as a public request would, with
//!   the visitor's address and scheme as the entry relay saw them;
//! - `upgrade`: the same, as the original upgrade request; a `101` becomes `200` with
//!   `postern-status: 101` (HTTP/2 has no 101), then bytes are spliced;
//! - `tcp`: admitted into the TCP (or bore) tunnel it names and spliced to a stream to its
//!   agent (or held for the bore client to claim);
//! - `admin`: this relay's part of a cluster-wide admin view.
//!
//! A stream for a name this relay does not hold is answered `421` with `postern-error:
//! not-here`, never forwarded again: one hop at most.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use postern_proto::stream;
use postern_proto::TunnelKind;
use postern_transport::accept;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info_span, warn, Instrument};

use super::forward::{FWD, FWD_METHOD, FWD_PATH, FWD_PEER, FWD_PROTO, NOT_HERE};
use super::Cluster;
use crate::bore::BoreEdge;
use crate::http_edge::proxy::{self, Edge, EdgeBody};
use crate::tunnel::admit::Via;

/// What the peer listener serves with.
#[derive(Debug)]
pub struct PeerService {
    /// The cluster membership (TLS, metrics).
    pub cluster: Arc<Cluster>,
    /// This relay's HTTP edge.
    pub edge: Arc<Edge>,
    /// The bore endpoint, if it runs (bore tunnels' forwarded connections).
    pub bore: Option<Arc<BoreEdge>>,
    /// The admin API's cluster-local answers.
    pub admin: Option<Arc<crate::admin::Admin>>,
}

/// Accepts peers until `shutdown`. Returns the tracker of link tasks.
pub async fn serve(listener: TcpListener, service: Arc<PeerService>, shutdown: CancellationToken) -> TaskTracker {
    let tasks = TaskTracker::new();
    loop {
        let Some((tcp, addr)) = accept::next(&listener, "peer", &shutdown).await else { break };
        let (service, shutdown) = (service.clone(), shutdown.clone());
        tasks.spawn(
            async move {
                let (tls, peer) = match service.cluster.tls.accept(tcp).await {
                    Ok(ok) => ok,
                    Err(e) => {
                        warn!(error = %e, "peer refused");
                        return;
                    }
                };
                debug!(%peer, "peer linked");
                let svc = {
                    let service = service.clone();
                    service_fn(move |req| {
                        let service = service.clone();
                        async move { Ok::<_, Infallible>(service.handle(req).await) }
                    })
                };
                let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
                builder
                    .timer(TokioTimer::new())
                    .initial_stream_window_size(postern_transport::mux::STREAM_WINDOW)
                    .initial_connection_window_size(postern_transport::mux::CONNECTION_WINDOW)
                    .max_frame_size(postern_transport::mux::MAX_FRAME_SIZE)
                    .max_header_list_size(postern_transport::mux::MAX_HEADER_LIST_SIZE)
                    .max_concurrent_streams(postern_transport::mux::MAX_CONCURRENT_STREAMS)
                    // A peer is authenticated: its cancelled streams are visitors going away.
                    .max_pending_accept_reset_streams(postern_transport::mux::MAX_PENDING_ACCEPT_RESETS)
                    .max_local_error_reset_streams(None);
                let conn = builder.serve_connection(TokioIo::new(tls), svc);
                tokio::pin!(conn);
                tokio::select! {
                    r = conn.as_mut() => if let Err(e) = r { debug!(%peer, error = %e, "peer link ended") },
                    _ = shutdown.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            }
            .instrument(info_span!("peer", %addr)),
        );
    }
    tasks.close();
    tasks
}

fn answer(status: StatusCode, code: &'static str) -> Response<EdgeBody> {
    let mut resp = Response::new(Empty::new().map_err(|never| match never {}).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert("postern-error", HeaderValue::from_static(code));
    resp
}

impl PeerService {
    async fn handle(&self, mut req: Request<Incoming>) -> Response<EdgeBody> {
        self.cluster.metrics.cluster.forwarded.with_label_values(&["in"]).inc();
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let kind = header(FWD).unwrap_or_default();
        let peer: SocketAddr = header(FWD_PEER).and_then(|p| p.parse().ok()).unwrap_or(([0, 0, 0, 0], 0).into());
        let secure = header(FWD_PROTO).as_deref() == Some("https");
        match kind.as_str() {
            "http" => proxy::handle_peer(req, &self.edge, peer, secure).await,
            "upgrade" => {
                let (Some(method), Some(path), Some(proto)) =
                    (header(FWD_METHOD), header(FWD_PATH), header(stream::UPGRADE))
                else {
                    return answer(StatusCode::BAD_REQUEST, "bad-forward");
                };
                // The original upgrade request, on this CONNECT stream (its upgrade is ours).
                let authority = req.uri().authority().map(|a| a.to_string()).unwrap_or_default();
                *req.method_mut() = method.parse().unwrap_or(Method::GET);
                *req.uri_mut() = format!("http://{authority}{path}").parse().unwrap_or_default();
                let h = req.headers_mut();
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
                if let Ok(v) = HeaderValue::from_str(&proto) {
                    h.insert(header::UPGRADE, v);
                }
                let mut resp = proxy::handle_peer(req, &self.edge, peer, secure).await;
                if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
                    *resp.status_mut() = StatusCode::OK;
                    resp.headers_mut().insert(stream::STATUS, HeaderValue::from_static("101"));
                }
                resp
            }
            "tcp" => self.tcp(req, peer).await,
            "admin" => match &self.admin {
                Some(admin) => {
                    crate::admin::peer_view(req, admin).await.map(|b| b.map_err(|never| match never {}).boxed())
                }
                None => answer(StatusCode::NOT_FOUND, NOT_HERE),
            },
            _ => answer(StatusCode::BAD_REQUEST, "bad-forward"),
        }
    }

    /// A forwarded TCP connection: admitted into the tunnel here, then spliced (or held for
    /// the bore client) once the entry relay's CONNECT is answered.
    async fn tcp(&self, mut req: Request<Incoming>, peer: SocketAddr) -> Response<EdgeBody> {
        let name = req.headers().get(stream::TUNNEL).and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let Some(tunnel) =
            self.edge.registry.get(&name).filter(|t| t.info.kind == TunnelKind::Tcp && t.info.name == name)
        else {
            return answer(StatusCode::MISDIRECTED_REQUEST, NOT_HERE);
        };
        let bore = tunnel.sessions().is_empty();
        let via = if bore { Via::PeerBore } else { Via::Peer };
        let admitted = match self.edge.gate.admit_public(&tunnel, peer, via).await {
            Ok(a) => a,
            Err(why) => return answer(StatusCode::FORBIDDEN, why.label()),
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let metrics = self.edge.registry.metrics().clone();
        let log = self.edge.registry.access_log().clone();
        let bore_edge = self.bore.clone();
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let io = TokioIo::new(upgraded);
            match (admitted.member.clone(), bore_edge) {
                (Some(member), _) => {
                    // A cut ends the stream with an error, which resets it toward the relay
                    // that holds the visitor's socket.
                    let io = tokio::io::split(io);
                    crate::tcp_edge::spawn_stream(tunnel, member, admitted, io, peer, metrics, &log, |_| {})
                }
                (None, Some(bore)) => crate::bore::hold_forwarded(&bore, &tunnel, Box::new(io), peer, admitted),
                (None, None) => {}
            }
        });
        Response::new(Full::new(bytes::Bytes::new()).map_err(|never| match never {}).boxed())
    }
}
