//! The flow engine: `advance(flow, state, input, now) -> Step { state, actions }`.
//!
//! Pure and synchronous. It never does I/O, never reads a clock, never draws a random number and
//! never fails on what a respondent types: time and ids come in as arguments, timeouts and
//! hang-ups arrive as inputs, and invalid answers become re-prompts. The caller (the dispatcher)
//! persists the returned state, commits the `AnswerSaved` actions, and hands the `Reply` to the
//! channel. Because of this, every flow can be run and snapshot-tested without a server.
//!
//! Reading order: `Input` and `Action` below, then `advance`, then one file per node kind in
//! `nodes/`, then `render/` (one file per channel's way of showing a `Screen`).

pub mod answer;
pub mod nodes;
pub mod render;
pub mod screen;
pub mod state;
pub mod template;
pub mod ui_text;

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::flow::model::{Flow, Lang, Node, NodeId, UiKey};
pub use render::Rendered;
pub use screen::{Choice, Expect, Line, Screen};
pub use state::{Awaiting, Channel, SessionState, SessionStatus};
use template::{TemplateError, Templates, Vars};

/// A flow ready to run: the parsed flow plus its compiled templates and lookup tables.
pub struct CompiledFlow {
    pub flow: Flow,
    templates: Templates,
    /// Result name -> the node that saves it (to find labels for `{{ labels.x }}`).
    result_nodes: HashMap<String, NodeId>,
    /// Whether the flow may read contact data (`{{ contact.x }}`, a branch on a contact
    /// field): the gateway looks the citizen's contact up at a session's start only then.
    /// Over-approximated (any mention of `contact` in the flow counts): a false positive
    /// costs a lookup, never a wrong screen.
    pub uses_contact: bool,
}

impl std::fmt::Debug for CompiledFlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CompiledFlow")
            .field("id", &self.flow.id)
            .field("version", &self.flow.version)
            .finish_non_exhaustive()
    }
}

impl CompiledFlow {
    /// Compiles the flow's templates. The checker reports the same problems with positions.
    pub fn compile(flow: Flow) -> Result<CompiledFlow, Vec<TemplateError>> {
        let templates = Templates::compile(&flow)?;
        let mut result_nodes = HashMap::new();
        for (id, node) in &flow.nodes {
            if let Some(r) = node.result() {
                result_nodes
                    .entry(r.to_string())
                    .or_insert_with(|| id.clone());
            }
        }
        let uses_contact = serde_json::to_string(&flow).is_ok_and(|text| text.contains("contact"));
        Ok(CompiledFlow {
            flow,
            templates,
            result_nodes,
            uses_contact,
        })
    }
}

/// How a new session begins.
#[derive(Debug, Clone, PartialEq)]
pub struct Start {
    /// The channel's session id; becomes the response id of a new response.
    pub session_id: String,
    pub channel: Channel,
    /// Attributes known about the respondent before the session (for branches and texts).
    pub contact: BTreeMap<String, String>,
    /// A language known in advance (e.g. from an SMS keyword in Swahili).
    pub language: Option<Lang>,
}

/// Something that happened to a session.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// The respondent dialled in, sent a keyword, or was called.
    Start(Start),
    /// What the respondent typed or pressed (one answer, already taken out of the wire format).
    Answer(String),
    /// A spoken answer recorded by the voice provider.
    Recording { url: String, duration_seconds: u32 },
    /// No answer came within the channel's time (the caller's timer fired).
    Timeout,
    /// The network or the respondent ended the session.
    Hangup,
}

/// What the caller must do after a step, in order.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    /// A new response begins (store it before its answers).
    ResponseStarted {
        response_id: String,
        flow_id: String,
        flow_version: u32,
        channel: Channel,
        language: Lang,
        started_at: i64,
    },
    /// An answer to store durably before the reply goes out.
    AnswerSaved(SavedAnswer),
    /// The respondent chose another language.
    LanguageChanged { language: Lang },
    /// The session reached a new status (completed, dropped, ...).
    StatusChanged { status: SessionStatus },
    /// What to show or say now.
    Reply(Reply),
}

/// One answer, as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SavedAnswer {
    pub response_id: String,
    pub result: String,
    pub value: String,
    /// For menus, yes/no and language choices: the chosen label in the flow's default language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub node: NodeId,
    /// The step that produced it; with `response_id` and `result` it makes storage idempotent.
    pub step: u32,
    pub at: i64,
}

/// What the respondent is shown now, neutral and rendered for the session's channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    pub screen: Screen,
    pub rendered: Rendered,
    /// The session ends with this reply.
    pub end: bool,
}

/// The result of one `advance`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub state: SessionState,
    pub actions: Vec<Action>,
}

impl Step {
    pub fn reply(&self) -> Option<&Reply> {
        self.actions.iter().find_map(|a| match a {
            Action::Reply(r) => Some(r),
            _ => None,
        })
    }
    pub fn answers(&self) -> impl Iterator<Item = &SavedAnswer> {
        self.actions.iter().filter_map(|a| match a {
            Action::AnswerSaved(s) => Some(s),
            _ => None,
        })
    }
}

/// Hops through messages and branches allowed in one step; only a broken flow gets near it.
const MAX_HOPS: usize = 200;

/// Advances a session by one input. Never panics and never fails: whatever the input, the
/// result is a valid state and the actions to carry out.
pub fn advance(flow: &CompiledFlow, state: Option<SessionState>, input: Input, now: i64) -> Step {
    let mut run = Run {
        flow,
        actions: Vec::new(),
        now,
    };
    let state = match (state, input) {
        (prior, Input::Start(start)) => run.start(prior, start),
        (None, _) => {
            // Nothing to continue: begin a fresh session rather than fail.
            run.start(
                None,
                Start {
                    session_id: format!("anonymous-{now}"),
                    channel: Channel::Ussd,
                    contact: BTreeMap::new(),
                    language: None,
                },
            )
        }
        (Some(s), Input::Answer(text)) => run.answer(s, &text),
        (
            Some(s),
            Input::Recording {
                url,
                duration_seconds,
            },
        ) => run.recording(s, url, duration_seconds),
        (Some(s), Input::Timeout) => run.timeout(s),
        (Some(s), Input::Hangup) => run.hangup(s),
    };
    Step {
        state,
        actions: run.actions,
    }
}

/// One call of `advance`: the flow, the clock value and the actions collected so far.
struct Run<'a> {
    flow: &'a CompiledFlow,
    actions: Vec<Action>,
    now: i64,
}

/// A screen's texts filled with one session's values (the engine's [`nodes::Fill`]).
struct SessionFill<'s, 'a> {
    run: &'s Run<'a>,
    s: &'s SessionState,
}

impl nodes::Fill for SessionFill<'_, '_> {
    fn language(&self) -> &str {
        &self.s.language
    }

    fn text(&self, source: &str) -> String {
        self.run.text(self.s, source)
    }

    fn ui(&self, key: UiKey) -> String {
        self.run.ui(self.s, key, &[])
    }
}

/// What a node made of an answer.
pub(crate) enum Outcome {
    /// Valid: save (optionally), switch language (optionally), go on.
    Next {
        save: Option<(String, String)>,
        language: Option<Lang>,
        next: NodeId,
    },
    /// Not a valid answer: re-prompt.
    Invalid,
}

impl<'a> Run<'a> {
    fn f(&self) -> &'a Flow {
        &self.flow.flow
    }

    fn start(&mut self, prior: Option<SessionState>, start: Start) -> SessionState {
        if let Some(prior) = prior
            && self.resumable(&prior)
        {
            let mut s = prior;
            s.awaiting = Awaiting::ResumeChoice;
            s.status = SessionStatus::Active;
            s.channel = start.channel;
            s.page = 0;
            s.attempts = 0;
            s.lead.clear();
            s.step = s.step.saturating_add(1);
            s.updated_at = self.now;
            self.status(SessionStatus::Active);
            self.reply_current(&s);
            return s;
        }
        self.fresh(start)
    }

    fn resumable(&self, prior: &SessionState) -> bool {
        matches!(prior.status, SessionStatus::Dropped | SessionStatus::Active)
            && prior.flow_id == self.f().id
            && prior.flow_version == self.f().version
            && self.f().nodes.contains_key(&prior.node)
            && !prior.answers.is_empty()
            && self.now.saturating_sub(prior.updated_at) <= self.f().resume_window.as_millis()
    }

    fn fresh(&mut self, start: Start) -> SessionState {
        let flow = self.f();
        let language = start
            .language
            .filter(|l| flow.languages.contains(l))
            .unwrap_or_else(|| flow.default_language.clone());
        let mut s = SessionState {
            flow_id: flow.id.clone(),
            flow_version: flow.version,
            channel: start.channel,
            reference: state::reference_for(&start.session_id),
            response_id: start.session_id,
            node: flow.start.clone(),
            awaiting: Awaiting::Node,
            status: SessionStatus::Active,
            language,
            attempts: 0,
            page: 0,
            lead: Vec::new(),
            answers: BTreeMap::new(),
            contact: start.contact,
            step: 0,
            reminded: false,
            started_at: self.now,
            updated_at: self.now,
            history: Vec::new(),
        };
        self.actions.push(Action::ResponseStarted {
            response_id: s.response_id.clone(),
            flow_id: s.flow_id.clone(),
            flow_version: s.flow_version,
            channel: s.channel,
            language: s.language.clone(),
            started_at: self.now,
        });
        let start_node = flow.start.clone();
        self.enter(&mut s, start_node, Vec::new());
        s
    }

    fn answer(&mut self, mut s: SessionState, text: &str) -> SessionState {
        if s.status.is_terminal() {
            // A late or repeated answer to a closed session changes nothing.
            return s;
        }
        s.step = s.step.saturating_add(1);
        s.updated_at = self.now;
        s.reminded = false;
        let input = text.trim();

        if s.awaiting == Awaiting::ResumeChoice {
            match input {
                "1" => {
                    s.awaiting = Awaiting::Node;
                    s.lead.clear();
                    self.reply_current(&s);
                }
                "2" => {
                    let restart = Start {
                        session_id: format!("{}~{}", s.response_id, s.step),
                        channel: s.channel,
                        contact: std::mem::take(&mut s.contact),
                        language: Some(s.language.clone()),
                    };
                    return self.fresh(restart);
                }
                _ => {
                    s.lead = vec![Line::text(self.ui(&s, UiKey::InvalidChoice, &[]))];
                    self.reply_current(&s);
                }
            }
            return s;
        }

        // Paging through a long USSD screen, or asking a voice prompt again.
        if let Some(moved) = self.navigate(&mut s, input) {
            if moved {
                self.reply_current(&s);
            }
            return s;
        }

        let Some(node) = self.f().nodes.get(&s.node) else {
            return self.fail(s);
        };
        let outcome = match node {
            Node::Menu(m) => nodes::menu::answer(self, &s, m, input),
            Node::Question(q) => nodes::question::answer(self, &s, q, input),
            Node::Language(l) => nodes::language::answer(l, input),
            Node::Message(_) | Node::Branch(_) | Node::End(_) => Outcome::Invalid,
        };
        self.apply(s, outcome)
    }

    fn recording(&mut self, mut s: SessionState, url: String, duration: u32) -> SessionState {
        if s.status.is_terminal() {
            return s;
        }
        let Some(Node::Question(q)) = self.f().nodes.get(&s.node) else {
            // A recording where keys were expected: treat as an invalid answer.
            return self.answer(s, "");
        };
        if !q.record || url.trim().is_empty() {
            return self.answer(s, "");
        }
        s.step = s.step.saturating_add(1);
        s.updated_at = self.now;
        let outcome = Outcome::Next {
            save: Some((q.result.clone(), url)),
            language: None,
            next: q.next.clone(),
        };
        let label = Some(format!("{duration}s"));
        self.apply_with_label(s, outcome, label)
    }

    fn timeout(&mut self, mut s: SessionState) -> SessionState {
        if s.status.is_terminal() {
            return s;
        }
        s.updated_at = self.now;
        if s.channel == Channel::Sms && !s.reminded && self.f().sms.reminder_after.is_some() {
            s.reminded = true;
            let reminder = self.ui(&s, UiKey::Reminder, &[]);
            let mut lead = vec![Line::text(reminder)];
            lead.extend(s.lead.iter().cloned());
            s.lead = lead;
            self.reply_current(&s);
            return s;
        }
        if s.channel == Channel::Voice {
            return self.voice_no_input(s);
        }
        let status = match s.channel {
            Channel::Sms => SessionStatus::TimedOut,
            Channel::Ussd | Channel::Voice => SessionStatus::Dropped,
        };
        s.status = status;
        self.status(status);
        s
    }

    /// A voice caller pressed nothing in time: ask again ("Sorry, we did not hear an answer")
    /// as often as the node allows wrong answers, then say goodbye. The session is dropped, not
    /// failed: the answers given are kept and the next call may continue.
    fn voice_no_input(&mut self, mut s: SessionState) -> SessionState {
        s.attempts = s.attempts.saturating_add(1);
        let limit = match self.f().nodes.get(&s.node) {
            Some(Node::Menu(m)) => m.retry.retries(),
            Some(Node::Question(q)) => q.retry.retries(),
            Some(Node::Language(l)) => l.retry.retries(),
            _ => 0,
        };
        if s.attempts > limit {
            s.status = SessionStatus::Dropped;
            s.lead.clear();
            self.status(SessionStatus::Dropped);
            let screen = Screen {
                lead: Vec::new(),
                prompt: Line::text(self.ui(&s, UiKey::TimedOut, &[])),
                choices: Vec::new(),
                expect: Expect::Nothing,
                end: true,
                language: s.language.clone(),
                back: false,
            };
            self.push_reply(&s, screen);
            return s;
        }
        s.lead = vec![Line::text(self.ui(&s, UiKey::NoInput, &[]))];
        self.reply_current(&s);
        s
    }

    fn hangup(&mut self, mut s: SessionState) -> SessionState {
        if s.status.is_terminal() {
            return s;
        }
        s.updated_at = self.now;
        s.status = SessionStatus::Dropped;
        self.status(SessionStatus::Dropped);
        s
    }

    /// Handles the USSD more/back keys and the voice repeat and back keys. `Some(true)` when the screen
    /// changed (or must be said again), `Some(false)` when the key was consumed with no change,
    /// `None` when the input is an answer.
    fn navigate(&mut self, s: &mut SessionState, input: &str) -> Option<bool> {
        let flow = self.f();
        match s.channel {
            // Only the more and back keys can turn a page; anything else is an answer, and the
            // screen is not laid out again to find that out.
            Channel::Ussd if input != flow.ussd.more_key && input != flow.ussd.back_key => None,
            Channel::Ussd => {
                let screen = self.current_screen(s);
                let pages = render::ussd::paginate(
                    &screen,
                    &render::ussd::Layout::for_flow(flow, &s.language),
                );
                if pages.len() <= 1 {
                    return None;
                }
                let page = usize::from(s.page);
                if input == flow.ussd.more_key && page + 1 < pages.len() {
                    s.page = s.page.saturating_add(1);
                    Some(true)
                } else if input == flow.ussd.back_key && page > 0 {
                    s.page -= 1;
                    Some(true)
                } else {
                    None
                }
            }
            Channel::Voice if input == flow.voice.repeat_key => Some(true),
            Channel::Voice if self.back_offered(s) && input == flow.voice.back_key => {
                self.go_back(s);
                Some(true)
            }
            Channel::Voice | Channel::Sms => None,
        }
    }

    /// Whether the voice back key works on the session's current screen: there is an earlier
    /// question to return to, and the key can reach the gateway and cannot be an answer here
    /// (a menu option's key, a number in range, an optional question's skip key). Decided by
    /// asking the node itself, so the prompt and the handling of the key always agree.
    fn back_offered(&self, s: &SessionState) -> bool {
        let flow = self.f();
        let key = flow.voice.back_key.as_str();
        if s.channel != Channel::Voice
            || s.awaiting != Awaiting::Node
            || s.status.is_terminal()
            || key.is_empty()
            || key == flow.voice.repeat_key
        {
            return false;
        }
        let Some(previous) = s.history.last() else {
            return false;
        };
        if !matches!(
            flow.nodes.get(previous),
            Some(Node::Menu(_) | Node::Question(_) | Node::Language(_))
        ) {
            return false;
        }
        // A menu collects as many keys as its longest option key: a longer back key would
        // never arrive whole.
        let fits = |longest: usize| key.chars().count() <= longest;
        let outcome = match flow.nodes.get(&s.node) {
            Some(Node::Menu(m)) => {
                let longest = (0..m.options.len())
                    .map(|i| m.key_of(i).chars().count())
                    .max()
                    .unwrap_or(0);
                if !fits(longest) {
                    return false;
                }
                nodes::menu::answer(self, s, m, key)
            }
            Some(Node::Language(l)) => {
                if !fits(l.options.len().to_string().len()) {
                    return false;
                }
                nodes::language::answer(l, key)
            }
            Some(Node::Question(q)) => {
                // A recording has no keys to collect; yes/no is a one-key choice.
                if q.record || (q.answer == crate::flow::model::AnswerType::YesNo && !fits(1)) {
                    return false;
                }
                nodes::question::answer(self, s, q, key)
            }
            _ => return false,
        };
        matches!(outcome, Outcome::Invalid)
    }

    /// Returns to the question answered before the current one and asks it again. Its answer
    /// stays as it was until the respondent answers again (at a later step, so the new answer
    /// is the one readers keep).
    fn go_back(&mut self, s: &mut SessionState) {
        let Some(previous) = s.history.pop() else {
            return;
        };
        s.node = previous;
        s.awaiting = Awaiting::Node;
        s.attempts = 0;
        s.page = 0;
        s.lead.clear();
    }

    /// Remembers the node being left, for the back key (voice only; bounded).
    fn remember(&self, s: &mut SessionState) {
        if s.channel != Channel::Voice {
            return;
        }
        if s.history.len() >= state::MAX_HISTORY {
            s.history.remove(0);
        }
        s.history.push(s.node.clone());
    }

    fn apply(&mut self, s: SessionState, outcome: Outcome) -> SessionState {
        self.apply_with_label(s, outcome, None)
    }

    fn apply_with_label(
        &mut self,
        mut s: SessionState,
        outcome: Outcome,
        label_override: Option<String>,
    ) -> SessionState {
        match outcome {
            Outcome::Next {
                save,
                language,
                next,
            } => {
                if let Some((result, value)) = save {
                    let label = label_override
                        .or_else(|| self.label_of(&result, &value, &self.f().default_language));
                    self.actions.push(Action::AnswerSaved(SavedAnswer {
                        response_id: s.response_id.clone(),
                        result: result.clone(),
                        value: value.clone(),
                        label,
                        node: s.node.clone(),
                        step: s.step,
                        at: self.now,
                    }));
                    s.answers.insert(result, value);
                }
                if let Some(lang) = language
                    && lang != s.language
                {
                    s.language = lang.clone();
                    self.actions
                        .push(Action::LanguageChanged { language: lang });
                }
                s.attempts = 0;
                self.remember(&mut s);
                self.enter(&mut s, next, Vec::new());
                s
            }
            Outcome::Invalid => {
                s.attempts = s.attempts.saturating_add(1);
                let retry = match self.f().nodes.get(&s.node) {
                    Some(Node::Menu(m)) => Some(&m.retry),
                    Some(Node::Question(q)) => Some(&q.retry),
                    Some(Node::Language(l)) => Some(&l.retry),
                    _ => None,
                };
                let limit = retry.map(|r| r.retries()).unwrap_or(0);
                if s.attempts > limit {
                    match retry.and_then(|r| r.fallback.clone()) {
                        Some(fallback) => {
                            // Say why the flow moves on; a new question with no word about
                            // the rejected answer reads as a glitch.
                            let notice = self.invalid_notice(&s);
                            s.attempts = 0;
                            self.remember(&mut s);
                            self.enter(&mut s, fallback, vec![Line::text(notice)]);
                            s
                        }
                        None => self.fail(s),
                    }
                } else {
                    let notice = self.invalid_notice(&s);
                    s.lead = vec![Line::text(notice)];
                    s.page = 0;
                    self.reply_current(&s);
                    s
                }
            }
        }
    }

    /// Ends the session politely after too many invalid answers (or a broken flow).
    fn fail(&mut self, mut s: SessionState) -> SessionState {
        s.status = SessionStatus::Failed;
        s.lead.clear();
        self.status(SessionStatus::Failed);
        let text = self.ui(&s, UiKey::TooManyAttempts, &[]);
        let screen = Screen {
            lead: Vec::new(),
            prompt: Line::text(text),
            choices: Vec::new(),
            expect: Expect::Nothing,
            end: true,
            language: s.language.clone(),
            back: false,
        };
        self.push_reply(&s, screen);
        s
    }

    /// Walks from `node` through messages and branches to the next node that shows something
    /// and waits (or ends), then replies with its screen.
    fn enter(&mut self, s: &mut SessionState, mut node_id: NodeId, mut lead: Vec<Line>) {
        s.page = 0;
        for _ in 0..MAX_HOPS {
            let Some(node) = self.f().nodes.get(&node_id) else {
                s.node = node_id;
                *s = self.fail(s.clone());
                return;
            };
            match node {
                Node::Message(m) => {
                    lead.push(nodes::message::lead_line(self.f(), m, &self.fill(s)));
                    node_id = m.next.clone();
                }
                Node::Branch(b) => node_id = nodes::branch::route(b, s),
                Node::End(_) => {
                    s.node = node_id;
                    s.lead = lead;
                    s.status = SessionStatus::Completed;
                    self.status(SessionStatus::Completed);
                    self.reply_current(s);
                    return;
                }
                Node::Menu(_) | Node::Question(_) | Node::Language(_) => {
                    s.node = node_id;
                    s.lead = lead;
                    s.awaiting = Awaiting::Node;
                    self.reply_current(s);
                    return;
                }
            }
        }
        // A loop of messages and branches that never waits: only a broken flow does this.
        *s = self.fail(s.clone());
    }

    /// The screen of the node the session is on, with its lead lines.
    fn current_screen(&self, s: &SessionState) -> Screen {
        let flow = self.f();
        if s.awaiting == Awaiting::ResumeChoice {
            return Screen {
                lead: s.lead.clone(),
                prompt: Line::text(self.ui(s, UiKey::ResumePrompt, &[])),
                choices: vec![
                    Choice {
                        key: "1".into(),
                        label: self.ui(s, UiKey::ResumeContinue, &[]),
                        audio: None,
                    },
                    Choice {
                        key: "2".into(),
                        label: self.ui(s, UiKey::ResumeRestart, &[]),
                        audio: None,
                    },
                ],
                expect: Expect::Choice,
                end: false,
                language: s.language.clone(),
                back: false,
            };
        }
        let lead = s.lead.clone();
        let shown = flow.nodes.get(&s.node).and_then(|node| {
            Some((
                node,
                nodes::screen(flow, node, lead.clone(), &self.fill(s))?,
            ))
        });
        match shown {
            Some((Node::End(_), screen)) => screen,
            Some((_, screen)) => Screen {
                back: self.back_offered(s),
                ..screen
            },
            None => Screen {
                lead,
                prompt: Line::text(self.ui(s, UiKey::TooManyAttempts, &[])),
                choices: Vec::new(),
                expect: Expect::Nothing,
                end: true,
                language: s.language.clone(),
                back: false,
            },
        }
    }

    fn reply_current(&mut self, s: &SessionState) {
        let screen = self.current_screen(s);
        self.push_reply(s, screen);
    }

    fn push_reply(&mut self, s: &SessionState, screen: Screen) {
        let ui = |key: UiKey, extra: &[(&'static str, String)]| self.ui(s, key, extra);
        let rendered = render::render(self.f(), s.channel, &screen, usize::from(s.page), &ui);
        let end = screen.end;
        self.actions.push(Action::Reply(Reply {
            screen,
            rendered,
            end,
        }));
    }

    fn status(&mut self, status: SessionStatus) {
        self.actions.push(Action::StatusChanged { status });
    }

    fn invalid_notice(&self, s: &SessionState) -> String {
        let flow = self.f();
        let lang = &s.language;
        let custom = |t: &Option<crate::flow::model::Text>| {
            t.as_ref()
                .map(|t| self.text(s, t.get(lang, &flow.default_language)))
        };
        match flow.nodes.get(&s.node) {
            Some(Node::Menu(m)) => {
                custom(&m.retry.invalid).unwrap_or_else(|| self.ui(s, UiKey::InvalidChoice, &[]))
            }
            Some(Node::Language(l)) => {
                custom(&l.retry.invalid).unwrap_or_else(|| self.ui(s, UiKey::InvalidChoice, &[]))
            }
            Some(Node::Question(q)) => custom(&q.retry.invalid)
                .unwrap_or_else(|| nodes::question::default_invalid(self, s, q)),
            _ => self.ui(s, UiKey::InvalidChoice, &[]),
        }
    }

    /// Renders a prompt's text and picks its recording, in the session's language.
    /// The session's values, for filling a node's texts ([`nodes::Fill`]).
    fn fill<'s>(&'s self, s: &'s SessionState) -> SessionFill<'s, 'a> {
        SessionFill { run: self, s }
    }

    /// Renders one text of the flow with the session's variables.
    pub(crate) fn text(&self, s: &SessionState, source: &str) -> String {
        self.render_with(s, source, Vec::new())
    }

    /// An interface text in the session's language, with extra variables.
    pub(crate) fn ui(
        &self,
        s: &SessionState,
        key: UiKey,
        extra: &[(&'static str, String)],
    ) -> String {
        let source = ui_text::raw(self.f(), key, &s.language);
        self.render_with(s, source, extra.to_vec())
    }

    fn render_with(
        &self,
        s: &SessionState,
        source: &str,
        extra: Vec<(&'static str, String)>,
    ) -> String {
        if !source.contains("{{") && !source.contains("{%") {
            return source.to_string();
        }
        let labels = s
            .answers
            .iter()
            .map(|(k, v)| {
                let label = self
                    .label_of(k, v, &s.language)
                    .unwrap_or_else(|| v.clone());
                (k.as_str(), label)
            })
            .collect();
        let name = self.f().name.get(&s.language, &self.f().default_language);
        let vars = Vars {
            answers: &s.answers,
            labels,
            contact: &s.contact,
            flow_name: name,
            reference: &s.reference,
            extra,
        };
        self.flow.templates.render(source, &vars)
    }

    /// The label of a stored value in `lang`: a menu option's label, Yes/No, a language's name.
    fn label_of(&self, result: &str, value: &str, lang: &str) -> Option<String> {
        let flow = self.f();
        let node = flow.nodes.get(self.flow.result_nodes.get(result)?)?;
        match node {
            Node::Menu(m) => (0..m.options.len())
                .find(|&i| m.value_of(i) == value)
                .map(|i| {
                    m.options[i]
                        .label
                        .get(lang, &flow.default_language)
                        .to_string()
                }),
            Node::Question(q) if q.answer == crate::flow::model::AnswerType::YesNo => {
                let key = if value == "yes" {
                    UiKey::Yes
                } else {
                    UiKey::No
                };
                Some(ui_text::raw(flow, key, lang).to_string())
            }
            Node::Language(l) => l
                .options
                .iter()
                .find(|o| o.language == value)
                .map(|o| o.label.clone()),
            _ => None,
        }
    }
}
