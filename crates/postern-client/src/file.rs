//! The client config file (`postern start --config postern-client.toml`): several tunnels of
//! both kinds from one process. `POSTERN_SERVER`, `POSTERN_TOKEN`, `POSTERN_CA`,
//! `POSTERN_CLIENT_ID` and `POSTERN_ALLOW_REMOTE` override the file, so the secret can stay out of it. Unknown keys are
//! errors.
//!
//! ```toml
//! server = "tunnel.example.com:7000"
//! client_id = "ws-123"
//! host_header = "preserve"             # or "rewrite", or a fixed value
//! allow_remote = "3000-3999"           # the relay's API may open tunnels to these ports
//!
//! [[tunnel]]
//! kind = "http"
//! port = 3000
//! basic_auth = ["alice:secret"]
//! allow_emails = ["*@example.com"]    # visitors sign in (the relay's OIDC provider)
//!
//! [[tunnel]]
//! kind = "tcp"
//! port = 5432
//! allow_ips = ["10.0.0.0/8"]
//! ```

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_proto::{TunnelKind, TunnelSpec};
use serde::Deserialize;

use crate::cli::{access_rules, machine_id, AccessOptions, ClientArgs, HttpOptions, SetupError};
use crate::config::AgentConfig;
use crate::scale::Connections;

/// A client config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientFile {
    server: Option<String>,
    token: Option<String>,
    ca: Option<PathBuf>,
    #[serde(default)]
    insecure: bool,
    client_id: Option<String>,
    local_host: Option<String>,
    host_header: Option<String>,
    #[serde(default)]
    h2c: bool,
    status: Option<SocketAddr>,
    status_token: Option<String>,
    connections: Option<Connections>,
    allow_remote: Option<String>,
    #[serde(rename = "tunnel", default)]
    tunnels: Vec<FileTunnel>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileTunnel {
    kind: TunnelKind,
    port: u16,
    id: Option<String>,
    remote_port: Option<u16>,
    /// Custom domain (http tunnels).
    domain: Option<String>,
    #[serde(default)]
    basic_auth: Vec<String>,
    auth_header: Option<String>,
    bearer: Option<String>,
    #[serde(default)]
    allow_ips: Vec<String>,
    /// Visitors sign in; these addresses get in (http tunnels).
    #[serde(default)]
    allow_emails: Vec<String>,
    /// Visitors sign in; only granted addresses, share links and service tokens get in.
    #[serde(default)]
    login: bool,
    /// Capture requests in the relay's inspector (http tunnels).
    #[serde(default)]
    inspect: bool,
    /// Serve this path prefix of the shared `<id>` host (http tunnels).
    path: Option<String>,
    /// The local service sees the path without the prefix.
    #[serde(default)]
    strip_prefix: bool,
}

/// Reads `path` into an agent config, and the client settings it gave (the `status` address,
/// `insecure`); `env` reads the overriding variables.
pub fn load(path: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<(AgentConfig, ClientArgs), SetupError> {
    let fail = |reason: String| SetupError::File { path: path.to_path_buf(), reason };
    let text = std::fs::read_to_string(path).map_err(|e| fail(e.to_string()))?;
    let file: ClientFile = toml::from_str(&text).map_err(|e| fail(e.to_string()))?;
    let allow_remote = env("POSTERN_ALLOW_REMOTE")
        .filter(|v| !v.is_empty())
        .or(file.allow_remote)
        .map(|v| v.parse().map_err(|e| fail(format!("allow_remote: {e}"))))
        .transpose()?;
    if file.tunnels.is_empty() && allow_remote.is_none() && file.status.is_none() {
        return Err(fail("lists no [[tunnel]], and has neither allow_remote nor status to open one later".into()));
    }
    let env = |k: &str| env(k).filter(|v| !v.is_empty());
    let client = ClientArgs {
        server: env("POSTERN_SERVER")
            .or(file.server)
            .unwrap_or_else(|| "localhost:7000".into())
            .split(',')
            .map(str::to_string)
            .collect(),
        token: env("POSTERN_TOKEN").or(file.token).unwrap_or_default(),
        ca: env("POSTERN_CA").map(PathBuf::from).or(file.ca).into_iter().collect(),
        insecure: file.insecure,
        client_id: env("POSTERN_CLIENT_ID").or(file.client_id),
        local_host: file.local_host.unwrap_or_else(|| "localhost".into()),
        max_backoff: Duration::from_secs(30),
        status: file.status,
        status_token: env("POSTERN_STATUS_TOKEN").or(file.status_token),
        connections: file.connections.unwrap_or_default(),
        allow_remote,
    };
    let default_id = client.default_id().unwrap_or_else(machine_id);
    let mut tunnels = Vec::new();
    for t in file.tunnels {
        if t.port == 0 {
            return Err(fail("a [[tunnel]] has port 0; give the port the local service listens on".into()));
        }
        if t.strip_prefix && t.path.is_none() {
            return Err(fail("a [[tunnel]] has strip_prefix without a path".into()));
        }
        let path = t.path.as_deref().map(postern_proto::route::path_prefix).transpose().map_err(fail)?;
        let access = access_rules(&AccessOptions {
            basic_auth: t.basic_auth,
            auth_header: t.auth_header,
            bearer: t.bearer,
            allow_ip: t.allow_ips,
            allow_email: t.allow_emails,
            login: t.login,
        })?;
        tunnels.push(TunnelSpec {
            kind: t.kind,
            local_port: t.port,
            remote_port: t.remote_port,
            id: match t.kind {
                TunnelKind::Http => Some(t.id.unwrap_or_else(|| default_id.clone())),
                TunnelKind::Tcp => None,
            },
            access,
            domain: t.domain,
            inspect: t.inspect,
            path,
            strip_prefix: t.strip_prefix,
        });
    }
    let http = HttpOptions { host_header: file.host_header.unwrap_or_else(|| "preserve".into()), h2c: file.h2c };
    let mut cfg = client.agent_config(tunnels, &http)?;
    cfg.client_id.get_or_insert(default_id);
    Ok((cfg, client))
}
