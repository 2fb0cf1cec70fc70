//! The dispatcher: the one place that loads sessions, runs the engine and stores results.
//!
//! Every step of every channel goes through one pipeline ([`pipeline`]):
//! `channel parse -> request -> admission and deadline (the channel's entry point here) ->
//!  load (this node's copy when a USSD request directly follows it, else the store) -> plan
//!  (the channel's input resolved) -> engine::advance (pure) -> commit (the step's writes with
//!  the messages it sends, durable) -> save (version-checked; on conflict withdraw and redo)
//!  -> reply -> channel render`. [`ussd`], [`sms`] and [`voice`] hold each channel's stages.
//!
//! Invariants: an answer is committed before the reply that follows it is returned; one writer
//! per conversation (a save that loses the version race re-reads and, for a duplicate delivery,
//! answers with the winner's reply); a message the step sends is stored in the step's commit
//! and sent only once its session is saved; every step answers within the deadline, politely.
//! It never knows wire formats (channels do) or Redis keys (the session store does).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::admission::Admission;
use crate::channels::ussd::UssdReply;
use crate::config::Config;
use crate::engine::{self, Action, CompiledFlow, SessionState, SessionStatus};
use crate::flow::catalog::FlowCatalog;
use crate::result_store::{
    AnswerRecord, ResponseStart, ResponseStatus, ResultStore, StatusUpdate, Withdrawal, Write,
};
use crate::session_store::{ResumeCopy, SessionStore};
use crate::telemetry;

mod flow_versions;
mod pipeline;
mod session_cache;
mod sms;
mod ussd;
mod ussd_smpp;
mod voice;

pub use flow_versions::{FlowSync, MISS_TTL, publish as publish_flows};
pub use sms::{OutgoingSms, ReplyRoute, SmsOutcome, WITHDRAWN};

/// What is stored per live session: the engine state plus what the channel needs to answer a
/// repeated delivery without running the step again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SessionRecord {
    state: SessionState,
    /// Provider-specific progress: the cumulative text consumed (Africa's Talking) or the last
    /// sequence number (Hubtel).
    progress: String,
    /// The last reply, for duplicate deliveries.
    reply: UssdReply,
    /// SMS: the outbound queue ids of the replies stored with the step that saved this record;
    /// a reply left queued by a stopped node is sent only if its session names it. Last and
    /// defaulted, so a record stored before it existed still decodes.
    #[serde(default)]
    reply_ids: Vec<String>,
}

const RECORD_VERSION: u8 = 1;

impl SessionRecord {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(320);
        out.push(RECORD_VERSION);
        if rmp_serde::encode::write(&mut out, self).is_err() {
            out.truncate(1);
        }
        out
    }

    fn decode(bytes: &[u8]) -> Option<SessionRecord> {
        let (&version, body) = bytes.split_first()?;
        if version != RECORD_VERSION {
            return None;
        }
        rmp_serde::from_slice(body).ok()
    }
}

/// The subscriber's resumable copy of one flow, read in the same round trip as the session.
struct Prefetched {
    /// The flow the copy was read for; used only when the step starts this flow.
    flow_id: String,
    /// The copy, if one is kept.
    copy: Option<Vec<u8>>,
}

/// Whether a saved state is worth a "continue where you left off" copy (see [`resume_copy`]).
fn keeps_copy(state: &SessionState) -> bool {
    matches!(state.status, SessionStatus::Active | SessionStatus::Dropped)
        && !state.answers.is_empty()
}

/// What a saved state means for the subscriber's "continue where you left off" copy: kept
/// while the session is unfinished and has answers worth continuing, removed once it is over.
fn resume_copy<'a>(
    subscriber: &'a str,
    flow: &'a CompiledFlow,
    state: &SessionState,
    state_bytes: &'a [u8],
) -> ResumeCopy<'a> {
    match state.status {
        SessionStatus::Active | SessionStatus::Dropped if keeps_copy(state) => ResumeCopy::Put {
            subscriber,
            flow_id: &flow.flow.id,
            data: state_bytes,
            ttl: Duration::from_secs(flow.flow.resume_window.0.max(1)),
        },
        SessionStatus::Active | SessionStatus::Dropped => ResumeCopy::Keep,
        SessionStatus::Completed | SessionStatus::TimedOut | SessionStatus::Failed => {
            ResumeCopy::Clear {
                subscriber,
                flow_id: &flow.flow.id,
            }
        }
    }
}

/// Everything a step needs, shared by all requests.
pub struct Gateway {
    pub config: Config,
    pub catalog: RwLock<Arc<FlowCatalog>>,
    pub sessions: SessionStore,
    pub results: ResultStore,
    pub admission: Admission,
    /// The outbound call dialer once `server::serve` started it (missed-call callbacks); a
    /// voice step hands callbacks and call outcomes to it.
    pub dialer: crate::outbound::DialerSlot,
    /// This node's copies of the USSD sessions it saved last (Redis only), as saved (encoded:
    /// a third of the memory of a decoded record): the next step of such a session skips the
    /// Redis read. See [`session_cache`] for why that is safe.
    session_cache: session_cache::SessionCache<Box<[u8]>>,
    pseudonyms: crate::pseudonym::Pseudonymiser,
    /// SMS steps run one at a time per number on this node (see [`sms`]).
    sms_numbers: sms::NumberLocks,
    /// Codes, numbers and keywords to flows (the one place that reads them from config).
    pub routes: crate::routing::Routes,
    /// Flow versions read from the result store: missing ones remembered, the poll's cursor
    /// (see [`flow_versions`]).
    stored_flows: flow_versions::StoredFlows,
    /// How numbers are keyed for consent (and contacts): the one truth of who opted out is
    /// the result store's consent table, read through [`Gateway::consent`].
    pub contacts: crate::contacts::ContactSchema,
}

/// Why a step could not complete (logged and counted; the citizen gets a polite `END`).
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error("session store: {0}")]
    Sessions(String),
    #[error("result store: {0}")]
    Results(String),
    #[error("flow `{0}` version {1} is not loaded")]
    MissingFlow(String, u32),
    #[error("session changed concurrently twice")]
    Contention,
}

impl StepError {
    fn kind(&self) -> &'static str {
        match self {
            StepError::Sessions(_) => "session_store",
            StepError::Results(_) => "result_store",
            StepError::MissingFlow(..) => "missing_flow",
            StepError::Contention => "contention",
        }
    }
}

/// The id of a response that starts at `started_at_ms` in `conversation` (a provider's
/// session or call id, or a subscriber's SMS thread): the start time first, zero-padded to
/// 13 digits so that text order is time order, then the conversation.
///
/// Response ids are the result store's unique key. Taken from providers alone (random
/// session and call ids), each new response was inserted at a random place in that index, and
/// under load those scattered index pages were half of all the pages a group commit wrote to
/// SQLite's WAL (10.6 of 19.8 per commit, load-tests/RESULTS.md). Led by the time, new ids go
/// to the index's end, where the pages are already hot. Two copies of one dial that start
/// in different milliseconds now get different ids: the copy whose save loses withdraws its
/// response ([`Gateway::withdraw_lost_start`]).
pub fn response_id(started_at_ms: i64, conversation: &str) -> String {
    format!("{:013}-{conversation}", started_at_ms.max(0))
}

/// The response a step started, if it started one.
fn started_response(step: &engine::Step) -> Option<String> {
    step.actions.iter().find_map(|action| match action {
        Action::ResponseStarted { response_id, .. } => Some(response_id.clone()),
        _ => None,
    })
}

/// A stored contact as a session's contact attributes: the fixed fields by their names
/// (`name`, `language`, `channel`, `gender`, `birth_year`, `age_band`, `operator`), then the
/// configured location and custom fields; the number itself is not among them.
fn contact_fields(contact: crate::result_store::ContactRecord) -> BTreeMap<String, String> {
    let fixed = [
        ("name", contact.name),
        ("language", contact.language),
        ("channel", contact.channel),
        ("gender", contact.gender),
        ("birth_year", contact.birth_year.map(|y| y.to_string())),
        ("age_band", contact.age_band),
        ("operator", contact.operator),
    ];
    let mut fields: BTreeMap<String, String> = fixed
        .into_iter()
        .filter_map(|(name, value)| Some((name.to_string(), value?)))
        .collect();
    fields.extend(contact.fields);
    fields
}

/// Milliseconds since the Unix epoch: the only clock reading of a step, passed to the engine.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Gateway {
    pub fn new(
        config: Config,
        catalog: FlowCatalog,
        sessions: SessionStore,
        results: ResultStore,
        pseudonym_key: Vec<u8>,
        contacts: crate::contacts::ContactSchema,
    ) -> Gateway {
        let admission = Admission::new(&config.admission);
        let routes = crate::routing::Routes::from_config(&config);
        let copies = match (&config.sessions, &sessions) {
            (
                crate::config::SessionsConfig::Redis {
                    node_cache_entries, ..
                },
                SessionStore::Redis(_),
            ) => *node_cache_entries,
            _ => 0,
        };
        Gateway {
            config,
            catalog: RwLock::new(Arc::new(catalog)),
            sessions,
            results,
            admission,
            dialer: crate::outbound::DialerSlot::default(),
            session_cache: session_cache::SessionCache::new(copies),
            pseudonyms: crate::pseudonym::Pseudonymiser::new(&pseudonym_key),
            sms_numbers: sms::NumberLocks::default(),
            routes,
            stored_flows: flow_versions::StoredFlows::default(),
            contacts,
        }
    }

    /// Consent (opt-outs and opt-ins) in the result store, with this gateway's number rules.
    pub fn consent(&self) -> crate::contacts::consent::Consent<'_> {
        crate::contacts::consent::Consent {
            store: &self.results,
            schema: &self.contacts,
        }
    }

    /// Whether `number` opted out: what every outbound path asks at send time.
    pub async fn is_opted_out(&self, number: &str) -> Result<bool, StepError> {
        self.consent()
            .is_opted_out(number)
            .await
            .map_err(|e| StepError::Results(e.to_string()))
    }

    /// Drops this node's expired session copies (see [`session_cache`]).
    pub fn purge_expired_copies(&self) {
        self.session_cache.purge_expired();
    }

    pub fn catalog(&self) -> Arc<FlowCatalog> {
        match self.catalog.read() {
            Ok(c) => Arc::clone(&c),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    pub fn replace_catalog(&self, catalog: FlowCatalog) {
        match self.catalog.write() {
            Ok(mut c) => *c = Arc::new(catalog),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(catalog),
        }
    }

    /// A phone number as it may appear in logs, ids and the admin API: its pseudonym (the
    /// same as in exports), never the number.
    pub fn pseudonym(&self, subscriber: &str) -> String {
        self.pseudonyms.of(subscriber)
    }

    /// A gateway message in the respondent's language; when it is not known (the session
    /// could not be read), every translation on one screen if they fit, else English.
    fn message(&self, text: &crate::flow::model::Text, lang: Option<&str>) -> String {
        if let Some(lang) = lang {
            return text.get(lang, "en").to_string();
        }
        let variants = text.variants();
        let mut ordered: Vec<&str> = variants
            .iter()
            .filter(|(l, _)| *l == Some("en"))
            .chain(variants.iter().filter(|(l, _)| *l != Some("en")))
            .map(|(_, t)| *t)
            .collect();
        ordered.dedup();
        let all = ordered.join("\n");
        let encoding = crate::encoding::gsm7::encoding_for(&all);
        if crate::encoding::gsm7::units(&all, encoding)
            <= crate::encoding::gsm7::ussd_limit(encoding)
        {
            all
        } else {
            text.get("en", "en").to_string()
        }
    }

    /// After a save lost the version race: withdraws the response the losing step started
    /// (`lost`; its session was never saved, so nothing carries it on), unless the session
    /// that won (`winner`) carries that same response, as when both copies of a dial began in
    /// the same millisecond and so share one id and one row. A failed withdrawal is logged and
    /// counted, not passed on: the citizen's step is unaffected, and the row left behind is
    /// an unfinished response without a session.
    async fn withdraw_lost_start(&self, lost: Option<String>, winner: Option<&SessionRecord>) {
        let Some(lost) = lost else { return };
        if winner.is_some_and(|w| w.state.response_id == lost) {
            return;
        }
        let withdrawal = Write::Withdraw(Withdrawal { response_id: lost });
        match self.results.commit(vec![withdrawal]).await {
            Ok(()) => telemetry::session("withdrawn"),
            Err(error) => {
                telemetry::error("withdraw");
                warn!(%error, "could not withdraw the response of a step whose save lost the race");
            }
        }
    }

    /// The flow version a session is pinned to, from this node's catalog or, when another
    /// node (or this one before a restart) loaded it, from the result store.
    async fn flow_of(&self, state: &SessionState) -> Result<Arc<CompiledFlow>, StepError> {
        self.pinned_flow(&state.flow_id, state.flow_version).await
    }

    /// What a session of `flow` knows of the citizen at its start (`{{ contact.x }}`, branches
    /// on contact fields): `known` (e.g. the USSD network) plus the stored contact of `number`,
    /// read only when the flow may use it. A failed read is logged and the session starts
    /// without it (a missing name never costs a citizen the survey).
    async fn contact_for_start(
        &self,
        flow: &CompiledFlow,
        number: &str,
        mut known: BTreeMap<String, String>,
    ) -> BTreeMap<String, String> {
        if !flow.uses_contact {
            return known;
        }
        let key = self.contacts.consent_key(number);
        match self.results.contacts_by_msisdn(&[key]).await {
            Ok(found) => {
                if let Some(contact) = found.into_iter().next() {
                    for (name, value) in contact_fields(contact) {
                        known.entry(name).or_insert(value);
                    }
                }
            }
            Err(error) => {
                telemetry::error("contact_lookup");
                warn!(%error, "contact not read: the session starts without it");
            }
        }
        known
    }

    /// The flow a dialled code starts, sub-code first (`*384*12*3#`), then the code itself.
    fn flow_for(&self, service_code: &str, sub_code: Option<&str>) -> Option<Arc<CompiledFlow>> {
        let id = self.routes.flow_for_dial(service_code, sub_code)?;
        self.catalog().latest(id)
    }

    /// A dropped session of this subscriber on this flow, if one can be resumed; with the
    /// flow version it started on (sessions finish on their version).
    async fn resumable(
        &self,
        subscriber: &str,
        latest: Arc<CompiledFlow>,
    ) -> (Arc<CompiledFlow>, Option<SessionState>) {
        self.resumable_with(subscriber, latest, None).await
    }

    /// [`Gateway::resumable`], using the copy fetched with the session when it was fetched
    /// for this flow instead of asking the store again.
    async fn resumable_with(
        &self,
        subscriber: &str,
        latest: Arc<CompiledFlow>,
        prefetched: Option<Prefetched>,
    ) -> (Arc<CompiledFlow>, Option<SessionState>) {
        let fetched = match prefetched {
            Some(p) if p.flow_id == latest.flow.id => Ok(p.copy),
            _ => {
                self.sessions
                    .get_resumable(subscriber, &latest.flow.id)
                    .await
            }
        };
        let bytes = match fetched {
            Ok(Some(b)) => b,
            Ok(None) => return (latest, None),
            Err(e) => {
                warn!(error = %e, "resume lookup failed; starting afresh");
                telemetry::error("session_store");
                return (latest, None);
            }
        };
        let Ok(state) = SessionState::decode(&bytes) else {
            return (latest, None);
        };
        match self.pinned_flow(&state.flow_id, state.flow_version).await {
            Ok(pinned) => (pinned, Some(state)),
            Err(e) => {
                warn!(error = %e, "the dropped session's flow version is missing; starting afresh");
                (latest, None)
            }
        }
    }

    /// The result-store writes of a step's actions (metrics counted on the way).
    fn writes_for_subscriber(
        &self,
        subscriber: &str,
        provider: &str,
        step: &engine::Step,
    ) -> Vec<Write> {
        let mut writes = Vec::new();
        for action in &step.actions {
            match action {
                Action::ResponseStarted {
                    response_id,
                    flow_id,
                    flow_version,
                    channel,
                    language,
                    started_at,
                } => {
                    telemetry::session("started");
                    writes.push(Write::Start(ResponseStart {
                        response_id: response_id.clone(),
                        flow_id: flow_id.clone(),
                        flow_version: *flow_version,
                        channel: channel.as_str().to_string(),
                        provider: provider.to_string(),
                        subscriber: subscriber.to_string(),
                        language: language.clone(),
                        started_at_ms: *started_at,
                    }))
                }
                Action::AnswerSaved(a) => writes.push(Write::Answer(AnswerRecord {
                    response_id: a.response_id.clone(),
                    result: a.result.clone(),
                    value: a.value.clone(),
                    label: a.label.clone(),
                    node: a.node.clone(),
                    step: a.step,
                    answered_at_ms: a.at,
                })),
                Action::StatusChanged { status } => {
                    let status = match status {
                        SessionStatus::Active => {
                            telemetry::session("resumed");
                            ResponseStatus::Active
                        }
                        SessionStatus::Completed => {
                            telemetry::session("completed");
                            ResponseStatus::Completed
                        }
                        SessionStatus::Dropped => ResponseStatus::Dropped,
                        SessionStatus::TimedOut => {
                            telemetry::session("timed_out");
                            ResponseStatus::TimedOut
                        }
                        SessionStatus::Failed => {
                            telemetry::session("failed");
                            ResponseStatus::Failed
                        }
                    };
                    writes.push(Write::Status(StatusUpdate {
                        response_id: step.state.response_id.clone(),
                        status,
                        language: Some(step.state.language.clone()),
                        at_ms: step.state.updated_at,
                    }))
                }
                Action::LanguageChanged { language } => writes.push(Write::Status(StatusUpdate {
                    response_id: step.state.response_id.clone(),
                    status: ResponseStatus::Active,
                    language: Some(language.clone()),
                    at_ms: step.state.updated_at,
                })),
                Action::Reply(_) => {}
            }
        }
        writes
    }
}

#[cfg(test)]
mod tests {
    use super::response_id;

    #[test]
    fn response_ids_sort_as_their_start_times_do() {
        let times = [
            0,
            7,
            999,
            1_000,
            1_764_139_199_999,
            1_764_139_200_000,
            9_999_999_999_999,
        ];
        let ids: Vec<String> = times
            .iter()
            .map(|&t| response_id(t, "africastalking:ATUid_9"))
            .collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(sorted, ids);
        assert_eq!(ids[4], "1764139199999-africastalking:ATUid_9");
        // A clock before 1970 cannot put a `-` first and sort ahead of every real id.
        assert_eq!(response_id(-5, "x"), "0000000000000-x");
    }
}
