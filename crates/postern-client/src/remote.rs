//! What the relay may change on this agent (`--allow-remote`). The agent is in charge of its
//! machine: a relay, or whoever holds an admin token, can only open tunnels to the local ports
//! listed here, and nothing at all unless the flag is given.

use std::fmt;
use std::str::FromStr;

use postern_proto::TunnelSpec;

/// Which local ports remote management may expose.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowRemote {
    /// Remote management is off: every change through the relay is refused (the default).
    #[default]
    Off,
    /// Any local port (`--allow-remote any`, which has to be said explicitly).
    Any,
    /// These ports and inclusive ranges (`--allow-remote 3000-3999,5432`).
    Ports(Vec<(u16, u16)>),
}

/// Most entries a port list may have.
const MAX_ENTRIES: usize = 64;

impl AllowRemote {
    /// Whether the relay may open `spec`; the refusal says why, for the relay's caller.
    pub fn check(&self, spec: &TunnelSpec) -> Result<(), String> {
        let port = spec.local_port;
        match self {
            Self::Off => Err(OFF.into()),
            _ if port == 0 => Err("local port 0 is not a port a service listens on".into()),
            Self::Any => Ok(()),
            Self::Ports(list) if list.iter().any(|&(lo, hi)| (lo..=hi).contains(&port)) => Ok(()),
            Self::Ports(_) => Err(format!("local port {port} is outside this agent's --allow-remote {self}")),
        }
    }

    /// Whether the relay may close this agent's tunnels.
    pub fn check_removal(&self) -> Result<(), String> {
        match self {
            Self::Off => Err(OFF.into()),
            _ => Ok(()),
        }
    }
}

const OFF: &str = "remote management is off on this agent (it was not started with --allow-remote)";

impl fmt::Display for AllowRemote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Any => f.write_str("any"),
            Self::Ports(list) => {
                let parts: Vec<String> =
                    list.iter().map(|&(lo, hi)| if lo == hi { lo.to_string() } else { format!("{lo}-{hi}") }).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

impl FromStr for AllowRemote {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        match s.to_ascii_lowercase().as_str() {
            "any" => return Ok(Self::Any),
            "off" | "none" => return Ok(Self::Off),
            "" => return Err("expected local ports such as 3000-3999,5432, or 'any'".into()),
            _ => {}
        }
        let port = |p: &str| match p.trim().parse::<u16>() {
            Ok(0) | Err(_) => Err(format!("{p:?} is not a port (1-65535)")),
            Ok(n) => Ok(n),
        };
        let mut list = Vec::new();
        for part in s.split(',') {
            let (lo, hi) = match part.split_once('-') {
                Some((lo, hi)) => (port(lo)?, port(hi)?),
                None => (port(part)?, port(part)?),
            };
            if lo > hi {
                return Err(format!("{part:?}: the range is backwards"));
            }
            list.push((lo, hi));
        }
        if list.len() > MAX_ENTRIES {
            return Err(format!("at most {MAX_ENTRIES} ports or ranges"));
        }
        Ok(Self::Ports(list))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use postern_proto::TunnelKind;

    fn spec(port: u16) -> TunnelSpec {
        TunnelSpec::new(TunnelKind::Tcp, port)
    }

    #[test]
    fn off_refuses_everything() {
        let off = AllowRemote::default();
        assert!(off.check(&spec(3000)).unwrap_err().contains("--allow-remote"));
        assert!(off.check_removal().is_err());
    }

    #[test]
    fn a_list_allows_its_ports_only() {
        let list: AllowRemote = "3000-3999, 5432".parse().unwrap();
        assert_eq!(list.to_string(), "3000-3999,5432");
        for ok in [3000, 3500, 3999, 5432] {
            assert!(list.check(&spec(ok)).is_ok(), "{ok}");
        }
        for no in [22, 2999, 4000, 5431, 5433, 0] {
            assert!(list.check(&spec(no)).is_err(), "{no}");
        }
        assert!(list.check_removal().is_ok());
        assert!("any".parse::<AllowRemote>().unwrap().check(&spec(22)).is_ok());
    }

    #[test]
    fn bad_lists_are_refused() {
        for bad in ["", "0", "70000", "4000-3000", "x", "1-", "80,,81"] {
            assert!(bad.parse::<AllowRemote>().is_err(), "{bad:?}");
        }
    }
}
