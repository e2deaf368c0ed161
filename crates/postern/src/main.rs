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
mod file_config;
mod healthcheck_cmd;
mod server_cmd;
mod signals;
mod token_cmd;

use clap::Parser;

use crate::cli::{Cli, Command};

/// mimalloc: 1.3× single-stream throughput over glibc malloc; built with `no_thp` so idle RSS
/// stays where glibc's is (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.log.as_deref());
    // The one metrics registry of this process, passed down to whatever serves /metrics.
    let metrics = prometheus::Registry::new();
    let result = match cli.command {
        Command::Server(args) => server_cmd::run(*args, &metrics).await,
        Command::Token(cmd) => token_cmd::run(cmd),
        Command::Certs(cmd) => certs_cmd::run(cmd),
        Command::Http(args) => client_cmd::run_http(args).await,
        Command::Tcp(args) => client_cmd::run_tcp(args).await,
        Command::Start(args) => client_cmd::run_start(args).await,
        Command::Demo(args) => demo::run(args, &metrics).await,
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

fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| EnvFilter::try_from_env("POSTERN_LOG").ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
}
