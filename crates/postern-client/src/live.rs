//! The agent's tunnels as they are wanted now: the command line's, plus those added and minus
//! those removed while it runs (through the relay's API, the local control API, or a program
//! that embeds the agent).
//!
//! Every connection of the agent serves this set (`control`), and each new session opens it
//! again, so a reconnect or a relay restart restores it: the agent re-sends what it was asked
//! for, rather than the relay remembering it. It lives as long as the agent process; a
//! restarted process starts from its command line again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use postern_proto::{RefuseCode, TunnelGrant, TunnelSpec};
use tokio::sync::watch;

/// Most tunnels the set may hold.
pub const MAX_TUNNELS: usize = 64;

/// Why a change to the set did not happen.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChangeError {
    /// The relay would not open the tunnel.
    #[error("the relay refused the tunnel ({code:?}): {message}")]
    Relay {
        /// The relay's code.
        code: RefuseCode,
        /// The relay's reason.
        message: String,
    },
    /// No tunnel of the set goes by that name.
    #[error("this agent serves no tunnel {0:?}")]
    NoSuchTunnel(String),
    /// The set is full.
    #[error("this agent already has {MAX_TUNNELS} tunnels")]
    TooMany,
}

/// One wanted tunnel.
///
/// With several connections, one opens it first (it holds the claim) and the others join it
/// once it is served: two connections asking at once would otherwise race for the same name,
/// or get two public ports for one TCP tunnel.
#[derive(Debug)]
pub struct Wanted {
    key: u64,
    spec: TunnelSpec,
    initial: bool,
    outcome: watch::Sender<Option<Result<TunnelGrant, ChangeError>>>,
    /// Connections serving it now.
    serving: AtomicUsize,
    /// The connection opening it first, while none serves it (0: none).
    claim: AtomicU64,
}

impl Wanted {
    /// What is asked for.
    pub fn spec(&self) -> &TunnelSpec {
        &self.spec
    }

    /// Its grant from the latest session that opened it.
    pub fn grant(&self) -> Option<TunnelGrant> {
        self.outcome.borrow().as_ref().and_then(|o| o.as_ref().ok().cloned())
    }

    /// What the relays answered last, if anything.
    pub(crate) fn outcome(&self) -> Option<Result<TunnelGrant, ChangeError>> {
        self.outcome.borrow().clone()
    }

    /// Its number, unique within the process (the `request` of its `Open`).
    pub(crate) fn key(&self) -> u64 {
        self.key
    }

    /// From the command line: sent in every `Hello`.
    pub(crate) fn initial(&self) -> bool {
        self.initial
    }

    /// True once a relay has opened it.
    pub(crate) fn ever_opened(&self) -> bool {
        self.grant().is_some()
    }

    /// Whether connection `me` may open it now: it is served elsewhere (so this one joins),
    /// or `me` holds (or takes) the claim to open it first.
    pub(crate) fn may_open(&self, me: u64) -> bool {
        self.serving.load(Ordering::SeqCst) > 0
            || self.claim.compare_exchange(0, me, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            || self.claim.load(Ordering::SeqCst) == me
    }

    /// Connection `me` is done opening it, either way.
    pub(crate) fn release(&self, me: u64) {
        let _ = self.claim.compare_exchange(me, 0, Ordering::SeqCst, Ordering::SeqCst);
    }

    /// One more connection serves it.
    pub(crate) fn served(&self) {
        self.serving.fetch_add(1, Ordering::SeqCst);
    }

    /// One connection fewer serves it.
    pub(crate) fn unserved(&self) {
        let _ = self.serving.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        // Wakes `gone`.
        self.outcome.send_modify(|_| {});
    }

    /// Resolves once no connection serves it (each relay has confirmed the close).
    async fn gone(&self) {
        let mut rx = self.outcome.subscribe();
        let _ = rx.wait_for(|_| self.serving.load(Ordering::SeqCst) == 0).await;
    }

    /// Records what a session's relay answered: a grant replaces what was there, a refusal
    /// only fills a blank (another connection may have opened it).
    pub(crate) fn report(&self, outcome: Result<TunnelGrant, ChangeError>) {
        self.outcome.send_if_modified(|o| match (&outcome, &o) {
            (Ok(_), _) | (Err(_), None) => {
                *o = Some(outcome.clone());
                true
            }
            _ => false,
        });
    }

    /// The first answer any session gets for it.
    pub(crate) async fn settled(&self) -> Result<TunnelGrant, ChangeError> {
        let mut rx = self.outcome.subscribe();
        let answer = rx.wait_for(Option::is_some).await;
        match answer.as_deref() {
            Ok(Some(outcome)) => outcome.clone(),
            // The sender lives in `self`, so it cannot be gone while we borrow it.
            _ => Err(ChangeError::NoSuchTunnel(String::new())),
        }
    }
}

/// The set, shared by the agent's connections and whoever changes it.
#[derive(Debug)]
pub struct LiveTunnels {
    wanted: watch::Sender<Vec<Arc<Wanted>>>,
    next: AtomicU64,
    seeded: AtomicBool,
}

impl Default for LiveTunnels {
    fn default() -> Self {
        Self { wanted: watch::Sender::new(Vec::new()), next: AtomicU64::new(1), seeded: AtomicBool::new(false) }
    }
}

impl LiveTunnels {
    /// Starts the set from the command line's `specs`, the first time only: a stopped agent
    /// that starts again keeps the changes made since.
    pub fn seed(&self, specs: &[TunnelSpec]) {
        if self.seeded.swap(true, Ordering::SeqCst) {
            return;
        }
        let seeded: Vec<_> = specs.iter().map(|s| self.entry(s.clone(), true)).collect();
        self.wanted.send_modify(|w| w.splice(0..0, seeded).for_each(drop));
    }

    fn entry(&self, spec: TunnelSpec, initial: bool) -> Arc<Wanted> {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        Arc::new(Wanted {
            key,
            spec,
            initial,
            outcome: watch::Sender::new(None),
            serving: AtomicUsize::new(0),
            claim: AtomicU64::new(0),
        })
    }

    /// The tunnels wanted now, in the order they were asked for.
    pub fn wanted(&self) -> Vec<Arc<Wanted>> {
        self.wanted.borrow().clone()
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<Vec<Arc<Wanted>>> {
        self.wanted.subscribe()
    }

    /// Wakes every connection to look at the set again (a tunnel became served, or a claim
    /// was let go).
    pub(crate) fn touch(&self) {
        self.wanted.send_modify(|_| {});
    }

    /// A number for a connection's control, distinct from every other (and never 0).
    pub(crate) fn new_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    /// The wanted tunnel a relay granted as `name` (on any connection).
    pub(crate) fn named(&self, name: &str) -> Option<Arc<Wanted>> {
        self.wanted().into_iter().find(|w| w.grant().is_some_and(|g| g.name == name))
    }

    /// Adds `spec` (or finds the same one already wanted).
    pub(crate) fn insert(&self, spec: TunnelSpec) -> Result<Arc<Wanted>, ChangeError> {
        let mut result = Err(ChangeError::TooMany);
        self.wanted.send_if_modified(|w| {
            if let Some(same) = w.iter().find(|x| x.spec == spec) {
                result = Ok(same.clone());
                return false;
            }
            if w.len() >= MAX_TUNNELS {
                return false;
            }
            let added = self.entry(spec.clone(), false);
            w.push(added.clone());
            result = Ok(added);
            true
        });
        result
    }

    /// No longer wants the tunnel numbered `key`.
    pub(crate) fn drop_key(&self, key: u64) {
        self.wanted.send_if_modified(|w| {
            let before = w.len();
            w.retain(|x| x.key != key);
            w.len() != before
        });
    }

    /// Opens `spec` on every connection of the agent, and waits up to `wait` for the first
    /// relay's answer: `Ok(None)` when none came in time (no connection is up, say); the
    /// tunnel then opens when one is.
    pub async fn add(&self, spec: TunnelSpec, wait: Duration) -> Result<Option<TunnelGrant>, ChangeError> {
        let wanted = self.insert(spec)?;
        match tokio::time::timeout(wait, wanted.settled()).await {
            Ok(outcome) => outcome.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Closes the tunnel the relay named `name` on every connection of the agent, and waits up
    /// to `wait` for the relays to confirm it; returns what it was.
    pub async fn remove(&self, name: &str, wait: Duration) -> Result<TunnelSpec, ChangeError> {
        let found = self.named(name).ok_or_else(|| ChangeError::NoSuchTunnel(name.to_string()))?;
        self.drop_key(found.key);
        let _ = tokio::time::timeout(wait, found.gone()).await;
        Ok(found.spec.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_proto::TunnelKind;

    fn grant(name: &str) -> TunnelGrant {
        TunnelGrant {
            name: name.into(),
            kind: TunnelKind::Tcp,
            local_port: 1,
            public_url: format!("tcp://relay:{name}"),
            default_url: None,
            domain_url: None,
        }
    }

    #[test]
    fn the_set_is_seeded_once_and_holds_each_tunnel_once_up_to_its_bound() {
        let live = LiveTunnels::default();
        live.seed(&[TunnelSpec::new(TunnelKind::Tcp, 5432)]);
        live.seed(&[TunnelSpec::new(TunnelKind::Tcp, 1)]);
        assert_eq!(live.wanted().len(), 1, "a second start keeps the set");
        assert!(live.wanted()[0].initial());
        let a = live.insert(TunnelSpec::new(TunnelKind::Http, 3000)).unwrap();
        let b = live.insert(TunnelSpec::new(TunnelKind::Http, 3000)).unwrap();
        assert_eq!(a.key(), b.key(), "the same tunnel asked twice is one");
        assert!(!a.initial());
        for port in 10_000..10_000 + MAX_TUNNELS as u16 - 2 {
            live.insert(TunnelSpec::new(TunnelKind::Tcp, port)).unwrap();
        }
        assert_eq!(live.wanted().len(), MAX_TUNNELS);
        assert_eq!(live.insert(TunnelSpec::new(TunnelKind::Tcp, 9)).unwrap_err(), ChangeError::TooMany);
    }

    #[test]
    fn one_connection_opens_first_and_the_others_follow_once_it_is_served() {
        let live = LiveTunnels::default();
        let w = live.insert(TunnelSpec::new(TunnelKind::Tcp, 5432)).unwrap();
        assert!(w.may_open(1));
        assert!(w.may_open(1), "the holder keeps its claim");
        assert!(!w.may_open(2), "another connection waits");
        w.release(1);
        assert!(w.may_open(2), "a claim let go passes on");
        w.served();
        w.release(2);
        assert!(w.may_open(3) && w.may_open(4), "once served, every connection joins");
        // A refusal does not overwrite a grant another connection got.
        w.report(Ok(grant("tcp-1")));
        w.report(Err(ChangeError::TooMany));
        assert_eq!(w.grant().map(|g| g.name), Some("tcp-1".into()));
    }

    #[tokio::test]
    async fn removal_goes_by_the_granted_name_and_waits_for_the_relays() {
        let live = Arc::new(LiveTunnels::default());
        let w = live.insert(TunnelSpec::new(TunnelKind::Tcp, 5432)).unwrap();
        w.report(Ok(grant("tcp-20001")));
        w.served();
        assert_eq!(
            live.remove("tcp-9", Duration::from_secs(1)).await.unwrap_err(),
            ChangeError::NoSuchTunnel("tcp-9".into())
        );
        let closing = tokio::spawn({
            let live = live.clone();
            async move { live.remove("tcp-20001", Duration::from_secs(30)).await }
        });
        // Out of the set at once; the answer waits until the last connection let it go.
        tokio::time::timeout(Duration::from_secs(5), async {
            while !live.wanted().is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();
        assert!(!closing.is_finished());
        w.unserved();
        let spec = tokio::time::timeout(Duration::from_secs(5), closing).await.unwrap().unwrap().unwrap();
        assert_eq!(spec.local_port, 5432);
    }
}
