//! Hubtel programmable services (USSD): JSON callbacks in, JSON replies out.
//!
//! Request: `Type` (`Initiation`, `Response`, `Release`, `Timeout`), `Message` (the dialled
//! string on initiation, the newest input after), `ServiceCode`, `Operator`, `ClientState`,
//! `Mobile`, `SessionId`, `Sequence`. Reply: `SessionId`, `Type` (`response` keeps the session,
//! `release` ends it), `Message`, `Label`, `ClientState`, `DataType` (`input`/`display`),
//! `FieldType`. This file knows those formats and nothing else.

use serde::{Deserialize, Serialize};

use crate::channels::ussd::{
    BadRequest, UssdInput, UssdProvider, UssdReply, UssdRequest, phone, required,
};

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct HubtelRequest {
    #[serde(rename = "Type")]
    kind: Option<String>,
    message: Option<String>,
    service_code: Option<String>,
    operator: Option<String>,
    mobile: Option<String>,
    session_id: Option<String>,
    sequence: Option<serde_json::Value>,
}

/// Parses a callback.
pub fn parse(body: &[u8]) -> Result<UssdRequest, BadRequest> {
    let request: HubtelRequest = serde_json::from_slice(body)
        .map_err(|e| BadRequest(format!("body is not a Hubtel request: {e}")))?;
    let session_id = required("SessionId", request.session_id.as_deref(), 128)?;
    let subscriber = phone("Mobile", request.mobile.as_deref())?;
    let service_code = required("ServiceCode", request.service_code.as_deref(), 64)?;
    let kind = required("Type", request.kind.as_deref(), 32)?.to_ascii_lowercase();
    let message = request.message.unwrap_or_default();
    if message.chars().count() > 1024 {
        return Err(BadRequest(
            "field `Message` is longer than 1024 characters".into(),
        ));
    }
    let sequence = match &request.sequence {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let input = match kind.as_str() {
        "initiation" => UssdInput::Begin { dialled: message },
        "response" => {
            let sequence = sequence
                .and_then(|s| u32::try_from(s).ok())
                .ok_or_else(|| BadRequest("field `Sequence` is missing or not a number".into()))?;
            UssdInput::Latest {
                text: message,
                sequence,
            }
        }
        "release" | "timeout" => UssdInput::End,
        other => {
            return Err(BadRequest(format!(
                "field `Type` has unknown value `{other}`"
            )));
        }
    };
    Ok(UssdRequest {
        provider: UssdProvider::Hubtel,
        session_id,
        subscriber,
        service_code,
        network: request.operator.filter(|o| !o.trim().is_empty()),
        input,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct HubtelReply<'a> {
    session_id: &'a str,
    #[serde(rename = "Type")]
    kind: &'a str,
    message: &'a str,
    label: &'a str,
    client_state: &'a str,
    data_type: &'a str,
    field_type: &'a str,
}

/// The reply body (JSON).
pub fn render(session_id: &str, reply: &UssdReply) -> String {
    let body = HubtelReply {
        session_id,
        kind: if reply.end { "release" } else { "response" },
        message: &reply.text,
        label: "Baraza",
        client_state: "",
        data_type: if reply.end { "display" } else { "input" },
        field_type: "text",
    };
    serde_json::to_string(&body).unwrap_or_else(|_| "{}".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channels::ussd::Resolved;

    #[test]
    fn parses_each_request_type() {
        let start = parse(br#"{"Type":"Initiation","Message":"*713*5*2#","ServiceCode":"713*5","Operator":"mtn","Mobile":"233246912184","SessionId":"s1","Sequence":1}"#).unwrap();
        assert_eq!(
            start.input,
            UssdInput::Begin {
                dialled: "*713*5*2#".into()
            }
        );
        assert_eq!(
            start.resolve(None),
            Resolved::Start {
                sub_code: Some("2".into()),
                progress: "0".into()
            }
        );
        let answer = parse(br#"{"Type":"Response","Message":"1*2","ServiceCode":"713*5","Mobile":"233246912184","SessionId":"s1","Sequence":"2"}"#).unwrap();
        assert_eq!(
            answer.input,
            UssdInput::Latest {
                text: "1*2".into(),
                sequence: 2
            }
        );
        assert_eq!(
            answer.resolve(Some("1")),
            Resolved::Answer {
                text: "1*2".into(),
                progress: "2".into()
            }
        );
        assert_eq!(answer.resolve(Some("2")), Resolved::Duplicate);
        let end = parse(br#"{"Type":"Release","Message":"","ServiceCode":"713*5","Mobile":"233246912184","SessionId":"s1","Sequence":3}"#).unwrap();
        assert_eq!(end.input, UssdInput::End);
    }

    #[test]
    fn rejects_bad_requests_with_a_reason() {
        let cases: &[(&[u8], &str)] = &[
            (b"not json", "not a Hubtel request"),
            (
                br#"{"Type":"Response","Mobile":"233246912184","ServiceCode":"1","SessionId":"s"}"#,
                "Sequence",
            ),
            (
                br#"{"Type":"Dance","Mobile":"233246912184","ServiceCode":"1","SessionId":"s"}"#,
                "unknown value `dance`",
            ),
            (
                br#"{"Type":"Initiation","ServiceCode":"1","SessionId":"s"}"#,
                "missing field `Mobile`",
            ),
        ];
        for (body, message) in cases {
            let err = parse(body).unwrap_err();
            assert!(
                err.0.contains(message),
                "{} gave {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn renders_response_and_release() {
        assert_eq!(
            render(
                "s1",
                &UssdReply {
                    text: "Hi".into(),
                    end: false
                }
            ),
            r#"{"SessionId":"s1","Type":"response","Message":"Hi","Label":"Baraza","ClientState":"","DataType":"input","FieldType":"text"}"#
        );
        assert!(
            render(
                "s1",
                &UssdReply {
                    text: "Bye".into(),
                    end: true
                }
            )
            .contains(r#""Type":"release""#)
        );
    }
}
