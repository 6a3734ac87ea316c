//! The accepted event ids of one conversation, packed into one buffer (a length byte,
//! then the bytes) instead of a `Vec<String>`: it is the audit trail of a verdict and
//! the dedupe set, and it is most of what an open conversation costs in memory.

/// Ids of 1 to 256 bytes, in the order they were applied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdList {
    buf: Vec<u8>,
}

impl IdList {
    /// Appends an id. Ids are 1..=256 bytes (checked at decode); longer ones are cut.
    pub fn push(&mut self, id: &str) {
        let bytes = &id.as_bytes()[..id.len().min(256)];
        if bytes.is_empty() {
            return;
        }
        // Start with room for 8 ids like this one, then grow by half, not double: this
        // buffer is most of an open conversation's memory, and most lists stop growing
        // after a dozen ids. Growing by one id at a time cost a realloc per event.
        let need = self.buf.len() + 1 + bytes.len();
        if need > self.buf.capacity() {
            let step = if self.buf.is_empty() { 8 * (1 + bytes.len()) } else { self.buf.len() / 2 };
            self.buf.reserve_exact((need - self.buf.len()).max(step));
        }
        self.buf.push((bytes.len() - 1) as u8);
        self.buf.extend_from_slice(bytes);
    }

    /// The ids as bytes, each whole UTF-8 (for writers that need no `&str`).
    pub fn iter_bytes(&self) -> impl Iterator<Item = &[u8]> {
        RawIter { rest: &self.buf }
    }

    pub fn iter(&self) -> IdIter<'_> {
        IdIter { raw: RawIter { rest: &self.buf } }
    }

    /// The dedupe check on every event: compares bytes, with no UTF-8 check per id (the
    /// ids were whole `&str`s when pushed).
    pub fn contains(&self, id: &str) -> bool {
        RawIter { rest: &self.buf }.any(|x| crate::bytes::same(x, id.as_bytes()))
    }

    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// The entries as byte strings.
struct RawIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for RawIter<'a> {
    type Item = &'a [u8];
    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        let (&len, tail) = self.rest.split_first()?;
        let (id, rest) = tail.split_at((len as usize + 1).min(tail.len()));
        self.rest = rest;
        Some(id)
    }
}

pub struct IdIter<'a> {
    raw: RawIter<'a>,
}

impl<'a> Iterator for IdIter<'a> {
    type Item = &'a str;
    fn next(&mut self) -> Option<&'a str> {
        // Only whole `&str`s are pushed, and 256-byte cuts only fall on ids that
        // decode already limited to 256 bytes, so this is always valid UTF-8.
        std::str::from_utf8(self.raw.next()?).ok()
    }
}

// Checkpoints store the packed buffer as one byte string: a million conversations
// load in one copy each instead of an allocation per id.
impl serde::Serialize for IdList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.buf)
    }
}

impl<'de> serde::Deserialize<'de> for IdList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = IdList;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a packed id list")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<IdList, E> {
                self.visit_byte_buf(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, buf: Vec<u8>) -> Result<IdList, E> {
                let list = IdList { buf };
                // Every entry must be whole UTF-8, or the audit trail would end early.
                if list.iter().map(|id| id.len() + 1).sum::<usize>() != list.buf.len() {
                    return Err(E::custom("a packed id list is cut or not UTF-8"));
                }
                Ok(list)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_iter_contains() {
        let mut l = IdList::default();
        assert!(l.is_empty());
        let long = "x".repeat(256);
        for id in ["a", "bc", "ü-1", long.as_str()] {
            l.push(id);
        }
        assert_eq!(l.iter().collect::<Vec<_>>(), vec!["a", "bc", "ü-1", long.as_str()]);
        assert!(l.contains("bc"));
        assert!(!l.contains("b"));
        assert!(!l.contains(""));
        assert!(!l.contains(&"x".repeat(257)), "longer than any id kept");
        assert_eq!(l.len(), 4);
    }
}
