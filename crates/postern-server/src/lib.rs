//! The postern relay.
//!
//! # Layout
//!
//! - [`config`]: [`RelayConfig`], validated before any port is bound; [`PortRange`].
//! - [`certs`]: certificates by SNI: operator PEM files, a directory of extra certificates,
//!   or the development CA; reloadable.
//! - [`clock`]: Unix time helpers.
//! - [`dev_ca`]: the self-signed development CA and `*.localhost` certificate in `--state-dir`.
//! - [`auth`]: checks the credential in an agent's `Hello`.
//! - [`keys`]: the token signing key in `--state-dir`.
//! - [`metrics`]: Prometheus metrics, registered in a registry the binary owns.
//! - [`listener`]: the control-port accept loop, with a connection cap.
//! - [`session`]: one agent connection: TLS, handshake, then the reverse-h2 mux, control stream
//!   and heartbeat, until it ends; then its tunnels are removed.
//! - [`access`]: per-tunnel access rules (client) and policies (operator).
//! - [`abuse`]: per-address connection caps and authentication lockout.
//! - [`quota`]: per-token quotas; [`leases`]: names kept for their owner after a disconnect;
//!   [`revocation`]: the persisted list of revoked tokens; [`tokens`]: minting and revoking, for
//!   the command line and the admin API alike.
//! - [`outbound`]: the HTTP client for webhooks and forward-auth.
//! - [`admin`]: the admin listener: status API (JSON, OpenAPI), SSE events, health, metrics.
//! - [`webhook`]: signed event deliveries with retries.
//! - [`agent`]: [`agent::AgentHandle`], the relay's way to open a stream to an agent.
//! - [`http_edge`]: public HTTP/HTTPS listeners; every request routed by its host name to
//!   the right agent, bodies streamed, upgrades passed through, branded error pages.
//! - [`registry`]: live tunnels by name, with a change feed.
//! - [`tcp_edge`]: one public listener per TCP tunnel, splicing each connection to a stream.
//! - [`relay`]: [`Relay`], which ties these together and runs until the shutdown token fires.

pub mod abuse;
pub mod access;
pub mod acme;
pub mod admin;
pub mod agent;
pub mod auth;
pub mod bore;
pub mod certs;
pub mod clock;
pub mod config;
pub mod dev_ca;
pub mod domains;
pub mod http_edge;
pub mod keys;
pub mod leases;
pub mod listener;
pub mod metrics;
pub mod outbound;
pub mod quota;
pub mod relay;
pub mod reload;
pub mod revocation;
pub mod session;
pub mod state_file;
pub mod tcp_edge;
pub mod tokens;
pub mod tunnel;
pub mod webhook;

pub use certs::{CertResolver, CertSource};
pub use config::{ConfigError, PortRange, RelayConfig};
pub use metrics::RelayMetrics;
pub use relay::{Relay, RelayError, RelayListeners};
pub use reload::{ReloadReport, Reloader};
pub use tunnel::registry::Registry;
pub use tunnel::TunnelInfo;
