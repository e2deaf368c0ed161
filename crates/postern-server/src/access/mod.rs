//! Who may use a tunnel: the client's own rules (sent hashed in its `Hello`) and the operator's
//! policies (config file), both checked on every public connection or request.
//!
//! | rule | from | applies to | failure |
//! |------|------|------------|---------|
//! | IP/CIDR allowlist | client, operator | TCP and HTTP | TCP closed; HTTP `403` |
//! | basic auth (hashed) | client | HTTP | `401` with `WWW-Authenticate: Basic` |
//! | required header (hashed value) | client | HTTP | `401` |
//! | forward-auth URL | operator | HTTP | the auth service's own answer |
//! | sign-in: e-mails (`--allow-email`, `--login`) | client | HTTP | a redirect to sign in; `401` for programs |
//! | sign-in: e-mails, domains, groups | operator | HTTP | the same |
//!
//! A visitor's sign-in ([`crate::visitor`]) passes the client's rule when its e-mail matches a
//! pattern or holds a grant, and a policy's when it matches one of its e-mails, domains or
//! groups. A share link or service token stands in for the client's own rule only: it never
//! passes an operator policy that names people.
//!
//! Every rule that applies must pass. A forward-auth URL can only come from the operator: a
//! client choosing where the relay sends requests would be a server-side request forgery.
//! [`forward_auth`] asks the operator's service; `crate::tunnel::admit` applies them all.

pub mod forward_auth;
pub mod policy;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use http::{HeaderMap, HeaderName, Uri};
use ipnet::IpNet;
use postern_proto::access::{self, Access};
use postern_proto::token::glob;

/// Parses IPs and CIDRs.
pub fn parse_nets(items: &[String]) -> Result<Vec<IpNet>, String> {
    items
        .iter()
        .map(|s| {
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{s:?} is not an IP address or CIDR"))
        })
        .collect()
}

fn allowed(nets: &[IpNet], ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    nets.is_empty() || nets.iter().any(|n| n.contains(&ip))
}

/// A client's rules for one tunnel, validated.
#[derive(Debug, Clone, Default)]
pub struct ClientAccess {
    basic: Vec<(String, String)>,
    header: Option<(HeaderName, String)>,
    allow: Vec<IpNet>,
    login: Option<Vec<String>>,
}

impl ClientAccess {
    /// Validates the rules from a `Hello`.
    pub fn from_spec(spec: Option<&Access>) -> Result<Self, String> {
        let Some(spec) = spec else { return Ok(Self::default()) };
        let mut basic = Vec::new();
        for rule in &spec.basic_auth {
            let (user, hash) = access::split_basic(rule)
                .ok_or_else(|| "basic-auth rules must be `user:sha256:<salt>:<digest>`".to_string())?;
            basic.push((user.to_string(), hash.to_string()));
        }
        let header = match &spec.header {
            None => None,
            Some(h) => {
                let name = HeaderName::from_bytes(h.name.as_bytes())
                    .map_err(|_| format!("{:?} is not a header name", h.name))?;
                if !access::is_hash(&h.value) {
                    return Err("header rules must carry a `sha256:<salt>:<digest>` value".into());
                }
                Some((name, h.value.clone()))
            }
        };
        let login = match &spec.login {
            None => None,
            Some(l) => {
                if l.emails.len() > access::MAX_EMAIL_PATTERNS {
                    return Err(format!("at most {} e-mail patterns per tunnel", access::MAX_EMAIL_PATTERNS));
                }
                if let Some(bad) = l.emails.iter().find(|p| !access::valid_email_pattern(p)) {
                    return Err(format!("{bad:?} is not an e-mail address or pattern such as *@example.com"));
                }
                Some(l.emails.clone())
            }
        };
        Ok(Self { basic, header, allow: parse_nets(&spec.allow_ips)?, login })
    }

    /// The header the client's header rule requires (`--auth-header`, `--bearer`): a secret,
    /// which the request inspector never keeps.
    pub fn header_name(&self) -> Option<&HeaderName> {
        self.header.as_ref().map(|(name, _)| name)
    }

    /// True when the client set no rule.
    pub fn is_public(&self) -> bool {
        self.basic.is_empty() && self.header.is_none() && self.allow.is_empty() && self.login.is_none()
    }

    /// The e-mail patterns of the client's sign-in rule, when it has one.
    pub fn login(&self) -> Option<&[String]> {
        self.login.as_deref()
    }
}

/// An operator policy: rules for every tunnel whose id matches `ids`.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Glob over tunnel ids (HTTP) or client ids (TCP).
    pub ids: String,
    /// Allowed source addresses; empty allows all.
    pub allow_ips: Vec<IpNet>,
    /// Every HTTP request is first checked with this service.
    pub forward_auth: Option<ForwardAuth>,
    /// Visitors must sign in as one of these people.
    pub login: Option<PolicyLogin>,
}

/// Who an operator policy lets in after sign-in: anyone matching one of the lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyLogin {
    /// E-mail addresses (`*` globs).
    pub emails: Vec<String>,
    /// E-mail domains (`example.com` lets in `*@example.com`).
    pub domains: Vec<String>,
    /// Groups, as the provider's `groups` claim names them.
    pub groups: Vec<String>,
}

impl PolicyLogin {
    /// True when `email` (lowercase) with `groups` is one of the people named.
    pub fn admits(&self, email: &str, groups: &[String]) -> bool {
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        self.emails.iter().any(|p| glob(p, email))
            || self.domains.iter().any(|d| d.eq_ignore_ascii_case(domain))
            || self.groups.iter().any(|g| groups.contains(g))
    }
}

/// True when the client or a policy requires visitors to sign in.
pub fn login_required(client: &ClientAccess, policies: &[Policy]) -> bool {
    client.login.is_some() || policies.iter().any(|p| p.login.is_some())
}

/// True when a signed-in visitor may enter: `granted` says whether the tunnel's owner granted
/// this e-mail through the API.
pub fn person_allowed(
    client: &ClientAccess,
    policies: &[Policy],
    email: &str,
    groups: &[String],
    granted: bool,
) -> bool {
    let by_client = match &client.login {
        None => true,
        Some(patterns) => granted || patterns.iter().any(|p| glob(p, email)),
    };
    by_client && policies.iter().filter_map(|p| p.login.as_ref()).all(|l| l.admits(email, groups))
}

/// True when a share link or service token may let a visitor in: no operator policy names
/// people on this tunnel.
pub fn pass_allowed(policies: &[Policy]) -> bool {
    policies.iter().all(|p| p.login.is_none())
}

/// Forward-auth settings, in the style of Traefik's and Caddy's.
#[derive(Debug, Clone)]
pub struct ForwardAuth {
    /// The auth service; a 2xx answer lets the request through.
    pub url: Uri,
    /// Headers copied from the auth service's 2xx answer onto the proxied request (e.g.
    /// `Remote-User`).
    pub copy_headers: Vec<HeaderName>,
}

/// The operator's policies, swappable on reload.
#[derive(Debug, Clone, Default)]
pub struct Policies(Arc<RwLock<Arc<Vec<Policy>>>>);

impl Policies {
    /// Policies from a list.
    pub fn new(list: Vec<Policy>) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(list))))
    }

    /// Replaces the list (for reloads); tunnels see the new rules on their next request.
    pub fn replace(&self, list: Vec<Policy>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
    }

    /// Every policy.
    pub fn list(&self) -> Vec<Policy> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).to_vec()
    }

    /// The policies applying to tunnel id `id`.
    pub fn matching(&self, id: &str) -> Vec<Policy> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).iter().filter(|p| glob(&p.ids, id)).cloned().collect()
    }
}

/// Why a visitor was turned away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// The source address is not allowed.
    Address,
    /// Credentials missing or wrong; `basic` when the tunnel uses basic auth (so the answer
    /// asks for it).
    Credentials {
        /// Basic auth is one of the ways in.
        basic: bool,
    },
}

/// Checks the source address against the client's and the policies' allowlists.
pub fn check_ip(client: &ClientAccess, policies: &[Policy], ip: IpAddr) -> Result<(), Denied> {
    if allowed(&client.allow, ip) && policies.iter().all(|p| allowed(&p.allow_ips, ip)) {
        Ok(())
    } else {
        Err(Denied::Address)
    }
}

/// Checks an HTTP request's credentials against the client's rules.
pub fn check_credentials(client: &ClientAccess, headers: &HeaderMap) -> Result<(), Denied> {
    if let Some((name, hash)) = &client.header {
        let ok = headers.get(name).and_then(|v| v.to_str().ok()).is_some_and(|v| access::verify_secret(hash, v));
        if !ok {
            return Err(Denied::Credentials { basic: !client.basic.is_empty() });
        }
    }
    if !client.basic.is_empty() {
        let presented = headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Basic ").or_else(|| v.strip_prefix("basic ")))
            .and_then(|b64| {
                use base64::Engine;
                base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()
            })
            .and_then(|raw| String::from_utf8(raw).ok());
        let ok = presented.as_deref().and_then(|p| p.split_once(':')).is_some_and(|(user, pass)| {
            // Check every entry so the time taken does not say which user exists.
            client.basic.iter().fold(false, |hit, (u, hash)| (access::verify_secret(hash, pass) && u == user) | hit)
        });
        if !ok {
            return Err(Denied::Credentials { basic: true });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;
    use postern_proto::access::{hash_secret, HeaderRule};

    fn client() -> ClientAccess {
        ClientAccess::from_spec(Some(&Access {
            basic_auth: vec![format!("alice:{}", hash_secret("wonderland", b"salt"))],
            header: None,
            allow_ips: vec!["10.0.0.0/8".into(), "127.0.0.1".into()],
            login: None,
        }))
        .expect("valid")
    }

    #[test]
    fn addresses() {
        let c = client();
        assert_eq!(check_ip(&c, &[], "10.1.2.3".parse().expect("ip")), Ok(()));
        assert_eq!(check_ip(&c, &[], "127.0.0.1".parse().expect("ip")), Ok(()));
        assert_eq!(check_ip(&c, &[], "::ffff:10.0.0.1".parse().expect("ip")), Ok(()));
        assert_eq!(check_ip(&c, &[], "192.168.0.1".parse().expect("ip")), Err(Denied::Address));
        let strict = Policy {
            ids: "*".into(),
            allow_ips: parse_nets(&["10.9.0.0/16".into()]).expect("nets"),
            forward_auth: None,
            login: None,
        };
        assert_eq!(check_ip(&c, &[strict], "10.1.2.3".parse().expect("ip")), Err(Denied::Address));
    }

    #[test]
    fn basic_auth_and_header() {
        let c = client();
        let mut h = HeaderMap::new();
        assert_eq!(check_credentials(&c, &h), Err(Denied::Credentials { basic: true }));
        let good = base64::engine::general_purpose::STANDARD.encode("alice:wonderland");
        h.insert("authorization", format!("Basic {good}").parse().expect("value"));
        assert_eq!(check_credentials(&c, &h), Ok(()));
        let bad = base64::engine::general_purpose::STANDARD.encode("alice:nope");
        h.insert("authorization", format!("Basic {bad}").parse().expect("value"));
        assert!(check_credentials(&c, &h).is_err());

        let keyed = ClientAccess::from_spec(Some(&Access {
            header: Some(HeaderRule { name: "x-api-key".into(), value: hash_secret("k1", b"s") }),
            ..Access::default()
        }))
        .expect("valid");
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().expect("value"));
        assert_eq!(check_credentials(&keyed, &h), Ok(()));
        h.insert("x-api-key", "k2".parse().expect("value"));
        assert_eq!(check_credentials(&keyed, &h), Err(Denied::Credentials { basic: false }));
    }

    #[test]
    fn sign_in_rules() {
        let spec = |emails: &[&str]| Access {
            login: Some(postern_proto::access::Login { emails: emails.iter().map(|e| e.to_string()).collect() }),
            ..Access::default()
        };
        let c = ClientAccess::from_spec(Some(&spec(&["*@example.com", "bob@x.org"]))).expect("valid");
        assert!(login_required(&c, &[]));
        assert!(person_allowed(&c, &[], "alice@example.com", &[], false));
        assert!(person_allowed(&c, &[], "bob@x.org", &[], false));
        assert!(!person_allowed(&c, &[], "eve@evil.com", &[], false));
        assert!(person_allowed(&c, &[], "eve@evil.com", &[], true), "a grant lets her in");
        let policy = Policy {
            ids: "*".into(),
            allow_ips: vec![],
            forward_auth: None,
            login: Some(PolicyLogin {
                domains: vec!["example.com".into()],
                groups: vec!["ops".into()],
                ..Default::default()
            }),
        };
        let open = ClientAccess::default();
        assert!(login_required(&open, std::slice::from_ref(&policy)));
        assert!(person_allowed(&open, std::slice::from_ref(&policy), "alice@example.com", &[], false));
        assert!(person_allowed(&open, std::slice::from_ref(&policy), "bob@x.org", &["ops".into()], false));
        assert!(
            !person_allowed(&open, std::slice::from_ref(&policy), "bob@x.org", &[], true),
            "grants never pass a policy"
        );
        assert!(!pass_allowed(std::slice::from_ref(&policy)));
        assert!(pass_allowed(&[]));
        assert!(ClientAccess::from_spec(Some(&spec(&["not an email"]))).is_err());
        assert!(ClientAccess::from_spec(Some(&spec(&["a@b@c"]))).is_err());
    }

    #[test]
    fn plaintext_rules_are_rejected() {
        let spec = Access { basic_auth: vec!["alice:wonderland".into()], ..Access::default() };
        assert!(ClientAccess::from_spec(Some(&spec)).is_err());
        let spec = Access { allow_ips: vec!["not-an-ip".into()], ..Access::default() };
        assert!(ClientAccess::from_spec(Some(&spec)).is_err());
    }
}
