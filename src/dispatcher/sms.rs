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
//! Two messages from one number that arrive together are both answered, in turn: a node runs
//! one step per number at a time ([`NumberLocks`]), so the second reads what the first saved
//! (answering the next question) instead of answering the same question over it; a step that
//! still loses the save to another node is done again from the saved session.

use std::time::Duration;

use tracing::{Instrument, info, warn};

use super::{Gateway, SessionRecord, StepError, now_ms, response_id, resume_copy};
use crate::channels::ussd::UssdReply;
use crate::engine::render::Rendered;
use crate::engine::{self, Channel, Input, Start};
use crate::result_store::Write;
use crate::session_store::{SaveOutcome, SessionKey};
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

/// One lock per phone number with a step running on this node; an entry lives only while
/// someone holds or waits for it, so the map stays as small as the steps in flight.
#[derive(Default)]
pub(crate) struct NumberLocks {
    locks:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
}

/// A held number lock; dropping it lets the next step of the number in and forgets the
/// number once nobody else wants it.
pub(crate) struct NumberGuard<'a> {
    locks: &'a NumberLocks,
    number: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl NumberLocks {
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
            let mut marker = handled;
            // One retry when a step on another node saved first: done again from its session.
            let mut tries = 2;
            let outcome = loop {
                match self.sms_step_inner(from, text, &mut marker, route).await {
                    Err(StepError::Contention) if tries > 1 => tries -= 1,
                    outcome => break outcome,
                }
            };
            // The paths that commit nothing (an unknown message, an opted-out number, a
            // start word) are handled all the same.
            if outcome.is_ok()
                && let Some(marker) = marker.take()
            {
                self.results
                    .commit(vec![marker])
                    .await
                    .map_err(|e| StepError::Results(e.to_string()))?;
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

    async fn sms_step_inner(
        &self,
        from: &str,
        text: &str,
        marker: &mut Option<crate::result_store::Write>,
        route: Option<&ReplyRoute<'_>>,
    ) -> Result<SmsOutcome, StepError> {
        let smpp = &self.config.smpp;
        let first_word = text.split_whitespace().next().unwrap_or("").to_uppercase();
        let matches = |words: &[String]| words.iter().any(|w| w.eq_ignore_ascii_case(&first_word));
        let key = SessionKey::new("sms", from);
        let stored = self
            .sessions
            .load(&key)
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?;
        let (version, record) = match stored {
            Some(s) => (Some(s.version), SessionRecord::decode(&s.data)),
            None => (None, None),
        };
        // The session's language when there is one; otherwise every translation (a stop or
        // start word says nothing about the language the citizen reads).
        let language = record.as_ref().map(|r| r.state.language.clone());
        let reply = |text: &crate::flow::model::Text, purpose: &'static str| OutgoingSms {
            purpose,
            to: from.to_string(),
            text: match &language {
                Some(lang) => text.get(lang, "en").to_string(),
                None => text
                    .variants()
                    .iter()
                    .map(|(_, t)| *t)
                    .collect::<Vec<_>>()
                    .join("\n"),
            },
        };

        if matches(&smpp.stop_words) {
            self.sessions
                .set_opted_out(from, true)
                .await
                .map_err(|e| StepError::Sessions(e.to_string()))?;
            if let Some(record) = record
                && !record.state.status.is_terminal()
            {
                let flow = self.flow_of(&record.state).await?;
                let step = engine::advance(&flow, Some(record.state), Input::Hangup, now_ms());
                let mut writes = self.writes_for_subscriber(from, "smpp", &step);
                for write in &mut writes {
                    if let crate::result_store::Write::Status(update) = write {
                        update.status = crate::result_store::ResponseStatus::OptedOut;
                    }
                }
                writes.extend(marker.take());
                self.results
                    .commit(writes)
                    .await
                    .map_err(|e| StepError::Results(e.to_string()))?;
                self.sessions
                    .delete(&key)
                    .await
                    .map_err(|e| StepError::Sessions(e.to_string()))?;
            }
            self.sessions
                .cancel_timer("sms", from)
                .await
                .map_err(|e| StepError::Sessions(e.to_string()))?;
            telemetry::session("opted_out");
            info!("stop word: number opted out");
            return Ok(SmsOutcome::queue(vec![reply(
                &smpp.stop_reply,
                crate::smpp::outbox::PURPOSE_STOP_CONFIRMATION,
            )]));
        }
        if matches(&smpp.start_words) {
            self.sessions
                .set_opted_out(from, false)
                .await
                .map_err(|e| StepError::Sessions(e.to_string()))?;
            info!("start word: number opted back in");
            return Ok(SmsOutcome::queue(vec![reply(
                &smpp.start_reply,
                "start_confirmation",
            )]));
        }
        if self
            .sessions
            .is_opted_out(from)
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?
        {
            info!("message from an opted-out number: no reply");
            return Ok(SmsOutcome::default());
        }

        let keyword = self.routes.keyword(&first_word);
        let open = record.filter(|r| !r.state.status.is_terminal());
        let now = now_ms();
        let (flow, prior, input) = match (keyword, open) {
            // A keyword always starts its flow afresh (the citizen asked for it).
            (Some(keyword), _) => {
                let Some(flow) = self.catalog().latest(&keyword.flow) else {
                    warn!(flow = %keyword.flow, "keyword names a flow that is not loaded");
                    return Ok(SmsOutcome::default());
                };
                let start = Input::Start(Start {
                    // The pseudonym, not the number: response ids are exported as they are.
                    session_id: response_id(now, &format!("sms:{}", self.pseudonym(from))),
                    channel: Channel::Sms,
                    contact: Default::default(),
                    language: keyword.language.clone(),
                });
                (flow, None, start)
            }
            (None, Some(record)) => {
                let flow = self.flow_of(&record.state).await?;
                (
                    flow,
                    Some(record.state),
                    Input::Answer(text.trim().to_string()),
                )
            }
            (None, None) => {
                return Ok(SmsOutcome::queue(
                    smpp.unknown_reply
                        .as_ref()
                        .map(|text| reply(text, "unknown_reply"))
                        .into_iter()
                        .collect(),
                ));
            }
        };
        tracing::Span::current().record("flow", flow.flow.id.as_str());
        let step = engine::advance(&flow, prior, input, now);
        tracing::Span::current().record("node", step.state.node.as_str());
        let outgoing: Vec<OutgoingSms> = step
            .actions
            .iter()
            .filter_map(|a| match a {
                engine::Action::Reply(r) => match &r.rendered {
                    Rendered::Sms(sms) => Some(OutgoingSms {
                        purpose: crate::smpp::outbox::PURPOSE_STEP_REPLY,
                        to: from.to_string(),
                        text: sms.text.clone(),
                    }),
                    other => Some(OutgoingSms {
                        purpose: crate::smpp::outbox::PURPOSE_STEP_REPLY,
                        to: from.to_string(),
                        text: other.text(),
                    }),
                },
                _ => None,
            })
            .collect();
        // The replies' queue rows go in the step's own commit (with a route), and their ids
        // into the session saved next: only a saved step's replies are ever sent.
        let stored = stored_replies(route, &outgoing, now);
        self.commit_sms_step(from, &step, marker.take(), &stored)
            .await?;
        let record = SessionRecord {
            state: step.state,
            progress: String::new(),
            reply: UssdReply {
                text: outgoing.last().map(|m| m.text.clone()).unwrap_or_default(),
                end: false,
            },
            reply_ids: stored.iter().map(|m| m.message_id.clone()).collect(),
        };
        let ttl = Duration::from_secs(flow.flow.sms.session_timeout.0.max(1));
        let state_bytes = record.state.encode();
        let resume = resume_copy(from, &flow, &record.state, &state_bytes);
        // A keyword restart replaces whatever session the number had.
        let expected = if keyword.is_some() { None } else { version };
        if keyword.is_some() && version.is_some() {
            self.sessions
                .delete(&key)
                .await
                .map_err(|e| StepError::Sessions(e.to_string()))?;
        }
        match self
            .sessions
            .save_and_remember(&key, expected, &record.encode(), ttl, resume)
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?
        {
            SaveOutcome::Saved { .. } => {
                self.schedule_sms_timer(from, &flow, &record.state).await?;
                Ok(SmsOutcome::saved(route.is_some(), stored, outgoing))
            }
            SaveOutcome::Conflict { .. } => {
                telemetry::error("version_conflict");
                self.withdraw_replies(&stored).await;
                Err(StepError::Contention)
            }
        }
    }

    /// Commits an SMS step's (or timer step's) answers together with `marker` (the inbound
    /// message handled) and the queue rows of its `stored` replies: one commit, before the
    /// session save.
    async fn commit_sms_step(
        &self,
        from: &str,
        step: &engine::Step,
        marker: Option<Write>,
        stored: &[crate::result_store::QueuedSms],
    ) -> Result<(), StepError> {
        let mut writes = self.writes_for_subscriber(from, "smpp", step);
        writes.extend(marker);
        writes.extend(stored.iter().cloned().map(Write::SmsQueued));
        if writes.is_empty() {
            return Ok(());
        }
        self.results
            .commit(writes)
            .await
            .map_err(|e| StepError::Results(e.to_string()))
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
            match self.sms_timer_fired(&number, now_ms, route).await {
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

    async fn sms_timer_fired(
        &self,
        from: &str,
        now_ms: i64,
        route: Option<&ReplyRoute<'_>>,
    ) -> Result<SmsOutcome, StepError> {
        let key = SessionKey::new("sms", from);
        let Some(saved) = self
            .sessions
            .load(&key)
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?
        else {
            return Ok(SmsOutcome::default());
        };
        let Some(record) = SessionRecord::decode(&saved.data) else {
            return Ok(SmsOutcome::default());
        };
        if record.state.status.is_terminal() {
            return Ok(SmsOutcome::default());
        }
        let flow = self.flow_of(&record.state).await?;
        let step = engine::advance(&flow, Some(record.state), Input::Timeout, now_ms);
        let outgoing: Vec<OutgoingSms> = step
            .actions
            .iter()
            .filter_map(|a| match a {
                engine::Action::Reply(r) => Some(OutgoingSms {
                    purpose: crate::smpp::outbox::PURPOSE_REMINDER,
                    to: from.to_string(),
                    text: r.rendered.text(),
                }),
                _ => None,
            })
            .collect();
        // Stored with the timer step and named in its session, as a step's replies are.
        let stored = stored_replies(route, &outgoing, now_ms);
        self.commit_sms_step(from, &step, None, &stored).await?;
        let reply_ids = match route {
            Some(_) => stored.iter().map(|m| m.message_id.clone()).collect(),
            None => record.reply_ids,
        };
        let record = SessionRecord {
            state: step.state,
            progress: record.progress,
            reply: record.reply,
            reply_ids,
        };
        let ttl = Duration::from_secs(flow.flow.sms.session_timeout.0.max(1));
        let state_bytes = record.state.encode();
        let resume = resume_copy(from, &flow, &record.state, &state_bytes);
        match self
            .sessions
            .save_and_remember(&key, Some(saved.version), &record.encode(), ttl, resume)
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?
        {
            SaveOutcome::Saved { .. } => {
                if record.state.status.is_terminal() {
                    telemetry::session("timed_out");
                }
                self.schedule_sms_timer(from, &flow, &record.state).await?;
                Ok(SmsOutcome::saved(route.is_some(), stored, outgoing))
            }
            // The citizen answered meanwhile: that step set a new timer, and this reminder
            // answers nothing.
            SaveOutcome::Conflict { .. } => {
                self.withdraw_replies(&stored).await;
                Ok(SmsOutcome::default())
            }
        }
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
