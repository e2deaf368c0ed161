//! The command line: the subcommands, and the few flags that belong to the binary. Relay and
//! client settings are declared by the libraries (`RelayConfig`, `postern_client::cli`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use postern_client::cli::{AgentArgs, HttpArgs, TcpArgs};
use postern_server::config::Bind;
use postern_server::tokens::MintArgs;
use postern_server::RelayConfig;

/// postern: expose local services through a self-hosted relay.
///
/// Run `postern server` on a machine the public can reach, then `postern tcp PORT` next to the
/// service you want to expose. `postern demo` runs both on this machine to try it out.
#[derive(Debug, Parser)]
#[command(name = "postern", version, about, long_about, propagate_version = true)]
pub struct Cli {
    /// Log filter, for example `info`, `debug` or `postern_server=debug` [env: POSTERN_LOG]
    #[arg(long, global = true)]
    pub log: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the relay. With no arguments: a development relay on 127.0.0.1 with a self-signed
    /// certificate for localhost and *.localhost, created in --state-dir.
    Server(Box<ServerArgs>),
    /// Expose local HTTP services through a relay, for example `postern http 3000`: they get
    /// https://<id>-<port>.<relay domain>.
    Http(Box<HttpArgs>),
    /// Expose a local TCP port through a relay, for example `postern tcp 5432`.
    Tcp(TcpArgs),
    /// Connect with no tunnel and open them as told while running: by the relay's API
    /// (`--allow-remote 3000-3999`) or the local control API (`--status 127.0.0.1:4040`)
    Agent(Box<AgentArgs>),
    /// Open every tunnel listed in a client config file (TOML), for example
    /// `postern start --config postern-client.toml`.
    Start {
        /// Client config file (TOML) listing the tunnels
        #[arg(long, short = 'c', env = "POSTERN_CLIENT_CONFIG")]
        config: PathBuf,
    },
    /// Mint scoped tokens for clients, signed with the relay's key in --state-dir.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Certificates: a development CA and wildcard certificate, or the certbot command for a
    /// real wildcard.
    #[command(subcommand)]
    Certs(CertsCommand),
    /// Try postern on this machine: a development relay, a demo web service on
    /// 127.0.0.1:8000, and a client that exposes it through a tunnel.
    Demo(Box<DemoArgs>),
    /// Probe a relay's admin listener or a client's --status listener, for container health
    /// checks: exits 0 when GET /readyz answers 2xx, 1 otherwise (images need no curl).
    Healthcheck(HealthcheckArgs),
}

/// `postern server`: the relay's settings (flags over `POSTERN_*` over the file), and two
/// flags of the command itself.
#[derive(Debug, Args)]
pub struct ServerArgs {
    /// TOML config file; flags and POSTERN_* variables override its values
    #[arg(long, short = 'c', env = "POSTERN_CONFIG")]
    pub config: Option<PathBuf>,
    /// Validate the configuration and TLS files, print the result, and exit
    #[arg(long)]
    pub check: bool,
    #[command(flatten)]
    pub relay: RelayConfig,
}

/// `postern demo`: a development relay (any relay flag works) and the demo service.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Address of the demo web service
    #[arg(long, default_value = "127.0.0.1:8000")]
    pub demo_addr: SocketAddr,
    #[command(flatten)]
    pub relay: RelayConfig,
}

/// `postern token ...`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new token. Example: postern token mint --subject ws-123 --ids 'ws-123*' --ttl 30d
    Mint(MintArgs),
    /// Revoke a token by id (the relay disconnects its sessions within a second)
    Revoke {
        /// The token id (`id` from the admin API, or the `jti` claim)
        id: String,
        /// The relay's state directory (holds revoked.json)
        #[arg(long, env = "POSTERN_STATE_DIR", default_value = "postern-state")]
        state_dir: PathBuf,
    },
}

/// `postern certs ...`.
#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Create (or keep) a development CA and a certificate for localhost and *.localhost in
    /// DIR: ca.pem (trust this), ca-key.pem, tls-cert.pem, tls-key.pem
    Dev {
        /// Where to write them
        #[arg(long, default_value = "certs")]
        out: PathBuf,
    },
    /// Print the certbot command that gets a real wildcard certificate by DNS-01
    Certbot {
        /// The relay's domain, e.g. tunnel.example.com
        #[arg(long)]
        domain: String,
        /// certbot DNS plugin, e.g. cloudflare, route53, rfc2136
        #[arg(long, default_value = "cloudflare")]
        dns_plugin: String,
    },
}

/// `postern healthcheck`.
#[derive(Debug, Args)]
pub struct HealthcheckArgs {
    /// The listener to probe: the relay's --admin-addr, or a client's --status address. An
    /// unspecified address (0.0.0.0:7001) means this machine's loopback
    #[arg(env = "POSTERN_ADMIN_ADDR", default_value = "127.0.0.1:7001", value_name = "ADDR")]
    pub addr: Bind,
    /// Path to GET: /readyz (ready to serve: the relay's listeners are up and it is not draining;
    /// the client is connected with its tunnels), or /healthz (the process answers)
    #[arg(long, default_value = "/readyz")]
    pub path: String,
    /// Give up after this long
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s", value_name = "DURATION")]
    pub timeout: std::time::Duration,
}
