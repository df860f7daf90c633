//! Which vars a script sets, read from its AST: `vars.x = ...`, `vars["x"] = ...`,
//! `vars.x.y = ...` (sets `x`), `vars = #{x: ...}`, `vars += #{x: ...}` and
//! `vars.mixin(#{x: ...})`. The flow loader uses them to warn about a `{{ name }}`
//! that nothing in the bot sets.

use rhai::{ASTNode, Dynamic, Expr, Stmt};

/// The vars a script assigns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WrittenVars {
    /// Names assigned by a literal name, sorted, each once.
    pub names: Vec<String>,
    /// Some write names its var by a computed value (`vars[key] = ...`,
    /// `vars = other_map`): any var may be set.
    pub computed: bool,
}

impl WrittenVars {
    /// Records what the AST node at the end of `path` writes into `vars`.
    pub(super) fn record(&mut self, path: &[ASTNode]) {
        match path.last() {
            Some(ASTNode::Stmt(Stmt::Assignment(assignment))) => {
                let target = &assignment.1.lhs;
                if is_vars(target) {
                    // `vars = ...` or `vars += ...`: the keys of a map literal.
                    self.map(&assignment.1.rhs);
                } else {
                    self.member(target);
                }
            }
            // `vars.mixin(#{...})` / `vars.fill_with(#{...})` add a map's keys.
            Some(ASTNode::Expr(Expr::Dot(dot, ..))) if is_vars(&dot.lhs) => {
                if let Expr::MethodCall(call, _) = &dot.rhs {
                    if matches!(call.name.as_str(), "mixin" | "fill_with") {
                        match call.args.first() {
                            Some(map) => self.map(map),
                            None => self.computed = true,
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Sorts and dedups [`WrittenVars::names`] once the walk is done.
    pub(super) fn finish(&mut self) {
        self.names.sort();
        self.names.dedup();
    }

    /// `vars.x...` or `vars["x"]...` as an assignment target.
    fn member(&mut self, target: &Expr) {
        let (Expr::Dot(chain, ..) | Expr::Index(chain, ..)) = target else {
            return;
        };
        if !is_vars(&chain.lhs) {
            return;
        }
        match first_key(&chain.rhs) {
            Some(Key::Name(name)) => self.names.push(name),
            Some(Key::Computed) => self.computed = true,
            None => {}
        }
    }

    /// The keys of a map literal, or "any" for another value.
    fn map(&mut self, value: &Expr) {
        match value {
            Expr::Map(map, _) => self
                .names
                .extend(map.0.iter().map(|(key, _)| key.name.to_string())),
            // The optimizer turns a map of constants into one constant value.
            Expr::DynamicConstant(value, _) if value.is_map() => self.names.extend(keys(value)),
            _ => self.computed = true,
        }
    }
}

enum Key {
    Name(String),
    Computed,
}

/// The first property or index of a `.`/`[]` chain: `x` of `x.y[0]`.
fn first_key(expr: &Expr) -> Option<Key> {
    match expr {
        Expr::Property(property, _) => Some(Key::Name(property.2.to_string())),
        Expr::StringConstant(name, _) => Some(Key::Name(name.to_string())),
        Expr::Dot(chain, ..) | Expr::Index(chain, ..) => first_key(&chain.lhs),
        // A method call (`vars.list.push(x)`) sets nothing new.
        Expr::MethodCall(..) => None,
        _ => Some(Key::Computed),
    }
}

fn is_vars(expr: &Expr) -> bool {
    matches!(expr, Expr::Variable(name, ..) if name.1 == "vars" && name.2.is_empty())
}

fn keys(value: &Dynamic) -> Vec<String> {
    value
        .as_map_ref()
        .map(|map| map.keys().map(ToString::to_string).collect())
        .unwrap_or_default()
}
