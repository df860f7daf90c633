//! One inbound message -> the conversation's new state and the replies to send.
//!
//! Pure apart from script HTTP (through [`ScriptHttp`]): no database, no Twilio.
//! The store runs [`handle`] inside the transaction that records the message, so
//! what it returns is committed together or not at all.

use std::sync::Arc;

use serde_json::{Map, Value};

use crate::domain::{Clock, ConversationState, Handoff, SideEffects};
use crate::flow::{Bot, MenuNode, MenuStyle, Node, OptOutWord, ScriptNode, TemplateContext, Text};
use crate::message::{
    limits, Choice, Content, InboundMessage, Interactive, InteractiveStyle, Reply, TemplateSend,
    UserInfo,
};
use crate::script::{AskTimeout, Next, ScriptCall, ScriptEngine, ScriptHttp};

/// How many nodes one message may pass through; a guard against script `go_to`
/// ping-pong (YAML goto loops are already refused at load time).
const MAX_NODES_PER_TURN: usize = 64;

/// What the conversation needs besides the bot: the script engine, and the
/// HTTP client and clock scripts use.
#[derive(Clone)]
pub struct Runtime {
    pub scripts: ScriptEngine,
    pub http: Arc<dyn ScriptHttp>,
    pub clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("scripts", &self.scripts)
            .finish_non_exhaustive()
    }
}

/// One message to handle.
#[derive(Debug)]
pub struct Turn<'a> {
    pub bot: &'a Bot,
    /// The contact's address (`From`).
    pub contact: &'a str,
    pub state: Option<ConversationState>,
    pub user: &'a UserInfo,
    pub message: &'a InboundMessage,
    pub now_ms: i64,
    /// When the message must be answered; scripts past it stop as over a limit.
    /// `None` offline (`test`, `chat`), where nobody is waiting.
    pub deadline: Option<std::time::Instant>,
    /// [`SideEffects::Refused`] when this step may run again: a script that
    /// reaches an effect then stops, and the outcome's error says it
    /// [needs the turn](TurnOutcome::needs_turn).
    pub side_effects: SideEffects,
}

/// What handling a message decided.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnOutcome {
    pub state: ConversationState,
    pub replies: Vec<Reply>,
    /// Set when the flow failed: `replies` is then just the bot's `error_reply` and
    /// the conversation was reset. For the log, never for the contact.
    pub error: Option<FlowError>,
}

impl TurnOutcome {
    /// The step reached an effect with effects refused: nothing of it counts,
    /// and the message must be stepped again holding the contact's turn.
    pub fn needs_turn(&self) -> bool {
        matches!(&self.error, Some(FlowError::Script(e)) if e.needs_turn)
    }
}

/// A failure inside a flow at run time. Logged and handed to the host as text
/// (`{}`), so a script's error is printed here, not returned as `source`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    #[error("script error in {0}")]
    Script(crate::script::ScriptError),
    #[error("node `{node}` sends to unknown node `{target}`")]
    UnknownNode { node: String, target: String },
    #[error("template in node `{node}` failed: {message}")]
    Template { node: String, message: String },
    #[error("more than {MAX_NODES_PER_TURN} nodes entered for one message (a go_to loop?), last `{node}`")]
    TooManySteps { node: String },
    #[error("`{node}` sends template `{template}`, which bot.yaml's `templates:` does not define")]
    UnknownTemplate { node: String, template: String },
}

impl From<crate::script::ScriptError> for FlowError {
    fn from(error: crate::script::ScriptError) -> FlowError {
        FlowError::Script(error)
    }
}

/// Handles one message. Never fails: flow errors become the bot's `error_reply`.
pub fn handle(turn: Turn<'_>, runtime: &Runtime) -> TurnOutcome {
    if let Some(mut outcome) = answer_opt_out(&turn) {
        // HELP while a person has the conversation: it stays theirs.
        keep_handoff_timer(turn.bot, &mut outcome.state);
        return outcome;
    }
    // Handed to a person (SPEC §10.2): the message is recorded and the bot
    // says nothing; keywords do not take the conversation back either.
    if let Some(state) = turn.state.as_ref().filter(|s| s.handoff.is_some()) {
        let mut state = state.clone();
        state.updated_at_ms = turn.now_ms;
        keep_handoff_timer(turn.bot, &mut state);
        return TurnOutcome {
            state,
            replies: Vec::new(),
            error: None,
        };
    }
    // Only the opt-out words change it; the flow carries it on (it is `false`
    // here unless the bot's opt-out layer is off).
    let opted_out = turn.state.as_ref().is_some_and(|s| s.opted_out);
    let mut walk = Walk {
        bot: turn.bot,
        contact: turn.contact,
        user: turn.user,
        message: turn.message,
        runtime,
        deadline: turn.deadline,
        side_effects: turn.side_effects,
        replies: Vec::new(),
        vars: Map::new(),
        entered: 0,
    };
    let result = walk
        .run(turn.state, turn.now_ms)
        .and_then(|position| walk.finish_replies().map(|()| position));
    match result {
        Ok(position) => TurnOutcome {
            state: position.state(walk.vars, turn.now_ms, opted_out),
            replies: walk.replies,
            error: None,
        },
        // Whatever the failing turn had queued is dropped: the contact gets one
        // clear message, and the next message starts over, as after a timeout.
        Err(error) => TurnOutcome {
            state: Position::ended().state(Map::new(), turn.now_ms, opted_out),
            replies: vec![Reply::text(turn.bot.error_reply.clone())],
            error: Some(error),
        },
    }
}

/// A handed-off conversation's timer (SPEC §10.2): `handoff_timeout` after the
/// handoff or a person's last answer, then back to the bot, quietly. The
/// store does not read timers back with the state, so every write of a
/// handed-off conversation sets it again.
fn keep_handoff_timer(bot: &Bot, state: &mut ConversationState) {
    if let Some(handoff) = &state.handoff {
        state.timeout_at_ms = Some(handoff.returns_at_ms(bot.handoff.timeout));
        state.on_timeout = None;
    }
}

/// STOP, START and HELP (SPEC §8.3), checked on the whole message before
/// keywords and flows. `None` lets the message go on to them: the bot has no
/// opt-out layer, or the message is none of its words (nor a `start` word of a
/// contact who is not opted out, nor a `help` word that is also a keyword). A
/// contact who opted out gets an outcome here for every message: the `start`
/// and `help` replies, or nothing at all.
fn answer_opt_out(turn: &Turn<'_>) -> Option<TurnOutcome> {
    let rules = turn.bot.opt_out.as_ref()?;
    let opted_out = turn.state.as_ref().is_some_and(|s| s.opted_out);
    let answer = turn.message.answer().trim().to_lowercase();
    let word = rules.word(&answer);
    // The conversation as it was (or a fresh one), with this message's time.
    let mut state = turn.state.clone().unwrap_or_default();
    state.updated_at_ms = turn.now_ms;
    let reply = match word {
        Some(OptOutWord::Stop) => {
            // Ends the conversation: after START the contact begins anew.
            state = ConversationState {
                updated_at_ms: turn.now_ms,
                opted_out: true,
                ..ConversationState::default()
            };
            rules.stop_reply.as_str()
        }
        Some(OptOutWord::Start) if opted_out => {
            state = ConversationState {
                updated_at_ms: turn.now_ms,
                ..ConversationState::default()
            };
            rules.start_reply.as_str()
        }
        Some(OptOutWord::Help) if opted_out || !turn.bot.keywords.contains_key(&answer) => {
            rules.help_reply.as_str()
        }
        // Recorded, and nothing else: no flow runs for a contact who opted out.
        _ if opted_out => "",
        _ => return None,
    };
    let replies = if reply.is_empty() {
        Vec::new()
    } else {
        vec![Reply::opt_out(reply)]
    };
    Some(TurnOutcome {
        state,
        replies,
        error: None,
    })
}

/// Where a conversation stands after a message.
struct Position {
    node: Option<String>,
    handler: Option<String>,
    /// How long the node waits and what follows (SPEC §9.2): a node for a
    /// menu, a function of the script for an `ask`; for a handoff, the
    /// bot's `handoff_timeout`, after which the conversation ends.
    timeout: Option<AskTimeout>,
    /// The queue the conversation was handed to (SPEC §10.2).
    handoff: Option<String>,
}

impl Position {
    fn ended() -> Position {
        Position {
            node: None,
            handler: None,
            timeout: None,
            handoff: None,
        }
    }

    /// Handed to a person in `queue` at `node` (the node, script or option's
    /// node that did it, for the console).
    fn handed_off(bot: &Bot, node: &str, queue: &str) -> Position {
        Position {
            node: Some(node.to_owned()),
            handler: None,
            timeout: Some(AskTimeout {
                after: bot.handoff.timeout,
                on_timeout: None,
            }),
            handoff: Some(queue.to_owned()),
        }
    }

    /// Where a menu node that waits leaves the conversation.
    fn waiting_at(menu: &MenuNode) -> Position {
        Position {
            node: Some(menu.name.clone()),
            handler: None,
            timeout: menu.timeout.map(|after| AskTimeout {
                after,
                on_timeout: menu.on_timeout.clone(),
            }),
            handoff: None,
        }
    }

    /// The state's `timeout_at_ms` and `on_timeout` for this position at `now_ms`.
    fn timer(&self, now_ms: i64) -> (Option<i64>, Option<String>) {
        match &self.timeout {
            Some(wait) => {
                let after = i64::try_from(wait.after.as_millis()).unwrap_or(i64::MAX / 2);
                (Some(now_ms.saturating_add(after)), wait.on_timeout.clone())
            }
            None => (None, None),
        }
    }

    /// The conversation's state at this position.
    fn state(self, vars: Map<String, Value>, now_ms: i64, opted_out: bool) -> ConversationState {
        let (timeout_at_ms, on_timeout) = self.timer(now_ms);
        ConversationState {
            node: self.node,
            handler: self.handler,
            vars,
            updated_at_ms: now_ms,
            opted_out,
            timeout_at_ms,
            on_timeout,
            handoff: self.handoff.map(|queue| Handoff {
                queue,
                at_ms: now_ms,
                answered_at_ms: None,
            }),
        }
    }
}

struct Walk<'a> {
    bot: &'a Bot,
    contact: &'a str,
    user: &'a UserInfo,
    message: &'a InboundMessage,
    runtime: &'a Runtime,
    deadline: Option<std::time::Instant>,
    side_effects: SideEffects,
    replies: Vec<Reply>,
    vars: Map<String, Value>,
    entered: usize,
}

/// What a step nobody's message caused (a start, a timer, a hand-back) walks
/// with: the contact as a user with no profile, an empty message, and effects
/// allowed (such steps run once, under the contact's turn).
struct Unprompted {
    user: UserInfo,
    message: InboundMessage,
}

impl Unprompted {
    fn new(contact: &str) -> Unprompted {
        Unprompted {
            user: user_of(contact),
            message: InboundMessage::text(""),
        }
    }

    fn walk<'a>(
        &'a self,
        bot: &'a Bot,
        contact: &'a str,
        runtime: &'a Runtime,
        deadline: Option<std::time::Instant>,
        vars: Map<String, Value>,
    ) -> Walk<'a> {
        Walk {
            bot,
            contact,
            user: &self.user,
            message: &self.message,
            runtime,
            deadline,
            side_effects: SideEffects::Allowed,
            replies: Vec::new(),
            vars,
            entered: 0,
        }
    }
}

/// Whether `contact` is on WhatsApp (`whatsapp:+...`): only there are menus
/// sent as buttons or lists.
pub fn is_whatsapp(contact: &str) -> bool {
    contact
        .get(..9)
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case("whatsapp:"))
}

impl Walk<'_> {
    /// The last touches on what the turn sends: interactive menus become their
    /// numbered text for a contact not on WhatsApp, and a script's
    /// `say_template` gets its template's SID and default variables.
    fn finish_replies(&mut self) -> Result<(), FlowError> {
        let whatsapp = is_whatsapp(self.contact);
        let mut replies = std::mem::take(&mut self.replies);
        for reply in &mut replies {
            match &reply.content {
                Some(Content::Menu(_)) if !whatsapp => reply.content = None,
                Some(Content::Template(send)) if send.content_sid.is_empty() => {
                    let given = send.variables.clone();
                    let name = send.name.clone();
                    *reply = self.template_reply("script", &name, given)?;
                }
                _ => {}
            }
        }
        self.replies = replies;
        Ok(())
    }

    /// The reply that sends template `name`: its variables rendered from the
    /// vars, then `given` on top.
    fn template_reply(
        &self,
        node: &str,
        name: &str,
        given: std::collections::BTreeMap<String, String>,
    ) -> Result<Reply, FlowError> {
        let Some(template) = self.bot.whatsapp_templates.get(name) else {
            return Err(FlowError::UnknownTemplate {
                node: node.to_owned(),
                template: name.to_owned(),
            });
        };
        let mut variables = std::collections::BTreeMap::new();
        for (key, text) in &template.variables {
            variables.insert(key.clone(), self.render(node, text)?);
        }
        variables.extend(given);
        Ok(Reply::template(TemplateSend {
            name: template.name.clone(),
            content_sid: template.content_sid.clone(),
            variables,
        }))
    }

    /// How `menu`'s options go to this contact: as buttons or a list, or (`None`)
    /// as the numbered text.
    fn interactive_style(&self, menu: &MenuNode) -> Option<InteractiveStyle> {
        if menu.options.is_empty() || !is_whatsapp(self.contact) {
            return None;
        }
        match self.bot.style_of(menu) {
            MenuStyle::Text => None,
            MenuStyle::Buttons => Some(InteractiveStyle::Buttons),
            MenuStyle::List => Some(InteractiveStyle::List),
            MenuStyle::Auto => {
                let fits = |style: InteractiveStyle| {
                    menu.options.len() <= style.max_choices()
                        && menu.options.iter().all(|o| {
                            o.label.chars().count() <= style.max_label()
                                && o.description.as_ref().is_none_or(|d| {
                                    style == InteractiveStyle::List
                                        && d.chars().count() <= limits::MAX_DESCRIPTION
                                })
                        })
                };
                [InteractiveStyle::Buttons, InteractiveStyle::List]
                    .into_iter()
                    .find(|style| fits(*style))
            }
        }
    }

    /// `menu` as an interactive message under `text`, when it goes as one to
    /// this contact and fits WhatsApp's limits; `fallback` is its numbered text.
    fn menu_reply(&self, menu: &MenuNode, text: &str, fallback: String) -> Reply {
        let Some(style) = self.interactive_style(menu) else {
            return Reply::text(fallback);
        };
        let interactive = Interactive {
            style,
            text: text.to_owned(),
            button: match style {
                InteractiveStyle::List => Some(
                    menu.button
                        .clone()
                        .unwrap_or_else(|| limits::DEFAULT_LIST_BUTTON.to_owned()),
                ),
                InteractiveStyle::Buttons => None,
            },
            choices: menu
                .options
                .iter()
                .enumerate()
                .map(|(i, option)| Choice {
                    label: option.label.clone(),
                    id: option.payload(i),
                    description: match style {
                        InteractiveStyle::List => option.description.clone(),
                        InteractiveStyle::Buttons => None,
                    },
                })
                .collect(),
        };
        // `check` refuses what breaks the limits as written; a text that grew
        // past them with its vars filled in goes as text.
        if text.trim().is_empty() || interactive.problem().is_some() {
            return Reply::text(fallback);
        }
        Reply::interactive(interactive, fallback)
    }

    fn run(
        &mut self,
        state: Option<ConversationState>,
        now_ms: i64,
    ) -> Result<Position, FlowError> {
        let bot = self.bot;
        // A conversation is still going when it has a current node that still exists
        // (a reload may have removed it) and it has not been idle too long.
        let live = state.filter(|s| is_live(bot, s, now_ms));
        if let Some(state) = &live {
            self.vars = state.vars.clone();
        }

        let answer = self.message.answer().trim();
        if let Some(target) = bot.keywords.get(&answer.to_lowercase()) {
            return self.enter(target);
        }
        let Some(state) = live else {
            return self.enter(&bot.start);
        };
        let node_name = state.node.unwrap_or_default();
        match bot.node(&node_name) {
            Some(Node::Menu(menu)) => self.answer_menu(menu),
            Some(Node::Script(script)) => match state.handler {
                Some(handler) if script.script.has_handler(&handler) => {
                    self.call_script(script, &handler, Some(answer))
                }
                // A script node only stays current while an `ask` waits; a handler
                // that a reload removed starts over, like a removed node.
                _ => self.enter(&bot.start),
            },
            None => self.enter(&bot.start),
        }
    }

    /// Enters `name` and follows `goto`s until a node waits or the conversation ends.
    fn enter(&mut self, name: &str) -> Result<Position, FlowError> {
        self.entered += 1;
        if self.entered > MAX_NODES_PER_TURN {
            return Err(FlowError::TooManySteps {
                node: name.to_owned(),
            });
        }
        match self.bot.node(name) {
            Some(Node::Menu(menu)) => {
                self.say_menu(menu)?;
                if let Some(queue) = &menu.handoff {
                    Ok(Position::handed_off(self.bot, &menu.name, queue))
                } else if menu.waits() {
                    Ok(Position::waiting_at(menu))
                } else if let Some(next) = &menu.goto {
                    self.enter(next)
                } else {
                    Ok(Position::ended())
                }
            }
            Some(Node::Script(script)) => self.call_script(script, "start", None),
            None => Err(FlowError::UnknownNode {
                node: name.to_owned(),
                target: name.to_owned(),
            }),
        }
    }

    /// Sends a menu node's `say` (media on the first message, options listed
    /// under the last, or as buttons or a list), or its template.
    fn say_menu(&mut self, menu: &MenuNode) -> Result<(), FlowError> {
        if let Some(name) = &menu.template {
            let reply = self.template_reply(&menu.name, name, Default::default())?;
            self.replies.push(reply);
            return Ok(());
        }
        let mut messages = Vec::with_capacity(menu.say.len().max(1));
        for text in &menu.say {
            messages.push(Reply::text(self.render(&menu.name, text)?));
        }
        if !menu.options.is_empty() {
            let list = option_list(menu);
            let text = messages.pop().map(|m| m.body).unwrap_or_default();
            let fallback = if text.is_empty() {
                list
            } else {
                format!("{text}\n{list}")
            };
            messages.push(self.menu_reply(menu, &text, fallback));
        }
        if !menu.media.is_empty() {
            let mut media = Vec::with_capacity(menu.media.len());
            for text in &menu.media {
                media.push(self.render(&menu.name, text)?);
            }
            match messages.first_mut() {
                // Interactive messages carry no media: it goes just before.
                Some(first) if first.content.is_some() => messages.insert(
                    0,
                    Reply {
                        media,
                        ..Reply::text("")
                    },
                ),
                Some(first) => first.media = media,
                None => messages.push(Reply {
                    media,
                    ..Reply::text("")
                }),
            }
        }
        self.replies.extend(messages);
        Ok(())
    }

    /// The contact answered a waiting menu node.
    fn answer_menu(&mut self, menu: &MenuNode) -> Result<Position, FlowError> {
        let answer = self.message.answer().trim();
        let payload = self.message.button_payload.as_deref();
        let chosen = payload
            .and_then(|p| menu.tapped(p))
            .or_else(|| menu.choose(answer))
            .or_else(|| {
                let payload = self.message.button_payload.as_deref()?;
                menu.choose(payload)
            })
            .map(|(_, option)| option);

        if let Some(option) = chosen {
            // Stored before the option's `say`, so it can show them.
            if let Some(var) = &menu.save_as {
                self.vars.insert(var.clone(), option.value.clone());
            }
            for (var, value) in &option.set {
                self.vars.insert(var.clone(), value.clone());
            }
            for text in &option.say {
                let body = self.render(&menu.name, text)?;
                self.replies.push(Reply::text(body));
            }
            if let Some(queue) = &option.handoff {
                return Ok(Position::handed_off(self.bot, &menu.name, queue));
            }
            return match &option.goto {
                Some(next) => self.enter(next),
                None => Ok(Position::ended()),
            };
        }

        // With options, only a chosen option is saved: any other answer is retried
        // like on every menu, never stored as typed.
        if let (Some(var), true) = (&menu.save_as, menu.options.is_empty()) {
            let valid = menu.validate.as_ref().is_none_or(|re| re.is_match(answer));
            if valid && !answer.is_empty() {
                self.vars
                    .insert(var.clone(), Value::String(answer.to_owned()));
                return match &menu.goto {
                    Some(next) => self.enter(next),
                    None => Ok(Position::ended()),
                };
            }
        }

        let retry = match &menu.invalid {
            Some(text) => {
                let text = self.render(&menu.name, text)?;
                self.menu_reply(menu, &text, text.clone())
            }
            None if menu.options.is_empty() => {
                Reply::text("Sorry, that doesn't look right. Please try again.")
            }
            None => self.menu_reply(
                menu,
                "Sorry, I didn't understand that. Please choose one of these:",
                format!(
                    "Sorry, I didn't understand that. Please reply with one of these:\n{}",
                    option_list(menu)
                ),
            ),
        };
        self.replies.push(retry);
        Ok(Position::waiting_at(menu))
    }

    fn call_script(
        &mut self,
        script: &ScriptNode,
        function: &str,
        answer: Option<&str>,
    ) -> Result<Position, FlowError> {
        let effect = self.runtime.scripts.call(
            &script.script,
            ScriptCall {
                bot: self.bot.id.as_str(),
                contact: self.contact,
                function,
                answer,
                vars: std::mem::take(&mut self.vars),
                user: self.user,
                message: self.message,
                http: Arc::clone(&self.runtime.http),
                http_allow: Arc::clone(&self.bot.http_allow),
                clock: Arc::clone(&self.runtime.clock),
                deadline: self.deadline,
                side_effects: self.side_effects,
            },
        )?;
        self.vars = effect.vars;
        self.replies.extend(effect.replies);
        match effect.next {
            Next::Ask(handler) => Ok(Position {
                node: Some(script.name.clone()),
                handler: Some(handler),
                timeout: effect.timeout,
                handoff: None,
            }),
            Next::Handoff(queue) => Ok(Position::handed_off(self.bot, &script.name, &queue)),
            Next::GoTo(target) => {
                if self.bot.node(&target).is_none() {
                    return Err(FlowError::UnknownNode {
                        node: script.name.clone(),
                        target,
                    });
                }
                self.enter(&target)
            }
            Next::End => Ok(Position::ended()),
        }
    }

    fn render(&self, node: &str, text: &Text) -> Result<String, FlowError> {
        let ctx = TemplateContext {
            vars: &self.vars,
            user: self.user,
            message: Some(self.message),
        };
        self.bot
            .render(text, &ctx)
            .map_err(|message| FlowError::Template {
                node: node.to_owned(),
                message,
            })
    }
}

/// Whether a conversation is still going at `now_ms`: it has a current node
/// that still exists (a reload may have removed it) and it has not been idle
/// longer than the bot's `session_timeout`.
fn is_live(bot: &Bot, state: &ConversationState, now_ms: i64) -> bool {
    let idle_ms = now_ms.saturating_sub(state.updated_at_ms);
    let fresh = u128::try_from(idle_ms).unwrap_or(0) <= bot.session_timeout.as_millis();
    fresh && state.node.as_deref().is_some_and(|n| bot.node(n).is_some())
}

/// A conversation the business starts (SPEC §9.1): `node` entered for
/// `contact`, as the start API or a transcript's `start:` asks.
#[derive(Debug)]
pub struct Start<'a> {
    pub bot: &'a Bot,
    pub contact: &'a str,
    pub state: Option<ConversationState>,
    pub node: &'a str,
    /// Merged into a live conversation's vars; a new one has only these.
    pub vars: &'a Map<String, Value>,
    /// `if_active: skip`: leave a live conversation alone.
    pub skip_if_active: bool,
    /// Whether a free-form message may reach the contact now (SPEC §8.2: always
    /// on SMS; on WhatsApp within 24 hours of their last message).
    pub window_open: bool,
    pub now_ms: i64,
    /// As [`Turn::deadline`].
    pub deadline: Option<std::time::Instant>,
}

/// What a start decided.
#[derive(Debug, Clone, PartialEq)]
pub enum StartOutcome {
    /// The node was entered: the new state and the replies to queue.
    Entered(TurnOutcome),
    /// Nothing done, for this reason: `opted_out`, `handed_off` (a person has
    /// the conversation, SPEC §10.2), `active` (`if_active: skip`
    /// and the conversation is live) or `outside_window`.
    Skipped(&'static str),
    /// The flow failed on entering the node: nothing is sent (the contact did
    /// not write, so the bot's `error_reply` would make no sense to them) and
    /// the conversation stays as it was.
    Failed(FlowError),
}

/// Starts a conversation at `start.node`. The checks come in this order: the
/// contact opted out, the conversation is live and `skip_if_active`, the
/// window is closed and the node does not begin with a template
/// ([`crate::flow::begins_with_template`]).
pub fn start(start: Start<'_>, runtime: &Runtime) -> StartOutcome {
    let opted_out = start.state.as_ref().is_some_and(|s| s.opted_out);
    if opted_out && start.bot.opt_out.is_some() {
        return StartOutcome::Skipped("opted_out");
    }
    // A person has the conversation: the bot does not talk over them.
    if start.state.as_ref().is_some_and(|s| s.handoff.is_some()) {
        return StartOutcome::Skipped("handed_off");
    }
    let live = start.state.filter(|s| is_live(start.bot, s, start.now_ms));
    if live.is_some() && start.skip_if_active {
        return StartOutcome::Skipped("active");
    }
    if !start.window_open && !crate::flow::begins_with_template(start.bot, start.node) {
        return StartOutcome::Skipped("outside_window");
    }
    let unprompted = Unprompted::new(start.contact);
    let mut vars = live.map(|s| s.vars).unwrap_or_default();
    vars.extend(start.vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut walk = unprompted.walk(start.bot, start.contact, runtime, start.deadline, vars);
    match walk.enter(start.node) {
        Ok(position) => StartOutcome::Entered(TurnOutcome {
            state: position.state(walk.vars, start.now_ms, opted_out),
            replies: walk.replies,
            error: None,
        }),
        Err(error) => StartOutcome::Failed(error),
    }
}

/// The contact as a step the contact did not trigger knows them: from their
/// address alone (no profile name arrives without a message).
fn user_of(contact: &str) -> UserInfo {
    let (channel, phone) = match contact.split_once(':') {
        Some((channel, phone)) => (channel, phone),
        None => ("sms", contact),
    };
    UserInfo {
        phone: phone.to_owned(),
        name: String::new(),
        channel: channel.to_owned(),
    }
}

/// A waiting conversation whose time ran out (SPEC §9.2).
#[derive(Debug)]
pub struct TimeOut<'a> {
    pub bot: &'a Bot,
    pub contact: &'a str,
    /// The conversation as it waits, with its `on_timeout`.
    pub state: ConversationState,
    pub now_ms: i64,
    /// As [`Turn::deadline`].
    pub deadline: Option<std::time::Instant>,
}

/// Moves a conversation on whose wait ran out: a menu's `on_timeout` node is
/// entered, a script's `on_timeout` function is called (with no arguments);
/// without one the conversation ends quietly. A flow error ends it quietly too
/// (the contact did not write, so `error_reply` would puzzle them), with the
/// error in the outcome for the log.
pub fn time_out(time_out: TimeOut<'_>, runtime: &Runtime) -> TurnOutcome {
    let TimeOut {
        bot,
        contact,
        state,
        now_ms,
        deadline,
    } = time_out;
    let opted_out = state.opted_out;
    let ended = |vars: Map<String, Value>, error: Option<FlowError>| TurnOutcome {
        state: Position::ended().state(vars, now_ms, opted_out),
        replies: Vec::new(),
        error,
    };
    // Nothing reaches a contact who opted out meanwhile (Twilio's 21610); a
    // handoff nobody answered in time returns to the bot and ends quietly.
    let Some(on_timeout) = state
        .on_timeout
        .clone()
        .filter(|_| !opted_out && state.handoff.is_none())
    else {
        return ended(state.vars, None);
    };
    let unprompted = Unprompted::new(contact);
    let mut walk = unprompted.walk(bot, contact, runtime, deadline, state.vars.clone());
    let node = state.node.as_deref().and_then(|n| bot.node(n));
    let result = match node {
        Some(Node::Script(script)) => walk.call_script(script, &on_timeout, None),
        _ => walk.enter(&on_timeout),
    };
    match result {
        Ok(position) => TurnOutcome {
            state: position.state(walk.vars, now_ms, opted_out),
            replies: walk.replies,
            error: None,
        },
        Err(error) => ended(state.vars, Some(error)),
    }
}

/// A person's message to a handed-off contact (SPEC §10.2): queued like any
/// reply, and it restarts the `handoff_timeout` clock. `None` when the
/// conversation is not handed off (there is no person's turn to take).
pub fn person_answer(
    bot: &Bot,
    state: Option<ConversationState>,
    text: &str,
    media: &[String],
    now_ms: i64,
) -> Option<TurnOutcome> {
    let mut state = state.filter(|s| s.handoff.is_some())?;
    if let Some(handoff) = &mut state.handoff {
        handoff.answered_at_ms = Some(now_ms);
    }
    state.updated_at_ms = now_ms;
    keep_handoff_timer(bot, &mut state);
    Some(TurnOutcome {
        state,
        replies: vec![Reply {
            media: media.to_vec(),
            ..Reply::text(text)
        }],
        error: None,
    })
}

/// A person hands a conversation back (SPEC §10.2).
#[derive(Debug)]
pub struct Release<'a> {
    pub bot: &'a Bot,
    pub contact: &'a str,
    /// The handed-off conversation.
    pub state: ConversationState,
    /// The node the bot enters for the contact; `None` ends the conversation
    /// quietly (the contact's next message starts over).
    pub node: Option<&'a str>,
    pub now_ms: i64,
    /// As [`Turn::deadline`].
    pub deadline: Option<std::time::Instant>,
}

/// Hands a conversation back to the bot: `node` entered with the
/// conversation's vars, as a start would, or the conversation ended. A flow
/// error entering the node is returned and nothing is changed.
pub fn release(release: Release<'_>, runtime: &Runtime) -> Result<TurnOutcome, FlowError> {
    let Release {
        bot,
        contact,
        state,
        node,
        now_ms,
        deadline,
    } = release;
    let opted_out = state.opted_out;
    let Some(node) = node else {
        return Ok(TurnOutcome {
            state: Position::ended().state(state.vars, now_ms, opted_out),
            replies: Vec::new(),
            error: None,
        });
    };
    let unprompted = Unprompted::new(contact);
    let mut walk = unprompted.walk(bot, contact, runtime, deadline, state.vars);
    let position = walk.enter(node)?;
    walk.finish_replies()?;
    Ok(TurnOutcome {
        state: position.state(walk.vars, now_ms, opted_out),
        replies: walk.replies,
        error: None,
    })
}

/// `1. Browse cars`, one line per option.
fn option_list(menu: &MenuNode) -> String {
    let mut list = String::new();
    for (i, option) in menu.options.iter().enumerate() {
        if i > 0 {
            list.push('\n');
        }
        list.push_str(&format!("{}. {}", i + 1, option.label));
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::SystemClock;
    use crate::flow::{load_bot, LoadOptions};
    use crate::script::{Limits, StubHttp};

    fn bot(nodes: &str) -> (tempfile::TempDir, Bot) {
        bot_with(
            "error_reply: Oops\nsession_timeout: 1h\nkeywords:\n  restart: main\n",
            nodes,
        )
    }

    /// A bot of `settings` (bot.yaml) and `nodes`.
    fn bot_with(settings: &str, nodes: &str) -> (tempfile::TempDir, Bot) {
        bot_files(&[("bot.yaml", settings), ("nodes.yaml", nodes)])
    }

    /// A bot of `files` (name, text).
    fn bot_files(files: &[(&str, &str)]) -> (tempfile::TempDir, Bot) {
        let dir = tempfile::tempdir().unwrap();
        let bot_dir = dir.path().join("t");
        std::fs::create_dir(&bot_dir).unwrap();
        for (name, text) in files {
            std::fs::write(bot_dir.join(name), text).unwrap();
        }
        let options = LoadOptions {
            allow_missing_credentials: true,
            ..LoadOptions::default()
        };
        let engine = ScriptEngine::new(Limits::default());
        let bot = load_bot(&bot_dir, &engine, &options).unwrap_or_else(|d| panic!("{d:?}"));
        (dir, bot)
    }

    /// Sends `messages` in turn; returns each message's reply bodies.
    fn chat(bot: &Bot, messages: &[InboundMessage]) -> (Vec<Vec<String>>, ConversationState) {
        let runtime = Runtime {
            scripts: ScriptEngine::new(Limits::default()),
            http: Arc::new(StubHttp::new()),
            clock: Arc::new(SystemClock),
        };
        let user = UserInfo {
            phone: "+15550001".into(),
            name: "Amina".into(),
            channel: "whatsapp".into(),
        };
        let mut state = None;
        let mut all = Vec::new();
        for (i, message) in messages.iter().enumerate() {
            let outcome = handle(
                Turn {
                    bot,
                    contact: "whatsapp:+15550001",
                    state: state.take(),
                    user: &user,
                    message,
                    now_ms: 1_000 + i as i64,
                    deadline: None,
                    side_effects: SideEffects::Allowed,
                },
                &runtime,
            );
            assert_eq!(outcome.error, None);
            all.push(outcome.replies.into_iter().map(|r| r.body).collect());
            state = Some(outcome.state);
        }
        (all, state.unwrap())
    }

    fn texts(messages: &[&str]) -> Vec<InboundMessage> {
        messages.iter().map(|t| InboundMessage::text(*t)).collect()
    }

    const MENU: &str = r#"
main:
  say: ["Hello!", "Pick one:"]
  options:
    - label: Tea
      match: [chai]
      say: Tea it is.
      goto: done
    - label: Coffee
      goto: done
done:
  say: Enjoy.
"#;

    #[test]
    fn options_are_listed_under_the_last_say() {
        let (_d, bot) = bot(MENU);
        let (replies, state) = chat(&bot, &texts(&["hi"]));
        assert_eq!(replies[0], ["Hello!", "Pick one:\n1. Tea\n2. Coffee"]);
        assert_eq!(state.node.as_deref(), Some("main"));
    }

    #[test]
    fn option_say_then_goto_chain_then_end() {
        let (_d, bot) = bot(MENU);
        let (replies, state) = chat(&bot, &texts(&["hi", "chai"]));
        assert_eq!(replies[1], ["Tea it is.", "Enjoy."]);
        assert_eq!(state.node, None);
    }

    #[test]
    fn no_match_without_invalid_lists_the_options_again() {
        let (_d, bot) = bot(MENU);
        let (replies, state) = chat(&bot, &texts(&["hi", "juice"]));
        assert_eq!(
            replies[1],
            ["Sorry, I didn't understand that. Please reply with one of these:\n1. Tea\n2. Coffee"]
        );
        assert_eq!(state.node.as_deref(), Some("main"));
    }

    #[test]
    fn first_message_is_not_matched_against_the_start_options() {
        let (_d, bot) = bot(MENU);
        // "1" would pick Tea, whose replies are two messages too: compare the text.
        let (replies, state) = chat(&bot, &texts(&["1"]));
        assert_eq!(replies[0], ["Hello!", "Pick one:\n1. Tea\n2. Coffee"]);
        assert_eq!(state.node.as_deref(), Some("main"));
    }

    #[test]
    fn an_ended_conversation_starts_over_with_empty_vars() {
        let nodes =
            "main:\n  say: Name?\n  save_as: name\n  goto: bye\nbye:\n  say: Bye {{ name }}\n";
        let (_d, bot) = bot(nodes);
        let (replies, state) = chat(&bot, &texts(&["hi", "Zed", "again"]));
        assert_eq!(replies[1], ["Bye Zed"]);
        assert_eq!(replies[2], ["Name?"]);
        assert!(state.vars.is_empty());
    }

    #[test]
    fn button_text_and_payload_count_as_answers() {
        let (_d, bot) = bot(MENU);
        let button = InboundMessage {
            button: Some("Coffee".into()),
            ..InboundMessage::default()
        };
        let payload = InboundMessage {
            text: "whatever the label said".into(),
            button_payload: Some("1".into()),
            ..InboundMessage::default()
        };
        let (replies, _) = chat(&bot, &[InboundMessage::text("hi"), button]);
        assert_eq!(replies[1], ["Enjoy."]);
        let (replies, _) = chat(&bot, &[InboundMessage::text("hi"), payload]);
        assert_eq!(replies[1], ["Tea it is.", "Enjoy."]);
    }

    #[test]
    fn a_vanished_node_starts_over() {
        let (_d, bot) = bot(MENU);
        let runtime = Runtime {
            scripts: ScriptEngine::new(Limits::default()),
            http: Arc::new(StubHttp::new()),
            clock: Arc::new(SystemClock),
        };
        let state = ConversationState {
            node: Some("deleted_node".into()),
            handler: None,
            vars: Map::new(),
            updated_at_ms: 1_000,
            opted_out: false,
            ..Default::default()
        };
        let outcome = handle(
            Turn {
                bot: &bot,
                contact: "c",
                state: Some(state),
                user: &UserInfo::default(),
                message: &InboundMessage::text("1"),
                now_ms: 2_000,
                deadline: None,
                side_effects: SideEffects::Allowed,
            },
            &runtime,
        );
        assert_eq!(outcome.replies[0].body, "Hello!");
        assert_eq!(outcome.state.node.as_deref(), Some("main"));
    }

    /// A conversation waiting in `quiz` for `handler`, as stored before a reload.
    fn waiting_in_quiz(handler: &str, answer: &str) -> TurnOutcome {
        let dir = tempfile::tempdir().unwrap();
        let bot_dir = dir.path().join("t");
        std::fs::create_dir(&bot_dir).unwrap();
        std::fs::write(bot_dir.join("bot.yaml"), "error_reply: Oops\n").unwrap();
        std::fs::write(bot_dir.join("nodes.yaml"), "main:\n  say: Hello!\n").unwrap();
        std::fs::write(
            bot_dir.join("quiz.rhai"),
            "fn start() { ask(\"Q?\", \"got\"); }\nfn got(a) { say(`got ${a}`); }\n",
        )
        .unwrap();
        let options = LoadOptions {
            allow_missing_credentials: true,
            ..LoadOptions::default()
        };
        let engine = ScriptEngine::new(Limits::default());
        let bot = load_bot(&bot_dir, &engine, &options).unwrap_or_else(|d| panic!("{d:?}"));
        let runtime = Runtime {
            scripts: engine,
            http: Arc::new(StubHttp::new()),
            clock: Arc::new(SystemClock),
        };
        let state = ConversationState {
            node: Some("quiz".into()),
            handler: Some(handler.into()),
            vars: Map::new(),
            updated_at_ms: 1_000,
            opted_out: false,
            ..Default::default()
        };
        handle(
            Turn {
                bot: &bot,
                contact: "c",
                state: Some(state),
                user: &UserInfo::default(),
                message: &InboundMessage::text(answer),
                now_ms: 2_000,
                deadline: None,
                side_effects: SideEffects::Allowed,
            },
            &runtime,
        )
    }

    #[test]
    fn a_stored_handler_gets_the_answer() {
        let outcome = waiting_in_quiz("got", "42");
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.replies, [Reply::text("got 42")]);
    }

    #[test]
    fn a_handler_removed_by_a_reload_starts_over() {
        let outcome = waiting_in_quiz("got_old_name", "42");
        assert_eq!(outcome.error, None);
        assert_eq!(outcome.replies, [Reply::text("Hello!")]);
        assert_eq!(outcome.state.node, None);
        assert_eq!(outcome.state.handler, None);
    }

    /// `serve --dry-run` has no booking API: the example bot's lookup fails and
    /// the script's `try`/`catch` still books the drive.
    #[test]
    fn kibo_auto_test_drive_books_when_the_slots_lookup_fails() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows/kibo-auto");
        let options = LoadOptions {
            allow_missing_credentials: true,
            ..LoadOptions::default()
        };
        let engine = ScriptEngine::new(Limits::default());
        let bot = load_bot(&dir, &engine, &options).unwrap_or_else(|d| panic!("{d:?}"));
        let (replies, state) = chat(&bot, &texts(&["hi", "2", "Amina", "thursday", "yes"]));
        assert_eq!(
            replies[4][0],
            "Thanks Amina! We've noted Thursday for your test drive. A member of our team will confirm the time with you on this chat."
        );
        assert!(replies[4][1].starts_with("👋 Welcome to Kibo Auto!"));
        assert_eq!(state.node.as_deref(), Some("main"));
        assert_eq!(state.vars["day"], "Thursday");
    }

    const SALON: &str = r#"
main:
  say: Which service?
  save_as: service
  options:
    - label: Haircut
      match: [cut]
      set: {price: 25, minutes: 30}
      goto: confirm
    - label: Colour
      value: colour treatment
      set: {price: 60.5, extras: [gloss, "{ toner }"]}
      goto: confirm
    - label: Beard trim
      value: 7
      say: "A {{ service }}-minute trim it is."
      goto: confirm
  invalid: Please pick 1, 2 or 3.
confirm:
  say: "{{ service }}: ${{ price }}"
"#;

    /// `save_as` on a menu stores the chosen option's `value` (its label without
    /// one) and `set` stores its vars, before the option's `say`; an answer that
    /// chooses nothing is retried and stores nothing.
    #[test]
    fn save_as_on_a_menu_stores_the_chosen_option() {
        let (_d, bot) = bot(SALON);
        let cases: [(&str, &[&str], serde_json::Value); 7] = [
            (
                "1",
                &["Haircut: $25"],
                serde_json::json!({"service": "Haircut", "price": 25, "minutes": 30}),
            ),
            (
                " CUT ",
                &["Haircut: $25"],
                serde_json::json!({"service": "Haircut", "price": 25, "minutes": 30}),
            ),
            (
                "haircut",
                &["Haircut: $25"],
                serde_json::json!({"service": "Haircut", "price": 25, "minutes": 30}),
            ),
            (
                "Colour",
                &["colour treatment: $60.5"],
                serde_json::json!({"service": "colour treatment", "price": 60.5, "extras": ["gloss", "{ toner }"]}),
            ),
            (
                "3",
                &["A 7-minute trim it is.", "7: $"],
                serde_json::json!({"service": 7}),
            ),
            ("perm", &["Please pick 1, 2 or 3."], serde_json::json!({})),
            ("", &["Please pick 1, 2 or 3."], serde_json::json!({})),
        ];
        for (answer, want, vars) in cases {
            let (replies, state) = chat(&bot, &texts(&["hi", answer]));
            assert_eq!(replies[1], want, "{answer:?}");
            assert_eq!(serde_json::Value::Object(state.vars), vars, "{answer:?}");
        }
    }

    #[test]
    fn an_unmatched_answer_on_a_save_as_menu_is_never_saved() {
        let nodes = "main:\n  say: Which?\n  save_as: pick\n  options:\n    - label: A\n      goto: done\n    - label: B\n      goto: done\ndone:\n  say: \"Got {{ pick }}\"\n";
        let (_d, bot) = bot(nodes);
        let (replies, state) = chat(&bot, &texts(&["hi", "C", "b"]));
        assert_eq!(
            replies[1],
            ["Sorry, I didn't understand that. Please reply with one of these:\n1. A\n2. B"]
        );
        assert_eq!(replies[2], ["Got B"]);
        assert_eq!(state.vars["pick"], "B");
    }

    #[test]
    fn a_button_payload_chooses_the_option_to_save() {
        let (_d, bot) = bot(SALON);
        let payload = InboundMessage {
            text: "Colour please".into(),
            button_payload: Some("2".into()),
            ..InboundMessage::default()
        };
        let (replies, state) = chat(&bot, &[InboundMessage::text("hi"), payload]);
        assert_eq!(replies[1], ["colour treatment: $60.5"]);
        assert_eq!(state.vars["service"], "colour treatment");
    }

    #[test]
    fn keywords_work_in_any_case_and_keep_vars() {
        let nodes = "main:\n  say: Name?\n  save_as: name\n  goto: hold\nhold:\n  say: Hi {{ name }}\n  options:\n    - label: x\n";
        let (_d, bot) = bot(nodes);
        let (replies, state) = chat(&bot, &texts(&["hi", "Zed", " RESTART "]));
        assert_eq!(replies[2], ["Name?"]);
        assert_eq!(state.vars["name"], "Zed");
    }

    const STOP_REPLY: &str = "You won't get more messages from us. Send START to undo.";
    const START_REPLY: &str = "Welcome back! Send hi to begin.";
    const HELP_REPLY: &str = "Send STOP to opt out, or hi to talk to us.";
    const WELCOME: [&str; 2] = ["Hello!", "Pick one:\n1. Tea\n2. Coffee"];

    #[test]
    fn stop_help_start_cycle_with_the_default_words() {
        let (_d, bot) = bot(MENU);
        let (replies, state) = chat(
            &bot,
            &texts(&["hi", " stop ", "hi", "Help", "Tea", "START", "hi", "tea"]),
        );
        assert_eq!(replies[0], WELCOME);
        assert_eq!(replies[1], [STOP_REPLY], "STOP ends the conversation");
        assert!(replies[2].is_empty(), "no flow while opted out");
        assert_eq!(replies[3], [HELP_REPLY]);
        assert!(replies[4].is_empty(), "not an answer to the old menu");
        assert_eq!(replies[5], [START_REPLY]);
        assert_eq!(replies[6], WELCOME, "a new conversation");
        assert_eq!(replies[7], ["Tea it is.", "Enjoy."]);
        assert!(!state.opted_out);
    }

    /// Sends one message on `state`.
    fn turn(bot: &Bot, state: Option<ConversationState>, message: &InboundMessage) -> TurnOutcome {
        let runtime = Runtime {
            scripts: ScriptEngine::new(Limits::default()),
            http: Arc::new(StubHttp::new()),
            clock: Arc::new(SystemClock),
        };
        handle(
            Turn {
                bot,
                contact: "whatsapp:+15550001",
                state,
                user: &UserInfo::default(),
                message,
                now_ms: 5_000,
                deadline: None,
                side_effects: SideEffects::Allowed,
            },
            &runtime,
        )
    }

    #[test]
    fn stop_words_match_the_whole_message_in_any_case_and_spacing() {
        let (_d, bot) = bot(MENU);
        for text in ["STOP", "stop", "  StOp\n", "\tUNSUBSCRIBE ", "stopall"] {
            let outcome = turn(&bot, None, &InboundMessage::text(text));
            assert_eq!(outcome.replies, [Reply::opt_out(STOP_REPLY)], "{text:?}");
            assert_eq!(
                outcome.replies[0].kind,
                crate::message::ReplyKind::OptOutReply
            );
            assert!(outcome.state.opted_out, "{text:?}");
            assert_eq!(outcome.state.node, None);
        }
        for text in ["stop please", "s t o p", "STOP!", "unstop", ""] {
            let outcome = turn(&bot, None, &InboundMessage::text(text));
            assert!(!outcome.state.opted_out, "{text:?}");
        }
        let button = InboundMessage {
            button: Some("Stop".into()),
            ..InboundMessage::default()
        };
        assert!(
            turn(&bot, None, &button).state.opted_out,
            "a button's text counts"
        );
    }

    #[test]
    fn stop_keeps_an_opt_out_and_resets_the_conversation() {
        let (_d, bot) = bot(MENU);
        let waiting = ConversationState {
            node: Some("main".into()),
            vars: [("name".to_owned(), Value::from("Zed"))]
                .into_iter()
                .collect(),
            updated_at_ms: 4_000,
            ..ConversationState::default()
        };
        let outcome = turn(&bot, Some(waiting), &InboundMessage::text("stop"));
        assert_eq!(
            outcome.state,
            ConversationState {
                updated_at_ms: 5_000,
                opted_out: true,
                ..ConversationState::default()
            }
        );
        // Stopping again answers again and stays opted out.
        let again = turn(&bot, Some(outcome.state), &InboundMessage::text("STOP"));
        assert_eq!(again.replies, [Reply::opt_out(STOP_REPLY)]);
        assert!(again.state.opted_out);
    }

    #[test]
    fn help_answers_mid_conversation_without_moving_it() {
        let (_d, bot) = bot(MENU);
        let (replies, state) = chat(&bot, &texts(&["hi", "HELP", "chai"]));
        assert_eq!(replies[1], [HELP_REPLY]);
        assert_eq!(replies[2], ["Tea it is.", "Enjoy."]);
        assert!(!state.opted_out);
    }

    #[test]
    fn start_goes_to_the_flow_unless_opted_out() {
        let (_d, bot) = bot(MENU);
        let (replies, _) = chat(&bot, &texts(&["start"]));
        assert_eq!(replies[0], WELCOME);
    }

    #[test]
    fn the_stop_word_beats_a_keyword_and_a_help_keyword_beats_help() {
        let settings = "keywords:\n  stop: done\n  help: done\n";
        let (_d, bot) = bot_with(settings, MENU);
        let (replies, state) = chat(&bot, &texts(&["help", "stop", "help", "stop"]));
        assert_eq!(replies[0], ["Enjoy."], "the help keyword wins");
        assert_eq!(replies[1], [STOP_REPLY], "the stop word wins");
        assert_eq!(replies[2], [HELP_REPLY], "no keyword while opted out");
        assert_eq!(replies[3], [STOP_REPLY]);
        assert!(state.opted_out);
    }

    #[test]
    fn custom_words_and_replies_and_empty_replies() {
        let settings = "opt_out:\n  stop: [Halt, ARRÊT]\n  start: [Resume]\n  stop_reply: \"\"\n  start_reply: Back!\n  help_reply:\n";
        let (_d, bot) = bot_with(settings, MENU);
        let (replies, state) = chat(
            &bot,
            &texts(&["arrêt", "help", "stop", "start", "resume", "stop"]),
        );
        assert!(replies[0].is_empty(), "an empty stop_reply is not sent");
        assert!(replies[1].is_empty(), "nor an empty help_reply");
        assert!(
            replies[2].is_empty(),
            "STOP is no longer a stop word: nothing while opted out"
        );
        assert!(replies[3].is_empty());
        assert_eq!(replies[4], ["Back!"]);
        assert_eq!(replies[5], WELCOME, "a new conversation: STOP is an answer");
        assert!(!state.opted_out);
    }

    #[test]
    fn with_opt_out_off_every_word_goes_to_the_flow() {
        let (_d, bot) = bot_with("opt_out: off\n", MENU);
        let (replies, state) = chat(&bot, &texts(&["stop", "help", "tea"]));
        assert_eq!(replies[0], WELCOME);
        assert_eq!(
            replies[1][0],
            "Sorry, I didn't understand that. Please reply with one of these:\n1. Tea\n2. Coffee"
        );
        assert_eq!(replies[2], ["Tea it is.", "Enjoy."]);
        assert!(!state.opted_out);
        // A contact Twilio opted out (21610) while the layer was off stays so.
        let opted_out = ConversationState {
            opted_out: true,
            ..ConversationState::default()
        };
        let outcome = turn(&bot, Some(opted_out), &InboundMessage::text("hi"));
        assert_eq!(outcome.replies.len(), 2);
        assert!(outcome.state.opted_out);
    }
    /// `turn` as an SMS contact.
    fn sms_turn(bot: &Bot, message: &InboundMessage) -> TurnOutcome {
        let runtime = Runtime {
            scripts: ScriptEngine::new(Limits::default()),
            http: Arc::new(StubHttp::new()),
            clock: Arc::new(SystemClock),
        };
        handle(
            Turn {
                bot,
                contact: "+15550001",
                state: None,
                user: &UserInfo::default(),
                message,
                now_ms: 5_000,
                deadline: None,
                side_effects: SideEffects::Allowed,
            },
            &runtime,
        )
    }

    const AUTO: &str = r#"
main:
  say: ["Hello!", "Pick one:"]
  media: https://example.com/menu.jpg
  style: auto
  options:
    - label: Tea
      id: tea
      say: Tea it is.
    - label: Coffee
      say: Coffee it is.
"#;

    #[test]
    fn menus_go_as_buttons_on_whatsapp_and_as_text_on_sms() {
        use crate::message::InteractiveStyle;
        let (_d, bot) = bot(AUTO);
        let outcome = turn(&bot, None, &InboundMessage::text("hi"));
        let bodies: Vec<&str> = outcome.replies.iter().map(|r| r.body.as_str()).collect();
        // The picture goes on its own before the buttons.
        assert_eq!(bodies, ["Hello!", "Pick one:\n1. Tea\n2. Coffee"]);
        assert_eq!(outcome.replies[0].media, ["https://example.com/menu.jpg"]);
        let menu = outcome.replies[1].menu().expect("buttons");
        assert_eq!(menu.style, InteractiveStyle::Buttons);
        assert_eq!(menu.text, "Pick one:");
        let ids: Vec<&str> = menu.choices.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["tea", "2"]);

        // A tap's payload wins over its text.
        let tap = InboundMessage {
            text: "Coffee".into(),
            button_payload: Some("tea".into()),
            ..InboundMessage::default()
        };
        let tapped = turn(&bot, Some(outcome.state), &tap);
        assert_eq!(tapped.replies, [Reply::text("Tea it is.")]);

        let sms = sms_turn(&bot, &InboundMessage::text("hi"));
        assert!(sms.replies.iter().all(|r| r.content.is_none()));
        assert_eq!(sms.replies[1].body, "Pick one:\n1. Tea\n2. Coffee");
    }

    #[test]
    fn auto_picks_a_list_then_text_as_menus_grow() {
        use crate::message::InteractiveStyle;
        let options = |n: usize| -> String {
            (1..=n)
                .map(|i| format!("    - label: Option {i}\n"))
                .collect()
        };
        let (_d, four) = bot(&format!(
            "main:\n  say: Pick\n  style: auto\n  options:\n{}",
            options(4)
        ));
        let outcome = turn(&four, None, &InboundMessage::text("hi"));
        assert_eq!(
            outcome.replies[0].menu().map(|m| m.style),
            Some(InteractiveStyle::List)
        );
        let (_d, eleven) = bot(&format!(
            "main:\n  say: Pick\n  style: auto\n  options:\n{}",
            options(11)
        ));
        let outcome = turn(&eleven, None, &InboundMessage::text("hi"));
        assert_eq!(outcome.replies[0].content, None);
    }

    #[test]
    fn templates_from_nodes_and_scripts() {
        let settings = "templates:\n  reminder:\n    content_sid: HXb5b62575e6e4ff6129ad7c8efe1f983e\n    variables: {\"1\": \"{{ user.name }}\", \"2\": Thursday}\n";
        let (_dir, bot) = bot_files(&[
            ("bot.yaml", settings),
            ("nodes.yaml", "main:\n  template: reminder\n  goto: s\n"),
            (
                "s.rhai",
                "fn start() {\n    say_template(\"reminder\", #{ \"2\": \"Friday\" });\n}\n",
            ),
        ]);
        let user = UserInfo {
            name: "Amina".into(),
            ..UserInfo::default()
        };
        let runtime = runtime();
        let outcome = handle(
            Turn {
                bot: &bot,
                contact: "whatsapp:+1",
                state: None,
                user: &user,
                message: &InboundMessage::text("hi"),
                now_ms: 1,
                deadline: None,
                side_effects: SideEffects::Allowed,
            },
            &runtime,
        );
        assert_eq!(outcome.error, None);
        let sent: Vec<_> = outcome
            .replies
            .iter()
            .map(|r| {
                let t = r.template_send().expect("a template");
                (r.kind, t.variables["1"].clone(), t.variables["2"].clone())
            })
            .collect();
        use crate::message::ReplyKind;
        assert_eq!(
            sent,
            [
                (
                    ReplyKind::Template,
                    "Amina".to_owned(),
                    "Thursday".to_owned()
                ),
                (ReplyKind::Template, "Amina".to_owned(), "Friday".to_owned()),
            ]
        );
    }

    fn runtime() -> Runtime {
        Runtime {
            scripts: ScriptEngine::new(Limits::default()),
            http: Arc::new(StubHttp::new()),
            clock: Arc::new(SystemClock),
        }
    }

    /// A start of `node` for a WhatsApp contact at 5 s.
    fn start_at(
        bot: &Bot,
        state: Option<ConversationState>,
        node: &str,
        skip_if_active: bool,
        window_open: bool,
    ) -> StartOutcome {
        let vars: Map<String, Value> = [("name".to_owned(), Value::from("Amina"))]
            .into_iter()
            .collect();
        start(
            Start {
                bot,
                contact: "whatsapp:+15550001",
                state,
                node,
                vars: &vars,
                skip_if_active,
                window_open,
                now_ms: 5_000,
                deadline: None,
            },
            &runtime(),
        )
    }

    const TIMED: &str = r#"
main:
  say: Hi
  options:
    - label: Tea
      say: Tea it is.
  timeout: 2h
  on_timeout: nudge
nudge:
  say: "Still there, {{ name }}?"
"#;

    #[test]
    fn a_start_enters_the_node_with_merged_vars_and_its_timer() {
        let (_d, bot) = bot(TIMED);
        let live = ConversationState {
            node: Some("main".into()),
            vars: [("order".to_owned(), Value::from(7))].into_iter().collect(),
            updated_at_ms: 4_000,
            ..ConversationState::default()
        };
        let StartOutcome::Entered(outcome) =
            start_at(&bot, Some(live.clone()), "nudge", false, true)
        else {
            panic!("the start should run");
        };
        assert_eq!(outcome.replies, [Reply::text("Still there, Amina?")]);
        assert_eq!(outcome.state.vars["order"], 7);
        assert_eq!(outcome.state.vars["name"], "Amina");
        assert_eq!(outcome.state.node, None);

        let StartOutcome::Entered(outcome) = start_at(&bot, None, "main", false, true) else {
            panic!("the start should run");
        };
        assert_eq!(outcome.state.timeout_at_ms, Some(5_000 + 2 * 3_600_000));
        assert_eq!(outcome.state.on_timeout.as_deref(), Some("nudge"));

        assert_eq!(
            start_at(&bot, Some(live.clone()), "nudge", true, true),
            StartOutcome::Skipped("active")
        );
        assert_eq!(
            start_at(&bot, None, "nudge", false, false),
            StartOutcome::Skipped("outside_window")
        );
        let opted_out = ConversationState {
            opted_out: true,
            ..live
        };
        assert_eq!(
            start_at(&bot, Some(opted_out), "nudge", false, true),
            StartOutcome::Skipped("opted_out")
        );
    }

    #[test]
    fn a_wait_that_runs_out_enters_on_timeout_or_ends_quietly() {
        let (_d, bot) = bot(TIMED);
        let (replies, mut waiting) = chat(&bot, &texts(&["hi"]));
        waiting.vars.insert("name".to_owned(), Value::from("Ada"));
        assert_eq!(replies[0], ["Hi\n1. Tea"]);
        assert!(waiting.timeout_at_ms.is_some());
        let fire = |state: ConversationState| {
            time_out(
                TimeOut {
                    bot: &bot,
                    contact: "whatsapp:+15550001",
                    state,
                    now_ms: 9_000_000,
                    deadline: None,
                },
                &runtime(),
            )
        };
        let fired = fire(waiting.clone());
        assert_eq!(fired.replies, [Reply::text("Still there, Ada?")]);
        assert_eq!(fired.state.node, None);
        assert_eq!(fired.state.timeout_at_ms, None);
        let quiet = fire(ConversationState {
            on_timeout: None,
            ..waiting.clone()
        });
        assert!(quiet.replies.is_empty());
        assert_eq!(quiet.state.node, None);
        // An answer leaves no timer behind.
        let (_, answered) = chat(&bot, &texts(&["hi", "1"]));
        assert_eq!(answered.timeout_at_ms, None);
        // A retried answer waits again, with the time started afresh.
        let (_, retried) = chat(&bot, &texts(&["hi", "coffee"]));
        assert_eq!(retried.node.as_deref(), Some("main"));
        assert_eq!(retried.timeout_at_ms, Some(1_001 + 2 * 3_600_000));
    }

    const DESK: &str = r#"
main:
  say: Hi
  options:
    - label: Hours
      say: 9 to 5.
    - label: A person
      say: One moment.
      handoff: sales
"#;

    #[test]
    fn a_handed_off_conversation_gets_no_answer_from_the_bot() {
        let (_d, bot) = bot_with(
            "session_timeout: 1h\nhandoff_timeout: 2h\nkeywords:\n  restart: main\n",
            DESK,
        );
        let (replies, state) = chat(&bot, &texts(&["hi", "2", "hello?", "restart", "1"]));
        assert_eq!(replies[1], ["One moment."]);
        for quiet in &replies[2..] {
            assert!(quiet.is_empty(), "the bot spoke: {quiet:?}");
        }
        let handoff = state.handoff.clone().expect("handed off");
        assert_eq!(handoff.queue, "sales");
        assert_eq!(handoff.at_ms, 1_001);
        // The clock runs from the handoff, not from the contact's messages.
        assert_eq!(state.timeout_at_ms, Some(1_001 + 2 * 3_600_000));
        assert_eq!(state.on_timeout, None);
        // HELP is answered, and the conversation stays with the person.
        let (replies, helped) = chat(&bot, &texts(&["hi", "2", "help"]));
        assert_eq!(replies[2], ["Send STOP to opt out, or hi to talk to us."]);
        assert!(helped.handoff.is_some());
        assert_eq!(helped.timeout_at_ms, Some(1_001 + 2 * 3_600_000));
        // STOP ends it.
        let (_, stopped) = chat(&bot, &texts(&["hi", "2", "stop"]));
        assert!(stopped.opted_out);
        assert_eq!(stopped.handoff, None);
        assert_eq!(stopped.timeout_at_ms, None);
    }

    #[test]
    fn a_person_answers_restarts_the_clock_and_hands_back() {
        let (_d, bot) = bot_with("handoff_timeout: 2h\n", DESK);
        let (_, handed) = chat(&bot, &texts(&["hi", "2"]));
        assert_eq!(person_answer(&bot, None, "x", &[], 5), None);
        let answered = person_answer(
            &bot,
            Some(handed.clone()),
            "Sam here",
            &["https://e.com/a.jpg".into()],
            50_000,
        )
        .expect("handed off");
        assert_eq!(answered.replies[0].body, "Sam here");
        assert_eq!(answered.replies[0].media, ["https://e.com/a.jpg"]);
        assert_eq!(
            answered.replies[0].kind,
            crate::message::ReplyKind::FreeForm
        );
        assert_eq!(answered.state.timeout_at_ms, Some(50_000 + 2 * 3_600_000));
        let released = |node: Option<&str>| {
            release(
                Release {
                    bot: &bot,
                    contact: "whatsapp:+15550001",
                    state: answered.state.clone(),
                    node,
                    now_ms: 60_000,
                    deadline: None,
                },
                &runtime(),
            )
            .unwrap()
        };
        let back = released(Some("main"));
        assert!(
            back.replies[0].body.starts_with("Hi\n"),
            "{:?}",
            back.replies
        );
        assert_eq!(back.state.node.as_deref(), Some("main"));
        assert_eq!(back.state.handoff, None);
        let ended = released(None);
        assert!(ended.replies.is_empty());
        assert_eq!((ended.state.node, ended.state.handoff), (None, None));
        // Nobody answered in time: back to the bot, quietly.
        let timed_out = time_out(
            TimeOut {
                bot: &bot,
                contact: "whatsapp:+15550001",
                state: handed,
                now_ms: 9_000_000,
                deadline: None,
            },
            &runtime(),
        );
        assert!(timed_out.replies.is_empty());
        assert_eq!(
            (timed_out.state.node, timed_out.state.handoff),
            (None, None)
        );
    }

    #[test]
    fn a_script_hands_off_and_a_start_does_not_interrupt_a_person() {
        let (_d, bot) = bot_files(&[
            ("bot.yaml", "handoff_timeout: 1h\n"),
            (
                "main.rhai",
                "fn start() { say(\"Connecting.\"); handoff(\"vip\"); }\n",
            ),
        ]);
        let (replies, state) = chat(&bot, &texts(&["hi", "anyone?"]));
        assert_eq!(
            replies,
            [vec!["Connecting.".to_owned()], Vec::<String>::new()]
        );
        assert_eq!(
            state.handoff.as_ref().map(|h| h.queue.as_str()),
            Some("vip")
        );
        assert_eq!(
            start(
                Start {
                    bot: &bot,
                    contact: "whatsapp:+15550001",
                    state: Some(state),
                    node: "main",
                    vars: &Map::new(),
                    skip_if_active: false,
                    window_open: true,
                    now_ms: 5_000,
                    deadline: None,
                },
                &runtime(),
            ),
            StartOutcome::Skipped("handed_off")
        );
    }
}
