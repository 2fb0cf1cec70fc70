//! Property tests: whatever a respondent types, the engine never panics, always returns a
//! valid state that survives storage, and every USSD screen stays within its limit.

use std::collections::BTreeMap;
use std::path::Path;

use proptest::prelude::*;

use baraza::encoding::gsm7;
use baraza::engine::render::ussd::{self, Layout};
use baraza::engine::{
    self, Action, Channel, Choice, CompiledFlow, Expect, Input, Line, Rendered, Screen,
    SessionState, Start,
};

fn load(path: &Path) -> CompiledFlow {
    let flow = baraza::flow::load_file(path).expect("flow loads").flow;
    CompiledFlow::compile(flow).expect("compile flow")
}

fn all_flows() -> Vec<CompiledFlow> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut paths = vec![root.join("tests/fixtures/pagination.yaml")];
    if let Ok(dir) = std::fs::read_dir(root.join("flows")) {
        let mut more: Vec<_> = dir
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        more.sort();
        paths.extend(more);
    }
    paths.iter().map(|p| load(p)).collect()
}

fn check_step(flow: &CompiledFlow, step: &engine::Step) -> Result<(), TestCaseError> {
    let s = &step.state;
    prop_assert!(
        flow.flow.nodes.contains_key(&s.node),
        "state points at unknown node {}",
        s.node
    );
    prop_assert!(
        flow.flow.languages.contains(&s.language),
        "unknown language {}",
        s.language
    );
    let back = SessionState::decode(&s.encode()).map_err(|e| TestCaseError::fail(e.to_string()))?;
    prop_assert_eq!(&back, s);
    for action in &step.actions {
        if let Action::Reply(reply) = action
            && let Rendered::Ussd(screen) = &reply.rendered
        {
            let limit = gsm7::ussd_limit(screen.encoding);
            prop_assert!(
                screen.units <= limit,
                "USSD screen of {} > {limit}: {}",
                screen.units,
                screen.text
            );
            prop_assert_eq!(
                gsm7::units(&screen.text, gsm7::encoding_for(&screen.text)),
                screen.units
            );
        }
    }
    Ok(())
}

fn input_strategy() -> impl Strategy<Value = Input> {
    prop_oneof![
        8 => "[0-9]{1,3}".prop_map(Input::Answer),
        4 => any::<String>().prop_map(Input::Answer),
        2 => "(98|0|00|\\*|#|SKIP|yes|no|25/12/1990)".prop_map(Input::Answer),
        1 => Just(Input::Timeout),
        1 => Just(Input::Hangup),
        1 => ("[a-z]{0,8}", 0u32..600).prop_map(|(url, d)| Input::Recording { url, duration_seconds: d }),
        1 => Just(Input::Start(Start {
            session_id: "again".into(),
            channel: Channel::Sms,
            contact: BTreeMap::new(),
            language: Some("sw".into()),
        })),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn engine_never_panics_and_state_stays_valid(
        channel in prop_oneof![Just(Channel::Ussd), Just(Channel::Sms), Just(Channel::Voice)],
        inputs in proptest::collection::vec(input_strategy(), 0..40),
        flow_index in 0usize..8,
    ) {
        let flows = all_flows();
        let flow = &flows[flow_index % flows.len()];
        let mut now = 1_000_000;
        let start = Start {
            session_id: "prop".into(),
            channel,
            contact: BTreeMap::from([("district".to_string(), "Kisumu".to_string())]),
            language: None,
        };
        let mut step = engine::advance(flow, None, Input::Start(start), now);
        check_step(flow, &step)?;
        for input in inputs {
            now += 1_000;
            let stored = SessionState::decode(&step.state.encode()).ok();
            step = engine::advance(flow, stored, input, now);
            check_step(flow, &step)?;
        }
    }

    #[test]
    fn every_paginated_screen_fits(
        prompt in "[a-zA-Z ,.?€\\[\\]~é]{0,300}",
        lead in proptest::collection::vec("[a-zA-Z ]{0,120}", 0..3),
        labels in proptest::collection::vec("[a-zA-Z0-9 ]{1,60}|[a-zß]{1,10}[😀ω]{0,3}", 0..25),
        max_chars in proptest::option::of(60u16..182),
    ) {
        let screen = Screen {
            lead: lead.into_iter().map(Line::text).collect(),
            prompt: Line::text(prompt),
            choices: labels
                .into_iter()
                .enumerate()
                .map(|(i, label)| Choice { key: (i + 1).to_string(), label, audio: None })
                .collect(),
            expect: Expect::Choice,
            end: false,
            language: "en".into(),
            back: false,
        };
        let layout = Layout {
            max_chars: max_chars.map(usize::from),
            more_line: "98. More".into(),
            back_line: "0. Back".into(),
            skip_line: "00. Skip".into(),
        };
        let pages = ussd::paginate(&screen, &layout);
        prop_assert!(!pages.is_empty());
        for (i, page) in pages.iter().enumerate() {
            prop_assert!(layout.fits(page), "page {i} too long: {page:?}");
            if pages.len() > 1 {
                prop_assert_eq!(page.contains("98. More"), i + 1 < pages.len());
                prop_assert_eq!(page.contains("0. Back"), i > 0);
            }
        }
        // Every choice line appears whole on some page unless it had to be cut.
        for c in &screen.choices {
            let line = format!("{}. {}", c.key, c.label);
            if layout.fits(&format!("{line}\n98. More\n0. Back")) {
                prop_assert!(pages.iter().any(|p| p.lines().any(|l| l == line)), "lost {line:?}");
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any bytes as a callback body: a request or a clear 400 message, never a panic; and the
    /// newest-input logic never panics on any stored progress.
    #[test]
    fn ussd_callback_parsers_never_panic(
        body in proptest::collection::vec(any::<u8>(), 0..400),
        text in "[0-9*#a-z ]{0,60}",
        consumed in proptest::option::of("[0-9*#a-z ]{0,60}"),
    ) {
        use baraza::channels::ussd::{africastalking, hubtel};
        let _ = africastalking::parse(&body);
        let _ = africastalking::parse_event(&body);
        let _ = hubtel::parse(&body);
        let form = format!(
            "sessionId=s&serviceCode=*384*12%23&phoneNumber=%2B254700000000&text={}",
            text.replace('*', "%2A").replace('#', "%23").replace(' ', "+")
        );
        let request = africastalking::parse(form.as_bytes());
        prop_assert!(request.is_ok(), "a well-formed callback is accepted: {form}");
        if let Ok(request) = request {
            let _ = request.resolve(consumed.as_deref());
        }
    }

    /// Whatever the cumulative text, the newest input is exactly what was appended after the
    /// consumed part, even when answers contain `*`.
    #[test]
    fn africastalking_newest_input_is_what_was_appended(
        answers in proptest::collection::vec("[a-z0-9*]{1,12}", 1..6),
        newest in "[a-z0-9*]{1,12}",
    ) {
        use baraza::channels::ussd::{Resolved, africastalking};
        let consumed = answers.join("*");
        let text = format!("{consumed}*{newest}");
        match africastalking::resolve(&text, Some(&consumed)) {
            Resolved::Answer { text: got, progress } => {
                prop_assert_eq!(got, newest);
                prop_assert_eq!(progress, text);
            }
            other => prop_assert!(false, "expected an answer, got {:?}", other),
        }
        prop_assert_eq!(africastalking::resolve(&consumed, Some(&consumed)), Resolved::Duplicate);
    }
}
