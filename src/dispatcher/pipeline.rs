//! The one step pipeline: every step of every channel (USSD over HTTP and over SMPP, SMS,
//! SMS timers, voice, the end of a USSD session) goes through the same named stages, so a
//! guarantee proved for one channel holds for all.
//!
//! ```text
//! load      the session and its version (this node's copy, or the store)
//! plan      the channel resolves its input against it: a step to run, or an answer
//!           without one (a duplicate delivery, an unknown code, a session already over)
//! advance   engine::advance, pure, once per input
//! commit    the step's writes (answers, statuses) with the channel's own (the replies the
//!           step sends, the inbound message's "handled" marker): one durable commit
//! save      the session, version-checked, with the subscriber's resume copy
//! saved     the channel's follow-up (this node's copy, SMS timers) and its reply
//! conflict  another writer saved first: withdraw what the losing step started and stored,
//!           then redo from the winner's session
//! ```
//!
//! Admission and the deadline come before it (each channel's entry point) and rendering after
//! it (the channel modules). It never knows a wire format (a [`StepKind`] gets requests
//! already parsed) nor a Redis key (the session store owns them).

use std::sync::Arc;
use std::time::Duration;

use super::{Gateway, SessionRecord, StepError, keeps_copy, resume_copy, started_response};
use crate::engine::{self, CompiledFlow, Input, SessionState};
use crate::result_store::Write;
use crate::session_store::{SaveOutcome, SessionKey};
use crate::telemetry;

/// The session as the load stage found it.
pub(super) struct Loaded {
    /// The stored version (`None`: no session is stored).
    pub version: Option<u64>,
    /// The stored record (`None`: none stored, or one that could not be decoded).
    pub record: Option<SessionRecord>,
    /// Taken from this node's copy rather than read from the store: a save that then loses
    /// costs no try (the redo is the first read of the store).
    pub from_copy: bool,
}

impl Loaded {
    /// A session as the store returned it; a record that cannot be decoded counts as none
    /// (its version is kept, so a new session replaces it).
    pub fn from_store(stored: Option<crate::session_store::Stored>) -> Loaded {
        let (version, record) = match stored {
            Some(s) => match SessionRecord::decode(&s.data) {
                Some(record) => (Some(s.version), Some(record)),
                None => {
                    telemetry::error("corrupt_session");
                    (Some(s.version), None)
                }
            },
            None => (None, None),
        };
        Loaded {
            version,
            record,
            from_copy: false,
        }
    }
}

/// What a channel makes of the loaded session. One lives on the stack per step, moved once:
/// boxing the larger variant would cost an allocation per step for nothing.
#[allow(clippy::large_enum_variant)]
pub(super) enum Plan<R> {
    /// Answered without a step.
    Done(R),
    /// A step to run.
    Advance(Advance),
}

/// A step to run: the engine's inputs, in order, on one flow version.
pub(super) struct Advance {
    pub flow: Arc<CompiledFlow>,
    /// The session state the step continues (`None`: a new session).
    pub prior: Option<SessionState>,
    /// Usually one; a voice callback that both answers and ends a call has two.
    pub inputs: Vec<Input>,
    /// The step's one clock reading.
    pub now: i64,
    /// The version the save expects: the loaded one, or `None` for a session not stored yet.
    pub expected: Option<u64>,
}

/// What a channel's step leaves once the engine ran.
pub(super) struct Outcome<R> {
    /// What the saved session keeps beside the engine's state (which the pipeline adds).
    pub kept: Kept,
    /// The channel's writes beyond the engine's: committed with them, in one commit.
    pub writes: Vec<Write>,
    /// What the channel answers once the session is saved.
    pub reply: R,
    /// How long the saved session lives without a next step.
    pub ttl: Duration,
}

/// The channel's part of a saved session ([`SessionRecord`] without the engine's state).
pub(super) struct Kept {
    pub progress: String,
    pub reply: crate::channels::ussd::UssdReply,
    pub reply_ids: Vec<String>,
}

/// What to do when the save lost to another writer.
pub(super) enum AfterLoss<R> {
    /// Load the winner's session and run the step again.
    Redo,
    /// Answer this (the step is moot once another one won, as a reminder is).
    Answer(R),
}

/// One channel's part in the pipeline; the stages it does not override behave the same
/// everywhere.
pub(super) trait StepKind {
    type Reply;

    /// The session this step belongs to.
    fn key(&self) -> &SessionKey;

    /// Whose step it is and through which provider (stored with a response it starts).
    fn subscriber(&self) -> &str;
    fn provider(&self) -> &str;

    /// How many times the session is read from the store before the step gives up with
    /// [`StepError::Contention`].
    fn reads(&self) -> usize {
        2
    }

    /// Load stage: the stored session.
    async fn load(&mut self, gateway: &Gateway) -> Result<Loaded, StepError> {
        gateway.load_record(self.key()).await
    }

    /// Plan stage: the input resolved against the loaded session.
    async fn plan(
        &mut self,
        gateway: &Gateway,
        loaded: Loaded,
    ) -> Result<Plan<Self::Reply>, StepError>;

    /// The channel's part of the session to save, its own writes and its reply, from the
    /// steps the engine took (on `advance`'s flow, at its `now`).
    fn outcome(
        &mut self,
        gateway: &Gateway,
        advance: &Advance,
        steps: &[engine::Step],
    ) -> Outcome<Self::Reply>;

    /// After a save: follow-ups that need the saved session (the default: none).
    async fn saved(&mut self, _gateway: &Gateway, _saved: Saved<'_>) -> Result<(), StepError> {
        Ok(())
    }

    /// How long a step whose save failed (not lost: the store did not answer) keeps
    /// checking whether it landed and trying it again (the default: not at all; the step
    /// fails and its channel answers politely).
    fn save_patience(&self) -> Duration {
        Duration::ZERO
    }

    /// After a save that failed for good: the step's writes (`writes`, the channel's own
    /// among them) are committed but its session is not saved (the default: nothing more).
    async fn unsaved(&mut self, _gateway: &Gateway, _writes: &[Write]) {}

    /// After a lost save: undo what only this step's own `writes` stored (the default:
    /// nothing), then redo or answer (`reply` is what the lost step would have answered).
    async fn lost(
        &mut self,
        _gateway: &Gateway,
        _writes: Vec<Write>,
        _reply: Self::Reply,
    ) -> AfterLoss<Self::Reply> {
        AfterLoss::Redo
    }
}

/// What the save stage writes: the record, encoded once, where and for how long.
struct SaveTarget<'a> {
    key: &'a SessionKey,
    subscriber: &'a str,
    advance: &'a Advance,
    record: &'a SessionRecord,
    encoded: Vec<u8>,
    ttl: Duration,
}

/// A session just saved, for [`StepKind::saved`].
pub(super) struct Saved<'a> {
    pub version: u64,
    /// The record as stored.
    pub encoded: Vec<u8>,
    pub record: &'a SessionRecord,
    pub flow: &'a CompiledFlow,
    pub ttl: Duration,
}

impl Gateway {
    /// Runs one step of `kind` through the pipeline's stages (see the module's `//!`).
    pub(super) async fn run_step<K: StepKind>(&self, kind: &mut K) -> Result<K::Reply, StepError> {
        let mut reads_left = kind.reads();
        // The response a step started before its save lost, until the winner is read.
        let mut lost_start: Option<String> = None;
        while reads_left > 0 {
            let loaded = kind.load(self).await?;
            let from_copy = loaded.from_copy;
            if !from_copy {
                reads_left -= 1;
                self.withdraw_lost_start(lost_start.take(), loaded.record.as_ref())
                    .await;
            }
            let mut advance = match kind.plan(self, loaded).await? {
                Plan::Done(reply) => return Ok(reply),
                Plan::Advance(advance) => advance,
            };
            tracing::Span::current().record("flow", advance.flow.flow.id.as_str());
            let mut steps = advance_all(&mut advance);
            let outcome = kind.outcome(self, &advance, &steps);
            self.commit_step(kind.subscriber(), kind.provider(), &steps, &outcome.writes)
                .await?;
            let started = steps.iter().find_map(started_response);
            let Some(last) = steps.pop() else {
                return Ok(outcome.reply);
            };
            tracing::Span::current().record("node", last.state.node.as_str());
            let record = SessionRecord {
                state: last.state,
                progress: outcome.kept.progress,
                reply: outcome.kept.reply,
                reply_ids: outcome.kept.reply_ids,
            };
            let target = SaveTarget {
                key: kind.key(),
                subscriber: kind.subscriber(),
                advance: &advance,
                record: &record,
                encoded: record.encode(),
                ttl: outcome.ttl,
            };
            let saved = match self.save_step(&target).await {
                Ok(saved) => saved,
                Err(error) => match self.confirm_save(&target, kind.save_patience()).await {
                    Some(saved) => saved,
                    None => {
                        kind.unsaved(self, &outcome.writes).await;
                        return Err(error);
                    }
                },
            };
            let encoded = target.encoded;
            match (saved, encoded) {
                (SaveOutcome::Saved { version }, encoded) => {
                    let saved = Saved {
                        version,
                        encoded,
                        record: &record,
                        flow: &advance.flow,
                        ttl: outcome.ttl,
                    };
                    kind.saved(self, saved).await?;
                    return Ok(outcome.reply);
                }
                (SaveOutcome::Conflict { .. }, _) => {
                    if from_copy {
                        // Another node moved the session on: this node's copy was stale.
                        telemetry::session_cache("stale");
                    } else {
                        telemetry::error("version_conflict");
                    }
                    lost_start = started;
                    match kind.lost(self, outcome.writes, outcome.reply).await {
                        AfterLoss::Redo => continue,
                        AfterLoss::Answer(reply) => {
                            self.withdraw_against_store(kind.key(), lost_start).await;
                            return Ok(reply);
                        }
                    }
                }
            }
        }
        self.withdraw_against_store(kind.key(), lost_start).await;
        Err(StepError::Contention)
    }

    /// The stored session and its version (see [`Loaded::from_store`]).
    pub(super) async fn load_record(&self, key: &SessionKey) -> Result<Loaded, StepError> {
        let stored = self
            .sessions
            .load(key)
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?;
        Ok(Loaded::from_store(stored))
    }

    /// Commit stage: the engine's writes of every step, then the channel's, in one commit.
    async fn commit_step(
        &self,
        subscriber: &str,
        provider: &str,
        steps: &[engine::Step],
        own: &[Write],
    ) -> Result<(), StepError> {
        let mut writes = Vec::new();
        for step in steps {
            writes.extend(self.writes_for_subscriber(subscriber, provider, step));
        }
        writes.extend(own.iter().cloned());
        if writes.is_empty() {
            return Ok(());
        }
        self.results
            .commit(writes)
            .await
            .map_err(|e| StepError::Results(e.to_string()))
    }

    /// Save stage: the record, version-checked, with the subscriber's resume copy.
    async fn save_step(&self, target: &SaveTarget<'_>) -> Result<SaveOutcome, StepError> {
        let state = &target.record.state;
        // Encoded only when a copy is kept (the bytes are unused otherwise).
        let state_bytes = if keeps_copy(state) {
            state.encode()
        } else {
            Vec::new()
        };
        let resume = resume_copy(target.subscriber, &target.advance.flow, state, &state_bytes);
        self.sessions
            .save_and_remember(
                target.key,
                target.advance.expected,
                &target.encoded,
                target.ttl,
                resume,
            )
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))
    }

    /// After a save that failed (the session store timed out or dropped the connection),
    /// within `patience`: whether it landed all the same (the store holds this very record),
    /// else the save again. `None` once the patience is spent (the step's writes are then
    /// committed but its session is not saved: see [`StepKind::unsaved`]).
    ///
    /// A save that timed out may still be applied later (a paused Redis runs it when it
    /// resumes), so a conflict here is first checked against the record: finding its own
    /// record is a save, not another writer's win.
    async fn confirm_save(
        &self,
        target: &SaveTarget<'_>,
        patience: Duration,
    ) -> Option<SaveOutcome> {
        let give_up = std::time::Instant::now() + patience;
        let mut pause = Duration::from_millis(20);
        while std::time::Instant::now() + pause < give_up {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
            let Ok(stored) = self.sessions.load(target.key).await else {
                continue;
            };
            match stored {
                Some(s) if s.data == target.encoded => {
                    telemetry::session("save_confirmed");
                    return Some(SaveOutcome::Saved { version: s.version });
                }
                Some(s) if Some(s.version) != target.advance.expected => {
                    return Some(SaveOutcome::Conflict {
                        current: Some(s.version),
                    });
                }
                None if target.advance.expected.is_some() => {
                    return Some(SaveOutcome::Conflict { current: None });
                }
                _ => {}
            }
            // Still as the step found it: the save did not land; try it again.
            if let Ok(SaveOutcome::Saved { version }) = self.save_step(target).await {
                return Some(SaveOutcome::Saved { version });
            }
        }
        telemetry::error("save_unconfirmed");
        None
    }

    /// Withdraws the response a losing step started, once the session that won is read (a
    /// failed read leaves the row as an unfinished response without a session).
    async fn withdraw_against_store(&self, key: &SessionKey, lost_start: Option<String>) {
        if lost_start.is_none() {
            return;
        }
        if let Ok(loaded) = self.load_record(key).await {
            self.withdraw_lost_start(lost_start, loaded.record.as_ref())
                .await;
        }
    }
}

/// Advance stage: the engine, once per input, each from the state the last one left (the
/// prior state and the inputs are taken from `advance`, not copied).
fn advance_all(advance: &mut Advance) -> Vec<engine::Step> {
    let mut state = advance.prior.take();
    let inputs = std::mem::take(&mut advance.inputs);
    let mut steps = Vec::with_capacity(inputs.len());
    let count = inputs.len();
    for (i, input) in inputs.into_iter().enumerate() {
        let step = engine::advance(&advance.flow, state.take(), input, advance.now);
        if i + 1 < count {
            state = Some(step.state.clone());
        }
        steps.push(step);
    }
    steps
}
