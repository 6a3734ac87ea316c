//! Calls a rule handler: fills the shared call context, runs the function under the
//! sandbox limits, and turns any failure (limit, script error, even a panic) into an
//! error message instead of stopping the stream.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::MutexGuard;

use rhai::{CallFnOptions, Dynamic, Engine, ImmutableString, Scope};

use super::api::{CallCtx, ConvRef, EventRef};
use super::native::Stack;
use super::outcome::Outcome;

/// How a handler is invoked.
pub enum Call<'a> {
    /// `on_<type>(c, e)` or `on_event(c, e)`.
    Event,
    /// `on_timer(c, name)`.
    Timer(&'a ImmutableString),
    /// `on_idle(c)`.
    Idle,
}

pub struct Evaluator {
    ctx: ConvRef,
    scope: Scope<'static>,
    /// Rule call time (a no-op outside the service, where no recorder is installed).
    timing: metrics::Histogram,
    calls: u32,
    stack: Stack,
}

/// One call in this many is timed: the histogram stays representative while the clock
/// reads stay off most calls.
const TIME_EVERY: u32 = 8;

impl Default for Evaluator {
    fn default() -> Self {
        Evaluator {
            ctx: ConvRef::default(),
            scope: Scope::new(),
            timing: crate::telemetry::rule_eval(),
            calls: 0,
            stack: Stack::default(),
        }
    }
}

impl Evaluator {
    /// The context to fill before a call and read after it.
    pub fn ctx(&self) -> MutexGuard<'_, CallCtx> {
        self.ctx.lock()
    }

    /// Runs `func` of `outcome`. The error names the file, the line and the cause.
    pub fn call(&mut self, engine: &Engine, outcome: &Outcome, func: &str, how: Call<'_>) -> Result<(), String> {
        self.calls = self.calls.wrapping_add(1);
        let started = self.calls.is_multiple_of(TIME_EVERY).then(std::time::Instant::now);
        if outcome.native.call(func, &mut self.ctx.lock(), &how, &mut self.stack) {
            if let Some(t) = started {
                self.timing.record(t.elapsed().as_secs_f64());
            }
            return Ok(());
        }
        let opts = || CallFnOptions::new().eval_ast(false).rewind_scope(true);
        let c = self.ctx.clone();
        let scope = &mut self.scope;
        let result = catch_unwind(AssertUnwindSafe(|| match how {
            Call::Event => {
                let e = EventRef(c.0.clone());
                engine.call_fn_with_options::<Dynamic>(opts(), scope, &outcome.ast, func, (c, e))
            }
            Call::Timer(name) => {
                engine.call_fn_with_options::<Dynamic>(opts(), scope, &outcome.ast, func, (c, name.clone()))
            }
            Call::Idle => engine.call_fn_with_options::<Dynamic>(opts(), scope, &outcome.ast, func, (c,)),
        }));
        if let Some(t) = started {
            self.timing.record(t.elapsed().as_secs_f64());
        }
        match result {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(format!("{}: {}", outcome.file_name(), flatten(&e))),
            Err(panic) => {
                self.scope.clear();
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                Err(format!("{}: the rule engine panicked in {func}: {what}", outcome.file_name()))
            }
        }
    }
}

/// One line: the innermost cause with its position, then the call chain.
fn flatten(e: &rhai::EvalAltResult) -> String {
    e.to_string().replace('\n', " ")
}
