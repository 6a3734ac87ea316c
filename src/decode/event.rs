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

use crate::timestamp::{parse_rfc3339, Nanos};

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
    fn invalid(message: impl Into<String>) -> Self {
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
#[derive(Clone, Debug)]
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
    /// The whole attributes object, for rules that read other attributes.
    pub attrs: Option<&'a RawValue>,
}

/// Decodes and validates one record (one NDJSON line, without its newline).
pub fn decode(record: &[u8]) -> Result<WireEvent<'_>, DecodeError> {
    if record.len() > MAX_RECORD_BYTES {
        return Err(DecodeError {
            reason: RejectReason::TooLarge,
            message: format!("record is {} bytes, the limit is {MAX_RECORD_BYTES}", record.len()),
        });
    }
    let text = std::str::from_utf8(record).map_err(|e| DecodeError::malformed(format!("not valid UTF-8: {e}")))?;
    match text.trim_start().as_bytes().first() {
        Some(b'{') => {}
        Some(_) => return Err(DecodeError::malformed("not a JSON object")),
        None => return Err(DecodeError::malformed("empty record")),
    }
    // Fast path: one derive-based pass. Anything unusual (an error, CloudEvents, an
    // escape in `ts`) takes the careful path below, which names the field at fault.
    if let Ok(fast) = serde_json::from_str::<FastFields<'_>>(text) {
        if let Some(ev) = fast.validate() {
            return Ok(ev);
        }
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

/// The plain form as the common case has it; `None` from [`FastFields::validate`] means
/// "take the careful path", never "invalid".
#[derive(Deserialize)]
struct FastFields<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(borrow)]
    tenant: Cow<'a, str>,
    #[serde(borrow)]
    conversation: Cow<'a, str>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow, default)]
    attrs: Option<&'a RawValue>,
    #[serde(default)]
    specversion: Option<IgnoredAny>,
}

impl<'a> FastFields<'a> {
    fn validate(self) -> Option<WireEvent<'a>> {
        let in_bounds = |s: &str, max: usize| !s.is_empty() && s.len() <= max;
        if self.specversion.is_some()
            || !in_bounds(&self.id, 256)
            || !in_bounds(&self.kind, 128)
            || !in_bounds(&self.tenant, 256)
            || !in_bounds(&self.conversation, 256)
        {
            return None;
        }
        let ts = parse_rfc3339(&self.ts).ok()?;
        let attrs = object_or_null(self.attrs).ok()?;
        let (mut intent, mut cost_usd) = (None, None);
        if let Some(raw) = attrs {
            let text = raw.get();
            // Only attributes that name a field the engine reads need a second look.
            if memchr::memmem::find(text.as_bytes(), b"intent").is_some()
                || memchr::memmem::find(text.as_bytes(), b"cost_usd").is_some()
            {
                let found = match scan_known(text) {
                    Some((i, c)) => read_known(i, c, PLAIN_NAMES),
                    None => serde_json::from_str::<KnownAttrs<'a>>(text).ok()?.read(PLAIN_NAMES),
                };
                (intent, cost_usd) = found.ok()?;
            }
        }
        Some(WireEvent {
            id: self.id,
            kind: self.kind,
            tenant: self.tenant,
            conversation: self.conversation,
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

/// The raw values of the top-level `intent` and `cost_usd` of an attributes object that
/// serde_json has already validated, found without parsing it again. `None` means "ask
/// serde" (a key with an escape, or a known key given twice, which serde rejects).
fn scan_known(text: &str) -> Option<(Option<&str>, Option<&str>)> {
    let b = text.as_bytes();
    let (mut intent, mut cost, mut tenant) = (None, None, None);
    let mut i = 1;
    loop {
        i = skip_ws(b, i);
        match *b.get(i)? {
            b'}' => return Some((intent, cost)),
            b',' => {
                i += 1;
                continue;
            }
            b'"' => {}
            _ => return None,
        }
        let key_end = i + 1 + memchr::memchr2(b'"', b'\\', &b[i + 1..])?;
        if b[key_end] == b'\\' {
            return None;
        }
        let key = &text[i + 1..key_end];
        i = skip_ws(b, key_end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i = skip_ws(b, i + 1);
        let start = i;
        i = skip_value(b, i)?;
        let slot = match key {
            "intent" => &mut intent,
            "cost_usd" => &mut cost,
            "tenant" => &mut tenant,
            _ => continue,
        };
        if slot.is_some() {
            return None;
        }
        *slot = Some(&text[start..i]);
    }
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r')) {
        i += 1;
    }
    i
}

/// The end of the string starting at `b[i]` (a quote).
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        let k = j + memchr::memchr2(b'"', b'\\', b.get(j..)?)?;
        if b[k] == b'"' {
            return Some(k + 1);
        }
        j = k + 2;
    }
}

/// The end of the (valid) JSON value starting at `b[i]`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let mut j = i;
            while b.get(j).is_some_and(|c| !matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')) {
                j += 1;
            }
            Some(j)
        }
    }
}

fn non_null(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| r.get() != "null")
}

/// The attributes object: absent and `null` are both `None`; any other JSON type is an error.
fn object_or_null(raw: Option<&RawValue>) -> Result<Option<&RawValue>, ()> {
    match non_null(raw) {
        Some(r) if r.get().starts_with('{') => Ok(Some(r)),
        Some(_) => Err(()),
        None => Ok(None),
    }
}

impl<'a> Fields<'a> {
    fn validate(self) -> Result<WireEvent<'a>, DecodeError> {
        let cloud = self.specversion.is_some();
        let (ts_name, conv_name, attrs_name) =
            if cloud { ("time", "subject", "data") } else { ("ts", "conversation", "attrs") };
        let (ts_raw, conv_raw, attrs_raw) =
            if cloud { (self.time, self.subject, self.data) } else { (self.ts, self.conversation, self.attrs) };

        let id = required_str(self.id, "id", 256)?;
        let kind = required_str(self.kind, "type", 128)?;
        let conversation = required_str(conv_raw, conv_name, 256)?;
        let ts_text = required_str(ts_raw, ts_name, 64)?;
        let ts = parse_rfc3339(&ts_text).map_err(|e| DecodeError::invalid(format!("field `{ts_name}`: {e}")))?;

        let attrs = object_or_null(attrs_raw)
            .map_err(|()| DecodeError::invalid(format!("field `{attrs_name}`: expected an object")))?;
        let known = match attrs {
            Some(raw) => serde_json::from_str::<KnownAttrs<'a>>(raw.get())
                .map_err(|e| DecodeError::invalid(format!("field `{attrs_name}`: {}", strip_position(&e))))?,
            None => KnownAttrs { intent: None, cost_usd: None, tenant: None },
        };

        let tenant = if cloud {
            let field = "data.tenant";
            required_str(known.tenant, field, 256)?
        } else {
            required_str(self.tenant, "tenant", 256)?
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
        assert!(e.attrs.unwrap().get().contains("model"));
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
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = decode(&bytes);
        }
        #[test]
        fn never_panics_on_jsonish(s in r#"\{("[a-z]{1,6}":("[^"]{0,5}"|[0-9.e-]{1,5}|\{\}|null),?){0,8}\}"#) {
            let _ = decode(s.as_bytes());
        }

        /// The scanner agrees with a full serde parse on any valid attributes object:
        /// the same raw `intent` and `cost_usd`, and it declines what serde rejects.
        #[test]
        fn the_attribute_scanner_agrees_with_serde(
            pairs in proptest::collection::vec((
                r#"intent|cost_usd|tenant|model|int\\u0065nt|x"#,
                r#""[a-z é{}\[\],:]{0,4}"|"a\\"b\\\\"|-?[0-9]{1,3}(\.[0-9]{1,3})?|null|true|\{\}|\[1,\{"intent":"i"\},"\]\}"\]|\{"cost_usd":\[\]\}"#,
                r#"[ \n]{0,2}"#,
            ), 0..6),
        ) {
            let body: Vec<String> = pairs.iter().map(|(k, v, ws)| format!("{ws}\"{k}\"{ws}:{ws}{v}{ws}")).collect();
            let text = format!("{{{}}}", body.join(","));
            // The scanner's input is what serde already validated as an object.
            proptest::prop_assume!(serde_json::from_str::<&RawValue>(&text).is_ok());
            let serde = serde_json::from_str::<KnownAttrs<'_>>(&text);
            match scan_known(&text) {
                Some((intent, cost)) => {
                    let known = serde.expect("serde accepts what the scanner reads");
                    // serde reads `null` as absent; `read_known` does the same with the text.
                    fn present(v: Option<&str>) -> Option<&str> { v.filter(|t| *t != "null") }
                    proptest::prop_assert_eq!(present(intent), known.intent.map(RawValue::get), "{}", text);
                    proptest::prop_assert_eq!(present(cost), known.cost_usd.map(RawValue::get), "{}", text);
                }
                None => proptest::prop_assert!(
                    serde.is_err() || text.contains('\\'),
                    "declined only for duplicates or escaped keys: {}", text
                ),
            }
        }
    }
}
