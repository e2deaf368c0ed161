//! Minting and revoking from the command line and through the admin API go through one
//! validation (issue #13, D5 and D6): the same requests are refused with the same messages,
//! lifetimes mean the same thing, and the revocation list only takes token ids. Also the
//! client's first words when its relay cannot be reached yet.

mod support;

use std::process::Command;

use support::*;

/// `postern token mint` with `args`; stdout on success, stderr on failure.
fn mint(state: &std::path::Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(BIN)
        .args(["token", "mint", "--state-dir"])
        .arg(state)
        .args(args)
        .output()
        .expect("run postern token mint");
    let text = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// `POST /api/v1/tokens` with `body` as the admin; status and JSON answer.
fn api_mint(admin: &str, body: &str) -> (u16, serde_json::Value) {
    let out = curl(
        &format!("http://{admin}/api/v1/tokens"),
        &[
            "-H",
            "Authorization: Bearer root",
            "-H",
            "Content-Type: application/json",
            "-d",
            body,
            "-w",
            "\n%{http_code}",
        ],
    );
    let (json, code) = out.rsplit_once('\n').expect("status line");
    (code.trim().parse().expect("status"), serde_json::from_str(json).unwrap_or(serde_json::Value::Null))
}

#[test]
fn the_cli_and_the_api_refuse_the_same_requests_with_the_same_messages() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, _port) = start_relay(state.path(), &["--admin-token", "root"]);
    let admin = admin_addr(&relay);

    let cases: [(&[&str], &str); 6] = [
        (&["--subject", "ws", "--ports", "70000"], r#"{"subject":"ws","ports":["70000"]}"#),
        (&["--subject", "ws", "--ports", "abc"], r#"{"subject":"ws","ports":["abc"]}"#),
        (&["--subject", "ws", "--ports", "20-10"], r#"{"subject":"ws","ports":["20-10"]}"#),
        (&["--subject", "ws", "--ids", "ws 1"], r#"{"subject":"ws","ids":["ws 1"]}"#),
        (&["--subject", "ws\u{7}"], r#"{"subject":"ws\u0007"}"#),
        (&["--subject", "ws", "--ttl", "18446744073709551615s"], r#"{"subject":"ws","ttl_secs":18446744073709551615}"#),
    ];
    for (flags, body) in cases {
        let cli = mint(state.path(), flags).expect_err("the CLI minted it");
        let (status, v) = api_mint(&admin, body);
        assert_eq!(status, 400, "{body}: {v}");
        let api = v["error"]["message"].as_str().expect("message");
        assert!(cli.ends_with(api), "{flags:?}: the CLI said {cli:?}, the API {api:?}");
    }
    // Empty ids are refused by the API (the CLI has no way to send one).
    assert_eq!(api_mint(&admin, r#"{"subject":"ws","ids":[""]}"#).0, 400);
}

#[test]
fn lifetimes_default_to_thirty_days_and_never_is_asked_for() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, _port) = start_relay(state.path(), &["--admin-token", "root"]);
    let admin = admin_addr(&relay);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let month = 30 * 24 * 3600;
    let exp = |token: &str| postern_proto::token::peek(token).expect("claims").exp;

    // Default: 30 days on both.
    let cli = mint(state.path(), &["--subject", "ws"]).expect("mint");
    assert!(exp(&cli).is_some_and(|e| e.abs_diff(now + month) < 60), "{:?}", exp(&cli));
    let (status, v) = api_mint(&admin, r#"{"subject":"ws"}"#);
    assert_eq!(status, 201, "{v}");
    assert!(exp(v["token"].as_str().expect("token")).is_some_and(|e| e.abs_diff(now + month) < 60));
    assert!(v["expires"].is_string(), "{v}");

    // Never: only when asked for.
    assert_eq!(exp(&mint(state.path(), &["--subject", "ws", "--ttl", "never"]).expect("mint")), None);
    let (status, v) = api_mint(&admin, r#"{"subject":"ws","never_expires":true}"#);
    assert_eq!((status, v["expires"].is_null()), (201, true), "{v}");

    // Zero is neither "never" nor "already expired": it is refused, in every spelling.
    for ttl in ["0", "0s"] {
        let err = mint(state.path(), &["--subject", "ws", "--ttl", ttl]).expect_err(ttl);
        assert!(err.contains("ttl: must be above zero"), "{ttl}: {err}");
    }
    assert_eq!(api_mint(&admin, r#"{"subject":"ws","ttl_secs":0}"#).0, 400);
}

#[test]
fn only_token_ids_can_be_revoked() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, _port) = start_relay(state.path(), &["--admin-token", "root"]);
    let admin = admin_addr(&relay);
    let revoked = state.path().join("revoked.json");
    for id in ["not-a-token", "../../etc", &"a".repeat(5000)] {
        let out = curl(
            &format!("http://{admin}/api/v1/tokens/{id}"),
            &["-X", "DELETE", "-H", "Authorization: Bearer root", "-w", "\n%{http_code}"],
        );
        assert!(out.ends_with("404"), "{id}: {out}");
        let cli =
            Command::new(BIN).args(["token", "revoke", id, "--state-dir"]).arg(state.path()).output().expect("revoke");
        assert!(!cli.status.success());
    }
    assert!(!revoked.exists() || !std::fs::read_to_string(&revoked).expect("read").contains("not-a-token"));
    // A real id is taken by both.
    let out = curl(
        &format!("http://{admin}/api/v1/tokens/0123456789abcdef"),
        &["-X", "DELETE", "-H", "Authorization: Bearer root", "-w", "\n%{http_code}"],
    );
    assert!(out.ends_with("200"), "{out}");
}

#[test]
fn tokens_minted_by_the_cli_and_the_api_are_listed_with_their_state_and_never_their_secret() {
    let state = tempfile::tempdir().expect("tempdir");
    let (relay, _port) = start_relay(state.path(), &["--admin-token", "root"]);
    let admin = admin_addr(&relay);
    // One minted offline while the relay runs, one through the API, which is then revoked.
    let cli_token = mint(state.path(), &["--subject", "from-cli", "--ids", "cli-*"]).expect("cli mint");
    let (status, api) = api_mint(&admin, r#"{"subject":"from-api","ttl_secs":3600}"#);
    assert_eq!(status, 201, "{api}");
    let api_id = api["id"].as_str().expect("id").to_string();
    let out = curl(
        &format!("http://{admin}/api/v1/tokens/{api_id}"),
        &["-X", "DELETE", "-H", "Authorization: Bearer root", "-w", "\n%{http_code}"],
    );
    assert!(out.ends_with("200"), "{out}");

    let listed = curl(&format!("http://{admin}/api/v1/tokens"), &["-H", "Authorization: Bearer root"]);
    let v: serde_json::Value = serde_json::from_str(&listed).expect("json");
    let tokens = v["tokens"].as_array().expect("list");
    let subjects: Vec<&str> = tokens.iter().filter_map(|t| t["subject"].as_str()).collect();
    assert_eq!(subjects, ["from-api", "from-cli"], "newest first: {listed}");
    assert_eq!((tokens[0]["revoked"].as_bool(), tokens[1]["revoked"].as_bool()), (Some(true), Some(false)));
    assert_eq!(tokens[1]["ids"], serde_json::json!(["cli-*"]));
    let ledger = std::fs::read_to_string(state.path().join("tokens.json")).expect("ledger");
    for secret in [cli_token.as_str(), api["token"].as_str().expect("token")] {
        assert!(!listed.contains(secret) && !ledger.contains(secret), "a token string was recorded");
    }
    // Only the admin lists tokens.
    let (_, client) = api_mint(&admin, r#"{"subject":"plain"}"#);
    let bearer = format!("Authorization: Bearer {}", client["token"].as_str().expect("token"));
    let out = curl(&format!("http://{admin}/api/v1/tokens"), &["-H", &bearer, "-w", "\n%{http_code}"]);
    assert!(out.ends_with("403"), "{out}");
}

#[test]
fn a_client_that_cannot_reach_its_relay_yet_says_so_once() {
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let server = closed.to_string();
    let client = Proc::spawn(&["tcp", "5432", "--server", &server, "--max-backoff", "200ms", "--insecure"]);
    let line = client.line_with("waiting for the relay");
    assert!(line.contains(&server), "{line}");
    // One line, not one per attempt: several retries later there is no second one.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let more: Vec<String> = client.lines.try_iter().filter(|l| l.contains("waiting for the relay")).collect();
    assert!(more.is_empty(), "{more:?}");
}
