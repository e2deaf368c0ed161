//! Built-in ACME (RFC 8555) with instant-acme: certificates the relay gets and renews itself.
//!
//! - **Custom domains**, on demand: when a tunnel is granted `app.example.com`
//!   ([`crate::domains`]), the relay orders a certificate for it with the HTTP-01 challenge,
//!   answered on its HTTP listener at `/.well-known/acme-challenge/<token>` (so port 80 must
//!   reach the relay).
//! - **The wildcard** `*.<domain>` (plus `<domain>`) with `--acme-wildcard`, by DNS-01 through
//!   the operator's hook ([`dns_hook`]), at start-up.
//! - Certificates and the account live in `--state-dir` ([`store`]); the SNI resolver serves
//!   them like `--tls-dir`. Every stored certificate is renewed when a third of its lifetime is
//!   left (30 days of Let's Encrypt's 90), or `--acme-renew-before` if set.
//! - Failures are logged and retried with a back-off; the relay keeps serving with what it has.

pub mod dns_hook;
pub mod http;
pub mod store;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use dashmap::DashMap;
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use prometheus::{IntCounterVec, IntGaugeVec, Opts};
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::certs::CertResolver;

/// Let's Encrypt's production directory.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";

/// The HTTP-01 path prefix.
pub const CHALLENGE_PATH: &str = "/.well-known/acme-challenge/";

/// How the relay uses ACME.
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// Directory URL of the CA.
    pub directory: String,
    /// Contact e-mail for the account (expiry notices).
    pub email: Option<String>,
    /// Extra CA to trust for the directory's own TLS (a test CA such as pebble's).
    pub ca: Option<PathBuf>,
    /// Also get `*.<domain>` and `<domain>` by DNS-01 through `dns_hook`.
    pub wildcard: bool,
    /// Program that publishes and removes DNS-01 TXT records.
    pub dns_hook: Option<PathBuf>,
    /// Renew when less than this validity is left; `None`: a third of the lifetime.
    pub renew_before: Option<Duration>,
    /// How often stored certificates are checked for renewal.
    pub check_interval: Duration,
    /// How long a failed name waits before it is tried again.
    pub retry_after: Duration,
}

impl AcmeConfig {
    /// Renewal with a third of the lifetime left, checks twice a day.
    pub fn new(directory: impl Into<String>) -> Self {
        Self {
            directory: directory.into(),
            email: None,
            ca: None,
            wildcard: false,
            dns_hook: None,
            renew_before: None,
            check_interval: Duration::from_secs(12 * 3600),
            retry_after: Duration::from_secs(300),
        }
    }
}

/// Why an ACME step failed.
#[derive(Debug, thiserror::Error)]
pub enum AcmeError {
    /// The CA, or talking to it.
    #[error("ACME server {directory}: {source}")]
    Server {
        /// Directory URL.
        directory: String,
        /// What instant-acme reported.
        #[source]
        source: instant_acme::Error,
    },
    /// An authorization or order ended invalid.
    #[error("ACME order for {names}: {reason}")]
    Order {
        /// The names ordered.
        names: String,
        /// What went wrong.
        reason: String,
    },
    /// Reading or writing the state directory.
    #[error("ACME state in {path}: {source}")]
    Store {
        /// File or directory.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP client could not be set up (CA file).
    #[error("ACME client TLS: {0}")]
    Tls(#[from] postern_transport::tls::TlsError),
    /// The DNS-01 hook failed or is missing.
    #[error("DNS-01: {0}")]
    Dns(String),
    /// The new certificate could not be loaded into the resolver.
    #[error("loading the new certificate: {0}")]
    Load(#[from] crate::certs::CertError),
}

/// Metrics of the ACME manager.
#[derive(Debug, Clone)]
struct AcmeMetrics {
    orders: IntCounterVec,
    expiry: IntGaugeVec,
}

/// Gets, stores and renews certificates.
pub struct Acme {
    config: AcmeConfig,
    state_dir: PathBuf,
    base: String,
    certs: Arc<CertResolver>,
    /// HTTP-01 token → key authorization, while a challenge is open.
    challenges: DashMap<String, String>,
    /// Names with an order in flight.
    inflight: DashMap<String, ()>,
    /// Custom domains granted since start: retried on each check until they have a certificate.
    wanted: DashMap<String, ()>,
    /// Names whose last order failed, and when.
    failed: Mutex<HashMap<String, Instant>>,
    account: OnceCell<Account>,
    metrics: AcmeMetrics,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme").field("config", &self.config).field("state_dir", &self.state_dir).finish()
    }
}

impl Acme {
    /// A manager for the relay on `base`, storing into `state_dir`, loading new certificates
    /// into `certs`, with its metrics in `registry`.
    pub fn new(
        config: AcmeConfig,
        state_dir: PathBuf,
        base: &str,
        certs: Arc<CertResolver>,
        registry: &prometheus::Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let orders = IntCounterVec::new(
            Opts::new("postern_acme_orders_total", "ACME certificate orders, by challenge type and result"),
            &["challenge", "result"],
        )?;
        let expiry = IntGaugeVec::new(
            Opts::new(
                "postern_certificate_expiry_timestamp_seconds",
                "When each ACME certificate expires (Unix time), by its first name",
            ),
            &["name"],
        )?;
        registry.register(Box::new(orders.clone()))?;
        registry.register(Box::new(expiry.clone()))?;
        let acme = Arc::new(Self {
            config,
            state_dir,
            base: base.to_ascii_lowercase(),
            certs,
            challenges: DashMap::new(),
            inflight: DashMap::new(),
            wanted: DashMap::new(),
            failed: Mutex::new(HashMap::new()),
            account: OnceCell::new(),
            metrics: AcmeMetrics { orders, expiry },
        });
        for c in store::list(&acme.state_dir) {
            acme.record_expiry(&c);
        }
        Ok(acme)
    }

    /// The key authorization for an open HTTP-01 challenge `token`.
    pub fn key_authorization(&self, token: &str) -> Option<String> {
        self.challenges.get(token).map(|v| v.clone())
    }

    /// True when a stored certificate covers `name` and is valid now.
    fn covered(&self, name: &str) -> bool {
        let now = SystemTime::now();
        let parent = name.split_once('.').map(|(_, p)| format!("*.{p}"));
        store::list(&self.state_dir)
            .iter()
            .any(|c| c.valid(now) && c.names.iter().any(|n| n == name || Some(n) == parent.as_ref()))
    }

    /// Makes sure `domain` (a granted custom domain) has a certificate: orders one in the
    /// background unless one is stored, in flight, or failed moments ago.
    pub fn ensure(self: &Arc<Self>, domain: &str) {
        let domain = domain.to_ascii_lowercase();
        self.wanted.insert(domain.clone(), ());
        if !self.needs_order(&domain) {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move { me.issue_logged(vec![domain], ChallengeType::Http01).await });
    }

    /// True when `name` has no valid certificate, no order in flight and no recent failure.
    fn needs_order(&self, name: &str) -> bool {
        !self.covered(name) && !self.inflight.contains_key(name) && !self.failed_lately(name)
    }

    /// True when the last order for `name` failed less than `retry_after` ago.
    fn failed_lately(&self, name: &str) -> bool {
        let failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        failed.get(name).is_some_and(|at| at.elapsed() < self.config.retry_after)
    }

    /// Until `shutdown`: gets the wildcard if configured and missing, retries granted domains
    /// that still lack a certificate, and renews what is due. The first pass runs at once.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            if self.config.wildcard {
                let names = vec![format!("*.{}", self.base), self.base.clone()];
                if self.needs_order(&names[0]) {
                    self.issue_logged(names, ChallengeType::Dns01).await;
                }
            }
            let wanted: Vec<String> = self.wanted.iter().map(|e| e.key().clone()).collect();
            for domain in wanted {
                if self.needs_order(&domain) {
                    self.issue_logged(vec![domain], ChallengeType::Http01).await;
                }
            }
            self.renew_due().await;
            // Missing certificates are retried sooner than the renewal check comes round.
            let wait = self.config.check_interval.min(self.config.retry_after);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Renews every stored certificate that is due.
    pub async fn renew_due(self: &Arc<Self>) {
        let now = SystemTime::now();
        for c in store::list(&self.state_dir) {
            if !c.due(now, self.config.renew_before) || c.names.is_empty() || self.failed_lately(&c.names[0]) {
                continue;
            }
            let how =
                if c.names.iter().any(|n| n.starts_with("*.")) { ChallengeType::Dns01 } else { ChallengeType::Http01 };
            info!(names = ?c.names, "renewing certificate");
            self.issue_logged(c.names.clone(), how).await;
        }
    }

    async fn issue_logged(self: &Arc<Self>, names: Vec<String>, how: ChallengeType) {
        let key = names[0].clone();
        if self.inflight.insert(key.clone(), ()).is_some() {
            return;
        }
        let kind = challenge_name(&how);
        let started = Instant::now();
        let result = self.issue(&names, how).await;
        self.inflight.remove(&key);
        let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => {
                failed.remove(&key);
                info!(?names, challenge = kind, took_ms = started.elapsed().as_millis() as u64, "certificate issued");
            }
            Err(e) => {
                failed.insert(key, Instant::now());
                self.metrics.orders.with_label_values(&[kind, "failed"]).inc();
                warn!(?names, challenge = kind, error = %e, "certificate order failed; will retry");
            }
        }
    }

    async fn account(&self) -> Result<&Account, AcmeError> {
        self.account
            .get_or_try_init(|| async {
                let path = store::root(&self.state_dir).join("account.json");
                let server = |source| AcmeError::Server { directory: self.config.directory.clone(), source };
                let http = || http::AcmeHttp::new(self.config.ca.as_deref()).map(|h| Box::new(h) as Box<_>);
                if let Ok(bytes) = std::fs::read(&path) {
                    if let Ok(saved) = serde_json::from_slice::<SavedAccount>(&bytes) {
                        if saved.directory == self.config.directory {
                            return Account::builder_with_http(http()?)
                                .from_credentials(saved.credentials)
                                .await
                                .map_err(server);
                        }
                    }
                }
                let contact: Vec<String> = self.config.email.iter().map(|e| format!("mailto:{e}")).collect();
                let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
                let (account, credentials) = Account::builder_with_http(http()?)
                    .create(
                        &NewAccount { contact: &contact, terms_of_service_agreed: true, only_return_existing: false },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(server)?;
                let saved = SavedAccount { directory: self.config.directory.clone(), credentials };
                let json = serde_json::to_vec_pretty(&saved)
                    .map_err(|e| AcmeError::Store { path: path.clone(), source: std::io::Error::other(e) })?;
                crate::state_file::write_atomic(&path, &json, true)
                    .map_err(|source| AcmeError::Store { path, source })?;
                info!(directory = %self.config.directory, "ACME account created");
                Ok(account)
            })
            .await
    }

    async fn issue(&self, names: &[String], how: ChallengeType) -> Result<(), AcmeError> {
        let server = |source| AcmeError::Server { directory: self.config.directory.clone(), source };
        let order_err = |reason: String| AcmeError::Order { names: names.join(","), reason };
        let account = self.account().await?;
        let ids: Vec<Identifier> = names.iter().map(|n| Identifier::Dns(n.clone())).collect();
        let mut order = account.new_order(&NewOrder::new(&ids)).await.map_err(server)?;
        let mut http_tokens = Vec::new();
        let mut dns_records = Vec::new();
        let prepared: Result<(), AcmeError> = async {
            let mut authorizations = order.authorizations();
            while let Some(authz) = authorizations.next().await {
                let mut authz = authz.map_err(server)?;
                match authz.status {
                    AuthorizationStatus::Pending => {}
                    AuthorizationStatus::Valid => continue,
                    other => return Err(order_err(format!("authorization is {other:?}"))),
                }
                let mut challenge = authz
                    .challenge(how.clone())
                    .ok_or_else(|| order_err(format!("the CA offers no {how:?} challenge")))?;
                let key_auth = challenge.key_authorization();
                match how {
                    ChallengeType::Dns01 => {
                        let hook = self
                            .config
                            .dns_hook
                            .as_deref()
                            .ok_or_else(|| AcmeError::Dns("--acme-dns-hook is required for DNS-01".into()))?;
                        let domain = challenge.identifier().to_string();
                        let record = format!("_acme-challenge.{}.", domain.trim_start_matches("*."));
                        let value = key_auth.dns_value();
                        dns_hook::run(hook, "set", &record, &value).await.map_err(AcmeError::Dns)?;
                        dns_records.push((record, value));
                    }
                    _ => {
                        self.challenges.insert(challenge.token.clone(), key_auth.as_str().to_string());
                        http_tokens.push(challenge.token.clone());
                    }
                }
                challenge.set_ready().await.map_err(server)?;
            }
            Ok(())
        }
        .await;
        let result = match prepared {
            Ok(()) => self.finish(&mut order, names, how).await,
            Err(e) => Err(e),
        };
        for token in http_tokens {
            self.challenges.remove(&token);
        }
        if let Some(hook) = &self.config.dns_hook {
            for (record, value) in dns_records {
                if let Err(e) = dns_hook::run(hook, "clear", &record, &value).await {
                    warn!(error = %e, "DNS-01 cleanup failed");
                }
            }
        }
        result
    }

    async fn finish(
        &self,
        order: &mut instant_acme::Order,
        names: &[String],
        how: ChallengeType,
    ) -> Result<(), AcmeError> {
        let server = |source| AcmeError::Server { directory: self.config.directory.clone(), source };
        let retry = RetryPolicy::new().initial_delay(Duration::from_millis(250)).timeout(Duration::from_secs(90));
        let status = order.poll_ready(&retry).await.map_err(server)?;
        if status != OrderStatus::Ready {
            let detail = order
                .refresh()
                .await
                .ok()
                .and_then(|s| s.error.as_ref().map(|p| p.to_string()))
                .unwrap_or_else(|| format!("order is {status:?}"));
            return Err(AcmeError::Order { names: names.join(","), reason: detail });
        }
        let key_pem = order.finalize().await.map_err(server)?;
        let chain_pem = order.poll_certificate(&retry).await.map_err(server)?;
        let dir = store::save(&self.state_dir, names, &chain_pem, &key_pem)
            .map_err(|source| AcmeError::Store { path: store::live(&self.state_dir), source })?;
        // Counted before it is served, so whoever sees the new certificate sees the count too.
        self.metrics.orders.with_label_values(&[challenge_name(&how), "issued"]).inc();
        self.certs.reload()?;
        if let Some(c) = store::read(&dir) {
            self.record_expiry(&c);
        }
        Ok(())
    }

    fn record_expiry(&self, c: &store::Stored) {
        if let Some(first) = c.names.first() {
            let secs = c.not_after.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
            self.metrics.expiry.with_label_values(&[first.as_str()]).set(secs as i64);
        }
    }
}

/// The metric label of a challenge type.
fn challenge_name(how: &ChallengeType) -> &'static str {
    match how {
        ChallengeType::Dns01 => "dns-01",
        _ => "http-01",
    }
}

/// `account.json`: the credentials and the directory they belong to.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedAccount {
    directory: String,
    credentials: AccountCredentials,
}
