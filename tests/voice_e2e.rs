//! Voice over the providers' webhooks, end to end through the real router: recorded prompts
//! served from the audio folder, and whole flows driven by simulated provider callbacks.

mod common;

use axum::http::StatusCode;
use common::Stores;

#[tokio::test]
async fn audio_files_are_served_with_type_and_caching_and_never_outside_the_folder() {
    let audio = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(audio.path().join("sw")).expect("mkdir");
    std::fs::write(audio.path().join("sw/karibu.mp3"), b"ID3fake-mp3").expect("write");
    std::fs::write(audio.path().join("welcome.wav"), b"RIFFfake-wav").expect("write");
    let outside = audio.path().parent().expect("parent").join("secret.txt");
    std::fs::write(&outside, b"not for callers").expect("write");
    let folder = audio.path().to_path_buf();
    let gw = common::start_with(Stores::MemorySqlite, move |c| c.voice.audio_dir = folder).await;

    let request = |path: &str| {
        axum::http::Request::builder()
            .uri(path)
            .body(axum::body::Body::empty())
            .expect("request")
    };
    use tower::ServiceExt;
    let response = gw
        .app
        .clone()
        .oneshot(request("/audio/sw/karibu.mp3"))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "audio/mpeg");
    assert_eq!(response.headers()["cache-control"], "public, max-age=86400");
    let body = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    assert_eq!(&body[..], b"ID3fake-mp3");

    let response = gw
        .app
        .clone()
        .oneshot(request("/audio/welcome.wav"))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap_or("")
            .contains("wav")
    );

    for escape in [
        "/audio/../secret.txt",
        "/audio/%2e%2e/secret.txt",
        "/audio/sw/../../secret.txt",
        "/audio/..%2fsecret.txt",
        "/audio/missing.mp3",
        "/audio/",
    ] {
        let response = gw
            .app
            .clone()
            .oneshot(request(escape))
            .await
            .expect("answer");
        assert!(
            response.status().is_client_error(),
            "{escape} must be refused, got {}",
            response.status()
        );
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .expect("body");
        assert!(
            !body.windows(15).any(|w| w == b"not for callers"),
            "{escape} leaked a file"
        );
    }
    let _ = std::fs::remove_file(outside);
    gw.cleanup().await;
}

const CITIZEN: &str = "+254711000001";
const COMPLAINTS_LINE: &str = "+254205000000";

async fn voice_gateway(stores: Stores) -> common::TestGateway {
    common::start_with(stores, |c| {
        c.voice.public_url = "https://gw.example.org".into();
        c.voice.numbers = vec![baraza::config::VoiceNumber {
            number: COMPLAINTS_LINE.into(),
            flow: "grievance".into(),
        }];
        c.voice.default_flow = Some("service_feedback".into());
    })
    .await
}

/// One Africa's Talking voice callback; returns the XML reply.
async fn at_voice(
    gw: &common::TestGateway,
    call: &str,
    query: &str,
    fields: &[(&str, &str)],
) -> String {
    let mut all = vec![
        ("sessionId", call),
        ("direction", "Inbound"),
        ("callerNumber", CITIZEN),
        ("destinationNumber", COMPLAINTS_LINE),
    ];
    all.extend_from_slice(fields);
    let path = if query.is_empty() {
        "/voice/africastalking".to_string()
    } else {
        format!("/voice/africastalking?{query}")
    };
    let (status, xml) = gw
        .post(
            &path,
            "application/x-www-form-urlencoded",
            common::form(&all),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    assert!(xml.starts_with("<?xml"), "{xml}");
    xml
}

async fn complaint_by_voice(stores: Stores) {
    let gw = voice_gateway(stores).await;
    let first = at_voice(&gw, "ATVId_1", "", &[("isActive", "1")]).await;
    assert!(
        first.contains("<GetDigits") && first.contains("Choose language"),
        "{first}"
    );
    assert!(
        first.contains("callbackUrl=\"https://gw.example.org/voice/africastalking\""),
        "{first}"
    );
    let category = at_voice(
        &gw,
        "ATVId_1",
        "",
        &[("isActive", "1"), ("dtmfDigits", "1")],
    )
    .await;
    assert!(
        category.contains("For Water and sewage, press 1."),
        "{category}"
    );
    let describe = at_voice(
        &gw,
        "ATVId_1",
        "",
        &[("isActive", "1"), ("dtmfDigits", "6")],
    )
    .await;
    assert!(
        describe.contains("<Record"),
        "the description is spoken: {describe}"
    );
    let location = at_voice(
        &gw,
        "ATVId_1",
        "",
        &[
            ("isActive", "1"),
            ("recordingUrl", "https://voice.example/rec/a1.mp3"),
        ],
    )
    .await;
    assert!(location.contains("Where is it?"), "{location}");
    let end = at_voice(
        &gw,
        "ATVId_1",
        "",
        &[("isActive", "1"), ("dtmfDigits", "0")],
    )
    .await;
    assert!(
        end.contains("Your complaint is registered. Reference:"),
        "{end}"
    );
    assert!(end.contains("<Hangup"), "{end}");
    // The provider's final callback after the goodbye changes nothing.
    at_voice(
        &gw,
        "ATVId_1",
        "",
        &[("isActive", "0"), ("durationInSeconds", "95")],
    )
    .await;

    let rows = gw.responses("grievance").await;
    assert_eq!(rows.len(), 1);
    let row = &rows[0];
    assert_eq!(row.channel, "voice");
    assert_eq!(row.provider, "africastalking");
    assert_eq!(row.subscriber, CITIZEN);
    assert_eq!(row.status, baraza::result_store::ResponseStatus::Completed);
    assert_eq!(
        row.answers.get("category").map(|(v, _)| v.as_str()),
        Some("conduct")
    );
    assert_eq!(
        row.answers.get("description").map(|(v, _)| v.as_str()),
        Some("https://voice.example/rec/a1.mp3"),
        "the recording URL is the answer"
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn a_complaint_by_voice_over_africastalking_memory_sqlite() {
    complaint_by_voice(Stores::MemorySqlite).await;
}

#[tokio::test]
async fn a_complaint_by_voice_over_africastalking_redis_postgres() {
    complaint_by_voice(Stores::RedisPostgres).await;
}

/// One TwiML callback.
async fn twiml(
    gw: &common::TestGateway,
    call: &str,
    to: &str,
    query: &str,
    fields: &[(&str, &str)],
) -> String {
    let mut all = vec![
        ("CallSid", call),
        ("AccountSid", "AC1"),
        ("From", CITIZEN),
        ("To", to),
        ("Direction", "inbound"),
    ];
    all.extend_from_slice(fields);
    let path = if query.is_empty() {
        "/voice/twiml".to_string()
    } else {
        format!("/voice/twiml?{query}")
    };
    let (status, xml) = gw
        .post(
            &path,
            "application/x-www-form-urlencoded",
            common::form(&all),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{xml}");
    xml
}

/// The service feedback flow over TwiML, with the keys its voice snapshot uses; the stored
/// answers must be the simulator's.
#[tokio::test]
async fn service_feedback_over_twiml_stores_what_the_simulator_saves() {
    let gw = voice_gateway(Stores::MemorySqlite).await;
    let script = "3,*,4,1,31022026,15012026";
    let source =
        std::fs::read_to_string(common::manifest_dir().join("flows/service_feedback.yaml"))
            .expect("flow");
    let flow = baraza::flow::load_str("service_feedback.yaml", &source)
        .expect("loads")
        .flow;
    let compiled = baraza::engine::CompiledFlow::compile(flow).expect("compiles");
    let mut simulation = baraza::simulator::Simulation::new(
        &compiled,
        baraza::simulator::Options {
            channel: baraza::engine::Channel::Voice,
            ..Default::default()
        },
    );
    simulation.dial();
    for item in baraza::simulator::parse_script(script) {
        simulation.feed(&item);
    }

    let other_number = "+254209999999";
    let first = twiml(&gw, "CA1", other_number, "", &[("CallStatus", "ringing")]).await;
    assert!(first.contains("<Gather input=\"dtmf\""), "{first}");
    let mut last = first;
    for keys in script.split(',') {
        last = twiml(
            &gw,
            "CA1",
            other_number,
            "",
            &[("CallStatus", "in-progress"), ("Digits", keys)],
        )
        .await;
    }
    assert!(last.contains("<Hangup"), "the flow ends: {last}");
    let (status, _) = gw
        .post(
            "/voice/twiml/status",
            "application/x-www-form-urlencoded",
            common::form(&[
                ("CallSid", "CA1"),
                ("From", CITIZEN),
                ("To", other_number),
                ("Direction", "inbound"),
                ("CallStatus", "completed"),
                ("CallDuration", "80"),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let rows = gw.responses("service_feedback").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].status,
        baraza::result_store::ResponseStatus::Completed
    );
    let stored: std::collections::BTreeMap<String, String> = rows[0]
        .answers
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    let expected: std::collections::BTreeMap<String, String> = simulation
        .saved
        .iter()
        .map(|(k, v, _)| (k.clone(), v.clone()))
        .collect();
    assert_eq!(stored, expected);
    gw.cleanup().await;
}

/// Which provider's callbacks a test sends.
#[derive(Clone, Copy)]
enum Provider {
    AfricasTalking,
    Twiml,
}

/// Service feedback by voice with the back key: rating 2 leads to "What went wrong?", where 0
/// goes back to the rating; the caller answers 4 instead, and the stored rating is 4.
async fn going_back_changes_the_stored_answer(provider: Provider, stores: Stores) {
    let gw = voice_gateway(stores).await;
    let other_number = "+254209999999";
    let call = |fields: Vec<(&'static str, String)>| {
        let gw = &gw;
        async move {
            let mut all: Vec<(&str, String)> = match provider {
                Provider::AfricasTalking => vec![
                    ("sessionId", "ATVId_back".into()),
                    ("direction", "Inbound".into()),
                    ("callerNumber", CITIZEN.into()),
                    ("destinationNumber", other_number.into()),
                    ("isActive", "1".into()),
                ],
                Provider::Twiml => vec![
                    ("CallSid", "CAback".into()),
                    ("AccountSid", "AC1".into()),
                    ("From", CITIZEN.into()),
                    ("To", other_number.into()),
                    ("Direction", "inbound".into()),
                    ("CallStatus", "in-progress".into()),
                ],
            };
            all.extend(fields);
            let path = match provider {
                Provider::AfricasTalking => "/voice/africastalking",
                Provider::Twiml => "/voice/twiml",
            };
            let pairs: Vec<(&str, &str)> = all.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, xml) = gw
                .post(
                    path,
                    "application/x-www-form-urlencoded",
                    common::form(&pairs),
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{xml}");
            xml
        }
    };
    let keys_field = match provider {
        Provider::AfricasTalking => "dtmfDigits",
        Provider::Twiml => "Digits",
    };
    let first = call(Vec::new()).await;
    assert!(
        first.contains("Which service?") && !first.contains("To go back"),
        "{first}"
    );
    let mut replies = Vec::new();
    for keys in ["3", "2", "0", "4", "1", "15012026"] {
        replies.push(call(vec![(keys_field, keys.to_string())]).await);
    }
    assert!(replies[1].contains("What went wrong?"), "{}", replies[1]);
    assert!(
        replies[1].contains("To go back, press 0."),
        "{}",
        replies[1]
    );
    assert!(
        replies[2].contains("How would you rate it?"),
        "0 went back to the rating: {}",
        replies[2]
    );
    assert!(
        replies[5].contains("<Hangup"),
        "the flow ends: {}",
        replies[5]
    );

    let rows = gw.responses("service_feedback").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].status,
        baraza::result_store::ResponseStatus::Completed
    );
    let answer = |name: &str| rows[0].answers.get(name).map(|(v, _)| v.clone());
    assert_eq!(answer("service").as_deref(), Some("ecde"));
    assert_eq!(
        answer("rating").as_deref(),
        Some("4"),
        "the answer given again wins"
    );
    assert_eq!(answer("got_service").as_deref(), Some("yes"));
    assert_eq!(answer("visit_date").as_deref(), Some("2026-01-15"));
    gw.cleanup().await;
}

#[tokio::test]
async fn going_back_by_voice_over_africastalking_changes_the_stored_answer() {
    going_back_changes_the_stored_answer(Provider::AfricasTalking, Stores::MemorySqlite).await;
}

#[tokio::test]
async fn going_back_by_voice_over_twiml_changes_the_stored_answer() {
    going_back_changes_the_stored_answer(Provider::Twiml, Stores::RedisPostgres).await;
}

#[tokio::test]
async fn a_hang_up_mid_flow_keeps_the_answers_and_the_next_call_continues() {
    let gw = voice_gateway(Stores::RedisPostgres).await;
    at_voice(&gw, "ATVId_2", "", &[("isActive", "1")]).await;
    at_voice(
        &gw,
        "ATVId_2",
        "",
        &[("isActive", "1"), ("dtmfDigits", "2")],
    )
    .await; // Kiswahili
    at_voice(
        &gw,
        "ATVId_2",
        "",
        &[("isActive", "1"), ("dtmfDigits", "3")],
    )
    .await; // roads
    at_voice(
        &gw,
        "ATVId_2",
        "",
        &[("isActive", "0"), ("status", "Aborted")],
    )
    .await;
    let rows = gw.responses("grievance").await;
    assert_eq!(
        rows[0].status,
        baraza::result_store::ResponseStatus::Dropped
    );
    assert_eq!(
        rows[0].answers.get("category").map(|(v, _)| v.as_str()),
        Some("roads")
    );

    // A new call from the same number: offered to continue, in Swahili.
    let offer = at_voice(&gw, "ATVId_3", "", &[("isActive", "1")]).await;
    assert!(offer.contains("bonyeza 1"), "{offer}");
    let resumed = at_voice(
        &gw,
        "ATVId_3",
        "",
        &[("isActive", "1"), ("dtmfDigits", "1")],
    )
    .await;
    assert!(
        resumed.contains("<Record"),
        "continues at the description: {resumed}"
    );
    gw.cleanup().await;
}

#[tokio::test]
async fn silence_asks_again_then_says_goodbye() {
    let gw = voice_gateway(Stores::MemorySqlite).await;
    at_voice(&gw, "ATVId_4", "", &[("isActive", "1")]).await;
    let again = at_voice(&gw, "ATVId_4", "noinput=1", &[("isActive", "1")]).await;
    assert!(
        again.contains("Sorry, we did not hear an answer.")
            || again.contains("Samahani, hatukusikia jibu."),
        "{again}"
    );
    assert!(again.contains("<GetDigits"), "{again}");
    at_voice(&gw, "ATVId_4", "noinput=1", &[("isActive", "1")]).await;
    let goodbye = at_voice(&gw, "ATVId_4", "noinput=1", &[("isActive", "1")]).await;
    assert!(goodbye.contains("<Hangup"), "{goodbye}");
    assert!(!goodbye.contains("<GetDigits"), "{goodbye}");
    gw.cleanup().await;
}

#[tokio::test]
async fn calls_to_unknown_numbers_are_rejected_and_bad_callbacks_get_400() {
    let gw = common::start_with(Stores::MemorySqlite, |c| c.voice.default_flow = None).await;
    let (status, xml) = gw
        .post(
            "/voice/africastalking",
            "application/x-www-form-urlencoded",
            common::form(&[
                ("isActive", "1"),
                ("sessionId", "ATVId_9"),
                ("direction", "Inbound"),
                ("callerNumber", CITIZEN),
                ("destinationNumber", "+254200000000"),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(xml.contains("<Reject"), "{xml}");
    assert!(
        gw.gateway
            .results
            .responses("service_feedback")
            .await
            .expect("rows")
            .is_empty()
    );

    for (path, body, names) in [
        (
            "/voice/africastalking",
            "isActive=1&direction=Inbound",
            "sessionId",
        ),
        (
            "/voice/twiml",
            "From=%2B254711000001&To=%2B254205000000",
            "CallSid",
        ),
        ("/voice/twiml/status", "CallSid=x", "Direction"),
    ] {
        let (status, message) = gw
            .post(
                path,
                "application/x-www-form-urlencoded",
                body.as_bytes().to_vec(),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {message}");
        assert!(message.contains(names), "{path}: {message}");
    }
    gw.cleanup().await;
}

#[tokio::test]
async fn keys_for_an_unknown_call_start_nothing() {
    let gw = voice_gateway(Stores::MemorySqlite).await;
    let xml = at_voice(
        &gw,
        "ATVId_unknown",
        "",
        &[("isActive", "1"), ("dtmfDigits", "1")],
    )
    .await;
    assert!(xml.contains("<Hangup"), "{xml}");
    assert!(
        !xml.contains("<GetDigits") && !xml.contains("<Say"),
        "nothing is said: {xml}"
    );
    let (status, twiml_reply) = gw
        .post(
            "/voice/twiml",
            "application/x-www-form-urlencoded",
            common::form(&[
                ("CallSid", "CA-forged"),
                ("From", CITIZEN),
                ("To", COMPLAINTS_LINE),
                ("Direction", "inbound"),
                ("CallStatus", "in-progress"),
                ("Digits", "3"),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(twiml_reply.contains("<Hangup"), "{twiml_reply}");
    for flow in ["grievance", "service_feedback"] {
        let rows = gw.gateway.results.responses(flow).await.expect("rows");
        assert!(rows.is_empty(), "nothing started for {flow}: {rows:?}");
    }
    gw.cleanup().await;
}

#[tokio::test]
async fn a_flow_without_recordings_or_text_to_speech_is_not_read_out() {
    // The e2e fixture flow names no recording and allows no text-to-speech.
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.voice.numbers = vec![baraza::config::VoiceNumber {
            number: "+254205000111".into(),
            flow: "e2e_survey".into(),
        }];
        c.voice.default_flow = None;
    })
    .await;
    let (status, xml) = gw
        .post(
            "/voice/africastalking",
            "application/x-www-form-urlencoded",
            common::form(&[
                ("isActive", "1"),
                ("sessionId", "ATVId_tts"),
                ("direction", "Inbound"),
                ("callerNumber", CITIZEN),
                ("destinationNumber", "+254205000111"),
            ]),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(xml.contains("<Reject"), "{xml}");
    assert!(
        gw.gateway
            .results
            .responses("e2e_survey")
            .await
            .expect("rows")
            .is_empty()
    );
    gw.cleanup().await;
}
