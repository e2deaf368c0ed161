//! One connection attempt: TCP, TLS, Hello, then Welcome or Refused.

use std::sync::Arc;
use std::time::Duration;

use postern_proto::{Hello, Message, RefuseCode, TunnelSpec, Welcome, ALPN};
use postern_transport::framed::{read_message, write_message, FrameIoError};
use postern_transport::tls::{client_config, server_name, TlsError};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

use crate::config::AgentConfig;

/// Why an attempt failed. [`ConnectError::is_fatal`] says whether retrying can help.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Our own TLS settings are unusable (bad `--ca` file, empty trust store).
    #[error("TLS setup: {0}")]
    TlsSetup(#[from] TlsError),
    /// `--server` is not `host:port`.
    #[error("invalid relay address {0:?}: expected host:port")]
    BadAddress(String),
    /// TCP connect failed.
    #[error("cannot reach relay at {addr}: {source}")]
    Unreachable {
        /// The address.
        addr: String,
        /// The error.
        #[source]
        source: std::io::Error,
    },
    /// The relay's certificate is not trusted.
    #[error(
        "relay certificate not trusted ({0}); pass --ca with the relay's CA certificate (the relay prints its path)"
    )]
    Untrusted(String),
    /// TLS failed for another reason.
    #[error("TLS handshake with relay failed: {0}")]
    Tls(#[source] std::io::Error),
    /// The relay did not select ALPN `postern/1`: it is not a postern relay, or an old one.
    #[error("the server at this address did not negotiate ALPN postern/1; is it a postern relay?")]
    Alpn,
    /// Handshake frames were invalid or the relay hung up.
    #[error("handshake: {0}")]
    Handshake(#[from] FrameIoError),
    /// The relay answered something other than Welcome/Refused.
    #[error("relay answered the Hello with an unexpected message")]
    Unexpected,
    /// The relay refused the session.
    #[error("relay refused the session ({code:?}): {message}")]
    Refused {
        /// Refusal code.
        code: RefuseCode,
        /// The relay's explanation.
        message: String,
    },
    /// The whole attempt took longer than the connect timeout.
    #[error("no Welcome from the relay within {0:?}")]
    Timeout(Duration),
}

impl ConnectError {
    /// True when retrying the same configuration cannot succeed.
    pub fn is_fatal(&self) -> bool {
        match self {
            Self::TlsSetup(_) | Self::BadAddress(_) | Self::Untrusted(_) | Self::Alpn => true,
            Self::Refused { code, .. } => code.is_fatal(),
            _ => false,
        }
    }
}

/// A session that passed the handshake.
#[derive(Debug)]
pub struct Connected {
    /// The TLS stream, positioned right after the Welcome frame.
    pub tls: TlsStream<TcpStream>,
    /// What the relay granted.
    pub welcome: Welcome,
}

/// Builds the TLS connector for `cfg` once; reused across attempts.
pub fn connector(cfg: &AgentConfig) -> Result<TlsConnector, ConnectError> {
    Ok(TlsConnector::from(Arc::new(client_config(&cfg.trust, &[ALPN])?)))
}

/// Splits `host:port`, accepting `[v6]:port`.
pub fn split_host_port(addr: &str) -> Result<(&str, u16), ConnectError> {
    let bad = || ConnectError::BadAddress(addr.to_string());
    let (host, port) = addr.rsplit_once(':').ok_or_else(bad)?;
    let port = port.parse().map_err(|_| bad())?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(bad());
    }
    Ok((host, port))
}

/// Makes one attempt, to relay `server` (one of [`AgentConfig::servers`]), asking in the
/// `Hello` for `tunnels`.
pub async fn connect(
    cfg: &AgentConfig,
    connector: &TlsConnector,
    server: &str,
    tunnels: Vec<TunnelSpec>,
) -> Result<Connected, ConnectError> {
    let limit = cfg.connect_timeout;
    tokio::time::timeout(limit, attempt(cfg, connector, server, tunnels))
        .await
        .map_err(|_| ConnectError::Timeout(limit))?
}

async fn attempt(
    cfg: &AgentConfig,
    connector: &TlsConnector,
    server: &str,
    tunnels: Vec<TunnelSpec>,
) -> Result<Connected, ConnectError> {
    let (host, port) = split_host_port(server)?;
    let name = server_name(host)?;
    // Every address the name resolves to is tried in turn (a DNS name with several A records).
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|source| ConnectError::Unreachable { addr: server.to_string(), source })?;
    let _ = tcp.set_nodelay(true);
    let mut tls = connector.connect(name, tcp).await.map_err(classify_tls)?;
    if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
        return Err(ConnectError::Alpn);
    }
    let hello = Hello {
        token: cfg.token.clone(),
        client_id: cfg.client_id.clone(),
        tunnels,
        agent: concat!("postern/", env!("CARGO_PKG_VERSION")).into(),
        group: Some(cfg.group.clone()),
    };
    write_message(&mut tls, &Message::Hello(hello)).await?;
    match read_message(&mut tls).await? {
        Message::Welcome(welcome) => Ok(Connected { tls, welcome }),
        Message::Refused(r) => Err(ConnectError::Refused { code: r.code, message: r.message }),
        _ => Err(ConnectError::Unexpected),
    }
}

fn classify_tls(e: std::io::Error) -> ConnectError {
    let inner = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
    match inner {
        Some(rustls::Error::InvalidCertificate(c)) => ConnectError::Untrusted(format!("{c:?}")),
        Some(rustls::Error::NoApplicationProtocol) => ConnectError::Alpn,
        _ => ConnectError::Tls(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port() {
        assert_eq!(split_host_port("relay.example.com:7000").ok(), Some(("relay.example.com", 7000)));
        assert_eq!(split_host_port("[::1]:7000").ok(), Some(("::1", 7000)));
        assert!(split_host_port("relay").is_err());
        assert!(split_host_port(":7000").is_err());
        assert!(split_host_port("relay:99999").is_err());
    }
}
