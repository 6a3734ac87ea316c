//! The top-level members of a JSON object that was validated already (an event's
//! `attrs`), as raw slices, in one pass and without allocating: for readers that want a
//! few members of an object whose other members may be anything. A key with an escape,
//! or text that is not an object, gives `None`: the caller then parses the careful way.

/// Calls `f(key, raw value)` for each top-level member of the object `text`, in order;
/// `None` when `text` is not a plain object (a key with an escape included).
pub fn members<'a>(text: &'a str, mut f: impl FnMut(&'a str, &'a str)) -> Option<()> {
    let b = text.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return Some(());
    }
    loop {
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let end = i + 1 + memchr::memchr2(b'"', b'\\', &b[i + 1..])?;
        if b[end] == b'\\' {
            return None;
        }
        let key = &text[i + 1..end];
        i = ws(b, end + 1);
        if b.get(i) != Some(&b':') {
            return None;
        }
        let start = ws(b, i + 1);
        let stop = value_end(b, start)?;
        f(key, &text[start..stop]);
        i = ws(b, stop);
        match b.get(i) {
            Some(b',') => i = ws(b, i + 1),
            Some(b'}') => return Some(()),
            _ => return None,
        }
    }
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(|c| c.is_ascii_whitespace()) {
        i += 1;
    }
    i
}

/// Where the value starting at `i` ends.
fn value_end(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => string_end(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match *b.get(j)? {
                    b'"' => j = string_end(b, j)? - 1,
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
            while b.get(j).is_some_and(|c| !matches!(c, b',' | b'}' | b']') && !c.is_ascii_whitespace()) {
                j += 1;
            }
            (j > i).then_some(j)
        }
    }
}

/// Just past the string starting at `i` (its closing quote included).
fn string_end(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        j += memchr::memchr2(b'"', b'\\', &b[j..])?;
        if b[j] == b'\\' {
            j += 2;
        } else {
            return Some(j + 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Option<Vec<(&str, &str)>> {
        let mut out = Vec::new();
        members(text, |k, v| out.push((k, v)))?;
        Some(out)
    }

    #[test]
    fn top_level_members_only_whatever_they_hold() {
        let text = r#" { "model" : "gpt \"x\"", "meta":{"model":"inner","a":[1,{"b":"}"}]}, "n": -1.5e3 ,"t":true,"z":null, "s":"a,b}"} "#;
        let got = all(text).unwrap();
        let keys: Vec<&str> = got.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, ["model", "meta", "n", "t", "z", "s"]);
        assert_eq!(got[0].1, r#""gpt \"x\"""#);
        assert_eq!(got[1].1, r#"{"model":"inner","a":[1,{"b":"}"}]}"#);
        assert_eq!((got[2].1, got[3].1, got[4].1, got[5].1), ("-1.5e3", "true", "null", r#""a,b}""#));
        assert_eq!(all("{}"), Some(vec![]));
    }

    #[test]
    fn what_is_not_a_plain_object_is_declined() {
        for text in ["[1]", "\"s\"", r#"{"k\u0065y":1}"#, r#"{"a":1"#, r#"{"a" 1}"#, ""] {
            assert_eq!(all(text), None, "{text}");
        }
    }

    proptest::proptest! {
        #[test]
        fn agrees_with_serde_on_any_object(v in proptest::collection::btree_map("[a-z\"]{0,4}", proptest::prelude::any::<i32>(), 0..6)) {
            let text = serde_json::to_string(&v).unwrap();
            let parsed: std::collections::BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).unwrap();
            match all(&text) {
                Some(got) => {
                    let got: std::collections::BTreeMap<String, serde_json::Value> =
                        got.into_iter().map(|(k, v)| (k.to_string(), serde_json::from_str(v).unwrap())).collect();
                    proptest::prop_assert_eq!(got, parsed);
                }
                None => proptest::prop_assert!(text.contains('\\'), "declined without an escape: {}", text),
            }
        }
    }
}
