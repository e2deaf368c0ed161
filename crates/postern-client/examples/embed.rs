//! Embeds the postern agent in a program: starts it, opens an HTTP tunnel to a local port
//! while it runs, prints the public URL, and when Enter is pressed (or its input ends) closes
//! the tunnel and stops, unregistering from the relay.
//!
//! ```sh
//! postern demo &    # a development relay on localhost:7000, CA in its state directory
//! POSTERN_CA=~/.local/state/postern/ca.pem \
//!     cargo run -p postern-client --example embed -- localhost:7000 8000
//! ```
//!
//! Arguments: the relay's `host:port` and the local port. `POSTERN_TOKEN` is the token (none
//! for an open development relay), `POSTERN_CA` the relay's CA certificate (else the system
//! roots).

use std::time::Duration;

use postern_client::{Agent, AgentConfig};
use postern_proto::{TunnelKind, TunnelSpec};
use postern_transport::tls::Trust;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: embed <relay host:port> <local port>";
    let relay = args.next().ok_or(usage)?;
    let port: u16 = args.next().ok_or(usage)?.parse()?;
    let token = std::env::var("POSTERN_TOKEN").unwrap_or_default();
    let trust = match std::env::var_os("POSTERN_CA") {
        Some(ca) => Trust::CaFile(ca.into()),
        None => Trust::SystemRoots,
    };

    // An agent with no tunnel of its own; it is started, then told what to open.
    let mut cfg = AgentConfig::new(relay, token, trust, Vec::new());
    cfg.local_host = "127.0.0.1".into();
    let agent = Agent::new(cfg);
    agent.start();

    let web = TunnelSpec::new(TunnelKind::Http, port);
    let grant = match agent.add(web, Duration::from_secs(15)).await {
        Ok(Some(grant)) => grant,
        Ok(None) => {
            let why = agent.state().borrow().last_error.clone().unwrap_or_else(|| "no answer".into());
            agent.stop().await?;
            return Err(format!("the relay did not answer in 15 s: {why}").into());
        }
        Err(e) => {
            agent.stop().await?;
            return Err(e.into());
        }
    };
    println!("{}", grant.public_url);
    eprintln!("press Enter to stop");
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut tokio::io::BufReader::new(tokio::io::stdin()), &mut line).await?;

    agent.remove(&grant.name, Duration::from_secs(5)).await?;
    agent.stop().await?;
    println!("stopped: {:?}", agent.state().borrow().phase);
    Ok(())
}
