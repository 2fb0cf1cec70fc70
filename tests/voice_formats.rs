//! Voice wire formats, both directions, for Africa's Talking and TwiML: callback bodies to the
//! exact parsed request, replies to the exact XML (snapshots), well-formedness and escaping of
//! every reply, field-naming errors for bad callbacks, and parsers that never panic.

use baraza::channels::voice::{
    AudioBase, CallDirection, VoiceEvent, VoiceProvider, VoiceReply, VoiceRequest, africastalking,
    twiml,
};
use baraza::engine::render::voice::{Gather, RecordSpec, VoicePart, VoicePrompt};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------------
// A tiny XML checker: balanced tags, quoted attributes, only the five predefined entities.
// ---------------------------------------------------------------------------------------------

/// One element's decoded text content (only elements holding text directly are listed).
#[derive(Debug, PartialEq)]
struct TextOf {
    element: String,
    text: String,
}

/// Decodes `&amp;` `&lt;` `&gt;` `&quot;` `&apos;`; fails on a raw `<`, a bare `&` or any
/// other entity.
fn decode(raw: &str) -> Result<String, String> {
    if raw.contains('<') {
        return Err(format!("raw `<` in {raw:?}"));
    }
    let mut out = String::new();
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let end = after
            .find(';')
            .ok_or_else(|| format!("bare `&` in {raw:?}"))?;
        out.push(match &after[..=end] {
            "&amp;" => '&',
            "&lt;" => '<',
            "&gt;" => '>',
            "&quot;" => '"',
            "&apos;" => '\'',
            other => return Err(format!("unknown entity {other} in {raw:?}")),
        });
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Checks a reply document: the XML declaration, one `<Response>` root, balanced elements,
/// double-quoted attribute values and escaped text. Returns the texts for further checks.
fn well_formed(xml: &str) -> Result<Vec<TextOf>, String> {
    let declaration = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>";
    let mut rest = xml
        .strip_prefix(declaration)
        .ok_or("missing XML declaration")?;
    let mut open: Vec<String> = Vec::new();
    let mut roots = 0;
    let mut texts = Vec::new();
    while !rest.is_empty() {
        if let Some(tag_and_more) = rest.strip_prefix('<') {
            let end = tag_and_more.find('>').ok_or("unterminated tag")?;
            let tag = &tag_and_more[..end];
            rest = &tag_and_more[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                match open.pop() {
                    Some(top) if top == name => {}
                    top => return Err(format!("</{name}> closes {top:?}")),
                }
                continue;
            }
            let (tag, self_closing) = match tag.strip_suffix('/') {
                Some(tag) => (tag, true),
                None => (tag, false),
            };
            let name_end = tag.find(' ').unwrap_or(tag.len());
            let name = &tag[..name_end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphabetic()) {
                return Err(format!("bad element name {name:?}"));
            }
            let mut attributes = tag[name_end..].trim_start();
            while !attributes.is_empty() {
                let (attribute, after) = attributes
                    .split_once("=\"")
                    .ok_or_else(|| format!("unquoted attribute in <{tag}>"))?;
                if !attribute.chars().all(|c| c.is_ascii_alphabetic()) {
                    return Err(format!("bad attribute name {attribute:?}"));
                }
                let (value, after) = after
                    .split_once('"')
                    .ok_or_else(|| format!("unterminated value in <{tag}>"))?;
                decode(value)?;
                attributes = after.trim_start();
            }
            if open.is_empty() {
                roots += 1;
                if name != "Response" {
                    return Err(format!("root element is <{name}>"));
                }
            }
            if !self_closing {
                open.push(name.to_string());
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let raw = &rest[..end];
            rest = &rest[end..];
            let text = decode(raw)?;
            if !text.trim().is_empty() {
                let element = open.last().ok_or("text outside the root")?.clone();
                texts.push(TextOf { element, text });
            }
        }
    }
    if !open.is_empty() {
        return Err(format!("unclosed elements {open:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(texts)
}

#[test]
fn the_checker_rejects_broken_xml() {
    let head = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
    let ok = format!("{head}<Response><Say a=\"x &amp; y\">1 &lt; 2</Say><Hangup/></Response>");
    assert_eq!(
        well_formed(&ok),
        Ok(vec![TextOf {
            element: "Say".into(),
            text: "1 < 2".into()
        }])
    );
    for broken in [
        "<Response><Say>a</Response>",
        "<Response><Say>a & b</Say></Response>",
        "<Response><Say a=x>a</Say></Response>",
        "<Response><Say a=\"<\">a</Say></Response>",
        "<Response>&nbsp;</Response>",
        "<Response></Response><Response></Response>",
        "<Say>a</Say>",
        "<Response>",
    ] {
        assert!(
            well_formed(&format!("{head}{broken}")).is_err(),
            "accepted {broken}"
        );
    }
    assert!(
        well_formed("<Response></Response>").is_err(),
        "no declaration"
    );
}

// ---------------------------------------------------------------------------------------------
// Replies
// ---------------------------------------------------------------------------------------------

fn audio() -> AudioBase {
    AudioBase::new("https://gw.example.org")
}

/// An action URL with a query, so `&` in attributes must be escaped.
const ACTION: &str = "https://gw.example.org/voice/at?flow=community_needs&lang=en";

fn say(text: &str) -> VoicePart {
    VoicePart::Say {
        text: text.into(),
        language: "en".into(),
    }
}

fn prompt(parts: Vec<VoicePart>) -> VoicePrompt {
    VoicePrompt {
        parts,
        gather: None,
        record: None,
        language: "en".into(),
        end: false,
    }
}

fn menu_gather() -> Option<Gather> {
    Some(Gather {
        num_digits: Some(1),
        finish_on_key: None,
        timeout_seconds: 10,
    })
}

/// Reply cases shared by both providers: (name, reply).
fn replies() -> Vec<(&'static str, VoiceReply)> {
    let menu = VoicePrompt {
        gather: menu_gather(),
        ..prompt(vec![
            say("What should the county fix first in Kisumu <Ndogo> & \"Stage\" 'B'?"),
            VoicePart::Play {
                audio: "en/water menu.mp3".into(),
                text: "For water, press 1".into(),
            },
            say("For roads, press 2"),
        ])
    };
    let number = VoicePrompt {
        gather: Some(Gather {
            num_digits: None,
            finish_on_key: Some('#'),
            timeout_seconds: 15,
        }),
        ..prompt(vec![
            say("How many people live in your household?"),
            say("Press the hash key when you are done."),
        ])
    };
    let invalid = VoicePrompt {
        gather: menu_gather(),
        ..prompt(vec![
            say("Sorry, that is not one of the choices."),
            say("How satisfied are you? For satisfied, press 1"),
            say("For not satisfied, press 2"),
        ])
    };
    let recording = VoicePrompt {
        record: Some(RecordSpec {
            max_length_seconds: 60,
            finish_on_key: '#',
        }),
        ..prompt(vec![
            say("Please describe the problem after the beep."),
            say("Press the hash key when you are done."),
        ])
    };
    let swahili_with_bad_audio = VoicePrompt {
        gather: menu_gather(),
        language: "sw".into(),
        ..prompt(vec![
            VoicePart::Say {
                text: "Karibu.".into(),
                language: "sw".into(),
            },
            VoicePart::Play {
                audio: "../secrets/key.mp3".into(),
                text: "Kwa maji, bonyeza 1".into(),
            },
        ])
    };
    let goodbye = VoicePrompt {
        end: true,
        ..prompt(vec![say("Thank you. Your reference is AB12.")])
    };
    vec![
        (
            "menu",
            VoiceReply::Prompt {
                prompt: menu,
                action_url: ACTION.into(),
            },
        ),
        (
            "number",
            VoiceReply::Prompt {
                prompt: number,
                action_url: ACTION.into(),
            },
        ),
        (
            "invalid_reprompt",
            VoiceReply::Prompt {
                prompt: invalid,
                action_url: ACTION.into(),
            },
        ),
        (
            "recording",
            VoiceReply::Prompt {
                prompt: recording,
                action_url: ACTION.into(),
            },
        ),
        (
            "swahili_bad_audio_path",
            VoiceReply::Prompt {
                prompt: swahili_with_bad_audio,
                action_url: ACTION.into(),
            },
        ),
        (
            "end_screen",
            VoiceReply::Prompt {
                prompt: goodbye.clone(),
                action_url: ACTION.into(),
            },
        ),
        (
            "hangup_goodbye",
            VoiceReply::Hangup {
                goodbye: Some(goodbye),
            },
        ),
        ("hangup_silent", VoiceReply::Hangup { goodbye: None }),
        ("reject_missed_call", VoiceReply::Reject),
    ]
}

type Render = fn(&VoiceReply, &AudioBase) -> String;

fn providers() -> [(&'static str, Render); 2] {
    [
        ("africastalking", africastalking::render),
        ("twiml", twiml::render),
    ]
}

#[test]
fn replies_render_to_the_expected_xml() {
    for (provider, render) in providers() {
        for (case, reply) in replies() {
            let xml = render(&reply, &audio());
            if let Err(problem) = well_formed(&xml) {
                panic!("{provider} {case}: {problem}\n{xml}");
            }
            insta::assert_snapshot!(format!("{provider}_{case}"), xml);
        }
    }
}

#[test]
fn text_and_urls_survive_escaping() {
    for (provider, render) in providers() {
        let (_, menu) = &replies()[0];
        let xml = render(menu, &audio());
        assert!(
            !xml.contains("<Ndogo>")
                && xml.contains("&lt;Ndogo&gt; &amp; &quot;Stage&quot; &apos;B&apos;"),
            "{provider}: {xml}"
        );
        assert!(
            xml.contains("flow=community_needs&amp;lang=en"),
            "{provider}: {xml}"
        );
        let texts = well_formed(&xml).expect("well-formed");
        assert_eq!(
            texts[0],
            TextOf {
                element: "Say".into(),
                text: "What should the county fix first in Kisumu <Ndogo> & \"Stage\" 'B'?".into()
            },
            "{provider}"
        );
        let redirect = texts.last().expect("a redirect");
        assert_eq!(
            redirect,
            &TextOf {
                element: "Redirect".into(),
                text: format!("{ACTION}&noinput=1")
            },
            "{provider}"
        );
    }
}

#[test]
fn waiting_prompts_nest_and_end_as_each_provider_needs() {
    let all = replies();
    let reply = |name: &str| &all.iter().find(|(n, _)| *n == name).expect("case").1;
    let at = |name| africastalking::render(reply(name), &audio());
    let tw = |name| twiml::render(reply(name), &audio());

    // Menus stop after one key; a number waits for `#`.
    assert!(at("menu").contains(r#"<GetDigits timeout="10" numDigits="1" callbackUrl="#));
    assert!(at("number").contains(r##"<GetDigits timeout="15" finishOnKey="#" callbackUrl="##));
    assert!(
        tw("menu")
            .contains(r#"<Gather input="dtmf" numDigits="1" timeout="10" finishOnKey="" action="#)
    );
    assert!(
        tw("number").contains(r##"<Gather input="dtmf" timeout="15" finishOnKey="#" action="##)
    );
    // Recorded prompts are played from the audio folder, the name percent-encoded.
    assert!(
        at("menu").contains(r#"<Play url="https://gw.example.org/audio/en/water%20menu.mp3"/>"#)
    );
    assert!(tw("menu").contains("<Play>https://gw.example.org/audio/en/water%20menu.mp3</Play>"));
    // A path that would leave the audio folder is never played: its text is said instead.
    for xml in [at("swahili_bad_audio_path"), tw("swahili_bad_audio_path")] {
        assert!(
            !xml.contains("secrets") && xml.contains("Kwa maji, bonyeza 1"),
            "{xml}"
        );
    }
    // Invalid input re-prompts with the apology first, inside the gather.
    for xml in [at("invalid_reprompt"), tw("invalid_reprompt")] {
        let sorry = xml.find("Sorry").expect("apology");
        let gather = xml
            .find("<GetDigits")
            .or(xml.find("<Gather"))
            .expect("gather");
        assert!(gather < sorry, "{xml}");
    }
    // End screens and hang-ups never wait, never redirect, and hang up.
    for name in ["end_screen", "hangup_goodbye", "hangup_silent"] {
        for xml in [at(name), tw(name)] {
            assert!(xml.contains("<Hangup/>"), "{xml}");
            assert!(
                !xml.contains("Gather") && !xml.contains("GetDigits") && !xml.contains("Redirect"),
                "{xml}"
            );
        }
    }
    // The missed call is rejected, with nothing else said.
    assert!(at("reject_missed_call").contains("<Response>\n  <Reject/>\n</Response>"));
    assert!(
        tw("reject_missed_call")
            .contains("<Response>\n  <Reject reason=\"rejected\"/>\n</Response>")
    );
}

// ---------------------------------------------------------------------------------------------
// Callbacks
// ---------------------------------------------------------------------------------------------

const CITIZEN: &str = "+254711000001";
const OUR_NUMBER: &str = "+254205000000";

fn request(
    provider: VoiceProvider,
    call_id: &str,
    direction: CallDirection,
    call_over: bool,
    event: VoiceEvent,
) -> VoiceRequest {
    let (caller, callee) = match direction {
        CallDirection::Inbound => (CITIZEN, OUR_NUMBER),
        CallDirection::Outbound => (OUR_NUMBER, CITIZEN),
    };
    VoiceRequest {
        provider,
        call_id: call_id.into(),
        caller: caller.into(),
        callee: callee.into(),
        direction,
        call_over,
        event,
    }
}

#[test]
fn africastalking_callbacks_parse_exactly() {
    let inbound = "sessionId=ATVId_5f1&direction=Inbound&callerNumber=%2B254711000001&destinationNumber=%2B254205000000";
    let outbound = "sessionId=ATVId_5f1&direction=Outbound&callerNumber=%2B254205000000&destinationNumber=%2B254711000001";
    let rec = "recordingUrl=https%3A%2F%2Fvoice.africastalking.com%2Frecordings%2Fa1.mp3";
    let at = |direction, call_over, event| {
        request(
            VoiceProvider::AfricasTalking,
            "ATVId_5f1",
            direction,
            call_over,
            event,
        )
    };
    use CallDirection::{Inbound, Outbound};
    let cases: Vec<(&str, String, &str, VoiceRequest)> = vec![
        (
            "call answered",
            format!("isActive=1&{inbound}"),
            "",
            at(Inbound, false, VoiceEvent::CallStarted),
        ),
        (
            "outbound call answered",
            format!("isActive=1&{outbound}"),
            "",
            at(Outbound, false, VoiceEvent::CallStarted),
        ),
        (
            "menu key",
            format!("isActive=1&{inbound}&dtmfDigits=1"),
            "",
            at(Inbound, false, VoiceEvent::Digits("1".into())),
        ),
        (
            "number ended by #",
            format!("isActive=1&{inbound}&dtmfDigits=42%23"),
            "",
            at(Inbound, false, VoiceEvent::Digits("42".into())),
        ),
        (
            "only the finishing key",
            format!("isActive=1&{inbound}&dtmfDigits=%23"),
            "",
            at(Inbound, false, VoiceEvent::NoInput),
        ),
        (
            "no input redirect",
            format!("isActive=1&{inbound}"),
            "?flow=x&noinput=1",
            at(Inbound, false, VoiceEvent::NoInput),
        ),
        (
            "recording",
            format!("isActive=1&{inbound}&{rec}"),
            "",
            at(
                Inbound,
                false,
                VoiceEvent::Recording {
                    url: "https://voice.africastalking.com/recordings/a1.mp3".into(),
                    duration_seconds: 0,
                },
            ),
        ),
        (
            "nothing recorded",
            format!("isActive=1&{inbound}&recordingUrl="),
            "",
            at(Inbound, false, VoiceEvent::NoInput),
        ),
        (
            "hang-up",
            format!(
                "isActive=0&{inbound}&durationInSeconds=95&callSessionState=Completed&status=Success&currencyCode=KES&amount=2.50"
            ),
            "",
            at(
                Inbound,
                true,
                VoiceEvent::Ended {
                    status: "Completed".into(),
                    duration_seconds: Some(95),
                },
            ),
        ),
        (
            "hang-up without state",
            format!("isActive=0&{outbound}&hangupCause=NO_ANSWER"),
            "",
            at(
                Outbound,
                true,
                VoiceEvent::Ended {
                    status: "NO_ANSWER".into(),
                    duration_seconds: None,
                },
            ),
        ),
        (
            "hung up while recording",
            format!("isActive=0&{inbound}&{rec}&durationInSeconds=30"),
            "",
            at(
                Inbound,
                true,
                VoiceEvent::Recording {
                    url: "https://voice.africastalking.com/recordings/a1.mp3".into(),
                    duration_seconds: 0,
                },
            ),
        ),
    ];
    for (name, body, query, expected) in cases {
        assert_eq!(
            africastalking::parse_with_query(body.as_bytes(), query),
            Ok(expected),
            "{name}"
        );
    }
    // Without a query string the no-input flag is simply absent.
    assert_eq!(
        africastalking::parse(format!("isActive=1&{inbound}").as_bytes()).map(|r| r.event),
        Ok(VoiceEvent::CallStarted)
    );
    let outbound_call = africastalking::parse(format!("isActive=1&{outbound}").as_bytes());
    assert_eq!(
        outbound_call.as_ref().map(VoiceRequest::citizen),
        Ok(CITIZEN)
    );
}

#[test]
fn twiml_callbacks_parse_exactly() {
    let inbound =
        "CallSid=CA8f2e&AccountSid=AC1&From=%2B254711000001&To=%2B254205000000&Direction=inbound";
    let outbound = "CallSid=CA8f2e&AccountSid=AC1&From=%2B254205000000&To=%2B254711000001&Direction=outbound-api";
    let rec = "RecordingUrl=https%3A%2F%2Fapi.twilio.com%2F2010-04-01%2FAccounts%2FAC1%2FRecordings%2FRE1&RecordingDuration=7";
    let tw = |direction, call_over, event| {
        request(VoiceProvider::Twiml, "CA8f2e", direction, call_over, event)
    };
    use CallDirection::{Inbound, Outbound};
    let recorded = || VoiceEvent::Recording {
        url: "https://api.twilio.com/2010-04-01/Accounts/AC1/Recordings/RE1".into(),
        duration_seconds: 7,
    };
    let cases: Vec<(&str, String, &str, VoiceRequest)> = vec![
        (
            "call ringing in",
            format!("{inbound}&CallStatus=ringing"),
            "",
            tw(Inbound, false, VoiceEvent::CallStarted),
        ),
        (
            "outbound call answered",
            format!("{outbound}&CallStatus=in-progress"),
            "",
            tw(Outbound, false, VoiceEvent::CallStarted),
        ),
        (
            "menu key",
            format!("{inbound}&CallStatus=in-progress&Digits=1"),
            "",
            tw(Inbound, false, VoiceEvent::Digits("1".into())),
        ),
        (
            "number",
            format!("{inbound}&CallStatus=in-progress&Digits=42"),
            "",
            tw(Inbound, false, VoiceEvent::Digits("42".into())),
        ),
        (
            "no input redirect",
            format!("{inbound}&CallStatus=in-progress"),
            "noinput=1",
            tw(Inbound, false, VoiceEvent::NoInput),
        ),
        (
            "recording",
            format!("{inbound}&CallStatus=in-progress&{rec}&Digits=%23"),
            "",
            tw(Inbound, false, recorded()),
        ),
        (
            "hung up while recording",
            format!("{inbound}&CallStatus=completed&{rec}&Digits=hangup"),
            "",
            tw(Inbound, true, recorded()),
        ),
        (
            "hang-up",
            format!("{inbound}&CallStatus=completed&CallDuration=95"),
            "",
            tw(
                Inbound,
                true,
                VoiceEvent::Ended {
                    status: "completed".into(),
                    duration_seconds: Some(95),
                },
            ),
        ),
        (
            "outbound busy",
            format!("{outbound}&CallStatus=busy"),
            "",
            tw(
                Outbound,
                true,
                VoiceEvent::Ended {
                    status: "busy".into(),
                    duration_seconds: None,
                },
            ),
        ),
    ];
    for (name, body, query, expected) in cases {
        assert_eq!(twiml::parse(body.as_bytes(), query), Ok(expected), "{name}");
    }
    // Our side of the call may be a SIP address; the citizen's side must be a number.
    let sip = "CallSid=CA1&From=%2B254711000001&To=sip%3Asurvey%40pbx.example.org&Direction=inbound&CallStatus=ringing";
    assert_eq!(
        twiml::parse(sip.as_bytes(), "").map(|r| r.callee),
        Ok("sip:survey@pbx.example.org".to_string())
    );
}

#[test]
fn bad_africastalking_callbacks_name_the_field() {
    let ok = "isActive=1&sessionId=S&direction=Inbound&callerNumber=%2B254711000001&destinationNumber=%2B254205000000";
    let without = |field: &str| {
        ok.split('&')
            .filter(|pair| !pair.starts_with(&format!("{field}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let cases: Vec<(String, &str, &str)> = vec![
        (without("isActive"), "", "missing field `isActive`"),
        (without("sessionId"), "", "missing field `sessionId`"),
        (without("direction"), "", "missing field `direction`"),
        (without("callerNumber"), "", "missing field `callerNumber`"),
        (
            without("destinationNumber"),
            "",
            "missing field `destinationNumber`",
        ),
        (
            ok.replace("isActive=1", "isActive=yes"),
            "",
            "field `isActive` must be 1 or 0",
        ),
        (
            ok.replace("sessionId=S", "sessionId=+"),
            "",
            "field `sessionId` is empty",
        ),
        (ok.replace("Inbound", "Sideways"), "", "field `direction`"),
        (
            ok.replace("%2B254711000001", "abc"),
            "",
            "field `callerNumber` is not a phone number",
        ),
        (format!("{ok}&dtmfDigits=1a"), "", "field `dtmfDigits`"),
        (
            format!("{ok}&recordingUrl=ftp%3A%2F%2Fx"),
            "",
            "field `recordingUrl` is not an http(s) URL",
        ),
        (
            format!("{ok}&recordingUrl=https%3A%2F%2Fx%2Fa%20b"),
            "",
            "field `recordingUrl` contains spaces",
        ),
        (
            ok.replace("isActive=1", "isActive=0") + "&durationInSeconds=ten",
            "",
            "field `durationInSeconds`",
        ),
        (
            ok.replace("sessionId=S", "sessionId=%zz"),
            "",
            "bad percent-encoding",
        ),
        (ok.to_string(), "noinput=%zz", "query string"),
    ];
    for (body, query, message) in cases {
        let err = africastalking::parse_with_query(body.as_bytes(), query).expect_err(&body);
        assert!(err.0.contains(message), "{body} ? {query} gave: {err}");
    }
    let err = africastalking::parse(b"isActive=1&\xff").expect_err("not UTF-8");
    assert!(err.0.contains("not UTF-8"), "{err}");
}

#[test]
fn bad_twiml_callbacks_name_the_field() {
    let ok = "CallSid=CA1&From=%2B254711000001&To=%2B254205000000&Direction=inbound&CallStatus=in-progress";
    let without = |field: &str| {
        ok.split('&')
            .filter(|pair| !pair.starts_with(&format!("{field}=")))
            .collect::<Vec<_>>()
            .join("&")
    };
    let cases: Vec<(String, &str)> = vec![
        (without("CallSid"), "missing field `CallSid`"),
        (without("From"), "missing field `From`"),
        (without("To"), "missing field `To`"),
        (without("Direction"), "missing field `Direction`"),
        (without("CallStatus"), "missing field `CallStatus`"),
        (
            ok.replace("Direction=inbound", "Direction=sideways"),
            "field `Direction`",
        ),
        (
            ok.replace("From=%2B254711000001", "From=anonymous"),
            "field `From` is not a phone number",
        ),
        (
            ok.replace("Direction=inbound", "Direction=outbound-api")
                .replace("To=%2B254205000000", "To=client%3Aalice"),
            "field `To` is not a phone number",
        ),
        (
            ok.replace("in-progress", "dancing"),
            "field `CallStatus` has unknown value `dancing`",
        ),
        (format!("{ok}&Digits=12x"), "field `Digits`"),
        (
            format!("{ok}&RecordingUrl=https%3A%2F%2Fapi.twilio.com%2FRE1"),
            "missing field `RecordingDuration`",
        ),
        (
            format!("{ok}&RecordingUrl=https%3A%2F%2Fapi.twilio.com%2FRE1&RecordingDuration=-1"),
            "field `RecordingDuration`",
        ),
        (
            format!("{ok}&RecordingUrl=javascript%3Aalert(1)"),
            "field `RecordingUrl` is not an http(s) URL",
        ),
        (
            ok.replace("in-progress", "completed") + "&CallDuration=1.5",
            "field `CallDuration`",
        ),
    ];
    for (body, message) in cases {
        let err = twiml::parse(body.as_bytes(), "").expect_err(&body);
        assert!(err.0.contains(message), "{body} gave: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------------------------

/// Form bodies made of the fields the parsers read, with arbitrary values, so the random cases
/// get past the first required field.
fn field_soup() -> impl Strategy<Value = Vec<u8>> {
    let names = prop_oneof![
        Just("isActive"),
        Just("sessionId"),
        Just("direction"),
        Just("callerNumber"),
        Just("destinationNumber"),
        Just("dtmfDigits"),
        Just("recordingUrl"),
        Just("durationInSeconds"),
        Just("callSessionState"),
        Just("CallSid"),
        Just("From"),
        Just("To"),
        Just("Direction"),
        Just("CallStatus"),
        Just("Digits"),
        Just("RecordingUrl"),
        Just("RecordingDuration"),
        Just("CallDuration"),
    ];
    let value = prop_oneof![
        Just("1".to_string()),
        Just("0".to_string()),
        Just("%2B254711000001".to_string()),
        Just("inbound".to_string()),
        Just("Outbound".to_string()),
        Just("completed".to_string()),
        Just("https%3A%2F%2Fx%2Fr.mp3".to_string()),
        "[0-9#*%+a-zA-Z]{0,12}",
        ".{0,20}",
    ];
    proptest::collection::vec((names, value), 0..14).prop_map(|pairs| {
        pairs
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("&")
            .into_bytes()
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn parsers_never_panic_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        query in ".{0,40}",
    ) {
        let _ = africastalking::parse(&body);
        let _ = africastalking::parse_with_query(&body, &query);
        let _ = twiml::parse(&body, &query);
    }

    #[test]
    fn parsers_never_panic_on_plausible_fields(body in field_soup(), flag in any::<bool>()) {
        let query = if flag { "noinput=1" } else { "" };
        if let Ok(request) = africastalking::parse_with_query(&body, query) {
            prop_assert_eq!(request.provider, VoiceProvider::AfricasTalking);
            prop_assert!(!request.call_id.is_empty());
        }
        if let Ok(request) = twiml::parse(&body, query) {
            prop_assert_eq!(request.provider, VoiceProvider::Twiml);
            prop_assert!(!request.call_id.is_empty());
        }
    }

    #[test]
    fn any_prompt_text_renders_well_formed_and_round_trips(
        text in "\\PC{1,80}",
        audio_path in "[a-z/ .%?#&]{1,20}",
        action in "https://[a-z]{1,8}/v(\\?[a-z&=<>\"']{0,12})?",
    ) {
        let prompt = VoicePrompt {
            gather: menu_gather(),
            ..prompt(vec![
                say(&text),
                VoicePart::Play { audio: audio_path, text: "spoken".into() },
            ])
        };
        let reply = VoiceReply::Prompt { prompt, action_url: action };
        for (provider, render) in providers() {
            let xml = render(&reply, &audio());
            let texts = well_formed(&xml).map_err(|e| TestCaseError::fail(format!("{provider}: {e}\n{xml}")))?;
            let said = texts.iter().find(|t| t.element == "Say").map(|t| t.text.as_str());
            if !text.trim().is_empty() {
                prop_assert_eq!(said, Some(text.as_str()), "{}", provider);
            }
            // Every audio URL (not the spoken text, which may contain anything) is free of
            // `.` and `..` segments.
            for (start, _) in xml.match_indices("/audio/") {
                let url: String = xml[start..]
                    .chars()
                    .take_while(|c| *c != '"' && *c != '<')
                    .collect();
                prop_assert!(
                    !url.split('/').any(|segment| segment == "." || segment == ".."),
                    "{}: dot segment in {}",
                    provider,
                    url
                );
            }
        }
    }
}

#[test]
fn africastalking_final_status_prefers_an_informative_hangup_cause() {
    use baraza::channels::voice::VoiceEvent;
    let body = "isActive=0&sessionId=ATVId_7&direction=Outbound&callerNumber=%2B254205000000&destinationNumber=%2B254711000001&callSessionState=Completed&hangupCause=USER_BUSY";
    let request = africastalking::parse(body.as_bytes()).expect("parses");
    assert!(
        matches!(request.event, VoiceEvent::Ended { ref status, .. } if status == "USER_BUSY"),
        "{:?}",
        request.event
    );
    let normal = body.replace("USER_BUSY", "NORMAL_CLEARING");
    let request = africastalking::parse(normal.as_bytes()).expect("parses");
    assert!(
        matches!(request.event, VoiceEvent::Ended { ref status, .. } if status == "Completed"),
        "{:?}",
        request.event
    );
}

/// Twilio's own published examples of `X-Twilio-Signature` (its security documentation and
/// its Ruby library's request-validator spec), then cases that must not match.
#[test]
fn twilio_signatures_match_the_published_examples() {
    let docs_body = common_form(&[
        ("CallSid", "CA1234567890ABCDE"),
        ("Caller", "+14158675310"),
        ("Digits", "1234"),
        ("From", "+14158675310"),
        ("To", "+18005551212"),
    ]);
    let docs_url = "https://mycompany.com/myapp.php?foo=1&bar=2";
    assert_eq!(
        twiml::signature("12345", docs_url, &docs_body).as_deref(),
        Ok("GvWf1cFY/Q7PnoempGyD5oXAezc=")
    );
    let ruby_spec_body = common_form(&[
        ("ToState", "California"),
        ("CalledState", "California"),
        ("Direction", "inbound"),
        ("FromState", "CA"),
        ("AccountSid", "ACba8bc05eacf94afdae398e642c9cc32d"),
        ("Caller", "+14153595711"),
        ("CallerZip", "94108"),
        ("CallerCountry", "US"),
        ("From", "+14153595711"),
        ("FromCity", "SAN FRANCISCO"),
        ("CallerCity", "SAN FRANCISCO"),
        ("To", "+14157669926"),
        ("FromZip", "94108"),
        ("FromCountry", "US"),
        ("ToCity", ""),
        ("CallStatus", "ringing"),
        ("CalledCity", ""),
        ("CallerState", "CA"),
        ("CalledZip", ""),
        ("ToZip", ""),
        ("ToCountry", "US"),
        ("CallSid", "CA136d09cd59a3c0ec8dbff44da5c03f31"),
        ("CalledCountry", "US"),
        ("Called", "+14157669926"),
        ("ApiVersion", "2010-04-01"),
        ("ApplicationSid", "AP44efecad51364e80b133bb7c07eb8204"),
    ]);
    assert_eq!(
        twiml::signature(
            "2bd9e9638872de601313dc77410d3b23",
            "http://twiliotests.heroku.com/validate/voice",
            &ruby_spec_body
        )
        .as_deref(),
        Ok("oVb2kXoVy8GEfwBDjR8bk/ZZ6eA=")
    );
    // Field order on the wire does not matter; the URL, the values and the key do.
    let reordered = common_form(&[
        ("To", "+18005551212"),
        ("Digits", "1234"),
        ("CallSid", "CA1234567890ABCDE"),
        ("From", "+14158675310"),
        ("Caller", "+14158675310"),
    ]);
    assert_eq!(
        twiml::signature("12345", docs_url, &reordered).as_deref(),
        Ok("GvWf1cFY/Q7PnoempGyD5oXAezc=")
    );
    let changed_digit = String::from_utf8(docs_body.clone())
        .expect("utf8")
        .replace("Digits=1234", "Digits=1235");
    for (what, key, url, body) in [
        ("another key", "12346", docs_url, docs_body.clone()),
        (
            "another URL",
            "12345",
            "https://mycompany.com/myapp.php?foo=1&bar=3",
            docs_body.clone(),
        ),
        (
            "another value",
            "12345",
            docs_url,
            changed_digit.into_bytes(),
        ),
    ] {
        assert_ne!(
            twiml::signature(key, url, &body).as_deref(),
            Ok("GvWf1cFY/Q7PnoempGyD5oXAezc="),
            "{what}"
        );
    }
}

fn common_form(fields: &[(&str, &str)]) -> Vec<u8> {
    fields
        .iter()
        .map(|(k, v)| {
            let enc = |s: &str| {
                s.bytes()
                    .map(|b| match b {
                        b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                            (b as char).to_string()
                        }
                        b' ' => "+".to_string(),
                        _ => format!("%{b:02X}"),
                    })
                    .collect::<String>()
            };
            format!("{}={}", enc(k), enc(v))
        })
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}
