//! Host functions: Rust functions an embedding program gives its flow authors
//! (`crm_lookup(phone)`), for every bot or for one bot.
//!
//! Embedders never see Rhai: a host function takes 0 to 3 arguments of any
//! `Deserialize` type and returns `Result<R, E>` with `R: Serialize`, `E: Display`.
//! Values cross as JSON (`serde_json::Value` works as "anything"). Inside a script call
//! a host function obeys the same rules as the built-ins: its running time counts
//! against the call's wall-time budget, its result against the string limit, and an
//! `Err` or a panic is a script error (the contact gets `error_reply`, which a script
//! `try`/`catch` may intercept for an `Err`, as for any runtime error).

use std::any::TypeId;
use std::collections::BTreeMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use rhai::{Dynamic, Engine, EvalAltResult, Module, NativeCallContext, Position};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::call::{panic_message, Call};
use super::engine::{BUILTIN_VARS, DISABLED_SYMBOLS};
use super::Limits;

/// Most arguments a host function may take.
pub const MAX_HOST_ARGS: usize = 3;

/// The author API's names, which host functions may not take.
const RESERVED: [&str; 12] = [
    "say",
    "ask",
    "go_to",
    "end",
    "handoff",
    "http_get",
    "http_post",
    "now",
    "log",
    "print",
    "debug",
    "start",
];

/// A type-erased host function: JSON arguments in, JSON result or message out.
type ErasedFn = Arc<dyn Fn(Vec<Value>) -> Result<Value, String> + Send + Sync>;

/// A Rust function scripts can call. Implemented for closures and functions taking
/// 0 to 3 `Deserialize` arguments and returning `Result<impl Serialize, impl Display>`;
/// `Args` only tells the implementations apart (like axum's handler marker).
///
/// Sealed: the closures and functions above are its only implementations, so
/// its methods may change without breaking a host program.
///
/// ```compile_fail,E0277
/// struct Mine;
/// impl switchboard::ScriptFunction<()> for Mine {
///     fn arity(&self) -> usize {
///         0
///     }
///     fn erase(self) -> switchboard::script::ErasedFnBox {
///         unimplemented!()
///     }
/// }
/// ```
pub trait ScriptFunction<Args>: sealed::Sealed<Args> + Send + Sync + 'static {
    /// How many arguments the function takes.
    fn arity(&self) -> usize;
    /// The function behind JSON in and out.
    fn erase(self) -> ErasedFnBox;
}

mod sealed {
    /// Implemented only beside [`super::ScriptFunction`]'s implementations.
    pub trait Sealed<Args> {}
}

/// A host function with its types erased (see [`ScriptFunction::erase`]).
pub struct ErasedFnBox(ErasedFn);

impl fmt::Debug for ErasedFnBox {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ErasedFnBox(..)")
    }
}

fn arg<A: DeserializeOwned>(
    args: &mut std::vec::IntoIter<Value>,
    index: usize,
) -> Result<A, String> {
    let value = args.next().unwrap_or(Value::Null);
    serde_json::from_value(value).map_err(|e| format!("argument {index} has the wrong type: {e}"))
}

fn result<R: Serialize, E: fmt::Display>(result: Result<R, E>) -> Result<Value, String> {
    let value = result.map_err(|e| e.to_string())?;
    serde_json::to_value(value)
        .map_err(|e| format!("its result cannot be passed to the script: {e}"))
}

macro_rules! script_function {
    ($count:expr; $($a:ident),*) => {
        impl<F, R, E, $($a),*> sealed::Sealed<($($a,)*)> for F
        where
            F: Fn($($a),*) -> Result<R, E> + Send + Sync + 'static,
            R: Serialize,
            E: fmt::Display,
            $($a: DeserializeOwned,)*
        {
        }

        impl<F, R, E, $($a),*> ScriptFunction<($($a,)*)> for F
        where
            F: Fn($($a),*) -> Result<R, E> + Send + Sync + 'static,
            R: Serialize,
            E: fmt::Display,
            $($a: DeserializeOwned,)*
        {
            fn arity(&self) -> usize {
                $count
            }

            #[allow(unused_mut, unused_variables, non_snake_case)]
            fn erase(self) -> ErasedFnBox {
                ErasedFnBox(Arc::new(move |args: Vec<Value>| {
                    let mut args = args.into_iter();
                    let mut index = 0;
                    $(
                        index += 1;
                        let $a: $a = arg(&mut args, index)?;
                    )*
                    result((self)($($a),*))
                }))
            }
        }
    };
}

script_function!(0;);
script_function!(1; A1);
script_function!(2; A1, A2);
script_function!(3; A1, A2, A3);

/// Why a host function could not be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FunctionError {
    #[error("`{0}` is not a valid function name: use letters, digits and `_`, not starting with a digit")]
    InvalidName(String),
    #[error("`{0}` is a name of the script API and cannot be replaced")]
    Reserved(String),
    #[error("`{name}` with {arity} argument(s) is already registered{}", bot.as_ref().map(|b| format!(" for bot `{b}`")).unwrap_or_default())]
    Duplicate {
        name: String,
        arity: usize,
        bot: Option<String>,
    },
    #[error("`{0}` is not a valid bot id")]
    InvalidBot(String),
}

/// One name and argument count: the implementation for every bot and per bot.
#[derive(Clone, Default)]
struct Entry {
    global: Option<ErasedFn>,
    bots: BTreeMap<String, ErasedFn>,
}

/// The host functions of an engine, registered before it is built. Cheap to clone.
#[derive(Clone, Default)]
pub struct ScriptFunctions {
    entries: BTreeMap<(String, usize), Entry>,
}

impl fmt::Debug for ScriptFunctions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.keys().map(|(n, a)| format!("{n}/{a}")))
            .finish()
    }
}

/// Whether a script of a bot may call a host function, for load-time checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Availability {
    /// Not a host function name: not ours to judge.
    NotHost,
    Available,
    /// Registered, but not with this many arguments.
    WrongArity(Vec<usize>),
    /// Registered only for these other bots.
    OtherBots(Vec<String>),
}

impl ScriptFunctions {
    pub fn new() -> ScriptFunctions {
        ScriptFunctions::default()
    }

    /// Registers `f` as `name` for every bot. A bot-specific function of the same
    /// name and arity wins for its bot.
    pub fn register<Args>(
        &mut self,
        name: &str,
        f: impl ScriptFunction<Args>,
    ) -> Result<&mut Self, FunctionError> {
        self.insert(None, name, f)
    }

    /// Registers `f` as `name` for `bot` only. Scripts of other bots calling it fail
    /// to load (`unknown to this bot`), which `switchboard check` reports.
    pub fn register_for_bot<Args>(
        &mut self,
        bot: &str,
        name: &str,
        f: impl ScriptFunction<Args>,
    ) -> Result<&mut Self, FunctionError> {
        if crate::domain::BotId::parse(bot).is_none() {
            return Err(FunctionError::InvalidBot(bot.to_owned()));
        }
        self.insert(Some(bot), name, f)
    }

    /// Whether no function is registered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The registered names with their argument counts, sorted.
    pub fn names(&self) -> Vec<(String, usize)> {
        self.entries.keys().cloned().collect()
    }

    fn insert<Args>(
        &mut self,
        bot: Option<&str>,
        name: &str,
        f: impl ScriptFunction<Args>,
    ) -> Result<&mut Self, FunctionError> {
        // `module::function` puts the function in a Rhai module: scripts call
        // `crm::lookup(phone)`, and hosts group related functions under one name.
        let (module, function) = match name.split_once("::") {
            Some((module, function)) => (Some(module), function),
            None => (None, name),
        };
        let identifier = |part: &str| {
            part.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        };
        if !identifier(function) || module.is_some_and(|m| !identifier(m)) {
            return Err(FunctionError::InvalidName(name.to_owned()));
        }
        let reserved = |part: &str| {
            RESERVED.contains(&part)
                || DISABLED_SYMBOLS.contains(&part)
                || BUILTIN_VARS.contains(&part)
        };
        if (module.is_none() && reserved(function)) || module.is_some_and(reserved) {
            return Err(FunctionError::Reserved(name.to_owned()));
        }
        let arity = f.arity();
        let entry = self.entries.entry((name.to_owned(), arity)).or_default();
        let duplicate = FunctionError::Duplicate {
            name: name.to_owned(),
            arity,
            bot: bot.map(str::to_owned),
        };
        let erased = f.erase().0;
        match bot {
            None if entry.global.is_some() => return Err(duplicate),
            None => entry.global = Some(erased),
            Some(bot) if entry.bots.contains_key(bot) => return Err(duplicate),
            Some(bot) => {
                entry.bots.insert(bot.to_owned(), erased);
            }
        }
        Ok(self)
    }

    /// Whether a script of `bot` may call `name` with `arity` arguments.
    pub(super) fn availability(&self, name: &str, arity: usize, bot: Option<&str>) -> Availability {
        let registered: Vec<(&usize, &Entry)> = self
            .entries
            .iter()
            .filter(|((n, _), _)| n == name)
            .map(|((_, a), e)| (a, e))
            .collect();
        if registered.is_empty() {
            return Availability::NotHost;
        }
        let usable = |e: &Entry| e.global.is_some() || bot.is_some_and(|b| e.bots.contains_key(b));
        match registered.iter().find(|(a, _)| **a == arity) {
            Some((_, entry)) if usable(entry) => Availability::Available,
            Some((_, entry)) => Availability::OtherBots(entry.bots.keys().cloned().collect()),
            None => {
                let arities = registered
                    .iter()
                    .filter(|(_, e)| usable(e))
                    .map(|(a, _)| **a)
                    .collect::<Vec<_>>();
                if arities.is_empty() {
                    let mut bots: Vec<String> = registered
                        .iter()
                        .flat_map(|(_, e)| e.bots.keys().cloned())
                        .collect();
                    bots.dedup();
                    Availability::OtherBots(bots)
                } else {
                    Availability::WrongArity(arities)
                }
            }
        }
    }

    /// Registers every function on `engine`, each dispatching on the calling bot;
    /// `module::function` names go into a static module of that name.
    pub(super) fn register_on(&self, engine: &mut Engine, limits: &Limits) {
        let max_bytes = limits.max_string_size;
        let mut modules: BTreeMap<&str, Module> = BTreeMap::new();
        for ((name, arity), entry) in &self.entries {
            if let Some((module, function)) = name.split_once("::") {
                let module = modules.entry(module).or_default();
                set_module_fn(module, function, name, *arity, entry, max_bytes);
                continue;
            }
            let name = name.clone();
            let entry = entry.clone();
            let types = vec![TypeId::of::<Dynamic>(); *arity];
            engine.register_raw_fn(
                name.clone(),
                types,
                move |ctx: NativeCallContext, args: &mut [&mut Dynamic]| {
                    call_host(&ctx, &name, &entry, args, max_bytes)
                },
            );
        }
        for (name, module) in modules {
            engine.register_static_module(name, module.into());
        }
    }
}

/// Puts one host function into a Rhai module. Rhai's module API is typed by
/// arity, hence one arm per supported argument count.
fn set_module_fn(
    module: &mut Module,
    function: &str,
    name: &str,
    arity: usize,
    entry: &Entry,
    max_bytes: usize,
) {
    let (name, entry) = (name.to_owned(), entry.clone());
    match arity {
        0 => {
            module.set_native_fn(function, move |ctx: NativeCallContext| {
                call_host(&ctx, &name, &entry, &mut [], max_bytes)
            });
        }
        1 => {
            module.set_native_fn(function, move |ctx: NativeCallContext, mut a: Dynamic| {
                call_host(&ctx, &name, &entry, &mut [&mut a], max_bytes)
            });
        }
        2 => {
            module.set_native_fn(
                function,
                move |ctx: NativeCallContext, mut a: Dynamic, mut b: Dynamic| {
                    call_host(&ctx, &name, &entry, &mut [&mut a, &mut b], max_bytes)
                },
            );
        }
        _ => {
            module.set_native_fn(
                function,
                move |ctx: NativeCallContext, mut a: Dynamic, mut b: Dynamic, mut c: Dynamic| {
                    call_host(
                        &ctx,
                        &name,
                        &entry,
                        &mut [&mut a, &mut b, &mut c],
                        max_bytes,
                    )
                },
            );
        }
    }
}

fn error(message: String) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(message.into(), Position::NONE))
}

/// One call of a host function from a script.
fn call_host(
    ctx: &NativeCallContext,
    name: &str,
    entry: &Entry,
    args: &mut [&mut Dynamic],
    max_bytes: usize,
) -> Result<Dynamic, Box<EvalAltResult>> {
    let state = Call::from_tag(ctx.tag()).ok_or_else(|| {
        error(format!(
            "{name}() can only be used inside a function of the script"
        ))
    })?;
    let Some(f) = entry.bots.get(&state.bot).or(entry.global.as_ref()) else {
        return Err(error(format!(
            "{name}() is not available to bot `{}`",
            state.bot
        )));
    };
    // What a host function does is the host's business: it may write
    // somewhere, so it runs once per message, holding the contact's turn.
    state.may_act(ctx.call_position())?;
    let mut values = Vec::with_capacity(args.len());
    for (index, value) in args.iter().enumerate() {
        let value: Value = rhai::serde::from_dynamic(&value.flatten_clone()).map_err(|e| {
            error(format!(
                "{name}(): argument {} cannot be passed: {e}",
                index + 1
            ))
        })?;
        values.push(value);
    }
    // A panic in the host's code is its bug, not the server's: it fails this script
    // call like any error, and the conversation engine carries on.
    let outcome = catch_unwind(AssertUnwindSafe(|| f(values)));
    let value = match outcome {
        Ok(Ok(value)) => value,
        Ok(Err(message)) => return Err(error(format!("{name}() failed: {message}"))),
        Err(panic) => {
            let what = panic_message(panic.as_ref());
            tracing::error!(
                bot = state.bot.as_str(),
                function = name,
                "host function panicked: {what}"
            );
            return Err(error(format!("{name}() failed: it panicked")));
        }
    };
    let size = serde_json::to_vec(&value).map_or(usize::MAX, |v| v.len());
    if size > max_bytes {
        return Err(error(format!(
            "{name}() returned {size} bytes, over the limit of {max_bytes} bytes"
        )));
    }
    rhai::serde::to_dynamic(value).map_err(|e| {
        error(format!(
            "{name}(): its result cannot be passed to the script: {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop(_: Value) -> Result<Value, String> {
        Ok(Value::Null)
    }

    #[test]
    fn names_are_checked() {
        let mut f = ScriptFunctions::new();
        assert!(matches!(
            f.register("crm lookup", noop),
            Err(FunctionError::InvalidName(_))
        ));
        assert!(matches!(
            f.register("9x", noop),
            Err(FunctionError::InvalidName(_))
        ));
        assert!(matches!(
            f.register("say", noop),
            Err(FunctionError::Reserved(_))
        ));
        assert!(matches!(
            f.register("vars", noop),
            Err(FunctionError::Reserved(_))
        ));
        assert!(matches!(
            f.register_for_bot("Bad Bot", "x", noop),
            Err(FunctionError::InvalidBot(_))
        ));
        f.register("crm_lookup", noop).unwrap();
        assert!(matches!(
            f.register("crm_lookup", noop),
            Err(FunctionError::Duplicate { .. })
        ));
        f.register_for_bot("shop", "crm_lookup", noop).unwrap();
    }

    #[test]
    fn availability_depends_on_bot_and_arity() {
        let mut f = ScriptFunctions::new();
        f.register("everywhere", |a: String, b: i64| {
            Ok::<_, String>(format!("{a}{b}"))
        })
        .unwrap();
        f.register_for_bot("shop", "only_shop", noop).unwrap();
        assert_eq!(
            f.availability("nothing", 1, Some("shop")),
            Availability::NotHost
        );
        assert_eq!(
            f.availability("everywhere", 2, Some("x")),
            Availability::Available
        );
        assert_eq!(
            f.availability("everywhere", 1, Some("x")),
            Availability::WrongArity(vec![2])
        );
        assert_eq!(
            f.availability("only_shop", 1, Some("shop")),
            Availability::Available
        );
        assert_eq!(
            f.availability("only_shop", 1, Some("other")),
            Availability::OtherBots(vec!["shop".to_owned()])
        );
        assert_eq!(
            f.availability("only_shop", 2, Some("other")),
            Availability::OtherBots(vec!["shop".to_owned()])
        );
    }

    #[test]
    fn erased_functions_convert_json() {
        let f = (|a: String, n: u32| Ok::<_, String>(vec![a; n as usize])).erase();
        assert_eq!(
            (f.0)(vec![Value::from("x"), Value::from(2)]).unwrap(),
            serde_json::json!(["x", "x"])
        );
        let err = (f.0)(vec![Value::from(1), Value::from(2)]).unwrap_err();
        assert!(err.contains("argument 1"), "{err}");
        let failing = (|| Err::<Value, _>("no CRM today")).erase();
        assert_eq!((failing.0)(vec![]).unwrap_err(), "no CRM today");
    }

    #[test]
    fn module_functions_are_called_by_their_path_and_checked_at_load() {
        use crate::domain::SystemClock;
        use crate::message::{InboundMessage, UserInfo};
        use crate::script::{ScriptCall, ScriptEngine, StubHttp};
        use std::path::Path;

        let mut f = ScriptFunctions::new();
        f.register("crm::lookup", |phone: String| {
            Ok::<_, String>(serde_json::json!({ "phone": phone, "tier": "gold" }))
        })
        .unwrap();
        f.register_for_bot("shop", "crm::vip", |_: String| Ok::<_, String>(true))
            .unwrap();
        assert!(
            f.register("crm::say", noop).is_ok(),
            "a module may name a function like the author API: it is always qualified"
        );
        assert!(matches!(
            f.register("vars::x", noop),
            Err(FunctionError::Reserved(_))
        ));
        assert!(matches!(
            f.register("a::b::c", noop),
            Err(FunctionError::InvalidName(_))
        ));
        let engine = ScriptEngine::with_functions(Limits::default(), f);

        let source = r#"fn start() { let c = crm::lookup(user.phone); say(`${c.tier} ${crm::vip(c.phone)}`); }"#;
        let script = engine
            .compile(Path::new("flows/shop/vip.rhai"), source)
            .map(Arc::new)
            .unwrap_or_else(|d| panic!("{d:#?}"));
        let user = UserInfo {
            phone: "+15550001".into(),
            ..UserInfo::default()
        };
        let message = InboundMessage::text("hi");
        let call = |side_effects| ScriptCall {
            bot: "shop",
            contact: "whatsapp:+15550001",
            function: "start",
            answer: None,
            vars: Default::default(),
            user: &user,
            message: &message,
            http: Arc::new(StubHttp::new()),
            http_allow: Arc::new([]),
            clock: Arc::new(SystemClock),
            deadline: None,
            side_effects,
        };
        let effect = engine
            .call(&script, call(crate::domain::SideEffects::Allowed))
            .unwrap();
        assert_eq!(effect.replies[0].body, "gold true");
        // What a host function does is unknown: with effects refused, the
        // call stops at it and asks for the contact's turn.
        let refused = engine
            .call(&script, call(crate::domain::SideEffects::Refused))
            .unwrap_err();
        assert!(refused.needs_turn, "{refused}");

        // Another bot's script may not call the shop's module function: a load error.
        let errors = engine
            .compile(Path::new("flows/other/vip.rhai"), source)
            .expect_err("crm::vip belongs to shop");
        assert!(
            errors.iter().any(|d| d
                .message
                .contains("crm::vip() is not available to this bot")),
            "{errors:#?}"
        );
    }
}
