//! An operator policy as the config file writes it (`[[policy]]`), turned into a [`Policy`]
//! once its addresses, URL and header names are checked.
//!
//! ```toml
//! [[policy]]
//! ids = "internal-*"
//! allow_ips = ["10.0.0.0/8"]
//! forward_auth = "http://127.0.0.1:4181/verify"
//! forward_auth_headers = ["Remote-User"]
//! ```

use serde::Deserialize;

use super::{parse_nets, ForwardAuth, Policy};

/// One `[[policy]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Tunnel ids it applies to (`*` globs).
    pub ids: String,
    /// Allowed source addresses or networks; empty allows all.
    #[serde(default)]
    pub allow_ips: Vec<String>,
    /// The forward-auth service's URL.
    pub forward_auth: Option<String>,
    /// Headers copied from the forward-auth service's 2xx answer.
    #[serde(default)]
    pub forward_auth_headers: Vec<String>,
}

impl PolicySpec {
    /// Checks the addresses, URL and header names.
    pub fn to_policy(&self) -> Result<Policy, String> {
        let ids = &self.ids;
        let allow_ips = parse_nets(&self.allow_ips).map_err(|e| format!("policy {ids:?}: {e}"))?;
        let forward_auth = match &self.forward_auth {
            None => None,
            Some(url) => Some(ForwardAuth {
                url: url.parse().map_err(|_| format!("policy {ids:?}: forward_auth {url:?} is not a URL"))?,
                copy_headers: self
                    .forward_auth_headers
                    .iter()
                    .map(|h| {
                        http::HeaderName::from_bytes(h.as_bytes())
                            .map_err(|_| format!("policy {ids:?}: forward_auth_headers: {h:?} is not a header name"))
                    })
                    .collect::<Result<_, _>>()?,
            }),
        };
        Ok(Policy { ids: ids.clone(), allow_ips, forward_auth })
    }
}
