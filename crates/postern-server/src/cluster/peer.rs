//! How two relays of a cluster trust each other: TLS, then a proof of the cluster secret bound
//! to that TLS session.
//!
//! Each relay serves its peer listener with a throwaway self-signed certificate (made at start,
//! never written anywhere), and a relay dialling a peer accepts any certificate: what makes the
//! link trusted is not a certificate chain, which an operator would have to issue and rotate,
//! but the secret the relays share. Right after TLS, both sides compute the TLS exporter value
//! (RFC 5705, label `EXPORTER-postern-peer`), which is unique to this session and which a
//! machine in the middle cannot make equal on its two legs, and prove the secret over it:
//!
//! ```text
//! dialler -> peer:  1, len(id), id, HMAC-SHA256(secret, "postern-peer dial" | exporter | id)
//! peer -> dialler:  1, HMAC-SHA256(secret, "postern-peer accept" | exporter)
//! ```
//!
//! A relay without the secret cannot make either MAC: it is refused, and it cannot claim names
//! either (the claims it would make through the directory never reach a peer's listener). Both
//! proofs are checked in constant time, under a timeout, with a length cap.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};

/// ALPN of the peer listener.
pub const ALPN: &[u8] = b"postern-peer/1";
const EXPORTER_LABEL: &[u8] = b"EXPORTER-postern-peer";
const VERSION: u8 = 1;
/// Time a peer has to finish TLS and its proof.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer link could not be made or was refused.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// TCP or TLS failed.
    #[error("peer link: {0}")]
    Io(#[from] std::io::Error),
    /// TLS could not be set up.
    #[error("peer TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// The certificate could not be made.
    #[error("peer certificate: {0}")]
    Cert(#[from] rcgen::Error),
    /// The other side does not hold the cluster secret (or is no postern relay).
    #[error("the peer does not prove the cluster secret (a relay with another --cluster-secret, or not a relay)")]
    WrongSecret,
    /// The proof did not arrive in time.
    #[error("the peer handshake did not finish within {0:?}")]
    Timeout(Duration),
}

/// TLS and the secret, for both directions of peer links.
#[derive(Clone)]
pub struct PeerTls {
    acceptor: TlsAcceptor,
    connector: TlsConnector,
    secret: Arc<[u8]>,
}

impl std::fmt::Debug for PeerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PeerTls(<secret>)")
    }
}

/// A peer link, authenticated: the TLS stream, and the other relay's id when we accepted it.
pub type PeerStream<S> = tokio_rustls::TlsStream<S>;

impl PeerTls {
    /// TLS for peer links of a cluster sharing `secret`.
    pub fn new(secret: &str) -> Result<Self, PeerError> {
        let cert = rcgen::generate_simple_self_signed(vec!["postern-peer".to_string()])?;
        let chain = vec![CertificateDer::from(cert.cert.der().to_vec())];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
        let server = postern_transport::tls::server_config(chain, key, &[ALPN])
            .map_err(|e| PeerError::Io(std::io::Error::other(e.to_string())))?;
        let client = postern_transport::tls::client_config(&postern_transport::tls::Trust::Insecure, &[ALPN])
            .map_err(|e| PeerError::Io(std::io::Error::other(e.to_string())))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(server)),
            connector: TlsConnector::from(Arc::new(client)),
            secret: secret.as_bytes().into(),
        })
    }

    fn mac(&self, role: &[u8], exporter: &[u8], id: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.secret).unwrap_or_else(|_| unreachable!());
        mac.update(role);
        mac.update(exporter);
        mac.update(id);
        mac
    }

    /// Dials `addr` as relay `id` and proves the secret; checks the peer's proof.
    pub async fn dial(&self, addr: &str, id: &str) -> Result<PeerStream<TcpStream>, PeerError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let tcp = TcpStream::connect(addr).await?;
            let _ = tcp.set_nodelay(true);
            let name = rustls::pki_types::ServerName::try_from("postern-peer").map_err(std::io::Error::other)?;
            let mut tls = self.connector.connect(name, tcp).await?;
            let exporter = tls.get_ref().1.export_keying_material([0u8; 32], EXPORTER_LABEL, None)?;
            let mut hello = vec![VERSION, id.len().min(255) as u8];
            hello.extend_from_slice(&id.as_bytes()[..id.len().min(255)]);
            hello.extend_from_slice(&self.mac(b"postern-peer dial", &exporter, id.as_bytes()).finalize().into_bytes());
            tls.write_all(&hello).await?;
            tls.flush().await?;
            let mut answer = [0u8; 33];
            tls.read_exact(&mut answer).await.map_err(|_| PeerError::WrongSecret)?;
            let ok = answer[0] == VERSION
                && self.mac(b"postern-peer accept", &exporter, b"").verify_slice(&answer[1..]).is_ok();
            if !ok {
                return Err(PeerError::WrongSecret);
            }
            Ok(PeerStream::Client(tls))
        })
        .await
        .map_err(|_| PeerError::Timeout(HANDSHAKE_TIMEOUT))?
    }

    /// Accepts a peer on `tcp`: its proof first, then ours. Returns the link and the peer's id.
    pub async fn accept(&self, tcp: TcpStream) -> Result<(PeerStream<TcpStream>, String), PeerError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let _ = tcp.set_nodelay(true);
            let mut tls = self.acceptor.accept(tcp).await?;
            if tls.get_ref().1.alpn_protocol() != Some(ALPN) {
                return Err(PeerError::WrongSecret);
            }
            let exporter = tls.get_ref().1.export_keying_material([0u8; 32], EXPORTER_LABEL, None)?;
            let id =
                read_hello(&mut tls, |id, mac| self.mac(b"postern-peer dial", &exporter, id).verify_slice(mac).is_ok())
                    .await?;
            let mut answer = vec![VERSION];
            answer.extend_from_slice(&self.mac(b"postern-peer accept", &exporter, b"").finalize().into_bytes());
            tls.write_all(&answer).await?;
            tls.flush().await?;
            Ok((PeerStream::Server(tls), id))
        })
        .await
        .map_err(|_| PeerError::Timeout(HANDSHAKE_TIMEOUT))?
    }
}

/// Reads the dialler's hello and checks its MAC with `verify`; returns its id.
async fn read_hello<S: AsyncRead + Unpin>(
    io: &mut S,
    verify: impl Fn(&[u8], &[u8]) -> bool,
) -> Result<String, PeerError> {
    let mut head = [0u8; 2];
    io.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(PeerError::WrongSecret);
    }
    let mut rest = vec![0u8; usize::from(head[1]) + 32];
    io.read_exact(&mut rest).await?;
    let (id, mac) = rest.split_at(usize::from(head[1]));
    if !verify(id, mac) {
        return Err(PeerError::WrongSecret);
    }
    String::from_utf8(id.to_vec()).map_err(|_| PeerError::WrongSecret)
}
