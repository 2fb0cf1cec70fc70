//! The flow checker, end to end: every file in `tests/broken_flows/` states the problem it
//! must produce in its first lines (`# expect: error unknown-target 15:35`), and the checker
//! must report exactly that code at exactly that place, and nothing else. Plus the report as a
//! manager reads it (snapshot), valid flows, and the "set on every path" analysis.

use std::path::{Path, PathBuf};

use baraza::engine::CompiledFlow;
use baraza::flow::model::{Node, Text};
use baraza::flow::{Diagnostic, Severity, check, check_paths, load_str, render_report};

/// One `# expect: <severity> <code> <line>:<column>` line.
#[derive(Debug)]
struct Expectation {
    severity: Severity,
    code: String,
    line: usize,
    column: usize,
}

fn expectations(path: &Path) -> Vec<Expectation> {
    let source = std::fs::read_to_string(path).expect("read flow file");
    source
        .lines()
        .take_while(|l| l.starts_with('#'))
        .filter_map(|l| l.strip_prefix("# expect:"))
        .map(|rest| {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            assert_eq!(
                parts.len(),
                3,
                "{}: bad expectation `{rest}`",
                path.display()
            );
            let severity = match parts[0] {
                "error" => Severity::Error,
                "warning" => Severity::Warning,
                other => panic!("{}: unknown severity `{other}`", path.display()),
            };
            let (line, column) = parts[2].split_once(':').expect("line:column");
            Expectation {
                severity,
                code: parts[1].to_string(),
                line: line.parse().expect("line number"),
                column: column.parse().expect("column number"),
            }
        })
        .collect()
}

fn yaml_files(folder: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(folder)
        .expect("read folder")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Asserts the diagnostics of `file` are exactly what its `# expect:` lines say.
fn assert_matches_expectations(file: &Path, diagnostics: &[&Diagnostic]) {
    let expected = expectations(file);
    assert!(
        !expected.is_empty(),
        "{} has no `# expect:` line",
        file.display()
    );
    let shown: Vec<String> = diagnostics.iter().map(|d| d.to_string()).collect();
    for e in &expected {
        assert!(
            diagnostics.iter().any(|d| d.severity == e.severity
                && d.code == e.code
                && d.line == e.line
                && d.column == e.column),
            "{}: expected {:?} {} at {}:{}, got:\n{}",
            file.display(),
            e.severity,
            e.code,
            e.line,
            e.column,
            shown.join("\n")
        );
    }
    for d in diagnostics {
        assert!(
            expected
                .iter()
                .any(|e| e.code == d.code && e.severity == d.severity),
            "{}: unexpected diagnostic {d}",
            file.display()
        );
    }
}

#[test]
fn every_broken_flow_reports_exactly_its_problem() {
    let files = yaml_files("tests/broken_flows");
    assert!(
        files.len() >= 15,
        "expected at least 15 broken flows, found {}",
        files.len()
    );
    for file in &files {
        let report = check_paths(std::slice::from_ref(file));
        let diagnostics: Vec<&Diagnostic> = report.diagnostics.iter().collect();
        assert_matches_expectations(file, &diagnostics);
        let expects_error = expectations(file)
            .iter()
            .any(|e| e.severity == Severity::Error);
        assert_eq!(
            report.has_errors(),
            expects_error,
            "{}: has_errors() disagrees with the expectations",
            file.display()
        );
        // A flow with errors is never handed to the gateway; one with warnings only is.
        assert_eq!(report.flows.len(), usize::from(!expects_error));
    }
}

#[test]
fn the_same_flow_id_and_version_in_two_files_is_an_error_in_both() {
    let report = check_paths(&[PathBuf::from("tests/duplicate_flows")]);
    let files = yaml_files("tests/duplicate_flows");
    assert_eq!(files.len(), 2);
    for file in &files {
        let mine: Vec<&Diagnostic> = report
            .diagnostics
            .iter()
            .filter(|d| d.path == *file)
            .collect();
        assert_matches_expectations(file, &mine);
    }
    assert!(report.flows.is_empty(), "neither copy may load");
    let first = &report.diagnostics[0];
    assert!(
        first
            .message
            .contains("tests/duplicate_flows/clinic_feedback_copy.yaml:3:5"),
        "the message names the other file and place: {first}"
    );
    // Each file alone is fine.
    for file in &files {
        assert!(!check_paths(std::slice::from_ref(file)).has_errors());
    }
}

#[test]
fn report_of_all_broken_flows() {
    let report = check_paths(&[PathBuf::from("tests/broken_flows")]);
    assert!(report.has_errors());
    insta::assert_snapshot!("broken_flows_report", render_report(&report));
}

#[test]
fn a_valid_flow_has_nothing_to_report_and_compiles() {
    let report = check_paths(&[PathBuf::from("tests/fixtures/valid_minimal.yaml")]);
    assert_eq!(
        report.diagnostics,
        Vec::<Diagnostic>::new(),
        "{}",
        render_report(&report)
    );
    assert_eq!(report.flows.len(), 1);
    assert_eq!(
        render_report(&report),
        "1 flow checked: no problems\n",
        "summary wording"
    );
    let flow = report.flows.into_iter().next().expect("one flow").flow;
    assert!(CompiledFlow::compile(flow).is_ok());
}

#[test]
fn every_fixture_passes() {
    let report = check_paths(&[PathBuf::from("tests/fixtures")]);
    assert!(!report.has_errors(), "{}", render_report(&report));
    assert_eq!(report.flows.len(), report.files.len());
}

#[test]
fn a_missing_path_is_an_error() {
    let report = check_paths(&[PathBuf::from("tests/no_such_folder")]);
    assert_eq!(report.error_count(), 1);
    assert_eq!(report.diagnostics[0].code, "missing-path");
    assert_eq!(
        report.diagnostics[0].to_string(),
        "tests/no_such_folder: error[missing-path]: no such file or folder"
    );
}

#[test]
fn warnings_alone_do_not_fail_the_check() {
    let report = check_paths(&[PathBuf::from("tests/broken_flows/ucs2_character.yaml")]);
    assert!(!report.has_errors());
    assert_eq!(report.warning_count(), 1);
    assert!(render_report(&report).ends_with("1 flow checked: 0 errors, 1 warning\n"));
}

const HEADER: &str = "\
id: t
version: 1
name: Test
languages: [en]
default_language: en
";

/// Checks a flow written as `HEADER` + `body`; panics if it does not load.
fn check_source(body: &str) -> Vec<Diagnostic> {
    let source = format!("{HEADER}{body}");
    match load_str("t.yaml", source) {
        Ok(flow) => check(&flow),
        Err(d) => panic!("does not load: {d:?}"),
    }
}

fn codes(diagnostics: &[Diagnostic]) -> Vec<&'static str> {
    diagnostics.iter().map(|d| d.code).collect()
}

#[test]
fn unquoted_numbers_load_as_keys_and_conditions() {
    let source = format!(
        "{HEADER}start: ask
nodes:
  ask:
    type: menu
    text: Pick
    result: pick
    options:
      - {{key: 7, value: 10, label: Seven, next: route}}
      - {{key: 8, label: yes, next: route}}
  route:
    type: branch
    rules:
      - when: {{result: pick, equals: 1}}
        next: bye
      - when: {{result: pick, one_of: [7, 8]}}
        next: bye
    default: bye
  bye:
    type: end
    text: Bye
"
    );
    let loaded = load_str("t.yaml", source).expect("unquoted numbers load");
    let Some(Node::Menu(menu)) = loaded.flow.nodes.get("ask") else {
        panic!("ask is a menu");
    };
    assert_eq!(menu.options[0].key.as_deref(), Some("7"));
    assert_eq!(menu.options[0].value.as_deref(), Some("10"));
    // `yes` stays a text: booleans are strict.
    assert_eq!(menu.options[1].label, Text::One("yes".into()));
    let Some(Node::Branch(branch)) = loaded.flow.nodes.get("route") else {
        panic!("route is a branch");
    };
    assert_eq!(branch.rules[0].when.equals.as_deref(), Some("1"));
    assert_eq!(
        branch.rules[1].when.one_of.as_deref(),
        Some(&["7".to_string(), "8".to_string()][..])
    );
    assert_eq!(check(&loaded), Vec::<Diagnostic>::new());
}

#[test]
fn an_answer_saved_on_every_path_may_be_used() {
    // Both branches save `village` before the join; a loop back to the menu keeps it set.
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: menu
    text: Pick
    result: village
    options:
      - {label: A, next: confirm}
      - {label: B, next: confirm}
  confirm:
    type: menu
    text: \"You chose {{ labels.village }} ({{ answers.village }}). Right?\"
    result: ok
    options:
      - {label: Yes, next: bye}
      - {label: No, next: ask}
  bye:
    type: end
    text: \"Bye from {{ labels.village }}, {{ contact.name }}\"
",
    );
    assert_eq!(diagnostics, Vec::<Diagnostic>::new());
}

#[test]
fn an_optional_question_may_leave_its_answer_unset() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: question
    optional: true
    text: Your village?
    result: village
    next: bye
  bye:
    type: end
    text: \"Thanks, {{ answers.village }}\"
",
    );
    assert_eq!(codes(&diagnostics), ["unset-variable"]);
    assert!(
        diagnostics[0]
            .message
            .contains("`ask` can be skipped or given up on"),
        "{}",
        diagnostics[0]
    );
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (16, 23));
}

#[test]
fn a_fallback_path_does_not_save_the_answer() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: question
    answer: number
    text: Your age?
    result: age
    next: bye
    fallback: bye
  bye:
    type: end
    text: \"You are {{ answers.age }}\"
",
    );
    assert_eq!(codes(&diagnostics), ["unset-variable"]);
}

#[test]
fn a_branch_rule_on_a_result_proves_it_is_set() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: question
    optional: true
    text: Your village?
    result: village
    next: route
  route:
    type: branch
    rules:
      - when: {result: village, one_of: [a, b]}
        next: named
    default: bye
  named:
    type: end
    text: \"Thanks, {{ answers.village }}\"
  bye:
    type: end
    text: Thanks
",
    );
    assert_eq!(diagnostics, Vec::<Diagnostic>::new());
}

#[test]
fn a_loop_that_sets_the_answer_late_is_caught() {
    // On the first visit of `show`, `second` has not been asked yet.
    let diagnostics = check_source(
        "start: first
nodes:
  first:
    type: question
    text: First?
    result: first
    next: show
  show:
    type: menu
    text: \"First {{ answers.first }}, second {{ answers.second }}\"
    result: again
    options:
      - {label: Again, next: second}
      - {label: Stop, next: bye}
  second:
    type: question
    text: Second?
    result: second
    next: show
  bye:
    type: end
    text: Bye
",
    );
    assert_eq!(codes(&diagnostics), ["unset-variable"]);
    assert!(
        diagnostics[0].message.contains("first → show"),
        "{}",
        diagnostics[0]
    );
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (15, 49));
}

#[test]
fn unknown_variables_and_attributes_are_errors() {
    let diagnostics = check_source(
        "start: bye
nodes:
  bye:
    type: end
    text: \"{{ flow.title }} {{ session.id }} {{ answers.nothing }} {{ contact.anything }}\"
",
    );
    assert_eq!(
        codes(&diagnostics),
        ["unknown-variable", "unknown-variable", "unknown-result"]
    );
}

#[test]
fn ucs2_characters_are_placed_inside_block_texts() {
    let diagnostics = check_source(
        "start: bye
nodes:
  bye:
    type: end
    text: |
      Thank you.
      We’ll be in touch – soon.
",
    );
    assert_eq!(codes(&diagnostics), ["ucs2-character"]);
    let d = &diagnostics[0];
    assert_eq!((d.severity, d.line, d.column), (Severity::Warning, 12, 9));
    assert!(d.message.starts_with("'’' (U+2019)"), "{d}");
    assert!(d.message.contains("write `'` instead"), "{d}");
    assert!(d.message.contains("1 more such character"), "{d}");
}

#[test]
fn a_screen_that_fits_without_pagination_is_fine() {
    // 170 characters: too long beside `98. More`, but the screen fits whole, so no paging.
    let text = "x".repeat(170);
    let diagnostics = check_source(&format!(
        "start: bye
nodes:
  bye:
    type: end
    text: {text}
"
    ));
    assert_eq!(diagnostics, Vec::<Diagnostic>::new());
}

#[test]
fn a_message_too_long_beside_the_next_prompt_is_caught() {
    // Alone it would fit; as the lead of the next screen, the page needs `98. More`.
    let text = "x".repeat(175);
    let diagnostics = check_source(&format!(
        "start: hello
nodes:
  hello:
    type: message
    text: {text}
    next: bye
  bye:
    type: end
    text: Thanks for taking part in this survey today.
"
    ));
    assert_eq!(codes(&diagnostics), ["ussd-too-long"]);
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (10, 11));
}

#[test]
fn the_flow_limit_on_screen_size_applies() {
    let text = "x".repeat(100);
    let diagnostics = check_source(&format!(
        "ussd: {{max_chars: 90}}
start: bye
nodes:
  bye:
    type: end
    text: {text}
"
    ));
    assert_eq!(codes(&diagnostics), ["ussd-too-long"]);
}

#[test]
fn broken_conditions_are_errors() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: question
    answer: number
    text: Age?
    result: age
    next: route
  route:
    type: branch
    rules:
      - when: {result: age, contact: district, equals: 1}
        next: bye
      - when: {result: age}
        next: bye
      - when: {result: age, min: 50, max: 10}
        next: bye
    default: bye
  bye:
    type: end
    text: Bye
",
    );
    assert_eq!(
        codes(&diagnostics),
        ["bad-condition", "bad-condition", "min-greater-than-max"]
    );
}

#[test]
fn settings_that_do_nothing_are_warnings() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: question
    answer: yes_no
    min: 1
    max_length: 20
    text: Agree?
    result: agree
    next: bye
  bye:
    type: end
    text: Bye
",
    );
    assert_eq!(codes(&diagnostics), ["ignored-setting", "ignored-setting"]);
    assert!(diagnostics.iter().all(|d| d.severity == Severity::Warning));
}

#[test]
fn a_flow_without_any_end_node_is_reported_once() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: menu
    text: Pick
    result: pick
    options:
      - {label: Again, next: ask}
",
    );
    assert_eq!(codes(&diagnostics), ["no-end"]);
}

#[test]
fn interface_text_overrides_may_use_their_own_variables() {
    let diagnostics = check_source(
        "ui:
  invalid_number: \"Please type {{ min }} to {{ max }}\"
  more: \"{{ keys }}\"
start: bye
nodes:
  bye:
    type: end
    text: Bye
",
    );
    assert_eq!(codes(&diagnostics), ["unknown-variable"]);
    assert_eq!(diagnostics[0].line, 8);
}

#[test]
fn a_loop_of_messages_and_branches_is_a_warning() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: question
    answer: number
    text: Age?
    result: age
    next: route
  route:
    type: branch
    rules:
      - when: {result: age, min: 18}
        next: bye
    default: note
  note:
    type: message
    text: Adults only, sorry.
    next: route
  bye:
    type: end
    text: Bye
",
    );
    assert_eq!(codes(&diagnostics), ["hop-loop"]);
    assert_eq!(diagnostics[0].severity, Severity::Warning);
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (14, 3));
}

#[test]
fn keys_that_turn_the_page_of_a_long_menu_are_a_warning() {
    let options: String = (1..=9)
        .map(|i| {
            let key = if i == 9 { "0".to_string() } else { i.to_string() };
            format!("      - {{key: {key}, label: Option number {i} with a long label here, next: bye}}\n")
        })
        .collect();
    let diagnostics = check_source(&format!(
        "start: ask
nodes:
  ask:
    type: menu
    text: Pick one
    result: pick
    options:
{options}  bye:
    type: end
    text: Bye
"
    ));
    assert_eq!(codes(&diagnostics), ["key-conflict"]);
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (21, 15));
}

#[test]
fn translations_for_undeclared_languages_are_a_warning() {
    let diagnostics = check_source(
        "start: bye
nodes:
  bye:
    type: end
    text: {en: Bye, sw: Kwaheri}
",
    );
    assert_eq!(codes(&diagnostics), ["unknown-language"]);
    assert_eq!((diagnostics[0].line, diagnostics[0].column), (10, 21));
}

#[test]
fn a_menu_without_options_is_an_error() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: menu
    text: Pick
    result: pick
    options: []
    fallback: bye
  bye:
    type: end
    text: Bye
",
    );
    assert_eq!(codes(&diagnostics), ["no-options"]);
}

#[test]
fn unreadable_and_empty_files_are_errors() {
    let missing = baraza::flow::load_file("tests/no_such_flow.yaml").expect_err("missing file");
    assert_eq!(missing[0].code, "unreadable");
    let empty = load_str("empty.yaml", "").expect_err("empty file");
    assert_eq!(empty[0].code, "yaml-syntax");
}

#[test]
fn every_missing_translation_is_named_once() {
    let source = "\
id: t
version: 1
name: Test
languages: [en, sw, fr]
default_language: en
start: bye
nodes:
  bye:
    type: end
    text: {en: Bye}
";
    let diagnostics = check(&load_str("t.yaml", source).expect("loads"));
    assert_eq!(codes(&diagnostics), ["missing-translation"]);
    assert!(
        diagnostics[0]
            .message
            .contains("no `sw` or `fr` translation"),
        "{}",
        diagnostics[0]
    );
}

#[test]
fn a_file_named_twice_is_checked_once() {
    let report = check_paths(&[
        PathBuf::from("tests/fixtures"),
        PathBuf::from("tests/fixtures/valid_minimal.yaml"),
    ]);
    assert!(!report.has_errors(), "{}", render_report(&report));
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    /// Characters that tend to break YAML, templates and positions.
    const NASTY: &[&str] = &[
        "{", "}", "{{", "}}", "{%", "%}", "'", "\"", ":", "- ", "\n", "  ", "’", "|", ">", "#",
        "\\u2019", "[", "]", ",", "é", "🙂", "\t", "answers.", "labels.x",
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        /// Whatever a manager's editor does to a flow, loading and checking report problems
        /// and never panic.
        #[test]
        fn loading_and_checking_a_mangled_flow(
            edits in proptest::collection::vec((0usize..4000, 0usize..12, 0usize..NASTY.len()), 1..4)
        ) {
            let mut source = std::fs::read_to_string("tests/fixtures/valid_minimal.yaml")
                .expect("fixture");
            for (at, cut, insert) in edits {
                let chars: Vec<char> = source.chars().collect();
                let at = at % (chars.len() + 1);
                let end = (at + cut).min(chars.len());
                let mut next: String = chars[..at].iter().collect();
                next.push_str(NASTY[insert]);
                next.extend(&chars[end..]);
                source = next;
            }
            match load_str("mangled.yaml", source.clone()) {
                Ok(flow) => {
                    for d in check(&flow) {
                        prop_assert!(d.line >= 1 && d.column >= 1, "{d}");
                        prop_assert!(d.line <= source.lines().count().max(1), "{d}");
                    }
                }
                Err(diagnostics) => prop_assert!(!diagnostics.is_empty()),
            }
        }
    }
}

#[test]
fn a_text_that_tests_or_defaults_an_answer_may_use_it_anywhere() {
    let diagnostics = check_source(
        "start: ask
nodes:
  ask:
    type: question
    optional: true
    text: Your village?
    result: village
    next: bye
  bye:
    type: end
    text: \"Thanks{% if answers.village %} from {{ answers.village }}{% endif %}, {{ labels.village | default(value='friend') }}\"
",
    );
    assert_eq!(diagnostics, Vec::<Diagnostic>::new());
}

#[test]
fn recordings_must_exist_in_the_audio_folder_when_it_is_given() {
    use baraza::flow::{CheckOptions, check_with, load_str};
    let source = "id: clinic\nversion: 1\nname: Clinic\nlanguages: [sw]\ndefault_language: sw\nstart: bye\nnodes:\n  bye:\n    type: end\n    text: Asante.\n    audio: { sw: sw/asante.mp3 }\n";
    let flow = load_str("clinic.yaml", source).expect("loads");
    let audio = tempfile::tempdir().expect("tempdir");
    let options = CheckOptions {
        audio_dir: Some(audio.path().to_path_buf()),
    };
    let missing = check_with(&flow, &options);
    assert_eq!(missing.len(), 1, "{missing:?}");
    assert_eq!(missing[0].code, "missing-audio");
    assert_eq!((missing[0].line, missing[0].column), (11, 18));
    std::fs::create_dir_all(audio.path().join("sw")).expect("mkdir");
    std::fs::write(audio.path().join("sw/asante.mp3"), b"ID3").expect("write");
    assert!(
        check_with(&flow, &options).is_empty(),
        "the recording exists now"
    );
    // Without the folder, the names are not looked up (USSD-only checks stay quiet).
    assert!(check_with(&flow, &CheckOptions::default()).is_empty());
}
