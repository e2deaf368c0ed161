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
    assert_eq!(parse_yaml(&repo().join("deploy/cluster/compose.yaml")), 1);
    assert_eq!(parse_yaml(&repo().join("deploy/kubernetes/cluster.yaml")), 7);
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

fn is_root() -> bool {
    let uid = Command::new("id").arg("-u").output().expect("id");
    String::from_utf8_lossy(&uid.stdout).trim() == "0"
}

/// A state directory owned by `uid`, under a directory it may enter.
fn state_dir_for(uid: u32) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let state = dir.path().join("state");
    std::fs::create_dir(&state).expect("mkdir");
    assert!(Command::new("chown").arg(format!("{uid}:{uid}")).arg(&state).status().expect("chown").success());
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).expect("chmod");
    (dir, state)
}

/// Runs `postern ARGS` as `uid` with only `env` (and PATH) and waits until the relay serves.
fn start_relay_as(uid: u32, args: &[String], env: &[(String, String)]) -> std::process::Child {
    let mut relay = Command::new("setpriv")
        .args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into(), "--".into()])
        .arg(BIN)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .envs(env.iter().map(|(k, v)| (k, v)))
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
        assert!(n > 0 && Instant::now() < deadline, "relay did not start as uid {uid}: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Keep draining its output so it never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    relay
}

#[test]
fn relay_runs_as_nobody_without_home() {
    if !is_root() {
        eprintln!("not root: cannot switch users; skipping");
        return;
    }
    let (_dir, state) = state_dir_for(65534);
    let args: Vec<String> = postern_e2e::EPHEMERAL_SERVER
        .iter()
        .map(|s| s.to_string())
        .chain(["--state-dir".to_string(), state.display().to_string()])
        .collect();
    let mut relay = start_relay_as(65534, &args, &[]);
    relay.kill().expect("kill");
    let _ = relay.wait();
    // Its state went where it was told, owned by the unprivileged user.
    for file in ["ca.pem", "ca-key.pem", "tls-key.pem", "token.key"] {
        let meta = std::fs::metadata(state.join(file)).unwrap_or_else(|_| panic!("{file} missing"));
        assert_eq!(std::os::unix::fs::MetadataExt::uid(&meta), 65534, "{file} owner");
    }
}

/// The final stage of the Dockerfile: each instruction (continuation lines joined, comments
/// dropped) as (keyword, rest).
fn final_stage(text: &str) -> Vec<(String, String)> {
    let joined = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
    let joined = joined.replace("\\\n", " ");
    let mut stage = Vec::new();
    for line in joined.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (kw, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let kw = kw.to_ascii_uppercase();
        if kw == "FROM" {
            stage.clear();
        }
        stage.push((kw, rest.trim().to_string()));
    }
    stage
}

fn json_args(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not an exec-form JSON array: {s}: {e}"))
}

#[test]
fn dockerfile_runs_as_its_user_and_passes_its_own_healthcheck() {
    let text = std::fs::read_to_string(repo().join("deploy/docker/Dockerfile")).expect("Dockerfile");
    let stage = final_stage(&text);
    let get = |kw: &str| stage.iter().rev().find(|(k, _)| k == kw).map(|(_, v)| v.clone());
    let user = get("USER").expect("the image sets USER");
    let uid: u32 = user.split(':').next().and_then(|u| u.parse().ok()).expect("USER is a numeric uid");
    assert_ne!(uid, 0, "the image must not run as root");
    let entrypoint = json_args(&get("ENTRYPOINT").expect("ENTRYPOINT"));
    assert_eq!(entrypoint, ["postern"]);
    let cmd = json_args(&get("CMD").expect("CMD"));
    let health = get("HEALTHCHECK").expect("HEALTHCHECK");
    let health = json_args(&health[health.find("CMD").expect("HEALTHCHECK CMD") + 3..]);
    assert_eq!(health[0], "postern");
    let env: Vec<(String, String)> = stage
        .iter()
        .filter(|(k, _)| k == "ENV")
        .filter_map(|(_, v)| v.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();

    // EXPOSE covers every listener the command opens, and the default TCP tunnel range.
    let exposed: Vec<String> = stage
        .iter()
        .filter(|(k, _)| k == "EXPOSE")
        .flat_map(|(_, v)| v.split_whitespace().map(str::to_string))
        .collect();
    for flag in ["--control-addr", "--http-addr", "--https-addr"] {
        let i = cmd.iter().position(|a| a == flag).unwrap_or_else(|| panic!("CMD sets {flag}"));
        let port = cmd[i + 1].rsplit(':').next().expect("port").to_string();
        assert!(exposed.contains(&port), "{flag} port {port} is not in EXPOSE {exposed:?}");
    }
    let help = Command::new(BIN).args(["server", "--help"]).output().expect("help");
    let help = String::from_utf8_lossy(&help.stdout);
    let range = help
        .split("--tcp-ports")
        .nth(1)
        .and_then(|h| h.split("[default: ").nth(1))
        .and_then(|h| h.split(']').next())
        .expect("the default --tcp-ports");
    assert!(exposed.iter().any(|p| p == range), "the default TCP range {range} is not in EXPOSE {exposed:?}");

    if !is_root() {
        eprintln!("not root: cannot run the image's command as its user; skipping that part");
        return;
    }
    // The image's command, as its user, with its ENV (the state dir moved to a temporary one),
    // on ephemeral loopback ports, and a token as the image's usage line passes one.
    let (_dir, state) = state_dir_for(uid);
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").to_string();
    let args: Vec<String> = cmd
        .iter()
        .map(|a| if a.starts_with("0.0.0.0:") { "127.0.0.1:0".to_string() } else { a.clone() })
        .map(|a| if a == "0.0.0.0" { "127.0.0.1".to_string() } else { a })
        .chain(["--tcp-ports".to_string(), "0".to_string()])
        .collect();
    let mut env: Vec<(String, String)> = env
        .into_iter()
        .map(|(k, v)| if k == "POSTERN_STATE_DIR" { (k, state.display().to_string()) } else { (k, v) })
        .collect();
    assert!(env.iter().any(|(k, _)| k == "POSTERN_STATE_DIR"), "the image sets POSTERN_STATE_DIR");
    env.push(("POSTERN_TOKEN".into(), "a-long-shared-secret-for-the-test".into()));
    env.push(("POSTERN_ADMIN_ADDR".into(), admin.clone()));
    let mut relay = start_relay_as(uid, &args, &env);
    // The image's own HEALTHCHECK command, with the container's environment, retried as Docker
    // does during the start period: readiness follows the listeners a moment after start.
    let deadline = Instant::now() + Duration::from_secs(20);
    let (ok, text) = loop {
        let out = Command::new(BIN)
            .args(&health[1..])
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("healthcheck");
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if out.status.success() || Instant::now() > deadline {
            break (out.status.success(), text);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    relay.kill().expect("kill");
    let _ = relay.wait();
    assert!(ok, "the image's HEALTHCHECK failed: {text}");
    assert!(text.contains("200 OK"), "{text}");
    assert!(state.join("token.key").exists(), "state did not go to POSTERN_STATE_DIR");
}
