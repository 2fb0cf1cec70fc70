//! Africa's Talking Voice: form callbacks in, its `<Response>` XML dialect out.
//!
//! Callback fields: `isActive` (`1` during the call, `0` on the final notification, which adds
//! `durationInSeconds`, `callSessionState`, `status`, `hangupCause`, `currencyCode`, `amount`),
//! `sessionId`, `direction` (`Inbound`/`Outbound`), `callerNumber`, `destinationNumber`,
//! `dtmfDigits` (after `GetDigits`), `recordingUrl` (after `Record`; empty when nothing was
//! recorded). Reply verbs used: `Say`, `Play url=`, `GetDigits` (nesting the prompt),
//! `Record` (partial recording, nesting the prompt), `Redirect`, `Reject`, `Hangup`.
//!
//! `GetDigits` that gets no key moves on to the next verb without calling back, so each
//! waiting prompt is followed by `<Redirect>` to the action URL with `noinput=1`.
//! This file knows those formats and nothing else: no I/O, no sessions.

use crate::channels::ussd::{phone, required};
use crate::channels::voice::{
    AudioBase, BadRequest, CallDirection, NO_INPUT_FLAG, Spoken, VoiceEvent, VoiceProvider,
    VoiceReply, VoiceRequest, XmlDoc, digits, form_fields, query_says_no_input, recording_url,
    seconds, spoken_parts, tts_language, with_query,
};
use crate::engine::render::voice::VoicePrompt;

/// Parses a callback posted to a URL without a query string.
pub fn parse(body: &[u8]) -> Result<VoiceRequest, BadRequest> {
    parse_with_query(body, "")
}

/// Parses a callback; `query` is the callback URL's query string (with or without the `?`),
/// where our no-input redirect puts `noinput=1`.
///
/// Which event, in order: a non-empty `recordingUrl` is a `Recording` (even on the final
/// callback: a caller who hangs up mid-recording still gave an answer); `isActive=0` is
/// `Ended`; an empty `recordingUrl`, an empty `dtmfDigits` (only the finishing key) or the
/// no-input flag is `NoInput`; `dtmfDigits` is `Digits`; anything else is `CallStarted`.
pub fn parse_with_query(body: &[u8], query: &str) -> Result<VoiceRequest, BadRequest> {
    let fields = form_fields(body)?;
    let get = |name: &str| fields.get(name).map(String::as_str);
    let call_over = match required("isActive", get("isActive"), 8)?.as_str() {
        "1" => false,
        "0" => true,
        other => {
            return Err(BadRequest(format!(
                "field `isActive` must be 1 or 0, not `{}`",
                other.escape_debug()
            )));
        }
    };
    let call_id = required("sessionId", get("sessionId"), 128)?;
    let direction = match required("direction", get("direction"), 16)?
        .to_ascii_lowercase()
        .as_str()
    {
        "inbound" => CallDirection::Inbound,
        "outbound" => CallDirection::Outbound,
        other => {
            return Err(BadRequest(format!(
                "field `direction` must be Inbound or Outbound, not `{}`",
                other.escape_debug()
            )));
        }
    };
    let caller = phone("callerNumber", get("callerNumber"))?;
    let callee = phone("destinationNumber", get("destinationNumber"))?;
    let recording = recording_url("recordingUrl", get("recordingUrl"))?;
    let keys = digits("dtmfDigits", get("dtmfDigits"))?;
    let no_input_flag = query_says_no_input(query)?;

    let event = if let Some(url) = recording {
        // The callback does not say how long the recording is; 0 means unknown.
        VoiceEvent::Recording {
            url,
            duration_seconds: 0,
        }
    } else if call_over {
        VoiceEvent::Ended {
            status: end_status(&fields)?,
            duration_seconds: seconds("durationInSeconds", get("durationInSeconds"))?,
        }
    } else if get("recordingUrl").is_some() {
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
        provider: VoiceProvider::AfricasTalking,
        call_id,
        caller,
        callee,
        direction,
        call_over,
        event,
    })
}

/// The status word of the final notification: an informative `hangupCause` (`USER_BUSY`,
/// `NO_ANSWER`, ...: what retries need, and `callSessionState` would hide it behind
/// `Completed`), else `callSessionState`, else `status`, else `Ended` when the provider sent
/// none of them.
fn end_status(fields: &crate::channels::form::FormFields) -> Result<String, BadRequest> {
    if let Some(cause) = fields
        .get("hangupCause")
        .filter(|v| !v.trim().is_empty() && !v.trim().eq_ignore_ascii_case("NORMAL_CLEARING"))
    {
        return required("hangupCause", Some(cause), 64);
    }
    for name in ["callSessionState", "status"] {
        if let Some(value) = fields.get(name).filter(|v| !v.trim().is_empty()) {
            return required(name, Some(value), 64);
        }
    }
    Ok("Ended".into())
}

/// The voice for `Say` in a language, where one is worth naming: the English neural voice
/// reads English well; for other languages the provider's default is left alone.
fn say_voice(language: &str) -> Option<&'static str> {
    tts_language(language)
        .starts_with("en-")
        .then_some("en-US-Standard-C")
}

fn spoken(doc: &mut XmlDoc, parts: &[Spoken]) {
    for part in parts {
        match part {
            Spoken::Say { text, language } => match say_voice(language) {
                Some(voice) => doc.text("Say", &[("voice", voice)], text),
                None => doc.text("Say", &[], text),
            },
            Spoken::Play { url } => doc.empty("Play", &[("url", url)]),
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
        VoiceReply::Reject => doc.empty("Reject", &[]),
        VoiceReply::Hangup { goodbye: prompt } => goodbye(&mut doc, prompt.as_ref(), audio),
        VoiceReply::Prompt { prompt, action_url } => {
            let parts = spoken_parts(prompt, audio);
            let no_input_url = with_query(action_url, NO_INPUT_FLAG);
            if prompt.end {
                goodbye(&mut doc, Some(prompt), audio);
            } else if let Some(record) = &prompt.record {
                let finish = record.finish_on_key.to_string();
                let max_length = record.max_length_seconds.to_string();
                doc.start(
                    "Record",
                    &[
                        ("finishOnKey", &finish),
                        ("maxLength", &max_length),
                        ("trimSilence", "true"),
                        ("playBeep", "true"),
                        ("callbackUrl", action_url),
                    ],
                );
                spoken(&mut doc, &parts);
                doc.end();
                doc.text("Redirect", &[], &no_input_url);
            } else if let Some(gather) = &prompt.gather {
                let timeout = gather.timeout_seconds.max(1).to_string();
                let finish = gather.finish_on_key.map(String::from);
                let count = gather.num_digits.map(|n| n.to_string());
                let mut attributes: Vec<(&str, &str)> = vec![("timeout", &timeout)];
                if let Some(finish) = &finish {
                    attributes.push(("finishOnKey", finish));
                }
                if let Some(count) = &count {
                    attributes.push(("numDigits", count));
                }
                attributes.push(("callbackUrl", action_url));
                doc.start("GetDigits", &attributes);
                spoken(&mut doc, &parts);
                doc.end();
                doc.text("Redirect", &[], &no_input_url);
            } else {
                // Nothing to collect: the screen ends the session.
                goodbye(&mut doc, Some(prompt), audio);
            }
        }
    }
    doc.finish()
}
