//! Compiled handlers: a handler written in the common subset of Rhai is translated at
//! load into a tree the engine walks natively, several times cheaper than a Rhai call.
//!
//! The subset: constants, `let`, `if`, `switch` on string cases, `return`, integer
//! arithmetic, comparisons, `&&` `||` `!`, calls to the script's own functions and the
//! time helpers, and the `c`/`e` API except `get`, `set`, `attrs` and `attr`.
//!
//! Rhai stays the definition of what a rule means. A handler outside the subset is not
//! compiled. A compiled call that meets anything the walker does not handle exactly
//! (another type, an overflow, any error) is abandoned before it changes the call context
//! and is run by Rhai from the start, so results and error messages are always Rhai's.

use std::collections::HashMap;

use rhai::{ASTFlags, Dynamic, Engine, Expr, FnCallExpr, ImmutableString, Stmt, StmtBlock, AST, INT};
use rust_decimal::Decimal;

use super::api::{checked_span, CallCtx};
use super::evaluator::Call;
use crate::timestamp::{NANOS_PER_DAY, NANOS_PER_HOUR, NANOS_PER_MILLI, NANOS_PER_SEC};

/// A runtime value of the subset.
#[derive(Clone, Debug, PartialEq)]
enum Val {
    Unit,
    Bool(bool),
    Int(INT),
    Str(ImmutableString),
    Dec(Decimal),
    /// The call's `c`.
    Conv,
    /// The call's `e`.
    Event,
}

#[derive(Clone, Copy, Debug)]
enum Prop {
    Tenant,
    Conversation,
    Outcome,
    Now,
    FirstTs,
    LastTs,
    Events,
    Cost,
    Intent,
    Id,
    Type,
    Ts,
}

impl Prop {
    fn parse(name: &str) -> Option<Prop> {
        Some(match name {
            "tenant" => Prop::Tenant,
            "conversation" => Prop::Conversation,
            "outcome" => Prop::Outcome,
            "now" => Prop::Now,
            "first_ts" => Prop::FirstTs,
            "last_ts" => Prop::LastTs,
            "events" => Prop::Events,
            "cost" => Prop::Cost,
            "intent" => Prop::Intent,
            "id" => Prop::Id,
            "type" => Prop::Type,
            "ts" => Prop::Ts,
            _ => return None,
        })
    }
    fn on_event(self) -> bool {
        matches!(self, Prop::Id | Prop::Type | Prop::Ts)
    }
}

#[derive(Clone, Copy, Debug)]
enum Method {
    Count,
    HasTimer,
    Timer,
    StartTimer,
    CancelTimer,
    Billable,
    NotBillable,
}

impl Method {
    fn parse(name: &str, args: usize) -> Option<Method> {
        Some(match (name, args) {
            ("count", 1) => Method::Count,
            ("has_timer", 1) => Method::HasTimer,
            ("timer", 1) => Method::Timer,
            ("start_timer", 2) => Method::StartTimer,
            ("cancel_timer", 1) => Method::CancelTimer,
            ("billable", 2) => Method::Billable,
            ("not_billable", 1) => Method::NotBillable,
            _ => return None,
        })
    }
}

/// Names the rule API gives meaning to: a script function with one of them would change
/// what a call resolves to, so such a script is left to Rhai.
const API_NAMES: &[&str] = &[
    "count",
    "has_timer",
    "timer",
    "start_timer",
    "cancel_timer",
    "billable",
    "not_billable",
    "get",
    "set",
    "attr",
    "millis",
    "seconds",
    "minutes",
    "hours",
    "days",
    "duration",
    "time",
    "fmt_time",
];

fn span_unit(name: &str) -> Option<(INT, &'static str)> {
    Some(match name {
        "millis" => (NANOS_PER_MILLI, "millis"),
        "seconds" => (NANOS_PER_SEC, "seconds"),
        "minutes" => (60 * NANOS_PER_SEC, "minutes"),
        "hours" => (NANOS_PER_HOUR, "hours"),
        "days" => (NANOS_PER_DAY, "days"),
        _ => return None,
    })
}

#[derive(Clone, Copy, Debug)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug)]
enum Ex {
    Const(Val),
    Local(u16),
    Prop(u16, Prop),
    Method(u16, Method, Box<[Ex]>),
    Span(Box<Ex>, INT),
    Call(u16, Box<[Ex]>),
    Bin(Op, Box<[Ex; 2]>),
    Not(Box<Ex>),
    Neg(Box<Ex>),
    And(Box<[Ex]>),
    Or(Box<[Ex]>),
    Block(Block),
    If(Box<(Ex, Block, Block)>),
    Switch(Box<Switch>),
}

#[derive(Debug)]
enum St {
    Expr(Ex),
    Let(Ex),
    Return(Option<Ex>),
}

/// Statements, and how many locals were alive when the block began (dropped at its end).
#[derive(Debug)]
struct Block {
    stmts: Box<[St]>,
    base: u16,
}

/// One arm of a switch case: its `if` condition, if any, and its value.
type Arm = (Option<Ex>, Ex);

#[derive(Debug)]
struct Switch {
    subject: Ex,
    /// String cases, each with its arms in order.
    cases: Vec<(ImmutableString, Vec<Arm>)>,
    default: Option<Ex>,
}

#[derive(Debug)]
struct Func {
    params: u16,
    body: Block,
}

/// The compiled handlers of one outcome (empty when none is in the subset).
#[derive(Debug, Default)]
pub struct Native {
    /// By id; `None` for functions outside the subset (no compiled handler calls them).
    fns: Vec<Option<Func>>,
    handlers: Vec<(ImmutableString, u16)>,
    max_string: usize,
    max_vars: usize,
}

/// Locals of compiled calls, kept by the caller so a call allocates nothing.
#[derive(Default)]
pub struct Stack(Vec<Val>);

impl Native {
    /// Compiles every handler of `handlers` that is in the subset; `source` is the text
    /// `ast` was compiled from (for the values of `switch` cases, which the AST keeps
    /// only as hashes).
    pub fn compile<'a>(
        engine: &Engine,
        ast: &AST,
        source: &str,
        handlers: impl IntoIterator<Item = &'a ImmutableString>,
    ) -> Native {
        let defs: HashMap<(&str, usize), &rhai::ScriptFuncDef> =
            ast.iter_fn_def().map(|f| ((f.name.as_str(), f.params.len()), &**f)).collect();
        let mut out =
            Native { max_string: engine.max_string_size(), max_vars: engine.max_variables(), ..Default::default() };
        if defs.keys().any(|(n, _)| API_NAMES.contains(n)) {
            return out;
        }
        let mut cx = Compiler {
            defs,
            ids: HashMap::new(),
            fns: Vec::new(),
            cost: Vec::new(),
            case_values: switch_case_values(engine, source),
        };
        for name in handlers {
            let Some(&def) = cx.defs.get(&(name.as_str(), 2)).or_else(|| cx.defs.get(&(name.as_str(), 1))) else {
                continue;
            };
            let Some(id) = cx.function(def, &mut Vec::new()) else { continue };
            let (ops, depth) = cx.cost[id as usize];
            let ops_ok =
                engine.max_operations() == 0 || ops.saturating_mul(4).saturating_add(64) <= engine.max_operations();
            // Zero means "no limit" for operations, but is a real limit for call levels.
            let depth_ok = depth + 2 <= engine.max_call_levels();
            if ops_ok && depth_ok {
                out.handlers.push((name.clone(), id));
            }
        }
        out.fns = cx.fns;
        out
    }

    /// The compiled handlers, by name.
    pub fn handlers(&self) -> impl Iterator<Item = &str> {
        self.handlers.iter().map(|(n, _)| n.as_str())
    }

    /// Whether `func` is compiled.
    pub fn has(&self, func: &str) -> bool {
        self.handlers.iter().any(|(n, _)| n == func)
    }

    /// Runs compiled handler `func` on `ctx`. `false`: not compiled, or abandoned with
    /// `ctx` as it was; the call is Rhai's to make.
    pub fn call(&self, func: &str, ctx: &mut CallCtx, how: &Call<'_>, stack: &mut Stack) -> bool {
        let Some(&(_, id)) = self.handlers.iter().find(|(n, _)| n == func) else { return false };
        let stack = &mut stack.0;
        stack.clear();
        stack.push(Val::Conv);
        match how {
            Call::Event => stack.push(Val::Event),
            Call::Timer(name) => stack.push(Val::Str((*name).clone())),
            Call::Idle => {}
        }
        // Rhai counts parameters against the variables limit (where zero is a limit too).
        if stack.len() + 2 >= self.max_vars {
            return false;
        }
        let saved = (ctx.timers.clone(), ctx.decision.clone());
        let mut run = Run { fns: &self.fns, ctx, stack, max_string: self.max_string, max_vars: self.max_vars };
        match run.call(id) {
            Ok(_) => true,
            Err(Stop::Bail) => {
                (run.ctx.timers, run.ctx.decision) = saved;
                false
            }
            Err(Stop::Return(_)) => true,
        }
    }
}

/// Values of the string literals in `source`, by the hash `switch` keys its cases with.
/// Each literal's hash is read off a probe compiled by the same engine, so a case whose
/// literal is not found here (another literal syntax, a non-string case) is simply
/// unknown, and its switch is left to Rhai.
fn switch_case_values(engine: &Engine, source: &str) -> HashMap<u64, ImmutableString> {
    let mut out = HashMap::new();
    let bytes = source.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'"' {
            i += 1;
            continue;
        }
        let start = i;
        i += 1;
        while i < bytes.len() && bytes[i] != b'"' {
            i += if bytes[i] == b'\\' { 2 } else { 1 };
        }
        let end = (i + 1).min(bytes.len());
        i = end;
        let Some(lit) = source.get(start..end) else { continue };
        let Ok(value) = engine.eval_expression::<ImmutableString>(lit) else { continue };
        let probe = format!("fn probe(x) {{ switch x {{ {lit} => 1, _ => 2 }} }}");
        let Ok(ast) = engine.compile(&probe) else { continue };
        for f in ast.iter_fn_def() {
            for stmt in f.body.iter() {
                if let Stmt::Switch(sw, _) = stmt {
                    for hash in sw.1.cases.keys() {
                        out.insert(*hash, value.clone());
                    }
                }
            }
        }
    }
    out
}

struct Compiler<'a> {
    defs: HashMap<(&'a str, usize), &'a rhai::ScriptFuncDef>,
    /// Function ids by name and arity; `None` while being compiled (recursion) or when
    /// outside the subset.
    ids: HashMap<(ImmutableString, usize), Option<u16>>,
    fns: Vec<Option<Func>>,
    /// Upper bounds of operations and call depth of a call to each function.
    cost: Vec<(u64, usize)>,
    case_values: HashMap<u64, ImmutableString>,
}

/// Per-function compile state: names of the locals in scope, and what the body costs.
struct Frame {
    locals: Vec<ImmutableString>,
    ops: u64,
    depth: usize,
}

impl<'a> Compiler<'a> {
    fn function(&mut self, def: &'a rhai::ScriptFuncDef, path: &mut Vec<u16>) -> Option<u16> {
        let key = (def.name.clone(), def.params.len());
        if let Some(known) = self.ids.get(&key) {
            return *known;
        }
        if def.this_type.is_some() || def.params.len() > 8 {
            self.ids.insert(key, None);
            return None;
        }
        let id = self.fns.len() as u16;
        self.fns.push(None);
        self.cost.push((0, 0));
        // Recursion stays with Rhai: a call back into a function being compiled fails.
        self.ids.insert(key.clone(), None);
        path.push(id);
        let mut frame = Frame { locals: def.params.iter().cloned().collect(), ops: 1, depth: 1 };
        let body = self.block(&def.body, &mut frame, path);
        path.pop();
        match body {
            Some(body) => {
                self.fns[id as usize] = Some(Func { params: def.params.len() as u16, body });
                self.cost[id as usize] = (frame.ops, frame.depth);
                self.ids.insert(key, Some(id));
                Some(id)
            }
            None => None,
        }
    }

    fn block(&mut self, b: &'a StmtBlock, f: &mut Frame, path: &mut Vec<u16>) -> Option<Block> {
        let base = f.locals.len();
        let mut stmts = Vec::with_capacity(b.len());
        for s in b.iter() {
            stmts.push(self.stmt(s, f, path)?);
        }
        f.locals.truncate(base);
        Some(Block { stmts: stmts.into(), base: base as u16 })
    }

    fn stmt(&mut self, s: &'a Stmt, f: &mut Frame, path: &mut Vec<u16>) -> Option<St> {
        f.ops += 1;
        Some(match s {
            Stmt::Noop(_) => St::Expr(Ex::Const(Val::Unit)),
            Stmt::Expr(e) => St::Expr(self.expr(e, f, path)?),
            Stmt::FnCall(call, _) => St::Expr(self.fn_call(call, f, path)?),
            Stmt::Block(b) => St::Expr(Ex::Block(self.block(b, f, path)?)),
            Stmt::If(flow, _) => {
                let cond = self.expr(&flow.expr, f, path)?;
                let body = self.block(&flow.body, f, path)?;
                let branch = self.block(&flow.branch, f, path)?;
                St::Expr(Ex::If(Box::new((cond, body, branch))))
            }
            Stmt::Switch(sw, _) => St::Expr(self.switch(&sw.0, &sw.1, f, path)?),
            Stmt::Var(var, flags, _) if !flags.intersects(ASTFlags::EXPORTED) => {
                let value = self.expr(&var.1, f, path)?;
                f.locals.push(var.0.name.clone());
                St::Let(value)
            }
            Stmt::Return(value, flags, _) if !flags.contains(ASTFlags::BREAK) => match value {
                Some(v) => St::Return(Some(self.expr(v, f, path)?)),
                None => St::Return(None),
            },
            _ => return None,
        })
    }

    fn switch(
        &mut self,
        subject: &'a Expr,
        cases: &'a rhai::SwitchCasesCollection,
        f: &mut Frame,
        path: &mut Vec<u16>,
    ) -> Option<Ex> {
        if !cases.ranges.is_empty() {
            return None;
        }
        let subject = self.expr(subject, f, path)?;
        let mut out = Vec::with_capacity(cases.cases.len());
        for (hash, list) in cases.cases.iter() {
            let value = self.case_values.get(hash)?.clone();
            let mut arms = Vec::with_capacity(list.len());
            for &i in list.iter() {
                let arm = cases.expressions.get(i)?;
                let cond = match &arm.lhs {
                    Expr::BoolConstant(true, _) => None,
                    c => Some(self.expr(c, f, path)?),
                };
                arms.push((cond, self.expr(&arm.rhs, f, path)?));
            }
            out.push((value, arms));
        }
        let default = match cases.def_case {
            Some(i) => Some(self.expr(&cases.expressions.get(i)?.rhs, f, path)?),
            None => None,
        };
        Some(Ex::Switch(Box::new(Switch { subject, cases: out, default })))
    }

    fn local(&self, name: &str, f: &Frame) -> Option<u16> {
        f.locals.iter().rposition(|n| n == name).map(|i| i as u16)
    }

    fn exprs(&mut self, es: &'a [Expr], f: &mut Frame, path: &mut Vec<u16>) -> Option<Box<[Ex]>> {
        es.iter().map(|e| self.expr(e, f, path)).collect()
    }

    fn expr(&mut self, e: &'a Expr, f: &mut Frame, path: &mut Vec<u16>) -> Option<Ex> {
        f.ops += 1;
        Some(match e {
            Expr::DynamicConstant(d, _) => Ex::Const(constant(d)?),
            Expr::BoolConstant(b, _) => Ex::Const(Val::Bool(*b)),
            Expr::IntegerConstant(i, _) => Ex::Const(Val::Int(*i)),
            Expr::StringConstant(s, _) => Ex::Const(Val::Str(s.clone())),
            Expr::Unit(_) => Ex::Const(Val::Unit),
            Expr::Variable(v, _, _) => Ex::Local(self.local(&v.1, f)?),
            Expr::Stmt(b) => Ex::Block(self.block(b, f, path)?),
            Expr::And(list, _) => Ex::And(self.exprs(list, f, path)?),
            Expr::Or(list, _) => Ex::Or(self.exprs(list, f, path)?),
            Expr::FnCall(call, _) => self.fn_call(call, f, path)?,
            Expr::Dot(bin, flags, _) if flags.is_empty() => {
                let Expr::Variable(v, _, _) = &bin.lhs else { return None };
                let target = self.local(&v.1, f)?;
                match &bin.rhs {
                    Expr::Property(p, _) => Ex::Prop(target, Prop::parse(&p.2)?),
                    Expr::MethodCall(call, _) => {
                        let m = Method::parse(&call.name, call.args.len())?;
                        Ex::Method(target, m, self.exprs(&call.args, f, path)?)
                    }
                    _ => return None,
                }
            }
            _ => return None,
        })
    }

    fn fn_call(&mut self, call: &'a FnCallExpr, f: &mut Frame, path: &mut Vec<u16>) -> Option<Ex> {
        if call.capture_parent_scope {
            return None;
        }
        let name = call.name.as_str();
        let args = &call.args;
        if call.op_token.is_some() || !name.starts_with(|c: char| c.is_alphabetic() || c == '_') {
            let op = match (name, args.len()) {
                ("!", 1) => return Some(Ex::Not(Box::new(self.expr(&args[0], f, path)?))),
                ("-", 1) => return Some(Ex::Neg(Box::new(self.expr(&args[0], f, path)?))),
                ("+", 2) => Op::Add,
                ("-", 2) => Op::Sub,
                ("*", 2) => Op::Mul,
                ("/", 2) => Op::Div,
                ("%", 2) => Op::Rem,
                ("==", 2) => Op::Eq,
                ("!=", 2) => Op::Ne,
                ("<", 2) => Op::Lt,
                ("<=", 2) => Op::Le,
                (">", 2) => Op::Gt,
                (">=", 2) => Op::Ge,
                _ => return None,
            };
            let (a, b) = (self.expr(&args[0], f, path)?, self.expr(&args[1], f, path)?);
            return Some(Ex::Bin(op, Box::new([a, b])));
        }
        if let Some(&def) = self.defs.get(&(name, args.len())) {
            let id = self.function(def, path)?;
            let (ops, depth) = self.cost[id as usize];
            f.ops = f.ops.saturating_add(ops);
            f.depth = f.depth.max(depth + 1);
            return Some(Ex::Call(id, self.exprs(args, f, path)?));
        }
        match (span_unit(name), args.len()) {
            (Some((unit, _)), 1) => Some(Ex::Span(Box::new(self.expr(&args[0], f, path)?), unit)),
            _ => None,
        }
    }
}

fn constant(d: &Dynamic) -> Option<Val> {
    if d.is_unit() {
        Some(Val::Unit)
    } else if let Ok(b) = d.as_bool() {
        Some(Val::Bool(b))
    } else if let Ok(i) = d.as_int() {
        Some(Val::Int(i))
    } else if let Ok(x) = d.as_decimal() {
        Some(Val::Dec(x))
    } else if d.is_string() {
        d.clone().into_immutable_string().ok().map(Val::Str)
    } else {
        None
    }
}

/// Why a walk stopped early.
enum Stop {
    /// Outside the subset, or an error: Rhai makes this call.
    Bail,
    Return(Val),
}

type Walk<T> = Result<T, Stop>;

struct Run<'a> {
    fns: &'a [Option<Func>],
    ctx: &'a mut CallCtx,
    /// Locals of every active call; a call's frame starts at its base.
    stack: &'a mut Vec<Val>,
    max_string: usize,
    max_vars: usize,
}

impl Run<'_> {
    fn call(&mut self, id: u16) -> Walk<Val> {
        let fns = self.fns;
        let func = fns.get(id as usize).and_then(Option::as_ref).ok_or(Stop::Bail)?;
        let base = self.stack.len().checked_sub(func.params as usize).ok_or(Stop::Bail)?;
        let result = match self.block(&func.body, base) {
            Ok(v) | Err(Stop::Return(v)) => Ok(v),
            Err(Stop::Bail) => Err(Stop::Bail),
        };
        self.stack.truncate(base);
        result
    }

    fn block(&mut self, b: &Block, base: usize) -> Walk<Val> {
        let mut last = Val::Unit;
        for s in b.stmts.iter() {
            last = match s {
                St::Expr(e) => self.expr(e, base)?,
                St::Let(e) => {
                    let v = self.expr(e, base)?;
                    if self.stack.len() + 2 >= self.max_vars {
                        return Err(Stop::Bail);
                    }
                    self.stack.push(v);
                    Val::Unit
                }
                St::Return(e) => {
                    let v = match e {
                        Some(e) => self.expr(e, base)?,
                        None => Val::Unit,
                    };
                    return Err(Stop::Return(v));
                }
            };
        }
        self.stack.truncate(base + b.base as usize);
        Ok(last)
    }

    /// `&&` (stops at the first `false`) or `||` (stops at the first `true`); operands
    /// must be booleans.
    fn short_circuit(&mut self, list: &[Ex], base: usize, stop_at: bool) -> Walk<Val> {
        for x in list {
            match self.expr(x, base)? {
                Val::Bool(b) if b == stop_at => return Ok(Val::Bool(stop_at)),
                Val::Bool(_) => {}
                _ => return Err(Stop::Bail),
            }
        }
        Ok(Val::Bool(!stop_at))
    }

    fn local(&self, base: usize, i: u16) -> Walk<&Val> {
        self.stack.get(base + i as usize).ok_or(Stop::Bail)
    }

    fn string(&self, s: &str) -> Walk<Val> {
        if self.max_string != 0 && s.len() > self.max_string {
            return Err(Stop::Bail);
        }
        Ok(Val::Str(s.into()))
    }

    fn expr(&mut self, e: &Ex, base: usize) -> Walk<Val> {
        match e {
            Ex::Const(v) => Ok(v.clone()),
            Ex::Local(i) => self.local(base, *i).cloned(),
            Ex::Prop(target, p) => {
                let want = if p.on_event() { Val::Event } else { Val::Conv };
                if *self.local(base, *target)? != want {
                    return Err(Stop::Bail);
                }
                let c = &*self.ctx;
                match p {
                    Prop::Tenant => self.string(&c.tenant),
                    Prop::Conversation => self.string(&c.conversation),
                    Prop::Outcome => self.string(&c.outcome),
                    Prop::Now => Ok(Val::Int(c.now)),
                    Prop::FirstTs => Ok(Val::Int(c.first_ts)),
                    Prop::LastTs => Ok(Val::Int(c.last_ts)),
                    Prop::Events => Ok(Val::Int(c.events as INT)),
                    Prop::Cost => Ok(Val::Dec(c.cost)),
                    Prop::Intent => match &c.intent {
                        Some(s) if self.max_string == 0 || s.len() <= self.max_string => Ok(Val::Str(s.clone())),
                        Some(_) => Err(Stop::Bail),
                        None => Ok(Val::Unit),
                    },
                    Prop::Id => self.string(&c.event_id),
                    Prop::Type => self.string(&c.event_kind),
                    Prop::Ts => Ok(Val::Int(c.event_ts)),
                }
            }
            Ex::Method(target, m, args) => {
                if *self.local(base, *target)? != Val::Conv {
                    return Err(Stop::Bail);
                }
                let a = match args.first() {
                    Some(Ex::Const(Val::Str(s))) => s.clone(),
                    Some(e) => match self.expr(e, base)? {
                        Val::Str(s) => s,
                        _ => return Err(Stop::Bail),
                    },
                    None => return Err(Stop::Bail),
                };
                let int_arg = |run: &mut Self| match args.get(1).map(|e| run.expr(e, base)).transpose()? {
                    Some(Val::Int(i)) => Ok(i),
                    _ => Err(Stop::Bail),
                };
                let done = |r: Result<(), _>| r.map(|()| Val::Unit).map_err(|_| Stop::Bail);
                match m {
                    Method::Count => Ok(Val::Int(self.ctx.count(&a) as INT)),
                    Method::HasTimer => Ok(Val::Bool(self.ctx.has_timer(&a))),
                    Method::Timer => Ok(self.ctx.timer(&a).map_or(Val::Unit, Val::Int)),
                    Method::CancelTimer => {
                        self.ctx.cancel_timer(&a);
                        Ok(Val::Unit)
                    }
                    Method::StartTimer => {
                        let at = int_arg(self)?;
                        done(self.ctx.start_timer(a, at))
                    }
                    Method::Billable => {
                        let tier = int_arg(self)?;
                        done(self.ctx.billable(a, tier))
                    }
                    Method::NotBillable => done(self.ctx.not_billable(a)),
                }
            }
            Ex::Span(n, unit) => match self.expr(n, base)? {
                Val::Int(n) => checked_span(n, *unit, "").map(Val::Int).map_err(|_| Stop::Bail),
                _ => Err(Stop::Bail),
            },
            Ex::Call(id, args) => {
                let mut vals = smallvec::SmallVec::<[Val; 4]>::new();
                for a in args.iter() {
                    vals.push(self.expr(a, base)?);
                }
                if self.stack.len() + vals.len() + 2 >= self.max_vars {
                    return Err(Stop::Bail);
                }
                self.stack.extend(vals);
                self.call(*id)
            }
            Ex::Bin(op, ab) => {
                let a = self.expr(&ab[0], base)?;
                let b = self.expr(&ab[1], base)?;
                binary(*op, a, b).ok_or(Stop::Bail)
            }
            Ex::Not(x) => match self.expr(x, base)? {
                Val::Bool(b) => Ok(Val::Bool(!b)),
                _ => Err(Stop::Bail),
            },
            Ex::Neg(x) => match self.expr(x, base)? {
                Val::Int(i) => i.checked_neg().map(Val::Int).ok_or(Stop::Bail),
                _ => Err(Stop::Bail),
            },
            Ex::And(list) => self.short_circuit(list, base, false),
            Ex::Or(list) => self.short_circuit(list, base, true),
            Ex::Block(b) => self.block(b, base),
            Ex::If(x) => match self.expr(&x.0, base)? {
                Val::Bool(true) => self.block(&x.1, base),
                Val::Bool(false) => self.block(&x.2, base),
                _ => Err(Stop::Bail),
            },
            Ex::Switch(sw) => {
                let subject = self.expr(&sw.subject, base)?;
                if let Val::Str(s) = &subject {
                    if let Some((_, arms)) = sw.cases.iter().find(|(v, _)| v == s) {
                        for (cond, value) in arms {
                            let take = match cond {
                                None => true,
                                Some(c) => match self.expr(c, base)? {
                                    Val::Bool(b) => b,
                                    _ => return Err(Stop::Bail),
                                },
                            };
                            if take {
                                return self.expr(value, base);
                            }
                        }
                    }
                }
                match &sw.default {
                    Some(d) => self.expr(d, base),
                    None => Ok(Val::Unit),
                }
            }
        }
    }
}

fn binary(op: Op, a: Val, b: Val) -> Option<Val> {
    use Val::*;
    Some(match (op, a, b) {
        (Op::Add, Int(a), Int(b)) => Int(a.checked_add(b)?),
        (Op::Sub, Int(a), Int(b)) => Int(a.checked_sub(b)?),
        (Op::Mul, Int(a), Int(b)) => Int(a.checked_mul(b)?),
        (Op::Div, Int(a), Int(b)) => Int(a.checked_div(b)?),
        (Op::Rem, Int(a), Int(b)) => Int(a.checked_rem(b)?),
        (Op::Eq, Int(a), Int(b)) => Bool(a == b),
        (Op::Ne, Int(a), Int(b)) => Bool(a != b),
        (Op::Lt, Int(a), Int(b)) => Bool(a < b),
        (Op::Le, Int(a), Int(b)) => Bool(a <= b),
        (Op::Gt, Int(a), Int(b)) => Bool(a > b),
        (Op::Ge, Int(a), Int(b)) => Bool(a >= b),
        (Op::Eq, Str(a), Str(b)) => Bool(a == b),
        (Op::Ne, Str(a), Str(b)) => Bool(a != b),
        (Op::Eq, Bool(a), Bool(b)) => Bool(a == b),
        (Op::Ne, Bool(a), Bool(b)) => Bool(a != b),
        (Op::Eq, Dec(a), Dec(b)) => Bool(a == b),
        (Op::Ne, Dec(a), Dec(b)) => Bool(a != b),
        (Op::Lt, Dec(a), Dec(b)) => Bool(a < b),
        (Op::Le, Dec(a), Dec(b)) => Bool(a <= b),
        (Op::Gt, Dec(a), Dec(b)) => Bool(a > b),
        (Op::Ge, Dec(a), Dec(b)) => Bool(a >= b),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::Arc;

    use super::*;
    use crate::rules::api::Timers;
    use crate::rules::evaluator::Evaluator;
    use crate::rules::{sandbox, Outcome};

    const HOUR: INT = NANOS_PER_HOUR;

    /// One call's starting point.
    #[derive(Clone)]
    struct Setup {
        counts: [u32; crate::kinds::KNOWN.len()],
        intent: Option<&'static str>,
        timers: Timers,
        cost: Decimal,
        ts: INT,
    }

    impl Default for Setup {
        fn default() -> Self {
            Setup {
                counts: [0; crate::kinds::KNOWN.len()],
                intent: None,
                timers: Timers::new(),
                cost: Decimal::ZERO,
                ts: 10 * HOUR,
            }
        }
    }

    impl Setup {
        fn count(mut self, kind: &str, n: u32) -> Self {
            self.counts[crate::kinds::classify(kind) as usize] = n;
            self
        }
        fn intent(mut self, i: &'static str) -> Self {
            self.intent = Some(i);
            self
        }
        fn timer(mut self, name: &str, at: INT) -> Self {
            self.timers.push((name.into(), at));
            self
        }
        fn fill(&self, c: &mut CallCtx) {
            c.tenant = "t1".into();
            c.conversation = "c1".into();
            c.outcome = "o".into();
            c.now = self.ts;
            c.first_ts = self.ts - HOUR;
            c.last_ts = self.ts;
            c.events = self.counts.iter().sum();
            c.counts = self.counts;
            c.intent = self.intent.map(Into::into);
            c.cost = self.cost;
            c.timers = self.timers.clone();
            c.decision = None;
            c.event_id = "e1".into();
            c.event_kind = "escalated".into();
            c.event_ts = self.ts;
        }
    }

    type Effects = (Option<crate::rules::api::Decision>, Timers);

    fn compile(src: &str) -> (Engine, Outcome) {
        let engine = sandbox::build(&Default::default());
        let o = Outcome::compile(&engine, "o", Path::new("o.rhai"), src).expect("compiles");
        (engine, o)
    }

    /// Runs `func` natively and in Rhai from the same start. Returns whether the native
    /// walk completed, after checking it agrees with Rhai (or, if abandoned, left the
    /// context as it was).
    fn agree(engine: &Engine, o: &Outcome, rhai_only: &Outcome, func: &str, s: &Setup, timer: Option<&str>) -> bool {
        let name: Option<ImmutableString> = timer.map(Into::into);
        let how = || match &name {
            Some(n) => Call::Timer(n),
            None if func == "on_idle" => Call::Idle,
            None => Call::Event,
        };
        let eval = Evaluator::default();
        let (ran, native): (bool, Effects) = {
            let mut ctx = eval.ctx();
            s.fill(&mut ctx);
            let ran = o.native.call(func, &mut ctx, &how(), &mut Stack::default());
            (ran, (ctx.decision.clone(), ctx.timers.clone()))
        };
        let mut eval = Evaluator::default();
        s.fill(&mut eval.ctx());
        let result = eval.call(engine, rhai_only, func, how());
        let ctx = eval.ctx();
        if ran {
            assert!(result.is_ok(), "{func}: native completed, Rhai failed: {result:?}");
            assert_eq!(native, (ctx.decision.clone(), ctx.timers.clone()), "{func}: native and Rhai differ");
        } else {
            assert_eq!(native, (None, s.timers.clone()), "{func}: an abandoned walk must leave the context as it was");
        }
        ran
    }

    fn both(src: &str) -> (Engine, Outcome, Outcome) {
        let (engine, o) = compile(src);
        let (_, mut r) = compile(src);
        r.native = Native::default();
        (engine, o, r)
    }

    #[test]
    fn the_reference_definition_is_compiled_whole_and_agrees_with_rhai() {
        let src =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ai_resolution.rhai")).unwrap();
        let (engine, o, r) = both(&src);
        let mut names: Vec<_> = o.native.handlers().collect();
        names.sort();
        assert_eq!(
            names,
            [
                "on_conversation_closed",
                "on_escalated",
                "on_idle",
                "on_message_customer_during_follow_up",
                "on_resolution_confirmed",
                "on_timer"
            ]
        );
        let intents = [
            None,
            Some("password_reset"),
            Some("faq"),
            Some("refund"),
            Some("shipping_issue"),
            Some("billing_dispute"),
            Some("escalation_prevention"),
            Some("unknown_intent"),
        ];
        let mut cases = 0;
        for intent in intents {
            for (tools, answers) in [(0, 0), (0, 1), (0, 2), (0, 3), (2, 6), (2, 7), (3, 1), (1, 6)] {
                for timer in [false, true] {
                    let mut s = Setup::default().count("tool.called", tools).count("message.ai", answers);
                    if let Some(i) = intent {
                        s = s.intent(i);
                    }
                    if timer {
                        s = s.timer("follow_up", 30 * HOUR);
                    }
                    for func in ["on_escalated", "on_conversation_closed", "on_resolution_confirmed", "on_idle"] {
                        assert!(agree(&engine, &o, &r, func, &s, None), "{func} walked natively");
                    }
                    assert!(agree(&engine, &o, &r, "on_message_customer_during_follow_up", &s, None));
                    assert!(agree(&engine, &o, &r, "on_timer", &s, Some("follow_up")));
                    assert!(agree(&engine, &o, &r, "on_timer", &s, Some("other")));
                    cases += 1;
                }
            }
        }
        assert_eq!(cases, 128);
    }

    #[test]
    fn switch_ifs_lets_and_helpers_run_natively() {
        let (engine, o, r) = both(
            r#"
            const IDLE_AFTER = "1h";
            fn weight(c, n) {
                let w = n * 2;
                if w > 30 { return 30; }
                { let inner = w + 1; inner - 1 }
            }
            fn pick(c) {
                switch c.intent {
                    "a" | "b" => 1,
                    "c" if c.count("tool.called") > 1 => 3,
                    "c" => 2,
                    _ => { let x = weight(c, c.count("message.ai")); if x >= 3 && !(x == 4) { x } else { -x + 20 } }
                }
            }
            fn on_idle(c) {
                if c.tenant == "t1" && c.conversation != "" && c.outcome == "o" && c.events >= 0 && c.first_ts < c.last_ts {
                    c.not_billable("idle");
                }
            }
            fn on_escalated(c, e) {
                let c2 = c;
                if c2.has_timer("w") || c.count("message.ai") % 2 == 1 {
                    c.cancel_timer("w");
                    c.start_timer("w2", e.ts + minutes(90) - seconds(1) / 2);
                } else {
                    c.start_timer("w", c.now + hours(1) * 2);
                }
                c.billable(if e.id == "e1" { "r" } else { "s" }, pick(c));
            }"#,
        );
        let mut tiers = std::collections::BTreeSet::new();
        for intent in [None, Some("a"), Some("b"), Some("c"), Some("d")] {
            for (tools, answers) in [(0, 0), (2, 1), (0, 3), (1, 9), (0, 2)] {
                for timer in [false, true] {
                    let mut s = Setup::default().count("tool.called", tools).count("message.ai", answers);
                    if let Some(i) = intent {
                        s = s.intent(i);
                    }
                    if timer {
                        s = s.timer("w", 30 * HOUR);
                    }
                    assert!(agree(&engine, &o, &r, "on_escalated", &s, None));
                    assert!(agree(&engine, &o, &r, "on_idle", &s, None));
                    let eval = Evaluator::default();
                    let mut ctx = eval.ctx();
                    s.fill(&mut ctx);
                    o.native.call("on_escalated", &mut ctx, &Call::Event, &mut Stack::default());
                    tiers.insert(ctx.decision.as_ref().and_then(|d| d.tier));
                }
            }
        }
        // Every switch arm was taken at least once.
        assert_eq!(tiers, [1, 2, 3, 6, 16, 18, 20].into_iter().map(Some).collect());
    }

    #[test]
    fn block_values_agree_with_rhai() {
        for src in [
            "fn t(c) { 2; } fn on_escalated(c, e) { c.billable(\"r\", t(c)) }",
            "fn t(c) { let x = 2; } fn on_escalated(c, e) { if t(c) == () { c.not_billable(\"unit\") } }",
            "fn t(c) { if c.events > 100 { 2 } } fn on_escalated(c, e) { c.billable(\"r\", t(c) + 1) }",
            "fn t(c) { if c.events < 100 { 2 } else { 3 }; } fn on_escalated(c, e) { c.billable(\"r\", t(c)) }",
        ] {
            let (engine, o, r) = both(src);
            agree(&engine, &o, &r, "on_escalated", &Setup::default().count("message.ai", 3), None);
        }
    }

    #[test]
    fn outside_the_subset_rhai_decides_and_the_context_is_untouched() {
        // Each handler starts a timer first, so an abandoned walk has something to undo.
        let cases = [
            // overflow, an error in Rhai
            "c.start_timer(\"t\", e.ts + 9223372036854775807);",
            // decided twice, an error in Rhai
            "c.not_billable(\"a\"); c.not_billable(\"b\");",
            // the wrong type for a tier
            "c.billable(\"r\", \"2\");",
            // a comparison with unit
            "if c.intent == () { c.not_billable(\"none\") }",
            // a tier out of range
            "c.billable(\"r\", 300);",
            // a decimal against an integer
            "if c.cost > 0 { c.not_billable(\"costly\") }",
        ];
        for body in cases {
            let src = format!("fn on_escalated(c, e) {{ c.start_timer(\"first\", c.now + 5); {body} }}");
            let (engine, o, r) = both(&src);
            assert!(o.native.has("on_escalated"), "{body}: in the subset at compile time");
            let s = Setup::default().intent("x");
            assert!(!agree(&engine, &o, &r, "on_escalated", &s, None), "{body}: left to Rhai at run time");
        }
    }

    #[test]
    fn scripts_outside_the_subset_are_not_compiled() {
        for src in [
            // recursion
            "fn f(n) { if n == 0 { 0 } else { f(n - 1) } } fn on_escalated(c, e) { c.billable(\"r\", f(3)) }",
            // a loop
            "fn on_escalated(c, e) { let n = 0; while n < 3 { n += 1; } c.billable(\"r\", 1) }",
            // state kept by the script
            "fn on_escalated(c, e) { c.set(\"k\", 1); }",
            // event attributes
            "fn on_escalated(c, e) { if e.attr(\"x\") == 1 { c.not_billable(\"x\") } }",
            // a script function named like part of the API changes what calls mean
            "fn hours(n) { n } fn on_escalated(c, e) { c.start_timer(\"t\", e.ts + hours(1)) }",
            // an integer switch
            "fn on_escalated(c, e) { switch c.count(\"tool.called\") { 1 => c.not_billable(\"one\"), _ => () } }",
        ] {
            let (_, o) = compile(src);
            assert!(!o.native.has("on_escalated"), "{src}");
        }
    }

    #[test]
    fn a_tight_operations_limit_leaves_handlers_to_rhai() {
        let limits = sandbox::Limits { max_operations: 100, ..Default::default() };
        let engine = sandbox::build(&limits);
        let src =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("rules/ai_resolution.rhai")).unwrap();
        let o = Outcome::compile(&engine, "o", Path::new("o.rhai"), &src).unwrap();
        assert!(!o.native.has("on_conversation_closed"), "its bound exceeds the limit");
        assert!(o.native.has("on_escalated"));
    }

    #[test]
    fn zero_call_levels_or_variables_are_limits_not_unlimited() {
        let src = r#"fn f(c) { c.not_billable("x") } fn on_escalated(c, e) { f(c) } fn on_resolution_confirmed(c, e) { c.not_billable("y") }"#;
        let limits = sandbox::Limits { max_call_levels: 0, ..Default::default() };
        let o = Outcome::compile(&sandbox::build(&limits), "o", Path::new("o.rhai"), src).unwrap();
        assert!(!o.native.has("on_escalated"), "a nested call is over a zero call-level limit in Rhai");
        for max_variables in [0, 1, 2] {
            let limits = sandbox::Limits { max_variables, ..Default::default() };
            let engine = sandbox::build(&limits);
            let o = Outcome::compile(&engine, "o", Path::new("o.rhai"), src).unwrap();
            let mut r = Outcome::compile(&engine, "o", Path::new("o.rhai"), src).unwrap();
            r.native = Native::default();
            let s = Setup::default();
            assert!(!agree(&engine, &o, &r, "on_resolution_confirmed", &s, None), "max_variables {max_variables}");
        }
    }

    #[test]
    fn a_replayed_day_gives_the_same_bytes_natively_and_in_rhai() {
        use crate::gen::{generate, GenConfig};
        use crate::replay::tests::{run_draining_every, shipped_rules};

        let cfg = GenConfig {
            conversations: 1500,
            tenants: 7,
            seed: 11,
            duplicates: 0.02,
            bad: 0.01,
            ..GenConfig::default()
        };
        let mut input = Vec::new();
        generate(&cfg, &mut input).unwrap();
        let mut outputs = Vec::new();
        for native in [true, false] {
            let (rhai, mut rules) = shipped_rules();
            if !native {
                for o in &mut rules.outcomes {
                    Arc::get_mut(o).unwrap().native = Native::default();
                }
            }
            let (out, summary, _) = run_draining_every((rhai, rules), &input, 1);
            assert!(summary.records > 15_000);
            outputs.push(out);
        }
        assert!(outputs[0].len() > 500_000);
        assert!(outputs[0] == outputs[1], "native and Rhai verdicts differ");
    }
}
