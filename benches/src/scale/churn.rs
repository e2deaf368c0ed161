//! Churn: N agents connect and leave in a loop against one relay for a while; the relay's RSS
//! and open files are read before and after. frp's tracker has reports of a server growing to
//! 32 GB under reconnecting clients (frp#4802); a relay must come back to where it was.
//!
//! The baseline is read after one warm-up round (every agent connects once and leaves), so it
//! holds what the first round allocates for good (the registry's tables at their high-water
//! size, the allocator's pools) and the churn shows only what would grow with time. The empty
//! relay's figures are printed too.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_e2e::{open_fds_of, rss_kib_of};
use tokio_util::sync::CancellationToken;

use crate::agents::{agent_config, CONNECTING};
use crate::relay::Relay;

/// The relay keeps a gone agent's names this long; the harness waits it out before reading.
const LEASE_GRACE: Duration = Duration::from_secs(5);

/// One agent's life: connect, wait until its tunnel is up, leave (unregister). Returns whether
/// it came up within 60 s.
async fn one_life(relay: &Relay, i: usize) -> bool {
    let (tx, mut rx) = tokio::sync::watch::channel(postern_client::AgentState::default());
    let stop = CancellationToken::new();
    let agent = tokio::spawn(postern_client::run(agent_config(relay, i), tx, stop.clone()));
    let up =
        tokio::time::timeout(Duration::from_secs(60), rx.wait_for(|s| s.connected >= 1)).await.is_ok_and(|r| r.is_ok());
    stop.cancel();
    let _ = agent.await;
    up
}

/// Runs every agent's life over and over until `until`, each agent one at a time and at most
/// [`CONNECTING`] agents connecting at once. Returns the lives lived and the ones that failed.
async fn churn(relay: &Arc<Relay>, count: usize, until: Option<Instant>) -> (u64, u64) {
    let (lives, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let gate = Arc::new(tokio::sync::Semaphore::new(CONNECTING));
    let mut all = tokio::task::JoinSet::new();
    for i in 0..count {
        let (relay, lives, failed, gate) = (relay.clone(), lives.clone(), failed.clone(), gate.clone());
        all.spawn(async move {
            loop {
                let Ok(_permit) = gate.acquire().await else { return };
                let counter = if one_life(&relay, i).await { &lives } else { &failed };
                counter.fetch_add(1, Ordering::Relaxed);
                if until.is_none_or(|t| Instant::now() >= t) {
                    return;
                }
            }
        });
    }
    while all.join_next().await.is_some() {}
    (lives.load(Ordering::Relaxed), failed.load(Ordering::Relaxed))
}

/// Reads the relay's RSS (KiB) and open files once its leases have run out.
async fn settled(relay: &Relay) -> anyhow::Result<(u64, usize)> {
    tokio::time::sleep(LEASE_GRACE + Duration::from_secs(5)).await;
    Ok((rss_kib_of(relay.pid)?, open_fds_of(relay.pid)?))
}

/// Runs the measurement: `count` agents for `secs` seconds.
pub async fn run(binary: &str, count: usize, secs: u64) -> anyhow::Result<()> {
    let grace = format!("{}s", LEASE_GRACE.as_secs());
    let relay = Arc::new(Relay::start(binary, count, &["--lease-grace", &grace])?);
    let (empty_rss, empty_fds) = settled(&relay).await?;
    let (warm, warm_failed) = churn(&relay, count, None).await;
    anyhow::ensure!(warm_failed == 0, "{warm_failed} of {} agents never came up in the warm-up", warm + warm_failed);
    let (base_rss, base_fds) = settled(&relay).await?;
    let started = Instant::now();
    let (lives, failed) = churn(&relay, count, Some(started + Duration::from_secs(secs))).await;
    let took = started.elapsed();
    let (after_rss, after_fds) = settled(&relay).await?;

    println!("churn: {count} agents connecting and leaving for {secs} s on one relay (pid {})", relay.pid);
    println!(
        "sessions:              {lives} in {:.1} s ({:.0} per second), {failed} that never came up",
        took.as_secs_f64(),
        lives as f64 / took.as_secs_f64()
    );
    let change = (after_rss as f64 - base_rss as f64) / base_rss as f64 * 100.0;
    println!(
        "relay RSS:             {:.1} MiB empty, {:.1} MiB after a warm-up round, {:.1} MiB after the churn: {change:+.1} % (goal: within 10 %)",
        empty_rss as f64 / 1024.0,
        base_rss as f64 / 1024.0,
        after_rss as f64 / 1024.0,
    );
    println!(
        "relay open files:      {empty_fds} empty, {base_fds} after the warm-up, {after_fds} after the churn (goal: exactly back)"
    );
    Ok(())
}
