//! The wire event of SPEC section 1, decoded from one JSON record without copying:
//! plain form (`ts`, `tenant`, `conversation`, `attrs`) and CloudEvents 1.0 structured
//! form (`time`, `subject`, `data.tenant`, `data` as attributes).
//!
//! Each field is first taken as a raw JSON slice, then checked on its own, so an error
//! names the field that is wrong instead of a column number.

use std::borrow::Cow;

use rust_decimal::Decimal;
use serde::de::{self, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use super::scan::{scan, Scanned};
use crate::timestamp::{parse_rfc3339, Nanos};

/// Longest id, conversation and tenant; longest type; longest timestamp text.
const MAX_KEY_BYTES: usize = 256;
const MAX_TYPE_BYTES: usize = 128;
const MAX_TS_BYTES: usize = 64;

/// Records over this many bytes are rejected as `too_large`.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The largest `cost_usd` accepted, so sums can never overflow a decimal.
pub const MAX_COST_USD: Decimal = Decimal::from_parts(1_000_000_000, 0, 0, false, 0);

/// Why a record was rejected (the `reason` of a dead letter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// Not a JSON object (syntax error, another JSON type, invalid UTF-8).
    Malformed,
    /// A JSON object whose fields break the contract.
    Invalid,
    /// Over [`MAX_RECORD_BYTES`].
    TooLarge,
    /// `ts` below the watermark when it arrived.
    Late,
}

impl RejectReason {
    pub const ALL: [RejectReason; 4] = [Self::Malformed, Self::Invalid, Self::TooLarge, Self::Late];
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::Invalid => "invalid",
            Self::TooLarge => "too_large",
            Self::Late => "late",
        }
    }
}

/// A decoding failure: the reason class and a message naming what is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason:?}: {message}")]
pub struct DecodeError {
    pub reason: RejectReason,
    pub message: String,
}

impl DecodeError {
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        DecodeError { reason: RejectReason::Invalid, message: message.into() }
    }
    fn malformed(message: impl Into<String>) -> Self {
        DecodeError { reason: RejectReason::Malformed, message: message.into() }
    }
}

/// Decodes one record as a source delivered it: `truncated` records (over the limit) are
/// `too_large`, and with `not_after` set an event whose `ts` is later is `invalid`
/// (too far ahead of the wall clock at arrival). The one check every intake shares, so
/// an HTTP response and the dead letters always agree.
pub fn admit(
    record: &[u8],
    size: u64,
    truncated: bool,
    not_after: Option<Nanos>,
) -> Result<WireEvent<'_>, DecodeError> {
    if truncated || record.len() > MAX_RECORD_BYTES {
        return Err(DecodeError {
            reason: RejectReason::TooLarge,
            message: format!("record is {size} bytes, the limit is {MAX_RECORD_BYTES}"),
        });
    }
    let ev = decode(record)?;
    if let Some(limit) = not_after {
        if ev.ts > limit {
            return Err(DecodeError::invalid(format!(
                "field `ts` ({}) is too far in the future: the latest accepted on arrival was {}",
                crate::timestamp::format_rfc3339(ev.ts),
                crate::timestamp::format_rfc3339(limit)
            )));
        }
    }
    Ok(ev)
}

/// A validated event, borrowing from the record it was decoded from.
#[derive(Clone, Debug, PartialEq)]
pub struct WireEvent<'a> {
    pub id: Cow<'a, str>,
    pub kind: Cow<'a, str>,
    pub tenant: Cow<'a, str>,
    pub conversation: Cow<'a, str>,
    pub ts: Nanos,
    /// `attrs.intent` (plain form) or `data.intent` (CloudEvents).
    pub intent: Option<Cow<'a, str>>,
    /// `cost_usd`, exact.
    pub cost_usd: Option<Decimal>,
    /// The JSON text of the attributes object, for rules that read other attributes.
    pub attrs: Option<&'a str>,
}

/// Decodes and validates one record (one NDJSON line, without its newline).
pub fn decode(record: &[u8]) -> Result<WireEvent<'_>, DecodeError> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(DecodeError {
            reason: RejectReason::TooLarge,
            message: format!("record is {} bytes, the limit is {MAX_RECORD_BYTES}", record.len()),
        });
    }
    // simdutf8 checks a record several times faster than the standard library; on a
    // failure the standard library says where the bad byte is.
    let text = simdutf8::basic::from_utf8(record)
        .or_else(|_| std::str::from_utf8(record))
        .map_err(|e| DecodeError::malformed(format!("not valid UTF-8: {e}")))?;
    // Fast path: one pass over the simple form. Anything else (an escape, CloudEvents,
    // any error) takes the careful path, which names the field at fault.
    if let Some(ev) = scan(text).and_then(Scanned::event) {
        return Ok(ev);
    }
    careful(text)
}

/// The careful path: every field taken as raw JSON, then checked on its own.
fn careful(text: &str) -> Result<WireEvent<'_>, DecodeError> {
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(_) => return Err(DecodeError::malformed("not a JSON object")),
        None => return Err(DecodeError::malformed("empty record")),
    }
    let fields: Fields<'_> = serde_json::from_str(text).map_err(|e| {
        use serde_json::error::Category;
        match e.classify() {
            Category::Data => DecodeError::invalid(strip_position(&e)),
            _ => DecodeError::malformed(format!("not a JSON object: {e}")),
        }
    })?;
    fields.validate()
}

fn strip_position(e: &serde_json::Error) -> String {
    let s = e.to_string();
    match s.find(" at line ") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

impl<'a> Scanned<'a> {
    /// The event of a record the scanner read; `None` leaves it to the careful path
    /// (which then names what is wrong), never "invalid".
    fn event(self) -> Option<WireEvent<'a>> {
        let in_bounds = |s: &str, max: usize| !s.is_empty() && s.len() <= max;
        if !in_bounds(self.id, MAX_KEY_BYTES)
            || !in_bounds(self.kind, MAX_TYPE_BYTES)
            || !in_bounds(self.tenant, MAX_KEY_BYTES)
            || !in_bounds(self.conversation, MAX_KEY_BYTES)
            || !in_bounds(self.ts, MAX_TS_BYTES)
        {
            return None;
        }
        let ts = parse_rfc3339(self.ts).ok()?;
        let attrs = object_or_null(self.attrs).ok()?;
        let (intent, cost_usd) = read_known(self.intent, self.cost_usd, PLAIN_NAMES).ok()?;
        Some(WireEvent {
            id: Cow::Borrowed(self.id),
            kind: Cow::Borrowed(self.kind),
            tenant: Cow::Borrowed(self.tenant),
            conversation: Cow::Borrowed(self.conversation),
            ts,
            intent,
            cost_usd,
            attrs,
        })
    }
}

/// Top-level fields as raw JSON slices; checked one by one in [`Fields::validate`].
#[derive(Default)]
struct Fields<'a> {
    id: Option<&'a RawValue>,
    kind: Option<&'a RawValue>,
    tenant: Option<&'a RawValue>,
    conversation: Option<&'a RawValue>,
    ts: Option<&'a RawValue>,
    attrs: Option<&'a RawValue>,
    // CloudEvents structured form
    specversion: Option<&'a RawValue>,
    time: Option<&'a RawValue>,
    subject: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut f = Fields::default();
                while let Some(key) = map.next_key::<Cow<'de, str>>()? {
                    let slot = match key.as_ref() {
                        "id" => &mut f.id,
                        "type" => &mut f.kind,
                        "tenant" => &mut f.tenant,
                        "conversation" => &mut f.conversation,
                        "ts" => &mut f.ts,
                        "attrs" => &mut f.attrs,
                        "specversion" => &mut f.specversion,
                        "time" => &mut f.time,
                        "subject" => &mut f.subject,
                        "data" => &mut f.data,
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                            continue;
                        }
                    };
                    if slot.is_some() {
                        return Err(de::Error::custom(format_args!("duplicate field `{key}`")));
                    }
                    *slot = Some(map.next_value()?);
                }
                Ok(f)
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// The attributes the engine itself reads.
#[derive(Deserialize)]
struct KnownAttrs<'a> {
    #[serde(borrow, default)]
    intent: Option<&'a RawValue>,
    #[serde(borrow, default)]
    cost_usd: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tenant: Option<&'a RawValue>,
}

/// Field names of `intent` and `cost_usd` in messages, by form.
const PLAIN_NAMES: (&str, &str) = ("attrs.intent", "attrs.cost_usd");
const CLOUD_NAMES: (&str, &str) = ("data.intent", "data.cost_usd");

impl<'a> KnownAttrs<'a> {
    /// `intent` and `cost_usd`, checked; `null` counts as absent.
    fn read(&self, names: (&str, &str)) -> Result<(Option<Cow<'a, str>>, Option<Decimal>), DecodeError> {
        read_known(self.intent.map(RawValue::get), self.cost_usd.map(RawValue::get), names)
    }
}

/// Checks `intent` and `cost_usd` given as raw JSON text; `null` counts as absent.
fn read_known<'a>(
    intent: Option<&'a str>,
    cost: Option<&'a str>,
    (intent_name, cost_name): (&str, &str),
) -> Result<(Option<Cow<'a, str>>, Option<Decimal>), DecodeError> {
    let intent = match intent.filter(|t| *t != "null") {
        Some(text) => Some(string_value(text, intent_name)?),
        None => None,
    };
    let cost = match cost.filter(|t| *t != "null") {
        Some(text) => Some(parse_cost(text, cost_name)?),
        None => None,
    };
    Ok((intent, cost))
}

/// The attributes object's JSON text: absent and `null` are both `None`; any other JSON
/// type is an error.
fn object_or_null(raw: Option<&str>) -> Result<Option<&str>, ()> {
    match raw {
        None | Some("null") => Ok(None),
        Some(r) if r.starts_with('{') => Ok(Some(r)),
        Some(_) => Err(()),
    }
}

impl<'a> Fields<'a> {
    fn validate(self) -> Result<WireEvent<'a>, DecodeError> {
        let cloud = self.specversion.is_some();
        let (ts_name, conv_name, attrs_name) =
            if cloud { ("time", "subject", "data") } else { ("ts", "conversation", "attrs") };
        let (ts_raw, conv_raw, attrs_raw) =
            if cloud { (self.time, self.subject, self.data) } else { (self.ts, self.conversation, self.attrs) };

        let id = required_str(self.id, "id", MAX_KEY_BYTES)?;
        let kind = required_str(self.kind, "type", MAX_TYPE_BYTES)?;
        let conversation = required_str(conv_raw, conv_name, MAX_KEY_BYTES)?;
        let ts_text = required_str(ts_raw, ts_name, MAX_TS_BYTES)?;
        let ts = parse_rfc3339(&ts_text).map_err(|e| DecodeError::invalid(format!("field `{ts_name}`: {e}")))?;

        let attrs = object_or_null(attrs_raw.map(RawValue::get))
            .map_err(|()| DecodeError::invalid(format!("field `{attrs_name}`: expected an object")))?;
        let known = match attrs {
            Some(raw) => serde_json::from_str::<KnownAttrs<'a>>(raw)
                .map_err(|e| DecodeError::invalid(format!("field `{attrs_name}`: {}", strip_position(&e))))?,
            None => KnownAttrs { intent: None, cost_usd: None, tenant: None },
        };

        let tenant = if cloud {
            let field = "data.tenant";
            required_str(known.tenant, field, MAX_KEY_BYTES)?
        } else {
            required_str(self.tenant, "tenant", MAX_KEY_BYTES)?
        };
        let (intent, cost_usd) = known.read(if cloud { CLOUD_NAMES } else { PLAIN_NAMES })?;
        Ok(WireEvent { id, kind, tenant, conversation, ts, intent, cost_usd, attrs })
    }
}

fn required_str<'a>(raw: Option<&'a RawValue>, name: &str, max: usize) -> Result<Cow<'a, str>, DecodeError> {
    let raw = raw.ok_or_else(|| DecodeError::invalid(format!("field `{name}` is missing")))?;
    let s = string_value(raw.get(), name)?;
    if s.is_empty() {
        return Err(DecodeError::invalid(format!("field `{name}` is empty")));
    }
    if s.len() > max {
        return Err(DecodeError::invalid(format!("field `{name}` is {} bytes, the limit is {max}", s.len())));
    }
    Ok(s)
}

/// A JSON string's value; borrows when it has no escapes.
fn string_value<'a>(text: &'a str, name: &str) -> Result<Cow<'a, str>, DecodeError> {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'"') {
        return Err(DecodeError::invalid(format!("field `{name}`: expected a string, got {}", json_kind(text))));
    }
    let inner = &text[1..text.len() - 1];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(text)
        .map(Cow::Owned)
        .map_err(|e| DecodeError::invalid(format!("field `{name}`: {}", strip_position(&e))))
}

fn json_kind(text: &str) -> &'static str {
    match text.as_bytes().first() {
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// `cost_usd`: a non-negative decimal given as a string or a JSON number, parsed exactly.
fn parse_cost(text: &str, name: &str) -> Result<Decimal, DecodeError> {
    match plain_cost(text) {
        Some(value) => Ok(value),
        None => parse_cost_general(text, name),
    }
}

fn parse_cost_general(text: &str, name: &str) -> Result<Decimal, DecodeError> {
    let digits: Cow<'_, str> = if text.starts_with('"') {
        string_value(text, name)?
    } else if matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9')) {
        Cow::Borrowed(text)
    } else {
        return Err(DecodeError::invalid(format!(
            "field `{name}`: expected a decimal string or number, got {}",
            json_kind(text)
        )));
    };
    let digits = digits.trim();
    let value =
        if digits.contains(['e', 'E']) { Decimal::from_scientific(digits) } else { Decimal::from_str_exact(digits) }
            .map_err(|e| DecodeError::invalid(format!("field `{name}`: {digits:?} is not a decimal ({e})")))?;
    if value.is_sign_negative() && !value.is_zero() {
        return Err(DecodeError::invalid(format!("field `{name}`: {digits} is negative")));
    }
    if value > MAX_COST_USD {
        return Err(DecodeError::invalid(format!("field `{name}`: {digits} is over the limit of {MAX_COST_USD}")));
    }
    // `-0` and `0.000` are both plain zero.
    Ok(if value.is_zero() { Decimal::ZERO } else { value })
}

/// The common `"0.003301"` (or the same as a JSON number): at most 18 digits with at
/// most one point, read straight into a mantissa and scale. `None` for anything else,
/// which the general parser then reads with its messages.
fn plain_cost(text: &str) -> Option<Decimal> {
    let b = text.as_bytes();
    let digits = match b {
        [b'"', inner @ .., b'"'] => inner,
        _ => b,
    };
    // 18 digits always fit the mantissa.
    if digits.is_empty() || digits.len() > 18 {
        return None;
    }
    let (mut mantissa, mut scale, mut point, mut count) = (0i64, 0u32, false, 0);
    for &c in digits {
        match c {
            b'0'..=b'9' => {
                mantissa = mantissa * 10 + i64::from(c - b'0');
                scale += u32::from(point);
                count += 1;
            }
            b'.' if !point => point = true,
            _ => return None,
        }
    }
    // "1." and ".5" are left to the general parser.
    if count == 0 || digits[0] == b'.' || digits[digits.len() - 1] == b'.' {
        return None;
    }
    let value = Decimal::try_new(mantissa, scale).ok()?;
    if value > MAX_COST_USD {
        return None;
    }
    Some(if value.is_zero() { Decimal::ZERO } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn ok(s: &str) -> WireEvent<'_> {
        decode(s.as_bytes()).unwrap_or_else(|e| panic!("{s}: {e}"))
    }
    fn err(s: &str) -> DecodeError {
        decode(s.as_bytes()).expect_err(s)
    }

    const BASE: &str = r#"{"id":"e1","type":"llm.call","tenant":"acme","conversation":"c1","ts":"2026-06-12T10:00:00Z","attrs":{"cost_usd":"0.0123","model":"m"}}"#;

    #[test]
    fn plain_form() {
        let e = ok(BASE);
        assert_eq!(e.id, "e1");
        assert_eq!(e.kind, "llm.call");
        assert_eq!(e.tenant, "acme");
        assert_eq!(e.conversation, "c1");
        assert_eq!(e.cost_usd, Some(Decimal::from_str("0.0123").unwrap()));
        assert!(matches!(e.id, Cow::Borrowed(_)));
        assert!(e.attrs.unwrap().contains("model"));
    }

    #[test]
    fn cloudevents_form() {
        let e = ok(
            r#"{"specversion":"1.0","id":"x","source":"/p","type":"conversation.started","time":"2026-06-12T10:00:00Z","subject":"c9","data":{"tenant":"t1","intent":"faq"}}"#,
        );
        assert_eq!(e.conversation, "c9");
        assert_eq!(e.tenant, "t1");
        assert_eq!(e.intent.as_deref(), Some("faq"));
        let err =
            err(r#"{"specversion":"1.0","id":"x","type":"t","time":"2026-06-12T10:00:00Z","subject":"c9","data":{}}"#);
        assert_eq!(err.message, "field `data.tenant` is missing");
    }

    #[test]
    fn cost_as_number_is_exact() {
        let e = ok(
            r#"{"id":"e","type":"tool.called","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z","attrs":{"cost_usd":0.1}}"#,
        );
        assert_eq!(e.cost_usd.unwrap().to_string(), "0.1");
        let e = ok(
            r#"{"id":"e","type":"tool.called","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z","attrs":{"cost_usd":1.5e-3}}"#,
        );
        assert_eq!(e.cost_usd.unwrap().to_string(), "0.0015");
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let e = ok(r#"{"id":"e\u0031","type":"x","tenant":"a\"b","conversation":"c","ts":"2026-06-12T10:00:00Z"}"#);
        assert_eq!(e.id, "e1");
        assert_eq!(e.tenant, "a\"b");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (r#"{"type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z"}"#, "field `id` is missing"),
            (
                r#"{"id":5,"type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z"}"#,
                "field `id`: expected a string, got a number",
            ),
            (
                r#"{"id":"","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z"}"#,
                "field `id` is empty",
            ),
            (
                r#"{"id":"e","type":"x","tenant":"t","conversation":"c","ts":"yesterday"}"#,
                "field `ts`: not an RFC 3339",
            ),
            (
                r#"{"id":"e","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z","attrs":[1]}"#,
                "field `attrs`: expected an object",
            ),
            (
                r#"{"id":"e","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z","attrs":{"cost_usd":"-1"}}"#,
                "field `attrs.cost_usd`: -1 is negative",
            ),
            (
                r#"{"id":"e","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z","attrs":{"cost_usd":"abc"}}"#,
                "field `attrs.cost_usd`: \"abc\" is not a decimal",
            ),
            (
                r#"{"id":"e","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z","attrs":{"cost_usd":true}}"#,
                "expected a decimal string or number, got a boolean",
            ),
            (
                r#"{"id":"e","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z","attrs":{"intent":3}}"#,
                "field `attrs.intent`: expected a string",
            ),
            (
                r#"{"id":"e","id":"f","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z"}"#,
                "duplicate field `id`",
            ),
        ];
        for (input, want) in cases {
            let e = err(input);
            assert_eq!(e.reason, RejectReason::Invalid, "{input}");
            assert!(e.message.starts_with(want) || e.message.contains(want), "{input}: got {:?}", e.message);
        }
        let long = format!(
            r#"{{"id":"{}","type":"x","tenant":"t","conversation":"c","ts":"2026-06-12T10:00:00Z"}}"#,
            "a".repeat(257)
        );
        assert_eq!(err(&long).message, "field `id` is 257 bytes, the limit is 256");
    }

    #[test]
    fn malformed_and_too_large() {
        for input in ["", "   ", "[1,2]", "42", "\"s\"", "{", "{\"id\":", "not json", "{} trailing"] {
            assert_eq!(err(input).reason, RejectReason::Malformed, "{input:?}");
        }
        assert_eq!(decode(&[0xff, 0xfe, b'{']).unwrap_err().reason, RejectReason::Malformed);
        let big = vec![b' '; MAX_RECORD_BYTES + 1];
        assert_eq!(decode(&big).unwrap_err().reason, RejectReason::TooLarge);
    }

    proptest::proptest! {
        /// The plain-cost fast path reads exactly what the general parser reads,
        /// scale included (it shows in the verdict).
        #[test]
        fn plain_costs_read_as_the_general_parser_reads(text in r#""?[0-9]{0,12}(\.[0-9]{0,10})?"?|[0-9.]{1,22}"#) {
            if let Some(fast) = plain_cost(&text) {
                let general = parse_cost_general(&text, "cost_usd").expect("the general parser accepts it");
                proptest::prop_assert_eq!(fast.to_string(), general.to_string(), "{}", text);
            }
        }

        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode(&bytes);
        }
        #[test]
        fn never_panics_on_jsonish(s in r#"\{("[a-z]{1,6}":("[^"]{0,5}"|[0-9.e-]{1,5}|\{\}|null),?){0,8}\}"#) {
            let _ = decode(s.as_bytes());
        }

        /// Whatever the one-pass scanner accepts, the careful path accepts as the same
        /// event: the scanner only ever declines more.
        #[test]
        fn the_scanner_agrees_with_the_careful_path(
            extra in proptest::collection::vec((KEY, VALUE), 0..4),
            attrs in proptest::collection::vec((ATTR_KEY, VALUE), 0..5),
            required in proptest::collection::vec(STRING, 5),
            ws in "[ \t\n]{0,2}",
            drop in proptest::option::of(0usize..10),
            swap in (0usize..10, 0usize..10),
            cut in proptest::option::of((0usize..400, proptest::sample::select(vec!["", "\\", "\"", "}", ",", "\u{1}", "é"]))),
        ) {
            let names = ["id", "type", "tenant", "conversation", "ts"];
            let mut pairs: Vec<(String, String)> =
                names.iter().zip(&required).map(|(k, v)| (format!("\"{k}\""), v.clone())).collect();
            let body: Vec<String> = attrs.iter().map(|(k, v)| format!("{ws}\"{k}\"{ws}:{ws}{v}")).collect();
            pairs.push(("\"attrs\"".into(), format!("{{{}}}", body.join(","))));
            pairs.extend(extra.iter().map(|(k, v)| (format!("\"{k}\""), v.clone())));
            // Fields drop out or change places.
            if let Some(i) = drop.filter(|&i| i < pairs.len()) {
                pairs.remove(i);
            }
            if swap.0 < pairs.len() && swap.1 < pairs.len() {
                pairs.swap(swap.0, swap.1);
            }
            let members: Vec<String> = pairs.iter().map(|(k, v)| format!("{ws}{k}{ws}:{ws}{v}{ws}")).collect();
            let mut text = format!("{ws}{{{}}}{ws}", members.join(","));
            if let Some((at, with)) = cut {
                let mut at = at.min(text.len());
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                // One character (or none, at the end) replaced: a break in the syntax.
                let end = text[at..].chars().next().map_or(at, |c| at + c.len_utf8());
                text.replace_range(at..end, with);
            }
            if let Some(fast) = scan(&text).and_then(Scanned::event) {
                let slow = careful(&text);
                proptest::prop_assert_eq!(slow.as_ref(), Ok(&fast), "{}", text);
            }
        }
    }

    const STRING: &str =
        r#""2026-06-12T10:00:0[0-9](\.[0-9]{1,3})?Z"|"[a-z]{1,6}"|"a\\u0062"|"x\\"y"|"é"|""|[0-9]|null"#;
    const KEY: &str = r#"id|type|attrs|time|subject|data|specversion|other|i\\u0064|x"#;
    const ATTR_KEY: &str = r#"intent|cost_usd|tenant|model|int\\u0065nt|x"#;
    const VALUE: &str = r#""[a-z é{}\[\],:]{0,4}"|"0\.0[0-9]{1,3}"|"a\\"b"|-?[0-9]{1,3}(\.[0-9]{1,3})?([eE][+-]?[0-9])?|0[0-9]|1\.|null|true|false|nul|\{\}|\[\]|\[1,\{"intent":"i"\},"\]\}"\]|\{"a":\[\{"b":\[\]\}\]\}"#;
}
