//! The `postern` command line: parses arguments and hands off to the library crates.

/// Prints a line to stdout; a closed pipe (`postern ... | head`) is not an error worth a panic.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod certs_cmd;
mod cli;
mod client_cmd;
mod demo;
mod healthcheck_cmd;
mod server_cmd;
mod signals;
mod token_cmd;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

/// mimalloc: 1.3× single-stream throughput over glibc malloc; built with `no_thp` so idle RSS
/// stays where glibc's is (docs/benchmarks.md). Off with `--no-default-features`, for heap
/// profilers that follow the system allocator.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    init_tracing(cli.log.as_deref());
    let open_files = raise_open_files_limit();
    // The one metrics registry of this process, passed down to whatever serves /metrics.
    let metrics = prometheus::Registry::new();
    // The relay's settings layer the flags typed under their subcommand over the environment.
    let sub = matches.subcommand().map(|(_, m)| m).unwrap_or(&matches);
    let result = match cli.command {
        Command::Server(args) => server_cmd::run(*args, sub, &metrics, open_files).await,
        Command::Demo(args) => demo::run(*args, sub, &metrics).await,
        Command::Http(args) => {
            async { client_cmd::run(args.agent_config()?, args.client.status_options()).await }.await
        }
        Command::Tcp(args) => async { client_cmd::run(args.agent_config()?, args.client.status_options()).await }.await,
        Command::Agent(args) => {
            async { client_cmd::run(args.agent_config()?, args.client.status_options()).await }.await
        }
        Command::Start { config } => {
            async {
                let (cfg, client) = postern_client::file::load(&config, &|k| std::env::var(k).ok())?;
                client_cmd::run(cfg, client.status_options()).await
            }
            .await
        }
        Command::Token(cmd) => token_cmd::run(cmd),
        Command::Certs(cmd) => certs_cmd::run(cmd),
        Command::Healthcheck(args) => healthcheck_cmd::run(args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit on open files to the hard limit, as Go's runtime and nginx's
/// `worker_rlimit_nofile` do, and returns it. Every agent, public connection and local
/// connection is a descriptor, and the soft default of a service manager or shell (1024 under
/// systemd) would cap a relay or a busy client far below its own caps.
fn raise_open_files_limit() -> Option<u64> {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => Some(n),
        Err(e) => {
            tracing::warn!(error = %e, "could not raise the open files limit");
            None
        }
    }
}

fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env("POSTERN_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
