//! Accepting one inbound message ([`Inbound::accept`]): one at a time per contact,
//! the conversation step, the store transaction that commits message, state and
//! replies together, and then the outbox signal and the host's event.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OwnedMutexGuard;

use crate::conversation::{self, Runtime, Turn};
use crate::domain::{ConversationState, SideEffects};
use crate::flow::Bot;
use crate::hooks::{Events, MessageEvent};
use crate::outbox_signal::OutboxSignal;
use crate::store::{
    ContactStatus, DueTimeout, InboundOutcome, NewInbound, PersonWritten, StartRow, StartStep,
    StartWritten, StepOutput, StepRuns, Stepped, Store, StoreError, TimeoutWritten,
};
use crate::twilio::webhook::InboundWebhook;
use crate::twilio::TwilioClient;

/// Why a message was not accepted; either way nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum AcceptError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The deadline passed while the message waited for its turn (the contact's
    /// earlier messages, or the database, were slow).
    #[error("the message could not be handled within the webhook's deadline")]
    Deadline,
}

/// The share of a webhook's deadline a conversation step may use; the rest is
/// left for waiting on the contact's turn and for the write.
const STEP_SHARE_OF_DEADLINE: f64 = 0.8;

/// Accepts inbound messages: everything a message needs between a verified webhook
/// and the 200. One per engine, shared by the requests.
pub struct Inbound {
    store: Store,
    locks: ContactLocks,
    runtime: Runtime,
    events: Events,
    outbox: OutboxSignal,
    /// How long a webhook may take, from arrival to answer (SPEC §7).
    deadline: Duration,
    /// Marks messages read for bots with `read_receipts: true`; `None` under
    /// `--dry-run`, which calls no Twilio API.
    receipts: Option<TwilioClient>,
    /// When a message last arrived here.
    activity: Activity,
}

/// When this instance last accepted a message, so the scheduler can start a
/// broadcast's contacts at full speed while no webhooks come in and pace them
/// while some do ([`Inbound::busy`]).
#[derive(Debug)]
struct Activity {
    since: std::time::Instant,
    /// Milliseconds after `since` of the last message, plus one (0: none yet).
    last: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            since: std::time::Instant::now(),
            last: std::sync::atomic::AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        self.last
            .store(now + 1, std::sync::atomic::Ordering::Relaxed);
    }

    fn within(&self, window: Duration) -> bool {
        match self.last.load(std::sync::atomic::Ordering::Relaxed) {
            0 => false,
            last => {
                let now = u64::try_from(self.since.elapsed().as_millis()).unwrap_or(u64::MAX);
                now.saturating_sub(last - 1) <= u64::try_from(window.as_millis()).unwrap_or(0)
            }
        }
    }
}

/// How long a read receipt may take, in all: best effort, never retried.
const READ_RECEIPT_TIMEOUT: Duration = Duration::from_secs(3);

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Inbound {
    /// Accepts into `store`, stepping with `runtime`; tells `outbox` when replies are
    /// queued and `events` after each commit. `deadline` is
    /// [`Config::webhook_deadline`](crate::Config::webhook_deadline).
    pub fn new(
        store: Store,
        runtime: Runtime,
        events: Events,
        outbox: OutboxSignal,
        deadline: Duration,
    ) -> Inbound {
        Inbound {
            store,
            locks: ContactLocks::default(),
            runtime,
            events,
            outbox,
            deadline,
            receipts: None,
            activity: Activity::new(),
        }
    }

    /// Whether a message arrived here within `window`.
    pub fn busy(&self, window: Duration) -> bool {
        self.activity.within(window)
    }

    /// Sends read receipts (SPEC §8.5) for bots that ask for them; off under
    /// `--dry-run`.
    pub fn with_read_receipts(mut self, enabled: bool) -> Inbound {
        self.receipts = enabled.then(|| TwilioClient::new(READ_RECEIPT_TIMEOUT));
        self
    }

    /// Marks `message_sid` read with a typing indicator, in a task of its own
    /// after the commit: it never delays or fails the reply, gives up after
    /// [`READ_RECEIPT_TIMEOUT`], and is not retried.
    fn mark_read(&self, bot: &Bot, contact: &str, message_sid: &str) {
        let Some(client) = &self.receipts else {
            return;
        };
        if !bot.read_receipts || !conversation::is_whatsapp(contact) {
            return;
        }
        let twilio = &bot.twilio;
        let (Some(account_sid), Some(auth_token)) = (&twilio.account_sid, &twilio.auth_token)
        else {
            return;
        };
        let client = client.clone();
        let base = twilio.messaging_api_base.clone();
        let account_sid = account_sid.clone();
        let auth_token = auth_token.clone();
        let message_sid = message_sid.to_owned();
        let bot = bot.id.to_string();
        tokio::spawn(async move {
            let result = client
                .typing_indicator(
                    &base,
                    &account_sid,
                    &auth_token,
                    &message_sid,
                    READ_RECEIPT_TIMEOUT,
                )
                .await;
            let outcome = match &result {
                Ok(()) => "sent",
                Err(_) => "failed",
            };
            metrics::counter!("switchboard_read_receipts_total", "bot" => bot.clone(), "outcome" => outcome)
                .increment(1);
            if let Err(error) = result {
                tracing::warn!(bot, %message_sid, %error, "could not mark a message read");
            }
        });
    }

    /// Records `webhook` for `bot` and runs the conversation step, committing the
    /// result in one transaction. Signals the outbox when replies were queued, and
    /// emits a [`MessageEvent`] after the commit.
    ///
    /// The webhook's deadline, counted from `received_at`, bounds the whole: a step
    /// still running at its share of the time left is stopped like a script over its
    /// limits (the contact gets the bot's `error_reply`, the message is recorded), and
    /// a message still waiting for its turn when the deadline comes is not accepted
    /// ([`AcceptError::Deadline`]).
    pub async fn accept(
        &self,
        bot: Arc<Bot>,
        webhook: InboundWebhook,
        received_at: Instant,
    ) -> Result<InboundOutcome, AcceptError> {
        self.activity.touch();
        let now_ms = self.runtime.clock.now().timestamp_millis();
        let deadline = received_at + self.deadline;
        let step_deadline = Instant::now()
            + deadline
                .saturating_duration_since(Instant::now())
                .mul_f64(STEP_SHARE_OF_DEADLINE);
        let accepted = tokio::time::timeout_at(
            deadline.into(),
            self.accept_by(bot, webhook, now_ms, step_deadline),
        )
        .await;
        accepted.unwrap_or(Err(AcceptError::Deadline))
    }

    async fn accept_by(
        &self,
        bot: Arc<Bot>,
        webhook: InboundWebhook,
        now_ms: i64,
        step_deadline: Instant,
    ) -> Result<InboundOutcome, AcceptError> {
        // In-process serialization first, so waiting messages of one contact do not each
        // poll the database for the contact's turn; the store adds the cross-instance one.
        let _turn = self.locks.lock(bot.id.as_str(), &webhook.from).await;

        let record = NewInbound {
            bot: bot.id.to_string(),
            contact: webhook.from.clone(),
            message_sid: webhook.message_sid.clone(),
            body: webhook.message.text.clone(),
            payload: serde_json::to_value(&webhook.message).unwrap_or_default(),
            received_at_ms: now_ms,
        };
        let webhook = Arc::new(webhook);
        // What the step did besides its output, for the event and the metrics;
        // the last attempt's if the store retried.
        let notes: Arc<Mutex<StepNotes>> = Arc::default();
        // Stepped first with effects refused, which spares Postgres the
        // contact's turn; a script that reaches an HTTP call asks for the turn
        // and runs again, so its effects still happen once per message.
        let outcome = self
            .store
            .process_inbound_as(&record, StepRuns::Repeatable, |state, side_effects| {
                let bot = bot.clone();
                let webhook = webhook.clone();
                let runtime = self.runtime.clone();
                let notes = notes.clone();
                async move {
                    let scripts = bot.has_scripts();
                    let run = {
                        let bot = bot.clone();
                        let notes = notes.clone();
                        move || {
                            step(
                                &bot,
                                &webhook,
                                &runtime,
                                state,
                                now_ms,
                                Some(step_deadline),
                                side_effects,
                                &notes,
                            )
                        }
                    };
                    if !scripts {
                        // Menus and templates never block: stepping here saves two
                        // thread hand-offs per message.
                        return run();
                    }
                    // Scripts are synchronous and may wait on HTTP: keep them off the
                    // async workers.
                    match tokio::task::spawn_blocking(run).await {
                        Ok(out) => out,
                        // Only a panic gets here (the step itself never fails); nothing of
                        // the flow survives, so answer like any flow error.
                        Err(join_error) => {
                            tracing::error!(%join_error, "conversation step panicked");
                            *notes.lock().unwrap_or_else(|e| e.into_inner()) = StepNotes {
                                error: Some("the conversation step panicked".to_owned()),
                                opt_out_change: None,
                            };
                            Stepped::Output(StepOutput {
                                state: Default::default(),
                                replies: vec![crate::message::Reply::text(bot.error_reply.clone())],
                            })
                        }
                    }
                }
            })
            .await?;
        if let InboundOutcome::Processed { replies } = outcome {
            if replies > 0 {
                self.outbox.queued();
            }
            self.mark_read(&bot, &record.contact, &record.message_sid);
            let notes = std::mem::take(&mut *notes.lock().unwrap_or_else(|e| e.into_inner()));
            if let Some(opted_out) = notes.opt_out_change {
                count_opt_out_change(&record.bot, opted_out);
            }
            if self.events.enabled() {
                let error = notes.error;
                self.events.message_processed(MessageEvent::new(
                    &record.bot,
                    &record.contact,
                    &record.message_sid,
                    now_ms,
                    replies,
                    error,
                ));
            }
        }
        Ok(outcome)
    }
}

impl Inbound {
    /// Runs `start`, claimed by the caller, as a message is run (SPEC §9.1): one
    /// at a time with the contact's messages, the step with no connection held,
    /// then one transaction (the conversation, its replies and the start's
    /// outcome). Signals the outbox when replies were queued.
    pub async fn start(&self, bot: Arc<Bot>, start: &StartRow) -> Result<StartWritten, StoreError> {
        let _turn = self.locks.lock(bot.id.as_str(), &start.contact).await;
        let now_ms = self.runtime.clock.now().timestamp_millis();
        let status = self
            .store
            .contact_status(&start.bot, &start.contact)
            .await?;
        let window_open = window_open(&start.contact, status.as_ref(), now_ms);
        let step_deadline = Instant::now() + self.deadline.mul_f64(STEP_SHARE_OF_DEADLINE);
        let start_row = Arc::new(start.clone());
        let written = self
            .store
            .process_start(start, now_ms, |state| {
                let bot = bot.clone();
                let runtime = self.runtime.clone();
                let start = start_row.clone();
                async move {
                    let run = {
                        let bot = bot.clone();
                        move || {
                            start_step(
                                &bot,
                                &start,
                                &runtime,
                                state,
                                window_open,
                                now_ms,
                                step_deadline,
                            )
                        }
                    };
                    off_the_workers(&bot, run, || StartStep::Skip("flow_error".to_owned())).await
                }
            })
            .await?;
        match &written {
            StartWritten::Started { replies } if *replies > 0 => self.outbox.queued(),
            StartWritten::Skipped(reason) => {
                tracing::info!(bot = %start.bot, contact = %start.contact, start = start.id, %reason, "conversation start skipped");
            }
            _ => {}
        }
        Ok(written)
    }
}

impl Inbound {
    /// Moves on a conversation whose wait ran out (SPEC §9.2), as a message is
    /// run: one at a time with the contact's messages, the step with no
    /// connection held, one transaction; nothing when the wait was answered or
    /// fired meanwhile. A bot that is no longer loaded has the timer dropped.
    pub async fn time_out(
        &self,
        bot: Option<Arc<Bot>>,
        due: &DueTimeout,
    ) -> Result<TimeoutWritten, StoreError> {
        let _turn = self.locks.lock(&due.bot, &due.contact).await;
        let now_ms = self.runtime.clock.now().timestamp_millis();
        let step_deadline = Instant::now() + self.deadline.mul_f64(STEP_SHARE_OF_DEADLINE);
        let contact: Arc<str> = due.contact.as_str().into();
        let written = self
            .store
            .process_timeout(due, now_ms, |state| {
                let bot = bot.clone();
                let runtime = self.runtime.clone();
                let contact = contact.clone();
                async move {
                    let Some(bot) = bot else {
                        return StepOutput {
                            state: ConversationState {
                                timeout_at_ms: None,
                                on_timeout: None,
                                ..state
                            },
                            replies: Vec::new(),
                        };
                    };
                    let run = {
                        let bot = bot.clone();
                        move || {
                            time_out_step(&bot, &contact, &runtime, state, now_ms, step_deadline)
                        }
                    };
                    off_the_workers(&bot, run, || StepOutput {
                        state: ConversationState::default(),
                        replies: Vec::new(),
                    })
                    .await
                }
            })
            .await?;
        if let TimeoutWritten::Fired { replies } = written {
            if replies > 0 {
                self.outbox.queued();
            }
        }
        Ok(written)
    }
}

/// Why a person's answer or hand-back (SPEC §10.2) was not done; nothing
/// was written.
#[derive(Debug, thiserror::Error)]
pub enum PersonRefused {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The contact never wrote to this bot (no conversation at all).
    #[error("this bot has no conversation with this contact")]
    UnknownContact,
    /// The contact has no handed-off conversation with this bot.
    #[error("the conversation with this contact is not handed off to a person: there is nothing to answer or hand back (a person's turn begins with a `handoff` in the flow)")]
    NotHandedOff,
    /// A free-form message could not reach the contact now (SPEC §8.2).
    #[error("outside the 24-hour window: the contact last wrote more than 24 hours ago (or WhatsApp closed the window), so WhatsApp refuses free-form messages until they write again; hand the conversation back to a node that begins with a template instead")]
    OutsideWindow,
    /// The contact opted out of this bot's messages (SPEC §8.3).
    #[error("the contact opted out of this bot's messages: nothing can be sent until they send a start word")]
    OptedOut,
    /// Entering the release's node failed; the conversation stays handed off.
    #[error("entering node `{node}` failed: {error}")]
    Flow { node: String, error: String },
}

impl Inbound {
    /// A person's message to a handed-off contact (SPEC §10.2), under the
    /// contact's lock: refused outside the 24-hour window or for a contact
    /// who opted out, otherwise queued as a reply in the transaction that
    /// restarts the `handoff_timeout` clock. Answers how many rows were
    /// queued.
    pub async fn person_answer(
        &self,
        bot: Arc<Bot>,
        contact: &str,
        text: String,
        media: Vec<String>,
    ) -> Result<usize, PersonRefused> {
        let _turn = self.locks.lock(bot.id.as_str(), contact).await;
        let now_ms = self.runtime.clock.now().timestamp_millis();
        let Some(status) = self.store.contact_status(bot.id.as_str(), contact).await? else {
            return Err(PersonRefused::UnknownContact);
        };
        if status.opted_out_at_ms.is_some() {
            return Err(PersonRefused::OptedOut);
        }
        if !window_open(contact, Some(&status), now_ms) {
            return Err(PersonRefused::OutsideWindow);
        }
        let written = self
            .store
            .process_person(bot.id.as_str(), contact, now_ms, |state| {
                let out = conversation::person_answer(&bot, state, &text, &media, now_ms);
                std::future::ready(out.map(|out| StepOutput {
                    state: out.state,
                    replies: out.replies,
                }))
            })
            .await?;
        match written {
            PersonWritten::Done { replies } => {
                if replies > 0 {
                    self.outbox.queued();
                }
                Ok(replies)
            }
            PersonWritten::Refused => Err(PersonRefused::NotHandedOff),
        }
    }

    /// Hands a conversation back to the bot (SPEC §10.2), under the contact's
    /// lock: `node` entered for the contact (its replies queued), or with no
    /// node the conversation ended quietly. Answers how many replies were
    /// queued.
    pub async fn release(
        &self,
        bot: Arc<Bot>,
        contact: &str,
        node: Option<String>,
    ) -> Result<usize, PersonRefused> {
        let _turn = self.locks.lock(bot.id.as_str(), contact).await;
        if self
            .store
            .contact_status(bot.id.as_str(), contact)
            .await?
            .is_none()
        {
            return Err(PersonRefused::UnknownContact);
        }
        let now_ms = self.runtime.clock.now().timestamp_millis();
        let step_deadline = Instant::now() + self.deadline.mul_f64(STEP_SHARE_OF_DEADLINE);
        let failure: Arc<Mutex<Option<String>>> = Arc::default();
        let contact_owned: Arc<str> = contact.into();
        let node: Option<Arc<str>> = node.map(Into::into);
        let written = self
            .store
            .process_person(bot.id.as_str(), contact, now_ms, |state| {
                let bot = bot.clone();
                let runtime = self.runtime.clone();
                let contact = contact_owned.clone();
                let node = node.clone();
                let failure = failure.clone();
                async move {
                    let state = state.filter(|s| s.handoff.is_some())?;
                    let run = {
                        let bot = bot.clone();
                        move || {
                            let outcome = conversation::release(
                                conversation::Release {
                                    bot: &bot,
                                    contact: &contact,
                                    state,
                                    node: node.as_deref(),
                                    now_ms,
                                    deadline: Some(step_deadline),
                                },
                                &runtime,
                            );
                            match outcome {
                                Ok(out) => Some(StepOutput {
                                    state: out.state,
                                    replies: out.replies,
                                }),
                                Err(error) => {
                                    *failure.lock().unwrap_or_else(|e| e.into_inner()) =
                                        Some(error.to_string());
                                    None
                                }
                            }
                        }
                    };
                    off_the_workers(&bot, run, || None).await
                }
            })
            .await?;
        let failed = failure.lock().unwrap_or_else(|e| e.into_inner()).take();
        match (written, failed) {
            (PersonWritten::Done { replies }, _) => {
                if replies > 0 {
                    self.outbox.queued();
                }
                Ok(replies)
            }
            (PersonWritten::Refused, Some(error)) => {
                let node = node.as_deref().unwrap_or_default().to_owned();
                tracing::warn!(bot = %bot.id, %contact, %node, %error, "handing a conversation back failed; it stays with a person");
                Err(PersonRefused::Flow { node, error })
            }
            (PersonWritten::Refused, None) => Err(PersonRefused::NotHandedOff),
        }
    }
}

/// Runs a step (`run`) where it belongs: on the async worker for a bot of menus
/// only (they never block), on the blocking pool for a bot with scripts (they
/// may wait on HTTP). `on_panic` is the outcome should the step panic.
async fn off_the_workers<T: Send + 'static>(
    bot: &Bot,
    run: impl FnOnce() -> T + Send + 'static,
    on_panic: impl FnOnce() -> T,
) -> T {
    if !bot.has_scripts() {
        return run();
    }
    match tokio::task::spawn_blocking(run).await {
        Ok(out) => out,
        Err(join_error) => {
            tracing::error!(%join_error, "a conversation step panicked");
            on_panic()
        }
    }
}

/// A timer's step: [`conversation::time_out`], its flow error logged.
fn time_out_step(
    bot: &Bot,
    contact: &str,
    runtime: &Runtime,
    state: ConversationState,
    now_ms: i64,
    deadline: Instant,
) -> StepOutput {
    let outcome = conversation::time_out(
        conversation::TimeOut {
            bot,
            contact,
            state,
            now_ms,
            deadline: Some(deadline),
        },
        runtime,
    );
    if let Some(error) = &outcome.error {
        metrics::counter!("switchboard_script_errors_total", "bot" => bot.id.to_string())
            .increment(1);
        tracing::warn!(bot = %bot.id, %contact, %error, "flow failed when a wait ran out; the conversation ended quietly");
    }
    StepOutput {
        state: outcome.state,
        replies: outcome.replies,
    }
}

/// How long after a contact's last message WhatsApp accepts free-form messages.
const WINDOW_MS: i64 = 24 * 60 * 60 * 1000;

/// Whether a free-form message may reach `contact` at `now_ms` (SPEC §8.2):
/// always on SMS; on WhatsApp within 24 hours of their last message, unless
/// Twilio reported the window closed since.
fn window_open(contact: &str, status: Option<&ContactStatus>, now_ms: i64) -> bool {
    let whatsapp = contact
        .get(..9)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("whatsapp:"));
    if !whatsapp {
        return true;
    }
    status.is_some_and(|s| {
        s.window_closed_at_ms.is_none()
            && s.last_inbound_at_ms
                .is_some_and(|at| now_ms < at.saturating_add(WINDOW_MS))
    })
}

/// A start's step: [`conversation::start`], its flow error logged.
fn start_step(
    bot: &Bot,
    start: &StartRow,
    runtime: &Runtime,
    state: Option<ConversationState>,
    window_open: bool,
    now_ms: i64,
    deadline: Instant,
) -> StartStep {
    let outcome = conversation::start(
        conversation::Start {
            bot,
            contact: &start.contact,
            state,
            node: &start.node,
            vars: &start.vars,
            skip_if_active: start.if_active == crate::store::IfActive::Skip,
            window_open,
            now_ms,
            deadline: Some(deadline),
        },
        runtime,
    );
    match outcome {
        conversation::StartOutcome::Entered(out) => StartStep::Enter(StepOutput {
            state: out.state,
            replies: out.replies,
        }),
        conversation::StartOutcome::Skipped(reason) => StartStep::Skip(reason.to_owned()),
        conversation::StartOutcome::Failed(error) => {
            metrics::counter!("switchboard_script_errors_total", "bot" => bot.id.to_string())
                .increment(1);
            tracing::warn!(bot = %bot.id, start = start.id, %error, "flow failed entering a started conversation's node; nothing sent");
            StartStep::Skip("flow_error".to_owned())
        }
    }
}

/// What a step did besides its output: noted by the step, read after the commit.
#[derive(Debug, Default)]
struct StepNotes {
    /// The flow's error, for the event.
    error: Option<String>,
    /// `Some(true)` when the contact opted out, `Some(false)` when back in.
    opt_out_change: Option<bool>,
}

/// Counts a contact opting out with a `stop` word or back in with a `start` word.
fn count_opt_out_change(bot: &str, opted_out: bool) {
    if opted_out {
        metrics::counter!("switchboard_opt_outs_total", "bot" => bot.to_owned(), "via" => "message")
            .increment(1);
    } else {
        metrics::counter!("switchboard_opt_ins_total", "bot" => bot.to_owned()).increment(1);
    }
}

/// One conversation step, noting its flow error (if any) and opt-out change in
/// `notes` for the event, the metrics and the log. With effects refused, a
/// script that reaches one stops: nothing is noted, and the step asks for the
/// contact's turn.
#[allow(clippy::too_many_arguments)] // one message's step: each is a different input
fn step(
    bot: &Bot,
    webhook: &InboundWebhook,
    runtime: &Runtime,
    state: Option<ConversationState>,
    now_ms: i64,
    deadline: Option<Instant>,
    side_effects: SideEffects,
    notes: &Mutex<StepNotes>,
) -> Stepped {
    let opted_out_before = state.as_ref().is_some_and(|s| s.opted_out);
    let outcome = conversation::handle(
        Turn {
            bot,
            contact: &webhook.from,
            state,
            user: &webhook.user,
            message: &webhook.message,
            now_ms,
            deadline,
            side_effects,
        },
        runtime,
    );
    if outcome.needs_turn() {
        return Stepped::NeedsTurn;
    }
    *notes.lock().unwrap_or_else(|e| e.into_inner()) = StepNotes {
        error: outcome.error.as_ref().map(ToString::to_string),
        opt_out_change: (outcome.state.opted_out != opted_out_before)
            .then_some(outcome.state.opted_out),
    };
    if let Some(error) = &outcome.error {
        metrics::counter!("switchboard_script_errors_total", "bot" => bot.id.to_string())
            .increment(1);
        tracing::warn!(bot = %bot.id, message_sid = %webhook.message_sid, %error, "flow failed; sent error_reply and reset the conversation");
    }
    Stepped::Output(StepOutput {
        state: outcome.state,
        replies: outcome.replies,
    })
}

/// One async mutex per (bot, contact) currently in use; entries are removed when
/// nobody holds or waits for them, so the map stays as small as the traffic.
#[derive(Default)]
struct ContactLocks {
    map: Mutex<HashMap<String, Entry>>,
}

/// A contact's mutex and how many callers hold or await it.
struct Entry {
    mutex: Arc<tokio::sync::Mutex<()>>,
    users: usize,
}

/// Held while one message of a contact is processed.
struct ContactGuard<'a> {
    _user: User<'a>,
    _guard: OwnedMutexGuard<()>,
}

impl ContactLocks {
    async fn lock(&self, bot: &str, contact: &str) -> ContactGuard<'_> {
        let key = format!("{bot}\u{0}{contact}");
        let mutex = {
            let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
            let entry = map.entry(key.clone()).or_insert_with(|| Entry {
                mutex: Arc::default(),
                users: 0,
            });
            entry.users += 1;
            entry.mutex.clone()
        };
        // Counted from here: if this future is dropped while waiting (a cancelled
        // request), even just after the holder handed it the lock, `user` still
        // leaves, and the entry goes with its last user.
        let user = User { locks: self, key };
        // tokio's Mutex is fair: waiters get it in the order they asked, which keeps
        // a contact's messages in arrival order.
        let guard = mutex.lock_owned().await;
        ContactGuard {
            _user: user,
            _guard: guard,
        }
    }

    /// Entries currently held or awaited.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

/// One caller holding or awaiting a contact's lock.
struct User<'a> {
    locks: &'a ContactLocks,
    key: String,
}

impl Drop for User<'_> {
    fn drop(&mut self) {
        let mut map = self.locks.map.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = map.get_mut(&self.key) {
            entry.users -= 1;
            if entry.users == 0 {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ContactLocks;

    /// A waiter cancelled right after the holder handed it the lock (the lock
    /// is then the waiter's, but it never ran to take its guard) must not leave
    /// the contact's entry behind: the map would grow by one for each.
    #[tokio::test(flavor = "current_thread")]
    async fn a_waiter_cancelled_while_being_handed_the_lock_leaves_no_entry() {
        let locks = std::sync::Arc::new(ContactLocks::default());
        let held = locks.lock("bot", "contact").await;
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _guard = locks.lock("bot", "contact").await;
            }
        });
        // Let the waiter queue up behind the holder.
        tokio::task::yield_now().await;
        assert_eq!(locks.len(), 1);
        // The holder lets go: tokio hands the lock to the waiting task, which is
        // cancelled before it runs again (one thread: it cannot run meanwhile).
        drop(held);
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(locks.len(), 0, "the cancelled waiter left its entry behind");
        // And the contact can still be locked.
        drop(locks.lock("bot", "contact").await);
        assert_eq!(locks.len(), 0);
    }
}
