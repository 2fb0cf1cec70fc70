//! USSD over SMPP: reads an operator's USSD deliver_sm through its profile (which
//! `ussd_service_op` values begin, answer or abort a dialogue, and where the session id lives)
//! into a [`UssdRequest`], and renders a [`UssdReply`] into the submit_sm that shows the next
//! screen (USSR request) or closes the dialogue (PSSR response, end-of-session bit).
//!
//! SMPP gives no stable session id: `its_session_info` carries a session number of one octet
//! that handsets and networks reuse, and `user_message_reference` sixteen bits.
//! [`dialogue_step`] therefore gives each begun dialogue its own id (operator, subscriber
//! pseudonym, number and start time) and counts its answers in a [`DialogueRecord`], so the
//! dispatcher's session store sees one session per dialogue and every answer as the newest
//! input (`UssdInput::Latest`). It never runs flows, never touches the session store (the
//! dispatcher keeps the record there) and never writes to a bind: the bind task does that.

use bytes::Bytes;

use super::{BadRequest, UssdInput, UssdProvider, UssdReply, UssdRequest};
use crate::config::{UssdOverSmppProfile, UssdSessionIdSource};
use crate::encoding::gsm7::{DataCoding, GsmCoding};
use crate::routing::Routes;
use crate::smpp::ShortMessage;
use crate::smpp::esme::{decode_text, short_message_content};
use crate::smpp::tlv::{ItsSessionInfo, Tlv, TlvList, UssdServiceOp};

/// The longest short_message; a longer screen goes in `message_payload`.
const MAX_SHORT_MESSAGE: usize = 254;

/// A dialogue nobody touched for this long is forgotten (networks end USSD dialogues after a
/// few minutes at most): the time to live of its stored record.
pub const DIALOGUE_IDLE: std::time::Duration = std::time::Duration::from_secs(15 * 60);

/// What a USSD deliver_sm asks for, by the operator's profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UssdStepKind {
    /// The citizen dialled a code (PSSR indication); `dialled` is the code, e.g. `*384*12*3#`.
    Begin {
        /// The dialled string, from the text, destination_addr or the profile's default.
        dialled: String,
    },
    /// The citizen answered the screen shown (USSR confirm).
    Answer {
        /// The answer as typed.
        text: String,
    },
    /// The citizen or the network ended the dialogue (vendor abort op or end-of-session bit).
    Abort,
}

/// Which dialogue a message belongs to, as the network numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionRef {
    /// The session number (its_session_info octet 1) or user_message_reference.
    pub number: u16,
    /// The its_session_info sequence (0 with user_message_reference).
    pub sequence: u8,
}

/// One USSD deliver_sm read through a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UssdDeliver {
    /// What the message asks for.
    pub kind: UssdStepKind,
    /// The handset's number (source_addr).
    pub subscriber: String,
    /// destination_addr: the short code or service number the dialogue runs on.
    pub short_code: String,
    /// Where the session id was found; `None` when the message carries none (the dialogue is
    /// then keyed by the subscriber alone and replies carry no session TLV).
    pub session: Option<SessionRef>,
    /// The raw `ussd_service_op`, for logs.
    pub op: u8,
}

/// Reads a deliver_sm carrying `ussd_service_op` through the operator's profile. Fails (with
/// the reason) on an op the profile does not know or a malformed session TLV.
pub fn read_deliver(
    profile: &UssdOverSmppProfile,
    sm: &ShortMessage,
) -> Result<UssdDeliver, BadRequest> {
    let op = match sm.tlvs.ussd_service_op() {
        Ok(Some(UssdServiceOp(op))) => op,
        Ok(None) => return Err(BadRequest("deliver_sm has no ussd_service_op".into())),
        Err(e) => return Err(BadRequest(format!("ussd_service_op: {e}"))),
    };
    let (session, end_bit) = match profile.session_id {
        UssdSessionIdSource::ItsSessionInfo => match sm.tlvs.its_session_info() {
            Ok(Some(info)) => (
                Some(SessionRef {
                    number: u16::from(info.session_number),
                    sequence: info.sequence,
                }),
                info.end_of_session,
            ),
            Ok(None) => (None, false),
            Err(e) => return Err(BadRequest(format!("its_session_info: {e}"))),
        },
        UssdSessionIdSource::UserMessageReference => match sm.tlvs.user_message_reference() {
            Ok(reference) => (
                reference.map(|number| SessionRef {
                    number,
                    sequence: 0,
                }),
                false,
            ),
            Err(e) => return Err(BadRequest(format!("user_message_reference: {e}"))),
        },
    };
    let (_, octets, coding) = short_message_content(sm);
    let text = decode_text(coding, &octets).trim().to_string();
    if text.chars().count() > 182 * 2 || text.chars().any(char::is_control) {
        return Err(BadRequest(
            "USSD text is too long or contains control characters".into(),
        ));
    }
    let subscriber = sm.source_addr.to_string_lossy();
    let short_code = sm.destination_addr.to_string_lossy();
    let kind = if profile.abort_ops.contains(&op) || end_bit {
        UssdStepKind::Abort
    } else if profile.begin_ops.contains(&op)
        // A vendor using one op for both: a dialled code begins, anything else answers.
        && (!profile.answer_ops.contains(&op) || looks_like_code(&text))
    {
        let dialled = if looks_like_code(&text) {
            text
        } else if looks_like_code(&short_code) {
            short_code.clone()
        } else if let Some(code) = &profile.service_code {
            code.clone()
        } else {
            short_code.clone()
        };
        UssdStepKind::Begin { dialled }
    } else if profile.answer_ops.contains(&op) {
        UssdStepKind::Answer { text }
    } else {
        return Err(BadRequest(format!(
            "ussd_service_op {op} is not in this operator's profile"
        )));
    };
    Ok(UssdDeliver {
        kind,
        subscriber,
        short_code,
        session,
        op,
    })
}

/// A dialled USSD string: starts with `*` or ends with `#`.
fn looks_like_code(text: &str) -> bool {
    !text.is_empty() && (text.starts_with('*') || text.ends_with('#'))
}

/// What is kept about a begun dialogue between its messages. The dispatcher keeps it in the
/// session store (not in this process), so a dialogue continues when its next message arrives
/// on another node's bind or after a restart.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DialogueRecord {
    /// The id the session store keys the flow session by.
    pub session_id: String,
    /// The code it was begun with.
    pub service_code: String,
    /// Answers received so far (the `Latest` sequence of the next answer is one more).
    pub answers: u32,
    /// The `its_session_info` sequence of the last answer counted: a deliver_sm carrying it
    /// again (an SMSC's redelivery, a network duplicate) is the same answer, not a new one.
    /// Absent in records stored before it existed, and for profiles without a sequence.
    #[serde(default)]
    pub last_sequence: Option<u8>,
}

impl DialogueRecord {
    /// The stored form (JSON: a few dozen bytes, readable in `redis-cli`).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The record from its stored form; `None` when it is not one (treated as no record).
    pub fn decode(bytes: &[u8]) -> Option<DialogueRecord> {
        serde_json::from_slice(bytes).ok()
    }
}

/// What to do with the stored dialogue record after a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DialogueChange {
    /// Store this record (a begin, or an answer counted).
    Save(DialogueRecord),
    /// Forget the record (the dialogue was aborted).
    Remove,
    /// Nothing to store (an abort of a dialogue nobody kept).
    Keep,
}

/// The id of a dialogue as the network numbers it: operator, subscriber and session number
/// (networks reuse the number, so a begin always starts a fresh record under it).
pub fn dialogue_id(operator: &str, deliver: &UssdDeliver) -> String {
    let number = deliver
        .session
        .map_or_else(|| "-".to_string(), |s| s.number.to_string());
    format!(
        "{operator}:{}:{number}",
        crate::channels::normalise_msisdn(&deliver.subscriber)
    )
}

/// The dispatcher request for a deliver, given the dialogue's stored record, and what to store
/// next. `pseudonym` stands for the subscriber in session ids (ids are logged; numbers never
/// are); `now_ms` makes a begun dialogue's session id unique. An answer or abort for a
/// dialogue with no record (expired, session number mismatch) gets a stable id of its own,
/// which the dispatcher treats as a session it does not hold.
/// The `its_session_info` sequence of a message, when the profile reads session ids there.
fn sequence_of(deliver: &UssdDeliver, profile: &UssdOverSmppProfile) -> Option<u8> {
    match profile.session_id {
        UssdSessionIdSource::ItsSessionInfo => deliver.session.map(|s| s.sequence),
        UssdSessionIdSource::UserMessageReference => None,
    }
}

pub fn dialogue_step(
    operator: &str,
    deliver: &UssdDeliver,
    pseudonym: &str,
    profile: &UssdOverSmppProfile,
    routes: &Routes,
    stored: Option<DialogueRecord>,
    now_ms: i64,
) -> (UssdRequest, DialogueChange) {
    let number_text = deliver
        .session
        .map_or_else(|| "-".to_string(), |s| s.number.to_string());
    let stray_id = format!("{operator}:{pseudonym}:{number_text}");
    let (session_id, service_code, input, change) = match &deliver.kind {
        UssdStepKind::Begin { dialled } => {
            let record = DialogueRecord {
                session_id: format!("{stray_id}:{now_ms}"),
                service_code: routes.service_code_for(dialled),
                answers: 0,
                last_sequence: sequence_of(deliver, profile),
            };
            let input = UssdInput::Begin {
                dialled: dialled.clone(),
            };
            (
                record.session_id.clone(),
                record.service_code.clone(),
                input,
                DialogueChange::Save(record),
            )
        }
        UssdStepKind::Answer { text } => {
            let mut record = stored.unwrap_or_else(|| DialogueRecord {
                session_id: stray_id,
                service_code: profile
                    .service_code
                    .clone()
                    .unwrap_or_else(|| deliver.short_code.clone()),
                answers: 0,
                last_sequence: None,
            });
            // A copy of the answer last counted is answered as a repeat (same sequence: the
            // dispatcher answers it with the stored screen and stores nothing new).
            let sequence = sequence_of(deliver, profile);
            if sequence.is_none() || sequence != record.last_sequence {
                record.answers = record.answers.saturating_add(1);
                record.last_sequence = sequence;
            }
            let input = UssdInput::Latest {
                text: text.clone(),
                sequence: record.answers,
            };
            (
                record.session_id.clone(),
                record.service_code.clone(),
                input,
                DialogueChange::Save(record),
            )
        }
        UssdStepKind::Abort => match stored {
            Some(record) => (
                record.session_id,
                record.service_code,
                UssdInput::End,
                DialogueChange::Remove,
            ),
            None => (
                stray_id,
                deliver.short_code.clone(),
                UssdInput::End,
                DialogueChange::Keep,
            ),
        },
    };
    let request = UssdRequest {
        provider: UssdProvider::Smpp,
        session_id,
        subscriber: crate::channels::normalise_msisdn(&deliver.subscriber),
        service_code,
        network: Some(operator.to_string()),
        input,
    };
    (request, change)
}

/// The submit_sm that shows `reply` to the subscriber of `deliver`: `continue_op` and the
/// session kept open, or `end_op` with the end-of-session bit on the last screen. The session
/// number is echoed where the profile reads it; the sequence is the received one plus one.
/// `from` is the source address of the reply (the operator's sender or the short code).
pub fn render_submit(
    profile: &UssdOverSmppProfile,
    deliver: &UssdDeliver,
    from: &str,
    reply: &UssdReply,
    gsm_coding: GsmCoding,
) -> Result<ShortMessage, BadRequest> {
    let coding = DataCoding::choose(&reply.text, gsm_coding);
    let octets = coding
        .encode(&reply.text)
        .map_err(|e| BadRequest(format!("cannot encode the USSD screen: {e}")))?;
    let op = if reply.end {
        profile.end_op
    } else {
        profile.continue_op
    };
    let mut tlvs = vec![Tlv::ussd_service_op(UssdServiceOp(op))];
    if let Some(session) = deliver.session {
        tlvs.push(match profile.session_id {
            UssdSessionIdSource::ItsSessionInfo => Tlv::its_session_info(ItsSessionInfo {
                session_number: u8::try_from(session.number).unwrap_or(u8::MAX),
                sequence: session.sequence.wrapping_add(1) & 0x7F,
                end_of_session: reply.end,
            }),
            UssdSessionIdSource::UserMessageReference => {
                Tlv::user_message_reference(session.number)
            }
        });
    }
    let short_message = if octets.len() > MAX_SHORT_MESSAGE {
        tlvs.push(Tlv::message_payload(octets));
        Bytes::new()
    } else {
        Bytes::from(octets)
    };
    Ok(ShortMessage {
        service_type: profile.service_type.as_str().into(),
        source_addr: from.into(),
        destination_addr: deliver.subscriber.as_str().into(),
        data_coding: coding.to_byte(),
        short_message,
        tlvs,
        ..ShortMessage::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deliver(op: u8, text: &str, session: Option<(u8, u8, bool)>) -> ShortMessage {
        let mut tlvs = vec![Tlv::ussd_service_op(UssdServiceOp(op))];
        if let Some((session_number, sequence, end_of_session)) = session {
            tlvs.push(Tlv::its_session_info(ItsSessionInfo {
                session_number,
                sequence,
                end_of_session,
            }));
        }
        ShortMessage {
            source_addr: "254700000001".into(),
            destination_addr: "384".into(),
            short_message: Bytes::from(text.as_bytes().to_vec()),
            tlvs,
            ..ShortMessage::default()
        }
    }

    fn codes() -> Routes {
        let mut config = crate::config::Config::embedded();
        config.ussd.service_codes = ["*384*12#", "*384*12*3#"]
            .iter()
            .map(|c| crate::config::ServiceCode {
                code: c.to_string(),
                flow: "f".into(),
            })
            .collect();
        Routes::from_config(&config)
    }

    #[test]
    fn standard_ops_read_as_begin_answer_and_abort() {
        let profile = UssdOverSmppProfile::default();
        let begin =
            read_deliver(&profile, &deliver(1, "*384*12*3#", Some((7, 0, false)))).expect("begin");
        assert_eq!(
            begin.kind,
            UssdStepKind::Begin {
                dialled: "*384*12*3#".into()
            }
        );
        assert_eq!(
            begin.session,
            Some(SessionRef {
                number: 7,
                sequence: 0
            })
        );
        let answer =
            read_deliver(&profile, &deliver(18, " 2 ", Some((7, 2, false)))).expect("answer");
        assert_eq!(answer.kind, UssdStepKind::Answer { text: "2".into() });
        let ended = read_deliver(&profile, &deliver(18, "", Some((7, 4, true)))).expect("end");
        assert_eq!(ended.kind, UssdStepKind::Abort);
        assert!(read_deliver(&profile, &deliver(0x81, "", Some((7, 4, false)))).is_err());
    }

    #[test]
    fn one_vendor_op_for_begin_and_answer_is_told_apart_by_the_text() {
        let profile = UssdOverSmppProfile {
            begin_ops: vec![0x12],
            answer_ops: vec![0x12],
            ..UssdOverSmppProfile::default()
        };
        let kind = |text: &str| {
            read_deliver(&profile, &deliver(0x12, text, Some((1, 0, false))))
                .expect("read")
                .kind
        };
        assert_eq!(
            kind("*384*12#"),
            UssdStepKind::Begin {
                dialled: "*384*12#".into()
            }
        );
        assert_eq!(kind("2"), UssdStepKind::Answer { text: "2".into() });
    }

    #[test]
    fn dialogues_get_fresh_ids_per_begin_and_count_answers() {
        let profile = UssdOverSmppProfile::default();
        let read = |sm: ShortMessage| read_deliver(&profile, &sm).expect("read");
        let step = |d: &UssdDeliver, stored: Option<DialogueRecord>, now: i64| {
            dialogue_step("op", d, "p", &profile, &codes(), stored, now)
        };
        let begin = read(deliver(1, "*384*12#", Some((3, 0, false))));
        let (first, change) = step(&begin, None, 1_000);
        assert!(matches!(first.input, UssdInput::Begin { .. }));
        let DialogueChange::Save(record) = change else {
            panic!("a begin stores its dialogue: {change:?}")
        };
        // The record survives its stored form (it lives in the session store between messages).
        let record = DialogueRecord::decode(&record.encode()).expect("round trip");
        let answer = read(deliver(18, "1", Some((3, 2, false))));
        assert_eq!(dialogue_id("op", &answer), dialogue_id("op", &begin));
        let (second, change) = step(&answer, Some(record), 2_000);
        assert_eq!(second.session_id, first.session_id);
        assert_eq!(second.service_code, "*384*12#");
        assert_eq!(
            second.input,
            UssdInput::Latest {
                text: "1".into(),
                sequence: 1
            }
        );
        let DialogueChange::Save(record) = change else {
            panic!("an answer is counted: {change:?}")
        };
        assert_eq!(record.answers, 1);
        // A begin reusing the session number starts a new session.
        let (again, _) = step(&begin, Some(record.clone()), 3_000);
        assert_ne!(again.session_id, first.session_id);
        let abort = read(deliver(
            profile.abort_ops.first().copied().unwrap_or(18),
            "",
            Some((3, 4, true)),
        ));
        let (ended, change) = step(&abort, Some(record), 4_000);
        assert_eq!(ended.input, UssdInput::End);
        assert_eq!(ended.session_id, first.session_id);
        assert_eq!(change, DialogueChange::Remove);
        let stray = read(deliver(18, "1", Some((9, 2, false))));
        let (unknown, _) = step(&stray, None, 5_000);
        assert_ne!(unknown.session_id, first.session_id);
        assert!(DialogueRecord::decode(b"not json").is_none());
    }

    #[test]
    fn replies_carry_op_session_and_end_bit() {
        let profile = UssdOverSmppProfile::default();
        let read = read_deliver(&profile, &deliver(18, "1", Some((5, 3, false)))).expect("read");
        let screen = UssdReply {
            text: "Choose 1 or 2".into(),
            end: false,
        };
        let sm = render_submit(&profile, &read, "384", &screen, GsmCoding::Zero).expect("sm");
        assert_eq!(sm.service_type, "USSD");
        assert_eq!(sm.tlvs.ussd_service_op(), Ok(Some(UssdServiceOp(2))));
        assert_eq!(
            sm.tlvs.its_session_info(),
            Ok(Some(ItsSessionInfo {
                session_number: 5,
                sequence: 4,
                end_of_session: false
            }))
        );
        let last = UssdReply {
            text: "Asante – ahsante".into(),
            end: true,
        };
        let sm = render_submit(&profile, &read, "384", &last, GsmCoding::Zero).expect("sm");
        assert_eq!(sm.tlvs.ussd_service_op(), Ok(Some(UssdServiceOp(17))));
        assert_eq!(sm.data_coding, 8, "a dash outside GSM 03.38 means UCS-2");
        assert!(
            sm.tlvs
                .its_session_info()
                .ok()
                .flatten()
                .is_some_and(|i| i.end_of_session)
        );
    }
}
