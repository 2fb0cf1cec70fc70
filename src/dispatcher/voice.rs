//! Voice steps: a provider's webhook (already parsed by `channels::voice`) through admission,
//! session load, `engine::advance`, the result store and the session save, to the reply the
//! provider's XML is rendered from. Knows no wire format and no Redis key.
//!
//! A call is one session, keyed by the provider's call id. Keys pressed are answers, silence
//! is `Input::Timeout` (the engine asks again, then says goodbye), a recording is
//! `Input::Recording`, and the provider's end-of-call callback is `Input::Hangup`: the answers
//! stay, the session is dropped and the next call may continue it.

use std::time::{Duration, Instant};

use tracing::{Instrument, warn};

use super::{Gateway, SessionRecord, StepError, now_ms, resume_copy};
use crate::channels::ussd::UssdReply;
use crate::channels::voice::{CallDirection, VoiceEvent, VoiceReply, VoiceRequest};
use crate::engine::render::Rendered;
use crate::engine::render::voice::{VoicePart, VoicePrompt};
use crate::engine::{self, Channel, Input, Start};
use crate::session_store::{SaveOutcome, SessionKey};
use crate::telemetry;

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
            && !self.admission.admit(request.citizen())
        {
            telemetry::admission_refused();
            return VoiceReply::Reject;
        }
        let known_language = std::sync::Mutex::new(None::<String>);
        let deadline = Duration::from_millis(self.config.ussd.step_deadline_ms);
        let outcome = tokio::time::timeout(
            deadline,
            self.voice_step_inner(&request, action_url, &known_language)
                .instrument(span.clone()),
        )
        .await;
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
        let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
        let wanted = digits(number);
        let id = self
            .config
            .voice
            .numbers
            .iter()
            .find(|n| digits(&n.number) == wanted)
            .map(|n| n.flow.as_str())
            .or(self.config.voice.default_flow.as_deref())?;
        self.catalog().latest(id)
    }

    async fn voice_step_inner(
        &self,
        request: &VoiceRequest,
        action_url: &str,
        known_language: &std::sync::Mutex<Option<String>>,
    ) -> Result<VoiceReply, StepError> {
        let channel_key = format!("voice-{}", request.provider.as_str());
        let key = SessionKey::new(&channel_key, &request.call_id);
        let citizen = request.citizen().to_string();
        let called = match request.direction {
            CallDirection::Inbound => request.callee.clone(),
            CallDirection::Outbound => request.caller.clone(),
        };
        for _ in 0..2 {
            let stored = self
                .sessions
                .load(&key)
                .await
                .map_err(|e| StepError::Sessions(e.to_string()))?;
            let (version, record) = match stored {
                Some(s) => (Some(s.version), SessionRecord::decode(&s.data)),
                None => (None, None),
            };
            if let (Some(record), Ok(mut known)) = (&record, known_language.lock()) {
                *known = Some(record.state.language.clone());
            }
            let (flow, prior, inputs) = match (&request.event, record) {
                (VoiceEvent::Ended { .. }, None) => {
                    return Ok(VoiceReply::Hangup { goodbye: None });
                }
                (VoiceEvent::Ended { .. }, Some(record)) => {
                    let flow = self.flow_of(&record.state)?;
                    (flow, Some(record.state), vec![Input::Hangup])
                }
                (event, Some(record)) => {
                    let flow = self.flow_of(&record.state)?;
                    let mut inputs = vec![match event {
                        // A repeated first callback: say the current prompt again.
                        VoiceEvent::CallStarted => {
                            Input::Answer(flow.flow.voice.repeat_key.clone())
                        }
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
                    if request.call_over {
                        inputs.push(Input::Hangup);
                    }
                    (flow, Some(record.state), inputs)
                }
                (_, None) => {
                    // A new call (or one whose session expired): start, or offer to resume.
                    let Some(flow) = self.voice_flow_for(&called) else {
                        telemetry::error("unknown_voice_number");
                        return Ok(VoiceReply::Reject);
                    };
                    let (flow, prior) = self.resumable(&citizen, flow).await;
                    let start = Input::Start(Start {
                        session_id: format!("{channel_key}:{}", request.call_id),
                        channel: Channel::Voice,
                        contact: Default::default(),
                        language: None,
                    });
                    (flow, prior, vec![start])
                }
            };
            tracing::Span::current().record("flow", flow.flow.id.as_str());
            let mut state = prior;
            let mut steps = Vec::new();
            for input in inputs {
                let step = engine::advance(&flow, state.take(), input, now_ms());
                state = Some(step.state.clone());
                steps.push(step);
            }
            let Some(last) = steps.last() else {
                return Ok(VoiceReply::Hangup { goodbye: None });
            };
            tracing::Span::current().record("node", last.state.node.as_str());
            let mut writes = Vec::new();
            for step in &steps {
                writes.extend(self.writes_for_subscriber(
                    &citizen,
                    request.provider.as_str(),
                    step,
                ));
            }
            if !writes.is_empty() {
                self.results
                    .commit(writes)
                    .await
                    .map_err(|e| StepError::Results(e.to_string()))?;
            }
            let reply = steps.iter().rev().find_map(|s| s.reply().cloned());
            let state = last.state.clone();
            let voice_reply = match reply.map(|r| (r.rendered, r.end)) {
                Some((Rendered::Voice(prompt), true)) => VoiceReply::Hangup {
                    goodbye: Some(prompt),
                },
                Some((Rendered::Voice(prompt), false)) if !state.status.is_terminal() => {
                    VoiceReply::Prompt {
                        prompt,
                        action_url: action_url.to_string(),
                    }
                }
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
            let record = SessionRecord {
                state,
                progress: String::new(),
                reply: UssdReply {
                    text: transcript,
                    end,
                },
            };
            let ttl = Duration::from_secs(flow.flow.session_timeout.0.max(1));
            let state_bytes = record.state.encode();
            let resume = resume_copy(&citizen, &flow, &record.state, &state_bytes);
            let outcome = self
                .sessions
                .save_and_remember(&key, version, &record.encode(), ttl, resume)
                .await
                .map_err(|e| StepError::Sessions(e.to_string()))?;
            match outcome {
                SaveOutcome::Saved { .. } => return Ok(voice_reply),
                SaveOutcome::Conflict { .. } => {
                    telemetry::error("version_conflict");
                    continue;
                }
            }
        }
        Err(StepError::Contention)
    }
}
