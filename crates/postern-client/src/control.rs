//! One session's control stream, the agent's side: keeps the tunnels this connection serves
//! equal to the agent's wanted set ([`LiveTunnels`]), answers the relay's remote changes
//! (under `--allow-remote`, [`AllowRemote`]), and keeps the name-to-port table the session
//! routes streams by.
//!
//! A tunnel opened live goes `Open` → `Opened` (the agent routes the name) → `Serving` (the
//! relay sends traffic); one closed live leaves the table first, then `Close` tells the relay.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use bytes::{Bytes, BytesMut};
use h2::{RecvStream, SendStream};
use postern_proto::frame::encode;
use postern_proto::{ChangeOutcome, Control, Decoder, Message, RefuseCode, TunnelChange, TunnelGrant, TunnelKind};
use tracing::{debug, info, warn};

use crate::live::{ChangeError, LiveTunnels, Wanted};
use crate::remote::AllowRemote;

/// Tunnel name to (kind, local port): what the session routes streams by.
pub(crate) type RouteTable = RwLock<HashMap<String, (TunnelKind, u16)>>;

/// Where a session's current tunnels are published (the agent's state).
pub(crate) type Publish = Arc<dyn Fn(Vec<TunnelGrant>) + Send + Sync>;

/// The sending half of the control stream, shared with the session (which unregisters on it).
pub(crate) type ControlSend = Arc<Mutex<Option<SendStream<Bytes>>>>;

/// One session's control.
pub(crate) struct Controller {
    pub(crate) live: Arc<LiveTunnels>,
    pub(crate) allow: AllowRemote,
    pub(crate) routes: Arc<RouteTable>,
    pub(crate) send: ControlSend,
    pub(crate) publish: Publish,
    /// This connection's number (for claims).
    me: u64,
    /// What this session serves, in the order it was opened.
    served: Vec<(Arc<Wanted>, TunnelGrant)>,
    opening: HashMap<u64, Arc<Wanted>>,
    failed: HashSet<u64>,
    /// Closed here, waiting for the relay's `Closed`.
    closing: HashMap<String, Arc<Wanted>>,
    /// The relay's remote changes waiting for the opening of a wanted tunnel.
    answers: HashMap<u64, (Arc<Wanted>, Vec<u64>)>,
}

impl Drop for Controller {
    fn drop(&mut self) {
        for (w, _) in &self.served {
            w.unserved();
        }
        for w in self.closing.values() {
            w.unserved();
        }
        for w in self.opening.values() {
            w.release(self.me);
        }
        // Another connection may take over what this one held or was opening.
        self.live.touch();
    }
}

impl Controller {
    /// The control of a session that serves `served` (its `Hello`'s tunnels and their grants).
    pub(crate) fn new(
        live: Arc<LiveTunnels>,
        allow: AllowRemote,
        routes: Arc<RouteTable>,
        publish: Publish,
        served: Vec<(Arc<Wanted>, TunnelGrant)>,
    ) -> Self {
        for (w, g) in &served {
            w.report(Ok(g.clone()));
            w.served();
        }
        Controller {
            me: live.new_id(),
            live,
            allow,
            routes,
            send: Arc::default(),
            publish,
            served,
            opening: HashMap::new(),
            failed: HashSet::new(),
            closing: HashMap::new(),
            answers: HashMap::new(),
        }
    }

    /// Runs until the relay ends the control stream or the connection goes.
    pub(crate) async fn run(mut self, mut body: RecvStream) {
        let mut wanted = self.live.subscribe();
        let now = wanted.borrow_and_update().clone();
        self.reconcile(&now);
        let mut decoder = Decoder::new();
        let mut buf = BytesMut::new();
        loop {
            tokio::select! {
                chunk = body.data() => {
                    let Some(Ok(chunk)) = chunk else { return };
                    let _ = body.flow_control().release_capacity(chunk.len());
                    buf.extend_from_slice(&chunk);
                    loop {
                        match decoder.decode(&mut buf) {
                            Ok(Some(Message::Control(msg))) => self.handle(msg),
                            Ok(Some(other)) => debug!(message = ?other, "ignoring a non-control message"),
                            Ok(None) => break,
                            Err(e) => {
                                warn!(error = %e, "relay sent a malformed control message");
                                return;
                            }
                        }
                    }
                }
                changed = wanted.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let now = wanted.borrow_and_update().clone();
                    self.reconcile(&now);
                }
            }
        }
    }

    fn say(&self, msg: Control) {
        let mut out = BytesMut::new();
        if encode(&Message::Control(msg), &mut out).is_ok() {
            if let Some(send) = self.send.lock().unwrap_or_else(|p| p.into_inner()).as_mut() {
                let _ = send.send_data(out.freeze(), false);
            }
        }
    }

    fn handle(&mut self, msg: Control) {
        match msg {
            Control::Notice { message } => info!(%message, "notice from relay"),
            Control::Drain { deadline_ms } => info!(deadline_ms, "relay is draining; will reconnect when it closes"),
            Control::Opened { request, grant } => self.opened(request, grant),
            Control::NotOpened { request, code, message } => self.not_opened(request, code, message),
            Control::Change { request, change } => self.change(request, change),
            Control::Closed { name } => {
                if let Some(w) = self.closing.remove(&name) {
                    w.unserved();
                }
            }
            other => debug!(message = ?other, "ignoring control message"),
        }
    }

    fn opened(&mut self, request: u64, grant: TunnelGrant) {
        let Some(w) = self.opening.remove(&request) else {
            warn!(request, "relay opened a tunnel this session did not ask for");
            return;
        };
        if !self.live.wanted().iter().any(|x| x.key() == w.key()) {
            // Removed while it was being opened.
            w.release(self.me);
            self.say(Control::Close { name: grant.name });
            return;
        }
        self.routes().insert(grant.name.clone(), (grant.kind, grant.local_port));
        self.say(Control::Serving { request });
        info!(tunnel = %grant.name, url = %grant.public_url, "tunnel up");
        w.report(Ok(grant.clone()));
        w.served();
        w.release(self.me);
        self.answer(w.key(), ChangeOutcome::Done { grant: Some(grant.clone()) });
        self.served.push((w, grant));
        self.published();
        // The other connections join it now.
        self.live.touch();
    }

    fn not_opened(&mut self, request: u64, code: RefuseCode, message: String) {
        if let Some(w) = self.opening.remove(&request) {
            warn!(port = w.spec().local_port, %message, "relay refused a tunnel");
            self.failed.insert(w.key());
            w.report(Err(ChangeError::Relay { code, message: message.clone() }));
            w.release(self.me);
            if !w.initial() && !w.ever_opened() {
                // A new tunnel the relay will not open: whoever asked for it hears why, and it
                // is not retried on the next session.
                self.live.drop_key(w.key());
            }
            self.answer(w.key(), ChangeOutcome::Failed { code, message });
            self.live.touch();
        } else if let Some(i) = self.served.iter().position(|(w, _)| w.key() == request) {
            let (w, grant) = self.served.remove(i);
            w.unserved();
            warn!(tunnel = %grant.name, %message, "relay dropped a tunnel");
            self.routes().remove(&grant.name);
            self.published();
        }
    }

    fn change(&mut self, request: u64, change: TunnelChange) {
        let reply = |this: &Self, outcome| this.say(Control::Changed { request, outcome });
        match change {
            TunnelChange::Add { tunnel } => {
                if let Err(message) = self.allow.check(&tunnel) {
                    warn!(kind = tunnel.kind.as_str(), port = tunnel.local_port, %message, "refused a tunnel asked for through the relay");
                    return reply(self, ChangeOutcome::Refused { message });
                }
                let w = match self.live.insert(tunnel) {
                    Ok(w) => w,
                    // The agent's own bound on what it holds: its refusal.
                    Err(e) => return reply(self, ChangeOutcome::Refused { message: e.to_string() }),
                };
                info!(port = w.spec().local_port, "opening a tunnel asked for through the relay");
                if let Some((_, grant)) = self.served.iter().find(|(x, _)| x.key() == w.key()) {
                    return reply(self, ChangeOutcome::Done { grant: Some(grant.clone()) });
                }
                if self.failed.contains(&w.key()) {
                    let message = "the relay refused this tunnel on this connection".to_string();
                    return reply(self, ChangeOutcome::Failed { code: RefuseCode::Unavailable, message });
                }
                self.answers.entry(w.key()).or_insert_with(|| (w.clone(), Vec::new())).1.push(request);
                // Open it now rather than when the set's change comes round, so the answer
                // cannot be missed.
                let now = self.live.wanted();
                self.reconcile(&now);
            }
            TunnelChange::Remove { name } => {
                if let Err(message) = self.allow.check_removal() {
                    warn!(tunnel = %name, %message, "refused to close a tunnel through the relay");
                    return reply(self, ChangeOutcome::Refused { message });
                }
                // Any connection's grant names it: the agent may serve it on another one only.
                let Some(w) = self.live.named(&name) else {
                    let message = format!("this agent serves no tunnel {name:?}");
                    return reply(self, ChangeOutcome::Failed { code: RefuseCode::BadRequest, message });
                };
                info!(tunnel = %name, "closing a tunnel through the relay");
                self.live.drop_key(w.key());
                // Close first, so the relay has let the tunnel go when the answer reaches it.
                let now = self.live.wanted();
                self.reconcile(&now);
                reply(self, ChangeOutcome::Done { grant: None });
            }
        }
    }

    /// Closes what is served but no longer wanted, opens what is wanted but not served.
    fn reconcile(&mut self, wanted: &[Arc<Wanted>]) {
        let keys: HashSet<u64> = wanted.iter().map(|w| w.key()).collect();
        let (kept, gone): (Vec<_>, Vec<_>) = self.served.drain(..).partition(|(w, _)| keys.contains(&w.key()));
        self.served = kept;
        for (w, grant) in &gone {
            self.routes().remove(&grant.name);
            info!(tunnel = %grant.name, "tunnel closed");
            self.say(Control::Close { name: grant.name.clone() });
            self.closing.insert(grant.name.clone(), w.clone());
        }
        // A change asked for here whose tunnel another connection failed to open (and so
        // dropped) is answered with that failure.
        let orphans: Vec<u64> = self.answers.keys().filter(|k| !keys.contains(k)).copied().collect();
        for key in orphans {
            let Some((w, _)) = self.answers.get(&key) else { continue };
            let outcome = match w.outcome() {
                Some(Err(ChangeError::Relay { code, message })) => ChangeOutcome::Failed { code, message },
                _ => {
                    ChangeOutcome::Failed { code: RefuseCode::Unavailable, message: "removed before it opened".into() }
                }
            };
            self.answer(key, outcome);
        }
        for w in wanted {
            let key = w.key();
            let busy = self.served.iter().any(|(x, _)| x.key() == key) || self.opening.contains_key(&key);
            if !busy && !self.failed.contains(&key) && w.may_open(self.me) {
                self.say(Control::Open { request: key, tunnel: w.spec().clone() });
                self.opening.insert(key, w.clone());
            }
        }
        if !gone.is_empty() {
            self.published();
        }
    }

    fn answer(&mut self, key: u64, outcome: ChangeOutcome) {
        for request in self.answers.remove(&key).map(|(_, r)| r).unwrap_or_default() {
            self.say(Control::Changed { request, outcome: outcome.clone() });
        }
    }

    fn routes(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, (TunnelKind, u16)>> {
        self.routes.write().unwrap_or_else(|p| p.into_inner())
    }

    fn published(&self) {
        (self.publish)(self.served.iter().map(|(_, g)| g.clone()).collect());
    }
}
