//! Visitor identity: who is behind a request to a tunnel that requires sign-in, and the records
//! that say who may enter.
//!
//! **The flow** follows Cloudflare Access's pattern (one relay-wide auth host, then a
//! per-host hop), not oauth2-proxy's (one cookie on a parent domain, which every tunnel of the
//! domain, each run by someone else, would receive):
//!
//! 1. A browser without a session on `t.<domain>` is sent to `https://auth.<domain>/login?rd=…`.
//! 2. The auth host starts the code flow with PKCE, a nonce and a state, sealed in a cookie of
//!    its own (`Path=/callback`, 10 minutes), and sends the browser to the provider.
//! 3. The provider sends it back to `https://auth.<domain>/callback`, the one redirect URI to
//!    register. The relay checks the state against the cookie, exchanges the code, checks the
//!    ID token ([`oidc`]) and seals a **one-time code** (60 s, single use) for the tunnel's
//!    host.
//! 4. `https://t.<domain>/.postern/auth?code=…` checks the code, opens a [`Session`] and sets
//!    its cookie on that host only (`__Host-postern`: `Secure`, `HttpOnly`, `SameSite=Lax`,
//!    `Path=/`, no `Domain`), then redirects to the page first asked for.
//!
//! A session's cookie is sealed for its host ([`seal`]); the session itself is a record here,
//! so ending it (the API, a revoked grant or share link) takes effect on the next request.
//! The local service gets `X-Postern-Email` (and `X-Postern-Groups`) or `X-Postern-Pass`; the
//! edge strips those, the session cookie and service-token headers from what the public sends.
//!
//! Programs (not a browser asking for a page) get `401` instead of a redirect, and get in with
//! a **service token** ([`passes`]): `Authorization: Bearer pss1.…` or
//! `X-Postern-Service-Token: pss1.…`. **Share links** are passes too.

mod book;
pub mod edge;
pub mod flow;
pub mod oidc;
pub mod passes;
pub mod records;
pub mod seal;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use serde::Deserialize;

use self::book::Book;
use self::oidc::Provider;
pub use self::records::{Grant, Pass, PassKind, Session};
use self::seal::Sealer;
use crate::clock::unix_secs;
use crate::outbound::HttpsClient;

/// Sessions, grants and passes kept at most (each).
pub const MAX_RECORDS: usize = 10_000;
/// How long a one-time code is good for.
pub const CODE_TTL: u64 = 60;
/// How long a visitor has to sign in at the provider.
pub const FLOW_TTL: u64 = 600;

/// One identity provider as configured (`--oidc-*` or an `[[oidc]]` table).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSpec {
    /// Shown on the choice page when there are several.
    pub name: Option<String>,
    /// Issuer URL.
    pub issuer: String,
    /// The relay's client id there.
    pub client_id: String,
    /// The relay's client secret there.
    pub client_secret: String,
    /// Scopes asked for besides `openid email`, e.g. `groups` for a provider that sends the
    /// groups claim only when asked.
    #[serde(default)]
    pub scopes: Vec<String>,
}

impl std::fmt::Debug for OidcSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OidcSpec").field("issuer", &self.issuer).field("client_id", &self.client_id).finish()
    }
}

/// Everything the relay knows about visitors.
#[derive(Debug)]
pub struct Visitors {
    /// Seals cookies and codes, signs passes.
    pub sealer: Sealer,
    /// The identity providers, in configured order.
    pub providers: Vec<Provider>,
    /// Outgoing HTTP to the providers.
    pub http: Option<HttpsClient>,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// Open sessions.
    pub sessions: Book<Session>,
    /// E-mail addresses granted per tunnel.
    pub grants: Book<Grant>,
    /// Share links and service tokens.
    pub passes: Book<Pass>,
    /// One-time codes and flow states already used, until they expire.
    spent: Mutex<HashMap<String, u64>>,
}

impl Visitors {
    /// The visitor state of a relay: its providers, its sealing key (from the token key), and
    /// its records in `state_dir` (`sessions.json`, `grants.json`, `passes.json`).
    pub fn new(
        specs: &[OidcSpec],
        sealer: Sealer,
        http: Option<HttpsClient>,
        session_ttl: Duration,
        state_dir: Option<&Path>,
    ) -> Result<Self, String> {
        let providers = specs.iter().map(Provider::new).collect::<Result<_, _>>()?;
        let now = unix_secs();
        let file = |name: &str| state_dir.map(|d| d.join(name));
        Ok(Self {
            sealer,
            providers,
            http,
            session_ttl,
            sessions: Book::load(file("sessions.json"), MAX_RECORDS, now),
            grants: Book::load(file("grants.json"), MAX_RECORDS, now),
            passes: Book::load(file("passes.json"), MAX_RECORDS, now),
            spent: Mutex::new(HashMap::new()),
        })
    }

    /// Marks a one-time value (a code's or a flow's id) used; false when it already was.
    pub fn spend(&self, id: &str, expires: u64) -> bool {
        let now = unix_secs();
        let mut spent = self.spent.lock().unwrap_or_else(|p| p.into_inner());
        if spent.len() > MAX_RECORDS {
            spent.retain(|_, exp| *exp > now);
        }
        if spent.len() > 4 * MAX_RECORDS {
            // A flood of codes: refuse rather than grow (they are minted only after a sign-in).
            return false;
        }
        spent.insert(id.to_string(), expires).is_none()
    }

    /// True when `email` holds a live grant on `tunnel` of `owner` (a name another owner
    /// takes later does not inherit it).
    pub fn granted(&self, (tunnel, owner): (&str, &str), email: &str) -> bool {
        self.grants.get(email, unix_secs(), |g| g.tunnel == tunnel && g.owner == owner).is_some()
    }

    /// Opens a session and returns it.
    pub fn open_session(&self, tunnel: &str, owner: &str, host: &str, who: records::Who) -> Session {
        let now = unix_secs();
        let session = Session {
            id: records::random_id(),
            tunnel: tunnel.to_string(),
            owner: owner.to_string(),
            host: host.to_string(),
            who,
            created: now,
            expires: now + self.session_ttl.as_secs(),
        };
        self.sessions.add(now, session.clone());
        session
    }

    /// Ends the sessions `pick` selects; returns how many.
    pub fn end_sessions(&self, pick: impl Fn(&Session) -> bool) -> usize {
        self.sessions.remove(unix_secs(), pick).len()
    }
}
