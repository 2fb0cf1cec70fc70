//! Africa's Talking USSD: form callbacks in, `CON `/`END ` plain text out.
//!
//! Request fields: `sessionId`, `serviceCode`, `phoneNumber`, `networkCode`, `text` (every
//! input of the session joined by `*`, empty on the first request). The end-of-session
//! notification carries `sessionId`, `phoneNumber`, `status` (Success / Incomplete / Failed),
//! `durationInMillis`, and more. This file knows those formats and nothing else.

use crate::channels::ussd::{
    BadRequest, Resolved, UssdInput, UssdProvider, UssdReply, UssdRequest, phone, required,
};

/// Longest `text` accepted (a whole session of answers).
const MAX_TEXT: usize = 4096;

/// The callback's fields (the first of a repeated name wins).
fn form(body: &[u8]) -> Result<crate::channels::form::FormFields, BadRequest> {
    crate::channels::form::form_fields(body)
}

/// Parses a USSD callback.
pub fn parse(body: &[u8]) -> Result<UssdRequest, BadRequest> {
    let f = form(body)?;
    let get = |k: &str| f.get(k).map(String::as_str);
    let session_id = required("sessionId", get("sessionId"), 128)?;
    let service_code = required("serviceCode", get("serviceCode"), 64)?;
    let subscriber = phone("phoneNumber", get("phoneNumber"))?;
    let network = get("networkCode")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let text = get("text").ok_or_else(|| {
        BadRequest("missing field `text` (empty on the first request, but present)".into())
    })?;
    if text.chars().count() > MAX_TEXT {
        return Err(BadRequest(format!(
            "field `text` is longer than {MAX_TEXT} characters"
        )));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(BadRequest(
            "field `text` contains control characters".into(),
        ));
    }
    Ok(UssdRequest {
        provider: UssdProvider::AfricasTalking,
        session_id,
        subscriber,
        service_code,
        network,
        input: UssdInput::Cumulative(text.to_string()),
    })
}

/// The end-of-session notification.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionEnded {
    pub session_id: String,
    pub subscriber: String,
    /// `Success`, `Incomplete` or `Failed` as sent.
    pub status: String,
    pub duration_ms: Option<u64>,
}

pub fn parse_event(body: &[u8]) -> Result<SessionEnded, BadRequest> {
    let f = form(body)?;
    let get = |k: &str| f.get(k).map(String::as_str);
    let duration_ms =
        match get("durationInMillis")
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            Some(d) => Some(d.parse().map_err(|_| {
                BadRequest(format!("field `durationInMillis` is not a number: `{d}`"))
            })?),
            None => None,
        };
    Ok(SessionEnded {
        session_id: required("sessionId", get("sessionId"), 128)?,
        subscriber: phone("phoneNumber", get("phoneNumber"))?,
        status: required("status", get("status"), 32)?,
        duration_ms,
    })
}

/// The reply body: `CON text` keeps the session open, `END text` closes it.
pub fn render(reply: &UssdReply) -> String {
    let verb = if reply.end { "END" } else { "CON" };
    format!("{verb} {}", reply.text)
}

/// Works out the newest input from the cumulative `text` and what the session consumed.
///
/// `consumed` is the cumulative text already answered. The newest input is what follows it
/// after one `*`, taken whole, so an answer that itself contains `*` stays intact. A repeat of
/// the same text is a duplicate delivery. Text that does not extend `consumed` (an aggregator
/// that trims history) falls back to the part after the last `*`.
pub fn resolve(text: &str, consumed: Option<&str>) -> Resolved {
    let Some(consumed) = consumed else {
        // First request: anything already in `text` was dialled with the code (`*384*12*3#`).
        let sub_code = (!text.is_empty()).then(|| text.to_string());
        return Resolved::Start {
            sub_code,
            progress: text.to_string(),
        };
    };
    if text == consumed || is_earlier(text, consumed) {
        return Resolved::Duplicate;
    }
    let newest = if consumed.is_empty() {
        Some(text)
    } else {
        text.strip_prefix(consumed)
            .and_then(|rest| rest.strip_prefix('*'))
    };
    let newest = newest.unwrap_or_else(|| text.rsplit('*').next().unwrap_or(text));
    Resolved::Answer {
        text: newest.to_string(),
        progress: text.to_string(),
    }
}

/// Whether `text` is what an earlier request of the session carried: empty (the dial) or
/// `consumed` cut after one of its inputs. Such a request is an aggregator's late retry; it is
/// answered as a duplicate, never read as a new answer.
fn is_earlier(text: &str, consumed: &str) -> bool {
    text.is_empty()
        || consumed
            .strip_prefix(text)
            .is_some_and(|r| r.starts_with('*'))
}

/// Whether `text` comes directly after `consumed`: the same text again, or `consumed` plus one
/// more input. An input may contain `*`, so `consumed` plus two inputs reads the same as plus
/// one input with a `*` in it; that answers false, as does text that does not extend
/// `consumed` at all.
pub fn directly_follows(text: &str, consumed: &str) -> bool {
    if text == consumed {
        return true;
    }
    let rest = if consumed.is_empty() {
        Some(text)
    } else {
        text.strip_prefix(consumed)
            .and_then(|r| r.strip_prefix('*'))
    };
    rest.is_some_and(|r| !r.contains('*'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(text: &str) -> Resolved {
        Resolved::Answer {
            text: text.into(),
            progress: String::new(),
        }
    }

    fn strip(r: Resolved) -> Resolved {
        match r {
            Resolved::Answer { text, .. } => answer(&text),
            other => other,
        }
    }

    #[test]
    fn newest_input_from_cumulative_text() {
        let cases: &[(&str, Option<&str>, Resolved)] = &[
            (
                "",
                None,
                Resolved::Start {
                    sub_code: None,
                    progress: "".into(),
                },
            ),
            (
                "3",
                None,
                Resolved::Start {
                    sub_code: Some("3".into()),
                    progress: "3".into(),
                },
            ),
            ("1", Some(""), answer("1")),
            ("1*2", Some("1"), answer("2")),
            ("1*2*98", Some("1*2"), answer("98")),
            ("1*2*98*0", Some("1*2*98"), answer("0")),
            // an answer containing `*` stays whole
            ("1*a*b", Some("1"), answer("a*b")),
            // aggregator retry of the same request
            ("1*2", Some("1*2"), Resolved::Duplicate),
            // a late retry of an earlier request, after the session moved on
            ("1", Some("1*2"), Resolved::Duplicate),
            ("1*2", Some("1*2*98*0"), Resolved::Duplicate),
            ("", Some("1*2"), Resolved::Duplicate),
            // not an earlier request: `1*2` does not end after an input of `1*23`
            ("1*2", Some("1*23"), answer("2")),
            // history that does not extend what we consumed: last segment
            ("9*4", Some("1*2"), answer("4")),
            // empty answer
            ("1*", Some("1"), answer("")),
        ];
        for (text, consumed, expected) in cases {
            assert_eq!(
                &strip(resolve(text, *consumed)),
                expected,
                "text {text:?} consumed {consumed:?}"
            );
        }
    }

    #[test]
    fn directly_follows_only_the_next_input_or_a_repeat() {
        let cases: &[(&str, &str, bool)] = &[
            ("1", "", true),
            ("", "", true),
            ("1*2", "1", true),
            ("1*2", "1*2", true),
            ("1*", "1", true),
            ("3*1", "3", true),
            // two inputs, or one with a `*`: cannot tell, so no
            ("1*2*3", "1", false),
            ("1*a*b", "1", false),
            ("a*b", "", false),
            // not an extension
            ("1*23", "1*2", false),
            ("9*4", "1*2", false),
            ("1", "1*2", false),
        ];
        for (text, consumed, expected) in cases {
            assert_eq!(
                directly_follows(text, consumed),
                *expected,
                "text {text:?} consumed {consumed:?}"
            );
        }
    }

    #[test]
    fn parses_a_callback_and_rejects_bad_ones() {
        let ok = parse(b"sessionId=ATUid_1&serviceCode=%2A384%2A12%23&phoneNumber=%2B254711000001&networkCode=63902&text=1%2A2").unwrap();
        assert_eq!(ok.session_id, "ATUid_1");
        assert_eq!(ok.service_code, "*384*12#");
        assert_eq!(ok.subscriber, "+254711000001");
        assert_eq!(ok.input, UssdInput::Cumulative("1*2".into()));
        let cases: &[(&[u8], &str)] = &[
            (
                b"serviceCode=1&phoneNumber=%2B254711000001&text=",
                "missing field `sessionId`",
            ),
            (
                b"sessionId=a&serviceCode=1&phoneNumber=abc&text=",
                "not a phone number",
            ),
            (
                b"sessionId=a&serviceCode=1&phoneNumber=%2B254711000001",
                "missing field `text`",
            ),
            (
                b"sessionId=a&serviceCode=%zz&phoneNumber=%2B254711000001&text=",
                "bad percent-encoding",
            ),
            (b"\xff\xfe", "not UTF-8"),
        ];
        for (body, message) in cases {
            let err = parse(body).unwrap_err();
            assert!(
                err.0.contains(message),
                "{:?} gave {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn renders_con_and_end() {
        assert_eq!(
            render(&UssdReply {
                text: "Hi\n1. Yes".into(),
                end: false
            }),
            "CON Hi\n1. Yes"
        );
        assert_eq!(
            render(&UssdReply {
                text: "Bye".into(),
                end: true
            }),
            "END Bye"
        );
    }
}
