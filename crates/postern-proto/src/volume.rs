//! A token's volume quota: how many bytes its tunnels may move per calendar period, as the
//! claim `limits.volume = {"bytes": 10000000000, "period": "month"}` and as the text
//! `postern token mint --volume 10GB/month` takes.
//!
//! - Both directions count, toward the local service and toward the public, into one total.
//! - Periods are UTC calendar days and months: a monthly volume renews at 00:00 UTC on the 1st.
//! - Units: `B`, decimal `KB` `MB` `GB` `TB` (powers of 1000, as plans are sold) and binary
//!   `KiB` `MiB` `GiB` `TiB`; case does not matter. A fraction is allowed (`1.5GB/day`).
//!
//! Pure arithmetic on Unix seconds: no clock is read here.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How long a volume lasts before it renews.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// A UTC calendar day.
    Day,
    /// A UTC calendar month.
    Month,
}

/// Bytes per period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Volume {
    /// Bytes, both directions together.
    pub bytes: u64,
    /// When the count starts over.
    pub period: Period,
}

const UNITS: [(&str, u64); 9] = [
    ("b", 1),
    ("kb", 1_000),
    ("mb", 1_000_000),
    ("gb", 1_000_000_000),
    ("tb", 1_000_000_000_000),
    ("kib", 1 << 10),
    ("mib", 1 << 20),
    ("gib", 1 << 30),
    ("tib", 1 << 40),
];

impl FromStr for Volume {
    type Err = String;

    /// `10GB/month`, `500MiB/day`, `1.5TB/month`, `1000000/day` (bytes).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not a volume such as 10GB/month or 500MiB/day");
        let (amount, period) = s.trim().split_once('/').ok_or_else(bad)?;
        let period = match period.trim().to_ascii_lowercase().as_str() {
            "day" | "d" => Period::Day,
            "month" | "mo" => Period::Month,
            _ => return Err(bad()),
        };
        let amount = amount.trim().to_ascii_lowercase();
        let split = amount.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(amount.len());
        let (number, unit) = amount.split_at(split);
        let unit = if unit.is_empty() { 1 } else { UNITS.iter().find(|(u, _)| *u == unit).ok_or_else(bad)?.1 };
        let number: f64 = number.trim().parse().map_err(|_| bad())?;
        let bytes = number * unit as f64;
        if !bytes.is_finite() || bytes < 1.0 || bytes > u64::MAX as f64 {
            return Err(format!("{s:?}: the volume must be at least one byte"));
        }
        Ok(Self { bytes: bytes.round() as u64, period })
    }
}

impl fmt::Display for Volume {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period = match self.period {
            Period::Day => "day",
            Period::Month => "month",
        };
        let (unit, size) =
            UNITS[..5].iter().rev().find(|(_, size)| self.bytes.is_multiple_of(*size)).copied().unwrap_or(("b", 1));
        write!(f, "{}{}/{period}", self.bytes / size, unit.to_ascii_uppercase())
    }
}

const DAY: u64 = 86_400;

impl Period {
    /// The period holding Unix second `t`: its first second and the first of the next.
    pub fn window(self, t: u64) -> (u64, u64) {
        let day = t / DAY;
        match self {
            Period::Day => (day * DAY, (day + 1) * DAY),
            Period::Month => {
                let (y, m, _) = civil_from_days(day as i64);
                let next = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                (days_from_civil(y, m, 1) as u64 * DAY, days_from_civil(next.0, next.1, 1) as u64 * DAY)
            }
        }
    }
}

/// Year, month (1-12) and day (1-31) of day `z` since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// Days since 1970-01-01 of a calendar date (the inverse of [`civil_from_days`]).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from(if m > 2 { m - 3 } else { m + 9 });
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plan_sizes() {
        let v: Volume = "10GB/month".parse().unwrap();
        assert_eq!(v, Volume { bytes: 10_000_000_000, period: Period::Month });
        assert_eq!(v.to_string(), "10GB/month");
        assert_eq!("500MiB/day".parse::<Volume>().unwrap().bytes, 500 << 20);
        assert_eq!("1.5 tb / Month".parse::<Volume>().unwrap().bytes, 1_500_000_000_000);
        assert_eq!("1234/day".parse::<Volume>().unwrap().to_string(), "1234B/day");
        for bad in ["", "10GB", "10GB/week", "GB/month", "0GB/month", "-1GB/day", "10XB/day", "1e30TB/day", "NaN/day"] {
            assert!(bad.parse::<Volume>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_json_claim_is_bytes_and_period() {
        let v: Volume = serde_json::from_str(r#"{"bytes": 5, "period": "day"}"#).unwrap();
        assert_eq!(v, Volume { bytes: 5, period: Period::Day });
        assert!(serde_json::from_str::<Volume>(r#"{"bytes": 5, "period": "week"}"#).is_err());
    }

    #[test]
    fn windows_are_utc_calendar_periods() {
        // 2026-12-03T06:00:00Z
        let t = 1_796_277_600;
        assert_eq!(Period::Day.window(t), (1_796_256_000, 1_796_342_400));
        // December 2026, then January 2027.
        assert_eq!(Period::Month.window(t), (1_796_083_200, 1_798_761_600));
        assert_eq!(Period::Month.window(1_798_761_600).0, 1_798_761_600);
        assert_eq!(Period::Month.window(1_798_761_599).0, 1_796_083_200);
        // 2028-02 is 29 days (leap year); 2100-02 is 28.
        let (a, b) = Period::Month.window(days_from_civil(2028, 2, 10) as u64 * DAY);
        assert_eq!((b - a) / DAY, 29);
        let (a, b) = Period::Month.window(days_from_civil(2100, 2, 10) as u64 * DAY);
        assert_eq!((b - a) / DAY, 28);
        for z in [0, 59, 365, 10_957, 20_000, 47_482] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
    }
}
