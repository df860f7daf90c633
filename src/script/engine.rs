//! The one place the Rhai engine is built: every limit from [`Limits`], the symbols
//! authors may not use, no module loading, `print`/`debug` to the log, the `vars`,
//! `user` and `message` variables, and the author API.
//!
//! Build it once per process ([`super::ScriptEngine::new`]); it holds no per-call
//! state, so one engine serves every conversation of every bot.

use rhai::module_resolvers::DummyModuleResolver;
use rhai::{Engine, OptimizationLevel};

use super::call::{self, Call};
use super::{api, Limits, ScriptFunctions};

/// The variables every script can read, resolved per call (see [`resolve_var`]).
pub(super) const BUILTIN_VARS: [&str; 3] = ["vars", "user", "message"];

/// Keywords disabled for authors: `eval` would run code the load-time checks never saw,
/// and modules would reach outside the script's file.
pub(super) const DISABLED_SYMBOLS: [&str; 3] = ["eval", "import", "export"];

/// Builds the engine with every limit of `limits` set and the host's `functions`.
pub(super) fn build(limits: &Limits, functions: &ScriptFunctions) -> Engine {
    let mut engine = Engine::new();

    engine
        .set_max_operations(limits.max_operations)
        .set_max_call_levels(limits.max_call_levels)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size)
        .set_max_modules(0)
        .set_optimization_level(OptimizationLevel::Simple)
        // A misspelt variable is a load error, not a `()` found at run time.
        .set_strict_variables(true)
        .set_module_resolver(DummyModuleResolver::new());
    for symbol in DISABLED_SYMBOLS {
        engine.disable_symbol(symbol);
    }

    engine.on_progress(call::check_progress);
    engine.on_print(|text| log_output("print", text));
    engine.on_debug(|text, _source, pos| {
        if let Some(call) = Call::running().filter(|call| call.may_log()) {
            tracing::debug!(
                bot = call.bot.as_str(),
                contact = call.contact.as_str(),
                file = %call.file().display(),
                line = pos.line(),
                "script debug: {text}"
            );
        }
    });
    #[allow(deprecated)] // volatile, not deprecated (see the Rhai reference notes)
    engine.on_var(resolve_var);

    api::register(&mut engine);
    functions.register_on(&mut engine, limits);
    engine
}

/// Resolves `vars`, `user` and `message` to the running call's values. A local
/// variable or parameter of the same name wins, as any inner name would.
fn resolve_var(
    name: &str,
    _index: usize,
    context: rhai::EvalContext,
) -> Result<Option<rhai::Dynamic>, Box<rhai::EvalAltResult>> {
    if !BUILTIN_VARS.contains(&name) || context.scope().contains(name) {
        return Ok(None);
    }
    let Some(call) = Call::from_tag(Some(context.tag())) else {
        return Ok(None);
    };
    Ok(Some(match name {
        "vars" => call.vars.clone(),
        "user" => call.user.clone(),
        _ => call.message.clone(),
    }))
}

fn log_output(kind: &str, text: &str) {
    if let Some(call) = Call::running().filter(|call| call.may_log()) {
        tracing::info!(
            bot = call.bot.as_str(),
            contact = call.contact.as_str(),
            file = %call.file().display(),
            "script {kind}: {text}"
        );
    }
}
