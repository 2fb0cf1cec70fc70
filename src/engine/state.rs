//! The session state the engine reads and returns: everything needed to resume a conversation.
//!
//! It is plain data, serde-serializable and compact (MessagePack, field names omitted), with a
//! schema version byte in front so stored sessions can be migrated. It never refers to wall time
//! or I/O: timestamps are the `now` values the caller passed to `advance`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::flow::model::{Lang, NodeId};

/// Version of the encoded layout; bump it (and teach `decode` the old one) on any change that
/// old encodings cannot be read with. A new last field with `#[serde(default)]` needs no bump:
/// the older, shorter array decodes with the field's default.
pub const SCHEMA_VERSION: u8 = 1;

/// The channel a session runs on; it decides how screens are rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Ussd,
    Sms,
    Voice,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Ussd => "ussd",
            Channel::Sms => "sms",
            Channel::Voice => "voice",
        }
    }
}

/// Where a session stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SessionStatus {
    /// Waiting for the respondent's next answer.
    Active,
    /// Reached an end node.
    Completed,
    /// The network or the respondent ended it mid-flow; it may be resumed within the window.
    Dropped,
    /// No answer came in time (SMS); not resumable.
    TimedOut,
    /// Too many invalid answers and no fallback node.
    Failed,
}

impl SessionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionStatus::Active => "active",
            SessionStatus::Completed => "completed",
            SessionStatus::Dropped => "dropped",
            SessionStatus::TimedOut => "timed_out",
            SessionStatus::Failed => "failed",
        }
    }

    pub fn is_terminal(self) -> bool {
        !matches!(self, SessionStatus::Active)
    }
}

/// What the session is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Awaiting {
    /// An answer to the current node.
    Node,
    /// The respondent's choice between continuing a dropped session and starting again.
    ResumeChoice,
}

/// One respondent's conversation with one flow version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionState {
    /// Flow the session runs; sessions finish on the version they started with.
    pub flow_id: String,
    pub flow_version: u32,
    pub channel: Channel,
    /// Identity of the response in the result store: the session id that started it. A resumed
    /// session keeps it, so answers from both sessions form one response.
    pub response_id: String,
    /// Short reference the respondent can quote (derived from `response_id`).
    pub reference: String,
    /// The node shown now (awaiting an answer, or the end node once completed).
    pub node: NodeId,
    pub awaiting: Awaiting,
    pub status: SessionStatus,
    /// Language of every text from now on.
    pub language: Lang,
    /// Invalid answers given to the current node.
    pub attempts: u8,
    /// USSD page of the current screen (0-based) when it is paginated.
    pub page: u8,
    /// Texts shown before the current prompt on the same screen (messages passed through, the
    /// "Sorry" notice); kept so that paging and repeats show exactly the same screen.
    pub lead: Vec<crate::engine::screen::Line>,
    /// Answers so far: result name -> stored value.
    pub answers: BTreeMap<String, String>,
    /// Contact attributes known before the session (district, name...), for branches and texts.
    pub contact: BTreeMap<String, String>,
    /// Number of inputs processed; makes answer records idempotent per step.
    pub step: u32,
    /// Whether the one SMS reminder for the current question has gone out.
    pub reminded: bool,
    /// Milliseconds since the Unix epoch, as passed in by the caller.
    pub started_at: i64,
    pub updated_at: i64,
    /// The questions answered before the current one, oldest first, at most
    /// [`MAX_HISTORY`]: where the voice back key returns to. Kept on voice only (the one channel
    /// with a back key). Last and defaulted, so a session stored before it existed (an array
    /// one element shorter) still decodes.
    #[serde(default)]
    pub history: Vec<NodeId>,
}

/// How many earlier questions a session remembers for going back.
pub const MAX_HISTORY: usize = 16;

/// Why stored bytes could not be read back as a session.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("stored session is empty")]
    Empty,
    #[error("stored session has schema version {0}, this gateway reads {SCHEMA_VERSION}")]
    UnknownSchema(u8),
    #[error("stored session is corrupt: {0}")]
    Corrupt(String),
}

impl SessionState {
    /// Compact bytes: the schema version, then MessagePack with fields by position.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.push(SCHEMA_VERSION);
        // Serializing plain owned data into a Vec cannot fail.
        if rmp_serde::encode::write(&mut out, self).is_err() {
            out.truncate(1);
        }
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<SessionState, DecodeError> {
        let (&version, body) = bytes.split_first().ok_or(DecodeError::Empty)?;
        if version != SCHEMA_VERSION {
            return Err(DecodeError::UnknownSchema(version));
        }
        rmp_serde::from_slice(body).map_err(|e| DecodeError::Corrupt(e.to_string()))
    }
}

/// A short, speakable reference derived from a session id (no randomness: the same id always
/// gives the same reference). Crockford base32 without I, L, O, U, in two groups of four.
pub fn reference_for(id: &str) -> String {
    const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    // FNV-1a, 64-bit: stable across platforms and releases, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut out = String::with_capacity(9);
    for i in 0..8 {
        if i == 4 {
            out.push('-');
        }
        let index = ((hash >> (i * 5)) & 31) as usize;
        out.push(char::from(ALPHABET[index]));
    }
    out
}
