//! Registration cost: a client's `Hello` to the relay's `Welcome` (TCP, TLS, authentication,
//! reserving the name and, in a cluster, claiming it in Redis), against a single relay and
//! against a relay of a two-relay cluster on a real `redis-server`, interleaved in one run so
//! machine noise hits both alike. Each registration asks for a new name and hangs up after the
//! `Welcome` (so the relay also does the leaving, as it would for a real client).
//!
//! Usage: `cargo run --release -p postern-bench --bin registration -- [count]` (default 1000).
//! Reports p50 and p90 of each, and what the cluster adds at the p50.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use postern_e2e::cluster::TestCluster;
use postern_e2e::{http_tunnel, TestRelay};
use postern_proto::{Hello, Message, ALPN};
use postern_transport::framed::{read_message, write_message};
use postern_transport::tls::{client_config, Trust};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// One registration of name `id-3000` on `relay`; its time.
async fn register(relay: &TestRelay, tls: &TlsConnector, id: &str) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let tcp = TcpStream::connect(relay.control_addr).await?;
    tcp.set_nodelay(true)?;
    let name = rustls::pki_types::ServerName::try_from("localhost")?;
    let mut io = tls.connect(name, tcp).await?;
    let hello = Hello {
        token: String::new(),
        client_id: Some(id.to_string()),
        tunnels: vec![http_tunnel(id, 3000)],
        agent: "postern-bench".into(),
        group: Some(id.to_string()),
    };
    write_message(&mut io, &Message::Hello(hello)).await?;
    match read_message(&mut io).await? {
        Message::Welcome(_) => Ok(started.elapsed()),
        other => bail!("no Welcome: {other:?}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn connector(relay: &TestRelay) -> anyhow::Result<TlsConnector> {
    Ok(TlsConnector::from(Arc::new(client_config(&Trust::CaFile(relay.ca.clone()), &[ALPN])?)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let count: usize = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(1000);
    let single = TestRelay::start().await?;
    let cluster = TestCluster::start(2).await.context("a cluster needs redis-server")?;
    let member = cluster.relay(0);
    let (single_tls, member_tls) = (connector(&single)?, connector(member)?);
    // Warm both up (TLS session machinery, connections to Redis).
    for i in 0..20 {
        register(&single, &single_tls, &format!("warm{i}")).await?;
        register(member, &member_tls, &format!("warm{i}")).await?;
    }
    let (mut alone, mut clustered) = (Vec::with_capacity(count), Vec::with_capacity(count));
    for i in 0..count {
        let id = format!("reg{i}");
        if i % 2 == 0 {
            alone.push(register(&single, &single_tls, &id).await?);
            clustered.push(register(member, &member_tls, &id).await?);
        } else {
            clustered.push(register(member, &member_tls, &id).await?);
            alone.push(register(&single, &single_tls, &id).await?);
        }
    }
    alone.sort();
    clustered.sort();
    let (a50, c50) = (percentile(&alone, 0.5), percentile(&clustered, 0.5));
    println!("{count} registrations each, interleaved");
    println!("single relay:     p50 {:>8.3} ms  p90 {:>8.3} ms", ms(a50), ms(percentile(&alone, 0.9)));
    println!("cluster member:   p50 {:>8.3} ms  p90 {:>8.3} ms", ms(c50), ms(percentile(&clustered, 0.9)));
    println!("cluster adds at p50: {:+.3} ms (goal: at most +2 ms)", ms(c50) - ms(a50));
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
