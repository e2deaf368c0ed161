//! The postern agent (the client side of a tunnel).
//!
//! # Layout
//!
//! - `config`: [`AgentConfig`]: where the relay is, how to trust it, which tunnels to open.
//! - `connect`: one attempt: TCP, TLS with ALPN `postern/1`, `Hello`, then `Welcome` or
//!   `Refused` ([`ConnectError`]).
//! - `session`: a live session: the agent is the h2 *server*; it answers the relay's streams,
//!   keeps the heartbeat, and unregisters on shutdown.
//! - [`live`]: the tunnels wanted now ([`LiveTunnels`]), changed while the agent runs;
//!   `control`: one session's control stream, which keeps its tunnels equal to that set and
//!   answers the relay's remote changes under [`remote`] (`--allow-remote`, [`AllowRemote`]).
//! - `forward`: a TCP stream: connect to the local service and splice.
//! - `http_forward`: an HTTP request: pooled client to the local service, streamed bodies,
//!   trailers, WebSocket upgrades ([`HostHeader`]).
//! - `stats`: traffic counters ([`AgentStats`]); [`status`]: the local JSON status endpoint
//!   (`--status`) and the local control API's reads; `local_api`: its changes (open and close
//!   tunnels, stop and start), described by `local_api.json` (OpenAPI).
//! - `backoff`: exponential backoff with jitter between attempts.
//! - [`scale`]: how many connections to keep ([`Connections`]; `auto` adds them while streams
//!   are busy).
//! - `agent`: [`run`], the reconnect loop, and [`AgentState`], its observable state.
//! - `embed`: [`Agent`], an agent a program starts, stops and changes while it runs (the
//!   command line, the local control API and embedding programs all use it).
//! - [`cli`]: the command-line settings (`postern http`, `postern tcp`), access rules and the
//!   default tunnel id; [`file`]: the client config file (`postern start`).
//! - [`demo`]: the small web service `postern demo` exposes.

mod agent;
mod backoff;
pub mod cli;
mod config;
mod connect;
mod control;
pub mod demo;
mod embed;
pub mod file;
mod forward;
mod http_forward;
pub mod live;
mod local_api;
pub mod remote;
pub mod scale;
mod session;
mod stats;
pub mod status;

pub use agent::{run, AgentError, AgentPhase, AgentState};
pub use config::AgentConfig;
pub use connect::ConnectError;
pub use embed::Agent;
pub use http_forward::HostHeader;
pub use live::{ChangeError, LiveTunnels};
pub use remote::AllowRemote;
pub use scale::Connections;
pub use stats::AgentStats;
