//! Event time: instants as `i64` nanoseconds since the Unix epoch (UTC), RFC 3339
//! parsing and formatting, and the `5s` / `24h` duration syntax used everywhere.
//!
//! Nanoseconds keep any RFC 3339 fraction exact, so ordering and deadlines never round.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Nanoseconds since 1970-01-01T00:00:00Z.
pub type Nanos = i64;

pub const NANOS_PER_MILLI: i64 = 1_000_000;
pub const NANOS_PER_SEC: i64 = 1_000_000_000;
pub const NANOS_PER_HOUR: i64 = 3_600 * NANOS_PER_SEC;
pub const NANOS_PER_DAY: i64 = 24 * NANOS_PER_HOUR;

/// Why a timestamp was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TimestampError {
    #[error("not an RFC 3339 timestamp: {0}")]
    Syntax(String),
    #[error("out of the supported range (years 1678 to 2261)")]
    Range,
}

/// Parses an RFC 3339 timestamp (`2026-06-12T10:00:00Z`, `2026-06-12T12:00:00.5+02:00`).
pub fn parse_rfc3339(s: &str) -> Result<Nanos, TimestampError> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| TimestampError::Syntax(e.to_string()))?;
    i64::try_from(dt.unix_timestamp_nanos()).map_err(|_| TimestampError::Range)
}

/// Formats as RFC 3339 in UTC with `Z`, keeping only the fraction digits that are needed.
pub fn format_rfc3339(t: Nanos) -> String {
    let mut out = String::with_capacity(30);
    write_rfc3339(&mut out, t);
    out
}

/// Appends the RFC 3339 form of `t` to `out`.
pub fn write_rfc3339(out: &mut String, t: Nanos) {
    use std::fmt::Write;
    let secs = t.div_euclid(NANOS_PER_SEC);
    let frac = t.rem_euclid(NANOS_PER_SEC);
    // Every i64 nanosecond value is a valid OffsetDateTime, so this cannot fail.
    let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let _ = write!(
        out,
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        dt.year(),
        u8::from(dt.month()),
        dt.day(),
        dt.hour(),
        dt.minute(),
        dt.second()
    );
    if frac != 0 {
        let mut digits = format!("{frac:09}");
        while digits.ends_with('0') {
            digits.pop();
        }
        out.push('.');
        out.push_str(&digits);
    }
    out.push('Z');
}

/// The `YYYY-MM` billing period (UTC) an instant falls in.
pub fn period_of(t: Nanos) -> String {
    period_str(t, &mut [0; 16]).to_string()
}

/// [`period_of`] written into `buf`, for the per-verdict path.
pub fn period_str(t: Nanos, buf: &mut [u8; 16]) -> &str {
    use std::io::Write;
    let dt = OffsetDateTime::from_unix_timestamp(t.div_euclid(NANOS_PER_SEC)).unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let mut w = &mut buf[..];
    // Nanos spans the years 1677 to 2262: `YYYY-MM` always fits.
    let _ = write!(w, "{:04}-{:02}", dt.year(), u8::from(dt.month()));
    let n = 16 - w.len();
    std::str::from_utf8(&buf[..n]).unwrap_or("")
}

/// A non-negative span of time, written like `5s`, `250ms`, `24h` or `1h 30m`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(pub Nanos);

impl Span {
    pub const fn from_secs(s: i64) -> Self {
        Span(s * NANOS_PER_SEC)
    }
    pub const fn from_hours(h: i64) -> Self {
        Span(h * NANOS_PER_HOUR)
    }
    pub fn as_std(self) -> std::time::Duration {
        std::time::Duration::from_nanos(self.0.max(0) as u64)
    }
}

/// The wall clock now.
pub fn now() -> Nanos {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(Nanos::MAX)
}

/// Why a duration was refused.
#[derive(Debug, thiserror::Error)]
#[error("invalid duration {input:?}: {cause} (write it like 5s, 250ms, 24h)")]
pub struct SpanError {
    input: String,
    cause: String,
}

impl FromStr for Span {
    type Err = SpanError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |cause: String| SpanError { input: s.to_string(), cause };
        let d = humantime::parse_duration(s.trim()).map_err(|e| err(e.to_string()))?;
        i64::try_from(d.as_nanos()).map(Span).map_err(|_| err("too long".into()))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.as_std()))
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_formats_round_trip() {
        let t = parse_rfc3339("2026-06-12T10:00:00Z").unwrap();
        assert_eq!(format_rfc3339(t), "2026-06-12T10:00:00Z");
        let t2 = parse_rfc3339("2026-06-12T12:00:00.250+02:00").unwrap();
        assert_eq!(t2 - t, 250 * NANOS_PER_MILLI);
        assert_eq!(format_rfc3339(t2), "2026-06-12T10:00:00.25Z");
        assert_eq!(format_rfc3339(t + 1), "2026-06-12T10:00:00.000000001Z");
    }

    #[test]
    fn rejects_bad_timestamps() {
        assert!(matches!(parse_rfc3339("2026-06-12"), Err(TimestampError::Syntax(_))));
        assert!(parse_rfc3339("2026-13-01T00:00:00Z").is_err());
        assert!(parse_rfc3339("").is_err());
        assert_eq!(parse_rfc3339("9999-01-01T00:00:00Z"), Err(TimestampError::Range));
    }

    #[test]
    fn pre_epoch_formats() {
        let t = parse_rfc3339("1969-12-31T23:59:59.5Z").unwrap();
        assert_eq!(t, -NANOS_PER_SEC / 2);
        assert_eq!(format_rfc3339(t), "1969-12-31T23:59:59.5Z");
    }

    #[test]
    fn spans() {
        assert_eq!("5s".parse::<Span>().unwrap(), Span::from_secs(5));
        assert_eq!("24h".parse::<Span>().unwrap(), Span::from_hours(24));
        assert_eq!("250ms".parse::<Span>().unwrap().0, 250 * NANOS_PER_MILLI);
        assert!("five".parse::<Span>().is_err());
        assert_eq!(Span::from_hours(72).to_string(), "3days");
    }

    #[test]
    fn periods() {
        assert_eq!(period_of(parse_rfc3339("2026-06-30T23:59:59Z").unwrap()), "2026-06");
        assert_eq!(period_of(parse_rfc3339("2026-07-01T00:00:00Z").unwrap()), "2026-07");
    }
}
