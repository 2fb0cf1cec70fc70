//! SMS steps: an inbound message (already decoded and reassembled by the SMPP bind) through
//! opt-out handling, keyword triggers or the sender's open SMS session, `engine::advance`, the
//! result store and the session save, to the messages to send back. Knows no PDU and no Redis
//! key; sending is the bind's business.
//!
//! One SMS session per phone number (SMS has no session id): the session key is the number.
//! Stop words end the number's sessions and suppress every further message until a start word,
//! on every channel that sends (USSD and voice are started by the citizen, so they are not
//! suppressed).
//!
//! Two messages from one number that arrive together are both answered, in turn, on one node
//! or on two: one step per number runs at a time (a lock per number on each node,
//! [`NumberLocks`], and a lease in the session store across nodes), so the second reads what
//! the first saved (answering the next question) instead of answering the same question over
//! it and overwriting its answer; a step that still loses the save (a lease that expired) is
//! done again from the saved session.

use std::time::Duration;

use tracing::{Instrument, info, warn};

use super::pipeline::{Advance, AfterLoss, Kept, Loaded, Outcome, Plan, Saved, StepKind};
use super::{Gateway, SessionRecord, StepError, now_ms, response_id};
use crate::channels::ussd::UssdReply;
use crate::engine::render::Rendered;
use crate::engine::{self, Channel, Input, Start};
use crate::result_store::Write;
use crate::session_store::SessionKey;
use crate::telemetry;

/// Where a step's replies go when they are stored with its answers (the SMPP binds' case):
/// enough to write each reply's outbound queue row in the step's own commit.
pub struct ReplyRoute<'a> {
    /// This node's name in the outbound queue.
    pub node: &'a str,
    /// The operator whose binds send a message to this number, and the sender shown on the
    /// handset; `None` when no operator can carry it (the message is then not stored).
    pub via: &'a (dyn Fn(&str) -> Option<(String, String)> + Send + Sync),
    /// A new outbound message id per reply.
    pub next_id: &'a (dyn Fn() -> String + Send + Sync),
}

/// What an SMS step leaves to send.
#[derive(Debug, Default)]
pub struct SmsOutcome {
    /// Replies already stored (`queued`) in the step's own commit, together with its answers,
    /// and named in the saved session: the caller only submits them. A node that stops before
    /// that sends them at its next start; one whose step's save lost withdrew them.
    pub stored: Vec<crate::result_store::QueuedSms>,
    /// Messages not stored yet (no route given, or a path without a session step: stop and
    /// start confirmations, the unknown-message reply), for the caller to queue.
    pub to_queue: Vec<OutgoingSms>,
}

impl SmsOutcome {
    fn queue(to_queue: Vec<OutgoingSms>) -> SmsOutcome {
        SmsOutcome {
            stored: Vec::new(),
            to_queue,
        }
    }

    /// After a saved step: its stored replies when they were stored with it (`routed`), else
    /// its messages for the caller to queue.
    fn saved(
        routed: bool,
        stored: Vec<crate::result_store::QueuedSms>,
        outgoing: Vec<OutgoingSms>,
    ) -> SmsOutcome {
        match routed {
            true => SmsOutcome {
                stored,
                to_queue: Vec::new(),
            },
            false => SmsOutcome::queue(outgoing),
        }
    }
}

/// One message to send back to the citizen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutgoingSms {
    pub to: String,
    pub text: String,
    /// Why it is sent (`reply`, `reminder`, `stop_confirmation`, `start_confirmation`): a
    /// stop confirmation is the one message that goes to a number that has just opted out.
    pub purpose: &'static str,
}

/// The session store's name for a number's turn, held across nodes (see
/// [`Gateway::sms_lease`]).
const TURN_LEASE: &str = "sms-turn";

/// One lock per phone number with a step running on this node; an entry lives only while
/// someone holds or waits for it, so the map stays as small as the steps in flight. Across
/// nodes a lease in the session store does the same ([`Gateway::sms_lease`]); this lock keeps
/// a node's own steps of one number from polling the store for it.
pub(crate) struct NumberLocks {
    locks:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    /// This process among the nodes sharing the session store (process id and start time),
    /// the first part of every lease holder name it hands out.
    process: String,
    /// The last part: one per lease this process takes.
    leases: std::sync::atomic::AtomicU64,
}

impl Default for NumberLocks {
    fn default() -> NumberLocks {
        let started = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        NumberLocks {
            locks: Default::default(),
            process: format!("{:x}-{started:x}", std::process::id()),
            leases: Default::default(),
        }
    }
}

/// A held number lock; dropping it lets the next step of the number in and forgets the
/// number once nobody else wants it.
pub(crate) struct NumberGuard<'a> {
    locks: &'a NumberLocks,
    number: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl NumberLocks {
    /// A lease holder name no other step of any node uses.
    fn next_holder(&self) -> String {
        let n = self
            .leases
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{}-{n:x}", self.process)
    }

    pub(crate) async fn lock(&self, number: &str) -> NumberGuard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            std::sync::Arc::clone(locks.entry(number.to_string()).or_default())
        };
        NumberGuard {
            locks: self,
            number: number.to_string(),
            guard: Some(lock.lock_owned().await),
        }
    }

    /// Numbers with a lock entry now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.locks.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

impl Drop for NumberGuard<'_> {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut locks = self.locks.locks.lock().unwrap_or_else(|p| p.into_inner());
        // Only the map holds it: nobody holds or waits for this number any more.
        if locks
            .get(&self.number)
            .is_some_and(|l| std::sync::Arc::strong_count(l) == 1)
        {
            locks.remove(&self.number);
        }
    }
}

/// Why a start confirmation is sent (the number has just opted back in).
pub const PURPOSE_START_CONFIRMATION: &str = "start_confirmation";
/// Why the reply to a message that starts nothing is sent.
pub const PURPOSE_UNKNOWN_REPLY: &str = "unknown_reply";

/// Why a stored reply was not sent: its step's session was never saved.
pub const WITHDRAWN: &str = "withdrawn: its step's session was not saved";

/// The queue rows of a step's replies, when they are to be stored with it.
fn stored_replies(
    route: Option<&ReplyRoute<'_>>,
    outgoing: &[OutgoingSms],
    now: i64,
) -> Vec<crate::result_store::QueuedSms> {
    let Some(route) = route else {
        return Vec::new();
    };
    outgoing
        .iter()
        .filter_map(|m| {
            let Some((operator, sender)) = (route.via)(&m.to) else {
                warn!("no operator can carry a reply: not stored");
                return None;
            };
            Some(crate::result_store::QueuedSms {
                message_id: (route.next_id)(),
                node: route.node.to_string(),
                operator,
                recipient: m.to.clone(),
                sender,
                body: m.text.clone(),
                purpose: m.purpose.to_string(),
                created_at_ms: now,
            })
        })
        .collect()
}

impl Gateway {
    /// Handles one inbound SMS from `from`; returns what to send back (possibly nothing).
    /// Never fails: a store failure is logged and counted, and the citizen gets no reply
    /// rather than an error text.
    pub async fn sms_step(&self, from: &str, text: &str) -> Vec<OutgoingSms> {
        self.sms_step_marked(from, text, None, None).await.to_queue
    }

    /// [`Gateway::sms_step`] for a message kept in the result store: `handled` (its marker)
    /// is committed with the step's answers, or alone when the step commits nothing, so a
    /// message whose answers are stored is never handled again by a recovery. A step that
    /// fails before its commit leaves the message unhandled (recovered later).
    ///
    /// With a `route`, the step's replies are stored in the same commit as its answers and
    /// named in the session it saves ([`SmsOutcome::stored`]): a reply is then neither lost
    /// by a stop between the save and the queueing, nor sent for a step whose save lost.
    pub async fn sms_step_marked(
        &self,
        from: &str,
        text: &str,
        handled: Option<crate::result_store::Write>,
        route: Option<&ReplyRoute<'_>>,
    ) -> SmsOutcome {
        let span = tracing::info_span!(
            "sms_step",
            subscriber = %self.pseudonym(from),
            flow = tracing::field::Empty,
            node = tracing::field::Empty,
        );
        let started = std::time::Instant::now();
        let deadline = Duration::from_millis(self.config.ussd.step_deadline_ms.max(1) * 5);
        let step = async {
            let _turn = self.sms_numbers.lock(from).await;
            let lease = self.sms_lease(from, deadline).await?;
            let inbound_id = match &handled {
                Some(Write::SmsInboundUpdate(update)) => Some(update.inbound_id.clone()),
                _ => None,
            };
            let mut step = SmsStep {
                from,
                text,
                key: SessionKey::new("sms", from),
                marker: handled,
                inbound_id,
                route,
                patience: deadline / 2,
            };
            let outcome = self.run_step(&mut step).await;
            if let Err(e) = self.sessions.release(TURN_LEASE, from, &lease).await {
                // It expires on its own; the number's next step waits until then.
                warn!(error = %e, "SMS turn not given back");
            }
            outcome
        };
        match tokio::time::timeout(deadline, step.instrument(span.clone())).await {
            Ok(Ok(outcome)) => {
                telemetry::step(Channel::Sms, "smpp", "ok", started.elapsed());
                outcome
            }
            Ok(Err(e)) => {
                span.in_scope(|| warn!(error = %e, "sms step failed"));
                telemetry::error(e.kind());
                telemetry::step(Channel::Sms, "smpp", "error", started.elapsed());
                SmsOutcome::default()
            }
            Err(_) => {
                span.in_scope(|| warn!("sms step missed its deadline"));
                telemetry::error("deadline");
                telemetry::step(Channel::Sms, "smpp", "deadline", started.elapsed());
                SmsOutcome::default()
            }
        }
    }

    /// Waits for the number's turn across nodes: a lease in the session store, taken for
    /// twice the step's `deadline` (the step gives it back when it is done; one whose node
    /// stopped holds it until then). Returns the lease's holder name.
    async fn sms_lease(&self, from: &str, deadline: Duration) -> Result<String, StepError> {
        let holder = self.sms_numbers.next_holder();
        let mut pause = Duration::from_millis(5);
        loop {
            // A store that does not answer is waited for too (the step's deadline bounds it):
            // a Redis pause of a few seconds then costs a late reply, not a message left for
            // the sweep.
            match self
                .sessions
                .lease(TURN_LEASE, from, &holder, deadline * 2)
                .await
            {
                Ok(true) => return Ok(holder),
                Ok(false) => telemetry::session("sms_turn_wait"),
                Err(e) => {
                    telemetry::error("session_store");
                    warn!(error = %e, "SMS turn not taken yet: the session store did not answer");
                }
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Withdraws the stored replies of a step whose session save lost: they answer a step the
    /// session never took. A failed withdrawal is logged; the sweep withdraws them later (the
    /// session does not name them).
    async fn withdraw_replies(&self, stored: &[crate::result_store::QueuedSms]) {
        if stored.is_empty() {
            return;
        }
        let now = now_ms();
        let withdrawals = stored
            .iter()
            .map(|m| {
                Write::SmsState(crate::result_store::SmsStateUpdate {
                    message_id: m.message_id.clone(),
                    state: crate::result_store::SmsState::NotSent,
                    detail: Some(WITHDRAWN.to_string()),
                    at_ms: now,
                })
            })
            .collect();
        if let Err(e) = self.results.commit(withdrawals).await {
            warn!(error = %e, "replies of a step whose save lost not withdrawn: the sweep will");
        }
    }

    /// Whether `message_id`, a reply stored by an SMS step, belongs to the step the number's
    /// session last saved (so it may be sent). The outbound queue asks before it sends a reply
    /// that a stopped node left queued.
    pub async fn sms_reply_is_current(
        &self,
        to: &str,
        message_id: &str,
    ) -> Result<bool, StepError> {
        let stored = self
            .sessions
            .load(&SessionKey::new("sms", to))
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?;
        Ok(stored
            .and_then(|s| SessionRecord::decode(&s.data))
            .is_some_and(|record| record.reply_ids.iter().any(|id| id == message_id)))
    }

    /// Sets the number's timer for its SMS session: the reminder `sms.reminder_after` after a
    /// question was sent, then the end of the session `sms.session_timeout` after the question;
    /// none once the session is over.
    async fn schedule_sms_timer(
        &self,
        from: &str,
        flow: &engine::CompiledFlow,
        state: &engine::SessionState,
    ) -> Result<(), StepError> {
        let map = |e: crate::session_store::SessionStoreError| StepError::Sessions(e.to_string());
        if state.status.is_terminal() {
            return self.sessions.cancel_timer("sms", from).await.map_err(map);
        }
        let timeout_ms = flow.flow.sms.session_timeout.as_millis();
        let wait_ms = match flow.flow.sms.reminder_after {
            Some(reminder) if !state.reminded => reminder.as_millis().min(timeout_ms),
            Some(reminder) => (timeout_ms - reminder.as_millis()).max(60_000),
            None => timeout_ms,
        };
        self.sessions
            .schedule_timer("sms", from, state.updated_at.saturating_add(wait_ms))
            .await
            .map_err(map)
    }

    /// Fires the SMS timers due at `now_ms`: a reminder of the unanswered question (once), or
    /// the end of a session nobody answered (`timed_out`, no message). Returns the reminders to
    /// send. Each timer fires on one node only (the store hands it out once).
    pub async fn sms_due(&self, now_ms: i64) -> Vec<OutgoingSms> {
        self.sms_due_routed(now_ms, None).await.to_queue
    }

    /// [`Gateway::sms_due`]; with a `route`, each reminder is stored in its timer step's own
    /// commit and named in the session it saves, as a step's replies are
    /// ([`Gateway::sms_step_marked`]).
    pub async fn sms_due_routed(&self, now_ms: i64, route: Option<&ReplyRoute<'_>>) -> SmsOutcome {
        let numbers = match self.sessions.take_due_timers("sms", now_ms, 200).await {
            Ok(numbers) => numbers,
            Err(e) => {
                warn!(error = %e, "cannot read SMS timers");
                telemetry::error("session_store");
                return SmsOutcome::default();
            }
        };
        let mut outgoing = SmsOutcome::default();
        for number in numbers {
            let mut step = TimerStep {
                from: &number,
                key: SessionKey::new("sms", &number),
                now_ms,
                route,
                kept: None,
            };
            match self.run_step(&mut step).await {
                Ok(fired) => {
                    outgoing.stored.extend(fired.stored);
                    outgoing.to_queue.extend(fired.to_queue);
                }
                Err(e) => {
                    warn!(error = %e, subscriber = %self.pseudonym(&number), "SMS timer failed");
                    telemetry::error(e.kind());
                }
            }
        }
        outgoing
    }
}

/// A stop or start word: the citizen, by SMS.
fn by_keyword() -> crate::contacts::consent::ConsentActor {
    crate::contacts::consent::ConsentActor::citizen(
        crate::result_store::ConsentSource::Keyword,
        "sms",
    )
}

/// The queued rows among a step's own writes (its stored replies).
fn queued_rows(writes: Vec<Write>) -> Vec<crate::result_store::QueuedSms> {
    writes
        .into_iter()
        .filter_map(|w| match w {
            Write::SmsQueued(queued) => Some(queued),
            _ => None,
        })
        .collect()
}

/// One inbound SMS in the step pipeline: stop and start words, opted-out numbers and
/// unknown messages are answered in the plan (their confirmation stored in the commit that
/// marks the message handled); a keyword or the number's open session runs a step.
struct SmsStep<'a> {
    from: &'a str,
    text: &'a str,
    key: SessionKey,
    /// The inbound message's "handled" marker: goes in the first commit of the step.
    marker: Option<Write>,
    /// The kept inbound message's id: saved in the session (as its progress), so a message
    /// handled again after its step's save was thought lost is recognised as applied.
    inbound_id: Option<String>,
    /// Where replies go when they are stored with the step.
    route: Option<&'a ReplyRoute<'a>>,
    /// How long a failed save is checked and tried again (half the SMS step's deadline).
    patience: Duration,
}

impl SmsStep<'_> {
    /// Commits `writes` with the message's marker and, with a route, the queue rows of
    /// `messages`: one commit for a message answered without a session step.
    async fn settle(
        &mut self,
        gateway: &Gateway,
        mut writes: Vec<Write>,
        messages: Vec<OutgoingSms>,
    ) -> Result<SmsOutcome, StepError> {
        let stored = stored_replies(self.route, &messages, now_ms());
        writes.extend(self.marker.take());
        writes.extend(stored.iter().cloned().map(Write::SmsQueued));
        if !writes.is_empty() {
            gateway
                .results
                .commit(writes)
                .await
                .map_err(|e| StepError::Results(e.to_string()))?;
        }
        Ok(SmsOutcome::saved(self.route.is_some(), stored, messages))
    }

    /// A gateway message to the number: in the session's language when there is one,
    /// otherwise every translation (a stop or start word says nothing of the language).
    fn message(
        &self,
        text: &crate::flow::model::Text,
        language: Option<&str>,
        purpose: &'static str,
    ) -> OutgoingSms {
        OutgoingSms {
            purpose,
            to: self.from.to_string(),
            text: match language {
                Some(lang) => text.get(lang, "en").to_string(),
                None => text
                    .variants()
                    .iter()
                    .map(|(_, t)| *t)
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
        }
    }

    /// A stop word: the number opts out, its open session ends `opted_out`, its timer goes,
    /// and the confirmation (the one message an opted-out number gets) is stored with it.
    async fn stop(
        &mut self,
        gateway: &Gateway,
        record: Option<SessionRecord>,
    ) -> Result<SmsOutcome, StepError> {
        let map = |e: crate::session_store::SessionStoreError| StepError::Sessions(e.to_string());
        gateway
            .consent()
            .opt_out(self.from, &by_keyword(), now_ms())
            .await
            .map_err(|e| StepError::Results(e.to_string()))?;
        let language = record.as_ref().map(|r| r.state.language.clone());
        let mut writes = Vec::new();
        let open = record.filter(|r| !r.state.status.is_terminal());
        if let Some(record) = &open {
            let flow = gateway.flow_of(&record.state).await?;
            let step = engine::advance(&flow, Some(record.state.clone()), Input::Hangup, now_ms());
            writes = gateway.writes_for_subscriber(self.from, "smpp", &step);
            for write in &mut writes {
                if let Write::Status(update) = write {
                    update.status = crate::result_store::ResponseStatus::OptedOut;
                }
            }
        }
        let confirmation = self.message(
            &gateway.config.smpp.stop_reply,
            language.as_deref(),
            crate::sms::outbox::PURPOSE_STOP_CONFIRMATION,
        );
        let outcome = self.settle(gateway, writes, vec![confirmation]).await?;
        if open.is_some() {
            gateway.sessions.delete(&self.key).await.map_err(map)?;
        }
        gateway
            .sessions
            .cancel_timer("sms", self.from)
            .await
            .map_err(map)?;
        telemetry::session("opted_out");
        info!("stop word: number opted out");
        Ok(outcome)
    }
}

impl StepKind for SmsStep<'_> {
    type Reply = SmsOutcome;

    fn key(&self) -> &SessionKey {
        &self.key
    }

    fn subscriber(&self) -> &str {
        self.from
    }

    fn provider(&self) -> &str {
        "smpp"
    }

    async fn plan(
        &mut self,
        gateway: &Gateway,
        loaded: Loaded,
    ) -> Result<Plan<SmsOutcome>, StepError> {
        let smpp = &gateway.config.smpp;
        let first_word = self
            .text
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_uppercase();
        let said = |words: &[String]| words.iter().any(|w| w.eq_ignore_ascii_case(&first_word));
        let language = loaded.record.as_ref().map(|r| r.state.language.clone());
        if self.inbound_id.as_ref().is_some_and(|id| {
            loaded
                .record
                .as_ref()
                .is_some_and(|r| !id.is_empty() && r.progress == *id)
        }) {
            // This message's step is the session's last one (its save landed after the step
            // gave it up): handled, and its replies go out as the session names them.
            info!("SMS already applied to its session: not handled again");
            return Ok(Plan::Done(
                self.settle(gateway, Vec::new(), Vec::new()).await?,
            ));
        }
        if said(&smpp.stop_words) {
            return Ok(Plan::Done(self.stop(gateway, loaded.record).await?));
        }
        if said(&smpp.start_words) {
            gateway
                .consent()
                .opt_in(self.from, &by_keyword(), now_ms())
                .await
                .map_err(|e| StepError::Results(e.to_string()))?;
            info!("start word: number opted back in");
            let confirmation = self.message(
                &smpp.start_reply,
                language.as_deref(),
                PURPOSE_START_CONFIRMATION,
            );
            return Ok(Plan::Done(
                self.settle(gateway, Vec::new(), vec![confirmation]).await?,
            ));
        }
        if gateway.is_opted_out(self.from).await? {
            info!("message from an opted-out number: no reply");
            return Ok(Plan::Done(
                self.settle(gateway, Vec::new(), Vec::new()).await?,
            ));
        }
        let now = now_ms();
        let open = loaded.record.filter(|r| !r.state.status.is_terminal());
        match (gateway.routes.keyword(&first_word), open) {
            // A keyword always starts its flow afresh (the citizen asked for it), replacing
            // whatever session the number had.
            (Some(keyword), _) => {
                let Some(flow) = gateway.catalog().latest(&keyword.flow) else {
                    warn!(flow = %keyword.flow, "keyword names a flow that is not loaded");
                    return Ok(Plan::Done(
                        self.settle(gateway, Vec::new(), Vec::new()).await?,
                    ));
                };
                let contact = gateway
                    .contact_for_start(&flow, self.from, Default::default())
                    .await;
                let start = Input::Start(Start {
                    // The pseudonym, not the number: response ids are exported as they are.
                    session_id: response_id(now, &format!("sms:{}", gateway.pseudonym(self.from))),
                    channel: Channel::Sms,
                    contact,
                    language: keyword.language.clone(),
                });
                Ok(Plan::Advance(Advance {
                    flow,
                    prior: None,
                    inputs: vec![start],
                    now,
                    expected: loaded.version,
                }))
            }
            (None, Some(record)) => Ok(Plan::Advance(Advance {
                flow: gateway.flow_of(&record.state).await?,
                prior: Some(record.state),
                inputs: vec![Input::Answer(self.text.trim().to_string())],
                now,
                expected: loaded.version,
            })),
            (None, None) => {
                let unknown = smpp
                    .unknown_reply
                    .as_ref()
                    .map(|text| self.message(text, language.as_deref(), PURPOSE_UNKNOWN_REPLY));
                let outcome = self.settle(gateway, Vec::new(), unknown.into_iter().collect());
                Ok(Plan::Done(outcome.await?))
            }
        }
    }

    fn outcome(
        &mut self,
        _gateway: &Gateway,
        advance: &Advance,
        steps: &[engine::Step],
    ) -> Outcome<SmsOutcome> {
        let outgoing = replies(self.from, steps, crate::sms::outbox::PURPOSE_STEP_REPLY);
        let mut outcome = sms_outcome(self.route, self.marker.take(), advance, outgoing, None);
        outcome.kept.progress = self.inbound_id.clone().unwrap_or_default();
        outcome
    }

    async fn saved(&mut self, gateway: &Gateway, saved: Saved<'_>) -> Result<(), StepError> {
        gateway
            .schedule_sms_timer(self.from, saved.flow, &saved.record.state)
            .await
    }

    fn save_patience(&self) -> Duration {
        self.patience
    }

    /// The message's commit marked it handled, but its session was not saved: it goes back
    /// to `received`, so the sweep handles it again from the session as stored (where a save
    /// that landed late after all is recognised by the message's id). Its stored replies
    /// stay queued: the outbox sends one only if the saved session names it.
    async fn unsaved(&mut self, gateway: &Gateway, writes: &[Write]) {
        let marked = writes.iter().find_map(|write| match write {
            Write::SmsInboundUpdate(update) => Some(update.inbound_id.clone()),
            _ => None,
        });
        let Some(inbound_id) = marked else { return };
        let unhandled = Write::SmsInboundUpdate(crate::result_store::InboundUpdate {
            inbound_id,
            change: crate::result_store::InboundChange::Unhandled,
            at_ms: now_ms(),
        });
        if let Err(e) = gateway.results.commit(vec![unhandled]).await {
            warn!(error = %e, "an SMS whose step was not saved could not be marked for another try");
        }
    }

    async fn lost(
        &mut self,
        gateway: &Gateway,
        writes: Vec<Write>,
        _reply: SmsOutcome,
    ) -> AfterLoss<SmsOutcome> {
        gateway.withdraw_replies(&queued_rows(writes)).await;
        AfterLoss::Redo
    }
}

/// A number's SMS timer in the step pipeline: the reminder of its unanswered question
/// (stored with the timer step, as a step's replies are) or the end of its session.
struct TimerStep<'a> {
    from: &'a str,
    key: SessionKey,
    now_ms: i64,
    route: Option<&'a ReplyRoute<'a>>,
    /// The saved record's part beside the state, kept by the timer step.
    kept: Option<Kept>,
}

impl StepKind for TimerStep<'_> {
    type Reply = SmsOutcome;

    fn key(&self) -> &SessionKey {
        &self.key
    }

    fn subscriber(&self) -> &str {
        self.from
    }

    fn provider(&self) -> &str {
        "smpp"
    }

    async fn plan(
        &mut self,
        gateway: &Gateway,
        loaded: Loaded,
    ) -> Result<Plan<SmsOutcome>, StepError> {
        let Some(record) = loaded.record.filter(|r| !r.state.status.is_terminal()) else {
            return Ok(Plan::Done(SmsOutcome::default()));
        };
        let flow = gateway.flow_of(&record.state).await?;
        self.kept = Some(Kept {
            progress: record.progress,
            reply: record.reply,
            reply_ids: record.reply_ids,
        });
        Ok(Plan::Advance(Advance {
            flow,
            prior: Some(record.state),
            inputs: vec![Input::Timeout],
            now: self.now_ms,
            expected: loaded.version,
        }))
    }

    fn outcome(
        &mut self,
        _gateway: &Gateway,
        advance: &Advance,
        steps: &[engine::Step],
    ) -> Outcome<SmsOutcome> {
        let outgoing = replies(self.from, steps, crate::sms::outbox::PURPOSE_REMINDER);
        sms_outcome(self.route, None, advance, outgoing, self.kept.take())
    }

    async fn saved(&mut self, gateway: &Gateway, saved: Saved<'_>) -> Result<(), StepError> {
        if saved.record.state.status.is_terminal() {
            telemetry::session("timed_out");
        }
        gateway
            .schedule_sms_timer(self.from, saved.flow, &saved.record.state)
            .await
    }

    /// The citizen answered meanwhile: that step set a new timer, and this reminder answers
    /// nothing.
    async fn lost(
        &mut self,
        gateway: &Gateway,
        writes: Vec<Write>,
        _reply: SmsOutcome,
    ) -> AfterLoss<SmsOutcome> {
        gateway.withdraw_replies(&queued_rows(writes)).await;
        AfterLoss::Answer(SmsOutcome::default())
    }
}

/// The messages a step's replies send to `to`, for `purpose`.
fn replies(to: &str, steps: &[engine::Step], purpose: &'static str) -> Vec<OutgoingSms> {
    steps
        .iter()
        .flat_map(|step| &step.actions)
        .filter_map(|action| match action {
            engine::Action::Reply(r) => Some(OutgoingSms {
                purpose,
                to: to.to_string(),
                text: match &r.rendered {
                    Rendered::Sms(sms) => sms.text.clone(),
                    other => other.text(),
                },
            }),
            _ => None,
        })
        .collect()
}

/// An SMS step's outcome: its replies' queue rows (with a route) and `marker` in its commit,
/// their ids in the session it saves. `kept`: the record's part a timer step keeps (its
/// reply ids replaced only when its reminders are stored).
fn sms_outcome(
    route: Option<&ReplyRoute<'_>>,
    marker: Option<Write>,
    advance: &Advance,
    outgoing: Vec<OutgoingSms>,
    kept: Option<Kept>,
) -> Outcome<SmsOutcome> {
    let stored = stored_replies(route, &outgoing, advance.now);
    let mut writes: Vec<Write> = marker.into_iter().collect();
    writes.extend(stored.iter().cloned().map(Write::SmsQueued));
    let ids: Vec<String> = stored.iter().map(|m| m.message_id.clone()).collect();
    let kept = match kept {
        Some(kept) if route.is_none() => kept,
        Some(kept) => Kept {
            reply_ids: ids,
            ..kept
        },
        None => Kept {
            progress: String::new(),
            reply: UssdReply {
                text: outgoing.last().map(|m| m.text.clone()).unwrap_or_default(),
                end: false,
            },
            reply_ids: ids,
        },
    };
    Outcome {
        kept,
        writes,
        reply: SmsOutcome::saved(route.is_some(), stored, outgoing),
        ttl: Duration::from_secs(advance.flow.flow.sms.session_timeout.0.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::NumberLocks;

    #[tokio::test]
    async fn a_number_waits_for_its_own_turn_and_is_forgotten_after() {
        let locks = NumberLocks::default();
        let first = locks.lock("+254700000001").await;
        // Another number is not held up.
        drop(locks.lock("+254700000002").await);
        let waiting = locks.lock("+254700000001");
        tokio::pin!(waiting);
        assert!(
            futures_util::poll!(waiting.as_mut()).is_pending(),
            "the same number waits"
        );
        drop(first);
        let second = waiting.await;
        assert_eq!(locks.len(), 1);
        drop(second);
        assert_eq!(locks.len(), 0, "nobody holds or waits: forgotten");
    }
}
