//! The Rhai engine rules run in: no files, network or process (built from
//! `Engine::new_raw`, no module system, no `eval`, no wall clock), and hard limits on
//! every resource a script can grow.

use rhai::packages::{Package, StandardPackage};
use rhai::{Engine, OptimizationLevel};
use serde::{Deserialize, Serialize};

use super::api;

/// Limits on one rule call.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Script operations per call (about 100-200 ns each); stops endless loops.
    pub max_operations: u64,
    /// Nested function calls; stops runaway recursion.
    pub max_call_levels: usize,
    /// Expression nesting, at compile time.
    pub max_expr_depth: usize,
    /// Longest string, in bytes.
    pub max_string_size: usize,
    /// Most items in one array.
    pub max_array_size: usize,
    /// Most entries in one map.
    pub max_map_size: usize,
    /// Most variables alive at once.
    pub max_variables: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_operations: 50_000,
            max_call_levels: 32,
            max_expr_depth: 64,
            max_string_size: 16 * 1024,
            max_array_size: 1024,
            max_map_size: 256,
            max_variables: 256,
        }
    }
}

/// Builds the sandboxed engine with the rule API registered.
pub fn build(limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(StandardPackage::new().as_shared_module());
    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_variables(limits.max_variables)
        .set_max_functions(256)
        .set_strict_variables(true)
        .set_fail_on_invalid_map_property(true)
        // Full folds calls with constant arguments at compile time (about 5% of replay
        // time). Safe because every free function the rule API registers is pure and
        // not volatile (time helpers); functions with side effects all take `c`, which
        // is never a constant. Keep it that way when adding to `api::register`.
        .set_optimization_level(OptimizationLevel::Full);
    engine.disable_symbol("eval");
    engine.on_print(|s| tracing::info!(target: "verdict::rules", "{s}"));
    engine.on_debug(|s, src, pos| tracing::debug!(target: "verdict::rules", "{}:{pos}: {s}", src.unwrap_or("rule")));
    api::register(&mut engine);
    engine
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(src: &str) -> Result<rhai::Dynamic, String> {
        let engine = build(&Limits::default());
        engine.eval::<rhai::Dynamic>(src).map_err(|e| e.to_string())
    }

    #[test]
    fn hostile_scripts_are_stopped() {
        assert!(run("loop {}").unwrap_err().contains("operations"));
        assert!(run("fn f(x) { f(x + 1) } f(0)").is_err());
        assert!(run(r#"let s = "xx"; loop { s += s; }"#).is_err());
        assert!(run("let a = []; loop { a.push(1); }").is_err());
        assert!(run("let m = #{}; let i = 0; loop { m[`k${i}`] = i; i += 1; }").is_err());
        assert!(run(r#"eval("1")"#).is_err());
        assert!(run(r#"import "x" as y; 1"#).is_err());
        let deep = format!("{}1{}", "(".repeat(200), ")".repeat(200));
        assert!(run(&deep).is_err());
    }

    #[test]
    fn folding_at_compile_time_is_bounded_too() {
        // Full optimisation runs constant calls while compiling: the limits hold there.
        let engine = build(&Limits::default());
        for src in [
            r#"const S = "x".pad(100000000, "y"); S"#,
            "const N = range(0, 1000000000).len(); N",
            "let a = [1]; a.pad(100000000, 0); a",
        ] {
            let r = engine
                .compile(src)
                .map_err(|e| e.to_string())
                .and_then(|ast| engine.eval_ast::<rhai::Dynamic>(&ast).map_err(|e| e.to_string()));
            assert!(r.is_err(), "{src} ran past the limits: {r:?}");
        }
        assert_eq!(run("hours(24) + minutes(1)").unwrap().as_int().unwrap(), 86_460_000_000_000);
    }

    #[test]
    fn no_wall_clock_and_no_floats() {
        assert!(run("timestamp()").is_err());
        // Fractional literals are exact decimals.
        assert_eq!(run("0.1 + 0.2").unwrap().as_decimal().unwrap().to_string(), "0.3");
    }
}
