//! The real `baraza` binary's `contacts` commands, end to end, on SQLite and on PostgreSQL:
//! import (summary on standard output, `FILE:LINE: reason` on standard error, no number in
//! either), a dry run, a second import that changes nothing, `--map`, `count --by`, export
//! with pseudonyms and with raw numbers, and the errors a user sees.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_baraza");

struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn baraza(config: &Path, args: &[&str]) -> Run {
    let output = Command::new(BIN)
        .arg("contacts")
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("BARAZA_POSTGRES_URL")
        .env_remove("BARAZA_PSEUDONYM_SECRET")
        .env("NO_COLOR", "1")
        .output()
        .expect("baraza runs");
    Run {
        ok: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn fixture(name: &str) -> String {
    common::manifest_dir()
        .join("tests/fixtures/contacts")
        .join(name)
        .display()
        .to_string()
}

/// A config in `dir` with the given `results:` block and the test fields and segments.
fn write_config(dir: &Path, results: &str) -> PathBuf {
    let path = dir.join("gateway.yaml");
    let yaml = format!(
        "flows_dir: flows\n{results}pseudonym_secret: contacts-process-secret-0123\ncontacts:\n  custom_fields:\n    chv_status: {{ type: choice, choices: [active, inactive] }}\n    household_size: {{ type: number }}\n    registered_on: {{ type: date }}\n  segments_file: {}\n",
        fixture("segments.yaml")
    );
    std::fs::write(&path, yaml).expect("write config");
    path
}

fn the_commands_end_to_end(config: &Path) {
    let forms = fixture("forms.csv");
    let first = baraza(config, &["import", &forms]);
    assert!(first.ok, "{}", first.stderr);
    assert_eq!(
        first.stdout,
        format!(
            "{forms}: 16 rows: 10 new, 0 updated, 0 unchanged, 6 rejected, 0 duplicates merged\n"
        )
    );
    assert!(
        first.stderr.contains(&format!(
            "{forms}:12: a number of another country (TZ, +255) is not accepted\n"
        )),
        "{}",
        first.stderr
    );
    assert_eq!(first.stderr.lines().count(), 6, "{}", first.stderr);
    for digits in ["712345678", "754123456", "2025550143"] {
        assert!(!first.stderr.contains(digits), "a number in the report");
    }

    let again = baraza(config, &["import", &forms]);
    assert!(
        again
            .stdout
            .contains("0 new, 0 updated, 10 unchanged, 6 rejected")
    );

    let duplicates = fixture("duplicates.csv");
    let dry = baraza(config, &["import", &duplicates, "--dry-run"]);
    assert!(dry.ok, "{}", dry.stderr);
    assert!(
        dry.stdout
            .ends_with("5 rows: 3 new, 0 updated, 0 unchanged, 0 rejected, 2 duplicates merged (dry run: nothing written)\n"),
        "{}",
        dry.stdout
    );

    let counted = baraza(
        config,
        &["count", "--segment", "everyone", "--by", "operator"],
    );
    assert!(counted.ok, "{}", counted.stderr);
    assert_eq!(
        counted.stdout,
        "total\t10\nsafaricom\t7\nairtel\t2\ntelkom\t1\n"
    );

    let messy = fixture("messy.csv");
    let mapped = baraza(
        config,
        &["import", &messy, "--map", "Favourite colour=ward"],
    );
    assert!(mapped.ok, "{}", mapped.stderr);
    assert!(mapped.stdout.contains("2 new"), "{}", mapped.stdout);
    assert!(!mapped.stderr.contains("ignored"), "{}", mapped.stderr);
    let blue = baraza(config, &["count", "--segment", "kibra"]);
    assert_eq!(blue.stdout, "total\t0\n");

    let hidden = baraza(config, &["export"]);
    assert!(hidden.ok, "{}", hidden.stderr);
    assert!(hidden.stdout.starts_with("contact,name,"));
    assert_eq!(hidden.stdout.lines().count(), 13);
    assert!(!hidden.stdout.contains("+254"), "{}", hidden.stdout);

    let out = config.with_file_name("everyone.csv");
    let raw = baraza(
        config,
        &[
            "export",
            "--segment",
            "everyone",
            "--raw-numbers",
            "--out",
            &out.display().to_string(),
        ],
    );
    assert!(raw.ok, "{}", raw.stderr);
    assert_eq!(
        raw.stderr,
        format!("12 contacts written to {}\n", out.display())
    );
    let written = std::fs::read_to_string(&out).expect("export file");
    assert!(written.starts_with("number,name,"));
    assert!(written.contains("\r\n+254712345678,Akinyi,"), "{written}");

    let unknown = baraza(config, &["count", "--segment", "nobody"]);
    assert!(!unknown.ok);
    assert!(
        unknown
            .stderr
            .starts_with("error: no segment `nobody` (segments: everyone, women,"),
        "{}",
        unknown.stderr
    );
    let by_what = baraza(config, &["count", "--segment", "everyone", "--by", "shoe"]);
    assert!(!by_what.ok);
    assert!(
        by_what.stderr.contains("--by shoe: not a contact field"),
        "{}",
        by_what.stderr
    );
    let empty = baraza(config, &["import", &fixture("empty.csv")]);
    assert!(!empty.ok);
    assert!(
        empty.stderr.contains("empty.csv: the file is empty"),
        "{}",
        empty.stderr
    );
    let bad_map = baraza(config, &["import", &forms, "--map", "Phone"]);
    assert!(!bad_map.ok);
    assert!(
        bad_map.stderr.contains("--map Phone: write COLUMN=FIELD"),
        "{}",
        bad_map.stderr
    );
}

#[test]
fn contacts_commands_on_sqlite() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = write_config(
        dir.path(),
        "results:\n  store: sqlite\n  path: data/results.sqlite3\n",
    );
    the_commands_end_to_end(&config);
}

#[test]
fn contacts_commands_on_postgres() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let schema = common::unique("contacts_cli");
    let config = write_config(
        dir.path(),
        &format!(
            "results:\n  store: postgres\n  url: {}\n  schema: {schema}\n",
            common::postgres_url()
        ),
    );
    the_commands_end_to_end(&config);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(common::drop_schema(&schema));
}

/// `baraza check` also checks the segments file beside the flows (`campaigns/segments.yaml`)
/// against the contact fields: a sound file is reported, a segment on an undeclared field
/// fails the check with its place.
#[test]
fn check_reports_the_segments_beside_the_flows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = common::flows_folder(dir.path());
    std::fs::create_dir_all(flows.join("campaigns")).expect("campaigns folder");
    let segments = flows.join("campaigns/segments.yaml");
    let check = || {
        let output = Command::new(BIN)
            .arg("check")
            .arg(&flows)
            .env("NO_COLOR", "1")
            .output()
            .expect("baraza runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
        )
    };
    std::fs::write(
        &segments,
        "segments:\n  kondele: { field: ward, equals: Kondele }\n",
    )
    .expect("write");
    let (ok, out) = check();
    assert!(ok, "{out}");
    assert!(out.contains("1 segment(s), all sound"), "{out}");
    std::fs::write(
        &segments,
        "segments:\n  tall: { field: shoe_size, min: 40 }\n",
    )
    .expect("write");
    let (ok, out) = check();
    assert!(!ok, "{out}");
    assert!(out.contains("error:") && out.contains("tall"), "{out}");
}
