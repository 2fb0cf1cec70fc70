//! Contacts reach flows: a session of a flow that reads contact data starts with the
//! citizen's stored contact (`{{ contact.name }}`, a branch on a location field), over USSD,
//! SMS and voice, on both store pairs; a number without a contact takes the branch's default.

mod common;

use baraza::config::{Keyword, ServiceCode};
use baraza::result_store::{ContactBatch, ContactRecord};
use common::{Stores, TestGateway};

const FLOW: &str = r#"
id: contact_check
version: 1
name: {en: Contact check}
languages: [en]
default_language: en
voice:
  tts_languages: [en]
start: route
nodes:
  route:
    type: branch
    rules:
      - when: {contact: ward, equals: kondele}
        next: kondele
    default: elsewhere
  kondele:
    type: question
    text: {en: "Hello {{ contact.name }} of Kondele. What needs fixing?"}
    result: issue
    next: done
  elsewhere:
    type: question
    text: {en: "Hello. Which ward do you live in?"}
    result: ward
    next: done
  done:
    type: end
    text: {en: "Thank you."}
"#;

const KNOWN: &str = "+254712000801";
const VOICE_LINE: &str = "+254205000777";
const UNKNOWN: &str = "+254712000802";

async fn gateway(stores: Stores) -> TestGateway {
    let gw = common::start_with(stores, |config| {
        std::fs::write(config.flows_dir.join("contact_check.yaml"), FLOW).expect("write flow");
        config.ussd.service_codes.push(ServiceCode {
            code: "*777#".into(),
            flow: "contact_check".into(),
        });
        config.voice.public_url = "https://gw.example.org".into();
        config.voice.numbers.push(baraza::config::VoiceNumber {
            number: VOICE_LINE.into(),
            flow: "contact_check".into(),
        });
        config.smpp.keywords.push(Keyword {
            keyword: "HUJAMBO".into(),
            flow: "contact_check".into(),
            language: None,
        });
    })
    .await;
    let contact = ContactRecord {
        msisdn: KNOWN.to_string(),
        name: Some("Wanjiru Achieng'".to_string()),
        language: None,
        channel: None,
        gender: None,
        birth_year: None,
        age_band: None,
        operator: None,
        fields: [("ward".to_string(), "Kondele".to_string())].into(),
        created_at_ms: 0,
        updated_at_ms: 0,
        last_seen_at_ms: None,
        consent: None,
    };
    gw.gateway
        .results
        .write_contacts(ContactBatch {
            contacts: vec![contact],
            consent: Vec::new(),
        })
        .await
        .expect("contact stored");
    gw
}

async fn a_flow_reads_the_citizens_contact(stores: Stores) {
    let gw = gateway(stores).await;
    let known = gw.at("cf-1", KNOWN, "*777#", "").await;
    assert_eq!(
        known,
        "CON Hello Wanjiru Achieng' of Kondele. What needs fixing?"
    );
    let unknown = gw.at("cf-2", UNKNOWN, "*777#", "").await;
    assert_eq!(unknown, "CON Hello. Which ward do you live in?");

    let by_sms = gw.gateway.sms_step(KNOWN, "HUJAMBO").await;
    assert_eq!(by_sms.len(), 1, "{by_sms:?}");
    assert!(
        by_sms[0]
            .text
            .starts_with("Hello Wanjiru Achieng' of Kondele. What needs fixing?"),
        "{by_sms:?}"
    );
    let stranger = gw.gateway.sms_step(UNKNOWN, "HUJAMBO").await;
    assert!(
        stranger[0]
            .text
            .starts_with("Hello. Which ward do you live in?"),
        "{stranger:?}"
    );

    for (caller, heard) in [
        (
            KNOWN,
            "Hello Wanjiru Achieng&apos; of Kondele. What needs fixing?",
        ),
        (UNKNOWN, "Hello. Which ward do you live in?"),
    ] {
        let call = common::form(&[
            ("sessionId", &format!("cf-call-{caller}")),
            ("direction", "Inbound"),
            ("callerNumber", caller),
            ("destinationNumber", VOICE_LINE),
            ("isActive", "1"),
        ]);
        let (status, xml) = gw
            .post(
                "/voice/africastalking",
                "application/x-www-form-urlencoded",
                call,
            )
            .await;
        assert_eq!(status, axum::http::StatusCode::OK, "{xml}");
        assert!(xml.contains(heard), "{xml}");
    }
    gw.cleanup().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_reads_the_citizens_contact_memory_sqlite() {
    a_flow_reads_the_citizens_contact(Stores::MemorySqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flow_reads_the_citizens_contact_redis_postgres() {
    a_flow_reads_the_citizens_contact(Stores::RedisPostgres).await;
}
