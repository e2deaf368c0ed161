//! How many connections an agent keeps to its relay: a fixed number, or (`auto`, the default)
//! one while idle and more while streams are busy.
//!
//! Every stream of a connection shares its one TLS session, so one core on each side does all
//! of that connection's crypto. With several busy streams, a second connection lets the relay
//! and the agent spread the work over two cores (the relay sends each new stream to the least
//! loaded member of a tunnel). An idle agent keeps one connection, so it costs one connection's
//! memory and heartbeats, as before.
//!
//! The rule ([`Scaler::step`], checked every [`TICK`]):
//! - **grow** by one connection when every wanted connection is up, more streams are open than
//!   connections, and the agent moved at least [`BUSY_BYTES_PER_SEC`] per connection over the
//!   last tick; at most one connection per tick, up to the maximum;
//! - **shrink** back to one connection once no stream has been open for the idle period.

use std::str::FromStr;
use std::time::{Duration, Instant};

/// How often the agent looks at its traffic.
pub const TICK: Duration = Duration::from_millis(250);
/// Traffic per connection (both directions) above which another connection is worth opening:
/// well above what a webhook or a dev preview moves, well below what one TLS connection carries.
pub const BUSY_BYTES_PER_SEC: u64 = 8 * 1024 * 1024;
/// Most connections an agent keeps (`auto` and fixed alike).
pub const MAX_CONNECTIONS: usize = 4;
/// How long `auto` keeps extra connections after the last stream closed.
pub const IDLE: Duration = Duration::from_secs(30);

/// How many connections the agent keeps to the relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Connections {
    /// Exactly this many (1 to [`MAX_CONNECTIONS`]), always.
    Fixed(usize),
    /// One while idle; up to `max` while streams are busy; back to one after `idle` without a
    /// stream.
    Auto {
        /// Most connections.
        max: usize,
        /// How long extra connections outlive the last stream.
        idle: Duration,
    },
}

impl Default for Connections {
    fn default() -> Self {
        Self::Auto { max: MAX_CONNECTIONS, idle: IDLE }
    }
}

impl Connections {
    /// Connections kept from the start.
    pub fn initial(self) -> usize {
        match self {
            Self::Fixed(n) => n.clamp(1, MAX_CONNECTIONS),
            Self::Auto { .. } => 1,
        }
    }
}

impl std::fmt::Display for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Fixed(n) => write!(f, "{n}"),
            Self::Auto { .. } => f.write_str("auto"),
        }
    }
}

/// A `--connections` value that is neither `auto` nor 1 to 4.
#[derive(Debug, thiserror::Error)]
#[error("connections must be `auto` or a number from 1 to {MAX_CONNECTIONS}, not {0:?}")]
pub struct BadConnections(String);

impl FromStr for Connections {
    type Err = BadConnections;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Self::default());
        }
        match s.parse::<usize>() {
            Ok(n) if (1..=MAX_CONNECTIONS).contains(&n) => Ok(Self::Fixed(n)),
            _ => Err(BadConnections(s.to_string())),
        }
    }
}

/// In a config file: `connections = "auto"` or `connections = 2`.
impl<'de> serde::Deserialize<'de> for Connections {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Connections;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "\"auto\" or a number from 1 to {MAX_CONNECTIONS}")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Connections, E> {
                v.parse().map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Connections, E> {
                self.visit_str(&v.to_string())
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Connections, E> {
                self.visit_str(&v.to_string())
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// What the agent should do with its connections now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep them as they are.
    Hold,
    /// Open one more.
    Grow,
    /// Close every extra one.
    Shrink,
}

/// The `auto` decision, fed one sample per tick (pure: tests drive it with made-up times).
#[derive(Debug)]
pub struct Scaler {
    max: usize,
    idle: Duration,
    wanted: usize,
    last: Option<(Instant, u64)>,
    quiet_since: Option<Instant>,
}

impl Scaler {
    /// A scaler keeping one to `max` connections.
    pub fn new(max: usize, idle: Duration) -> Self {
        Self { max: max.clamp(1, MAX_CONNECTIONS), idle, wanted: 1, last: None, quiet_since: None }
    }

    /// Connections wanted now.
    pub fn wanted(&self) -> usize {
        self.wanted
    }

    /// One sample: the time, streams open now, bytes moved so far (both directions, a running
    /// total) and connections up now.
    pub fn step(&mut self, now: Instant, active: u64, bytes: u64, up: usize) -> Step {
        let rate = match self.last.replace((now, bytes)) {
            Some((at, before)) => {
                let secs = now.saturating_duration_since(at).as_secs_f64();
                if secs > 0.0 {
                    (bytes.saturating_sub(before) as f64 / secs) as u64
                } else {
                    0
                }
            }
            None => 0,
        };
        if active == 0 {
            let since = *self.quiet_since.get_or_insert(now);
            if self.wanted > 1 && now.saturating_duration_since(since) >= self.idle {
                self.wanted = 1;
                return Step::Shrink;
            }
            return Step::Hold;
        }
        self.quiet_since = None;
        let busy = rate >= BUSY_BYTES_PER_SEC.saturating_mul(self.wanted as u64);
        if busy && up >= self.wanted && active > self.wanted as u64 && self.wanted < self.max {
            self.wanted += 1;
            return Step::Grow;
        }
        Step::Hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: u64 = 1024 * 1024;

    #[test]
    fn parses_auto_and_one_to_four() {
        assert_eq!("auto".parse::<Connections>().unwrap(), Connections::default());
        assert_eq!("3".parse::<Connections>().unwrap(), Connections::Fixed(3));
        for bad in ["0", "5", "many", ""] {
            let e = bad.parse::<Connections>().unwrap_err().to_string();
            assert!(e.contains("`auto` or a number from 1 to 4"), "{e}");
        }
        assert_eq!(Connections::default().initial(), 1);
        assert_eq!(Connections::Fixed(2).initial(), 2);
    }

    #[test]
    fn grows_one_at_a_time_while_busy_and_only_when_the_last_one_is_up() {
        let t0 = Instant::now();
        let mut s = Scaler::new(3, Duration::from_secs(30));
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        assert_eq!(s.step(at(0), 4, 0, 1), Step::Hold, "no rate yet");
        // 100 MB/s with 4 streams: grow to 2.
        assert_eq!(s.step(at(250), 4, 25 * MB, 1), Step::Grow);
        assert_eq!(s.wanted(), 2);
        // The second connection is not up yet: wait for it.
        assert_eq!(s.step(at(500), 4, 50 * MB, 1), Step::Hold);
        assert_eq!(s.step(at(750), 4, 75 * MB, 2), Step::Grow);
        assert_eq!(s.step(at(1000), 4, 100 * MB, 3), Step::Hold, "at the maximum");
        assert_eq!(s.wanted(), 3);
    }

    #[test]
    fn one_busy_stream_or_little_traffic_keeps_one_connection() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Scaler::new(4, Duration::from_secs(30));
        s.step(at(0), 1, 0, 1);
        assert_eq!(s.step(at(250), 1, 250 * MB, 1), Step::Hold, "one stream gains nothing from two");
        let mut s = Scaler::new(4, Duration::from_secs(30));
        s.step(at(0), 50, 0, 1);
        assert_eq!(s.step(at(1000), 50, MB, 1), Step::Hold, "many streams, 1 MB/s: webhooks, not load");
    }

    #[test]
    fn shrinks_to_one_after_the_idle_period_without_streams() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut s = Scaler::new(4, Duration::from_secs(2));
        s.step(at(0), 4, 0, 1);
        assert_eq!(s.step(at(250), 4, 100 * MB, 1), Step::Grow);
        assert_eq!(s.step(at(500), 0, 100 * MB, 2), Step::Hold);
        // A stream in the middle restarts the idle clock.
        assert_eq!(s.step(at(1500), 1, 100 * MB, 2), Step::Hold);
        assert_eq!(s.step(at(2000), 0, 100 * MB, 2), Step::Hold);
        assert_eq!(s.step(at(3900), 0, 100 * MB, 2), Step::Hold);
        assert_eq!(s.step(at(4000), 0, 100 * MB, 2), Step::Shrink);
        assert_eq!(s.wanted(), 1);
        assert_eq!(s.step(at(9000), 0, 100 * MB, 1), Step::Hold, "nothing left to close");
    }
}
