//! The value types of relay settings, each parsed from the same text on the command line, in
//! `POSTERN_*` variables and in the config file.

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use super::ConfigError;

/// Public ports TCP tunnels may get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortRange {
    /// Let the operating system pick a free port (`0`). Handy for tests; a client may not ask
    /// for a specific port in this mode.
    Ephemeral,
    /// An inclusive range, `lo-hi`.
    Range(u16, u16),
}

impl PortRange {
    /// True when `port` may be handed out.
    pub fn contains(&self, port: u16) -> bool {
        match *self {
            Self::Ephemeral => false,
            Self::Range(lo, hi) => (lo..=hi).contains(&port),
        }
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ephemeral => f.write_str("0"),
            Self::Range(lo, hi) => write!(f, "{lo}-{hi}"),
        }
    }
}

impl FromStr for PortRange {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "0" {
            return Ok(Self::Ephemeral);
        }
        let (lo, hi) = postern_proto::claims::parse_ports(s).map_err(|_| ConfigError::PortRange(s.to_string()))?;
        Ok(Self::Range(lo, hi))
    }
}

/// A listener address, or `off` (also `none` or empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bind(pub Option<SocketAddr>);

impl fmt::Display for Bind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(a) => a.fmt(f),
            None => f.write_str("off"),
        }
    }
}

impl FromStr for Bind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "" => Ok(Self(None)),
            v => v
                .parse()
                .map(|a| Self(Some(a)))
                .map_err(|_| format!("{v:?} is not an address like 0.0.0.0:443 or `off`")),
        }
    }
}

/// Where the access log goes: `off`, `stdout`, or a file (appended to, reopened on SIGHUP).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AccessLogTo {
    /// No access log.
    #[default]
    Off,
    /// One line per record on standard output (journald and `docker logs` collect it).
    Stdout,
    /// Appended to this file.
    File(std::path::PathBuf),
}

impl fmt::Display for AccessLogTo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Off => f.write_str("off"),
            Self::Stdout => f.write_str("stdout"),
            Self::File(p) => p.display().fmt(f),
        }
    }
}

impl FromStr for AccessLogTo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "off" | "none" | "" => Ok(Self::Off),
            "stdout" | "-" => Ok(Self::Stdout),
            path => Ok(Self::File(path.into())),
        }
    }
}

/// A value that is either set, or (the built-in defaults of addresses) one value for a
/// development relay (`--domain localhost`) and another for a public one:
/// `127.0.0.1:7000 on localhost, else 0.0.0.0:7000`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ByDomain<T> {
    /// The same whatever the domain.
    Is(T),
    /// `dev` on a relay for `localhost`, else `public`.
    Dev {
        /// For a development relay.
        dev: T,
        /// For a public relay.
        public: T,
    },
}

const ON_LOCALHOST: &str = " on localhost, else ";

impl<T: Copy> ByDomain<T> {
    /// The value for a relay on `domain`.
    pub fn on(&self, domain: &str) -> T {
        match *self {
            Self::Is(v) => v,
            Self::Dev { dev, public } => {
                if domain.eq_ignore_ascii_case("localhost") {
                    dev
                } else {
                    public
                }
            }
        }
    }
}

impl<T> From<T> for ByDomain<T> {
    fn from(v: T) -> Self {
        Self::Is(v)
    }
}

impl<T: fmt::Display> fmt::Display for ByDomain<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Is(v) => v.fmt(f),
            Self::Dev { dev, public } => write!(f, "{dev}{ON_LOCALHOST}{public}"),
        }
    }
}

impl<T: FromStr> FromStr for ByDomain<T>
where
    T::Err: fmt::Display,
{
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let one = |v: &str| v.trim().parse::<T>().map_err(|e| e.to_string());
        match s.split_once(ON_LOCALHOST) {
            Some((dev, public)) => Ok(Self::Dev { dev: one(dev)?, public: one(public)? }),
            None => Ok(Self::Is(one(s)?)),
        }
    }
}

/// A secret setting: shown as `<secret>` in `Debug` output and logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<secret>")
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self(s.to_string())
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_and_print_the_same_text() {
        assert_eq!("20000-29999".parse::<PortRange>().ok(), Some(PortRange::Range(20000, 29999)));
        assert_eq!("0".parse::<PortRange>().ok(), Some(PortRange::Ephemeral));
        assert_eq!("443".parse::<PortRange>().ok(), Some(PortRange::Range(443, 443)));
        for bad in ["", "a-b", "30000-20000", "0-10", "1-70000"] {
            assert!(bad.parse::<PortRange>().is_err(), "{bad}");
        }
        let by: ByDomain<Bind> = "127.0.0.1:8080 on localhost, else 0.0.0.0:80".parse().unwrap();
        assert_eq!(by.on("localhost").0, Some("127.0.0.1:8080".parse().unwrap()));
        assert_eq!(by.on("tunnel.example").0, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(by.to_string().parse::<ByDomain<Bind>>(), Ok(by));
        assert_eq!("off".parse::<ByDomain<Bind>>().map(|b| b.on("x").0), Ok(None));
        assert!("nonsense".parse::<ByDomain<Bind>>().is_err());
        assert_eq!(format!("{:?}", Secret::from("hunter2")), "<secret>");
    }
}
