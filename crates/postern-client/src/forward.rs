//! Forwards one TCP stream from the relay to the local service.

use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::RecvStream;
use http::{Response, StatusCode};
use postern_proto::stream::REFUSE_REASON;
use postern_transport::splice::{splice, SpliceError, SpliceStats};
use tokio::net::TcpStream;

use crate::stats::AgentStats;

/// Why a forwarded stream ended early.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    /// The local service could not be reached; the relay was told with a 502.
    #[error("local service {addr} unreachable: {reason}")]
    LocalUnreachable {
        /// `host:port` of the local service.
        addr: String,
        /// Why.
        reason: String,
    },
    /// The relay reset the stream before we could answer.
    #[error("relay stream error: {0}")]
    Stream(#[from] h2::Error),
    /// Copying failed.
    #[error(transparent)]
    Splice(#[from] SpliceError),
    /// An HTTP body broke off.
    #[error("body: {0}")]
    Body(String),
}

/// Connects to `host:port`, answers the relay, and splices until both sides are done.
pub async fn tcp(
    host: &str,
    port: u16,
    connect_timeout: Duration,
    body: RecvStream,
    mut respond: SendResponse<Bytes>,
    stats: &AgentStats,
) -> Result<SpliceStats, ForwardError> {
    let addr = format!("{host}:{port}");
    let local = match tokio::time::timeout(connect_timeout, TcpStream::connect((host, port))).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(refuse(&mut respond, StatusCode::BAD_GATEWAY, addr, e.to_string())),
        Err(_) => {
            let reason = format!("no answer within {connect_timeout:?}");
            return Err(refuse(&mut respond, StatusCode::BAD_GATEWAY, addr, reason));
        }
    };
    let _ = local.set_nodelay(true);
    let send = respond.send_response(Response::new(()), false)?;
    let (reader, writer) = local.into_split();
    Ok(splice(reader, writer, send, body, stats).await?)
}

/// Answers the relay with an error `status` (502 when the local service cannot be reached) and
/// a `postern-reason` header, so the relay can show the right page or close the visitor's
/// connection.
pub fn refuse(respond: &mut SendResponse<Bytes>, status: StatusCode, addr: String, reason: String) -> ForwardError {
    let text = format!("local service {addr}: {reason}");
    let value = http::HeaderValue::from_str(&text).unwrap_or(http::HeaderValue::from_static("local service error"));
    if let Ok(resp) = Response::builder().status(status).header(REFUSE_REASON, value).body(()) {
        let _ = respond.send_response(resp, true);
    }
    ForwardError::LocalUnreachable { addr, reason }
}
