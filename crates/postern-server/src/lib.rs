//! The postern relay.
//!
//! # Layout
//!
//! Public (the relay's API):
//!
//! - [`config`]: [`RelayConfig`], every setting declared once, layered (flags, environment,
//!   file, defaults) and validated before any port is bound.
//! - [`tunnel`]: the tunnel and everything that acts on it: the registry of tunnels and agents,
//!   stats, events, the one admission path (`tunnel::admit`) and the one way to open a TCP
//!   tunnel (`tunnel::open`).
//! - [`access`]: per-tunnel access rules (client), policies (operator) and forward-auth.
//! - [`tokens`]: minting and revoking tokens, for the command line and the admin API alike;
//!   [`ledger`]: the record of minted tokens (claims, never the token), for listing;
//!   [`revocation`]: the persisted list of revoked tokens.
//! - [`reload`]: changing a running relay (certificates, revocations, policies, limits).
//! - [`bore`]: the bore-compatible endpoint (and the bore tokens it accepts).
//! - [`webhook`]: signed event deliveries with retries (the signature scheme receivers check).
//! - [`dev_ca`]: the self-signed development CA and `*.localhost` certificate.
//! - [`cluster`]: a cluster of relays on Redis: claims, routes, peer links, forwarding.
//! - [`inspect`]: the request inspector: captures of an inspected tunnel's requests, bounded,
//!   redacted, for the API, the dashboard and replay.
//!
//! Inside:
//!
//! - `relay`: [`Relay`], which ties the parts together and runs until the shutdown token fires.
//! - `listener`: the control-port accept loop; `session`: one agent connection (handshake,
//!   grants, control stream, heartbeat) until it ends.
//! - `agent`: [`AgentHandle`], the relay's way to open a stream to an agent.
//! - `tcp_edge`: one public listener per TCP tunnel; `http_edge`: public HTTP/HTTPS, every
//!   request routed by its host name, bodies streamed, upgrades passed through, error pages.
//! - `admin`: the admin listener: status API (JSON, OpenAPI), SSE events, health, metrics.
//! - `auth`: who is calling (agent Hello, admin bearer); `keys`: the token signing key.
//! - `quota`: per-token quotas; `volume`: their bytes per period, counted and kept; `leases`:
//!   names and ports kept for their owner after a disconnect; `abuse`: per-address caps and
//!   authentication lockout.
//! - `certs`: certificates by SNI (operator files, extra directory, ACME, development CA);
//!   `acme`: built-in ACME; `domains`: which custom domains a client may claim.
//! - `metrics`: Prometheus metrics, registered in a registry the binary owns.
//! - `outbound`: the HTTP client for webhooks and forward-auth; `state_file`: atomic writes of
//!   state files; `clock`: Unix time.

mod abuse;
pub mod access;
pub mod access_log;
mod acme;
mod admin;
mod agent;
mod auth;
pub mod bore;
mod certs;
mod clock;
pub mod cluster;
pub mod config;
pub mod dev_ca;
mod domains;
mod http_edge;
pub mod inspect;
mod keys;
mod leases;
pub mod ledger;
mod listener;
mod metrics;
mod outbound;
mod quota;
mod relay;
pub mod reload;
pub mod revocation;
mod session;
mod state_file;
mod tcp_edge;
pub mod tokens;
pub mod tunnel;
pub mod visitor;
mod volume;
pub mod webhook;

pub use acme::AcmeConfig;
pub use agent::AgentHandle;
pub use certs::{CertResolver, CertSource};
pub use config::{ConfigError, PortRange, RelayConfig};
pub use domains::TxtLookup;
pub use leases::Leases;
pub use metrics::RelayMetrics;
pub use relay::{Relay, RelayError, RelayListeners};
pub use reload::{ReloadReport, Reloader};
pub use tunnel::registry::Registry;
pub use tunnel::TunnelInfo;
