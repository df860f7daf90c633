//! `{{ var }}` templates in `say`, `invalid` and `media`.

use serde_json::{Map, Value};

use crate::message::UserInfo;

/// A piece of author text that may hold `{{ }}` placeholders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    pub source: String,
}

/// What placeholders can name: every var, and `user`.
pub struct TemplateContext<'a> {
    pub vars: &'a Map<String, Value>,
    pub user: &'a UserInfo,
}

#[derive(Debug, Default)]
pub(crate) struct Templates {}

impl Templates {
    pub(crate) fn render(&self, text: &Text, ctx: &TemplateContext<'_>) -> Result<String, String> {
        let _ = (text, ctx);
        todo!("flow helper")
    }
}
