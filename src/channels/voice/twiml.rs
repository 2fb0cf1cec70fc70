//! Twilio TwiML (also spoken by SignalWire and Somleng): form callbacks in, TwiML out.
//!
//! Callback fields: `CallSid`, `From`, `To`, `Direction` (`inbound`, `outbound-api`,
//! `outbound-dial`), `CallStatus` (queued, initiated, ringing, in-progress, completed, busy,
//! no-answer, canceled, failed), `CallDuration` (status callbacks), `Digits` (after
//! `<Gather>`), `RecordingUrl` and `RecordingDuration` (after `<Record>`). Reply verbs used:
//! `Say language=`, `Play`, `Gather input="dtmf"` (nesting the prompt so a key interrupts
//! it), `Record`, `Redirect`, `Reject`, `Hangup`.
//!
//! `<Gather>` without a key, and `<Record>` without audio, move on to the next verb without
//! calling the action URL, so each waiting prompt is followed by `<Redirect>` to the action URL
//! with `noinput=1`. This file knows those formats and nothing else: no I/O, no sessions.

use crate::channels::ussd::{phone, required};
use crate::channels::voice::{
    AudioBase, BadRequest, CallDirection, NO_INPUT_FLAG, Spoken, VoiceEvent, VoiceProvider,
    VoiceReply, VoiceRequest, XmlDoc, digits, form_fields, query_says_no_input, recording_url,
    seconds, spoken_parts, tts_language, with_query,
};
use crate::engine::render::voice::VoicePrompt;

/// Call statuses after which the call is over.
const FINAL_STATUSES: &[&str] = &["completed", "busy", "failed", "no-answer", "canceled"];
/// Call statuses of a call still being set up or in progress.
const LIVE_STATUSES: &[&str] = &["queued", "initiated", "ringing", "in-progress"];

/// Parses a callback; `query` is the callback URL's query string (with or without the `?`),
/// where our no-input redirect puts `noinput=1`.
///
/// Which event, in order: a non-empty `RecordingUrl` is a `Recording` (even when the call is
/// already over: the caller hung up mid-recording but still answered); a final `CallStatus` is
/// `Ended`; an empty `RecordingUrl` or `Digits` (only the finishing key, or `hangup`) or the
/// no-input flag is `NoInput`; `Digits` is `Digits`; anything else is `CallStarted`.
pub fn parse(body: &[u8], query: &str) -> Result<VoiceRequest, BadRequest> {
    let fields = form_fields(body)?;
    let get = |name: &str| fields.get(name).map(String::as_str);
    let call_id = required("CallSid", get("CallSid"), 128)?;
    let direction_field = required("Direction", get("Direction"), 32)?.to_ascii_lowercase();
    let direction = if direction_field == "inbound" {
        CallDirection::Inbound
    } else if direction_field.starts_with("outbound") {
        CallDirection::Outbound
    } else {
        return Err(BadRequest(format!(
            "field `Direction` must be inbound or outbound-*, not `{}`",
            direction_field.escape_debug()
        )));
    };
    // The citizen's side must be a phone number; ours may be a SIP address or client name.
    let (caller, callee) = match direction {
        CallDirection::Inbound => (phone("From", get("From"))?, required("To", get("To"), 256)?),
        CallDirection::Outbound => (required("From", get("From"), 256)?, phone("To", get("To"))?),
    };
    let status = required("CallStatus", get("CallStatus"), 32)?.to_ascii_lowercase();
    let call_over = if FINAL_STATUSES.contains(&status.as_str()) {
        true
    } else if LIVE_STATUSES.contains(&status.as_str()) {
        false
    } else {
        return Err(BadRequest(format!(
            "field `CallStatus` has unknown value `{}`",
            status.escape_debug()
        )));
    };
    let recording = recording_url("RecordingUrl", get("RecordingUrl"))?;
    // `hangup` is what `<Record>` reports as the ending key when the caller hung up.
    let keys = match get("Digits") {
        Some(keys) if keys.trim().eq_ignore_ascii_case("hangup") => Some(String::new()),
        keys => digits("Digits", keys)?,
    };
    let no_input_flag = query_says_no_input(query)?;

    let event = if let Some(url) = recording {
        let duration = seconds("RecordingDuration", get("RecordingDuration"))?
            .ok_or_else(|| BadRequest("missing field `RecordingDuration`".into()))?;
        VoiceEvent::Recording {
            url,
            duration_seconds: duration,
        }
    } else if call_over {
        VoiceEvent::Ended {
            status,
            duration_seconds: seconds("CallDuration", get("CallDuration"))?,
        }
    } else if get("RecordingUrl").is_some() {
        VoiceEvent::NoInput
    } else {
        match keys {
            Some(keys) if !keys.is_empty() => VoiceEvent::Digits(keys),
            Some(_) => VoiceEvent::NoInput,
            None if no_input_flag => VoiceEvent::NoInput,
            None => VoiceEvent::CallStarted,
        }
    };
    Ok(VoiceRequest {
        provider: VoiceProvider::Twiml,
        call_id,
        caller,
        callee,
        direction,
        call_over,
        event,
    })
}

/// The `X-Twilio-Signature` a callback to `url` with this form `body` carries when signed with
/// `auth_token`: base64 of HMAC-SHA1 over the URL exactly as the provider requested it (scheme,
/// host, path and query) followed by every POST field's name and value, sorted by name (then
/// value), with no separators. The receiver compares it with the header.
pub fn signature(auth_token: &str, url: &str, body: &[u8]) -> Result<String, BadRequest> {
    use base64::Engine as _;
    use hmac::Mac as _;
    let fields = form_fields(body)?;
    let mut pairs: Vec<&(String, String)> = fields.pairs().iter().collect();
    pairs.sort();
    let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes())
        .map_err(|_| BadRequest("auth token unusable as an HMAC key".into()))?;
    mac.update(url.as_bytes());
    for (name, value) in pairs {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

fn spoken(doc: &mut XmlDoc, parts: &[Spoken]) {
    for part in parts {
        match part {
            Spoken::Say { text, language } => {
                doc.text("Say", &[("language", tts_language(language))], text)
            }
            Spoken::Play { url } => doc.text("Play", &[], url),
        }
    }
}

fn goodbye(doc: &mut XmlDoc, prompt: Option<&VoicePrompt>, audio: &AudioBase) {
    if let Some(prompt) = prompt {
        spoken(doc, &spoken_parts(prompt, audio));
    }
    doc.empty("Hangup", &[]);
}

/// The reply body (`text/xml` or `application/xml`).
pub fn render(reply: &VoiceReply, audio: &AudioBase) -> String {
    let mut doc = XmlDoc::response();
    match reply {
        // As the first verb, `<Reject>` leaves the call unanswered: nothing is billed.
        VoiceReply::Reject => doc.empty("Reject", &[("reason", "rejected")]),
        VoiceReply::Hangup { goodbye: prompt } => goodbye(&mut doc, prompt.as_ref(), audio),
        VoiceReply::Prompt { prompt, action_url } => {
            let parts = spoken_parts(prompt, audio);
            let no_input_url = with_query(action_url, NO_INPUT_FLAG);
            if prompt.end {
                goodbye(&mut doc, Some(prompt), audio);
            } else if let Some(record) = &prompt.record {
                // `<Record>` nests nothing: the prompt comes first, then the beep.
                spoken(&mut doc, &parts);
                let max_length = record.max_length_seconds.max(2).to_string();
                let finish = record.finish_on_key.to_string();
                doc.empty(
                    "Record",
                    &[
                        ("action", action_url),
                        ("method", "POST"),
                        ("maxLength", &max_length),
                        ("finishOnKey", &finish),
                        ("playBeep", "true"),
                    ],
                );
                doc.text("Redirect", &[("method", "POST")], &no_input_url);
            } else if let Some(gather) = &prompt.gather {
                let timeout = gather.timeout_seconds.max(1).to_string();
                // An empty finishOnKey turns Twilio's default `#` off for menus.
                let finish = gather.finish_on_key.map(String::from).unwrap_or_default();
                let count = gather.num_digits.map(|n| n.to_string());
                let mut attributes: Vec<(&str, &str)> = vec![("input", "dtmf")];
                if let Some(count) = &count {
                    attributes.push(("numDigits", count));
                }
                attributes.extend([
                    ("timeout", timeout.as_str()),
                    ("finishOnKey", finish.as_str()),
                    ("action", action_url.as_str()),
                    ("method", "POST"),
                ]);
                doc.start("Gather", &attributes);
                spoken(&mut doc, &parts);
                doc.end();
                doc.text("Redirect", &[("method", "POST")], &no_input_url);
            } else {
                // Nothing to collect: the screen ends the session.
                goodbye(&mut doc, Some(prompt), audio);
            }
        }
    }
    doc.finish()
}
