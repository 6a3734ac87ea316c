//! Request bodies written as text: JSON strings escaped as serde_json escapes them,
//! decimals as their exact digits, form (`application/x-www-form-urlencoded`) pairs, and
//! the instants each platform takes. Writing the text directly keeps money exact (no
//! float, no intermediate `serde_json::Value`) and a batch of 500 events one string.

use std::fmt::Write;

use rust_decimal::Decimal;

use crate::timestamp::{rfc3339_str, Nanos, NANOS_PER_MILLI, NANOS_PER_SEC};

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it.
pub(super) fn json_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let short = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // `b` is ASCII, so `i` is a character boundary.
        out.push_str(&s[from..i]);
        if short.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.push_str(short);
        }
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out.push('"');
}

/// `-d`, with no negative zero (`-0.00` would read as a sign error downstream).
pub(super) fn negated(d: Decimal) -> Decimal {
    let mut n = -d;
    if n.is_zero() {
        n.set_sign_positive(true);
    }
    n
}

/// A JSON object being written: `{`, then fields, then [`Obj::close`].
pub(super) struct Obj<'o> {
    out: &'o mut String,
    first: bool,
}

impl<'o> Obj<'o> {
    pub(super) fn open(out: &'o mut String) -> Obj<'o> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        json_str(self.out, k);
        self.out.push(':');
    }

    pub(super) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        json_str(self.out, v);
        self
    }

    /// A decimal as a JSON string of its exact digits (`"1.50"`).
    pub(super) fn decimal(&mut self, k: &str, d: Decimal) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "\"{d}\"");
        self
    }

    /// A JSON number, written as its text (an integer, or [`unix_seconds_ms`]).
    pub(super) fn number(&mut self, k: &str, text: impl std::fmt::Display) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "{text}");
        self
    }

    /// A value that is already JSON text (a body written by this module).
    pub(super) fn raw(&mut self, k: &str, json: &str) -> &mut Self {
        self.key(k);
        self.out.push_str(json);
        self
    }

    /// An array of strings.
    pub(super) fn strs(&mut self, k: &str, items: &[String]) -> &mut Self {
        self.key(k);
        self.out.push('[');
        for (i, s) in items.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            json_str(self.out, s);
        }
        self.out.push(']');
        self
    }

    /// An RFC 3339 instant in UTC (`2026-06-12T00:13:10.027Z`), as a JSON string.
    pub(super) fn rfc3339(&mut self, k: &str, t: Nanos) -> &mut Self {
        self.key(k);
        self.out.push('"');
        self.out.push_str(rfc3339_str(t, &mut [0; 30]));
        self.out.push('"');
        self
    }

    /// A nested object under `k`; close it before writing more fields here.
    pub(super) fn obj(&mut self, k: &str) -> Obj<'_> {
        self.key(k);
        Obj::open(self.out)
    }

    pub(super) fn close(self) {
        self.out.push('}');
    }
}

/// Whole seconds since the epoch (rounded down: the second `t` falls in, so the
/// billing period never changes).
pub(super) fn unix_seconds(t: Nanos) -> i64 {
    t.div_euclid(NANOS_PER_SEC)
}

/// Seconds since the epoch with the milliseconds as decimals when there are any
/// (`1781223190`, `1781223190.027`); finer digits are dropped (rounded down).
pub(super) fn unix_seconds_ms(t: Nanos) -> String {
    let ms = t.rem_euclid(NANOS_PER_SEC) / NANOS_PER_MILLI;
    if ms == 0 {
        unix_seconds(t).to_string()
    } else {
        format!("{}.{ms:03}", unix_seconds(t))
    }
}

/// Appends `s` percent-encoded: every byte but the unreserved `A-Z a-z 0-9 - . _ ~`.
/// Right for a form value and for a URL path segment.
pub(super) fn percent(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
}

/// An `application/x-www-form-urlencoded` body. Keys are written as given (they are
/// fixed ASCII like `payload[value]`: square brackets stay literal, as Stripe's own
/// libraries send them); values are percent-encoded.
#[derive(Default)]
pub(super) struct Form {
    body: String,
}

impl Form {
    pub(super) fn pair(&mut self, key: &str, value: &str) -> &mut Self {
        if !self.body.is_empty() {
            self.body.push('&');
        }
        self.body.push_str(key);
        self.body.push('=');
        percent(&mut self.body, value);
        self
    }

    pub(super) fn into_body(self) -> String {
        self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in ["plain", "quote \" back \\ slash", "tab\tnew\nline\r", "\u{1}\u{1f}\u{8}\u{c}", "é ✓ \u{7f}"] {
            let mut out = String::new();
            json_str(&mut out, s);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn objects_nest_and_decimals_stay_exact() {
        let mut out = String::new();
        let mut o = Obj::open(&mut out);
        o.str("a", "x").decimal("amount", Decimal::new(150, 2));
        let mut inner = o.obj("p");
        inner.number("n", -1).rfc3339("t", 1_500_000_000);
        inner.close();
        o.strs("k", &["a".into(), "b\"".into()]).raw("r", "null");
        o.close();
        let want = r#"{"a":"x","amount":"1.50","p":{"n":-1,"t":"1970-01-01T00:00:01.5Z"},"k":["a","b\""],"r":null}"#;
        assert_eq!(out, want);
        assert_eq!(negated(Decimal::new(150, 2)).to_string(), "-1.50");
        assert_eq!(negated(Decimal::new(0, 2)).to_string(), "0.00");
    }

    #[test]
    fn instants_and_form_values() {
        let t = 1_781_223_190_027_900_000;
        assert_eq!((unix_seconds(t), unix_seconds_ms(t).as_str()), (1_781_223_190, "1781223190.027"));
        assert_eq!(unix_seconds_ms(1_781_223_190 * NANOS_PER_SEC), "1781223190");
        assert_eq!(unix_seconds(-1), -1, "before the epoch: the second it falls in");
        let mut f = Form::default();
        f.pair("a", "x y&z=1+é").pair("payload[v]", "1.50");
        assert_eq!(f.into_body(), "a=x%20y%26z%3D1%2B%C3%A9&payload[v]=1.50");
    }
}
