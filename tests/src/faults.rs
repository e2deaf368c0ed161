//! Fault injection: a TCP proxy between a client and the relay (or between two relays, or a
//! relay and Redis) that can black-hole traffic (stop forwarding but keep the sockets open, as a
//! dead network or a paused process does), cut single connections, or sever the link (cut every
//! connection and refuse new ones until healed).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A running proxy.
#[derive(Debug, Clone)]
pub struct FaultyProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    stalled: Arc<watch::Sender<bool>>,
    conns: Arc<Mutex<Vec<CancellationToken>>>,
    severed: Arc<std::sync::atomic::AtomicBool>,
    target: Arc<Mutex<SocketAddr>>,
}

impl FaultyProxy {
    /// Proxies `127.0.0.1:<ephemeral>` to `target`.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let stalled = Arc::new(watch::Sender::new(false));
        let conns: Arc<Mutex<Vec<CancellationToken>>> = Arc::default();
        let severed: Arc<std::sync::atomic::AtomicBool> = Arc::default();
        let target = Arc::new(Mutex::new(target));
        let (st, cs, sv, tg) = (stalled.clone(), conns.clone(), severed.clone(), target.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if sv.load(std::sync::atomic::Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let to = *tg.lock().unwrap_or_else(|p| p.into_inner());
                let Ok(server) = TcpStream::connect(to).await else { continue };
                let cut = CancellationToken::new();
                cs.lock().unwrap_or_else(|p| p.into_inner()).push(cut.clone());
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (r, w) in [(cr, sw), (sr, cw)] {
                    tokio::spawn(pipe(r, w, st.subscribe(), cut.clone()));
                }
            }
        });
        Ok(Self { addr, stalled, conns, severed, target })
    }

    /// Sends new connections to `target` from now on.
    pub fn retarget(&self, target: SocketAddr) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = target;
    }

    /// Cuts every connection and refuses new ones (closing them at once) until [`Self::heal`].
    pub fn sever(&self) {
        self.severed.store(true, std::sync::atomic::Ordering::SeqCst);
        for c in self.conns.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            c.cancel();
        }
    }

    /// Lets connections through again.
    pub fn heal(&self) {
        self.severed.store(false, std::sync::atomic::Ordering::SeqCst);
    }

    /// Stops forwarding anything, keeping every socket open.
    pub fn stall(&self) {
        self.stalled.send_replace(true);
    }

    /// Forwards again.
    pub fn resume(&self) {
        self.stalled.send_replace(false);
    }

    /// Closes the `i`-th proxied connection (in order of arrival) on both sides.
    pub fn cut(&self, i: usize) {
        if let Some(c) = self.conns.lock().unwrap_or_else(|p| p.into_inner()).get(i) {
            c.cancel();
        }
    }

    /// Connections proxied so far.
    pub fn connections(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Waits until the stall flag equals `want`; false when the proxy is gone.
async fn until(rx: &mut watch::Receiver<bool>, want: bool) -> bool {
    rx.wait_for(|s| *s == want).await.is_ok()
}

async fn pipe(mut r: OwnedReadHalf, mut w: OwnedWriteHalf, mut stalled: watch::Receiver<bool>, cut: CancellationToken) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        tokio::select! {
            _ = cut.cancelled() => return,
            ok = until(&mut stalled, false) => if !ok { return },
        }
        let mut watcher = stalled.clone();
        let n = tokio::select! {
            _ = cut.cancelled() => return,
            // A stall that starts while we wait for bytes holds them back too.
            _ = until(&mut watcher, true) => continue,
            n = r.read(&mut buf) => match n {
                Ok(0) | Err(_) => {
                    let _ = w.shutdown().await;
                    return;
                }
                Ok(n) => n,
            },
        };
        tokio::select! {
            _ = cut.cancelled() => return,
            ok = until(&mut stalled, false) => if !ok { return },
        }
        if w.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
