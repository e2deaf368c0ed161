//! The body that asks for a tunnel through an API, `{kind, port, id?, ...}`: the relay's remote
//! management (`POST /api/v1/agents/{id}/tunnels`) and the client's local control API
//! (`POST /api/v1/tunnels`) read the same shape, and turn it into a [`TunnelSpec`] here.

use serde::Deserialize;

use crate::access::Access;
use crate::{TunnelKind, TunnelSpec};

/// A tunnel asked for through an API. Unknown fields are refused, so a misspelt option is an
/// error rather than silently ignored.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunnelRequest {
    /// `http` or `tcp`.
    pub kind: TunnelKind,
    /// The local port on the agent's machine.
    pub port: u16,
    /// For http: the `<id>` of the public host name (default: the client id).
    #[serde(default)]
    pub id: Option<String>,
    /// For tcp: a specific public port, if the token allows it.
    #[serde(default)]
    pub remote_port: Option<u16>,
    /// For http: a custom domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// For http: capture requests in the relay's request inspector.
    #[serde(default)]
    pub inspect: bool,
    /// Only these source addresses (IPs or CIDRs) may connect.
    #[serde(default)]
    pub allow_ip: Vec<String>,
    /// For http: serve this path prefix of the bare `<id>` host (and of the custom domain).
    #[serde(default)]
    pub path: Option<String>,
    /// For http with a path: the local service sees the path without the prefix.
    #[serde(default)]
    pub strip_prefix: bool,
}

/// Most `allow_ip` entries one request may carry.
pub const MAX_ALLOW_IPS: usize = 64;

impl TunnelRequest {
    /// The tunnel spec, or why the request cannot be one.
    pub fn spec(&self) -> Result<TunnelSpec, String> {
        if self.port == 0 {
            return Err("port must be 1-65535".into());
        }
        if self.kind == TunnelKind::Tcp
            && (self.id.is_some() || self.domain.is_some() || self.inspect || self.path.is_some())
        {
            return Err("id, domain, inspect and path are for http tunnels".into());
        }
        if self.strip_prefix && self.path.is_none() {
            return Err("strip_prefix needs a path".into());
        }
        let path = self.path.as_deref().map(crate::route::path_prefix).transpose()?;
        if self.kind == TunnelKind::Http && self.remote_port.is_some() {
            return Err("remote_port is for tcp tunnels".into());
        }
        if self.allow_ip.len() > MAX_ALLOW_IPS {
            return Err(format!("at most {MAX_ALLOW_IPS} allow_ip entries"));
        }
        let access =
            (!self.allow_ip.is_empty()).then(|| Access { allow_ips: self.allow_ip.clone(), ..Access::default() });
        Ok(TunnelSpec {
            kind: self.kind,
            local_port: self.port,
            remote_port: self.remote_port,
            id: self.id.clone(),
            access,
            domain: self.domain.clone(),
            inspect: self.inspect,
            path,
            strip_prefix: self.strip_prefix,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<TunnelSpec, String> {
        serde_json::from_str::<TunnelRequest>(json).map_err(|e| e.to_string())?.spec()
    }

    #[test]
    fn reads_the_api_shape() {
        let s = parse(r#"{"kind":"http","port":8080,"id":"ws1"}"#).unwrap();
        assert_eq!((s.kind, s.local_port, s.id.as_deref()), (TunnelKind::Http, 8080, Some("ws1")));
        let s = parse(r#"{"kind":"tcp","port":5432,"remote_port":20001,"allow_ip":["10.0.0.0/8"]}"#).unwrap();
        assert_eq!(s.remote_port, Some(20001));
        assert_eq!(s.access.unwrap().allow_ips, ["10.0.0.0/8"]);
    }

    #[test]
    fn refuses_what_cannot_be_a_tunnel() {
        assert!(parse(r#"{"kind":"http","port":0}"#).is_err());
        assert!(parse(r#"{"kind":"udp","port":53}"#).is_err());
        assert!(parse(r#"{"kind":"http","port":80,"colour":"red"}"#).is_err());
        assert!(parse(r#"{"kind":"tcp","port":22,"id":"x"}"#).is_err());
        assert!(parse(r#"{"kind":"http","port":80,"remote_port":1}"#).is_err());
        assert!(parse(r#"{"kind":"http","port":70000}"#).is_err());
        assert!(parse(r#"{"kind":"tcp","port":22,"path":"/x"}"#).is_err());
        assert!(parse(r#"{"kind":"http","port":80,"strip_prefix":true}"#).is_err());
        assert!(parse(r#"{"kind":"http","port":80,"path":"/a/../b"}"#).is_err());
        let s = parse(r#"{"kind":"http","port":80,"path":"/api/","strip_prefix":true}"#).unwrap();
        assert_eq!((s.path.as_deref(), s.strip_prefix), (Some("/api"), true));
    }
}
