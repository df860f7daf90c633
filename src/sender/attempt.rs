//! One send: the checks before it (bot loaded, the contact may get it, credentials,
//! rate slot, claim still held), the request through the Twilio client, the
//! outcome classified by the retry policy (and what a refusal says about the
//! contact recorded), and recorded with the next completion batch.

use tokio::time::Instant;

use super::completions::Completions;
use super::content::MenuResource;
use super::gate::Refusal;
use super::leases::Lease;
use super::Sender;
use crate::failures::{self, FailedMessage};
use crate::flow::Bot;
use crate::hooks::SendEvent;
use crate::logging::without_contact;
use crate::message::Content;
use crate::store::{Completion, OutboxRow, SendResult, StoreError};
use crate::twilio::content::{menu_variables, template_variables};
use crate::twilio::{ContentApi, OutgoingMessage, SendContent, SendOutcome};

impl Sender {
    /// Sends one claimed row and records the outcome.
    pub(super) async fn send_one(&self, row: OutboxRow, lease: &Lease) {
        let Some(token) = row.claim_token else {
            return;
        };
        let Some(result) = self.attempt(&row, lease).await else {
            tracing::warn!(
                bot = %row.bot, outbox_id = row.id,
                "claim lost before sending; another sender has the row"
            );
            return;
        };
        self.report(&row, &result);
        let now_ms = self.now_ms();
        let completions = self
            .completions
            .get_or_init(|| Completions::start(self.store.clone()));
        match completions
            .record(Completion {
                id: row.id,
                claim_token: token,
                result: result.clone(),
                now_ms,
            })
            .await
        {
            Ok(true) if self.events.enabled() => self
                .events
                .send_finished(SendEvent::new(&row, &result, now_ms)),
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                bot = %row.bot, outbox_id = row.id,
                "claim lost before the send was recorded (lease expired); the row will be sent again"
            ),
            // The lease will expire and the row be claimed again: at-least-once.
            Err(error) => {
                tracing::error!(bot = %row.bot, outbox_id = row.id, %error, "could not record a send")
            }
        }
    }

    /// Counts and logs the outcome of one attempt.
    fn report(&self, row: &OutboxRow, result: &SendResult) {
        let label = match result {
            SendResult::Sent { .. } => "sent",
            SendResult::Retry { .. } => "retry",
            SendResult::Failed { .. } => "failed",
        };
        let code = match result {
            SendResult::Retry { error_code, .. } | SendResult::Failed { error_code, .. } => {
                error_code.map(|c| c.to_string()).unwrap_or_default()
            }
            SendResult::Sent { .. } => String::new(),
        };
        metrics::counter!("switchboard_send_attempts_total", "bot" => row.bot.clone(), "outcome" => label, "code" => code)
            .increment(1);
        if let SendResult::Failed {
            error_code,
            error_message,
        } = result
        {
            let opted_out = error_code.is_none() && error_message.starts_with(failures::OPTED_OUT);
            failures::count(&row.bot, *error_code, opted_out);
        }
        match result {
            SendResult::Sent { sid } => {
                tracing::info!(bot = %row.bot, outbox_id = row.id, %sid, "sent")
            }
            SendResult::Retry {
                next_attempt_at_ms,
                error_code,
                error_message,
            } => tracing::warn!(
                bot = %row.bot, outbox_id = row.id, contact = %row.contact, attempt = row.attempts, ?error_code,
                error = %without_contact(error_message, &row.contact),
                retry_in_ms = next_attempt_at_ms - self.now_ms(), "send failed; will retry"
            ),
            SendResult::Failed {
                error_code,
                error_message,
            } => tracing::error!(
                bot = %row.bot, outbox_id = row.id, contact = %row.contact, attempt = row.attempts, ?error_code,
                error = %without_contact(error_message, &row.contact), "send failed for good"
            ),
        }
    }

    /// One attempt at sending `row`, classified by the retry policy; `None` when
    /// the claim was lost before sending (nothing sent, nothing to record).
    async fn attempt(&self, row: &OutboxRow, lease: &Lease) -> Option<SendResult> {
        let Some(bot) = self.registry.get(&row.bot) else {
            return Some(SendResult::Failed {
                error_code: None,
                error_message: format!("bot `{}` is no longer loaded", row.bot),
            });
        };
        // Before --dry-run too: it shows what a real run would send.
        if let Some(refusal) = Refusal::of(bot.opt_out.as_ref(), row, self.now_ms()) {
            return Some(refusal.result());
        }
        if self.dry_run {
            // The one place a body is logged: showing what would be sent is the point
            // of --dry-run, which is for trying bots out, not for production.
            // A menu shows as what it would be; no Content resource is created.
            match &row.content {
                Some(content) => {
                    tracing::info!(bot = %row.bot, outbox_id = row.id, contact = %row.contact, body = %row.body, content = ?content, "dry-run: not calling Twilio")
                }
                None => {
                    tracing::info!(bot = %row.bot, outbox_id = row.id, contact = %row.contact, body = %row.body, media = ?row.media, "dry-run: not calling Twilio")
                }
            }
            return Some(SendResult::Sent {
                sid: format!("DRYRUN{:028}", row.id),
            });
        }
        let twilio = &bot.twilio;
        let (Some(account_sid), Some(auth_token), Some(sender)) =
            (&twilio.account_sid, &twilio.auth_token, &twilio.sender)
        else {
            return Some(SendResult::Failed {
                error_code: None,
                error_message: format!("bot `{}` has no Twilio credentials", row.bot),
            });
        };
        // What goes instead of `Body`: a menu's resource (created first if need
        // be) or a template, with this contact's variables.
        let (content_sid, variables) = match &row.content {
            None => (None, None),
            Some(Content::Template(template)) => (
                Some(template.content_sid.clone()),
                Some(template_variables(&template.variables)),
            ),
            Some(Content::Menu(menu)) => {
                let api = ContentApi {
                    base: &twilio.content_api_base,
                    account_sid,
                    auth_token,
                };
                match self.menu_resource(&row.bot, menu, &api).await {
                    MenuResource::Sid(sid) => (Some(sid), Some(menu_variables(menu))),
                    MenuResource::Later(outcome) => match self.classify(row, outcome) {
                        retry @ SendResult::Retry { .. } => return Some(retry),
                        // Out of attempts: the numbered text rather than no reply.
                        _ => {
                            self.menu_as_text(row, "the Content API kept failing");
                            (None, None)
                        }
                    },
                    MenuResource::Text(why) => {
                        self.menu_as_text(row, &why);
                        (None, None)
                    }
                }
            }
        };
        let content = content_sid.as_deref().map(|sid| SendContent {
            sid,
            variables: variables.as_deref(),
        });
        if let Some(max) = twilio.max_per_second {
            let slot = self.rate_slot(&row.bot, max, row.bulk, lease).await;
            if let Err(instead) = self.go_ahead(slot, "take a send slot") {
                return instead;
            }
        }
        let held = self.still_held(lease).await;
        if let Err(instead) = self.go_ahead(held, "confirm the claim before sending") {
            return instead;
        }
        let status_callback = self.public_url.as_deref().map(|base| {
            format!(
                "{}/webhooks/twilio/{}/status",
                base.trim_end_matches('/'),
                row.bot
            )
        });
        let started = Instant::now();
        let outcome = self
            .twilio
            .send(&OutgoingMessage {
                api_base: &twilio.api_base,
                account_sid,
                auth_token,
                sender,
                to: &row.contact,
                body: &row.body,
                media: &row.media,
                status_callback: status_callback.as_deref(),
                content,
            })
            .await;
        metrics::histogram!("switchboard_send_seconds").record(started.elapsed().as_secs_f64());
        let result = self.classify(row, outcome);
        if let SendResult::Failed {
            error_code: Some(code),
            ..
        } = result
        {
            // Before the row's outcome is recorded, so whoever sees it failed
            // sees its contact marked too.
            self.mark_contact(&bot, row, code).await;
        }
        Some(result)
    }

    /// Logs and counts a menu sent as its numbered text because its Content
    /// resource could not be had.
    fn menu_as_text(&self, row: &OutboxRow, why: &str) {
        tracing::warn!(bot = %row.bot, outbox_id = row.id, reason = %why, "sending a menu as numbered text: no Content resource");
        metrics::counter!("switchboard_interactive_fallbacks_total", "bot" => row.bot.clone())
            .increment(1);
    }

    /// Records what Twilio's refusal with `code` says about the row's contact
    /// (21610: opted out; 63016: window closed). Best effort: should it fail, the
    /// next refusal tells again.
    async fn mark_contact(&self, bot: &Bot, row: &OutboxRow, code: i64) {
        let message = FailedMessage::Row {
            conversation_id: row.conversation_id,
            queued_at_ms: row.created_at_ms,
        };
        if let Err(error) =
            failures::mark_contact(&self.store, bot, code, message, self.now_ms()).await
        {
            tracing::warn!(bot = %row.bot, outbox_id = row.id, code, %error, "could not record what Twilio's refusal says about the contact");
        }
    }

    /// Whether a check before sending lets the send go ahead. If not, what to
    /// record instead: nothing (`None`) when it found the claim lost, a retry in a
    /// second when it could not tell (`could not {doing}`).
    fn go_ahead(
        &self,
        check: Result<bool, StoreError>,
        doing: &str,
    ) -> Result<(), Option<SendResult>> {
        match check {
            Ok(true) => Ok(()),
            Ok(false) => Err(None),
            Err(error) => Err(Some(SendResult::Retry {
                next_attempt_at_ms: self.now_ms() + 1000,
                error_code: None,
                error_message: format!("could not {doing}: {error}"),
            })),
        }
    }

    /// What Twilio's answer means for the row: sent, failed for good, or retried
    /// when the retry policy allows another attempt.
    fn classify(&self, row: &OutboxRow, outcome: SendOutcome) -> SendResult {
        match outcome {
            SendOutcome::Accepted { sid, .. } => SendResult::Sent { sid },
            SendOutcome::Permanent {
                http_status,
                code,
                message,
            } => SendResult::Failed {
                error_code: code,
                error_message: format!("Twilio answered {http_status}: {message}"),
            },
            SendOutcome::Retryable {
                retry_after,
                http_status,
                code,
                message,
            } => {
                let message = match http_status {
                    Some(status) => format!("Twilio answered {status}: {message}"),
                    None => message,
                };
                let attempts = u32::try_from(row.attempts).unwrap_or(u32::MAX);
                match self.retry.after_failure(attempts, retry_after) {
                    Some(delay) => SendResult::Retry {
                        next_attempt_at_ms: self.now_ms()
                            + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2),
                        error_code: code,
                        error_message: message,
                    },
                    None => SendResult::Failed {
                        error_code: code,
                        error_message: format!("gave up after {attempts} attempts: {message}"),
                    },
                }
            }
        }
    }
}
