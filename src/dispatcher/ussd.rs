//! USSD steps (over HTTP, and over SMPP once `ussd_smpp` made the request): admission and
//! the deadline, then the step pipeline ([`super::pipeline`]) with USSD's own stages: the load
//! takes this node's copy of the session when the request directly follows it, and reads a
//! dial's resume copy in the same round trip; the plan resolves the provider's input (the
//! channel module knows cumulative texts and sequence numbers); a saved step leaves this
//! node's copy for the next request.
//!
//! Also the end of a USSD session (the aggregator's notification, or a request that ends it):
//! the session is dropped through the same pipeline, which keeps the resume copy.
//! Knows no wire format and no Redis key.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{Instrument, info_span, warn};

use super::pipeline::{Advance, Kept, Loaded, Outcome, Plan, Saved, StepKind};
use super::{Gateway, Prefetched, SessionRecord, StepError, now_ms, response_id};
use crate::channels::ussd::{Resolved, UssdReply, UssdRequest};
use crate::engine::{self, Channel, CompiledFlow, Input, Start};
use crate::session_store::SessionKey;
use crate::telemetry;

/// What an ended session answers: nothing, and the end.
fn ended() -> UssdReply {
    UssdReply {
        text: String::new(),
        end: true,
    }
}

impl Gateway {
    /// One USSD step, always answered within the deadline.
    pub async fn ussd_step(&self, request: UssdRequest) -> UssdReply {
        let started = Instant::now();
        let provider = request.provider.as_str();
        let span = info_span!(
            "ussd_step",
            provider,
            session = %request.session_id,
            subscriber = %self.pseudonym(&request.subscriber),
            flow = tracing::field::Empty,
            node = tracing::field::Empty,
        );
        if !self.admission.admit(&request.subscriber) {
            telemetry::admission_refused();
            return UssdReply {
                text: self.message(&self.config.ussd.too_fast_message, None),
                end: true,
            };
        }
        let deadline = Duration::from_millis(self.config.ussd.step_deadline_ms);
        // What the step learnt of the respondent's language before it failed or ran out of time.
        let known_language = Mutex::new(None::<String>);
        let mut step = UssdStep::new(self, &request, &known_language);
        let outcome =
            tokio::time::timeout(deadline, self.run_step(&mut step).instrument(span.clone())).await;
        let language = known_language.lock().ok().and_then(|l| l.clone());
        let failed = match outcome {
            Ok(Ok(reply)) => {
                telemetry::step(Channel::Ussd, provider, "ok", started.elapsed());
                return reply;
            }
            Ok(Err(e)) => {
                span.in_scope(|| warn!(error = %e, "step failed"));
                telemetry::error(e.kind());
                "error"
            }
            Err(_) => {
                span.in_scope(|| {
                    warn!(
                        deadline_ms = deadline.as_millis() as u64,
                        "step missed its deadline"
                    )
                });
                telemetry::error("deadline");
                "deadline"
            }
        };
        telemetry::step(Channel::Ussd, provider, failed, started.elapsed());
        UssdReply {
            text: self.message(&self.config.ussd.unavailable_message, language.as_deref()),
            end: true,
        }
    }

    /// Handles an Africa's Talking end-of-session notification: a session still waiting
    /// becomes dropped (its resume copy kept), through the step pipeline.
    pub async fn ussd_ended(
        &self,
        provider: &str,
        session_id: &str,
        subscriber: &str,
        status: &str,
    ) -> Result<(), StepError> {
        let key = SessionKey::new(provider, session_id);
        self.session_cache.forget(&key);
        let mut step = EndStep {
            key,
            subscriber,
            provider,
            dropped: false,
            kept: None,
        };
        self.run_step(&mut step).await?;
        if step.dropped {
            telemetry::session("dropped");
        }
        tracing::info!(provider, status, subscriber = %self.pseudonym(subscriber), "session ended");
        Ok(())
    }

    /// The session as the store holds it, with its version; for a dial (`dial_flow`), the
    /// subscriber's resume copy of that flow too, in the same round trip.
    async fn read_with_resumable(
        &self,
        key: &SessionKey,
        subscriber: &str,
        dial_flow: &CompiledFlow,
    ) -> Result<(Loaded, Prefetched), StepError> {
        let (stored, copy) = self
            .sessions
            .load_with_resumable(key, subscriber, &dial_flow.flow.id)
            .await
            .map_err(|e| StepError::Sessions(e.to_string()))?;
        let prefetched = Prefetched {
            flow_id: dial_flow.flow.id.clone(),
            copy,
        };
        let loaded = Loaded::from_store(stored);
        Ok((loaded, prefetched))
    }

    /// The start of a session of `flow` for `request`: the network it came over and, when
    /// the flow reads contact data, the citizen's contact.
    async fn start_input(&self, flow: &CompiledFlow, request: &UssdRequest, now: i64) -> Input {
        let mut known = std::collections::BTreeMap::new();
        if let Some(network) = &request.network {
            known.insert("network".to_string(), network.clone());
        }
        let contact = self
            .contact_for_start(flow, &request.subscriber, known)
            .await;
        Input::Start(Start {
            session_id: response_id(
                now,
                &format!("{}:{}", request.provider.as_str(), request.session_id),
            ),
            channel: Channel::Ussd,
            contact,
            language: None,
        })
    }
}

/// One USSD request in the pipeline.
struct UssdStep<'r> {
    request: &'r UssdRequest,
    key: SessionKey,
    /// The flow a dial starts, known before the load (so its resume copy is read with it).
    dial_flow: Option<Arc<CompiledFlow>>,
    /// This node's copy of the session, taken only when the request directly follows it.
    copy: Option<(u64, SessionRecord)>,
    /// The resume copy read with a dial's load.
    prefetched: Option<Prefetched>,
    known_language: &'r Mutex<Option<String>>,
    /// What the session will have consumed after this step (the provider's progress).
    progress: String,
    /// The step offers to continue a dropped session (counted once the offer is saved).
    resume_offer: bool,
    /// The step ends the session (no reply, no copy kept): the record's part beside the
    /// state, saved unchanged.
    ending: Option<Kept>,
    /// The saved session goes on: this node keeps a copy for the next request.
    keep_copy: bool,
}

impl<'r> UssdStep<'r> {
    fn new(
        gateway: &Gateway,
        request: &'r UssdRequest,
        known_language: &'r Mutex<Option<String>>,
    ) -> UssdStep<'r> {
        let key = SessionKey::new(request.provider.as_str(), &request.session_id);
        let dial_flow = request
            .surely_dials()
            .and_then(|sub_code| gateway.flow_for(&request.service_code, sub_code.as_deref()));
        // A save that finds the copy was behind drops it and the step is done from the store.
        let copy = match dial_flow {
            Some(_) => None,
            None => gateway
                .session_cache
                .take(&key)
                .and_then(|(version, bytes)| Some((version, SessionRecord::decode(&bytes)?)))
                .filter(|(_, record)| request.directly_follows(&record.progress)),
        };
        UssdStep {
            request,
            key,
            dial_flow,
            copy,
            prefetched: None,
            known_language,
            progress: String::new(),
            resume_offer: false,
            ending: None,
            keep_copy: false,
        }
    }

    /// A new session of `flow` (or the subscriber's dropped one, offered to continue).
    async fn start(
        &mut self,
        gateway: &Gateway,
        flow: Arc<CompiledFlow>,
        progress: String,
    ) -> Plan<UssdReply> {
        let (flow, prior) = gateway
            .resumable_with(&self.request.subscriber, flow, self.prefetched.take())
            .await;
        let now = now_ms();
        self.resume_offer = prior.is_some();
        self.progress = progress;
        let start = gateway.start_input(&flow, self.request, now).await;
        Plan::Advance(Advance {
            flow,
            prior,
            inputs: vec![start],
            now,
            expected: None,
        })
    }

    fn unknown_code(&self, gateway: &Gateway) -> Plan<UssdReply> {
        telemetry::error("unknown_service_code");
        Plan::Done(UssdReply {
            text: gateway.message(&gateway.config.ussd.unknown_service_message, None),
            end: true,
        })
    }
}

impl StepKind for UssdStep<'_> {
    type Reply = UssdReply;

    fn key(&self) -> &SessionKey {
        &self.key
    }

    fn subscriber(&self) -> &str {
        &self.request.subscriber
    }

    fn provider(&self) -> &str {
        self.request.provider.as_str()
    }

    async fn load(&mut self, gateway: &Gateway) -> Result<Loaded, StepError> {
        if let Some((version, record)) = self.copy.take() {
            telemetry::session_cache("hit");
            return Ok(Loaded {
                version: Some(version),
                record: Some(record),
                from_copy: true,
            });
        }
        match &self.dial_flow {
            Some(flow) => {
                let (loaded, prefetched) = gateway
                    .read_with_resumable(&self.key, &self.request.subscriber, flow)
                    .await?;
                self.prefetched = Some(prefetched);
                Ok(loaded)
            }
            None => gateway.load_record(&self.key).await,
        }
    }

    async fn plan(
        &mut self,
        gateway: &Gateway,
        loaded: Loaded,
    ) -> Result<Plan<UssdReply>, StepError> {
        let Loaded {
            version, record, ..
        } = loaded;
        if let (Some(record), Ok(mut known)) = (&record, self.known_language.lock()) {
            *known = Some(record.state.language.clone());
        }
        let request = self.request;
        self.ending = None;
        self.resume_offer = false;
        match (
            request.resolve(record.as_ref().map(|r| r.progress.as_str())),
            record,
        ) {
            (Resolved::Duplicate, Some(record)) => Ok(Plan::Done(record.reply)),
            (Resolved::End, Some(record)) => match hang_up(gateway, version, record).await? {
                None => Ok(Plan::Done(ended())),
                Some((advance, kept)) => {
                    self.ending = Some(kept);
                    Ok(Plan::Advance(advance))
                }
            },
            (Resolved::End, None) => Ok(Plan::Done(ended())),
            (Resolved::Answer { text, progress }, Some(record)) => {
                let flow = gateway.flow_of(&record.state).await?;
                self.progress = progress;
                Ok(Plan::Advance(Advance {
                    flow,
                    prior: Some(record.state),
                    inputs: vec![Input::Answer(text)],
                    now: now_ms(),
                    expected: version,
                }))
            }
            (Resolved::Start { sub_code, progress }, _) => {
                match gateway.flow_for(&request.service_code, sub_code.as_deref()) {
                    Some(flow) => Ok(self.start(gateway, flow, progress).await),
                    None => Ok(self.unknown_code(gateway)),
                }
            }
            // An answer or duplicate for a session we do not hold (expired, or lost with an
            // in-memory store): start afresh rather than fail the citizen.
            (Resolved::Answer { .. } | Resolved::Duplicate, None) => {
                match gateway.flow_for(&request.service_code, None) {
                    Some(flow) => {
                        let progress = request.progress_of_restart();
                        Ok(self.start(gateway, flow, progress).await)
                    }
                    None => Ok(self.unknown_code(gateway)),
                }
            }
        }
    }

    fn outcome(
        &mut self,
        _gateway: &Gateway,
        advance: &Advance,
        steps: &[engine::Step],
    ) -> Outcome<UssdReply> {
        let ttl = Duration::from_secs(advance.flow.flow.session_timeout.0.max(1));
        self.keep_copy = false;
        if let Some(kept) = self.ending.take() {
            return Outcome {
                kept,
                writes: Vec::new(),
                reply: ended(),
                ttl,
            };
        }
        let reply = match steps.last().and_then(|s| s.reply()) {
            Some(r) => UssdReply {
                text: r.rendered.text(),
                end: r.end,
            },
            None => ended(),
        };
        self.keep_copy = !reply.end;
        Outcome {
            kept: Kept {
                progress: std::mem::take(&mut self.progress),
                reply: reply.clone(),
                reply_ids: Vec::new(),
            },
            writes: Vec::new(),
            reply,
            ttl,
        }
    }

    async fn saved(&mut self, gateway: &Gateway, saved: Saved<'_>) -> Result<(), StepError> {
        if self.resume_offer && saved.record.state.awaiting == engine::Awaiting::ResumeChoice {
            telemetry::session("resume_offered");
        }
        if self.keep_copy {
            gateway.session_cache.put(
                self.key.clone(),
                saved.version,
                saved.encoded.into_boxed_slice(),
                saved.ttl,
            );
        }
        Ok(())
    }
}

/// A session still waiting, dropped: the engine's hang-up on its own flow version, and what
/// the record keeps beside the state (unchanged). `None` when the session is already over.
async fn hang_up(
    gateway: &Gateway,
    version: Option<u64>,
    record: SessionRecord,
) -> Result<Option<(Advance, Kept)>, StepError> {
    if record.state.status.is_terminal() {
        return Ok(None);
    }
    let flow = gateway.flow_of(&record.state).await?;
    let kept = Kept {
        progress: record.progress,
        reply: record.reply,
        reply_ids: record.reply_ids,
    };
    let advance = Advance {
        flow,
        prior: Some(record.state),
        inputs: vec![Input::Hangup],
        now: now_ms(),
        expected: version,
    };
    Ok(Some((advance, kept)))
}

/// The aggregator's notice that a session ended, in the pipeline.
struct EndStep<'a> {
    key: SessionKey,
    subscriber: &'a str,
    provider: &'a str,
    /// The session was still waiting, and is now dropped.
    dropped: bool,
    /// The record's part beside the state, saved unchanged.
    kept: Option<Kept>,
}

impl StepKind for EndStep<'_> {
    type Reply = ();

    fn key(&self) -> &SessionKey {
        &self.key
    }

    fn subscriber(&self) -> &str {
        self.subscriber
    }

    fn provider(&self) -> &str {
        self.provider
    }

    async fn plan(&mut self, gateway: &Gateway, loaded: Loaded) -> Result<Plan<()>, StepError> {
        let Some(record) = loaded.record else {
            return Ok(Plan::Done(()));
        };
        self.dropped = !record.state.status.is_terminal();
        Ok(match hang_up(gateway, loaded.version, record).await? {
            None => Plan::Done(()),
            Some((advance, kept)) => {
                self.kept = Some(kept);
                Plan::Advance(advance)
            }
        })
    }

    fn outcome(
        &mut self,
        _gateway: &Gateway,
        advance: &Advance,
        _steps: &[engine::Step],
    ) -> Outcome<()> {
        Outcome {
            kept: self.kept.take().unwrap_or_else(|| Kept {
                progress: String::new(),
                reply: ended(),
                reply_ids: Vec::new(),
            }),
            writes: Vec::new(),
            reply: (),
            ttl: Duration::from_secs(advance.flow.flow.session_timeout.0.max(1)),
        }
    }
}
