//! An operator policy as the config file writes it (`[[policy]]`), turned into a [`Policy`]
//! once its addresses, URL and header names are checked.
//!
//! ```toml
//! [[policy]]
//! ids = "internal-*"
//! allow_ips = ["10.0.0.0/8"]
//! forward_auth = "http://127.0.0.1:4181/verify"
//! forward_auth_headers = ["Remote-User"]
//!
//! [[policy]]
//! ids = "team-*"
//! emails = ["cto@example.org"]      # sign-in required: any one of these lists lets a person in
//! email_domains = ["example.com"]
//! groups = ["engineering"]
//! ```

use serde::Deserialize;

use super::{parse_nets, ForwardAuth, Policy, PolicyLogin};

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
    /// Sign-in required; these addresses (`*` globs) may enter.
    #[serde(default)]
    pub emails: Vec<String>,
    /// Sign-in required; addresses at these domains may enter.
    #[serde(default)]
    pub email_domains: Vec<String>,
    /// Sign-in required; members of these groups (the provider's `groups` claim) may enter.
    #[serde(default)]
    pub groups: Vec<String>,
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
        if let Some(bad) = self.emails.iter().find(|e| !postern_proto::access::valid_email_pattern(e)) {
            return Err(format!("policy {ids:?}: emails: {bad:?} is not an e-mail address or pattern"));
        }
        if let Some(bad) = self.email_domains.iter().find(|d| d.is_empty() || d.contains('@') || d.contains('*')) {
            return Err(format!("policy {ids:?}: email_domains: {bad:?} is not a domain (write example.com)"));
        }
        let named = !(self.emails.is_empty() && self.email_domains.is_empty() && self.groups.is_empty());
        let login = named.then(|| PolicyLogin {
            emails: self.emails.iter().map(|e| e.to_ascii_lowercase()).collect(),
            domains: self.email_domains.iter().map(|d| d.to_ascii_lowercase()).collect(),
            groups: self.groups.clone(),
        });
        Ok(Policy { ids: ids.clone(), allow_ips, forward_auth, login })
    }
}
