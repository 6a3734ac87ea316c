//! The verdict's JSON line, written directly: byte for byte what its `Serialize` impl
//! gives through serde_json, without the serializer's per-field dispatch (verdict
//! output was a seventh of replay time).

use std::io::Write;

use super::Verdict;
use crate::timestamp::rfc3339_str;

/// Appends `s` as a JSON string, escaped exactly as serde_json escapes it.
fn string(out: &mut Vec<u8>, s: &str) {
    text(out, s.as_bytes());
}

/// [`string`] for text held as bytes (the id list's entries, whole UTF-8 when pushed),
/// so writing them needs no UTF-8 check.
fn text(out: &mut Vec<u8>, s: &[u8]) {
    // No early exit, so the check vectorises; the strings are short.
    if s.iter().fold(false, |esc, &b| esc | (b < 0x20) | (b == b'"') | (b == b'\\')) {
        // Rare (ids are free text): the serializer's escaping, so both agree.
        let _ = serde_json::to_writer(&mut *out, &String::from_utf8_lossy(s));
    } else {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s);
        out.push(b'"');
    }
}

/// Appends `d` as its `Display` writes it (digits, the point at the scale), without the
/// formatting machinery; negative values (never money here) take `Display` itself.
fn decimal(out: &mut Vec<u8>, d: rust_decimal::Decimal) {
    if d.is_sign_negative() {
        let _ = write!(out, "{d}");
        return;
    }
    let mut buf = itoa::Buffer::new();
    let digits = buf.format(d.mantissa().unsigned_abs()).as_bytes();
    let scale = d.scale() as usize;
    match digits.len().checked_sub(scale) {
        Some(0) | None => {
            out.extend_from_slice(b"0.");
            out.resize(out.len() + scale - digits.len(), b'0');
            out.extend_from_slice(digits);
        }
        Some(whole) => {
            out.extend_from_slice(&digits[..whole]);
            if scale > 0 {
                out.push(b'.');
                out.extend_from_slice(&digits[whole..]);
            }
        }
    }
}

impl Verdict {
    /// Appends the verdict as one JSON object (no newline).
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"verdict_id\":");
        string(out, &self.verdict_id);
        out.extend_from_slice(b",\"outcome\":");
        string(out, &self.outcome);
        out.extend_from_slice(b",\"tenant\":");
        string(out, &self.tenant);
        out.extend_from_slice(b",\"conversation\":");
        string(out, &self.conversation);
        out.extend_from_slice(if self.billable { b",\"billable\":true" } else { b",\"billable\":false" });
        out.extend_from_slice(b",\"reason\":");
        string(out, &self.reason);
        out.extend_from_slice(b",\"tier\":");
        match self.tier {
            Some(t) => out.extend_from_slice(itoa::Buffer::new().format(t).as_bytes()),
            None => out.extend_from_slice(b"null"),
        }
        // Decimals print digits, '.' and '-' only: nothing to escape.
        out.extend_from_slice(b",\"amount\":\"");
        decimal(out, self.amount);
        out.extend_from_slice(b"\",\"currency\":");
        string(out, &self.currency);
        out.extend_from_slice(b",\"cost\":\"");
        decimal(out, self.cost);
        out.extend_from_slice(b"\",\"decided_at\":\"");
        out.extend_from_slice(rfc3339_str(self.decided_at, &mut [0; 30]).as_bytes());
        out.extend_from_slice(b"\",\"rule_version\":");
        string(out, &self.rule_version);
        out.extend_from_slice(b",\"events\":[");
        for (i, id) in self.events.0.iter_bytes().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            text(out, id);
        }
        out.push(b']');
        if let Some(e) = &self.error {
            out.extend_from_slice(b",\"error\":");
            string(out, e);
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rust_decimal::Decimal;

    use super::*;
    use crate::verdicts::EventIds;

    fn verdict(text: &str, ids: Vec<String>, tier: Option<u8>, cents: i64, t: i64, error: Option<String>) -> Verdict {
        Verdict {
            verdict_id: "0123456789abcdef0123456789abcdef".into(),
            outcome: format!("o{text}"),
            tenant: format!("t{text}"),
            conversation: text.to_string(),
            billable: tier.is_some(),
            reason: text.chars().rev().collect(),
            tier,
            amount: Decimal::new(cents, 2),
            currency: "USD".into(),
            cost: Decimal::new(-cents * 7, 6),
            decided_at: t,
            rule_version: format!("sha256:{text}"),
            events: EventIds(ids.iter().collect::<EventIds>().0),
            error,
        }
    }

    fn direct(v: &Verdict) -> String {
        let mut out = Vec::new();
        v.write_json(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn decimals_at_the_edges() {
        for d in [Decimal::new(5, 3), Decimal::new(0, 2), Decimal::ZERO, Decimal::new(123, 0), Decimal::new(1, 28)]
            .into_iter()
            .chain([Decimal::new(123, 3), Decimal::MAX, Decimal::new(-5, 1), Decimal::new(-0, 2)])
        {
            let mut out = Vec::new();
            decimal(&mut out, d);
            assert_eq!(String::from_utf8(out).unwrap(), d.to_string());
        }
    }

    #[test]
    fn plain_and_escaped_fields_match_serde() {
        for text in ["plain", "quote\" and \\ back", "tab\tnew\nline\u{1}", "üñï €", ""] {
            let v =
                verdict(text, vec!["a".into(), text.to_string() + "x"], Some(3), 150, 1_781_222_400_123_000_000, None);
            assert_eq!(direct(&v), serde_json::to_string(&v).unwrap());
            let v = verdict(text, vec!["a".into()], None, 0, -5, Some(format!("boom {text}")));
            assert_eq!(direct(&v), serde_json::to_string(&v).unwrap());
        }
    }

    proptest! {
        #[test]
        fn decimals_are_written_as_display_writes_them(lo in any::<u64>(), hi in any::<u32>(), negative in any::<bool>(), scale in 0u32..=28) {
            let d = Decimal::from_parts(lo as u32, (lo >> 32) as u32, hi >> (hi % 33).min(31), negative, scale);
            let mut out = Vec::new();
            decimal(&mut out, d);
            prop_assert_eq!(String::from_utf8(out).unwrap(), d.to_string());
        }

        #[test]
        fn any_verdict_matches_serde(
            text in any::<String>(),
            ids in prop::collection::vec("[^\u{0}]{1,20}", 1..5),
            tier in prop::option::of(1u8..=255),
            cents in any::<i32>(),
            t in any::<i64>(),
            error in prop::option::of(any::<String>()),
        ) {
            let v = verdict(&text, ids, tier, cents as i64, t, error);
            prop_assert_eq!(direct(&v), serde_json::to_string(&v).unwrap());
        }
    }
}
