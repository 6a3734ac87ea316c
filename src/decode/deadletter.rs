//! Dead letters: every rejected record, with its reason, the message naming what is
//! wrong, and where it came from (source, line, byte offset), so nothing is lost.

use std::borrow::Cow;

use base64::Engine as _;
use serde::Serialize;

use super::event::RejectReason;

/// How much of a `too_large` record is kept in its dead letter; the position and size
/// say where to find the rest.
pub const TOO_LARGE_EXCERPT: usize = 4096;

#[derive(Debug, Serialize)]
pub struct DeadLetter<'a> {
    pub reason: RejectReason,
    pub error: Cow<'a, str>,
    pub source: &'a str,
    /// 1-based line number in the source.
    pub line: u64,
    /// Byte offset of the record's first byte in the source.
    pub offset: u64,
    /// Size of the whole record in bytes.
    pub size: u64,
    /// The record, when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<Cow<'a, str>>,
    /// The record's bytes in base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record_base64: Option<String>,
    /// Whether `record` holds only the start of the record.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl<'a> DeadLetter<'a> {
    pub fn new(
        reason: RejectReason,
        error: impl Into<Cow<'a, str>>,
        source: &'a str,
        line: u64,
        offset: u64,
        record: &'a [u8],
        size: u64,
    ) -> Self {
        let (kept, truncated) = if reason == RejectReason::TooLarge && record.len() > TOO_LARGE_EXCERPT {
            (&record[..TOO_LARGE_EXCERPT], true)
        } else {
            (record, (record.len() as u64) < size)
        };
        let (text, b64) = match std::str::from_utf8(kept) {
            Ok(s) => (Some(Cow::Borrowed(s)), None),
            // A cut can split a UTF-8 sequence: keep the valid prefix as text.
            Err(e) if truncated && e.error_len().is_none() => {
                (Some(Cow::Borrowed(std::str::from_utf8(&kept[..e.valid_up_to()]).unwrap_or(""))), None)
            }
            Err(_) => (None, Some(base64::engine::general_purpose::STANDARD.encode(kept))),
        };
        DeadLetter {
            reason,
            error: error.into(),
            source,
            line,
            offset,
            size,
            record: text,
            record_base64: b64,
            truncated,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_text_or_base64() {
        let d = DeadLetter::new(RejectReason::Malformed, "x", "f", 3, 10, b"{bad", 4);
        let j = serde_json::to_string(&d).unwrap();
        assert_eq!(
            j,
            r#"{"reason":"malformed","error":"x","source":"f","line":3,"offset":10,"size":4,"record":"{bad"}"#
        );
        let d = DeadLetter::new(RejectReason::Malformed, "x", "f", 1, 0, &[0xff, 0x00], 2);
        assert_eq!(d.record_base64.as_deref(), Some("/wA="));
        let big = vec![b'a'; TOO_LARGE_EXCERPT * 2];
        let d = DeadLetter::new(RejectReason::TooLarge, "x", "f", 1, 0, &big, 3 << 20);
        assert!(d.truncated);
        assert_eq!(d.record.unwrap().len(), TOO_LARGE_EXCERPT);
    }
}
