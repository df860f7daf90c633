//! The inbox (SPEC §10.3): handed-off conversations, newest first, and one
//! conversation's messages since its handoff with the forms to answer it and
//! hand it back. The forms post to `http/console/inbox.rs`, which runs them
//! through `inbound` (the person's step) and comes back here.

use minijinja::context;
use serde::Serialize;

use super::{parse_cursor, when, Console, ConsoleError, Session, LIST_PAGE};
use crate::domain::BotId;
use crate::handoff::path_segment;
use crate::store::{Cursor, HandedOff};

/// Messages shown on a handed-off conversation's page, each way.
pub const INBOX_MESSAGES: usize = 100;

/// What the inbox's query string may ask.
#[derive(Debug, Default, Clone, serde::Deserialize)]
pub struct InboxQuery {
    pub bot: Option<String>,
    pub before: Option<String>,
}

/// What an inbox form did, shown on the page it returns to (`?done=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboxNote {
    Sent,
    Released,
}

impl InboxNote {
    pub fn as_str(self) -> &'static str {
        match self {
            InboxNote::Sent => "sent",
            InboxNote::Released => "released",
        }
    }

    fn text(word: &str) -> Option<&'static str> {
        match word {
            "sent" => Some("Message queued for the contact."),
            "released" => Some("Handed back to the bot."),
            _ => None,
        }
    }
}

#[derive(Serialize)]
struct Row {
    bot: String,
    contact: String,
    /// The contact, escaped for a path segment.
    path: String,
    queue: String,
    node: Option<String>,
    handoff_at: String,
    answered_at: Option<String>,
    updated_at: String,
}

fn row(c: HandedOff) -> Row {
    Row {
        path: path_segment(&c.contact),
        queue: c.queue,
        node: c.node,
        handoff_at: when(c.handoff_at),
        answered_at: c.answered_at.map(when),
        updated_at: when(c.updated_at),
        bot: c.bot,
        contact: c.contact,
    }
}

impl Console {
    /// The inbox: handed-off conversations of every bot (or one), newest
    /// handoff first, a page at a time.
    pub async fn inbox_page(
        &self,
        session: &Session,
        query: &InboxQuery,
    ) -> Result<String, ConsoleError> {
        let bot = match query.bot.as_deref().filter(|b| !b.is_empty()) {
            Some(b) => Some(BotId::parse(b).map(|id| id.to_string()).ok_or_else(|| {
                ConsoleError::BadInput(format!(
                    "`{}` is not a bot id: follow the page's own links",
                    b.chars().take(64).collect::<String>()
                ))
            })?),
            None => None,
        };
        let from = parse_cursor(query.before.as_deref(), Cursor::NEWEST)?;
        let before = (from != Cursor::NEWEST).then_some((from.at_ms, from.id));
        let mut rows = self
            .store
            .handed_off(bot.as_deref(), before, LIST_PAGE + 1)
            .await?;
        let next = (rows.len() > LIST_PAGE).then(|| {
            rows.truncate(LIST_PAGE);
            rows.last()
                .map(|c| format!("{}.{}", c.handoff_at, c.id))
                .unwrap_or_default()
        });
        let bots: Vec<String> = self.registry.ids().iter().map(|b| b.to_string()).collect();
        self.page(
            Some(session),
            "Inbox",
            "inbox",
            None,
            "inbox.html",
            context! {
                bot => bot.unwrap_or_default(),
                bots => bots,
                rows => rows.into_iter().map(row).collect::<Vec<_>>(),
                next => next,
            },
        )
    }

    /// One handed-off conversation: its messages since the handoff, a form to
    /// answer and one to hand back. `done` is what the last form did.
    pub async fn inbox_conversation_page(
        &self,
        session: &Session,
        bot: &str,
        contact: &str,
        done: Option<&str>,
    ) -> Result<String, ConsoleError> {
        #[derive(Serialize)]
        struct Said {
            at: String,
            inbound: bool,
            text: String,
            status: String,
        }
        let Some(c) = self.store.handed_off_conversation(bot, contact).await? else {
            let notice = done.and_then(InboxNote::text);
            return self.page(
                Some(session),
                contact,
                "inbox",
                None,
                "inbox_gone.html",
                context! { bot => bot, contact => contact, notice => notice },
            );
        };
        let said = self
            .store
            .handoff_messages(&c, c.handoff_at, INBOX_MESSAGES)
            .await?
            .into_iter()
            .map(|m| Said {
                at: when(m.at),
                inbound: m.inbound,
                text: excerpt_long(&m.text),
                status: m.status,
            })
            .collect::<Vec<_>>();
        let loaded = self.registry.get(bot);
        let mut nodes: Vec<String> = loaded
            .as_ref()
            .map(|b| b.nodes.keys().cloned().collect())
            .unwrap_or_default();
        nodes.sort();
        let start = loaded.as_ref().map(|b| b.start.clone()).unwrap_or_default();
        let now_ms = self.clock.now().timestamp_millis();
        let window_open = !crate::conversation::is_whatsapp(contact)
            || (c.window_closed_at.is_none()
                && c.last_inbound_at
                    .is_some_and(|at| now_ms < at.saturating_add(24 * 60 * 60 * 1000)));
        let returns_at = loaded.as_ref().map(|b| {
            let clock = c.answered_at.unwrap_or(c.handoff_at).max(c.handoff_at);
            when(clock.saturating_add(
                i64::try_from(b.handoff.timeout.as_millis()).unwrap_or(i64::MAX / 2),
            ))
        });
        let path = path_segment(&c.contact);
        self.page(
            Some(session),
            &c.contact,
            "inbox",
            None,
            "inbox_conversation.html",
            context! {
                c => row(c.clone()),
                id => c.id,
                path => path,
                said => said,
                nodes => nodes,
                start => start,
                window_open => window_open,
                returns_at => returns_at,
                notice => done.and_then(InboxNote::text),
            },
        )
    }
}

/// A message as the inbox shows it: whole, up to a few thousand characters.
fn excerpt_long(text: &str) -> String {
    const CHARS: usize = 4000;
    if text.chars().count() <= CHARS {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(CHARS - 1).collect();
    cut.push('…');
    cut
}
