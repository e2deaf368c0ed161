//! Changing a running relay without dropping anything: certificates, revocations, access
//! policies and per-address limits, and the access log's file is reopened. Everything else
//! (addresses, domain, tokens, timeouts) needs a restart.
//!
//! - [`Reloader::reload`] applies a new configuration;
//! - [`watch`] reloads on every hang-up signal the binary passes in and whenever the config
//!   file's content changes (checked every 2 s);
//! - the relay itself re-reads `revoked.json` every second and certificate files every 10 s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::abuse::IpLimits;
use crate::certs::CertResolver;
use crate::config::RelayConfig;
use crate::relay::RelayError;
use crate::revocation::Revocations;
use crate::tunnel::registry::Registry;

/// Applies a new configuration to a running relay without dropping anything: certificates,
/// the revocation list, access policies and per-address limits. Everything else (addresses,
/// domain, tokens, timeouts) needs a restart.
#[derive(Debug, Clone)]
pub struct Reloader {
    pub(crate) certs: Arc<CertResolver>,
    pub(crate) revocations: Arc<Revocations>,
    pub(crate) policies: crate::access::Policies,
    pub(crate) ip_limits: Arc<IpLimits>,
    pub(crate) registry: Arc<Registry>,
}

/// What a reload did.
#[derive(Debug, Default)]
pub struct ReloadReport {
    /// Certificates now served.
    pub certificates: usize,
    /// Tokens revoked since the last read; their sessions were disconnected.
    pub revoked: usize,
    /// Policies now in force.
    pub policies: usize,
}

impl Reloader {
    /// Re-reads certificates and revocations and applies `config`'s reloadable settings. On a
    /// failure nothing further is changed and the error says what failed.
    pub fn reload(&self, config: &RelayConfig) -> Result<ReloadReport, RelayError> {
        let certificates = self.certs.reload()?;
        let ids = self.revocations.refresh()?;
        for id in &ids {
            self.registry.kick_token(id);
        }
        let list = config.policies.list();
        let policies = list.len();
        self.policies.replace(list);
        self.ip_limits.set_limits(config.max_connections_per_ip, config.max_auth_failures);
        // logrotate moves the file and sends SIGHUP: write to a new one under the old name.
        self.registry.access_log().reopen();
        Ok(ReloadReport { certificates, revoked: ids.len(), policies })
    }
}

/// Reloads with what `load` reads (the config file and the other layers, again) on every
/// message of `hangups` (SIGHUP) and whenever `file`'s content changes, until `shutdown`. A
/// failed reload keeps the current settings and says why in the log.
pub async fn watch<E: std::fmt::Display>(
    reloader: Reloader,
    load: impl Fn() -> Result<RelayConfig, E>,
    file: Option<PathBuf>,
    mut hangups: tokio::sync::mpsc::Receiver<()>,
    shutdown: CancellationToken,
) {
    let fingerprint = || file.as_ref().and_then(|p| std::fs::read(p).ok());
    let mut seen = fingerprint();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            Some(()) = hangups.recv() => "SIGHUP",
            _ = tick.tick() => {
                let now = fingerprint();
                if now == seen {
                    continue;
                }
                seen = now;
                "config file changed"
            }
        };
        let outcome = match load() {
            Ok(config) => reloader.reload(&config).map_err(|e| e.to_string()),
            Err(e) => Err(format!("{e:#}")),
        };
        match outcome {
            Ok(report) => info!(
                why,
                certificates = report.certificates,
                revoked = report.revoked,
                policies = report.policies,
                "reloaded; tunnels untouched"
            ),
            Err(e) => warn!(why, error = %e, "reload failed; keeping the current settings"),
        }
    }
}

/// Picks up revocations written by `postern token revoke` and disconnects their sessions.
pub(crate) async fn watch_revocations(
    revocations: Arc<Revocations>,
    registry: Arc<Registry>,
    every: Duration,
    cluster: Option<Arc<crate::cluster::Cluster>>,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        match revocations.refresh() {
            Ok(ids) => {
                for id in ids {
                    if let Some(cluster) = &cluster {
                        cluster.revoke(&id).await;
                    }
                    let n = registry.kick_token(&id);
                    info!(token = %id, sessions = n, "token revoked; its sessions were disconnected");
                }
            }
            Err(e) => warn!(error = %e, "could not read the revocation list"),
        }
    }
}

/// Reloads certificates when their files change.
pub(crate) async fn watch_certs(certs: Arc<CertResolver>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        if certs.changed_on_disk() {
            match certs.reload() {
                Ok(n) => info!(certificates = n, "certificate files changed; reloaded"),
                Err(e) => warn!(error = %e, "certificate files changed but could not be loaded; keeping the old ones"),
            }
        }
    }
}
