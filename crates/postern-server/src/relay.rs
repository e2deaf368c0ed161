//! [`Relay`]: builds the shared state and runs the listeners until shutdown.

use std::sync::Arc;
use std::time::Duration;

use postern_proto::token::TokenKey;
use postern_proto::ALPN;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::abuse::IpLimits;
use crate::access_log::AccessLog;
use crate::acme::Acme;
use crate::admin::{self, Admin, Readiness};
use crate::auth::Authenticator;
use crate::bore::{self, BoreEdge};
use crate::certs::{CertError, CertResolver};
use crate::config::{ConfigError, RelayConfig, Secret};
use crate::domains::DomainPolicy;
use crate::http_edge::{self, proxy::Edge};
use crate::inspect::Inspection;
use crate::leases::Leases;
use crate::listener::serve_control;
use crate::metrics::RelayMetrics;
use crate::outbound;
use crate::quota::Quotas;
use crate::reload::{watch_certs, watch_revocations, Reloader};
use crate::revocation::{RevocationError, Revocations};
use crate::session::{PublicUrls, Shared};
use crate::tunnel::admit::Gate;
use crate::tunnel::registry::Registry;
use crate::visitor::seal::Sealer;
use crate::visitor::Visitors;
use crate::volume::Volumes;
use crate::webhook::{self, Webhook};

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The configuration is inconsistent.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The TLS configuration could not be built.
    #[error(transparent)]
    Cert(#[from] CertError),
    /// The metrics could not be registered (a name clash in the registry passed in).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// The revocation list could not be read.
    #[error(transparent)]
    Revocation(#[from] RevocationError),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The access log could not be opened.
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::AccessLogError),
}

/// The relay's already-bound listeners.
#[derive(Debug)]
pub struct RelayListeners {
    /// Where agents connect.
    pub control: TcpListener,
    /// Public plain HTTP, if any.
    pub http: Option<TcpListener>,
    /// Public HTTPS, if any.
    pub https: Option<TcpListener>,
    /// Status API, metrics and health, if any.
    pub admin: Option<TcpListener>,
    /// The bore-compatible endpoint, if any (see [`crate::bore`]).
    pub bore: Option<TcpListener>,
    /// The peer listener of a clustered relay (`--peer-addr`).
    pub peer: Option<TcpListener>,
}

impl RelayListeners {
    /// Only the control port (TCP tunnels only).
    pub fn control_only(control: TcpListener) -> Self {
        Self { control, http: None, https: None, admin: None, bore: None, peer: None }
    }
}

/// A configured relay, ready to serve.
#[derive(Debug)]
pub struct Relay {
    config: RelayConfig,
    certs: Arc<CertResolver>,
    registry: Arc<Registry>,
    metrics: prometheus::Registry,
    ready: Arc<Readiness>,
    revocations: Arc<Revocations>,
    ip_limits: Arc<IpLimits>,
    domains: DomainPolicy,
    acme: Option<Arc<Acme>>,
}

impl Relay {
    /// Builds a relay that serves the certificates of `certs` (picked by SNI, reloadable) and
    /// registers its metrics in `metrics` (which `/metrics` on the admin listener serves).
    pub fn new(
        config: RelayConfig,
        certs: Arc<CertResolver>,
        metrics: &prometheus::Registry,
    ) -> Result<Self, RelayError> {
        config.validate()?;
        let m = RelayMetrics::new(config.metrics_per_tunnel)?;
        m.register(metrics)?;
        if config.cluster.is_some() {
            m.register_cluster(metrics)?;
        }
        let revocations = Arc::new(match &config.state_dir {
            Some(dir) => Revocations::load(dir)?,
            None => Revocations::in_memory(),
        });
        let leases = Arc::new(Leases::new(config.lease_grace, config.state_dir.as_deref()));
        let ip_limits = IpLimits::new(
            config.max_connections_per_ip,
            config.max_auth_failures,
            Duration::from_secs(60),
            Duration::from_secs(60),
        );
        let domains = DomainPolicy::new(&config.domain, config.allow_domains.clone(), config.txt_proof);
        let access_log = AccessLog::start(&config.access_log, m.access_log_dropped.clone())?;
        let inspection = Inspection::from_config(&config, m.inspector_bytes.clone());
        let acme = match (config.acme(), &config.state_dir) {
            (Some(a), Some(dir)) => Some(Acme::new(a, dir.clone(), &config.domain, certs.clone(), metrics)?),
            _ => None,
        };
        Ok(Self {
            domains,
            acme,
            registry: Registry::new(Arc::new(m), leases, access_log, inspection),
            config,
            certs,
            metrics: metrics.clone(),
            ready: Arc::new(Readiness::default()),
            revocations,
            ip_limits,
        })
    }

    /// The live tunnel registry.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// What a reload can change while tunnels stay up.
    pub fn reloader(&self) -> Reloader {
        Reloader {
            certs: self.certs.clone(),
            revocations: self.revocations.clone(),
            policies: self.config.policies.clone(),
            ip_limits: self.ip_limits.clone(),
            registry: self.registry.clone(),
        }
    }

    /// Readiness: `serving()` resolves once every listener is up.
    pub fn readiness(&self) -> Arc<Readiness> {
        self.ready.clone()
    }

    /// The certificate store, to reload on SIGHUP.
    pub fn certs(&self) -> Arc<CertResolver> {
        self.certs.clone()
    }

    /// Serves until `shutdown` fires, then waits up to `grace` for connections to end.
    pub async fn run(
        self,
        listeners: RelayListeners,
        shutdown: CancellationToken,
        grace: Duration,
    ) -> Result<(), RelayError> {
        let control_addr = listeners.control.local_addr()?;
        let auth = Authenticator::new(
            self.config.token.as_ref().map(Secret::expose),
            self.config.admin_token.as_ref().map(Secret::expose),
            self.config.token_key.clone(),
            self.config.anonymous_allowed(control_addr),
        )
        .with_revocations(self.revocations.clone());
        let https_port = listeners.https.as_ref().map(|l| l.local_addr()).transpose()?.map(|a| a.port());
        let http_port = listeners.http.as_ref().map(|l| l.local_addr()).transpose()?.map(|a| a.port());
        let urls = match (https_port, http_port) {
            (Some(port), _) => Some(PublicUrls { secure: true, port }),
            (None, Some(port)) => Some(PublicUrls { secure: false, port }),
            (None, None) => None,
        };
        let outbound = outbound::client().ok();
        let sealing_key = self.config.token_key.clone().unwrap_or_else(|| TokenKey::from_bytes(rand::random()));
        let visitors = Visitors::new(
            &self.config.oidc_providers(),
            Sealer::new(&sealing_key),
            outbound.clone(),
            self.config.session_ttl,
            self.config.state_dir.as_deref(),
        )
        .map_err(|e| ConfigError::Invalid(format!("OIDC provider: {e}")))?;
        let visitors = Arc::new(visitors);
        let gate = Gate::new(
            self.ip_limits.clone(),
            self.config.max_public_connections,
            self.config.policies.clone(),
            self.registry.metrics().clone(),
            outbound,
            visitors.clone(),
        );
        let peer_addr = listeners.peer.as_ref().map(|l| l.local_addr()).transpose()?;
        let advertise = self.config.peer_advertise.clone().or(peer_addr.map(|a| a.to_string())).unwrap_or_default();
        let cluster = crate::cluster::Cluster::new(
            &self.config,
            advertise,
            self.registry.clone(),
            self.revocations.clone(),
            gate.clone(),
        )?;
        if cluster.is_some() && listeners.peer.is_none() {
            return Err(ConfigError::Invalid("a clustered relay needs its peer listener (--peer-addr)".into()).into());
        }
        let control_tls = self.certs.server_config(&[ALPN])?;
        let volumes = Arc::new(Volumes::new(self.config.state_dir.as_deref()));
        let quotas = Arc::new(Quotas::new(volumes.clone()));
        let shared = Arc::new(Shared {
            auth: auth.clone(),
            gate: gate.clone(),
            registry: self.registry.clone(),
            tls: TlsAcceptor::from(Arc::new(control_tls)),
            config: self.config.clone(),
            urls,
            quotas: quotas.clone(),
            domains: self.domains.clone(),
            acme: self.acme.clone(),
            cluster: cluster.clone(),
        });
        let edge = Arc::new(Edge {
            config: self.config.clone(),
            registry: self.registry.clone(),
            https_port,
            gate: gate.clone(),
            acme: self.acme.clone(),
            cluster: cluster.clone(),
        });

        info!(addr = %control_addr, "control port listening");
        let mut edges = Vec::new();
        if let Some(l) = listeners.http {
            info!(addr = %l.local_addr()?, "public HTTP listening");
            edges.push(tokio::spawn(http_edge::serve(l, None, edge.clone(), shutdown.clone())));
        }
        if let Some(l) = listeners.https {
            info!(addr = %l.local_addr()?, "public HTTPS listening");
            let tls = TlsAcceptor::from(Arc::new(self.certs.server_config(&[b"h2", b"http/1.1"])?));
            edges.push(tokio::spawn(http_edge::serve(l, Some(tls), edge.clone(), shutdown.clone())));
        }
        let mut bore_edge = None;
        if let Some(l) = listeners.bore {
            let addr = l.local_addr()?;
            info!(%addr, "bore-compatible endpoint listening");
            let bore = BoreEdge::new(
                self.config.clone(),
                auth.clone(),
                self.registry.clone(),
                gate.clone(),
                quotas.clone(),
                self.config.anonymous_allowed(addr),
                cluster.clone(),
            );
            bore_edge = Some(bore.clone());
            tokio::spawn(bore::expire_unclaimed(bore.clone(), shutdown.clone()));
            edges.push(tokio::spawn(bore::serve(l, bore, shutdown.clone())));
        }
        let mut admin_api = None;
        if let Some(l) = listeners.admin {
            info!(addr = %l.local_addr()?, "admin API listening");
            let admin = Arc::new(Admin {
                registry: self.registry.clone(),
                auth,
                metrics: self.metrics.clone(),
                ready: self.ready.clone(),
                ip_limits: self.ip_limits.clone(),
                state_dir: self.config.state_dir.clone(),
                request_timeout: self.config.http_header_timeout,
                cluster: cluster.clone(),
                history_every: self.config.history_every,
                ui: Default::default(),
                visitors: visitors.clone(),
                volumes: volumes.clone(),
            });
            admin_api = Some(admin.clone());
            edges.push(tokio::spawn(admin::serve(l, admin, shutdown.clone())));
        }
        if let (Some(cluster), Some(l)) = (&cluster, listeners.peer) {
            info!(addr = %l.local_addr()?, relay = %cluster.id, "cluster peer listener up");
            tokio::spawn(cluster.clone().run(shutdown.clone()));
            let service = Arc::new(crate::cluster::serve::PeerService {
                cluster: cluster.clone(),
                edge: edge.clone(),
                bore: bore_edge,
                admin: admin_api,
            });
            edges.push(tokio::spawn(crate::cluster::serve::serve(l, service, shutdown.clone())));
        }
        if let Some(hook) = Webhook::from_config(&self.config) {
            tokio::spawn(webhook::run(hook, self.registry.events(), shutdown.clone()));
        }
        if let Some(acme) = &self.acme {
            tokio::spawn(acme.clone().run(shutdown.clone()));
        }
        let counting =
            tokio::spawn(volumes.clone().run(cluster.clone(), self.registry.metrics().clone(), shutdown.clone()));
        let every = self.config.history_every;
        tokio::spawn(crate::tunnel::history::run(self.registry.clone(), every, shutdown.clone()));
        tokio::spawn(watch_revocations(
            self.revocations.clone(),
            self.registry.clone(),
            self.config.revocation_poll_interval,
            cluster.clone(),
            shutdown.clone(),
        ));
        if let Some(every) = self.config.cert_poll_interval {
            tokio::spawn(watch_certs(self.certs.clone(), every, shutdown.clone()));
        }
        self.ready.set_serving();
        let ready = self.ready.clone();
        let draining = shutdown.clone();
        tokio::spawn(async move {
            draining.cancelled().await;
            ready.set_draining();
        });

        let leases = self.registry.leases().clone();
        let persisting = tokio::spawn(leases.clone().keep_persisted());
        let sessions = serve_control(listeners.control, shared, shutdown).await;
        let all_done = async {
            sessions.wait().await;
            for e in edges {
                if let Ok(tasks) = e.await {
                    tasks.wait().await;
                }
            }
        };
        if tokio::time::timeout(grace, all_done).await.is_err() {
            warn!(sessions = sessions.len(), "connections still open after the shutdown grace period");
        }
        persisting.abort();
        let _ = tokio::task::spawn_blocking(move || leases.flush()).await;
        // The counter task writes the volume counts once more as it stops.
        let _ = counting.await;
        Ok(())
    }
}
