//! [`Relay`]: builds the shared state and runs the listeners until shutdown.

use std::sync::Arc;
use std::time::Duration;

use postern_proto::ALPN;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::auth::Authenticator;
use crate::config::{ConfigError, RelayConfig};
use crate::listener::serve_control;
use crate::registry::Registry;
use crate::session::Shared;

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// A configured relay, ready to serve.
#[derive(Debug)]
pub struct Relay {
    shared: Arc<Shared>,
}

impl Relay {
    /// Builds a relay. `tls` is the control port's certificate; its ALPN list is replaced with
    /// `postern/1`.
    pub fn new(config: RelayConfig, mut tls: rustls::ServerConfig) -> Self {
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let shared = Shared {
            auth: Authenticator::new(config.token.as_deref()),
            public_conns: Arc::new(Semaphore::new(config.max_public_connections)),
            registry: Registry::new(),
            tls: TlsAcceptor::from(Arc::new(tls)),
            config,
        };
        Self { shared: Arc::new(shared) }
    }

    /// The live tunnel registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.shared.registry.clone()
    }

    /// Serves agents on `control` until `shutdown` fires, then waits up to `grace` for sessions
    /// to end.
    pub async fn run(
        self,
        control: TcpListener,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), RelayError> {
        let addr = control.local_addr()?;
        self.shared.config.validate(addr)?;
        info!(%addr, "control port listening");
        let sessions = serve_control(control, self.shared.clone(), shutdown).await;
        if tokio::time::timeout(grace, sessions.wait()).await.is_err() {
            warn!(remaining = sessions.len(), "sessions still open after the shutdown grace period");
        }
        Ok(())
    }
}
