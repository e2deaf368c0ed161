//! A live agent session: the agent is the h2 server on the connection it dialled.
//!
//! The relay opens streams; each carries its kind and tunnel in the headers
//! (`postern_proto::stream`). The first is the control stream, kept open for the session's
//! life and run by [`crate::control`] (live tunnels, remote changes); on shutdown the agent
//! sends `Unregister` on it and then GOAWAY.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Request, Response, StatusCode};
use postern_proto::frame::encode;
use postern_proto::stream::{self, StreamKind};
use postern_proto::{Control, Message, TunnelKind};
use postern_transport::liveness::{self, Heard};
use postern_transport::mux;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

use crate::config::AgentConfig;
use crate::connect::Connected;
use crate::control::{Controller, Publish, RouteTable};
use crate::forward;
use crate::http_forward::{self, LocalClients, LocalTarget};
use crate::live::Wanted;

/// How long the agent waits for the relay to close after unregistering.
const UNREGISTER_GRACE: Duration = Duration::from_secs(3);

/// How a session ended without a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// We were asked to stop and unregistered.
    Unregistered,
    /// The relay closed the connection (restart, drain, kick).
    RelayClosed,
}

/// Why a session failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The h2 connection failed.
    #[error("connection to relay failed: {0}")]
    Mux(#[from] h2::Error),
    /// Nothing, not even the relay's PINGs, arrived for this long.
    #[error("relay missed its heartbeat (nothing heard from it for {0:?})")]
    HeartbeatTimeout(Duration),
}

/// Serves the session until the relay goes away or `shutdown` fires. `hello` is what its
/// `Hello` asked for (the `Welcome` answers in the same order); the tunnels it serves are
/// published on `publish` as they change.
///
/// `on_ready` runs once, when the relay opens the control stream: the relay does that after it
/// has registered the session's tunnels, so from then on the public URLs work.
pub async fn serve(
    connected: Connected,
    cfg: &AgentConfig,
    shutdown: &CancellationToken,
    hello: Vec<Arc<Wanted>>,
    publish: Publish,
    on_ready: impl FnOnce(),
) -> Result<SessionEnd, SessionError> {
    let mut on_ready = Some(on_ready);
    let Connected { tls, welcome } = connected;
    let table: RouteTable =
        std::sync::RwLock::new(welcome.tunnels.iter().map(|t| (t.name.clone(), (t.kind, t.local_port))).collect());
    let routes = Arc::new(Routes { tunnels: Arc::new(table), clients: LocalClients::new(cfg.local_connect_timeout) });
    let served = hello.into_iter().zip(welcome.tunnels.iter().cloned()).collect();
    let controller =
        Controller::new(cfg.live.clone(), cfg.allow_remote.clone(), routes.tunnels.clone(), publish, served);
    let control = controller.send.clone();
    let mut controller = Some(controller);
    // The relay PINGs every interval and h2 answers; the agent only watches that it keeps
    // hearing from the relay (see `liveness`), so one exchange per interval serves both ends.
    let (tls, hearing) = Heard::new(tls);
    let mut conn = mux::server_builder().handshake::<_, Bytes>(tls).await?;
    let interval = Duration::from_millis(welcome.heartbeat_ms.clamp(100, 300_000));
    let heartbeat = liveness::watch(hearing, interval, interval * 3 + mux::BEAT);
    tokio::pin!(heartbeat);

    loop {
        tokio::select! {
            accepted = conn.accept() => match accepted {
                None => return Ok(SessionEnd::RelayClosed),
                Some(Err(e)) if e.is_io() || e.is_go_away() => return Ok(SessionEnd::RelayClosed),
                Some(Err(e)) => return Err(e.into()),
                Some(Ok((req, mut respond))) => {
                    if stream_kind(&req) != Some(StreamKind::Control) {
                        dispatch(req, respond, cfg, &routes);
                        continue;
                    }
                    let Some(controller) = controller.take() else {
                        answer(&mut respond, StatusCode::CONFLICT);
                        continue;
                    };
                    if let Ok(send) = respond.send_response(Response::new(()), false) {
                        *control.lock().unwrap_or_else(|p| p.into_inner()) = Some(send);
                        tokio::spawn(controller.run(req.into_body()).in_current_span());
                        if let Some(ready) = on_ready.take() {
                            ready();
                        }
                    }
                }
            },
            silent = &mut heartbeat => return Err(SessionError::HeartbeatTimeout(silent)),
            _ = shutdown.cancelled() => break,
        }
    }

    // Unregister, then GOAWAY, then keep driving the connection so both reach the relay.
    if let Some(control) = control.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
        let mut buf = BytesMut::new();
        if encode(&Message::Control(Control::Unregister), &mut buf).is_ok() {
            let _ = control.send_data(buf.freeze(), true);
        }
    }
    conn.graceful_shutdown();
    let _ = tokio::time::timeout(UNREGISTER_GRACE, async {
        while let Some(Ok((_req, mut respond))) = conn.accept().await {
            respond.send_reset(h2::Reason::REFUSED_STREAM);
        }
    })
    .await;
    Ok(SessionEnd::Unregistered)
}

/// What the session forwards where.
#[derive(Debug)]
struct Routes {
    tunnels: Arc<RouteTable>,
    clients: LocalClients,
}

impl Routes {
    fn get(&self, tunnel: &str) -> Option<(TunnelKind, u16)> {
        self.tunnels.read().unwrap_or_else(|p| p.into_inner()).get(tunnel).copied()
    }
}

fn stream_kind(req: &Request<RecvStream>) -> Option<StreamKind> {
    req.headers().get(stream::KIND).and_then(|v| v.to_str().ok()).and_then(StreamKind::parse)
}

/// Routes one incoming stream (not the control stream).
fn dispatch(req: Request<RecvStream>, mut respond: SendResponse<Bytes>, cfg: &AgentConfig, routes: &Arc<Routes>) {
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let kind = stream_kind(&req);
    let tunnel = header(stream::TUNNEL).unwrap_or_default();
    let peer = header(stream::PEER).unwrap_or_default();
    match kind {
        Some(StreamKind::Http | StreamKind::Upgrade) => {
            let Some((TunnelKind::Http, port)) = routes.get(&tunnel) else {
                answer(&mut respond, StatusCode::NOT_FOUND);
                return;
            };
            let target = LocalTarget {
                host: cfg.local_host.clone(),
                port,
                h2c: cfg.local_h2c,
                host_header: cfg.host_header.clone(),
                connect_timeout: cfg.local_connect_timeout,
            };
            let routes = routes.clone();
            let stats = cfg.stats.clone();
            let span = info_span!("request", %tunnel, %peer, method = %req.method(), path = %req.uri().path());
            let work = async move { http_forward::http(req, respond, &target, &routes.clients, &stats).await };
            spawn_forward(span, cfg.stats.clone(), "request", work);
        }
        Some(StreamKind::Tcp) => {
            let Some((TunnelKind::Tcp, port)) = routes.get(&tunnel) else {
                answer(&mut respond, StatusCode::NOT_FOUND);
                return;
            };
            let host = cfg.local_host.clone();
            let timeout = cfg.local_connect_timeout;
            let span = info_span!("stream", %tunnel, %peer);
            let stats = cfg.stats.clone();
            let work = async move { forward::tcp(&host, port, timeout, req.into_body(), respond, &stats).await };
            spawn_forward(span, cfg.stats.clone(), "stream", work);
        }
        _ => answer(&mut respond, StatusCode::NOT_IMPLEMENTED),
    }
}

/// Runs one forwarded stream (`what`: a request or a TCP stream) in its own task and span,
/// counted open while it runs, and logs its outcome once.
fn spawn_forward<T: std::fmt::Debug + Send + 'static>(
    span: tracing::Span,
    stats: Arc<crate::stats::AgentStats>,
    what: &'static str,
    work: impl std::future::Future<Output = Result<T, forward::ForwardError>> + Send + 'static,
) {
    tokio::spawn(
        async move {
            let _open = stats.open();
            match work.await {
                Ok(moved) => debug!(?moved, "{what} done"),
                Err(e @ forward::ForwardError::LocalUnreachable { .. }) => {
                    stats.refused();
                    warn!(error = %e, "{what} refused")
                }
                Err(e) => debug!(error = %e, "{what} failed"),
            }
        }
        .instrument(span),
    );
}

fn answer(respond: &mut SendResponse<Bytes>, status: StatusCode) {
    let reason = status.canonical_reason().unwrap_or("refused");
    if let Ok(resp) = Response::builder().status(status).header(stream::REFUSE_REASON, reason).body(()) {
        let _ = respond.send_response(resp, true);
    }
}
