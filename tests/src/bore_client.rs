//! The real `bore` client (bore-cli 0.6.0 from crates.io) for tests of the bore-compatible
//! endpoint. It is found in `BORE_BIN`, `target/peers/bin`, `/tmp/peers/bin` or `PATH`; failing
//! that, it is installed with `cargo install bore-cli --root target/peers`, and tests skip with a
//! message when that is not possible.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::{TestRelay, PATIENCE};

/// Where the bore client is, installing it if need be.
pub fn bore_bin() -> Option<PathBuf> {
    static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
    BIN.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/peers");
        let mut candidates: Vec<PathBuf> = std::env::var_os("BORE_BIN").map(PathBuf::from).into_iter().collect();
        candidates.push(root.join("bin/bore"));
        candidates.push(PathBuf::from("/tmp/peers/bin/bore"));
        if let Some(path) = std::env::var_os("PATH") {
            candidates.extend(std::env::split_paths(&path).map(|d| d.join("bore")));
        }
        if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
            return Some(found);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        eprintln!("installing bore-cli from crates.io into {} ...", root.display());
        let ok = std::process::Command::new(cargo)
            .args(["install", "bore-cli", "--version", "0.6.0", "--locked", "--root"])
            .arg(&root)
            .status()
            .is_ok_and(|s| s.success());
        let bin = root.join("bin/bore");
        (ok && bin.is_file()).then_some(bin)
    })
    .clone()
}

/// The client, or `None` (and a SKIPPED line) when it cannot be had.
pub fn skip() -> Option<PathBuf> {
    let bin = bore_bin();
    if bin.is_none() {
        eprintln!("SKIPPED: the bore client (bore-cli) is not installed and `cargo install bore-cli` failed");
    }
    bin
}

/// `bore local <port> --to <relay> [--secret S]`, output merged into one stream of lines.
pub fn bore_local(bin: &PathBuf, relay: &TestRelay, port: u16, secret: Option<&str>) -> anyhow::Result<Child> {
    let to = relay.bore_addr.context("relay has no bore endpoint")?.ip().to_string();
    let mut cmd = Command::new(bin);
    cmd.args(["local", &port.to_string(), "--local-host", "127.0.0.1", "--to", &to]);
    if let Some(s) = secret {
        cmd.args(["--secret", s]);
    }
    cmd.env("NO_COLOR", "1").env_remove("BORE_SECRET").stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
    Ok(cmd.spawn()?)
}

/// Waits for "listening at <ip>:<port>" and returns the port.
pub async fn public_port(child: &mut Child) -> anyhow::Result<u16> {
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let found = tokio::time::timeout(PATIENCE, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(rest) = line.split("listening at ").nth(1) {
                let port = rest.trim().rsplit(':').next().unwrap_or_default();
                let digits: String = port.chars().take_while(char::is_ascii_digit).collect();
                return Ok(digits.parse::<u16>()?);
            }
        }
        anyhow::bail!("bore exited before it was listening")
    })
    .await
    .context("bore never said where it listens")??;
    // Keep draining its output so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(found)
}

/// Everything bore printed before exiting, and whether it failed.
pub async fn exit_output(child: Child) -> anyhow::Result<(bool, String)> {
    let out = tokio::time::timeout(PATIENCE, child.wait_with_output()).await.context("bore did not exit")??;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    Ok((!out.status.success(), text))
}
