//! The Content resources interactive menus are sent from (SPEC §8.1): one per
//! bot and menu shape, created through Twilio's Content API the first time a
//! menu of that shape is sent, remembered in the store for every instance and
//! restart, and kept in memory so a send needs no database round trip once
//! its shape is known.
//!
//! Two instances that meet a new shape at once may both create a resource; the
//! store keeps the first SID remembered and both send that one (the other
//! resource stays unused in the account). A creation that fails for a reason
//! that passes is retried like a send; a refusal, or a creation still failing
//! when the row's attempts run out, sends the menu's numbered text instead.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::Sender;
use crate::message::Interactive;
use crate::twilio::content::shape_key;
use crate::twilio::{ContentApi, SendOutcome};

/// Shapes kept in memory; past this the memory starts over (scripts can make
/// menus of any shape, and a lookup in the store is cheap when it is needed).
const MAX_KNOWN: usize = 10_000;

/// How long a refused shape is sent as text without asking the Content API
/// again (a fixed account or a reload may make it work).
const REFUSAL_MEMORY: Duration = Duration::from_secs(300);

/// What this process knows of each (bot, shape).
#[derive(Default)]
pub(super) struct ContentResources {
    known: Mutex<HashMap<(String, String), Known>>,
    /// Held while a resource is looked up in the store or created, so one
    /// process creates each shape once.
    creating: tokio::sync::Mutex<()>,
}

#[derive(Clone)]
enum Known {
    Sid(String),
    Refused { until: Instant, why: String },
}

/// How a menu's resource came out.
pub(super) enum MenuResource {
    /// Send with this `HX...` SID.
    Sid(String),
    /// Twilio's answer was one that passes: try the row again.
    Later(SendOutcome),
    /// Send the numbered text instead, for this reason.
    Text(String),
}

impl ContentResources {
    fn get(&self, key: &(String, String)) -> Option<Known> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        match known.get(key) {
            Some(Known::Refused { until, .. }) if *until <= Instant::now() => None,
            found => found.cloned(),
        }
    }

    /// Remembers that `key`'s shape is sent as text for a while, and says so.
    fn refuse(&self, key: (String, String), why: String) -> MenuResource {
        self.put(
            key,
            Known::Refused {
                until: Instant::now() + REFUSAL_MEMORY,
                why: why.clone(),
            },
        );
        MenuResource::Text(why)
    }

    fn put(&self, key: (String, String), value: Known) {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if known.len() >= MAX_KNOWN {
            known.clear();
        }
        known.insert(key, value);
    }
}

impl Sender {
    /// The Content resource `menu` of `bot` is sent from: from memory, else
    /// from the store, else created now.
    pub(super) async fn menu_resource(
        &self,
        bot: &str,
        menu: &Interactive,
        api: &ContentApi<'_>,
    ) -> MenuResource {
        let shape = shape_key(menu, api);
        let key = (bot.to_owned(), shape.clone());
        if let Some(known) = self.content.get(&key) {
            return resolved(known);
        }
        let _creating = self.content.creating.lock().await;
        if let Some(known) = self.content.get(&key) {
            return resolved(known);
        }
        match self.store.content_resource(bot, &shape).await {
            Ok(Some(sid)) => {
                self.content.put(key, Known::Sid(sid.clone()));
                return MenuResource::Sid(sid);
            }
            Ok(None) => {}
            Err(error) => {
                return MenuResource::Later(SendOutcome::Retryable {
                    retry_after: None,
                    http_status: None,
                    code: None,
                    message: format!("could not look up the menu's Content resource: {error}"),
                })
            }
        }
        let name = format!(
            "switchboard_{bot}_{menu}_{shape}",
            menu = menu.style.as_str()
        );
        match self.twilio.create_menu_content(api, &name, menu).await {
            // Whatever answered is not the Content API we know: never store it.
            SendOutcome::Accepted { sid, .. } if !is_content_sid(&sid) => self.content.refuse(
                key,
                "the Content API answered without a valid resource sid".to_owned(),
            ),
            SendOutcome::Accepted { sid, .. } => {
                let now_ms = self.now_ms();
                match self
                    .store
                    .remember_content_resource(bot, &shape, &sid, now_ms)
                    .await
                {
                    Ok(stored) => {
                        tracing::info!(bot, content_sid = %stored, shape = %shape, "created a Content resource for a menu");
                        self.content.put(key, Known::Sid(stored.clone()));
                        MenuResource::Sid(stored)
                    }
                    // Not remembered: sent with this SID all the same, and
                    // looked up (or created) again next time.
                    Err(error) => {
                        tracing::warn!(bot, content_sid = %sid, %error, "could not remember a created Content resource");
                        MenuResource::Sid(sid)
                    }
                }
            }
            SendOutcome::Permanent {
                http_status,
                code,
                message,
            } => {
                let why = match code {
                    Some(code) => format!("Content API answered {http_status} ({code}): {message}"),
                    None => format!("Content API answered {http_status}: {message}"),
                };
                self.content.refuse(key, why)
            }
            later @ SendOutcome::Retryable { .. } => MenuResource::Later(later),
        }
    }
}

/// `HX` and 32 hex digits.
fn is_content_sid(sid: &str) -> bool {
    sid.len() == 34 && sid.starts_with("HX") && sid[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn resolved(known: Known) -> MenuResource {
    match known {
        Known::Sid(sid) => MenuResource::Sid(sid),
        Known::Refused { why, .. } => MenuResource::Text(why),
    }
}
