//! USSD over HTTP (the aggregators' callback formats) and over SMPP (an operator's
//! `ussd_service_op` dialect, in `smpp`), behind one request/reply shape.
//!
//! Adding a provider is one file here and one `UssdProvider` variant; the compiler lists the
//! matches to extend. Providers differ in how they send input: Africa's Talking sends every
//! input of the session joined by `*` (so the newest input must be worked out against what
//! the session already consumed), Hubtel sends only the newest input with a sequence number.

pub mod africastalking;
pub mod hubtel;
pub mod smpp;

use serde::{Deserialize, Serialize};

/// The USSD aggregators Baraza speaks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UssdProvider {
    /// Africa's Talking: form callbacks, cumulative `text`, `CON`/`END` replies.
    #[serde(rename = "africastalking")]
    AfricasTalking,
    /// Hubtel programmable services: JSON callbacks and replies.
    Hubtel,
    /// USSD over an operator's SMPP bind (deliver_sm / submit_sm with `ussd_service_op`); it
    /// has no HTTP route.
    Smpp,
}

impl UssdProvider {
    /// Every provider with an HTTP callback route, in the order routes are listed.
    pub const ALL: [UssdProvider; 2] = [UssdProvider::AfricasTalking, UssdProvider::Hubtel];
}

impl UssdProvider {
    pub fn as_str(self) -> &'static str {
        match self {
            UssdProvider::AfricasTalking => "africastalking",
            UssdProvider::Hubtel => "hubtel",
            UssdProvider::Smpp => "smpp",
        }
    }
}

/// One step of a USSD session as the aggregator sent it, provider details removed.
#[derive(Debug, Clone, PartialEq)]
pub struct UssdRequest {
    pub provider: UssdProvider,
    /// The aggregator's session id.
    pub session_id: String,
    /// The citizen's phone number as sent (E.164 where the provider gives it).
    pub subscriber: String,
    /// The code dialled, e.g. `*384*12#`.
    pub service_code: String,
    /// Mobile network code or operator name, when given.
    pub network: Option<String>,
    pub input: UssdInput,
}

/// What the citizen sent, in the provider's own terms.
#[derive(Debug, Clone, PartialEq)]
pub enum UssdInput {
    /// Every input of the session joined by `*` (Africa's Talking); empty on the first request.
    Cumulative(String),
    /// The first request of a session; `dialled` is the full string dialled when the provider
    /// gives it (it may carry a sub-code such as `*384*12*3#`).
    Begin { dialled: String },
    /// The newest input alone, with the provider's sequence number (Hubtel).
    Latest { text: String, sequence: u32 },
    /// The citizen or the network ended the session.
    End,
}

/// What a request means against what the session already consumed.
#[derive(Debug, Clone, PartialEq)]
pub enum Resolved {
    /// No session yet: start one. `sub_code` is an extra code segment dialled with the service
    /// code (`3` from `*384*12*3#`), if any.
    Start {
        sub_code: Option<String>,
        progress: String,
    },
    /// A new answer; `progress` is what to store as consumed after it.
    Answer { text: String, progress: String },
    /// The aggregator repeated a request already answered: send the same reply again.
    Duplicate,
    /// The session is over.
    End,
}

impl UssdRequest {
    /// Whether this request comes directly after a session whose stored progress is
    /// `progress`: its next input, or a repeat of the last one. Any node then computes the
    /// same step from that session, so a node may use its own copy of it instead of reading
    /// the store (`dispatcher::session_cache`); anything else (a dial, an end, a request
    /// that skips ahead) answers false.
    pub fn directly_follows(&self, progress: &str) -> bool {
        match &self.input {
            UssdInput::Cumulative(text) => africastalking::directly_follows(text, progress),
            UssdInput::Latest { sequence, .. } => progress
                .parse::<u32>()
                .is_ok_and(|p| *sequence == p || p.checked_add(1) == Some(*sequence)),
            UssdInput::Begin { .. } | UssdInput::End => false,
        }
    }

    /// The sub-code dialled (`Some(None)` when none), when this request surely starts a
    /// session, so the flow it dials is known before the session is read. Africa's Talking
    /// sends a dialled sub-code as the first request's text, but every later request of the
    /// session looks the same: only its empty text is surely a dial.
    pub fn surely_dials(&self) -> Option<Option<String>> {
        match (&self.input, self.resolve(None)) {
            (UssdInput::Cumulative(text), _) if !text.is_empty() => None,
            (_, Resolved::Start { sub_code, .. }) => Some(sub_code),
            _ => None,
        }
    }

    /// The progress a session started by this request counts as consumed when the request
    /// was meant for a session the gateway does not hold (expired, or lost with an in-memory
    /// store): everything it carries.
    pub fn progress_of_restart(&self) -> String {
        match &self.input {
            UssdInput::Cumulative(text) => text.clone(),
            UssdInput::Latest { sequence, .. } => sequence.to_string(),
            UssdInput::Begin { .. } | UssdInput::End => "0".to_string(),
        }
    }

    /// Works out the newest input given the session's stored progress (`None`: no session).
    pub fn resolve(&self, progress: Option<&str>) -> Resolved {
        match (&self.input, progress) {
            (UssdInput::End, _) => Resolved::End,
            (UssdInput::Cumulative(text), progress) => africastalking::resolve(text, progress),
            (UssdInput::Begin { dialled }, None) => Resolved::Start {
                sub_code: crate::routing::sub_code(&self.service_code, dialled),
                progress: "0".into(),
            },
            (UssdInput::Begin { .. }, Some(_)) => Resolved::Duplicate,
            (UssdInput::Latest { text, sequence }, None) => Resolved::Answer {
                // An answer for a session we do not have: treated as a new start by the caller.
                text: text.clone(),
                progress: sequence.to_string(),
            },
            (UssdInput::Latest { text, sequence }, Some(progress)) => {
                if progress.parse::<u32>().is_ok_and(|p| *sequence <= p) {
                    Resolved::Duplicate
                } else {
                    Resolved::Answer {
                        text: text.clone(),
                        progress: sequence.to_string(),
                    }
                }
            }
        }
    }
}

/// The reply to send back: the screen text and whether the session ends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UssdReply {
    pub text: String,
    pub end: bool,
}

/// A request that cannot be understood; the message says which field and why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct BadRequest(pub String);

/// Reads a required form or JSON field: present, not blank, of bounded length.
pub(crate) fn required(
    name: &str,
    value: Option<&str>,
    max_len: usize,
) -> Result<String, BadRequest> {
    let value = value.ok_or_else(|| BadRequest(format!("missing field `{name}`")))?;
    let trimmed = value.trim();
    if trimmed.is_empty() {
        return Err(BadRequest(format!("field `{name}` is empty")));
    }
    if trimmed.chars().count() > max_len {
        return Err(BadRequest(format!(
            "field `{name}` is longer than {max_len} characters"
        )));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(BadRequest(format!(
            "field `{name}` contains control characters"
        )));
    }
    Ok(trimmed.to_string())
}

/// Checks a phone number looks like one: an optional `+` then 5 to 20 digits.
pub(crate) fn phone(name: &str, value: Option<&str>) -> Result<String, BadRequest> {
    let number = required(name, value, 24)?;
    let digits = number.strip_prefix('+').unwrap_or(&number);
    if digits.len() < 5 || digits.len() > 20 || !digits.chars().all(|c| c.is_ascii_digit()) {
        return Err(BadRequest(format!(
            "field `{name}` is not a phone number: `{number}`"
        )));
    }
    Ok(crate::channels::normalise_msisdn(&number))
}
