//! Signed-in console sessions, kept in memory: a random id (the cookie's value),
//! a CSRF token tied to it, and an expiry. Bounded: at most [`MAX_SESSIONS`]
//! live at once; signing in past that ends the session closest to expiring.
//! A restart signs everyone out, which for an operator's console is fine
//! (docs/decisions.md, "Console sessions").

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::RngCore;
use subtle::ConstantTimeEq;

/// How long a session lasts from sign-in.
pub const SESSION_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Sessions alive at once.
pub const MAX_SESSIONS: usize = 64;

/// Length of a session id or CSRF token: 32 random bytes as hex.
const TOKEN_CHARS: usize = 64;

/// A signed-in session, as a request sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The cookie's value.
    pub id: String,
    /// What every form of this session carries.
    pub csrf: String,
}

struct Entry {
    csrf: String,
    expires_at: Instant,
}

/// The live sessions.
#[derive(Default)]
pub struct Sessions {
    live: Mutex<HashMap<String, Entry>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("live", &self.lock().len())
            .finish()
    }
}

/// 32 bytes from the operating system's generator, as hex.
fn random_token() -> String {
    use std::fmt::Write as _;
    let mut bytes = [0u8; TOKEN_CHARS / 2];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let mut token = String::with_capacity(TOKEN_CHARS);
    for b in bytes {
        let _ = write!(token, "{b:02x}");
    }
    token
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.live.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a session at `now`; the one closest to expiring ends if
    /// [`MAX_SESSIONS`] are live.
    pub fn start(&self, now: Instant) -> Session {
        let mut live = self.lock();
        live.retain(|_, e| e.expires_at > now);
        if live.len() >= MAX_SESSIONS {
            if let Some(oldest) = live
                .iter()
                .min_by_key(|(_, e)| e.expires_at)
                .map(|(id, _)| id.clone())
            {
                live.remove(&oldest);
            }
        }
        let session = Session {
            id: random_token(),
            csrf: random_token(),
        };
        live.insert(
            session.id.clone(),
            Entry {
                csrf: session.csrf.clone(),
                expires_at: now + SESSION_LIFETIME,
            },
        );
        session
    }

    /// The live session with cookie value `id` at `now`. Anything that is not
    /// a well-formed id is refused before the lookup.
    pub fn find(&self, id: &str, now: Instant) -> Option<Session> {
        if id.len() != TOKEN_CHARS || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let mut live = self.lock();
        match live.get(id) {
            Some(entry) if entry.expires_at > now => Some(Session {
                id: id.to_owned(),
                csrf: entry.csrf.clone(),
            }),
            Some(_) => {
                live.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends session `id` (sign-out).
    pub fn end(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Whether session `id` is live (for dropping what belongs to ended ones).
    pub fn is_live(&self, id: &str, now: Instant) -> bool {
        self.lock().get(id).is_some_and(|e| e.expires_at > now)
    }
}

impl Session {
    /// Whether `presented` is this session's CSRF token, compared in constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        bool::from(presented.as_bytes().ct_eq(self.csrf.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_until_it_expires_or_ends() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let s = sessions.start(now);
        assert_eq!(s.id.len(), TOKEN_CHARS);
        assert_ne!(s.id, s.csrf);
        assert_eq!(sessions.find(&s.id, now), Some(s.clone()));
        assert!(s.csrf_matches(&s.csrf.clone()));
        assert!(!s.csrf_matches(""));
        assert!(!s.csrf_matches(&s.id));
        let later = now + SESSION_LIFETIME;
        assert_eq!(sessions.find(&s.id, later), None);
        // Gone for good once seen expired.
        assert_eq!(sessions.find(&s.id, now), None);

        let t = sessions.start(now);
        sessions.end(&t.id);
        assert_eq!(sessions.find(&t.id, now), None);
    }

    #[test]
    fn hostile_ids_are_refused_without_a_lookup() {
        let sessions = Sessions::default();
        let now = Instant::now();
        let s = sessions.start(now);
        let hostile: Vec<String> = vec![
            String::new(),
            "x".into(),
            s.id[..63].to_owned(),
            format!("{}0", s.id),
            s.id.replace(|c: char| c.is_ascii_digit(), "g"),
            "é".repeat(32),
        ];
        for id in &hostile {
            assert_eq!(sessions.find(id, now), None, "{id:?}");
        }
    }

    #[test]
    fn at_most_max_sessions_live_the_oldest_ends_first() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let first = sessions.start(start);
        for n in 1..=MAX_SESSIONS {
            sessions.start(start + Duration::from_secs(n as u64));
        }
        let now = start + Duration::from_secs(MAX_SESSIONS as u64 + 1);
        assert_eq!(sessions.find(&first.id, now), None);
        assert_eq!(sessions.lock().len(), MAX_SESSIONS);
    }
}
