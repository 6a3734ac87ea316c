//! One outcome definition: a Rhai file compiled once to an AST, its handlers found by
//! name, its settings read from top-level constants, and its content hash (the
//! `rule_version` every verdict it decides records).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rhai::{Engine, ImmutableString, AST};
use sha2::{Digest, Sha256};

use super::native::Native;
use super::prices::OutcomePrices;
use crate::kinds::{handler_name, KNOWN};
use crate::timestamp::{Nanos, Span};

/// A compiled outcome definition.
#[derive(Debug)]
pub struct Outcome {
    pub name: String,
    pub path: PathBuf,
    /// `sha256:` and the first 16 hex digits of the source's SHA-256.
    pub version: String,
    pub ast: AST,
    /// `const IDLE_AFTER = "72h";`: when `on_idle` runs after the last event.
    pub idle_after: Option<Nanos>,
    pub on_known: [Option<Handler>; KNOWN.len()],
    pub on_other: HashMap<String, Handler>,
    pub on_event: Option<Handler>,
    pub on_timer: Option<ImmutableString>,
    pub on_idle: Option<ImmutableString>,
    pub prices: OutcomePrices,
    /// The handlers compiled to native code (the rest run in Rhai).
    pub native: Native,
}

/// An event handler: `on_<type>(c, e)`, or `on_<type>_during_<timer>(c, e)`, which
/// runs only while that timer is open (the engine checks, so other events of the type
/// cost no script call).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handler {
    pub func: ImmutableString,
    pub during: Option<ImmutableString>,
}

/// A problem in a rule file, with the line it is on when known.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(l) => write!(f, "{}:{}: {}", self.file.display(), l, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

pub fn content_version(source: &str) -> String {
    let digest = Sha256::digest(source.as_bytes());
    let mut s = String::with_capacity(23);
    s.push_str("sha256:");
    for b in &digest[..8] {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

impl Outcome {
    /// Compiles `source` (the text of `path`) as outcome `name`.
    pub fn compile(engine: &Engine, name: &str, path: &Path, source: &str) -> Result<Outcome, Problem> {
        let problem = |line: Option<usize>, message: String| Problem { file: path.to_path_buf(), line, message };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
            return Err(problem(
                None,
                format!("outcome name {name:?} (the file name) may hold only letters, digits, _ and -"),
            ));
        }
        let ast = engine.compile(source).map_err(|e| {
            let line = e.position().line();
            problem(line, e.err_type().to_string())
        })?;

        let mut idle_after = None;
        for (cname, _is_const, value) in ast.iter_literal_variables(true, false) {
            if cname == "IDLE_AFTER" {
                let text = value.into_immutable_string().map_err(|t| {
                    problem(None, format!("IDLE_AFTER must be a duration string like \"72h\", not {t}"))
                })?;
                let span: Span = text.parse().map_err(|e| problem(None, format!("IDLE_AFTER: {e}")))?;
                if span.0 <= 0 {
                    return Err(problem(None, "IDLE_AFTER must be positive".into()));
                }
                idle_after = Some(span.0);
            }
        }

        let mut on_known: [Option<Handler>; KNOWN.len()] = Default::default();
        let known_names: Vec<String> = KNOWN.iter().map(|k| handler_name(k)).collect();
        let mut on_other: HashMap<String, Option<Handler>> = HashMap::new();
        let (mut on_event, mut on_timer, mut on_idle) = (None, None, None);
        for f in ast.iter_functions() {
            if !f.name.starts_with("on_") {
                continue;
            }
            let arity = f.params.len();
            let want = match f.name {
                "on_idle" => 1,
                _ => 2,
            };
            if arity != want {
                let args = if want == 1 {
                    "(c)"
                } else if f.name == "on_timer" {
                    "(c, name)"
                } else {
                    "(c, e)"
                };
                return Err(problem(
                    None,
                    format!("handler {} takes {} parameter(s), it must be {}{}", f.name, arity, f.name, args),
                ));
            }
            let fname: ImmutableString = f.name.into();
            let (base, during) = match f.name.rsplit_once("_during_") {
                Some((b, t)) if !t.is_empty() && b.len() > 3 => (b, Some(ImmutableString::from(t))),
                _ => (f.name, None),
            };
            let handler = Handler { func: fname.clone(), during };
            let slot = match base {
                "on_event" => &mut on_event,
                "on_timer" if handler.during.is_none() => {
                    on_timer = Some(fname);
                    continue;
                }
                "on_idle" if handler.during.is_none() => {
                    on_idle = Some(fname);
                    continue;
                }
                n => match known_names.iter().position(|k| k == n) {
                    Some(i) => &mut on_known[i],
                    None => on_other.entry(n.to_string()).or_insert(None),
                },
            };
            if let Some(prev) = slot {
                return Err(problem(
                    None,
                    format!("{} and {} handle the same events: keep one", prev.func, handler.func),
                ));
            }
            *slot = Some(handler);
        }
        let on_other: HashMap<String, Handler> = on_other.into_iter().filter_map(|(k, v)| v.map(|h| (k, h))).collect();
        if on_idle.is_some() != idle_after.is_some() {
            return Err(problem(
                None,
                "on_idle(c) and `const IDLE_AFTER = \"...\";` go together: define both or neither".into(),
            ));
        }
        let mut outcome = Outcome {
            name: name.to_string(),
            path: path.to_path_buf(),
            version: content_version(source),
            ast,
            idle_after,
            on_known,
            on_other,
            on_event,
            on_timer,
            on_idle,
            prices: OutcomePrices::default(),
            native: Native::default(),
        };
        outcome.native = Native::compile(engine, &outcome.ast, source, outcome.handler_names());
        Ok(outcome)
    }

    /// The names of every handler the definition has.
    pub fn handler_names(&self) -> impl Iterator<Item = &ImmutableString> {
        self.on_known
            .iter()
            .flatten()
            .chain(self.on_other.values())
            .chain(self.on_event.as_ref())
            .map(|h| &h.func)
            .chain(self.on_timer.as_ref())
            .chain(self.on_idle.as_ref())
    }

    /// The handler an event type dispatches to, if any.
    pub fn handler_for(&self, kind: crate::kinds::Kind, name: &str) -> Option<&Handler> {
        let specific = match kind {
            crate::kinds::OTHER if !self.on_other.is_empty() => self.on_other.get(&handler_name(name)),
            crate::kinds::OTHER => None,
            k => self.on_known[k as usize].as_ref(),
        };
        specific.or(self.on_event.as_ref())
    }

    /// The file name, for messages.
    pub fn file_name(&self) -> String {
        self.path.file_name().map_or_else(|| self.name.clone(), |f| f.to_string_lossy().into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::sandbox;

    fn compile(src: &str) -> Result<Outcome, Problem> {
        let engine = sandbox::build(&Default::default());
        Outcome::compile(&engine, "t", Path::new("rules/t.rhai"), src)
    }

    #[test]
    fn finds_handlers_and_settings() {
        let o = compile(
            r#"const IDLE_AFTER = "72h";
            fn on_message_ai(c, e) {}
            fn on_custom_thing(c, e) {}
            fn on_idle(c) {}
            fn helper(x) { x }"#,
        )
        .unwrap();
        assert!(o.on_known[2].is_some());
        assert_eq!(o.on_known[2].as_ref().unwrap().during, None);
        assert!(o.on_known[0].is_none());
        assert!(o.handler_for(crate::kinds::OTHER, "custom.thing").is_some());
        assert!(o.handler_for(crate::kinds::OTHER, "custom.other").is_none());
        assert_eq!(o.idle_after, Some(72 * 3_600_000_000_000));
        assert!(o.version.starts_with("sha256:") && o.version.len() == 23);
    }

    #[test]
    fn during_handlers() {
        let o = compile("fn on_message_customer_during_follow_up(c, e) {}").unwrap();
        let h = o.on_known[1].as_ref().unwrap();
        assert_eq!(h.during.as_deref(), Some("follow_up"));
        assert_eq!(h.func, "on_message_customer_during_follow_up");
        let e = compile("fn on_message_customer(c, e) {}\nfn on_message_customer_during_x(c, e) {}").unwrap_err();
        assert!(e.message.contains("keep one"), "{e}");
    }

    #[test]
    fn errors_name_line_and_cause() {
        let e = compile("fn on_escalated(c, e) {\n  c.not_billable(\"x\"\n}").unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        assert!(e.to_string().starts_with("rules/t.rhai:3: "), "{e}");
        let e = compile("fn on_escalated(c) {}").unwrap_err();
        assert!(e.message.contains("on_escalated(c, e)"), "{e}");
        let e = compile("fn on_idle(c) {}").unwrap_err();
        assert!(e.message.contains("IDLE_AFTER"), "{e}");
        let e = compile("fn f() { undefined_var }").unwrap_err();
        assert!(e.message.contains("undefined_var"), "{e}");
    }
}
