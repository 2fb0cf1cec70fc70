//! Contacts, run identically on SQLite (a temporary folder) and a real PostgreSQL server (one
//! fresh schema per test, dropped at the end): imports of the messy files in
//! `tests/fixtures/contacts/` (exact counts, the exact per-line reports, nothing lost, a second
//! import changing nothing, the same result at any batch size), segments, export and consent.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use baraza::config::ContactsConfig;
use baraza::contacts::consent::{Consent, ConsentActor};
use baraza::contacts::export::{count_contacts, export_contacts};
use baraza::contacts::import::{
    Collect, ImportError, ImportOptions, ImportSummary, NoticeKind, import_file,
};
use baraza::contacts::segment::Segments;
use baraza::contacts::{Contact, ContactSchema};
use baraza::pseudonym::Pseudonymiser;
use baraza::result_store::{ConsentSource, ConsentStatus, ResultStore};

/// 2026-12-07T00:00:00Z: the import's "now" (times and the year bound are fixed).
const NOW: i64 = 1_796_601_600_000;
const DAY: i64 = 86_400_000;

#[derive(Debug, Clone, Copy)]
enum Backend {
    Sqlite,
    Postgres,
}

/// One test's private store.
struct Db {
    store: ResultStore,
    _dir: tempfile::TempDir,
    schema: Option<String>,
}

impl Db {
    async fn open(backend: Backend) -> Db {
        let dir = tempfile::tempdir().expect("temporary folder");
        match backend {
            Backend::Sqlite => Db {
                store: ResultStore::open_sqlite(&dir.path().join("results.sqlite3"))
                    .await
                    .expect("open sqlite"),
                _dir: dir,
                schema: None,
            },
            Backend::Postgres => {
                let schema = common::unique("contacts");
                let store = ResultStore::open_postgres(&common::postgres_url(), Some(&schema))
                    .await
                    .expect("open postgres");
                Db {
                    store,
                    _dir: dir,
                    schema: Some(schema),
                }
            }
        }
    }

    async fn close(self) {
        self.store.flush_and_close().await.expect("close");
        if let Some(schema) = &self.schema {
            common::drop_schema(schema).await;
        }
    }

    /// Every stored contact, by number.
    async fn contacts(&self) -> BTreeMap<String, Contact> {
        let mut all = BTreeMap::new();
        let mut pages = self.store.contacts_stream();
        while let Some(page) = pages.recv().await {
            for c in page.expect("page") {
                all.insert(c.msisdn.clone(), c);
            }
        }
        all
    }
}

/// The test config: the embedded `contacts:` defaults (Kenya only; county, sub_county,
/// ward) and three custom fields.
fn schema() -> ContactSchema {
    let yaml = "custom_fields:\n  chv_status: { type: choice, choices: [active, inactive] }\n  household_size: { type: number }\n  registered_on: { type: date }\n";
    let config: ContactsConfig = serde_saphyr::from_str(yaml).expect("config");
    ContactSchema::from_config(&config).expect("schema")
}

fn fixture(name: &str) -> PathBuf {
    common::manifest_dir()
        .join("tests/fixtures/contacts")
        .join(name)
}

/// The summary and the notices as `LINE: message`.
async fn import_with(
    db: &Db,
    file: &str,
    batch_rows: usize,
    mappings: &[(&str, &str)],
    dry_run: bool,
) -> (Result<ImportSummary, ImportError>, Vec<String>) {
    let options = ImportOptions {
        dry_run,
        mappings: mappings
            .iter()
            .map(|(c, f)| (c.to_string(), f.to_string()))
            .collect(),
        batch_rows,
        now_ms: NOW,
    };
    let mut notices = Collect::default();
    let path = fixture(file);
    let summary = import_file(&db.store, &schema(), &path, &options, &mut notices).await;
    let lines = notices
        .0
        .iter()
        .map(|n| {
            assert_eq!(Path::new(&n.file), path, "notices name the file");
            format!("{}: {}", n.line, n.message)
        })
        .collect();
    (summary, lines)
}

async fn import(db: &Db, file: &str) -> (ImportSummary, Vec<String>) {
    let (summary, notices) = import_with(db, file, 500, &[], false).await;
    (summary.expect("imports"), notices)
}

fn summary(rows: u64, new: u64, updated: u64, unchanged: u64, rejected: u64) -> ImportSummary {
    ImportSummary {
        rows,
        new,
        updated,
        unchanged,
        rejected,
        ..ImportSummary::default()
    }
}

fn text(value: &str) -> Option<String> {
    Some(value.to_string())
}

// ---------------------------------------------------------------------------------------------

async fn kenyan_numbers_in_every_written_form(backend: Backend) {
    let db = Db::open(backend).await;
    let (first, notices) = import(&db, "forms.csv").await;
    assert_eq!(first, summary(16, 10, 0, 0, 6));
    assert!(first.accounts_for_every_row());
    assert_eq!(
        notices,
        [
            "12: a number of another country (TZ, +255) is not accepted",
            "13: a number of another country (UG, +256) is not accepted",
            "14: a number of another country (US, +1) is not accepted",
            "15: not a valid KE number",
            "16: unreadable number",
            "17: no number",
        ]
    );
    let stored = db.contacts().await;
    let names: Vec<(&str, &str)> = stored
        .values()
        .map(|c| (c.msisdn.as_str(), c.name.as_deref().unwrap_or("")))
        .collect();
    assert_eq!(
        names,
        [
            ("+254100000008", "Imani"),
            ("+254110000007", "Halima"),
            ("+254712345678", "Akinyi"),
            ("+254722000001", "Baraka"),
            ("+254733000002", "Chebet"),
            ("+254740000003", "Dalmas"),
            ("+254757000004", "Esther"),
            ("+254768000005", "Faith"),
            ("+254771000009", "Jabali"),
            ("+254790000006", "Gitau"),
        ]
    );
    let operator = |n: &str| stored[n].operator.clone();
    assert_eq!(operator("+254712345678"), text("safaricom"));
    assert_eq!(operator("+254110000007"), text("safaricom"));
    assert_eq!(operator("+254733000002"), text("airtel"));
    assert_eq!(operator("+254100000008"), text("airtel"));
    assert_eq!(operator("+254771000009"), text("telkom"));
    assert!(
        stored
            .values()
            .all(|c| c.created_at_ms == NOW && c.consent.is_none())
    );

    // The same file again: nothing changes, the same lines are refused.
    let (again, notices_again) = import(&db, "forms.csv").await;
    assert_eq!(again, summary(16, 0, 0, 10, 6));
    assert_eq!(notices_again, notices);
    assert_eq!(db.contacts().await, stored);
    db.close().await;
}

async fn bom_semicolons_and_names_in_any_script(backend: Backend) {
    let db = Db::open(backend).await;
    let (result, notices) = import(&db, "bom_semicolon.csv").await;
    assert_eq!(result, summary(4, 4, 0, 0, 0));
    assert_eq!(
        notices,
        Vec::<String>::new(),
        "every Swahili header is known"
    );
    let stored = db.contacts().await;
    let wanjiru = &stored["+254701000101"];
    assert_eq!(wanjiru.name, text("Wanjiru Njoroge"));
    assert_eq!(wanjiru.gender, text("female"));
    assert_eq!(wanjiru.language, text("sw"));
    assert_eq!(wanjiru.birth_year, Some(1990));
    let fields: Vec<(&str, &str)> = wanjiru
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("county", "Nairobi"),
            ("sub_county", "Westlands"),
            ("ward", "Parklands")
        ]
    );
    let consent = wanjiru.consent.as_ref().expect("consent from the file");
    assert_eq!(
        (consent.status, consent.source, consent.at_ms),
        (ConsentStatus::OptedIn, ConsentSource::Import, NOW)
    );
    assert_eq!(
        consent.changed_by.as_deref(),
        Some("import:bom_semicolon.csv")
    );
    let zoe = &stored["+254701000102"];
    assert_eq!(zoe.name, text("Zoé Ndèye; jr"));
    assert_eq!(
        (zoe.gender.as_deref(), zoe.language.as_deref()),
        (Some("male"), Some("fr"))
    );
    assert_eq!(zoe.consent, None);
    let muthoni = &stored["+254701000103"];
    assert_eq!(muthoni.name, text("Mũthoni wa Kĩrũ"));
    assert_eq!(
        muthoni.consent.as_ref().map(|c| c.status),
        Some(ConsentStatus::OptedOut)
    );
    assert_eq!(muthoni.fields["sub_county"], "Gatundu Kaskazini");
    let cagri = &stored["+254701000104"];
    assert_eq!(cagri.name, text("Çağrı Ñúñez"));
    assert_eq!(cagri.language, text("en"));
    assert_eq!(cagri.fields.len(), 1, "empty cells store nothing");

    let (again, _) = import(&db, "bom_semicolon.csv").await;
    assert_eq!(again, summary(4, 0, 0, 4, 0));
    db.close().await;
}

async fn quoted_commas_newlines_and_typed_fields(backend: Backend) {
    let db = Db::open(backend).await;
    let (result, notices) = import(&db, "quoted.csv").await;
    assert_eq!(result, summary(6, 3, 0, 0, 3));
    // The second record spans lines 3 and 4: the lines after it keep their own numbers.
    assert_eq!(
        notices,
        [
            "6: chv_status: `retired` is not one of active, inactive",
            "7: registered_on: `31/02/2026` is not a date (write 2026-03-31 or 31/03/2026)",
            "8: household_size: `three` is not a number",
        ]
    );
    let stored = db.contacts().await;
    assert_eq!(stored["+254702000201"].name, text("Otieno, Peter"));
    let aisha = &stored["+254702000202"];
    assert_eq!(aisha.name, text("Aisha Mohamed"));
    let fields: Vec<(&str, &str)> = aisha
        .fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    assert_eq!(
        fields,
        [
            ("chv_status", "inactive"),
            ("household_size", "2.5"),
            ("registered_on", "2026-03-31"),
            ("ward", "Ward, with comma"),
        ]
    );
    assert_eq!(stored["+254702000203"].name, text("Said \"Bob\" Ali"));
    assert_eq!(stored.len(), 3);
    let (again, _) = import(&db, "quoted.csv").await;
    assert_eq!(again, summary(6, 0, 0, 3, 3));
    assert_eq!(db.contacts().await, stored);
    db.close().await;
}

async fn duplicates_merge_alike_at_any_batch_size(backend: Backend) {
    let mut states = Vec::new();
    for batch_rows in [1, 2, 500] {
        let db = Db::open(backend).await;
        let (result, notices) = import_with(&db, "duplicates.csv", batch_rows, &[], false).await;
        let expected = ImportSummary {
            duplicates: 2,
            ..summary(5, 3, 0, 0, 0)
        };
        assert_eq!(result.expect("imports"), expected, "batch of {batch_rows}");
        assert_eq!(
            notices,
            [
                "4: same number as line 2; merged (kept line 2's name)",
                "5: same number as line 3; merged",
            ],
            "batch of {batch_rows}"
        );
        let stored = db.contacts().await;
        let amina = &stored["+254703000301"];
        assert_eq!(amina.name, text("Amina"), "the first row wins");
        assert_eq!(
            amina.fields.get("ward").map(String::as_str),
            Some("Kilimani")
        );
        assert_eq!(amina.gender, text("female"), "an empty cell erases nothing");
        let (again, _) = import_with(&db, "duplicates.csv", batch_rows, &[], false).await;
        let unchanged = ImportSummary {
            duplicates: 2,
            ..summary(5, 0, 0, 3, 0)
        };
        assert_eq!(again.expect("imports"), unchanged, "batch of {batch_rows}");
        assert_eq!(db.contacts().await, stored);
        states.push(stored);
        db.close().await;
    }
    assert!(states.windows(2).all(|w| w[0] == w[1]));
}

async fn messy_rows_are_reported_line_by_line(backend: Backend) {
    let db = Db::open(backend).await;
    let (result, notices) = import(&db, "messy.csv").await;
    let expected = ImportSummary {
        blank: 1,
        ..summary(9, 2, 0, 0, 6)
    };
    assert_eq!(result, expected);
    assert!(result.accounts_for_every_row());
    assert_eq!(
        notices,
        [
            "1: column `Favourite colour` ignored: not a contact field (--map \"Favourite colour\"=FIELD to keep it)",
            "4: 8 cells, but the header has 7",
            "5: name: not UTF-8 text (export the sheet as CSV UTF-8)",
            "6: birth_year: `2099` is not a year between 1900 and this year",
            "7: age_band: `24-20` is not an age band (write 20-24 or 35+)",
            "8: language: `Klingon language` is not a language code (write sw, en, fr...)",
            "9: gender: `robot` is not one of female, male, intersex, other",
        ]
    );
    let stored = db.contacts().await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored["+254704000408"].name, text("Short row"));

    // A mapping keeps the unknown column, as a ward; the rows already stored are updated.
    let (mapped, notices) = import_with(
        &db,
        "messy.csv",
        500,
        &[("favourite colour", "ward")],
        false,
    )
    .await;
    let expected = ImportSummary {
        blank: 1,
        ..summary(9, 0, 1, 1, 6)
    };
    assert_eq!(mapped.expect("imports"), expected);
    assert_eq!(notices.len(), 6, "no column note: {notices:?}");
    let stored = db.contacts().await;
    let ok = &stored["+254704000401"];
    assert_eq!(ok.fields.get("ward").map(String::as_str), Some("blue"));
    assert_eq!(ok.updated_at_ms, NOW);
    db.close().await;
}

async fn files_that_cannot_be_imported_write_nothing(backend: Backend) {
    let db = Db::open(backend).await;
    let (empty, _) = import_with(&db, "empty.csv", 500, &[], false).await;
    assert!(matches!(&empty, Err(ImportError::Empty(_))), "{empty:?}");
    let (binary, _) = import_with(&db, "binary.csv", 500, &[], false).await;
    assert!(matches!(&binary, Err(ImportError::Binary(_))), "{binary:?}");
    let message = binary.expect_err("binary").to_string();
    assert!(
        message.ends_with(
            "binary.csv: not a CSV text file (it holds binary data); export the sheet as CSV UTF-8"
        ),
        "{message}"
    );
    let (no_number, _) = import_with(&db, "no_number.csv", 500, &[], false).await;
    let message = no_number.expect_err("no number column").to_string();
    assert!(
        message.ends_with("no_number.csv:1: no column holds phone numbers (columns: `name`, `ward`); name one phone, msisdn or number, or use --map COLUMN=number"),
        "{message}"
    );
    let (missing, _) = import_with(&db, "not-there.csv", 500, &[], false).await;
    assert!(matches!(missing, Err(ImportError::Io { .. })));
    let (bad_map, _) = import_with(&db, "forms.csv", 500, &[("Name", "shoe")], false).await;
    assert!(matches!(
        bad_map,
        Err(ImportError::MappedFieldUnknown { .. })
    ));
    let (header_only, notices) = import(&db, "header_only.csv").await;
    assert_eq!(header_only, ImportSummary::default());
    assert!(notices.is_empty());
    assert!(db.contacts().await.is_empty());
    db.close().await;
}

async fn a_dry_run_counts_and_writes_nothing(backend: Backend) {
    let db = Db::open(backend).await;
    let (dry, notices) = import_with(&db, "forms.csv", 3, &[], true).await;
    assert_eq!(dry.expect("dry run"), summary(16, 10, 0, 0, 6));
    assert_eq!(notices.len(), 6);
    assert!(db.contacts().await.is_empty());
    let (real, _) = import(&db, "forms.csv").await;
    assert_eq!(real, summary(16, 10, 0, 0, 6));
    db.close().await;
}

async fn consent_has_one_truth_and_a_log(backend: Backend) {
    let db = Db::open(backend).await;
    let schema = schema();
    let consent = Consent {
        store: &db.store,
        schema: &schema,
    };
    let sms = ConsentActor::citizen(ConsentSource::Keyword, "sms");
    // STOP from a number that is not a contact, written the way an SMSC sends it.
    assert!(
        consent
            .opt_out("254705000502", &sms, NOW)
            .await
            .expect("opt out")
    );
    assert!(
        !consent
            .opt_out("0705 000 502", &sms, NOW + 1)
            .await
            .expect("again")
    );
    assert!(consent.is_opted_out("+254705000502").await.expect("read"));
    assert!(!consent.is_opted_out("+254705000501").await.expect("read"));
    // A number of a country the contact list refuses is opted out all the same.
    assert!(
        consent
            .opt_out("+255754123456", &sms, NOW)
            .await
            .expect("foreign")
    );
    assert!(
        consent
            .is_opted_out("+255 754 123 456")
            .await
            .expect("read")
    );

    // A file saying "yes" for the opted-out number changes nothing and says so; its "no"
    // opts a number out; its "yes" records consent where none was.
    let (result, notices) = import(&db, "consent.csv").await;
    assert_eq!(result, summary(4, 3, 0, 0, 1));
    assert_eq!(
        notices,
        ["5: consent: `maybe` is not one of yes, no (or opted_in, opted_out)",]
    );
    let stored = db.contacts().await;
    let status = |n: &str| stored[n].consent.as_ref().map(|c| (c.status, c.source));
    assert_eq!(
        status("+254705000501"),
        Some((ConsentStatus::OptedIn, ConsentSource::Import))
    );
    assert_eq!(
        status("+254705000502"),
        Some((ConsentStatus::OptedOut, ConsentSource::Keyword)),
        "the file's `no` agreed with the stop word: nothing changed"
    );
    assert_eq!(status("+254705000503"), None);

    let (_, notices) = import_with(&db, "consent.csv", 500, &[], false).await;
    assert_eq!(notices.len(), 1, "{notices:?}");

    // Opting out the contact who agreed in the file; a register's or first message's
    // opt-in never undoes it, the citizen's start word does.
    assert!(
        consent
            .opt_out("0705000501", &sms, NOW + 10)
            .await
            .expect("stop")
    );
    let inbound = ConsentActor::citizen(ConsentSource::Inbound, "ussd");
    assert!(
        !consent
            .opt_in_if_unknown("0705000501", &inbound, NOW + 11)
            .await
            .expect("inbound")
    );
    assert!(
        consent
            .opt_in_if_unknown("0705000599", &inbound, NOW + 11)
            .await
            .expect("new")
    );
    assert!(
        consent
            .opt_in("0705000501", &sms, NOW + 12)
            .await
            .expect("start")
    );
    let trail: Vec<(ConsentStatus, ConsentSource, i64)> = consent
        .log("0705000501")
        .await
        .expect("log")
        .into_iter()
        .map(|c| (c.consent.status, c.consent.source, c.consent.at_ms))
        .collect();
    assert_eq!(
        trail,
        [
            (ConsentStatus::OptedIn, ConsentSource::Import, NOW),
            (ConsentStatus::OptedOut, ConsentSource::Keyword, NOW + 10),
            (ConsentStatus::OptedIn, ConsentSource::Keyword, NOW + 12),
        ]
    );
    let api = ConsentActor {
        source: ConsentSource::Api,
        channel: None,
        by: Some("operator-7".into()),
    };
    assert!(
        consent
            .opt_out("0705000503", &api, NOW + 13)
            .await
            .expect("api")
    );
    let entry = consent.log("+254705000503").await.expect("log");
    assert_eq!(entry.len(), 1);
    assert_eq!(entry[0].consent.changed_by.as_deref(), Some("operator-7"));

    // Opt-outs the session store kept are carried over once.
    let carried = [
        "+254705000502".to_string(),
        "0705000504".to_string(),
        "0705000505".to_string(),
    ];
    assert_eq!(
        consent.carry_over(&carried, NOW + 20).await.expect("carry"),
        2
    );
    assert_eq!(
        consent.carry_over(&carried, NOW + 21).await.expect("again"),
        0
    );
    let asked = [
        "0705000501".to_string(),
        "0705000502".to_string(),
        "0705000503".to_string(),
        "0705000504".to_string(),
        "0705000599".to_string(),
    ];
    assert_eq!(
        consent.opted_out_among(&asked).await.expect("read"),
        ["0705000502", "0705000503", "0705000504"]
    );
    db.close().await;
}

async fn segments_count_and_export(backend: Backend) {
    let db = Db::open(backend).await;
    for file in ["bom_semicolon.csv", "quoted.csv", "duplicates.csv"] {
        import(&db, file).await;
    }
    assert!(
        db.store
            .contact_seen("+254701000102", NOW - DAY)
            .await
            .expect("seen")
    );
    assert!(
        db.store
            .contact_seen("+254703000303", NOW - 30 * DAY)
            .await
            .expect("seen")
    );
    assert!(
        !db.store
            .contact_seen("+254799999999", NOW)
            .await
            .expect("not a contact")
    );
    // Last seen only moves forward.
    assert!(
        !db.store
            .contact_seen("+254701000102", NOW - 2 * DAY)
            .await
            .expect("seen")
    );

    let schema = schema();
    let segments = Segments::load(&fixture("segments.yaml"), &schema).expect("segments");
    let mut counts = BTreeMap::new();
    for segment in &segments.segments {
        let n = count_contacts(&db.store, &schema, segment, None, NOW)
            .await
            .expect("count");
        counts.insert(segment.name.as_str(), n.get("").copied().unwrap_or(0));
    }
    let expected: BTreeMap<&str, u64> = [
        ("everyone", 9),
        ("women", 2),
        ("kibra", 3),
        ("coast_or_nairobi", 2),
        ("born_1985_1995", 2),
        ("big_households", 1),
        ("registered_march", 2),
        ("active_chvs", 1),
        ("no_ward", 2),
        ("with_consent", 1),
        ("kibra_by_gender", 1),
        ("not_kibra", 6),
        ("seen_lately", 1),
        ("safaricom", 9),
    ]
    .into_iter()
    .collect();
    assert_eq!(counts, expected);

    let everyone = segments.get("everyone").expect("segment");
    let gender = schema.field_named("gender");
    let by_gender = count_contacts(&db.store, &schema, everyone, gender, NOW)
        .await
        .expect("count");
    let by_gender: Vec<(&str, u64)> = by_gender.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    assert_eq!(by_gender, [("(missing)", 5), ("female", 2), ("male", 2)]);
    assert!(segments.get("nobody").is_err());

    // Export: raw numbers only when asked; pseudonyms otherwise.
    let kibra = segments.get("kibra").expect("segment");
    let mut raw = Vec::new();
    let n = export_contacts(&db.store, &schema, Some(kibra), None, NOW, &mut raw)
        .await
        .expect("export");
    assert_eq!(n, 3);
    let raw = String::from_utf8(raw).expect("utf-8");
    let lines: Vec<&str> = raw.split("\r\n").collect();
    assert_eq!(
        lines[0],
        "number,name,language,channel,gender,birth_year,age_band,county,sub_county,ward,chv_status,household_size,registered_on,operator,consent,consent_source,consent_at,created_at,updated_at,last_seen_at"
    );
    assert_eq!(
        lines[1],
        "+254702000201,\"Otieno, Peter\",,,,,,,,Kibra,active,4,2026-03-31,safaricom,,,,2026-12-07T00:00:00.000Z,2026-12-07T00:00:00.000Z,"
    );
    assert!(lines[2].starts_with("+254702000203,\"Said \"\"Bob\"\" Ali\","));
    assert!(lines[3].starts_with("+254703000302,Brian,"));
    assert_eq!(lines[4], "");
    let key = Pseudonymiser::new(b"contacts-test-secret-0123");
    let mut hidden = Vec::new();
    let n = export_contacts(&db.store, &schema, None, Some(&key), NOW, &mut hidden)
        .await
        .expect("export");
    assert_eq!(n, 10, "without a segment, opted-out contacts too");
    let hidden = String::from_utf8(hidden).expect("utf-8");
    assert!(hidden.starts_with("contact,name,"));
    assert!(
        !hidden.contains("+254") && !hidden.contains("0701"),
        "{hidden}"
    );
    assert!(hidden.contains(&key.of("+254701000103")));
    db.close().await;
}

/// The example in `flows/campaigns/segments.yaml` holds against the embedded defaults.
#[test]
fn the_example_segments_file_is_valid() {
    let schema = ContactSchema::from_config(&ContactsConfig::default()).expect("schema");
    let path = common::manifest_dir().join("flows/campaigns/segments.yaml");
    let segments = Segments::load(&path, &schema).expect("valid segments");
    assert_eq!(segments.segments.len(), 5);
}

/// The per-line report kinds, for callers that sort them (rejected, merged, notes).
#[test]
fn notice_kinds_are_distinct() {
    assert_ne!(NoticeKind::Rejected, NoticeKind::Merged);
    assert_ne!(NoticeKind::Merged, NoticeKind::Note);
}

macro_rules! on_both_stores {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Backend::Postgres).await;
                }
            )*
        }
    };
}

on_both_stores!(
    kenyan_numbers_in_every_written_form,
    bom_semicolons_and_names_in_any_script,
    quoted_commas_newlines_and_typed_fields,
    duplicates_merge_alike_at_any_batch_size,
    messy_rows_are_reported_line_by_line,
    files_that_cannot_be_imported_write_nothing,
    a_dry_run_counts_and_writes_nothing,
    consent_has_one_truth_and_a_log,
    segments_count_and_export,
);
