//! A bot's id: the name of its folder under the flows folder.

use std::fmt;

/// A bot's id: its folder name, `[a-z0-9_-]+`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BotId(String);

impl BotId {
    /// Checks the folder-name rule; `None` when the name is not a valid id.
    pub fn parse(name: &str) -> Option<BotId> {
        let ok = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
        ok.then(|| BotId(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for BotId {
    type Err = InvalidBotId;

    fn from_str(s: &str) -> Result<BotId, InvalidBotId> {
        BotId::parse(s).ok_or_else(|| InvalidBotId(s.to_owned()))
    }
}

/// A name that is not a bot id (`[a-z0-9_-]+`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not a bot id: use lowercase letters, digits, `_` and `-`")]
pub struct InvalidBotId(pub String);

impl fmt::Display for BotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
