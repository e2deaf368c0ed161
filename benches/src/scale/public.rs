//! N idle public connections through TCP tunnels on one relay: the relay's and the clients' RSS
//! per connection, and their open files after the visitors leave.
//!
//! Four kinds of process, each holding one file descriptor per connection: this one (the
//! visitors), the relay, the `postern tcp` clients (at most [`PER_CLIENT`] connections each),
//! and an origin process (this binary's `hold` mode) that accepts and keeps the local
//! connections. Each raises its soft limit on open files to the hard limit; the count is cut to
//! fit the hard limit, and the output says so. Visitors connect from several 127.0.0.x source
//! addresses, [`PER_SOURCE`] each, so source ports never run out.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use postern_e2e::{open_fds_of, rss_kib_of};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket, TcpStream};

use crate::relay::{raise_open_files, start_and_wait, Relay};

/// Public connections per client process (under the relay's default of 10 000 streams per agent).
const PER_CLIENT: usize = 8000;
/// Visitor connections per source address (the ephemeral range holds about 28 000 ports).
const PER_SOURCE: usize = 20_000;

/// `scale hold K`: binds `K` loopback listeners, prints `ports` and their numbers, then accepts
/// and keeps every connection until its peer closes it. Ends when its stdin closes.
pub async fn hold(listeners: usize) -> anyhow::Result<()> {
    raise_open_files()?;
    let mut ports = Vec::new();
    for _ in 0..listeners {
        let l = TcpListener::bind("127.0.0.1:0").await?;
        ports.push(l.local_addr()?.port().to_string());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    let mut sink = [0u8; 64];
                    while matches!(s.read(&mut sink).await, Ok(n) if n > 0) {}
                });
            }
        });
    }
    println!("ports {}", ports.join(" "));
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    while matches!(stdin.read(&mut sink).await, Ok(n) if n > 0) {}
    Ok(())
}

/// Processes killed when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits up to `limit` for `check` to hold, looking every 200 ms.
async fn wait_for(what: &str, limit: Duration, mut check: impl FnMut() -> anyhow::Result<bool>) -> anyhow::Result<()> {
    let started = Instant::now();
    while !check()? {
        anyhow::ensure!(started.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Runs the measurement with `want` connections (fewer if the open files limit is lower).
pub async fn run(binary: &str, want: usize) -> anyhow::Result<()> {
    let limit = raise_open_files()?;
    let count = want.min(limit.saturating_sub(1000) as usize);
    if count < want {
        println!("the hard limit on open files is {limit}: {count} connections instead of {want}");
    }
    let clients = count.div_ceil(PER_CLIENT);
    let relay = Relay::start(binary, clients, &["--max-public-connections", &(count + 100).to_string()])?;
    let mut hold_cmd = Command::new(std::env::current_exe()?);
    hold_cmd.args(["hold", &clients.to_string()]).stdin(Stdio::piped());
    let (origin, ports) = start_and_wait(hold_cmd, |l| l.starts_with("ports "))?;
    let origin_pid = origin.id();
    let mut children = Children(vec![origin]);
    let mut public = Vec::new();
    for port in ports.split_whitespace().skip(1) {
        let mut cmd = Command::new(binary);
        cmd.args(["tcp", port, "--server", &format!("localhost:{}", relay.ctrl), "--ca"]).arg(relay.ca()).args([
            "--connections",
            "1",
            "--local-host",
            "127.0.0.1",
            "--log",
            "warn",
        ]);
        let (client, line) = start_and_wait(cmd, |l| l.contains("tcp://"))?;
        children.0.push(client);
        let url = line.split_whitespace().find(|w| w.starts_with("tcp://")).context("tunnel URL")?;
        public.push(url.rsplit(':').next().context("public port")?.parse::<u16>()?);
    }
    let client_pids: Vec<u32> = children.0[1..].iter().map(Child::id).collect();
    let clients_rss = || -> anyhow::Result<u64> { client_pids.iter().map(|&p| rss_kib_of(p)).sum() };
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (relay_before, clients_before) = (rss_kib_of(relay.pid)?, clients_rss()?);
    let (relay_fds, origin_fds) = (open_fds_of(relay.pid)?, open_fds_of(origin_pid)?);

    let started = Instant::now();
    let mut visitors = Vec::with_capacity(count);
    for i in 0..count {
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i / PER_SOURCE) as u8));
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(source, 0))?;
        let to = SocketAddr::from(([127, 0, 0, 1], public[i % public.len()]));
        let s: TcpStream = socket.connect(to).await.with_context(|| format!("visitor {i} connecting to {to}"))?;
        visitors.push(s);
    }
    wait_for("every connection reaching the origin", Duration::from_secs(180), || {
        Ok(open_fds_of(origin_pid)? >= origin_fds + count)
    })
    .await?;
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (relay_after, clients_after) = (rss_kib_of(relay.pid)?, clients_rss()?);
    let relay_open = open_fds_of(relay.pid)?;

    drop(visitors);
    wait_for("the origin's connections closing", Duration::from_secs(120), || {
        Ok(open_fds_of(origin_pid)? <= origin_fds)
    })
    .await?;
    wait_for("the relay's files closing", Duration::from_secs(30), || Ok(open_fds_of(relay.pid)? <= relay_fds))
        .await
        .ok();
    let relay_closed = open_fds_of(relay.pid)?;

    let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / count as f64;
    println!("{count} idle public connections through {clients} TCP tunnels on one relay (pid {})", relay.pid);
    println!("opened in:             {:.1} s, all through to the origin", opened.as_secs_f64());
    println!(
        "relay RSS:             {:.1} MiB before, {:.1} MiB with them: {:.2} KiB per connection (goal: at most 8)",
        relay_before as f64 / 1024.0,
        relay_after as f64 / 1024.0,
        per(relay_before, relay_after)
    );
    println!(
        "client RSS:            {:.1} MiB before, {:.1} MiB with them ({clients} processes): {:.2} KiB per connection",
        clients_before as f64 / 1024.0,
        clients_after as f64 / 1024.0,
        per(clients_before, clients_after)
    );
    println!("relay open files:      {relay_fds} before, {relay_open} with them, {relay_closed} after they closed");
    Ok(())
}
