//! A reply's status history (SPEC §10.1): what happened to it after it was
//! queued, one event per line of the outbox row's `history` column, appended
//! by the statement that already changes the row (a send's outcome, a status
//! callback, a retry or cancel from the console). No statement of its own, so
//! the send path and the status callbacks pay a few bytes per row, not a
//! round trip; pruned with the row after the retention period.

use serde::{Deserialize, Serialize};

use super::SendResult;
use crate::domain::OutboxStatus;

/// One step of a reply's life.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusEvent {
    /// When it happened, in ms.
    #[serde(rename = "at")]
    pub at_ms: i64,
    /// What happened: `queued` (created, or queued again from the console),
    /// `retry` (an attempt failed and will be tried again at `next`), `sent`,
    /// `delivered`, `read`, `undelivered` or `failed`.
    pub status: String,
    /// Which send attempt this is the outcome of (1 for the first); `None`
    /// for what Twilio or a person reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i64>,
    /// The SID Twilio gave the message, with `sent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    /// Twilio's error code, with a retry or a failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<i64>,
    /// What went wrong, as recorded on the row.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// With `retry`: when the next attempt is due, in ms.
    #[serde(rename = "next", default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at_ms: Option<i64>,
    /// Who did it, when a person did (`console`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
}

/// What the console wrote as `by`.
pub const BY_CONSOLE: &str = "console";

impl StatusEvent {
    /// The event as a line of the `history` column.
    pub(super) fn line(&self) -> String {
        let mut line = super::record::to_json(self);
        line.push('\n');
        line
    }

    /// A status callback that moved a row to `status` at `now_ms`.
    pub(super) fn callback(
        status: OutboxStatus,
        code: Option<i64>,
        error: Option<&str>,
        now_ms: i64,
    ) -> StatusEvent {
        StatusEvent {
            at_ms: now_ms,
            status: status.as_str().to_owned(),
            code,
            error: error.map(str::to_owned),
            ..StatusEvent::default()
        }
    }
}

/// The history line of a send attempt that ended with `result` at `now_ms`,
/// without its opening `{`: the statement that records it puts
/// `{"attempt":N,` in front, N read from the row (`sql::attempt_number!`).
pub(super) fn attempt_line(result: &SendResult, now_ms: i64) -> String {
    let event = match result {
        SendResult::Sent { sid } => StatusEvent {
            at_ms: now_ms,
            status: OutboxStatus::Sent.as_str().to_owned(),
            sid: Some(sid.clone()),
            ..StatusEvent::default()
        },
        SendResult::Retry {
            next_attempt_at_ms,
            error_code,
            error_message,
        } => StatusEvent {
            at_ms: now_ms,
            status: "retry".to_owned(),
            code: *error_code,
            error: Some(error_message.clone()),
            next_attempt_at_ms: Some(*next_attempt_at_ms),
            ..StatusEvent::default()
        },
        SendResult::Failed {
            error_code,
            error_message,
        } => StatusEvent {
            at_ms: now_ms,
            status: OutboxStatus::Failed.as_str().to_owned(),
            code: *error_code,
            error: Some(error_message.clone()),
            ..StatusEvent::default()
        },
    };
    let line = event.line();
    // A serialized struct always opens with `{`.
    line[1..].to_owned()
}

/// A row's whole history: `queued` at `created_at_ms`, then each line of its
/// `history` column. A line that cannot be read (the column was written by
/// hand) is left out and logged, so one bad line never hides the others.
pub(super) fn parse(id: i64, created_at_ms: i64, text: &str) -> Vec<StatusEvent> {
    let mut events = vec![StatusEvent {
        at_ms: created_at_ms,
        status: OutboxStatus::Queued.as_str().to_owned(),
        ..StatusEvent::default()
    }];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        match serde_json::from_str(line) {
            Ok(event) => events.push(event),
            Err(error) => {
                tracing::warn!(outbox_id = id, %error, "a line of a reply's history could not be read; left out")
            }
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_attempt_line_completed_by_its_number_parses_back() {
        let tail = attempt_line(
            &SendResult::Retry {
                next_attempt_at_ms: 9,
                error_code: Some(20429),
                error_message: "too \"many\"\nrequests".into(),
            },
            5,
        );
        let text = format!(
            "{{\"attempt\":2,{tail}{}",
            StatusEvent::callback(OutboxStatus::Delivered, None, None, 7).line()
        );
        let events = parse(1, 1, &text);
        assert_eq!(events.len(), 3, "{events:?}");
        assert_eq!(events[0].status, "queued");
        assert_eq!(events[0].at_ms, 1);
        assert_eq!(events[1].attempt, Some(2));
        assert_eq!(events[1].status, "retry");
        assert_eq!(events[1].code, Some(20429));
        assert_eq!(events[1].error.as_deref(), Some("too \"many\"\nrequests"));
        assert_eq!(events[1].next_attempt_at_ms, Some(9));
        assert_eq!(events[2].status, "delivered");
        assert_eq!(events[2].attempt, None);
    }

    #[test]
    fn a_line_that_cannot_be_read_is_left_out() {
        let good = StatusEvent::callback(OutboxStatus::Read, None, None, 3).line();
        let events = parse(1, 1, &format!("not json\n{good}{{\"at\":\"x\"}}\n"));
        assert_eq!(
            events.iter().map(|e| e.status.as_str()).collect::<Vec<_>>(),
            ["queued", "read"]
        );
    }
}
