//! Outcome definitions: a directory of Rhai files (one outcome each, named by the file),
//! `prices.toml` and `plans.toml` beside them, and optional fixtures
//! `<outcome>.test.toml`. Loading compiles everything and checks that every outcome has
//! prices and that the plans name only outcomes that exist, or says what is wrong.

pub mod api;
pub mod evaluator;
pub mod fixtures;
pub mod native;
pub mod outcome;
pub mod prices;
pub mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use crate::ledger::plans::{PlanBook, PLANS_FILE};
pub use outcome::{Outcome, Problem};
pub use prices::PriceBook;
pub use sandbox::Limits;

/// The name of the prices file in a rules directory.
pub const PRICES_FILE: &str = "prices.toml";
/// Fixture files end with this.
pub const FIXTURE_SUFFIX: &str = ".test.toml";

/// The 1-based line a TOML error points at, if it points anywhere.
pub(crate) fn toml_error_line(text: &str, e: &toml::de::Error) -> Option<usize> {
    e.span().map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
}

/// Everything that is wrong with a rules directory.
#[derive(Debug, thiserror::Error)]
#[error("{}", problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct RulesError {
    pub problems: Vec<Problem>,
}

impl RulesError {
    fn one(file: &Path, message: impl Into<String>) -> Self {
        RulesError { problems: vec![Problem { file: file.to_path_buf(), line: None, message: message.into() }] }
    }
}

/// A compiled, checked set of outcome definitions with their prices.
#[derive(Debug)]
pub struct RuleSet {
    pub dir: PathBuf,
    pub outcomes: Vec<Arc<Outcome>>,
    /// Fixture files found beside the rules.
    pub fixtures: Vec<PathBuf>,
    /// Content hash of the prices file.
    pub prices_version: String,
    /// The plans of `plans.toml` (only the built-in `payg` without one).
    pub plans: Arc<PlanBook>,
    /// Content hash of the plans file (empty without one).
    pub plans_version: String,
}

impl RuleSet {
    /// Loads and compiles a rules directory.
    pub fn load(engine: &rhai::Engine, dir: &Path) -> Result<RuleSet, RulesError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| RulesError::one(dir, format!("cannot read the rules directory: {e}")))?;
        let mut files: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        files.sort();

        let mut problems = Vec::new();
        let mut outcomes = Vec::new();
        let mut fixtures = Vec::new();
        for path in &files {
            let fname = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            if fname.ends_with(FIXTURE_SUFFIX) {
                fixtures.push(path.clone());
                continue;
            }
            let Some(name) = fname.strip_suffix(".rhai") else { continue };
            let source = match std::fs::read_to_string(path) {
                Ok(s) => s,
                Err(e) => {
                    problems.push(Problem { file: path.clone(), line: None, message: format!("cannot read: {e}") });
                    continue;
                }
            };
            match Outcome::compile(engine, name, path, &source) {
                Ok(o) => outcomes.push(o),
                Err(p) => problems.push(p),
            }
        }

        let prices_path = dir.join(PRICES_FILE);
        let (book, prices_version) = match std::fs::read_to_string(&prices_path) {
            Ok(text) => match PriceBook::parse(&text) {
                Ok(b) => (b, outcome::content_version(&text)),
                Err(e) => {
                    problems.push(Problem { file: prices_path.clone(), line: e.line, message: e.message });
                    (PriceBook::default(), String::new())
                }
            },
            Err(e) if !outcomes.is_empty() => {
                problems.push(Problem { file: prices_path.clone(), line: None, message: format!("cannot read: {e}") });
                (PriceBook::default(), String::new())
            }
            Err(_) => (PriceBook::default(), String::new()),
        };
        if !problems.is_empty() {
            return Err(RulesError { problems });
        }
        for o in &mut outcomes {
            match book.outcomes.get(&o.name) {
                Some(p) => o.prices = p.clone(),
                None => problems.push(Problem {
                    file: prices_path.clone(),
                    line: None,
                    message: format!("no prices for outcome `{}` (add a [{}] section)", o.name, o.name),
                }),
            }
        }
        for name in book.outcomes.keys() {
            if !outcomes.iter().any(|o| &o.name == name) {
                problems.push(Problem {
                    file: prices_path.clone(),
                    line: None,
                    message: format!("prices for `{name}`, but there is no {name}.rhai"),
                });
            }
        }
        let currencies: std::collections::BTreeSet<_> = outcomes.iter().map(|o| o.prices.currency.as_str()).collect();
        if currencies.len() > 1 {
            problems.push(Problem {
                file: prices_path.clone(),
                line: None,
                message: format!("all outcomes must be priced in one currency, found {currencies:?}"),
            });
        }
        if outcomes.is_empty() {
            problems.push(Problem {
                file: dir.to_path_buf(),
                line: None,
                message: "no outcome definitions (*.rhai)".into(),
            });
        }
        let plans_path = dir.join(PLANS_FILE);
        let names: Vec<&str> = outcomes.iter().map(|o| o.name.as_str()).collect();
        let (plans, plans_version) = match std::fs::read_to_string(&plans_path) {
            Ok(text) => match PlanBook::parse(&text, &names) {
                Ok(b) => (b, outcome::content_version(&text)),
                Err(e) => {
                    problems.push(Problem { file: plans_path.clone(), line: e.line, message: e.message });
                    (PlanBook::default(), String::new())
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (PlanBook::default(), String::new()),
            Err(e) => {
                problems.push(Problem { file: plans_path.clone(), line: None, message: format!("cannot read: {e}") });
                (PlanBook::default(), String::new())
            }
        };
        if !problems.is_empty() {
            return Err(RulesError { problems });
        }
        Ok(RuleSet {
            dir: dir.to_path_buf(),
            outcomes: outcomes.into_iter().map(Arc::new).collect(),
            fixtures,
            prices_version,
            plans: Arc::new(plans),
            plans_version,
        })
    }

    pub fn currency(&self) -> &str {
        self.outcomes.first().map_or("USD", |o| o.prices.currency.as_str())
    }
}
