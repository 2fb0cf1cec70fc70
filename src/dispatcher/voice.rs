//! Voice steps: a provider's webhook (already parsed by `channels::voice`) through admission
//! and the deadline, then the step pipeline ([`super::pipeline`]) with voice's own plan (keys,
//! silence, recordings and hang-ups as engine inputs) and outcome (the prompt the provider's
//! XML is rendered from). Knows no wire format and no Redis key.
//!
//! A call is one session, keyed by the provider's call id. Keys pressed are answers, silence
//! is `Input::Timeout` (the engine asks again, then says goodbye), a recording is
//! `Input::Recording`, and the provider's end-of-call callback is `Input::Hangup`: the answers
//! stay, the session is dropped and the next call may continue it.
//!
//! Missed calls: an inbound call to a `voice.missed_call` number is rejected unanswered (free
//! for the caller) and, unless a call from the same number came within the de-duplication
//! window or a daily cap is reached, a callback of the number's flow is queued with the
//! outbound dialer (`crate::outbound`). Outbound calls answered by the citizen start the flow
//! the dialer noted for their call id, and their final status goes back to the dialer (which
//! frees the concurrency slot and decides on a retry; a status heard by a node that did not
//! place the call is stored by the provider's call id, and the placing node picks it up).

use std::time::{Duration, Instant};

use tracing::{Instrument, info, warn};

use super::pipeline::{Advance, Kept, Loaded, Outcome, Plan, StepKind};
use super::{Gateway, StepError, now_ms, response_id};
use crate::channels::ussd::UssdReply;
use crate::channels::voice::{CallDirection, VoiceEvent, VoiceReply, VoiceRequest};
use crate::engine::render::Rendered;
use crate::engine::render::voice::{VoicePart, VoicePrompt};
use crate::engine::{self, Channel, Input, Start};
use crate::outbound::CALL_FLOW_NOTE;
use crate::session_store::SessionKey;
use crate::telemetry;

/// Whether a flow can be heard at all: it names a recording or allows text-to-speech. The
/// checker refuses a flow that does either for some prompts and languages but not all, so a
/// loaded flow that passes this is heard in full; one that does neither is not meant for voice
/// (reading it by a text-to-speech voice it never asked for is what the flow format rules out).
fn voice_ready(flow: &crate::flow::model::Flow) -> bool {
    use crate::flow::model::Node;
    !flow.voice.tts_languages.is_empty()
        || flow.nodes.values().any(|node| {
            node.prompt().is_some_and(|p| !p.audio.is_empty())
                || matches!(node, Node::Menu(m) if m.options.iter().any(|o| !o.audio.is_empty()))
        })
}

impl Gateway {
    /// One voice callback, always answered within the step deadline.
    pub async fn voice_step(&self, request: VoiceRequest, action_url: &str) -> VoiceReply {
        let started = Instant::now();
        let provider = request.provider.as_str();
        let span = tracing::info_span!(
            "voice_step",
            provider,
            call = %request.call_id,
            subscriber = %self.pseudonym(request.citizen()),
            flow = tracing::field::Empty,
            node = tracing::field::Empty,
        );
        if matches!(request.event, VoiceEvent::CallStarted)
            && request.direction == CallDirection::Inbound
            && let Some(flow) = self.missed_call_flow(&request.callee)
        {
            self.missed_call(&request.caller, &flow)
                .instrument(span.clone())
                .await;
            telemetry::step(Channel::Voice, provider, "missed_call", started.elapsed());
            return VoiceReply::Reject;
        }
        if request.direction == CallDirection::Outbound
            && let Some(dialer) = self.dialer.get()
        {
            match &request.event {
                VoiceEvent::Ended {
                    status,
                    duration_seconds,
                } => {
                    dialer
                        .call_final(&request.call_id, status, *duration_seconds, false)
                        .await;
                }
                _ if request.call_over => {
                    dialer.call_answered(&request.call_id);
                    dialer
                        .call_final(&request.call_id, "completed", None, true)
                        .await;
                }
                _ => dialer.call_answered(&request.call_id),
            }
        }
        if matches!(request.event, VoiceEvent::CallStarted)
            && !self.admission.admit(request.citizen())
        {
            telemetry::admission_refused();
            return VoiceReply::Reject;
        }
        let known_language = std::sync::Mutex::new(None::<String>);
        let deadline = Duration::from_millis(self.config.ussd.step_deadline_ms);
        let channel_key = format!("voice-{}", request.provider.as_str());
        let mut step = VoiceStep {
            request: &request,
            action_url,
            key: SessionKey::new(&channel_key, &request.call_id),
            channel_key,
            known_language: &known_language,
        };
        let outcome =
            tokio::time::timeout(deadline, self.run_step(&mut step).instrument(span.clone())).await;
        let language = known_language.lock().ok().and_then(|l| l.clone());
        match outcome {
            Ok(Ok(reply)) => {
                telemetry::step(Channel::Voice, provider, "ok", started.elapsed());
                reply
            }
            Ok(Err(e)) => {
                span.in_scope(|| warn!(error = %e, "voice step failed"));
                telemetry::error(e.kind());
                telemetry::step(Channel::Voice, provider, "error", started.elapsed());
                self.voice_apology(language.as_deref())
            }
            Err(_) => {
                span.in_scope(|| warn!("voice step missed its deadline"));
                telemetry::error("deadline");
                telemetry::step(Channel::Voice, provider, "deadline", started.elapsed());
                self.voice_apology(language.as_deref())
            }
        }
    }

    /// A spoken apology and a hang-up, in the caller's language when it is known.
    fn voice_apology(&self, language: Option<&str>) -> VoiceReply {
        let language = language.unwrap_or("en").to_string();
        let text = self
            .config
            .voice
            .unavailable_message
            .get(&language, "en")
            .to_string();
        VoiceReply::Hangup {
            goodbye: Some(VoicePrompt {
                parts: vec![VoicePart::Say {
                    text,
                    language: language.clone(),
                }],
                gather: None,
                record: None,
                language,
                end: true,
            }),
        }
    }

    /// The flow a call to `number` runs: the configured number, else the default flow.
    fn voice_flow_for(&self, number: &str) -> Option<std::sync::Arc<engine::CompiledFlow>> {
        let id = self.routes.flow_for_called(number)?;
        let flow = self.catalog().latest(id)?;
        if !voice_ready(&flow.flow) {
            warn!(flow = %flow.flow.id, "flow has no recordings and allows no text-to-speech: voice call refused");
            telemetry::error("flow_not_voice_ready");
            return None;
        }
        Some(flow)
    }

    /// The callback flow of a missed-call number, if `number` is one.
    fn missed_call_flow(&self, number: &str) -> Option<String> {
        self.routes.missed_call_flow(number).map(str::to_string)
    }

    /// Queues a callback for a missed call from `caller`, unless de-duplicated or capped;
    /// every refusal is logged and counted. Bounded by the step deadline.
    async fn missed_call(&self, caller: &str, flow: &str) {
        let deadline = Duration::from_millis(self.config.ussd.step_deadline_ms);
        let subscriber = self.pseudonym(caller);
        match tokio::time::timeout(deadline, self.missed_call_inner(caller, flow)).await {
            Ok(Ok(())) => info!(subscriber, flow, "missed call: callback queued"),
            Ok(Err(refusal)) => {
                info!(
                    subscriber,
                    flow,
                    reason = refusal.reason(),
                    "missed call: no callback"
                );
                telemetry::error(refusal.kind());
            }
            Err(_) => {
                warn!(
                    subscriber,
                    flow, "missed call: deadline passed, no callback"
                );
                telemetry::error("missed_call_deadline");
            }
        }
    }

    async fn missed_call_inner(&self, caller: &str, flow: &str) -> Result<(), MissedCallRefusal> {
        let settings = &self.config.voice.missed_call;
        let number = digits_of(caller);
        if number.is_empty() {
            return Err(MissedCallRefusal::NoCallerNumber);
        }
        if self.catalog().latest(flow).is_none() {
            return Err(MissedCallRefusal::UnknownFlow);
        }
        let Some(dialer) = self.dialer.get() else {
            return Err(MissedCallRefusal::NoDialer);
        };
        let window = Duration::from_secs(settings.dedup_window_seconds.max(1));
        if !self
            .sessions
            .claim("missed-call", &number, window)
            .await
            .map_err(|e| MissedCallRefusal::Store(e.to_string()))?
        {
            return Err(MissedCallRefusal::Duplicate);
        }
        let now = now_ms().max(0);
        let day = now / DAY_MS;
        // The day is in the key, so a counter may outlive its day without harm; the margin keeps
        // it for nodes whose clocks run a little behind, which still count against that day.
        let rest_of_day = Duration::from_millis(
            u64::try_from(DAY_MS - now % DAY_MS + DAY_COUNTER_MARGIN_MS).unwrap_or(1),
        );
        let per_number = self
            .sessions
            .count_for(
                "missed-call-day-number",
                &format!("{day}:{number}"),
                rest_of_day,
            )
            .await
            .map_err(|e| MissedCallRefusal::Store(e.to_string()))?;
        if per_number > settings.daily_cap_per_number {
            return Err(MissedCallRefusal::NumberCap);
        }
        let per_flow = self
            .sessions
            .count_for(
                "missed-call-day-flow",
                &format!("{day}:{flow}"),
                rest_of_day,
            )
            .await
            .map_err(|e| MissedCallRefusal::Store(e.to_string()))?;
        if per_flow > settings.daily_cap_per_flow {
            return Err(MissedCallRefusal::FlowCap);
        }
        dialer
            .enqueue(caller, flow)
            .await
            .map_err(|e| MissedCallRefusal::Queue(e.to_string()))
    }

    /// The flow an outbound call runs: the one the dialer noted for its call id.
    async fn outbound_flow(&self, call_id: &str) -> Option<std::sync::Arc<engine::CompiledFlow>> {
        let id = match self.dialer.get().and_then(|d| d.flow_of_call(call_id)) {
            Some(id) => id,
            None => match self.sessions.get_note(CALL_FLOW_NOTE, call_id).await {
                Ok(Some(bytes)) => String::from_utf8(bytes).ok()?,
                Ok(None) => return None,
                Err(e) => {
                    warn!(error = %e, "outbound call flow not readable");
                    telemetry::error("session_store");
                    return None;
                }
            },
        };
        self.catalog().latest(&id)
    }
}

/// One voice callback in the step pipeline.
struct VoiceStep<'r> {
    request: &'r VoiceRequest,
    action_url: &'r str,
    key: SessionKey,
    /// `voice-<provider>`: the session store's channel, and the response ids' prefix.
    channel_key: String,
    known_language: &'r std::sync::Mutex<Option<String>>,
}

impl VoiceStep<'_> {
    /// The engine's inputs for a callback of a call whose session is stored.
    fn inputs(&self, flow: &engine::CompiledFlow) -> Vec<Input> {
        let request = self.request;
        let mut inputs = vec![match &request.event {
            // A repeated first callback: say the current prompt again.
            VoiceEvent::CallStarted => Input::Answer(flow.flow.voice.repeat_key.clone()),
            VoiceEvent::Digits(keys) => Input::Answer(keys.clone()),
            VoiceEvent::NoInput => Input::Timeout,
            VoiceEvent::Recording {
                url,
                duration_seconds,
            } => Input::Recording {
                url: url.clone(),
                duration_seconds: *duration_seconds,
            },
            VoiceEvent::Ended { .. } => Input::Hangup,
        }];
        if request.call_over && !matches!(request.event, VoiceEvent::Ended { .. }) {
            inputs.push(Input::Hangup);
        }
        inputs
    }

    /// A new call: its flow (noted by the dialer for an outbound call, else the number's),
    /// started or offered to continue.
    async fn start(&self, gateway: &Gateway) -> Plan<VoiceReply> {
        let request = self.request;
        let (noted, called) = match request.direction {
            CallDirection::Outbound => (
                gateway.outbound_flow(&request.call_id).await,
                &request.caller,
            ),
            CallDirection::Inbound => (None, &request.callee),
        };
        let Some(flow) = noted.or_else(|| gateway.voice_flow_for(called)) else {
            telemetry::error("unknown_voice_number");
            return Plan::Done(VoiceReply::Reject);
        };
        let (flow, prior) = gateway.resumable(request.citizen(), flow).await;
        let now = now_ms();
        let contact = gateway
            .contact_for_start(&flow, request.citizen(), Default::default())
            .await;
        let start = Input::Start(Start {
            session_id: response_id(now, &format!("{}:{}", self.channel_key, request.call_id)),
            channel: Channel::Voice,
            contact,
            language: None,
        });
        Plan::Advance(Advance {
            flow,
            prior,
            inputs: vec![start],
            now,
            expected: None,
        })
    }
}

impl StepKind for VoiceStep<'_> {
    type Reply = VoiceReply;

    fn key(&self) -> &SessionKey {
        &self.key
    }

    fn subscriber(&self) -> &str {
        self.request.citizen()
    }

    fn provider(&self) -> &str {
        self.request.provider.as_str()
    }

    async fn plan(
        &mut self,
        gateway: &Gateway,
        loaded: Loaded,
    ) -> Result<Plan<VoiceReply>, StepError> {
        if let (Some(record), Ok(mut known)) = (&loaded.record, self.known_language.lock()) {
            *known = Some(record.state.language.clone());
        }
        match (&self.request.event, loaded.record) {
            (VoiceEvent::Ended { .. }, None) => {
                Ok(Plan::Done(VoiceReply::Hangup { goodbye: None }))
            }
            (VoiceEvent::CallStarted, None) => Ok(self.start(gateway).await),
            // Keys, silence or a recording for a call we hold no session for (an unknown or
            // forged call id, or one whose session expired): start nothing, cost nothing.
            (_, None) => {
                telemetry::error("unknown_call");
                Ok(Plan::Done(VoiceReply::Hangup { goodbye: None }))
            }
            (_, Some(record)) => {
                let flow = gateway.flow_of(&record.state).await?;
                let inputs = self.inputs(&flow);
                Ok(Plan::Advance(Advance {
                    flow,
                    prior: Some(record.state),
                    inputs,
                    now: now_ms(),
                    expected: loaded.version,
                }))
            }
        }
    }

    fn outcome(
        &mut self,
        _gateway: &Gateway,
        advance: &Advance,
        steps: &[engine::Step],
    ) -> Outcome<VoiceReply> {
        let reply = steps.iter().rev().find_map(|s| s.reply().cloned());
        let over = steps.last().is_none_or(|s| s.state.status.is_terminal());
        let voice_reply = match reply.map(|r| (r.rendered, r.end)) {
            Some((Rendered::Voice(prompt), true)) => VoiceReply::Hangup {
                goodbye: Some(prompt),
            },
            Some((Rendered::Voice(prompt), false)) if !over => VoiceReply::Prompt {
                prompt,
                action_url: self.action_url.to_string(),
            },
            _ => VoiceReply::Hangup { goodbye: None },
        };
        let transcript = match &voice_reply {
            VoiceReply::Prompt { prompt, .. } => prompt.transcript(),
            VoiceReply::Hangup {
                goodbye: Some(prompt),
            } => prompt.transcript(),
            _ => String::new(),
        };
        let end = !matches!(voice_reply, VoiceReply::Prompt { .. });
        Outcome {
            kept: Kept {
                progress: String::new(),
                reply: UssdReply {
                    text: transcript,
                    end,
                },
                reply_ids: Vec::new(),
            },
            writes: Vec::new(),
            reply: voice_reply,
            ttl: Duration::from_secs(advance.flow.flow.session_timeout.0.max(1)),
        }
    }
}

/// Milliseconds in a day: daily caps reset at midnight UTC.
const DAY_MS: i64 = 86_400_000;
/// How long a daily counter is kept past the end of its day (clock skew between nodes).
const DAY_COUNTER_MARGIN_MS: i64 = 3_600_000;

/// A number's digits only, so `+254 711...` and `254711...` compare equal.
fn digits_of(number: &str) -> String {
    number.chars().filter(char::is_ascii_digit).collect()
}

/// Why a missed call got no callback.
#[derive(Debug)]
enum MissedCallRefusal {
    /// The provider sent no caller number.
    NoCallerNumber,
    /// The configured flow is not loaded.
    UnknownFlow,
    /// `voice.outbound` is not configured or the dialer was not started.
    NoDialer,
    /// Another missed call from the number came within the window.
    Duplicate,
    /// The number reached its daily cap.
    NumberCap,
    /// The flow reached its daily cap.
    FlowCap,
    /// The session store failed.
    Store(String),
    /// The dialer refused the call (queue full or stopped).
    Queue(String),
}

impl MissedCallRefusal {
    /// The error counter kind.
    fn kind(&self) -> &'static str {
        match self {
            MissedCallRefusal::NoCallerNumber => "missed_call_no_caller",
            MissedCallRefusal::UnknownFlow => "missed_call_unknown_flow",
            MissedCallRefusal::NoDialer => "missed_call_no_dialer",
            MissedCallRefusal::Duplicate => "missed_call_duplicate",
            MissedCallRefusal::NumberCap => "missed_call_number_cap",
            MissedCallRefusal::FlowCap => "missed_call_flow_cap",
            MissedCallRefusal::Store(_) => "missed_call_store",
            MissedCallRefusal::Queue(_) => "missed_call_queue",
        }
    }

    /// A log line's reason.
    fn reason(&self) -> String {
        match self {
            MissedCallRefusal::Store(e) => format!("session store: {e}"),
            MissedCallRefusal::Queue(e) => format!("dialer: {e}"),
            other => other
                .kind()
                .trim_start_matches("missed_call_")
                .replace('_', " "),
        }
    }
}
