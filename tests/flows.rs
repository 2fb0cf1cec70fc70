//! Whole-flow tests of the example flows in `flows/`: what a citizen sees, channel by channel.
//!
//! Each snapshot is a `simulator::run_script` transcript (screens, texts, voice prompts and the
//! saved answers), reviewed by reading it as a citizen would. Besides the snapshots, the tests
//! assert behaviour directly: which answers are saved, that skipped questions stay unset, that
//! a resumed session keeps its answers, and that the session state survives storage between
//! every step (the simulator marks a state that does not with `!!`).
//!
//! Accept changed snapshots with `INSTA_UPDATE=always cargo test --test flows` (or
//! `cargo insta review`) after reading them; CI runs with `INSTA_UPDATE=no`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baraza::encoding::gsm7;
use baraza::engine::render::ussd::{self, Layout};
use baraza::engine::state::reference_for;
use baraza::engine::{self, Channel, CompiledFlow, Input, Rendered, SessionState, Start};
use baraza::flow::model::{Flow, Node, Text};
use baraza::simulator::{self, Options, ScriptItem, Simulation};

/// The folder of the example flows.
fn flows_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("flows")
}

/// Loads `flows/<name>.yaml`. (A stand-in until the checker's loader exists: it will report
/// positions; here a broken example flow simply fails the test with serde's message.)
fn load(name: &str) -> CompiledFlow {
    let path = flows_dir().join(format!("{name}.yaml"));
    // The checker's loader: the same options (strict booleans) as `baraza check` and serve.
    let flow = baraza::flow::load_file(&path)
        .unwrap_or_else(|e| panic!("{} does not load: {e:?}", path.display()))
        .flow;
    CompiledFlow::compile(flow)
        .unwrap_or_else(|e| panic!("{} does not compile: {e:?}", path.display()))
}

fn options(channel: Channel, language: Option<&str>) -> Options {
    Options {
        channel,
        language: language.map(str::to_string),
        ..Options::default()
    }
}

/// Runs `script` through the simulator and returns the transcript, checking that the state
/// survived encode/decode at every step.
fn transcript(
    flow: &CompiledFlow,
    channel: Channel,
    language: Option<&str>,
    script: &str,
) -> String {
    let items = simulator::parse_script(script);
    let out = simulator::run_script(flow, options(channel, language), &items);
    assert!(
        !out.contains("!!"),
        "the session state did not survive storage:\n{out}"
    );
    out
}

/// Runs `script` like `run_script` does, and returns the simulation for assertions on it.
fn simulate<'a>(
    flow: &'a CompiledFlow,
    channel: Channel,
    language: Option<&str>,
    script: &str,
) -> Simulation<'a> {
    let mut sim = Simulation::new(flow, options(channel, language));
    sim.dial();
    for item in simulator::parse_script(script) {
        if sim.finished && !matches!(item, ScriptItem::Dial) {
            break;
        }
        sim.feed(&item);
    }
    assert!(
        !sim.transcript.contains("!!"),
        "the session state did not survive storage:\n{}",
        sim.transcript
    );
    sim
}

/// The transcript with the USSD box borders removed and every run of spaces and line breaks
/// made one space, so a sentence can be found whichever way the phone wrapped it.
fn flat(transcript: &str) -> String {
    transcript
        .lines()
        .map(|l| l.trim().trim_matches('|').trim())
        .collect::<Vec<_>>()
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last saved value of each result, as `result -> value`.
fn answers(sim: &Simulation<'_>) -> BTreeMap<String, String> {
    sim.saved
        .iter()
        .map(|(result, value, _)| (result.clone(), value.clone()))
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Snapshots a transcript as `tests/snapshots/flows__<name>.snap`, with the script and
/// channel in the snapshot's header so a reviewer knows what was typed.
fn snapshot(
    name: &str,
    flow: &str,
    channel: Channel,
    language: Option<&str>,
    script: &str,
) -> String {
    let compiled = load(flow);
    let out = transcript(&compiled, channel, language, script);
    let mut settings = insta::Settings::clone_current();
    settings.set_description(format!(
        "baraza simulate flows/{flow}.yaml --channel {}{} --input \"{script}\"",
        channel.as_str(),
        language.map(|l| format!(" --lang {l}")).unwrap_or_default()
    ));
    settings.set_omit_expression(true);
    settings.bind(|| insta::assert_snapshot!(name, &out));
    out
}

/// Asserts that a transcript reached the flow's end and saved `line` (as the answers table
/// shows it, e.g. `priority  agriculture`, spaces collapsed).
fn assert_completed_with(out: &str, line: &str) {
    assert!(out.contains("(session completed)"), "not completed:\n{out}");
    assert!(table(out).contains(line), "`{line}` not saved:\n{out}");
}

/// The answers table at the end of a transcript, spaces collapsed.
fn table(out: &str) -> String {
    flat(out.split("Saved answers:").nth(1).unwrap_or_default())
}

// ---------------------------------------------------------------------------------------------
// community_needs: language, consent, age, gender, ward, priority (paginated), satisfaction,
// branch to `problem`, optional comment, templated thank-you.

#[test]
fn community_needs_ussd_english_happy_path_with_pagination() {
    // 98 shows the second page of priorities, 0 goes back, 98 again, then 7 (on page 2).
    let script = "1,1,2,1,3,98,0,98,7,2,3,Water comes only twice a week";
    snapshot(
        "community_needs__ussd_en",
        "community_needs",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("language", "en"),
            ("consent", "yes"),
            ("age", "25-34"),
            ("gender", "female"),
            ("ward", "shaurimoyo-kaloleni"),
            ("priority", "markets"),
            ("satisfaction", "2"),
            ("problem", "bribes"),
            ("comment", "Water comes only twice a week"),
        ])
    );
    // The paging keys are navigation, never answers: each result is saved exactly once.
    assert_eq!(sim.saved.len(), 9);
    assert!(flat(&sim.transcript).contains("Your top priority, Markets and trade, is recorded."));
}

#[test]
fn community_needs_ussd_swahili_other_ward_and_skipped_comment() {
    // Kiswahili; ward 7 (Other) leads to a typed village; satisfaction 4 skips `problem`;
    // 00 skips the optional comment.
    let script = "2,1,3,2,7,Manyatta Arab,1,4,00";
    snapshot(
        "community_needs__ussd_sw",
        "community_needs",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("language", "sw"),
            ("consent", "yes"),
            ("age", "35-49"),
            ("gender", "male"),
            ("ward", "other"),
            ("village", "Manyatta Arab"),
            ("priority", "water"),
            ("satisfaction", "4"),
        ])
    );
    assert!(flat(&sim.transcript).contains("Kipaumbele chako, Maji safi, kimepokelewa."));
    // Saved labels are in the flow's default language, whatever the respondent's.
    assert!(
        sim.saved
            .iter()
            .any(|(r, _, l)| r == "priority" && l.as_deref() == Some("Clean water"))
    );
}

#[test]
fn community_needs_sms_english_with_reminder_and_skip() {
    // "yes" typed out answers the consent menu; a timeout on the priority question sends one
    // reminder; SKIP skips the comment.
    let script = "1,yes,4,3,5,!timeout,2,3,SKIP";
    snapshot(
        "community_needs__sms_en",
        "community_needs",
        Channel::Sms,
        None,
        script,
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Sms, None, script);
    assert!(sim.finished);
    assert_eq!(sim.transcript.matches("Reminder:").count(), 1);
    let saved = answers(&sim);
    assert_eq!(saved.get("priority").map(String::as_str), Some("health"));
    assert!(
        !saved.contains_key("comment"),
        "SKIP must leave the comment unset"
    );
}

#[test]
fn community_needs_sms_swahili() {
    let out = snapshot(
        "community_needs__sms_sw",
        "community_needs",
        Channel::Sms,
        None,
        "2,1,1,1,2,8,1,2,Hakuna dawa katika zahanati ya Migosi",
    );
    assert_completed_with(&out, "problem staff");
}

#[test]
fn community_needs_voice_english_with_repeat_and_skip() {
    // * repeats the priority menu; 0 skips the comment.
    let out = snapshot(
        "community_needs__voice_en",
        "community_needs",
        Channel::Voice,
        None,
        "1,1,5,2,5,*,3,5,0",
    );
    assert_completed_with(&out, "priority roads");
    assert!(!table(&out).contains("comment"), "0 skips the comment");
}

#[test]
fn community_needs_voice_swahili() {
    let out = snapshot(
        "community_needs__voice_sw",
        "community_needs",
        Channel::Voice,
        Some("sw"),
        "2,1,2,3,6,9,2,4,0",
    );
    assert_completed_with(&out, "problem distance");
}

#[test]
fn community_needs_declines_politely() {
    snapshot(
        "community_needs__ussd_declined",
        "community_needs",
        Channel::Ussd,
        None,
        "1,2",
    );
    snapshot(
        "community_needs__ussd_under_18_sw",
        "community_needs",
        Channel::Ussd,
        None,
        "2,1,6",
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Ussd, None, "1,2,1");
    assert!(sim.finished, "declining ends the session");
    assert_eq!(
        answers(&sim),
        expected(&[("language", "en"), ("consent", "no")])
    );
}

#[test]
fn community_needs_too_many_invalid_answers_end_the_session() {
    // Age has no fallback: three wrong keys (the default allows two retries) end it politely.
    let script = "1,1,7,0,abc";
    snapshot(
        "community_needs__ussd_too_many_invalid",
        "community_needs",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    assert_eq!(sim.transcript.matches("How old are you?").count(), 3);
    assert!(sim.transcript.contains("(session failed)"));
    assert!(!answers(&sim).contains_key("age"));
}

#[test]
fn community_needs_ward_fallback_lets_the_respondent_type_it() {
    // Three keys that are not on the ward list lead to the typed-ward question, with the
    // reason shown above it.
    let script = "1,1,2,1,9,8,x,Kibos,1,5,00";
    snapshot(
        "community_needs__ussd_ward_fallback",
        "community_needs",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    let saved = answers(&sim);
    assert_eq!(saved.get("village").map(String::as_str), Some("Kibos"));
    assert!(!saved.contains_key("ward"), "no ward was chosen");
    // The typed-ward question comes with the reason, on the same screen, just above it.
    assert!(
        flat(&sim.transcript)
            .contains("Sorry, that is not on the list. What is the name of your ward or village?"),
        "{}",
        sim.transcript
    );
}

#[test]
fn community_needs_resume_after_a_drop_continues() {
    // The network drops the session on the ward screen; the respondent dials again,
    // chooses 1 (continue) and finishes without answering anything twice.
    let script = "1,1,2,1,!hangup,!dial,1,4,98,6,5,00";
    snapshot(
        "community_needs__ussd_resume_continue",
        "community_needs",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("language", "en"),
            ("consent", "yes"),
            ("age", "25-34"),
            ("gender", "female"),
            ("ward", "market-milimani"),
            ("priority", "electricity"),
            ("satisfaction", "5"),
        ])
    );
    assert_eq!(
        sim.saved.len(),
        7,
        "no answer is saved twice: {:?}",
        sim.saved
    );
    assert!(flat(&sim.transcript).contains("You have an unfinished survey. 1. Continue"));
}

#[test]
fn community_needs_resume_after_a_drop_can_start_again() {
    // 2 (start again) begins a new response from the first screen.
    let script = "1,1,2,1,!hangup,!dial,2,2,2";
    snapshot(
        "community_needs__ussd_resume_restart",
        "community_needs",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("community_needs");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    // The new response holds only what was answered after the restart.
    let current: BTreeMap<String, String> = sim
        .current_answers()
        .iter()
        .map(|(r, v, _)| (r.clone(), v.clone()))
        .collect();
    assert_eq!(current, expected(&[("language", "sw"), ("consent", "no")]));
    assert!(sim.transcript.contains("(new response "));
    assert!(flat(&sim.transcript).contains("Sawa. Asante kwa muda wako. Kwaheri."));
}

// ---------------------------------------------------------------------------------------------
// service_feedback: message + service menu, rating, branch to `problem`, yes/no, optional date.

#[test]
fn service_feedback_ussd_english_low_rating() {
    // Rating 2 asks what went wrong; 00 ("Don't remember") skips the date.
    let script = "1,2,4,2,00";
    snapshot(
        "service_feedback__ussd_en",
        "service_feedback",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("service_feedback");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("service", "health"),
            ("rating", "2"),
            ("problem", "payment"),
            ("got_service", "no"),
        ])
    );
    assert!(
        sim.transcript.contains("00. Don't remember"),
        "ui: override"
    );
}

#[test]
fn service_feedback_ussd_swahili_high_rating() {
    let out = snapshot(
        "service_feedback__ussd_sw",
        "service_feedback",
        Channel::Ussd,
        Some("sw"),
        "5,4,1,1/2/2026",
    );
    assert_completed_with(&out, "visit_date 2026-02-01");
}

#[test]
fn service_feedback_sms_swahili_with_reminder() {
    // "ndiyo" answers the yes/no question; a timeout sends one reminder; the typed date is
    // stored as YYYY-MM-DD.
    let script = "2,5,ndiyo,!timeout,12/03/2026";
    snapshot(
        "service_feedback__sms_sw",
        "service_feedback",
        Channel::Sms,
        Some("sw"),
        script,
    );
    let flow = load("service_feedback");
    let sim = simulate(&flow, Channel::Sms, Some("sw"), script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("service", "water"),
            ("rating", "5"),
            ("got_service", "yes"),
            ("visit_date", "2026-03-12"),
        ])
    );
    assert_eq!(sim.transcript.matches("Kumbusho:").count(), 1);
}

#[test]
fn service_feedback_sms_english_skip() {
    let out = snapshot(
        "service_feedback__sms_en",
        "service_feedback",
        Channel::Sms,
        None,
        "3,1,7,1,2,SKIP",
    );
    assert_completed_with(&out, "problem waiting");
    assert!(
        !table(&out).contains("visit_date"),
        "SKIP leaves the date unset"
    );
}

#[test]
fn service_feedback_sms_times_out_after_one_reminder() {
    let script = "1,!timeout,!timeout,3";
    snapshot(
        "service_feedback__sms_timeout",
        "service_feedback",
        Channel::Sms,
        None,
        script,
    );
    let flow = load("service_feedback");
    let sim = simulate(&flow, Channel::Sms, None, script);
    assert!(sim.finished);
    assert!(sim.transcript.contains("(session timed_out)"));
    assert!(
        !answers(&sim).contains_key("rating"),
        "a late answer is ignored"
    );
}

#[test]
fn service_feedback_voice_english_with_invalid_date() {
    // * repeats the rating menu; 31/02 is not a date and is asked again.
    let script = "3,*,4,1,31022026,15012026";
    snapshot(
        "service_feedback__voice_en",
        "service_feedback",
        Channel::Voice,
        None,
        script,
    );
    let flow = load("service_feedback");
    let sim = simulate(&flow, Channel::Voice, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim).get("visit_date").map(String::as_str),
        Some("2026-01-15")
    );
}

#[test]
fn service_feedback_voice_back_key_changes_earlier_answers() {
    // Service 3, rating 4; on "Did you get the service?" 0 goes back to the rating, 0 again
    // back to the service; then service 5, rating 2 (which asks what went wrong: 1), yes, a
    // date.
    let script = "3,4,0,0,5,2,1,1,15012026";
    let out = snapshot(
        "service_feedback__voice_back",
        "service_feedback",
        Channel::Voice,
        None,
        script,
    );
    assert!(
        !out.split("> 3")
            .next()
            .unwrap_or_default()
            .contains("To go back"),
        "the first question has nothing to go back to:\n{out}"
    );
    let flow = load("service_feedback");
    let sim = simulate(&flow, Channel::Voice, None, script);
    assert!(sim.finished);
    let ratings: Vec<&str> = sim
        .saved
        .iter()
        .filter(|(r, _, _)| r == "rating")
        .map(|(_, v, _)| v.as_str())
        .collect();
    assert_eq!(ratings, ["4", "2"], "both answers were saved, in order");
    let kept = answers(&sim);
    assert_eq!(kept.get("rating").map(String::as_str), Some("2"));
    assert_eq!(kept.get("service").map(String::as_str), Some("office"));
}

#[test]
fn voice_back_key_is_an_answer_where_it_can_be_one() {
    // The first question has no earlier one: 0 is just a wrong key there.
    let flow = load("service_feedback");
    let sim = simulate(&flow, Channel::Voice, None, "0");
    assert!(
        sim.transcript
            .contains("Sorry, that is not one of the choices."),
        "{}",
        sim.transcript
    );
    // On the optional date question 0 is the skip key, which wins over going back.
    let sim = simulate(&flow, Channel::Voice, None, "3,4,1,0");
    assert!(sim.finished, "{}", sim.transcript);
    assert!(!answers(&sim).contains_key("visit_date"));
    // USSD keeps 0 for paging back; it never goes back a question.
    let sim = simulate(&flow, Channel::Ussd, None, "3,4,0");
    assert!(!sim.transcript.contains("To go back"), "{}", sim.transcript);
    assert_eq!(answers(&sim).get("rating").map(String::as_str), Some("4"));
}

#[test]
fn service_feedback_voice_swahili() {
    let out = snapshot(
        "service_feedback__voice_sw",
        "service_feedback",
        Channel::Voice,
        Some("sw"),
        "4,1,3,2,0",
    );
    assert_completed_with(&out, "problem supplies");
    assert!(
        !table(&out).contains("visit_date"),
        "0 leaves the date unset"
    );
}

#[test]
fn service_feedback_invalid_answers_re_prompt_then_end() {
    // 7 is not a service (re-prompt), then three wrong answers to the yes/no question.
    let script = "7,1,4,3,maybe,9";
    snapshot(
        "service_feedback__ussd_invalid",
        "service_feedback",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("service_feedback");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    assert!(sim.transcript.contains("(session failed)"));
    assert_eq!(
        answers(&sim),
        expected(&[("service", "health"), ("rating", "4")])
    );
}

// ---------------------------------------------------------------------------------------------
// grievance: language, category, description (max 140, recorded on voice), optional location
// with a fallback, reference number in the end message.

#[test]
fn grievance_ussd_english_reads_back_the_reference() {
    let script =
        "1,1,Pipe burst near Kondele market since Monday\\, water is wasted,Opposite the bus stage";
    snapshot(
        "grievance__ussd_en",
        "grievance",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("grievance");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("category", "water"),
            (
                "description",
                "Pipe burst near Kondele market since Monday, water is wasted"
            ),
            ("location", "Opposite the bus stage"),
        ])
    );
    let reference = reference_for("sim-1");
    assert!(
        flat(&sim.transcript).contains(&format!("Reference: {reference}.")),
        "the end message quotes the session's reference {reference}:\n{}",
        sim.transcript
    );
}

#[test]
fn grievance_sms_swahili_skips_location_after_reminder() {
    let script = "2,3,Barabara ya Nyalenda imejaa mashimo,!timeout,SKIP";
    snapshot("grievance__sms_sw", "grievance", Channel::Sms, None, script);
    let flow = load("grievance");
    let sim = simulate(&flow, Channel::Sms, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("category", "roads"),
            ("description", "Barabara ya Nyalenda imejaa mashimo"),
        ])
    );
}

#[test]
fn grievance_sms_english_answers_a_menu_with_its_label() {
    // By SMS a menu choice may be typed out instead of its number, in any letter case.
    let script = "1,garbage,Nobody has collected rubbish on our street for 3 weeks,Lower Migosi";
    snapshot("grievance__sms_en", "grievance", Channel::Sms, None, script);
    let flow = load("grievance");
    let sim = simulate(&flow, Channel::Sms, None, script);
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("category", "waste"),
            (
                "description",
                "Nobody has collected rubbish on our street for 3 weeks"
            ),
            ("location", "Lower Migosi"),
        ])
    );
}

#[test]
fn grievance_voice_english_records_the_description() {
    let script = "1,6,!record 25,!record 8";
    snapshot(
        "grievance__voice_en",
        "grievance",
        Channel::Voice,
        None,
        script,
    );
    let flow = load("grievance");
    let sim = simulate(&flow, Channel::Voice, None, script);
    assert!(sim.finished);
    let saved = answers(&sim);
    assert_eq!(saved.get("category").map(String::as_str), Some("conduct"));
    assert_eq!(
        saved.get("description").map(String::as_str),
        Some("recordings/sim-1-1.wav")
    );
    assert!(
        sim.saved
            .iter()
            .any(|(r, _, l)| r == "description" && l.as_deref() == Some("25s")),
        "a recording is saved with its duration: {:?}",
        sim.saved
    );
}

#[test]
fn grievance_voice_swahili_skips_location() {
    let out = snapshot(
        "grievance__voice_sw",
        "grievance",
        Channel::Voice,
        None,
        "2,4,!record,0",
    );
    assert_completed_with(&out, "description recordings/sim-1-1.wav (10s)");
    assert!(!table(&out).contains("location"), "0 skips the location");
}

#[test]
fn grievance_too_long_answers_and_location_fallback() {
    // A description over 140 characters is asked again; three location answers over 60
    // characters lead to the fallback, and the complaint is still registered.
    let long_description = "x".repeat(141);
    let long_place = "Along the road from Kondele roundabout towards Kibos next to the school";
    let script = format!(
        "1,2,{long_description},Clinic at Migosi has no nurse at night,{long_place},{long_place},{long_place}"
    );
    snapshot(
        "grievance__ussd_too_long",
        "grievance",
        Channel::Ussd,
        None,
        &script,
    );
    let flow = load("grievance");
    let sim = simulate(&flow, Channel::Ussd, None, &script);
    assert!(sim.finished);
    assert!(sim.transcript.contains("(session completed)"));
    assert_eq!(
        answers(&sim),
        expected(&[
            ("category", "health"),
            ("description", "Clinic at Migosi has no nurse at night"),
        ])
    );
    assert!(sim.transcript.contains(&reference_for("sim-1")));
}

#[test]
fn grievance_resume_keeps_the_reference() {
    let script = "1,1,Broken water pipe at the school,!hangup,!dial,1,Kondele";
    snapshot(
        "grievance__ussd_resume",
        "grievance",
        Channel::Ussd,
        None,
        script,
    );
    let flow = load("grievance");
    let sim = simulate(&flow, Channel::Ussd, None, script);
    assert!(sim.finished);
    // The reference belongs to the response, which the resumed session continues.
    assert!(sim.transcript.contains(&reference_for("sim-1")));
    assert_eq!(
        answers(&sim).get("location").map(String::as_str),
        Some("Kondele")
    );
}

// ---------------------------------------------------------------------------------------------
// Properties of the example flow files themselves.

fn flow_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(flows_dir())
        .expect("read flows/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn every_example_flow_has_snapshots() {
    let snapshots = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots");
    let names: Vec<String> = std::fs::read_dir(&snapshots)
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let files = flow_files();
    assert!(files.len() >= 3, "the example flows are missing");
    for file in files {
        let name = stem(&file);
        for channel in ["ussd", "sms", "voice"] {
            let prefix = format!("flows__{name}__{channel}_");
            assert!(
                names
                    .iter()
                    .any(|n| n.starts_with(&prefix) && n.ends_with(".snap")),
                "flows/{name}.yaml has no {channel} snapshot ({prefix}*.snap): add a test to tests/flows.rs"
            );
        }
    }
}

/// Every text of a flow that a respondent can be sent, with where it comes from.
fn sent_texts(flow: &Flow) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |place: String, text: &Text| {
        for (_, variant) in text.variants() {
            out.push((place.clone(), variant.to_string()));
        }
    };
    add("name".into(), &flow.name);
    for (key, text) in &flow.ui.texts {
        add(format!("ui.{key:?}"), text);
    }
    for (id, node) in &flow.nodes {
        if let Some(prompt) = node.prompt() {
            add(id.clone(), &prompt.text);
        }
        let retry = match node {
            Node::Menu(m) => {
                for o in &m.options {
                    add(format!("{id}.options"), &o.label);
                }
                Some(&m.retry)
            }
            Node::Language(l) => {
                for o in &l.options {
                    add(format!("{id}.options"), &Text::One(o.label.clone()));
                }
                Some(&l.retry)
            }
            Node::Question(q) => Some(&q.retry),
            Node::Message(_) | Node::Branch(_) | Node::End(_) => None,
        };
        if let Some(invalid) = retry.and_then(|r| r.invalid.as_ref()) {
            add(format!("{id}.invalid"), invalid);
        }
    }
    out
}

#[test]
fn every_example_flow_links_the_schema_and_stays_gsm7() {
    for file in flow_files() {
        let source = std::fs::read_to_string(&file).expect("read flow");
        assert_eq!(
            source.lines().next(),
            Some("# yaml-language-server: $schema=./schema.json"),
            "{} must start with the schema modeline",
            file.display()
        );
        let flow = load(&stem(&file));
        for (place, text) in sent_texts(&flow.flow) {
            assert_eq!(
                gsm7::first_non_gsm(&text),
                None,
                "{} `{place}`: {text:?} is not GSM-7 and would force UCS-2 (80-character USSD screens)",
                file.display()
            );
        }
    }
}

/// A session on `node`, in `language`, on USSD: what an invalid answer there would meet.
fn session_on(flow: &CompiledFlow, node: &str, language: &str) -> SessionState {
    let start = Start {
        session_id: "fit".into(),
        channel: Channel::Ussd,
        contact: BTreeMap::new(),
        language: Some(language.into()),
    };
    let mut state = engine::advance(flow, None, Input::Start(start), 0).state;
    state.node = node.to_string();
    state.language = language.to_string();
    state
}

#[test]
fn a_re_prompt_never_pushes_a_one_screen_question_onto_two_pages() {
    // The "Sorry" notice goes above the question; if that pushes the choices onto a second
    // USSD page, the respondent no longer sees them. Keep such questions short.
    let mut problems = Vec::new();
    for file in flow_files() {
        let flow = load(&stem(&file));
        for (id, node) in &flow.flow.nodes {
            if !matches!(node, Node::Menu(_) | Node::Question(_) | Node::Language(_)) {
                continue;
            }
            for language in &flow.flow.languages {
                let state = session_on(&flow, id, language);
                let step = engine::advance(&flow, Some(state), Input::Answer(String::new()), 1);
                let Some(reply) = step.reply() else {
                    panic!("{id}: no reply to an invalid answer");
                };
                let Rendered::Ussd(shown) = &reply.rendered else {
                    panic!("{id}: not a USSD reply");
                };
                let mut plain = reply.screen.clone();
                plain.lead.clear();
                let layout = Layout::for_flow(&flow.flow, language);
                let pages_without_notice = ussd::paginate(&plain, &layout).len();
                if pages_without_notice == 1 && shown.pages > 1 {
                    problems.push(format!(
                        "flows/{}.yaml node `{id}` ({language}): the re-prompt takes {} pages:\n{}",
                        stem(&file),
                        shown.pages,
                        shown.text
                    ));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

// ---------------------------------------------------------------------------------------------
// README.md: its example flow runs, and its pasted transcript is what the simulator prints.

fn readme() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md");
    std::fs::read_to_string(&path).expect("read README.md")
}

/// The first fenced block of `kind` after `heading` in the README.
fn readme_block(readme: &str, heading: &str, kind: &str) -> String {
    let after = readme
        .split_once(heading)
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("README.md has no `{heading}`"));
    let fence = format!("```{kind}\n");
    let start = after
        .find(&fence)
        .unwrap_or_else(|| panic!("no {kind} block after `{heading}`"))
        + fence.len();
    let end = after[start..].find("```").expect("closing fence") + start;
    after[start..end].to_string()
}

#[test]
fn readme_example_flow_runs() {
    let source = readme_block(&readme(), "### An annotated example", "yaml");
    let flow = serde_saphyr::from_str(&source)
        .unwrap_or_else(|e| panic!("README.md's example flow does not parse: {e}"));
    let flow = CompiledFlow::compile(flow).expect("README.md's example flow compiles");
    // Broken for 10 days: the urgent ending, with the reference.
    let sim = simulate(&flow, Channel::Ussd, None, "1,2,10");
    assert!(sim.finished);
    assert_eq!(
        answers(&sim),
        expected(&[
            ("language", "en"),
            ("status", "broken"),
            ("days_broken", "10")
        ])
    );
    assert!(
        flat(&sim.transcript).contains(&format!(
            "A technician will visit within 3 days. Reference {}.",
            reference_for("sim-1")
        )),
        "{}",
        sim.transcript
    );
    // In Kiswahili by SMS, with the number skipped: the branch takes its default.
    let sim = simulate(&flow, Channel::Sms, None, "2,2,SKIP");
    assert!(sim.finished);
    assert!(
        sim.transcript.contains("Asante! Umesema: Kimeharibika."),
        "{}",
        sim.transcript
    );
    // Wrong keys twice more than allowed: the fallback thanks the respondent anyway.
    let sim = simulate(&flow, Channel::Ussd, None, "1,7,8,9");
    assert!(sim.finished);
    assert!(flat(&sim.transcript).contains("Please choose 1, 2 or 3. Thank you!"));
}

#[test]
fn readme_transcript_is_what_the_simulator_prints() {
    let readme = readme();
    let marker = "```console\n$ baraza simulate ";
    let start = readme
        .find(marker)
        .expect("README.md shows a `baraza simulate` run")
        + marker.len();
    let end = readme[start..].find("```").expect("closing fence") + start;
    let (command, shown) = readme[start..end]
        .split_once('\n')
        .expect("a command line and its output");
    let input = command
        .split_once("--input \"")
        .and_then(|(_, rest)| rest.strip_suffix('"'))
        .expect("the command has --input \"...\" last");
    assert!(
        !command.contains("--channel") && !command.contains("--lang"),
        "this test replays USSD runs in the default language only"
    );
    let name = command
        .split_whitespace()
        .next()
        .and_then(|p| p.strip_prefix("flows/"))
        .and_then(|p| p.strip_suffix(".yaml"))
        .expect("a flow in flows/");
    let actual = transcript(&load(name), Channel::Ussd, None, input);
    assert_eq!(
        shown, actual,
        "README.md's transcript is stale: paste the output of `baraza simulate {command}`"
    );
}

#[test]
fn voice_no_input_asks_again_then_says_goodbye_and_the_next_call_can_continue() {
    let flow = load("community_needs");
    // Language, consent, then silence three times on the age question (2 retries allowed).
    let sim = simulate(
        &flow,
        Channel::Voice,
        None,
        "1,1,!timeout,!timeout,!timeout",
    );
    let out = &sim.transcript;
    assert_eq!(
        out.matches("Sorry, we did not hear an answer.").count(),
        2,
        "{out}"
    );
    assert!(out.contains("(session dropped)"), "{out}");
    assert!(out.contains("Your session has ended. Thank you."), "{out}");
    let kept = answers(&sim);
    assert_eq!(
        kept.get("consent").map(String::as_str),
        Some("yes"),
        "answers kept: {kept:?}"
    );

    let resumed = simulate(
        &flow,
        Channel::Voice,
        None,
        "1,1,!timeout,!timeout,!timeout,!dial,1,2",
    );
    assert!(
        resumed
            .transcript
            .contains("You have an unfinished survey."),
        "{}",
        resumed.transcript
    );
    let kept = answers(&resumed);
    assert_eq!(
        kept.get("consent").map(String::as_str),
        Some("yes"),
        "{kept:?}"
    );
    assert_eq!(
        kept.get("age").map(String::as_str),
        Some("25-34"),
        "{kept:?}"
    );
}

/// A voice session of `flow` driven straight through the engine: the state after `answers`.
fn voice_state(flow: &CompiledFlow, answers: &[&str]) -> SessionState {
    let start = Input::Start(Start {
        session_id: "call-1".into(),
        channel: Channel::Voice,
        contact: BTreeMap::new(),
        language: None,
    });
    let mut state = engine::advance(flow, None, start, 0).state;
    for (i, answer) in answers.iter().enumerate() {
        let now = i64::try_from(i).unwrap_or(0) + 1;
        state = engine::advance(flow, Some(state), Input::Answer((*answer).into()), now).state;
    }
    state
}

#[test]
fn a_session_stored_before_the_back_key_history_still_decodes_and_goes_on() {
    let flow = load("service_feedback");
    // A voice session on the rating question, as this gateway stores it now.
    let state = voice_state(&flow, &["3"]);
    assert_eq!(state.history, ["service"]);
    let mut without = state.clone();
    without.history.clear();
    let new = without.encode();
    // The layout before `history` existed: the same MessagePack array one element shorter.
    // Schema byte, then array16 (0xdc) of 19 fields whose last is the empty history (0x90).
    assert_eq!(
        &new[..4],
        &[1, 0xdc, 0, 19],
        "layout changed: update this test"
    );
    assert_eq!(new.last(), Some(&0x90));
    let mut old = new.clone();
    old[3] = 18;
    old.pop();

    let decoded = SessionState::decode(&old).expect("an old session decodes");
    assert_eq!(
        decoded, without,
        "every old field is read back; history is empty"
    );
    // It carries on: an answer, then the back key returns to the question just left.
    let step = engine::advance(&flow, Some(decoded), Input::Answer("4".into()), 10);
    assert_eq!(step.state.history, ["rating"]);
    let back = engine::advance(&flow, Some(step.state), Input::Answer("0".into()), 11);
    assert_eq!(back.state.node, "rating");
    assert!(back.state.history.is_empty());
}

#[test]
fn the_back_history_is_bounded_and_drops_the_oldest() {
    let flow = load("service_feedback");
    let mut state = voice_state(&flow, &["3"]);
    let max = baraza::engine::state::MAX_HISTORY;
    state.history = (0..max).map(|i| format!("old{i}")).collect();
    let step = engine::advance(&flow, Some(state), Input::Answer("4".into()), 10);
    assert_eq!(step.state.history.len(), max);
    assert_eq!(step.state.history.first().map(String::as_str), Some("old1"));
    assert_eq!(
        step.state.history.last().map(String::as_str),
        Some("rating")
    );
}
