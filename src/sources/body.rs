//! The records of an HTTP ingest body: NDJSON (one record per line) or one JSON array
//! of records. Each record keeps its line number and byte offset in the body, so the
//! response and the dead letters can say where a bad one was.

use crate::decode::MAX_RECORD_BYTES;

/// One record of a body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BodyRecord<'a> {
    pub bytes: &'a [u8],
    /// 1-based line of the record's start.
    pub line: u64,
    pub offset: u64,
    /// Whether it is over the record limit (`bytes` is then its start only).
    pub truncated: bool,
    pub size: u64,
}

/// Why a body could not be split into records at all.
#[derive(Debug, thiserror::Error)]
#[error("the body starts a JSON array but is not one: {0}")]
pub struct BodyError(String);

/// Splits `body` into records; blank NDJSON lines are skipped.
pub fn split(body: &[u8]) -> Result<Vec<BodyRecord<'_>>, BodyError> {
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    match first {
        Some(i) if body[i] == b'[' => split_array(body),
        _ => Ok(split_lines(body)),
    }
}

fn record(body: &[u8], start: usize, end: usize, line: u64) -> BodyRecord<'_> {
    let size = (end - start) as u64;
    let truncated = end - start > MAX_RECORD_BYTES;
    let end = if truncated { start + MAX_RECORD_BYTES } else { end };
    BodyRecord { bytes: &body[start..end], line, offset: start as u64, truncated, size }
}

fn split_lines(body: &[u8]) -> Vec<BodyRecord<'_>> {
    let mut out = Vec::new();
    let (mut start, mut line) = (0usize, 1u64);
    while start < body.len() {
        let end = memchr::memchr(b'\n', &body[start..]).map_or(body.len(), |i| start + i);
        let mut content_end = end;
        if content_end > start && body[content_end - 1] == b'\r' {
            content_end -= 1;
        }
        if !body[start..content_end].iter().all(u8::is_ascii_whitespace) {
            out.push(record(body, start, content_end, line));
        }
        start = end + 1;
        line += 1;
    }
    out
}

fn split_array(body: &[u8]) -> Result<Vec<BodyRecord<'_>>, BodyError> {
    let items: Vec<&serde_json::value::RawValue> =
        serde_json::from_slice(body).map_err(|e| BodyError(e.to_string()))?;
    let base = body.as_ptr() as usize;
    let mut out = Vec::with_capacity(items.len());
    let (mut line, mut counted) = (1u64, 0usize);
    for raw in items {
        // A RawValue borrows from the body, so its place in it is a pointer difference.
        let start = (raw.get().as_ptr() as usize).saturating_sub(base).min(body.len());
        let end = (start + raw.get().len()).min(body.len());
        line += memchr::memchr_iter(b'\n', &body[counted..start]).count() as u64;
        counted = start;
        out.push(record(body, start, end, line));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ndjson_lines_keep_their_numbers() {
        let body = b"{\"a\":1}\r\n\n  \n{\"b\":2}\nnot json";
        let r = split(body).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].bytes, r[0].line, r[0].offset), (&b"{\"a\":1}"[..], 1, 0));
        assert_eq!((r[1].bytes, r[1].line), (&b"{\"b\":2}"[..], 4));
        assert_eq!((r[2].bytes, r[2].line, r[2].offset), (&b"not json"[..], 5, 21));
        assert!(split(b"").unwrap().is_empty());
    }

    #[test]
    fn array_elements_with_lines() {
        let body = b"[\n {\"a\":1},\n 7,\n {\"b\":\n 2}\n]";
        let r = split(body).unwrap();
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].bytes, r[0].line), (&b"{\"a\":1}"[..], 2));
        assert_eq!((r[1].bytes, r[1].line), (&b"7"[..], 3));
        assert_eq!((r[2].bytes, r[2].line, r[2].offset), (&b"{\"b\":\n 2}"[..], 4, 17));
        assert!(split(b"[1,").is_err());
    }
}
