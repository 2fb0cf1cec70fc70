//! Behaviour of the result store, run identically against SQLite (a temporary folder) and a
//! real PostgreSQL server (`BARAZA_TEST_POSTGRES_URL`, default
//! `postgres://postgres@127.0.0.1:5432/test`, one fresh schema per test, dropped afterwards),
//! plus exact-byte checks of the CSV export.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use baraza::result_store::{
    AnswerRecord, CallAttemptQuery, CallAttemptRecord, CallAttemptStatus, CallFinal, CallKey,
    CallRetry, PublishedFlow, QueuedSms, ReceiptRecord, ResponseRow, ResponseStart, ResponseStatus,
    ResultStore, ResultStoreError, SmsPartRecord, SmsState, SmsStateUpdate, StatusUpdate,
    Withdrawal, Write, export_csv,
};
use tokio::task::JoinSet;

// ---------------------------------------------------------------------------------------------
// Fixtures

static SEQUENCE: AtomicUsize = AtomicUsize::new(0);

fn postgres_url() -> String {
    std::env::var("BARAZA_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_string())
}

/// A private database for one test: a SQLite file in a temporary folder, or a PostgreSQL
/// schema that is dropped when the fixture is (even if the test panics).
enum Fixture {
    Sqlite {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Postgres {
        url: String,
        schema: String,
    },
}

impl Fixture {
    fn sqlite(_test: &str) -> Fixture {
        let dir = tempfile::tempdir().expect("temporary folder");
        // Nested, to prove open_sqlite creates missing parent folders.
        let path = dir
            .path()
            .join("data")
            .join("nested")
            .join("results.sqlite3");
        Fixture::Sqlite { _dir: dir, path }
    }

    fn postgres(test: &str) -> Fixture {
        let short: String = test.chars().take(30).collect();
        let schema = format!(
            "rs_{}_{}_{}",
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::SeqCst),
            short
        );
        Fixture::Postgres {
            url: postgres_url(),
            schema,
        }
    }

    async fn try_open(&self) -> Result<ResultStore, ResultStoreError> {
        match self {
            Fixture::Sqlite { path, .. } => ResultStore::open_sqlite(path).await,
            Fixture::Postgres { url, schema } => {
                ResultStore::open_postgres(url, Some(schema)).await
            }
        }
    }

    async fn open(&self) -> ResultStore {
        match self.try_open().await {
            Ok(store) => store,
            Err(e) => panic!("opening the result store failed: {e}"),
        }
    }

    async fn admin(&self) -> Admin {
        match self {
            Fixture::Sqlite { path, .. } => {
                let conn = rusqlite::Connection::open(path).expect("open sqlite directly");
                conn.busy_timeout(Duration::from_secs(10))
                    .expect("busy timeout");
                Admin::Sqlite(conn)
            }
            Fixture::Postgres { url, schema } => {
                let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                    .await
                    .expect("connect to postgres");
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("SET search_path TO \"{schema}\""))
                    .await
                    .expect("set search_path");
                Admin::Postgres(client)
            }
        }
    }

    /// How many answer rows exist for `response_id` (bypassing the store's read path).
    async fn answer_rows(&self, response_id: &str) -> i64 {
        match self.admin().await {
            Admin::Sqlite(conn) => conn
                .query_row(
                    "SELECT COUNT(*) FROM answers WHERE response_id = ?1",
                    [response_id],
                    |row| row.get(0),
                )
                .expect("count answers"),
            Admin::Postgres(client) => client
                .query_one(
                    "SELECT COUNT(*) FROM answers WHERE response_id = $1",
                    &[&response_id],
                )
                .await
                .expect("count answers")
                .get(0),
        }
    }

    async fn migration_versions(&self) -> Vec<i64> {
        match self.admin().await {
            Admin::Sqlite(conn) => {
                let mut stmt = conn
                    .prepare("SELECT version FROM schema_migrations ORDER BY version")
                    .expect("prepare");
                stmt.query_map([], |row| row.get(0))
                    .expect("query")
                    .collect::<Result<_, _>>()
                    .expect("rows")
            }
            Admin::Postgres(client) => client
                .query(
                    "SELECT version FROM schema_migrations ORDER BY version",
                    &[],
                )
                .await
                .expect("query")
                .iter()
                .map(|row| row.get(0))
                .collect(),
        }
    }

    /// Pretends a newer build migrated the database.
    async fn record_migration(&self, version: i64) {
        let sql = "INSERT INTO schema_migrations (version, name, applied_at_ms) VALUES ";
        match self.admin().await {
            Admin::Sqlite(conn) => {
                conn.execute(&format!("{sql} (?1, 'future', 0)"), [version])
                    .expect("insert migration");
            }
            Admin::Postgres(client) => {
                client
                    .execute(&format!("{sql} ($1, 'future', 0)"), &[&version])
                    .await
                    .expect("insert migration");
            }
        }
    }

    /// Installs a trigger that makes the database refuse answers with the value `poison`,
    /// standing in for any error a single request could cause.
    async fn poison_answers(&self) {
        match self.admin().await {
            Admin::Sqlite(conn) => conn
                .execute_batch(
                    "CREATE TRIGGER poison BEFORE INSERT ON answers WHEN NEW.value = 'poison' \
                     BEGIN SELECT RAISE(ABORT, 'poisoned value'); END;",
                )
                .expect("create trigger"),
            Admin::Postgres(client) => client
                .batch_execute(
                    "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
                     BEGIN IF NEW.value = 'poison' THEN RAISE EXCEPTION 'poisoned value'; END IF; \
                     RETURN NEW; END $$; \
                     CREATE TRIGGER poison BEFORE INSERT ON answers \
                     FOR EACH ROW EXECUTE FUNCTION poison();",
                )
                .await
                .expect("create trigger"),
        }
    }

    /// Takes a lock that makes the store's writer wait until `release`.
    async fn block_writer(&self) -> WriterBlock {
        match self.admin().await {
            Admin::Sqlite(conn) => {
                conn.execute_batch("BEGIN IMMEDIATE")
                    .expect("take the write lock");
                WriterBlock::Sqlite(conn)
            }
            Admin::Postgres(client) => {
                client
                    .batch_execute("BEGIN; LOCK TABLE responses IN EXCLUSIVE MODE")
                    .await
                    .expect("lock the responses table");
                WriterBlock::Postgres(client)
            }
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Fixture::Postgres { url, schema } = self {
            let (url, schema) = (url.clone(), schema.clone());
            // Drop runs inside the test's runtime: clean up on a thread with its own.
            let cleanup = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cleanup runtime");
                runtime.block_on(async move {
                    let (client, connection) =
                        tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
                        .await
                })
            });
            match cleanup.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("could not drop a test schema: {e}"),
                Err(_) => eprintln!("the schema cleanup thread panicked"),
            }
        }
    }
}

/// A direct connection to the test database, beside the store.
enum Admin {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

/// A held lock that blocks the store's writer.
enum WriterBlock {
    Sqlite(rusqlite::Connection),
    Postgres(tokio_postgres::Client),
}

impl WriterBlock {
    async fn release(self) {
        match self {
            WriterBlock::Sqlite(conn) => conn.execute_batch("ROLLBACK").expect("release"),
            WriterBlock::Postgres(client) => {
                client.batch_execute("ROLLBACK").await.expect("release")
            }
        }
    }
}

/// Waits (yielding, with a generous safety limit against hangs) until `count` commit requests
/// are in the writer's hands.
async fn until_pending(store: &ResultStore, count: usize) {
    let waited = tokio::time::timeout(Duration::from_secs(60), async {
        while store.pending_commits() < count {
            tokio::task::yield_now().await;
        }
    })
    .await;
    assert!(
        waited.is_ok(),
        "only {} of {count} commits reached the writer",
        store.pending_commits()
    );
}

// ---------------------------------------------------------------------------------------------
// Writes

const SUBSCRIBER_1: &str = "+254700000001";
const SUBSCRIBER_2: &str = "+254700000002";

fn start(id: &str, flow: &str, subscriber: &str, at: i64) -> Write {
    Write::Start(ResponseStart {
        response_id: id.to_string(),
        flow_id: flow.to_string(),
        flow_version: 3,
        channel: "ussd".to_string(),
        provider: "africastalking".to_string(),
        subscriber: subscriber.to_string(),
        language: "en".to_string(),
        started_at_ms: at,
    })
}

fn answer(id: &str, result: &str, value: &str, label: Option<&str>, step: u32, at: i64) -> Write {
    Write::Answer(AnswerRecord {
        response_id: id.to_string(),
        result: result.to_string(),
        value: value.to_string(),
        label: label.map(str::to_string),
        node: format!("ask_{result}"),
        step,
        answered_at_ms: at,
    })
}

fn status(id: &str, status: ResponseStatus, language: Option<&str>, at: i64) -> Write {
    Write::Status(StatusUpdate {
        response_id: id.to_string(),
        status,
        language: language.map(str::to_string),
        at_ms: at,
    })
}

fn answers(
    pairs: &[(&str, &str, Option<&str>)],
) -> std::collections::BTreeMap<String, (String, Option<String>)> {
    pairs
        .iter()
        .map(|(result, value, label)| {
            (
                result.to_string(),
                (value.to_string(), label.map(str::to_string)),
            )
        })
        .collect()
}

async fn commit(store: &ResultStore, writes: Vec<Write>) {
    if let Err(e) = store.commit(writes).await {
        panic!("commit failed: {e}");
    }
}

async fn responses(store: &ResultStore, flow: &str) -> Vec<ResponseRow> {
    match store.responses(flow).await {
        Ok(rows) => rows,
        Err(e) => panic!("reading responses failed: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// The behavioural suite, instantiated once per backend

macro_rules! behaviour_suite {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Fixture::sqlite(stringify!($test))).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test(super::Fixture::postgres(stringify!($test))).await;
                }
            )*
        }
    };
}

behaviour_suite!(
    start_answers_and_status_round_trip,
    resumed_response_is_active_again,
    duplicate_deliveries_are_recorded_once,
    same_step_replaces_and_later_step_supersedes,
    concurrent_commits_share_transactions,
    close_commits_everything_already_queued,
    everything_survives_close_and_reopen,
    migrations_are_idempotent_and_newer_schemas_refused,
    unknown_response_is_rejected_without_losing_the_batch,
    export_of_stored_rows_is_byte_exact,
    ping_reports_health,
    failing_request_does_not_fail_its_batch_neighbours,
    outbound_sms_states_parts_and_receipts,
    call_attempts_are_kept_apart_updated_and_frozen_once_final,
    a_final_call_status_ends_the_attempt_once_and_schedules_one_retry,
    answers_stored_before_version_5_survive_its_new_key,
    a_withdrawn_response_goes_with_its_answers_and_nothing_else,
    only_one_of_two_claims_on_a_queued_message_applies,
    inbound_sms_are_kept_handled_and_their_redeliveries_found,
    flow_versions_publish_once_refuse_changes_and_poll_by_cursor,
);

fn inbound(id: &str, node: &str, body: &str, at: i64) -> baraza::result_store::InboundSms {
    baraza::result_store::InboundSms {
        inbound_id: id.to_string(),
        node: node.to_string(),
        operator: "op".to_string(),
        sender: SUBSCRIBER_1.to_string(),
        recipient: "20880".to_string(),
        body: body.to_string(),
        received_at_ms: at,
    }
}

fn inbound_change(id: &str, change: baraza::result_store::InboundChange) -> Write {
    Write::SmsInboundUpdate(baraza::result_store::InboundUpdate {
        inbound_id: id.to_string(),
        change,
        at_ms: 9_000,
    })
}

/// Kept inbound SMS: a node reads back its own unhandled ones, oldest first; a handled one
/// is gone from that list; a redelivery is found only while flagged, only with the same
/// content, and only within the window.
async fn inbound_sms_are_kept_handled_and_their_redeliveries_found(fx: Fixture) {
    use baraza::result_store::{InboundChange, REDELIVERY_WINDOW_MS};
    let store = fx.open().await;
    let t0 = 1_000_000_000;
    commit(
        &store,
        vec![
            Write::SmsInbound(inbound("i2", "node-a", "2", t0 + 5)),
            Write::SmsInbound(inbound("i1", "node-a", "HEALTH", t0)),
            Write::SmsInbound(inbound("i3", "node-b", "3", t0)),
            // Kept twice (a retried commit): one row.
            Write::SmsInbound(inbound("i1", "node-a", "HEALTH", t0)),
        ],
    )
    .await;
    let ids = |rows: Vec<baraza::result_store::InboundSms>| {
        rows.into_iter().map(|m| m.inbound_id).collect::<Vec<_>>()
    };
    let unhandled = store.sms_inbound_unhandled("node-a").await.expect("read");
    assert_eq!(ids(unhandled), vec!["i1", "i2"]);
    commit(&store, vec![inbound_change("i1", InboundChange::Handled)]).await;
    let unhandled = store.sms_inbound_unhandled("node-a").await.expect("read");
    assert_eq!(ids(unhandled), vec!["i2"]);

    let copy = inbound("copy", "node-a", "2", t0 + 60_000);
    assert_eq!(
        store.sms_inbound_redelivered(&copy).await.expect("read"),
        None
    );
    commit(
        &store,
        vec![inbound_change(
            "i2",
            InboundChange::RedeliveryExpected(true),
        )],
    )
    .await;
    assert_eq!(
        store.sms_inbound_redelivered(&copy).await.expect("read"),
        Some("i2".to_string())
    );
    let other_text = inbound("copy", "node-a", "3", t0 + 60_000);
    assert_eq!(
        store
            .sms_inbound_redelivered(&other_text)
            .await
            .expect("read"),
        None
    );
    let too_late = inbound("copy", "node-a", "2", t0 + 5 + REDELIVERY_WINDOW_MS + 1);
    assert_eq!(
        store
            .sms_inbound_redelivered(&too_late)
            .await
            .expect("read"),
        None
    );
    commit(
        &store,
        vec![inbound_change(
            "i2",
            InboundChange::RedeliveryExpected(false),
        )],
    )
    .await;
    assert_eq!(
        store.sms_inbound_redelivered(&copy).await.expect("read"),
        None
    );
    store.flush_and_close().await.expect("close");
}

fn flow_version(id: &str, version: u32, hash: &str, at_ms: i64) -> PublishedFlow {
    PublishedFlow {
        flow_id: id.into(),
        version,
        content_hash: hash.into(),
        source: format!("id: {id}\nversion: {version}\n# {hash}\n"),
        published_at_ms: at_ms,
    }
}

/// Publishing is idempotent by (id, version) and hash; a changed hash under a published
/// version refuses the whole publication; reads by (id, version); a poll by cursor sees new
/// versions, retirements and a retired flow brought back, each once.
async fn flow_versions_publish_once_refuse_changes_and_poll_by_cursor(fx: Fixture) {
    let store = fx.open().await;
    assert_eq!(store.flow_versions_since(0).await.expect("poll"), vec![]);
    let first = [
        flow_version("survey", 1, "aa", 1_000),
        flow_version("other", 1, "bb", 1_000),
    ];
    store.publish_flow_versions(&first).await.expect("publish");
    // Again, later: nothing changes (not even the publication time or the cursor).
    let later: Vec<_> = first
        .iter()
        .map(|f| PublishedFlow {
            published_at_ms: 9_000,
            ..f.clone()
        })
        .collect();
    store
        .publish_flow_versions(&later)
        .await
        .expect("republish");
    let all = store.flow_versions_since(0).await.expect("poll");
    assert_eq!(all.len(), 2, "{all:?}");
    assert!(
        all.iter()
            .all(|v| v.published_at_ms == 1_000 && v.retired_at_ms.is_none())
    );
    let cursor = all.iter().map(|v| v.changed_seq).max().expect("a cursor");
    assert_eq!(
        store.flow_versions_since(cursor).await.expect("poll"),
        vec![]
    );

    let stored = store
        .flow_version("survey", 1)
        .await
        .expect("read")
        .expect("published");
    assert_eq!(stored.source, first[0].source);
    assert_eq!(stored.content_hash, "aa");
    assert_eq!(store.flow_version("survey", 2).await.expect("read"), None);
    assert_eq!(store.flow_version("nothing", 1).await.expect("read"), None);

    // A changed flow under a published version is refused, with the new version beside it
    // not published either (one transaction).
    let refused = store
        .publish_flow_versions(&[
            flow_version("survey", 2, "cc", 2_000),
            flow_version("survey", 1, "changed", 2_000),
        ])
        .await;
    match refused {
        Err(e @ ResultStoreError::FlowVersionChanged { .. }) => {
            assert!(e.to_string().contains("raise `version`"), "{e}");
            assert!(e.to_string().contains("`survey` version 1"), "{e}");
        }
        other => panic!("a changed version must be refused, got {other:?}"),
    }
    assert_eq!(store.flow_version("survey", 2).await.expect("read"), None);
    assert_eq!(
        store.flow_version("survey", 1).await.expect("read"),
        Some(stored)
    );

    // A new version shows up after the cursor, alone.
    store
        .publish_flow_versions(&[flow_version("survey", 2, "cc", 3_000)])
        .await
        .expect("publish v2");
    let new = store.flow_versions_since(cursor).await.expect("poll");
    assert_eq!(
        new.iter()
            .map(|v| (v.flow_id.as_str(), v.version))
            .collect::<Vec<_>>(),
        vec![("survey", 2)]
    );
    let cursor = new[0].changed_seq;

    // Retiring marks every version of the flow, once; the poll sees both rows.
    store
        .retire_flows(&["survey".to_string()], 4_000)
        .await
        .expect("retire");
    store
        .retire_flows(&["survey".to_string()], 5_000)
        .await
        .expect("retire again");
    let retired = store.flow_versions_since(cursor).await.expect("poll");
    assert_eq!(retired.len(), 2, "{retired:?}");
    assert!(
        retired
            .iter()
            .all(|v| v.flow_id == "survey" && v.retired_at_ms == Some(4_000))
    );
    let cursor = retired
        .iter()
        .map(|v| v.changed_seq)
        .max()
        .expect("a cursor");
    assert_eq!(
        store.flow_versions_since(cursor).await.expect("poll"),
        vec![]
    );

    // Publishing the flow again brings it back (every version), seen by the next poll.
    store
        .publish_flow_versions(&[flow_version("survey", 2, "cc", 6_000)])
        .await
        .expect("publish again");
    let back = store.flow_versions_since(cursor).await.expect("poll");
    assert_eq!(back.len(), 2, "{back:?}");
    assert!(back.iter().all(|v| v.retired_at_ms.is_none()));
    assert_eq!(
        store
            .flow_version("other", 1)
            .await
            .expect("read")
            .map(|v| v.retired_at_ms),
        Some(None)
    );
    store.flush_and_close().await.expect("close");
}

/// `queued -> sending` is a claim: of two, in one batch or in two commits racing, exactly one
/// changes the row and the other is reported skipped to its caller; a claimed message can still
/// end (or go back to `queued` when nothing was written), a final one takes no claim.
async fn only_one_of_two_claims_on_a_queued_message_applies(fx: Fixture) {
    let store = fx.open().await;
    commit(
        &store,
        vec![
            queued_sms("c1", "node-a", SUBSCRIBER_1, 1_000),
            queued_sms("c2", "node-a", SUBSCRIBER_2, 1_001),
        ],
    )
    .await;
    // Two claims in one commit: the second finds the row taken.
    let skipped = store
        .commit_checked(vec![
            sms_state("c1", SmsState::Sending, 2_000),
            sms_state("c1", SmsState::Sending, 2_001),
        ])
        .await
        .expect("commit");
    assert_eq!(skipped, vec![1]);
    // Two claims racing from two callers: exactly one applies.
    let (a, b) = tokio::join!(
        store.commit_checked(vec![sms_state("c2", SmsState::Sending, 2_002)]),
        store.commit_checked(vec![sms_state("c2", SmsState::Sending, 2_003)]),
    );
    let (a, b) = (a.expect("commit"), b.expect("commit"));
    assert_eq!(a.len() + b.len(), 1, "one claim won: {a:?} {b:?}");
    // The holder may put it back (nothing was written) and claim it again, then end it.
    let skipped = store
        .commit_checked(vec![
            sms_state("c1", SmsState::Queued, 2_010),
            sms_state("c1", SmsState::Sending, 2_011),
            sms_state("c1", SmsState::Accepted, 2_012),
            sms_state("c1", SmsState::Sending, 2_013),
        ])
        .await
        .expect("commit");
    assert_eq!(skipped, vec![3], "no claim on a final message");
    let row = store.sms_message("c1").await.expect("read").expect("row");
    assert_eq!(row.state, "accepted");
    store.flush_and_close().await.expect("close");
}

/// A response withdrawn (its session lost the save to a concurrent copy) leaves no row and no
/// answer behind; other responses, even ones started in the same batch, are untouched, and
/// withdrawing a response that is not there is not an error.
async fn a_withdrawn_response_goes_with_its_answers_and_nothing_else(fx: Fixture) {
    let store = fx.open().await;
    let withdraw = |id: &str| {
        Write::Withdraw(Withdrawal {
            response_id: id.to_string(),
        })
    };
    commit(
        &store,
        vec![
            start("0000000001000-kept", "poll", SUBSCRIBER_1, 1_000),
            start("0000000001001-lost", "poll", SUBSCRIBER_1, 1_001),
            answer(
                "0000000001000-kept",
                "district",
                "2",
                Some("Kisumu"),
                1,
                1_500,
            ),
            answer(
                "0000000001001-lost",
                "district",
                "3",
                Some("Embu"),
                1,
                1_501,
            ),
            answer("0000000001001-lost", "age", "40", None, 2, 1_502),
        ],
    )
    .await;
    assert_eq!(fx.answer_rows("0000000001001-lost").await, 2);
    commit(&store, vec![withdraw("0000000001001-lost")]).await;
    assert_eq!(fx.answer_rows("0000000001001-lost").await, 0);
    assert_eq!(fx.answer_rows("0000000001000-kept").await, 1);
    let rows = responses(&store, "poll").await;
    assert_eq!(
        rows.iter()
            .map(|r| r.response_id.as_str())
            .collect::<Vec<_>>(),
        ["0000000001000-kept"]
    );
    assert_eq!(
        rows[0].answers,
        answers(&[("district", "2", Some("Kisumu"))])
    );
    // Again, and for an id never stored: nothing changes, nothing is rejected.
    let rejected = store.rejected_writes();
    commit(
        &store,
        vec![withdraw("0000000001001-lost"), withdraw("never")],
    )
    .await;
    assert_eq!(responses(&store, "poll").await.len(), 1);
    assert_eq!(store.rejected_writes(), rejected);
    // A late answer to the withdrawn response is rejected like any unknown response's.
    commit(
        &store,
        vec![answer("0000000001001-lost", "age", "41", None, 3, 1_600)],
    )
    .await;
    assert_eq!(store.rejected_writes(), rejected + 1);
    assert_eq!(fx.answer_rows("0000000001001-lost").await, 0);
    store.flush_and_close().await.expect("close");
}

async fn start_answers_and_status_round_trip(fx: Fixture) {
    let store = fx.open().await;
    commit(&store, vec![start("r1", "poll", SUBSCRIBER_1, 1_000)]).await;
    commit(
        &store,
        vec![
            answer("r1", "district", "2", Some("Kisumu"), 1, 2_000),
            answer("r1", "age", "34", None, 2, 3_000),
        ],
    )
    .await;
    commit(
        &store,
        vec![status("r1", ResponseStatus::Completed, Some("sw"), 4_000)],
    )
    .await;
    commit(
        &store,
        vec![start("elsewhere", "other-flow", SUBSCRIBER_2, 500)],
    )
    .await;

    let expected = ResponseRow {
        response_id: "r1".into(),
        flow_id: "poll".into(),
        flow_version: 3,
        channel: "ussd".into(),
        provider: "africastalking".into(),
        subscriber: SUBSCRIBER_1.into(),
        language: "sw".into(),
        status: ResponseStatus::Completed,
        started_at_ms: 1_000,
        updated_at_ms: 4_000,
        ended_at_ms: Some(4_000),
        answers: answers(&[("age", "34", None), ("district", "2", Some("Kisumu"))]),
    };
    assert_eq!(responses(&store, "poll").await, vec![expected]);
    assert_eq!(responses(&store, "other-flow").await.len(), 1);
    assert_eq!(responses(&store, "no-such-flow").await, vec![]);
    assert_eq!(store.rejected_writes(), 0);
    store.flush_and_close().await.expect("close");
}

async fn resumed_response_is_active_again(fx: Fixture) {
    let store = fx.open().await;
    commit(&store, vec![start("r1", "poll", SUBSCRIBER_1, 1_000)]).await;
    commit(
        &store,
        vec![status("r1", ResponseStatus::Dropped, None, 5_000)],
    )
    .await;
    let row = &responses(&store, "poll").await[0];
    assert_eq!(
        (row.status, row.ended_at_ms, row.language.as_str()),
        (ResponseStatus::Dropped, Some(5_000), "en")
    );

    commit(
        &store,
        vec![status("r1", ResponseStatus::Active, Some("fr"), 6_000)],
    )
    .await;
    let row = &responses(&store, "poll").await[0];
    assert_eq!(
        (row.status, row.ended_at_ms, row.updated_at_ms),
        (ResponseStatus::Active, None, 6_000)
    );
    assert_eq!(row.language, "fr");

    // An answer is activity; a late status with an older time does not move the clock back.
    commit(&store, vec![answer("r1", "q", "1", None, 4, 7_000)]).await;
    commit(
        &store,
        vec![status("r1", ResponseStatus::TimedOut, None, 6_500)],
    )
    .await;
    let row = &responses(&store, "poll").await[0];
    assert_eq!(
        (row.status, row.updated_at_ms, row.ended_at_ms),
        (ResponseStatus::TimedOut, 7_000, Some(6_500))
    );
    assert_eq!(
        row.language, "fr",
        "a status without a language keeps the stored one"
    );
    store.flush_and_close().await.expect("close");
}

async fn duplicate_deliveries_are_recorded_once(fx: Fixture) {
    let store = fx.open().await;
    commit(&store, vec![start("r1", "poll", SUBSCRIBER_1, 1_000)]).await;
    // A repeated Start (redelivered first step) changes nothing.
    let mut again = start("r1", "poll", SUBSCRIBER_2, 9_000);
    if let Write::Start(s) = &mut again {
        s.flow_version = 4;
    }
    commit(&store, vec![again]).await;
    let the_answer = answer("r1", "district", "2", Some("Kisumu"), 1, 2_000);
    commit(&store, vec![the_answer.clone()]).await;
    commit(&store, vec![the_answer.clone()]).await;
    commit(&store, vec![the_answer.clone(), the_answer]).await;

    assert_eq!(fx.answer_rows("r1").await, 1);
    let rows = responses(&store, "poll").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].flow_version,
            rows[0].subscriber.as_str(),
            rows[0].started_at_ms
        ),
        (3, SUBSCRIBER_1, 1_000)
    );
    assert_eq!(
        rows[0].answers,
        answers(&[("district", "2", Some("Kisumu"))])
    );
    store.flush_and_close().await.expect("close");
}

async fn same_step_replaces_and_later_step_supersedes(fx: Fixture) {
    let store = fx.open().await;
    commit(&store, vec![start("r1", "poll", SUBSCRIBER_1, 1_000)]).await;
    commit(
        &store,
        vec![answer("r1", "consent", "1", Some("Yes"), 1, 2_000)],
    )
    .await;
    commit(
        &store,
        vec![answer("r1", "consent", "2", Some("No"), 1, 2_100)],
    )
    .await;
    assert_eq!(
        fx.answer_rows("r1").await,
        1,
        "the same step overwrites its row"
    );
    assert_eq!(
        responses(&store, "poll").await[0].answers,
        answers(&[("consent", "2", Some("No"))])
    );

    // The respondent went back and answered again at a later step: that value is current,
    // and the earlier one is kept as history.
    commit(
        &store,
        vec![answer("r1", "consent", "1", Some("Yes"), 3, 4_000)],
    )
    .await;
    assert_eq!(fx.answer_rows("r1").await, 2);
    assert_eq!(
        responses(&store, "poll").await[0].answers,
        answers(&[("consent", "1", Some("Yes"))])
    );
    // A redelivery of the older step does not bring the older value back.
    commit(
        &store,
        vec![answer("r1", "consent", "2", Some("No"), 1, 2_100)],
    )
    .await;
    assert_eq!(
        responses(&store, "poll").await[0].answers,
        answers(&[("consent", "1", Some("Yes"))])
    );
    store.flush_and_close().await.expect("close");
}

async fn concurrent_commits_share_transactions(fx: Fixture) {
    const SESSIONS: usize = 50;
    let store = fx.open().await;
    let before = store.batches_committed();
    // Hold the writer on its first transaction so the other requests queue up behind it.
    let block = fx.block_writer().await;
    let mut tasks = JoinSet::new();
    for i in 0..SESSIONS {
        let store = store.clone();
        tasks.spawn(async move {
            let id = format!("c{i:02}");
            let at = 1_000 + i as i64;
            store
                .commit(vec![
                    start(&id, "poll", SUBSCRIBER_1, at),
                    answer(&id, "q", &i.to_string(), None, 1, at),
                ])
                .await
        });
    }
    until_pending(&store, SESSIONS).await;
    block.release().await;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("a concurrent commit failed: {e}"),
            Err(e) => panic!("a commit task failed: {e}"),
        }
    }
    let batches = store.batches_committed() - before;
    assert!(batches >= 1, "nothing was committed");
    assert!(
        batches < SESSIONS as u64,
        "{SESSIONS} commits took {batches} transactions: no group commit"
    );

    let rows = responses(&store, "poll").await;
    assert_eq!(rows.len(), SESSIONS);
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row.response_id, format!("c{i:02}"));
        assert_eq!(row.answers, answers(&[("q", &i.to_string(), None)]));
    }
    store.flush_and_close().await.expect("close");
}

async fn close_commits_everything_already_queued(fx: Fixture) {
    const SESSIONS: usize = 10;
    let store = fx.open().await;
    let block = fx.block_writer().await;
    let mut tasks = JoinSet::new();
    for i in 0..SESSIONS {
        let store = store.clone();
        tasks.spawn(async move {
            store
                .commit(vec![start(
                    &format!("q{i}"),
                    "poll",
                    SUBSCRIBER_1,
                    i as i64,
                )])
                .await
        });
    }
    until_pending(&store, SESSIONS).await;
    let closing = {
        let store = store.clone();
        tokio::spawn(async move { store.flush_and_close().await })
    };
    block.release().await;
    while let Some(joined) = tasks.join_next().await {
        assert!(
            matches!(joined, Ok(Ok(()))),
            "a commit queued before close failed: {joined:?}"
        );
    }
    assert_eq!(closing.await.expect("close task"), Ok(()));
    drop(store);

    let reopened = fx.open().await;
    assert_eq!(responses(&reopened, "poll").await.len(), SESSIONS);
    reopened.flush_and_close().await.expect("close");
}

async fn everything_survives_close_and_reopen(fx: Fixture) {
    let store = fx.open().await;
    commit(
        &store,
        vec![
            start("r1", "poll", SUBSCRIBER_1, 1_000),
            answer("r1", "district", "2", Some("Kisumu"), 1, 2_000),
            status("r1", ResponseStatus::Completed, None, 3_000),
        ],
    )
    .await;
    let before = responses(&store, "poll").await;
    store.flush_and_close().await.expect("close");
    assert_eq!(
        store
            .commit(vec![start("late", "poll", SUBSCRIBER_2, 4_000)])
            .await,
        Err(ResultStoreError::Closed)
    );
    assert_eq!(
        store.flush_and_close().await,
        Ok(()),
        "closing twice is harmless"
    );
    drop(store);

    let reopened = fx.open().await;
    assert_eq!(responses(&reopened, "poll").await, before);
    commit(&reopened, vec![answer("r1", "age", "40", None, 2, 5_000)]).await;
    assert_eq!(responses(&reopened, "poll").await[0].answers.len(), 2);
    reopened.flush_and_close().await.expect("close");
}

async fn migrations_are_idempotent_and_newer_schemas_refused(fx: Fixture) {
    let first = fx.open().await;
    commit(&first, vec![start("r1", "poll", SUBSCRIBER_1, 1_000)]).await;
    // A second store on the same database while the first is open, then again after closing.
    let second = fx.open().await;
    second.flush_and_close().await.expect("close second");
    first.flush_and_close().await.expect("close first");
    let third = fx.open().await;
    assert_eq!(responses(&third, "poll").await.len(), 1);
    third.flush_and_close().await.expect("close third");
    assert_eq!(fx.migration_versions().await, vec![1, 2, 3, 4, 5, 6, 7, 8]);

    fx.record_migration(99).await;
    match fx.try_open().await {
        Err(ResultStoreError::SchemaTooNew {
            found: 99,
            known: 8,
        }) => {}
        Err(other) => panic!("expected SchemaTooNew, got {other}"),
        Ok(_) => panic!("a database migrated by a newer build was opened"),
    }
}

/// The schema as a build that knew migrations 1-4 left it, in one dialect.
macro_rules! schema_v4 {
    ($dialect:literal) => {
        [
            include_str!(concat!(
                "../src/result_store/migrations/",
                $dialect,
                "/0001_init.sql"
            )),
            include_str!(concat!(
                "../src/result_store/migrations/",
                $dialect,
                "/0002_sms_outbox.sql"
            )),
            include_str!(concat!(
                "../src/result_store/migrations/",
                $dialect,
                "/0003_call_attempts.sql"
            )),
            include_str!(concat!(
                "../src/result_store/migrations/",
                $dialect,
                "/0004_call_schedule.sql"
            )),
        ]
        .join("\n")
    };
}

/// Version 5 re-keys the answers table (by the response's start first): a database written by
/// a build that knew versions 1-4 keeps every answer, and the same (response, result, step)
/// is still one row afterwards.
async fn answers_stored_before_version_5_survive_its_new_key(fx: Fixture) {
    let old_rows = "CREATE TABLE schema_migrations (version BIGINT NOT NULL PRIMARY KEY, \
         name TEXT NOT NULL, applied_at_ms BIGINT NOT NULL); \
         INSERT INTO schema_migrations VALUES (1, 'init', 0), (2, 'sms_outbox', 0), \
         (3, 'call_attempts', 0), (4, 'call_schedule', 0); \
         INSERT INTO responses (response_id, flow_id, flow_version, channel, provider, \
         subscriber, language, status, started_at_ms, updated_at_ms, ended_at_ms) VALUES \
         ('old-1', 'poll', 3, 'ussd', 'africastalking', '+254700000001', 'en', 'completed', \
          1000, 3000, 3000), \
         ('old-2', 'poll', 3, 'ussd', 'africastalking', '+254700000002', 'sw', 'active', \
          2000, 2500, NULL); \
         INSERT INTO answers (response_id, result, step, value, label, node, answered_at_ms) \
         VALUES ('old-1', 'district', 1, '2', 'Kisumu', 'ask_district', 2000), \
         ('old-1', 'age', 2, '34', NULL, 'ask_age', 3000), \
         ('old-1', 'age', 4, '35', NULL, 'ask_age', 3000), \
         ('old-2', 'district', 1, '1', 'Nairobi', 'ask_district', 2500);";
    match &fx {
        Fixture::Sqlite { path, .. } => {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("folder");
            let conn = rusqlite::Connection::open(path).expect("open sqlite directly");
            conn.execute_batch(&format!("{}\n{old_rows}", schema_v4!("sqlite")))
                .expect("a version 4 database");
        }
        Fixture::Postgres { schema, .. } => {
            let Admin::Postgres(client) = fx.admin().await else {
                unreachable!("a postgres fixture")
            };
            client
                .batch_execute(&format!(
                    "CREATE SCHEMA \"{schema}\"; {}\n{old_rows}",
                    schema_v4!("postgres")
                ))
                .await
                .expect("a version 4 database");
        }
    }

    let store = fx.open().await;
    assert_eq!(fx.migration_versions().await, vec![1, 2, 3, 4, 5, 6, 7, 8]);
    let rows = responses(&store, "poll").await;
    let found: Vec<_> = rows
        .iter()
        .map(|r| (r.response_id.as_str(), r.answers.clone()))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                "old-1",
                answers(&[("age", "35", None), ("district", "2", Some("Kisumu"))])
            ),
            ("old-2", answers(&[("district", "1", Some("Nairobi"))])),
        ]
    );
    assert_eq!(fx.answer_rows("old-1").await, 3);

    // A repeated delivery of an old step replaces its row; a new step adds one.
    commit(
        &store,
        vec![
            answer("old-2", "district", "3", Some("Mombasa"), 1, 2_600),
            answer("old-2", "age", "51", None, 2, 2_700),
        ],
    )
    .await;
    assert_eq!(fx.answer_rows("old-2").await, 2);
    let rows = responses(&store, "poll").await;
    assert_eq!(
        rows[1].answers,
        answers(&[("age", "51", None), ("district", "3", Some("Mombasa"))])
    );
    assert_eq!(rows[1].updated_at_ms, 2_700);
    store.flush_and_close().await.expect("close");
}

async fn unknown_response_is_rejected_without_losing_the_batch(fx: Fixture) {
    let store = fx.open().await;
    let outcome = store
        .commit(vec![
            start("k1", "poll", SUBSCRIBER_1, 1_000),
            answer("ghost", "q", "lost", None, 1, 1_500),
            answer("k1", "q", "kept", None, 1, 2_000),
            status("ghost", ResponseStatus::Completed, None, 2_500),
            status("k1", ResponseStatus::Completed, None, 3_000),
        ])
        .await;
    assert_eq!(
        outcome,
        Ok(()),
        "the valid writes are committed and the request succeeds"
    );
    assert_eq!(store.rejected_writes(), 2);
    assert_eq!(fx.answer_rows("ghost").await, 0);
    let rows = responses(&store, "poll").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (rows[0].status, &rows[0].answers),
        (ResponseStatus::Completed, &answers(&[("q", "kept", None)]))
    );
    store.flush_and_close().await.expect("close");
}

async fn ping_reports_health(fx: Fixture) {
    let store = fx.open().await;
    assert_eq!(store.ping().await, Ok(()));
    store.flush_and_close().await.expect("close");
    assert_eq!(store.ping().await, Err(ResultStoreError::Closed));
}

async fn failing_request_does_not_fail_its_batch_neighbours(fx: Fixture) {
    let store = fx.open().await;
    commit(
        &store,
        vec![
            start("good", "poll", SUBSCRIBER_1, 1_000),
            start("bad", "poll", SUBSCRIBER_2, 1_001),
        ],
    )
    .await;
    fx.poison_answers().await;
    let before = store.batches_committed();
    let block = fx.block_writer().await;
    // The first request occupies the writer; the next two queue up and share a transaction.
    let first = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .commit(vec![answer("good", "first", "1", None, 1, 2_000)])
                .await
        })
    };
    until_pending(&store, 1).await;
    let poisoned = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .commit(vec![answer("bad", "q", "poison", None, 1, 2_001)])
                .await
        })
    };
    let neighbour = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .commit(vec![answer("good", "q", "fine", None, 2, 2_002)])
                .await
        })
    };
    until_pending(&store, 3).await;
    block.release().await;

    assert_eq!(first.await.expect("task"), Ok(()));
    assert_eq!(
        neighbour.await.expect("task"),
        Ok(()),
        "a neighbour of a failing request must not fail"
    );
    match poisoned.await.expect("task") {
        Err(e) => assert!(
            e.to_string().contains("poisoned value"),
            "unexpected error: {e}"
        ),
        Ok(()) => panic!("the poisoned request was reported as committed"),
    }
    // How the three requests were grouped depends on when the writer picked up the first
    // (under load it may take all three at once); the outcomes above are what must hold.
    assert!(store.batches_committed() > before);
    let rows = responses(&store, "poll").await;
    let good = rows
        .iter()
        .find(|r| r.response_id == "good")
        .expect("good response");
    assert_eq!(
        good.answers,
        answers(&[("first", "1", None), ("q", "fine", None)])
    );
    assert_eq!(fx.answer_rows("bad").await, 0);
    store.flush_and_close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// Export

/// 2026-03-01T08:30:05.120Z
const T0: i64 = 1_772_353_805_120;

fn export_fixture_writes() -> Vec<Write> {
    vec![
        start("r1", "poll", SUBSCRIBER_1, T0),
        answer("r1", "district", "2", Some("Kisumu"), 1, T0 + 10_000),
        answer("r1", "age", "34", None, 2, T0 + 20_000),
        answer(
            "r1",
            "comment",
            "Roads, \"bad\"\nand dusty",
            None,
            3,
            T0 + 30_000,
        ),
        status("r1", ResponseStatus::Completed, Some("sw"), T0 + 59_880),
        start("r2", "poll", SUBSCRIBER_2, T0 + 94_880),
        answer("r2", "age", "-1", None, 1, T0 + 100_000),
        answer(
            "r2",
            "comment",
            "=HYPERLINK(\"http://x\",\"win\")",
            None,
            2,
            T0 + 110_000,
        ),
    ]
}

fn export_result_names() -> Vec<String> {
    ["district", "age", "comment", "never_asked"]
        .map(String::from)
        .to_vec()
}

const EXPORT_HEADER: &str = "response_id,flow_id,flow_version,channel,language,status,started_at,ended_at,subscriber,district,district_label,age,comment,never_asked\r\n";

/// HMAC-SHA256("test-secret", number), first 16 hex digits (computed with `openssl dgst`).
const EXPECTED_PSEUDONYMISED: &str = concat!(
    "response_id,flow_id,flow_version,channel,language,status,started_at,ended_at,subscriber,district,district_label,age,comment,never_asked\r\n",
    "r1,poll,3,ussd,sw,completed,2026-03-01T08:30:05.120Z,2026-03-01T08:31:05.000Z,5c1c685f0e989fcf,2,Kisumu,34,\"Roads, \"\"bad\"\"\nand dusty\",\r\n",
    "r2,poll,3,ussd,en,active,2026-03-01T08:31:40.000Z,,c344e421362a2397,,,-1,\"'=HYPERLINK(\"\"http://x\"\",\"\"win\"\")\",\r\n",
);

const EXPECTED_RAW: &str = concat!(
    "response_id,flow_id,flow_version,channel,language,status,started_at,ended_at,subscriber,district,district_label,age,comment,never_asked\r\n",
    "r1,poll,3,ussd,sw,completed,2026-03-01T08:30:05.120Z,2026-03-01T08:31:05.000Z,+254700000001,2,Kisumu,34,\"Roads, \"\"bad\"\"\nand dusty\",\r\n",
    "r2,poll,3,ussd,en,active,2026-03-01T08:31:40.000Z,,+254700000002,,,-1,\"'=HYPERLINK(\"\"http://x\"\",\"\"win\"\")\",\r\n",
);

fn export_to_string(rows: &[ResponseRow], names: &[String], secret: Option<&[u8]>) -> String {
    let mut out = Vec::new();
    let pseudonyms = secret.map(baraza::pseudonym::Pseudonymiser::new);
    if let Err(e) = export_csv(rows, names, pseudonyms.as_ref(), &mut out) {
        panic!("export failed: {e}");
    }
    String::from_utf8(out).expect("CSV is UTF-8")
}

async fn export_of_stored_rows_is_byte_exact(fx: Fixture) {
    let store = fx.open().await;
    commit(&store, export_fixture_writes()).await;
    let rows = responses(&store, "poll").await;
    let names = export_result_names();
    assert_eq!(
        export_to_string(&rows, &names, Some(b"test-secret")),
        EXPECTED_PSEUDONYMISED
    );
    assert_eq!(export_to_string(&rows, &names, None), EXPECTED_RAW);
    store.flush_and_close().await.expect("close");
}

#[test]
fn export_without_rows_is_just_the_header_and_labels_only_appear_when_used() {
    assert_eq!(
        export_to_string(&[], &export_result_names(), Some(b"k")),
        EXPORT_HEADER.replace("district_label,", "")
    );

    let row = ResponseRow {
        response_id: "-r".into(),
        flow_id: "poll".into(),
        flow_version: 1,
        channel: "sms".into(),
        provider: "p".into(),
        subscriber: String::new(),
        language: "en".into(),
        status: ResponseStatus::OptedOut,
        started_at_ms: 0,
        updated_at_ms: 0,
        ended_at_ms: Some(-1),
        answers: answers(&[("x", "@me", Some("+label"))]),
    };
    assert_eq!(
        export_to_string(&[row], &["x".to_string()], Some(b"k")),
        "response_id,flow_id,flow_version,channel,language,status,started_at,ended_at,subscriber,x,x_label\r\n\
         '-r,poll,1,sms,en,opted_out,1970-01-01T00:00:00.000Z,1969-12-31T23:59:59.999Z,,'@me,'+label\r\n"
    );
}

#[tokio::test]
async fn invalid_postgres_schema_names_are_refused_before_connecting() {
    let refused = ResultStore::open_postgres(&postgres_url(), Some("x\"; DROP TABLE y; --")).await;
    assert!(
        matches!(refused, Err(ResultStoreError::InvalidSchema(_))),
        "{refused:?}"
    );
}

#[tokio::test]
async fn sqlite_file_uses_the_wal_journal() {
    let fx = Fixture::sqlite("wal");
    let store = fx.open().await;
    let Admin::Sqlite(conn) = fx.admin().await else {
        unreachable!("a sqlite fixture")
    };
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal mode");
    assert_eq!(mode, "wal");
    store.flush_and_close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// Outbound SMS

fn queued_sms(id: &str, node: &str, to: &str, at: i64) -> Write {
    Write::SmsQueued(QueuedSms {
        message_id: id.to_string(),
        node: node.to_string(),
        operator: "op".to_string(),
        recipient: to.to_string(),
        sender: "20880".to_string(),
        body: format!("text of {id}"),
        purpose: "api".to_string(),
        created_at_ms: at,
    })
}

fn sms_state(id: &str, state: SmsState, at: i64) -> Write {
    Write::SmsState(SmsStateUpdate {
        message_id: id.to_string(),
        state,
        detail: None,
        at_ms: at,
    })
}

fn part(id: &str, part: u32, smsc_id: &str) -> Write {
    Write::SmsPart(SmsPartRecord {
        message_id: id.to_string(),
        part,
        outcome: "accepted",
        smsc_id: Some(smsc_id.to_string()),
        detail: None,
        at_ms: 5_000,
    })
}

fn receipt(smsc_id: &str, state: &str, is_final: bool, at: i64) -> Write {
    Write::Receipt(ReceiptRecord {
        operator: "op".to_string(),
        smsc_id: smsc_id.to_string(),
        state: state.to_string(),
        error: None,
        is_final,
        received_at_ms: at,
    })
}

async fn outbound_sms_states_parts_and_receipts(fx: Fixture) {
    let store = fx.open().await;
    commit(
        &store,
        vec![
            queued_sms("m1", "node-a", SUBSCRIBER_1, 1_000),
            queued_sms("m2", "node-a", SUBSCRIBER_2, 1_001),
            queued_sms("m3", "node-b", SUBSCRIBER_1, 1_002),
            // A repeated enqueue of the same id changes nothing.
            queued_sms("m1", "node-a", SUBSCRIBER_2, 9_999),
        ],
    )
    .await;
    let unfinished: Vec<(String, String)> = store
        .sms_unfinished("node-a")
        .await
        .expect("unfinished")
        .into_iter()
        .map(|r| (r.message_id, r.state))
        .collect();
    assert_eq!(
        unfinished,
        vec![
            ("m1".into(), "queued".into()),
            ("m2".into(), "queued".into())
        ],
        "only node-a's messages, oldest first"
    );

    // m1: sending, then accepted with two parts; a receipt for part 1 arrives BEFORE the
    // part is recorded (fast SMSCs do that), an intermediate one for part 2 is replaced by
    // the final one, and a late intermediate one never replaces a final state.
    commit(&store, vec![sms_state("m1", SmsState::Sending, 2_000)]).await;
    commit(&store, vec![receipt("a1", "delivered", true, 4_000)]).await;
    commit(
        &store,
        vec![
            sms_state("m1", SmsState::Accepted, 5_000),
            part("m1", 1, "a1"),
            part("m1", 2, "a2"),
        ],
    )
    .await;
    commit(&store, vec![receipt("a2", "enroute", false, 6_000)]).await;
    let m1 = store.sms_message("m1").await.expect("read").expect("m1");
    assert_eq!(m1.state, "accepted");
    assert_eq!(m1.recipient, SUBSCRIBER_1, "the first enqueue is kept");
    assert_eq!(m1.delivery(), Some("pending"));
    commit(&store, vec![receipt("a2", "delivered", true, 7_000)]).await;
    commit(&store, vec![receipt("a2", "enroute", false, 8_000)]).await;
    let m1 = store.sms_message("m1").await.expect("read").expect("m1");
    let receipts: Vec<(u32, Option<String>, Option<i64>)> = m1
        .parts
        .iter()
        .map(|p| (p.part, p.receipt.clone(), p.receipt_at_ms))
        .collect();
    assert_eq!(
        receipts,
        vec![
            (1, Some("delivered".into()), Some(4_000)),
            (2, Some("delivered".into()), Some(7_000)),
        ]
    );
    assert_eq!(m1.delivery(), Some("delivered"));
    assert_eq!(m1.updated_at_ms, 5_000);

    // A final state is never undone, and a part of an unknown message is skipped.
    let rejected_before = store.rejected_writes();
    commit(
        &store,
        vec![
            sms_state("m1", SmsState::Unknown, 9_000),
            part("ghost", 1, "zz"),
            sms_state("m2", SmsState::Sending, 9_000),
        ],
    )
    .await;
    assert_eq!(store.rejected_writes(), rejected_before + 2);
    assert_eq!(
        store
            .sms_message("m1")
            .await
            .expect("read")
            .expect("m1")
            .state,
        "accepted"
    );
    let m2 = store.sms_message("m2").await.expect("read").expect("m2");
    assert_eq!((m2.state.as_str(), m2.delivery()), ("sending", None));
    assert!(store.sms_message("ghost").await.expect("read").is_none());
    store.flush_and_close().await.expect("close");
}

// ---------------------------------------------------------------------------------------------
// Outbound call attempts

/// Attempt `n` of a callback to `number`, in `status` at `at`.
fn call_attempt(
    id: &str,
    number: &str,
    n: u32,
    status: CallAttemptStatus,
    provider_status: Option<&str>,
    at: i64,
) -> Write {
    let outcome = match provider_status {
        Some("busy") => Some("busy".to_string()),
        Some(_) => Some("completed".to_string()),
        None => None,
    };
    Write::CallAttempt(CallAttemptRecord {
        attempt_id: id.into(),
        provider: "twilio".into(),
        subscriber: number.into(),
        flow_id: "grievance".into(),
        purpose: "missed_call".into(),
        attempt: n,
        placed_at_ms: 1_000 * i64::from(n),
        status,
        outcome,
        provider_status: provider_status.map(str::to_string),
        duration_seconds: provider_status.map(|_| 40),
        provider_call_id: (status != CallAttemptStatus::Placing).then(|| format!("CA{id}")),
        reason: None,
        updated_at_ms: at,
        ended_at_ms: status.is_final().then_some(at),
        node: Some("node-a".into()),
        due_at_ms: None,
    })
}

/// (attempt id, attempt number, status, outcome, provider's status word)
type Summary = (
    String,
    u32,
    CallAttemptStatus,
    Option<String>,
    Option<String>,
);

async fn call_attempts_are_kept_apart_updated_and_frozen_once_final(fx: Fixture) {
    let store = fx.open().await;
    // Attempt 1: placing, placed, busy. Attempt 2: placing, placed, completed, and the final
    // status delivered twice more (once with a different word): the first final status stays.
    commit(
        &store,
        vec![
            call_attempt(
                "a1",
                SUBSCRIBER_1,
                1,
                CallAttemptStatus::Placing,
                None,
                1_000,
            ),
            call_attempt(
                "a1",
                SUBSCRIBER_1,
                1,
                CallAttemptStatus::Placed,
                None,
                1_100,
            ),
        ],
    )
    .await;
    commit(
        &store,
        vec![call_attempt(
            "a1",
            SUBSCRIBER_1,
            1,
            CallAttemptStatus::Ended,
            Some("busy"),
            1_500,
        )],
    )
    .await;
    for (status, word, at) in [
        (CallAttemptStatus::Placing, None, 2_000),
        (CallAttemptStatus::Placed, None, 2_100),
        (CallAttemptStatus::Ended, Some("completed"), 2_900),
        (CallAttemptStatus::Ended, Some("completed"), 3_000),
        (CallAttemptStatus::Ended, Some("failed"), 3_100),
        (CallAttemptStatus::Placed, None, 3_200),
    ] {
        commit(
            &store,
            vec![call_attempt("a2", SUBSCRIBER_1, 2, status, word, at)],
        )
        .await;
    }
    commit(
        &store,
        vec![call_attempt(
            "b1",
            SUBSCRIBER_2,
            1,
            CallAttemptStatus::Placed,
            None,
            4_000,
        )],
    )
    .await;
    assert_eq!(store.rejected_writes(), 0, "call attempts need no response");

    let listed = store
        .call_attempts(CallAttemptQuery::Subscriber(SUBSCRIBER_1.into()))
        .await
        .expect("attempts of a number");
    let summary: Vec<Summary> = listed
        .iter()
        .map(|a| {
            (
                a.attempt_id.clone(),
                a.attempt,
                a.status,
                a.outcome.clone(),
                a.provider_status.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (
                "a1".into(),
                1,
                CallAttemptStatus::Ended,
                Some("busy".into()),
                Some("busy".into())
            ),
            (
                "a2".into(),
                2,
                CallAttemptStatus::Ended,
                Some("completed".into()),
                Some("completed".into())
            ),
        ]
    );
    let second = &listed[1];
    assert_eq!(
        second.ended_at_ms,
        Some(2_900),
        "the first final status stays"
    );
    assert_eq!(second.updated_at_ms, 2_900);
    assert_eq!(second.placed_at_ms, 2_000);
    assert_eq!(second.duration_seconds, Some(40));
    assert_eq!(second.provider_call_id.as_deref(), Some("CAa2"));
    assert_eq!(second.provider, "twilio");
    assert_eq!(second.purpose, "missed_call");
    assert_eq!(second.flow_id, "grievance");

    let by_call = store
        .call_attempts(CallAttemptQuery::CallId("CAb1".into()))
        .await
        .expect("attempt by call id");
    assert_eq!(by_call.len(), 1);
    assert_eq!(by_call[0].subscriber, SUBSCRIBER_2);
    assert_eq!(by_call[0].status, CallAttemptStatus::Placed);
    assert_eq!(by_call[0].ended_at_ms, None);
    assert!(
        store
            .call_attempts(CallAttemptQuery::CallId("CAnone".into()))
            .await
            .expect("read")
            .is_empty()
    );
    // Call attempts are not responses.
    assert!(responses(&store, "grievance").await.is_empty());
    store.flush_and_close().await.expect("close");
}

/// A final status written by the provider's call id (as a node that did not place the call
/// does) and the same status written by the attempt id (as the placing node does, when its
/// own timeout or a repeated callback races it): only the first ends the attempt, and only it
/// schedules the retry, for the node that placed the call, once.
async fn a_final_call_status_ends_the_attempt_once_and_schedules_one_retry(fx: Fixture) {
    let store = fx.open().await;
    let placed = |id: &str, n: u32, status: CallAttemptStatus, at: i64| {
        let Write::CallAttempt(mut record) = call_attempt(id, SUBSCRIBER_1, n, status, None, at)
        else {
            unreachable!("call_attempt builds attempts")
        };
        record.outcome = None;
        record.provider_status = None;
        record.duration_seconds = None;
        Write::CallAttempt(record)
    };
    commit(
        &store,
        vec![
            placed("cb7-1", 1, CallAttemptStatus::Scheduled, 900),
            placed("cb7-1", 1, CallAttemptStatus::Placing, 1_000),
            placed("cb7-1", 1, CallAttemptStatus::Placed, 1_100),
        ],
    )
    .await;
    let busy = |key: CallKey, at: i64| {
        Write::CallFinal(CallFinal {
            key,
            status: CallAttemptStatus::Ended,
            outcome: "busy".into(),
            provider_status: Some("busy".into()),
            duration_seconds: Some(0),
            reason: None,
            at_ms: at,
            retry: Some(CallRetry {
                max_attempts: 3,
                due_at_ms: at + 60_000,
            }),
        })
    };
    let by_call = CallKey::ProviderCall {
        provider: "twilio".into(),
        call_id: "CAcb7-1".into(),
    };
    // Another provider's call with the same id is not this attempt.
    let other_provider = CallKey::ProviderCall {
        provider: "africastalking".into(),
        call_id: "CAcb7-1".into(),
    };
    commit(&store, vec![busy(other_provider, 1_150)]).await;
    let unfinished = store
        .call_attempts(CallAttemptQuery::Unfinished("node-a".into()))
        .await
        .expect("unfinished");
    assert_eq!(unfinished.len(), 1, "{unfinished:?}");
    commit(&store, vec![busy(by_call.clone(), 1_200)]).await;
    commit(&store, vec![busy(by_call, 1_300)]).await;
    commit(&store, vec![busy(CallKey::Attempt("cb7-1".into()), 1_400)]).await;

    let rows = store
        .call_attempts(CallAttemptQuery::Subscriber(SUBSCRIBER_1.into()))
        .await
        .expect("attempts");
    assert_eq!(rows.len(), 2, "one retry: {rows:?}");
    assert_eq!(rows[0].status, CallAttemptStatus::Ended);
    assert_eq!(rows[0].outcome.as_deref(), Some("busy"));
    assert_eq!(
        rows[0].ended_at_ms,
        Some(1_200),
        "the first final status stays"
    );
    assert_eq!(rows[0].duration_seconds, Some(0));
    let retry = &rows[1];
    assert_eq!(retry.attempt_id, "cb7-2");
    assert_eq!(retry.attempt, 2);
    assert_eq!(retry.status, CallAttemptStatus::Scheduled);
    assert_eq!(retry.due_at_ms, Some(61_200));
    assert_eq!(retry.node.as_deref(), Some("node-a"), "the placing node's");
    assert_eq!(retry.flow_id, "grievance");
    assert_eq!(retry.ended_at_ms, None);
    let unfinished = store
        .call_attempts(CallAttemptQuery::Unfinished("node-a".into()))
        .await
        .expect("unfinished");
    assert_eq!(
        unfinished
            .iter()
            .map(|r| r.attempt_id.as_str())
            .collect::<Vec<_>>(),
        vec!["cb7-2"]
    );
    assert!(
        store
            .call_attempts(CallAttemptQuery::Unfinished("node-b".into()))
            .await
            .expect("unfinished")
            .is_empty()
    );

    // Several attempts or calls in one read.
    let ids =
        |rows: Vec<CallAttemptRecord>| rows.into_iter().map(|r| r.attempt_id).collect::<Vec<_>>();
    let by_ids = store
        .call_attempts(CallAttemptQuery::AttemptIds(vec![
            "cb7-1".into(),
            "cb7-2".into(),
            "nope".into(),
        ]))
        .await
        .expect("by attempt ids");
    assert_eq!(ids(by_ids), vec!["cb7-1", "cb7-2"]);
    let by_calls = store
        .call_attempts(CallAttemptQuery::ProviderCalls {
            provider: "twilio".into(),
            call_ids: vec!["CAcb7-1".into(), "CAelse".into()],
        })
        .await
        .expect("by provider calls");
    assert_eq!(ids(by_calls), vec!["cb7-1"]);
    let wrong_provider = store
        .call_attempts(CallAttemptQuery::ProviderCalls {
            provider: "africastalking".into(),
            call_ids: vec!["CAcb7-1".into()],
        })
        .await
        .expect("by provider calls");
    assert!(wrong_provider.is_empty());

    // A scheduled attempt is not ended by a final status (it was never placed), and being
    // stored `scheduled` again does not undo its placing.
    commit(&store, vec![busy(CallKey::Attempt("cb7-2".into()), 1_500)]).await;
    commit(
        &store,
        vec![placed("cb7-2", 2, CallAttemptStatus::Placing, 62_000)],
    )
    .await;
    commit(
        &store,
        vec![placed("cb7-2", 2, CallAttemptStatus::Scheduled, 62_100)],
    )
    .await;
    let second = store
        .call_attempts(CallAttemptQuery::CallId("cb7-2".into()))
        .await
        .expect("second");
    assert_eq!(second[0].status, CallAttemptStatus::Placing);
    assert_eq!(
        second[0].placed_at_ms, 2_000,
        "placing sets the placing time"
    );

    // The last allowed attempt schedules nothing.
    commit(
        &store,
        vec![placed("cb7-2", 2, CallAttemptStatus::Placed, 62_200)],
    )
    .await;
    let mut last = busy(CallKey::Attempt("cb7-2".into()), 63_000);
    if let Write::CallFinal(f) = &mut last {
        f.retry = Some(CallRetry {
            max_attempts: 2,
            due_at_ms: 99_000,
        });
    }
    commit(&store, vec![last]).await;
    let rows = store
        .call_attempts(CallAttemptQuery::Subscriber(SUBSCRIBER_1.into()))
        .await
        .expect("attempts");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[1].status, CallAttemptStatus::Ended);
    store.flush_and_close().await.expect("close");
}
