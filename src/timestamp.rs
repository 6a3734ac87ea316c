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
    if let Some(t) = parse_utc(s.as_bytes()) {
        return Ok(t);
    }
    let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| TimestampError::Syntax(e.to_string()))?;
    i64::try_from(dt.unix_timestamp_nanos()).map_err(|_| TimestampError::Range)
}

/// `YYYY-MM-DDTHH:MM:SS[.f{1,9}]Z`, the form nearly every producer writes, read without
/// the general parser (a quarter of decode time). `None` for anything else, including
/// every error: the general parser then decides, with its messages.
fn parse_utc(b: &[u8]) -> Option<Nanos> {
    let n = b.len();
    let head: &[u8; 20] = b.get(..20)?.try_into().ok()?;
    if n > 30 || b[n - 1] != b'Z' || [head[4], head[7], head[10], head[13], head[16]] != *b"--T::" {
        return None;
    }
    // Every other position of `YYYY-MM-DDTHH:MM:SS` is a digit: one check for all.
    let d = |i: usize| head[i].wrapping_sub(b'0');
    let all = [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18].map(d);
    if all.iter().any(|&x| x > 9) {
        return None;
    }
    let two = |i: usize| i64::from(d(i)) * 10 + i64::from(d(i + 1));
    let (year, month, day) = (two(0) * 100 + two(2), two(5), two(8));
    let (hour, minute, second) = (two(11), two(14), two(17));
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let month_days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return None,
    };
    if day < 1 || day > month_days || hour > 23 || minute > 59 || second > 59 {
        return None;
    }
    let frac = match n {
        20 => 0,
        22.. if head[19] == b'.' => {
            let mut frac = 0i64;
            for &c in &b[20..n - 1] {
                let x = c.wrapping_sub(b'0');
                if x > 9 {
                    return None;
                }
                frac = frac * 10 + i64::from(x);
            }
            frac * POW10[30 - n]
        }
        _ => return None,
    };
    // Days from 1970-01-01 to the civil date (H. Hinnant's algorithm); `y` is -1 at
    // the least (year 0, January), so one step down covers the era of negative years.
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y / 400 } else { -1 };
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    secs.checked_mul(NANOS_PER_SEC)?.checked_add(frac)
}

/// Scale of a fraction of `k` digits to nanoseconds, at `9 - k`.
const POW10: [i64; 9] = [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000, 10_000_000, 100_000_000];

/// Formats as RFC 3339 in UTC with `Z`, keeping only the fraction digits that are needed.
pub fn format_rfc3339(t: Nanos) -> String {
    let mut out = String::with_capacity(30);
    write_rfc3339(&mut out, t);
    out
}

/// Appends the RFC 3339 form of `t` to `out`.
pub fn write_rfc3339(out: &mut String, t: Nanos) {
    out.push_str(rfc3339_str(t, &mut [0; 30]));
}

/// The RFC 3339 form of `t`, written into `buf`. Written by hand (it runs once per
/// verdict, with no allocation); the tests hold it to the `time` crate's calendar.
pub fn rfc3339_str(t: Nanos, buf: &mut [u8; 30]) -> &str {
    let secs = t.div_euclid(NANOS_PER_SEC);
    let frac = t.rem_euclid(NANOS_PER_SEC);
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    *buf = *b"0000-00-00T00:00:00.000000000Z";
    let mut put = |at: usize, width: usize, mut v: i64| {
        for i in (at..at + width).rev() {
            buf[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    // i64 nanoseconds span the years 1677 to 2262: always four digits.
    put(0, 4, year);
    put(5, 2, month);
    put(8, 2, day);
    put(11, 2, sod / 3_600);
    put(14, 2, sod / 60 % 60);
    put(17, 2, sod % 60);
    let end = if frac == 0 {
        19
    } else {
        put(20, 9, frac);
        let mut end = 29;
        while buf[end - 1] == b'0' {
            end -= 1;
        }
        end
    };
    buf[end] = b'Z';
    std::str::from_utf8(&buf[..=end]).unwrap_or_default()
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

    /// The general parser alone, for comparison with the fast path.
    fn general(s: &str) -> Option<i64> {
        let dt = OffsetDateTime::parse(s, &Rfc3339).ok()?;
        i64::try_from(dt.unix_timestamp_nanos()).ok()
    }

    #[test]
    fn the_utc_fast_path_agrees_at_calendar_edges() {
        for s in [
            "1970-01-01T00:00:00Z",
            "1969-12-31T23:59:59.999999999Z",
            "2000-02-29T12:00:00Z",
            "2024-02-29T00:00:00.5Z",
            "2026-12-31T23:59:59.1Z",
            "1678-01-01T00:00:00Z",
            "2262-04-11T23:47:16.854775807Z",
            "2262-04-11T23:47:16.854775808Z",
            "1900-02-29T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2026-04-31T00:00:00Z",
            "2026-06-12T24:00:00Z",
            "2026-06-12T23:60:00Z",
            "2026-06-12T23:59:60Z",
            "2026-13-01T00:00:00Z",
            "2026-00-01T00:00:00Z",
            "2026-06-00T00:00:00Z",
            "2026-06-12T10:00:00.Z",
            "2026-06-12T10:00:00.1234567891Z",
            "2026-06-12t10:00:00z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "0000-02-29T23:59:59.5Z",
            "0000-03-01T00:00:00Z",
            "0400-02-29T00:00:00Z",
        ] {
            assert_eq!(parse_utc(s.as_bytes()).or_else(|| general(s)), general(s), "{s}");
            assert_eq!(parse_rfc3339(s).ok(), general(s), "{s}");
        }
    }

    /// The formatter as the `time` crate's calendar gives it.
    fn reference_format(t: i64) -> String {
        let secs = t.div_euclid(NANOS_PER_SEC);
        let frac = t.rem_euclid(NANOS_PER_SEC);
        let dt = OffsetDateTime::from_unix_timestamp(secs).unwrap();
        let mut s = format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
            dt.year(),
            u8::from(dt.month()),
            dt.day(),
            dt.hour(),
            dt.minute(),
            dt.second()
        );
        if frac != 0 {
            s.push('.');
            s.push_str(format!("{frac:09}").trim_end_matches('0'));
        }
        s.push('Z');
        s
    }

    #[test]
    fn formatting_matches_the_calendar_at_the_edges() {
        for t in [i64::MIN, i64::MAX, 0, -1, 1, 951_782_400 * NANOS_PER_SEC, 1_709_164_800_500_000_000] {
            assert_eq!(format_rfc3339(t), reference_format(t), "{t}");
        }
    }

    proptest::proptest! {
        #[test]
        fn the_utc_fast_path_agrees_with_the_general_parser(
            s in r"(1[6-9]|2[0-3]|[0-9]{2})[0-9]{2}-(0[0-9]|1[0-3])-[0-3][0-9][TTTt ][0-2][0-9]:[0-6][0-9]:[0-6][0-9](\.[0-9]{0,11})?[ZZZz]"
        ) {
            if let Some(fast) = parse_utc(s.as_bytes()) {
                proptest::prop_assert_eq!(Some(fast), general(&s), "{}", s);
            }
            proptest::prop_assert_eq!(parse_rfc3339(&s).ok(), general(&s), "{}", s);
        }

        #[test]
        fn formatting_matches_the_calendar(t in proptest::num::i64::ANY) {
            proptest::prop_assert_eq!(format_rfc3339(t), reference_format(t));
        }
    }

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
