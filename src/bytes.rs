//! Equality of the short byte strings the per-event path compares (ids, conversation
//! keys, member names), inline with word loads instead of a `memcmp` call per compare:
//! at a few dozen bytes the call cost more than the comparison.

/// Whether `a == b`. Words are compared from the end first: ids and keys usually share
/// a prefix (`evt-`, `conv-`, a tenant), so a mismatch mostly shows in the last word.
#[inline]
pub fn same(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        if n >= 4 {
            return word4(a, n - 4) == word4(b, n - 4) && word4(a, 0) == word4(b, 0);
        }
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if word8(a, n - 8) != word8(b, n - 8) {
        return false;
    }
    let mut i = 0;
    while i + 8 < n {
        if word8(a, i) != word8(b, i) {
            return false;
        }
        i += 8;
    }
    true
}

/// Whether `b` holds `want` at `at`.
#[inline]
pub fn has_at(b: &[u8], at: usize, want: &[u8]) -> bool {
    b.get(at..at.saturating_add(want.len())).is_some_and(|s| same(s, want))
}

#[inline]
fn word8(s: &[u8], i: usize) -> u64 {
    let mut w = [0; 8];
    w.copy_from_slice(&s[i..i + 8]);
    u64::from_ne_bytes(w)
}

#[inline]
fn word4(s: &[u8], i: usize) -> u32 {
    let mut w = [0; 4];
    w.copy_from_slice(&s[i..i + 4]);
    u32::from_ne_bytes(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_whole_strings() {
        for (a, b, want) in [
            ("evt-0123456789abcdef", "evt-0123456789abcdef", true),
            ("evt-0123456789abcdef", "evt-1123456789abcdef", false),
            ("evt-0123456789abcdef", "evt-0123456789abcdee", false),
            ("short", "short", true),
            ("short", "shore", false),
            ("a", "ab", false),
            ("", "", true),
            ("12345678", "12345678", true),
        ] {
            assert_eq!(same(a.as_bytes(), b.as_bytes()), want, "{a} {b}");
        }
        assert!(has_at(b"xx\"id\":", 2, b"\"id\":"));
        assert!(!has_at(b"xx\"id\"", 2, b"\"id\":"));
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_slice_equality(
            a in proptest::collection::vec(0u8..3, 0..40),
            flip in proptest::option::of((0usize..40, 0u8..3)),
        ) {
            let mut b = a.clone();
            if let Some((i, v)) = flip {
                if let Some(x) = b.get_mut(i) {
                    *x = v;
                } else {
                    b.push(v);
                }
            }
            proptest::prop_assert_eq!(same(&a, &b), a == b);
        }
    }
}
