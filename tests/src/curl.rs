//! curl, as an orchestrator or a visitor runs it: the status and body of one request.

use anyhow::Context;

use crate::TestRelay;

/// `curl` with `args`: the status and the body.
pub async fn curl(args: &[&str]) -> anyhow::Result<(u16, String)> {
    let out = tokio::process::Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "20", "--write-out", "\n%{http_code}"])
        .args(args)
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "curl failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout)?;
    let (body, code) = text.rsplit_once('\n').context("no status code")?;
    Ok((code.parse()?, body.to_string()))
}

/// A JSON API through curl: `method url [json body]`, with bearer `token` if any.
pub async fn curl_json(
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-X", method, url];
    if let Some(a) = &auth {
        args.extend(["-H", a]);
    }
    if let Some(b) = body {
        args.extend(["-H", "Content-Type: application/json", "-d", b]);
    }
    let (code, text) = curl(&args).await?;
    let json = serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))?;
    Ok((code, json))
}

/// GET `url`, an `https://<name>.localhost:<port>/…` tunnel URL, through `relay`'s edge,
/// trusting its CA.
pub async fn visit(relay: &TestRelay, url: &str) -> anyhow::Result<(u16, String)> {
    let host = url.trim_start_matches("https://").split('/').next().unwrap_or_default().to_string();
    let resolve = format!("{host}:127.0.0.1");
    let ca = relay.ca.to_string_lossy().to_string();
    curl(&["--cacert", &ca, "--resolve", &resolve, url]).await
}

/// The loopback address of a `tcp://<host>:<port>` tunnel URL.
pub fn tcp_addr(url: &str) -> anyhow::Result<std::net::SocketAddr> {
    let port: u16 = url.rsplit(':').next().context("no port")?.parse()?;
    Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
}
