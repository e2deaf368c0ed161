//! The relay process the scale harness measures, and its CPU time from `/proc` (resident
//! memory and open files come from `postern_e2e`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use postern_e2e::pebble::free_port;

/// Raises this process's soft limit on open files to the hard limit (its children inherit it)
/// and returns it.
pub fn raise_open_files() -> anyhow::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX).context("raising the open files limit")
}

/// CPU time of process `pid` (user + system), in clock ticks.
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f.get(11).context("utime")?.parse::<u64>()? + f.get(12).context("stime")?.parse::<u64>()?)
}

/// Share of one core process `pid` used over `span`.
pub async fn cpu_share(pid: u32, span: Duration) -> anyhow::Result<f64> {
    let before = cpu_ticks(pid)?;
    tokio::time::sleep(span).await;
    let ticks = cpu_ticks(pid)? - before;
    // Linux reports /proc times in USER_HZ, 100 per second on every supported architecture.
    Ok(ticks as f64 / 100.0 / span.as_secs_f64())
}

/// Starts `cmd` with both outputs drained into a thread (so it never blocks on a full pipe)
/// and waits up to 30 s for a line matching `ready`, which it returns.
pub fn start_and_wait(mut cmd: Command, ready: fn(&str) -> bool) -> anyhow::Result<(Child, String)> {
    let shown = format!("{cmd:?}");
    let mut child =
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().with_context(|| format!("starting {shown}"))?;
    let (seen_tx, seen_rx) = std::sync::mpsc::channel();
    let out = child.stdout.take().context("stdout")?;
    let err = child.stderr.take().context("stderr")?;
    for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
        let seen = seen_tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                if ready(&line) {
                    let _ = seen.send(line);
                }
            }
        });
    }
    match seen_rx.recv_timeout(Duration::from_secs(30)) {
        Ok(line) => Ok((child, line)),
        Err(_) => {
            let _ = child.kill();
            anyhow::bail!("{shown} did not get ready within 30 s")
        }
    }
}

/// One release relay on loopback: control and plain-HTTP listeners, no admin or HTTPS, public
/// TCP ports chosen by the kernel, its own state directory. Killed when dropped.
#[derive(Debug)]
pub struct Relay {
    child: Child,
    /// Its process id.
    pub pid: u32,
    /// Control port (agents connect here).
    pub ctrl: u16,
    /// Plain-HTTP public port.
    pub http: u16,
    state: PathBuf,
}

impl Relay {
    /// Starts `binary server` with room for `agents` agents, plus `extra` flags.
    pub fn start(binary: &str, agents: usize, extra: &[&str]) -> anyhow::Result<Relay> {
        let state = std::env::temp_dir().join(format!("postern-scale-{}-{}", std::process::id(), free_port()?));
        let (ctrl, http) = (free_port()?, free_port()?);
        let mut cmd = Command::new(binary);
        cmd.args(["server", "--control-addr", &format!("127.0.0.1:{ctrl}"), "--http-addr"])
            .arg(format!("127.0.0.1:{http}"))
            .args(["--https-addr", "off", "--admin-addr", "off", "--tcp-ports", "0", "--log", "warn"])
            .args(["--max-agents", &(agents + 100).to_string(), "--max-connections-per-ip", "1000000"])
            .args(extra)
            .arg("--state-dir")
            .arg(&state);
        let (child, _) = start_and_wait(cmd, |l| l.contains("agents connect to"))
            .context("starting the relay (build it with cargo build --release -p postern)")?;
        Ok(Relay { pid: child.id(), child, ctrl, http, state })
    }

    /// The CA that signed the relay's certificate.
    pub fn ca(&self) -> PathBuf {
        self.state.join("ca.pem")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.state);
    }
}
