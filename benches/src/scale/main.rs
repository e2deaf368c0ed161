//! Scale on one relay (issue #16, part 4), all on loopback against one release relay:
//! - `agents N` (default 10 000): N agents with one HTTP tunnel each; registration time, relay
//!   RSS per agent, idle relay CPU (heartbeats included), routed-request time (`agents`);
//! - `public N` (default 100 000): N idle public connections through TCP tunnels; relay and
//!   client RSS per connection, open files back after they close (`public`);
//! - `churn N SECS` (default 1 000 agents, 60 s): agents connecting and leaving in a loop; relay
//!   RSS and open files before and after (`churn`).
//!
//! `cargo build --release -p postern && cargo run --release -p postern-bench --bin scale` runs
//! all three; `... --bin scale -- public 20000` runs one. `POSTERN_BIN` picks the relay binary.

mod agents;
mod churn;
mod public;
mod relay;

use anyhow::Context;

fn arg(args: &[String], i: usize, default: u64) -> anyhow::Result<u64> {
    args.get(i).map_or(Ok(default), |a| a.parse().with_context(|| format!("not a number: {a}")))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let binary = std::env::var("POSTERN_BIN").unwrap_or_else(|_| "target/release/postern".into());
    // This process holds a socket per agent or visitor; its children inherit the raised limit.
    relay::raise_open_files()?;
    match args.first().map(String::as_str) {
        Some("agents") => agents::run(&binary, arg(&args, 1, 10_000)? as usize).await,
        Some("public") => public::run(&binary, arg(&args, 1, 100_000)? as usize).await,
        Some("churn") => churn::run(&binary, arg(&args, 1, 1000)? as usize, arg(&args, 2, 60)?).await,
        Some("hold") => public::hold(arg(&args, 1, 1)? as usize).await,
        None => {
            agents::run(&binary, 10_000).await?;
            public::run(&binary, 100_000).await?;
            churn::run(&binary, 1000, 60).await
        }
        Some(other) => anyhow::bail!("unknown measurement {other}: agents [N], public [N] or churn [N] [SECS]"),
    }
}
