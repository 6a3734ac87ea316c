//! One pass over a record in the form nearly every producer writes: a plain-form object
//! whose strings have no escapes. It checks the whole record is JSON and picks out the
//! fields the engine reads, `attrs.intent` and `attrs.cost_usd` included, as raw slices.
//!
//! It never decides that a record is bad: `None` means "not the simple form", and the
//! careful serde path then accepts or rejects the record with a message naming the
//! field. So whatever it accepts, the careful path accepts with the same values (a
//! property test holds it to that); it only declines more.

/// The raw slices of one record; the strings are their text between the quotes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scanned<'a> {
    pub id: &'a str,
    pub kind: &'a str,
    pub tenant: &'a str,
    pub conversation: &'a str,
    pub ts: &'a str,
    /// The JSON text of `attrs` (any type, `null` included) when present.
    pub attrs: Option<&'a str>,
    /// The JSON text of `attrs.intent` and `attrs.cost_usd` when `attrs` is an object.
    pub intent: Option<&'a str>,
    pub cost_usd: Option<&'a str>,
}

const ID: u16 = 0;
const TYPE: u16 = 1;
const TENANT: u16 = 2;
const CONVERSATION: u16 = 3;
const TS: u16 = 4;
const ATTRS: u16 = 5;
/// A member the careful path does not read (it skips any number of them).
const OTHER: u16 = u16::MAX;

/// The members as producers usually write them: key, quotes and colon.
const USUAL_ORDER: [(&[u8], u16); 6] = [
    (b"\"id\":", ID),
    (b"\"type\":", TYPE),
    (b"\"tenant\":", TENANT),
    (b"\"conversation\":", CONVERSATION),
    (b"\"ts\":", TS),
    (b"\"attrs\":", ATTRS),
];

/// Nesting past this is left to serde, whose own limits then apply.
const MAX_DEPTH: u32 = 32;

/// Scans `text` (already valid UTF-8); `None` for anything outside the simple form.
pub fn scan(text: &str) -> Option<Scanned<'_>> {
    let mut c = Cursor { text, b: text.as_bytes(), i: 0 };
    let mut out = Scanned::default();
    // Fields the careful path knows: each may appear once (it rejects a repeat).
    let mut seen = 0u16;
    // The next member if the record keeps the usual order, checked with one comparison
    // instead of a string scan.
    let mut next = 0;
    c.ws();
    c.eat(b'{')?;
    c.ws();
    loop {
        let bit = match USUAL_ORDER.get(next) {
            Some(&(member, bit)) if crate::bytes::has_at(c.b, c.i, member) => {
                c.i += member.len();
                next += 1;
                bit
            }
            _ => {
                let key = c.string()?;
                c.ws();
                c.eat(b':')?;
                next = USUAL_ORDER.len();
                match key {
                    b"id" => ID,
                    b"type" => TYPE,
                    b"tenant" => TENANT,
                    b"conversation" => CONVERSATION,
                    b"ts" => TS,
                    b"attrs" => ATTRS,
                    b"time" => 6,
                    b"subject" => 7,
                    b"data" => 8,
                    // CloudEvents: the careful path reads that form.
                    b"specversion" => return None,
                    _ => OTHER,
                }
            }
        };
        c.ws();
        if bit != OTHER {
            if seen & (1 << bit) != 0 {
                return None;
            }
            seen |= 1 << bit;
        }
        match bit {
            // One call site for the string scan: it is inlined, and five copies cost more
            // in instruction cache than they save.
            ID..=TS => {
                let value = c.string_text()?;
                match bit {
                    ID => out.id = value,
                    TYPE => out.kind = value,
                    TENANT => out.tenant = value,
                    CONVERSATION => out.conversation = value,
                    _ => out.ts = value,
                }
            }
            ATTRS => {
                let start = c.i;
                if c.peek() == Some(b'{') {
                    (out.intent, out.cost_usd) = c.attrs()?;
                } else {
                    c.value(1)?;
                }
                out.attrs = Some(text.get(start..c.i)?);
            }
            _ => c.value(1)?,
        }
        c.ws();
        match c.next()? {
            b',' => c.ws(),
            b'}' => break,
            _ => return None,
        }
    }
    c.ws();
    (c.i == c.b.len() && seen & 0b1_1111 == 0b1_1111).then_some(out)
}

struct Cursor<'a> {
    text: &'a str,
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    #[inline]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline]
    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    #[inline]
    fn eat(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    #[inline]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// A string without escapes or control characters: the span between the quotes.
    #[inline]
    fn span(&mut self) -> Option<(usize, usize)> {
        self.eat(b'"')?;
        let start = self.i;
        let end = string_end(self.b, start)?;
        self.i = end + 1;
        Some((start, end))
    }

    #[inline]
    fn string(&mut self) -> Option<&'a [u8]> {
        let (start, end) = self.span()?;
        Some(&self.b[start..end])
    }

    /// [`Self::string`] as text: quotes are ASCII, so both ends are char boundaries.
    #[inline]
    fn string_text(&mut self) -> Option<&'a str> {
        let (start, end) = self.span()?;
        self.text.get(start..end)
    }

    /// The `attrs` object: checks it and returns the raw `intent` and `cost_usd`.
    /// A repeated `intent`, `cost_usd` or `tenant` is rejected by the careful path.
    fn attrs(&mut self) -> Option<(Option<&'a str>, Option<&'a str>)> {
        let (mut intent, mut cost, mut tenant) = (None, None, false);
        let text = self.text;
        self.container(1, b'}', |key, start, end| {
            let raw = || text.get(start..end);
            match key {
                b"intent" if intent.is_none() => intent = Some(raw()?),
                b"cost_usd" if cost.is_none() => cost = Some(raw()?),
                b"tenant" if !tenant => tenant = true,
                b"intent" | b"cost_usd" | b"tenant" => return None,
                _ => {}
            }
            Some(())
        })?;
        Some((intent, cost))
    }

    /// Any JSON value, at nesting `depth`.
    fn value(&mut self, depth: u32) -> Option<()> {
        match self.peek()? {
            b'"' => self.string().map(drop),
            b'{' => self.container(depth, b'}', |_, _, _| Some(())),
            b'[' => self.container(depth, b']', |_, _, _| Some(())),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    /// An object or array (opened at the cursor) at nesting `depth`; `member` sees each
    /// key of an object with the span of its value's text.
    fn container(
        &mut self,
        depth: u32,
        close: u8,
        mut member: impl FnMut(&'a [u8], usize, usize) -> Option<()>,
    ) -> Option<()> {
        let keyed = close == b'}';
        if depth >= MAX_DEPTH {
            return None;
        }
        self.i += 1;
        self.ws();
        if self.peek() == Some(close) {
            self.i += 1;
            return Some(());
        }
        loop {
            let key = if keyed {
                let key = self.string()?;
                self.ws();
                self.eat(b':')?;
                self.ws();
                key
            } else {
                &[]
            };
            let start = self.i;
            self.value(depth + 1)?;
            if keyed {
                member(key, start, self.i)?;
            }
            self.ws();
            match self.next()? {
                b',' => self.ws(),
                c if c == close => return Some(()),
                _ => return None,
            }
        }
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if self.b.get(self.i..self.i + word.len())? != word {
            return None;
        }
        self.i += word.len();
        Some(())
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

/// The index of the quote that ends a string whose text starts at `b[i]`; `None` at an
/// escape, a control character or the end. Eight bytes at a time: strings are most of a
/// record's bytes.
#[inline]
fn string_end(b: &[u8], mut i: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    while let Some(chunk) = b.get(i..i + 8) {
        let w = u64::from_le_bytes(chunk.try_into().ok()?);
        let quote = w ^ (ONES * u64::from(b'"'));
        let slash = w ^ (ONES * u64::from(b'\\'));
        // A byte flags when it is zero (quote, slash) or below 0x20 (control). The lowest
        // flag is always exact: a borrow only runs upward from a byte that flagged.
        let hits =
            (quote.wrapping_sub(ONES) & !quote | slash.wrapping_sub(ONES) & !slash | w.wrapping_sub(ONES * 0x20) & !w)
                & HIGH;
        if hits != 0 {
            let j = i + (hits.trailing_zeros() / 8) as usize;
            return (b[j] == b'"').then_some(j);
        }
        i += 8;
    }
    loop {
        match *b.get(i)? {
            b'"' => return Some(i),
            b'\\' | 0..=0x1f => return None,
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slow_string_end(b: &[u8], i: usize) -> Option<usize> {
        let j = i + b[i..].iter().position(|&c| c == b'"' || c == b'\\' || c < 0x20)?;
        (b[j] == b'"').then_some(j)
    }

    const EVENT: &str = r#"{"id":"evt-1","type":"llm.call","tenant":"t","conversation":"c","ts":"2026-06-12T00:00:00Z","attrs":{"model":"m","cost_usd":"0.01","n":[1,2.5e3,{"a":null}],"intent":"faq"}}"#;

    #[test]
    fn reads_the_common_form() {
        let s = scan(EVENT).expect("simple form");
        assert_eq!((s.id, s.kind, s.tenant, s.conversation), ("evt-1", "llm.call", "t", "c"));
        assert_eq!(s.ts, "2026-06-12T00:00:00Z");
        assert_eq!(s.intent, Some(r#""faq""#));
        assert_eq!(s.cost_usd, Some(r#""0.01""#));
        assert!(s.attrs.unwrap().starts_with(r#"{"model""#) && s.attrs.unwrap().ends_with("}"));
        let spaced = " { \"id\" : \"a\" ,\"type\":\"x\",\"tenant\":\"t\",\"conversation\":\"c\",\"ts\":\"z\", \"attrs\" : null } \n";
        assert_eq!(scan(spaced).unwrap().attrs, Some("null"));
    }

    #[test]
    fn declines_what_is_not_the_simple_form() {
        let cases = [
            EVENT.replace("evt-1", r"evt\u0031"),
            EVENT.replace(r#""ts""#, r#""ts":"x","ts""#),
            EVENT.replace(r#""model""#, r#""intent":"a","model""#),
            EVENT.replace(r#""model":"m""#, r#""tenant":1,"tenant":2"#),
            EVENT.replace(r#""id":"evt-1","#, ""),
            EVENT.replace(r#""id":"evt-1""#, r#""id":1"#),
            EVENT.replace(r#""id":"evt-1""#, r#""id":"a","specversion":"1.0""#),
            EVENT.replace(r#""id":"evt-1""#, r#""id":"a","data":1,"data":2"#),
            EVENT.replace("2.5e3", "2.5e"),
            EVENT.replace("2.5e3", "01"),
            EVENT.replace("null", "nul"),
            EVENT.replace("evt-1", "evt\t1"),
            format!("{EVENT} x"),
            format!("{EVENT},"),
            EVENT[..EVENT.len() - 1].to_string(),
            EVENT.replace("[1,", &format!("{}1{},", "[".repeat(40), "]".repeat(40))),
        ];
        for case in &cases {
            assert_eq!(scan(case), None, "{case}");
        }
    }

    proptest::proptest! {
        #[test]
        fn string_end_agrees_with_a_byte_loop(
            bytes in proptest::collection::vec(proptest::sample::select(vec![b'a', b'a', b'a', b'a', b'"', b'\\', 0x00, 0x1f, 0x20, 0x7f, 0x80, 0xe9, 0xff]), 0..80),
            start in 0usize..80,
        ) {
            let start = start.min(bytes.len());
            proptest::prop_assert_eq!(string_end(&bytes, start), slow_string_end(&bytes, start));
        }

        /// Long runs of plain bytes, so the 8-byte steps and the byte loop after them
        /// both meet the byte that ends the string (or the end of the record).
        #[test]
        fn string_end_finds_the_end_after_any_run(
            run in proptest::collection::vec(proptest::sample::select(vec![b'a', 0x20, 0x7e, 0x7f, 0x80, 0xe9, 0xff]), 0..90),
            end in proptest::sample::select(vec![Some(b'"'), Some(b'\\'), Some(0x00), Some(0x1f), None]),
            start in 0usize..20,
        ) {
            let mut bytes = run;
            bytes.extend(end);
            let start = start.min(bytes.len());
            proptest::prop_assert_eq!(string_end(&bytes, start), slow_string_end(&bytes, start));
        }
    }
}
