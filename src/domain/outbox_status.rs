//! The status of a queued reply: set by the sender as it sends, and moved on by
//! Twilio's status callbacks (forward only).

use serde::{Deserialize, Serialize};

/// Outbox row statuses, in the order they may advance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutboxStatus {
    /// Waiting to be sent (or to be retried at `next_attempt_at`).
    Queued,
    /// Claimed by a sender holding a lease.
    Sending,
    Sent,
    Delivered,
    Read,
    Undelivered,
    Failed,
}

impl OutboxStatus {
    /// Every status, in declaration order.
    pub const ALL: [OutboxStatus; 7] = [
        OutboxStatus::Queued,
        OutboxStatus::Sending,
        OutboxStatus::Sent,
        OutboxStatus::Delivered,
        OutboxStatus::Read,
        OutboxStatus::Undelivered,
        OutboxStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Queued => "queued",
            OutboxStatus::Sending => "sending",
            OutboxStatus::Sent => "sent",
            OutboxStatus::Delivered => "delivered",
            OutboxStatus::Read => "read",
            OutboxStatus::Undelivered => "undelivered",
            OutboxStatus::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<OutboxStatus> {
        Some(match s {
            "queued" => OutboxStatus::Queued,
            "sending" => OutboxStatus::Sending,
            "sent" => OutboxStatus::Sent,
            "delivered" => OutboxStatus::Delivered,
            "read" => OutboxStatus::Read,
            "undelivered" => OutboxStatus::Undelivered,
            "failed" => OutboxStatus::Failed,
            _ => return None,
        })
    }

    /// How far along a row is; a status callback only moves a row to a higher rank.
    pub fn rank(self) -> u8 {
        match self {
            OutboxStatus::Queued => 0,
            OutboxStatus::Sending => 1,
            OutboxStatus::Sent => 2,
            OutboxStatus::Delivered | OutboxStatus::Undelivered => 3,
            OutboxStatus::Read => 4,
            // A failure reported by a callback is final.
            OutboxStatus::Failed => 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_strings_round_trip() {
        for status in OutboxStatus::ALL {
            assert_eq!(OutboxStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(OutboxStatus::parse("accepted"), None);
    }
}
