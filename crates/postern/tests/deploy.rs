//! The deployment files parse and lint, and the relay runs as a non-root user with an explicit
//! state directory and no `$HOME` (what the systemd unit, the container and the pod do).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_postern");

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn parse_yaml(file: &Path) -> usize {
    let out = Command::new("python3")
        .args(["-c", "import sys, yaml; print(len([d for d in yaml.safe_load_all(open(sys.argv[1])) if d]))"])
        .arg(file)
        .output()
        .expect("python3 with PyYAML (tests/run.sh installs python3-yaml)");
    assert!(out.status.success(), "{}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("document count")
}

#[test]
fn compose_and_kubernetes_files_parse() {
    assert_eq!(parse_yaml(&repo().join("deploy/compose.yaml")), 1);
    assert_eq!(parse_yaml(&repo().join("deploy/kubernetes/relay.yaml")), 5);
    assert_eq!(parse_yaml(&repo().join("deploy/kubernetes/workload-with-client.yaml")), 2);
}

#[test]
fn systemd_unit_verifies() {
    if Command::new("systemd-analyze").arg("--version").output().is_err() {
        eprintln!("systemd-analyze is not installed; skipping the unit lint");
        return;
    }
    // Point ExecStart at the binary under test so the check can resolve it.
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = std::fs::read_to_string(repo().join("deploy/systemd/postern.service")).expect("unit");
    let unit = unit.replace("/usr/local/bin/postern", BIN);
    let path = dir.path().join("postern.service");
    std::fs::write(&path, unit).expect("write");
    let out = Command::new("systemd-analyze").arg("verify").arg(&path).output().expect("systemd-analyze");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // Lines about the unit itself; the host's own units are not ours to judge.
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("postern.service")).collect();
    assert!(ours.is_empty(), "systemd-analyze found problems:\n{text}");
}

#[test]
fn relay_runs_as_nobody_without_home() {
    let uid = Command::new("id").arg("-u").output().expect("id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        eprintln!("not root: cannot switch users; skipping");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    assert!(Command::new("chown").args(["65534:65534"]).arg(&state).status().expect("chown").success());
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    let mut relay = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--", BIN, "server"])
        .args(["--control-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--https-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0", "--tcp-ports", "0", "--state-dir"])
        .arg(&state)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("setpriv");
    let mut out = relay.stdout.take().expect("stdout");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = String::new();
    while !seen.contains("agents connect to") {
        use std::io::Read;
        let mut buf = [0u8; 1024];
        let n = out.read(&mut buf).expect("read");
        assert!(n > 0 && Instant::now() < deadline, "relay did not start as nobody: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    relay.kill().expect("kill");
    let _ = relay.wait();
    // Its state went where it was told, owned by the unprivileged user.
    for file in ["ca.pem", "ca-key.pem", "tls-key.pem", "token.key"] {
        let meta = std::fs::metadata(state.join(file)).unwrap_or_else(|_| panic!("{file} missing"));
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534, "{file} owner");
    }
}
