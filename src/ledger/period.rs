//! Billing periods: calendar months in UTC, written `YYYY-MM` (SPEC 8.1). A verdict
//! belongs to the period of its `decided_at`, a billing event to the period of its `ts`.

use std::fmt;
use std::str::FromStr;

use time::{Date, Month, OffsetDateTime};

use crate::timestamp::{Nanos, NANOS_PER_SEC};

/// A month, as months since year 0 (so periods order and subtract).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct Period(pub u32);

#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a period: write it YYYY-MM, like 2026-06")]
pub struct PeriodError(pub String);

impl Period {
    pub fn new(year: u32, month: u32) -> Option<Period> {
        (1..=12).contains(&month).then(|| Period(year * 12 + month - 1))
    }

    pub fn year(self) -> u32 {
        self.0 / 12
    }

    pub fn month(self) -> u32 {
        self.0 % 12 + 1
    }

    /// The period an instant falls in.
    pub fn of(t: Nanos) -> Period {
        let dt = OffsetDateTime::from_unix_timestamp(t.div_euclid(NANOS_PER_SEC)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
        Period(dt.year().max(0) as u32 * 12 + u32::from(u8::from(dt.month())) - 1)
    }

    pub fn next(self) -> Period {
        Period(self.0 + 1)
    }

    /// The first instant of the period.
    pub fn start(self) -> Nanos {
        let month = Month::try_from(self.month() as u8).unwrap_or(Month::January);
        let date = Date::from_calendar_date(self.year() as i32, month, 1).unwrap_or(Date::MIN);
        date.midnight().assume_utc().unix_timestamp().saturating_mul(NANOS_PER_SEC)
    }

    /// The first instant after the period: it closes when the watermark passes this.
    pub fn end(self) -> Nanos {
        self.next().start()
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year(), self.month())
    }
}

impl FromStr for Period {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || PeriodError(s.to_string());
        let b = s.as_bytes();
        if b.len() != 7 || b[4] != b'-' || !b[..4].iter().chain(&b[5..]).all(u8::is_ascii_digit) {
            return Err(bad());
        }
        let (year, month) = (s[..4].parse().map_err(|_| bad())?, s[5..].parse().map_err(|_| bad())?);
        Period::new(year, month).ok_or_else(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::parse_rfc3339;

    #[test]
    fn periods_parse_print_and_bound_their_instants() {
        let p: Period = "2026-06".parse().unwrap();
        assert_eq!(p.to_string(), "2026-06");
        assert_eq!(p.next().to_string(), "2026-07");
        assert_eq!("2026-12".parse::<Period>().unwrap().next().to_string(), "2027-01");
        for bad in ["2026-13", "2026-00", "2026-6", "26-06", "2026/06", ""] {
            assert!(bad.parse::<Period>().is_err(), "{bad}");
        }
        let t = parse_rfc3339("2026-06-30T23:59:59.999Z").unwrap();
        assert_eq!(Period::of(t), p);
        assert_eq!(Period::of(p.end()), p.next());
        assert_eq!(p.start(), parse_rfc3339("2026-06-01T00:00:00Z").unwrap());
        assert!(p.start() <= t && t < p.end());
    }
}
