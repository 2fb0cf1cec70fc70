//! Flow versions every node knows, against the real Redis and PostgreSQL (and SQLite for the
//! restart): a session pinned to a version only another node loaded continues on it, so does
//! one whose node restarted from a folder without that version, a reload on one node reaches
//! another by its poll, and a flow removed by a reload lets its sessions finish while no node
//! starts new ones.
//!
//! The poll is called directly (`Gateway::sync_flows`), never waited for.

mod common;

use std::path::Path;

use baraza::config::ResultsConfig;
use common::{Stores, TestGateway, start};

const PHONE: &str = "+254711000333";
const OTHER_PHONE: &str = "+254711000334";
/// The village question of version 1 of the fixture flow, and of the edited version 2.
const VILLAGE_V1: &str = "CON Which village do you live in?";
const VILLAGE_V2: &str = "CON Which village are you in?";
/// The rating question of version 1 and of version 2.
const RATING_V1: &str = "CON How satisfied are you";
const RATING_V2: &str = "CON How happy are you";

fn fixture() -> String {
    std::fs::read_to_string(common::manifest_dir().join("tests/fixtures/e2e/e2e_survey.yaml"))
        .expect("read the fixture flow")
}

/// The fixture flow as version 2, with two questions reworded (so a reply tells the version).
fn version_2() -> String {
    let v1 = fixture();
    let v2 = v1
        .replacen("version: 1", "version: 2", 1)
        .replacen(
            "Which village do you live in?",
            "Which village are you in?",
            1,
        )
        .replacen("How satisfied are you", "How happy are you", 1);
    assert_ne!(v1, v2);
    v2
}

/// Writes `source` as the survey flow of the folder `flows`.
fn write_survey(flows: &Path, source: &str) {
    std::fs::write(flows.join("e2e_survey.yaml"), source).expect("write the survey flow");
}

/// Another node on `first`'s stores, with a flows folder of its own holding `survey`.
async fn node_with(first: &TestGateway, survey: &str) -> TestGateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = first.config.clone();
    config.flows_dir = common::flows_folder(dir.path());
    write_survey(&config.flows_dir, survey);
    common::from_config(config, dir, None, None).await
}

/// What a dial of a code no flow answers gets.
async fn unknown_code_reply(gw: &TestGateway) -> String {
    gw.at("unknown-code", OTHER_PHONE, "*000#", "").await
}

#[tokio::test]
async fn a_session_pinned_to_a_version_only_another_node_loaded_continues_there() {
    // Node B knows version 1 only; node A's folder holds version 2.
    let b = start(Stores::RedisPostgres).await;
    let a = node_with(&b, &version_2()).await;
    assert!(a.at("s1", PHONE, "*999#", "").await.starts_with("CON"));
    assert_eq!(a.at("s1", PHONE, "*999#", "1").await, VILLAGE_V2);
    assert!(b.gateway.catalog().get("e2e_survey", 2).is_none());

    // The next steps reach B: it continues on version 2, from the result store.
    let priority = b.at("s1", PHONE, "*999#", "1*Kisumu").await;
    assert!(
        priority.starts_with("CON What should the county fix first in Kisumu"),
        "{priority}"
    );
    let rating = b.at("s1", PHONE, "*999#", "1*Kisumu*3").await;
    assert!(rating.starts_with(RATING_V2), "{rating}");
    let end = b.at("s1", PHONE, "*999#", "1*Kisumu*3*4").await;
    assert!(end.starts_with("END Thank you"), "{end}");
    let rows = b.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].flow_version, 2);
    assert_eq!(rows[0].answers.len(), 3, "{rows:?}");
    b.cleanup().await;
}

#[tokio::test]
async fn a_session_continues_on_its_version_after_a_restart_from_a_folder_without_it() {
    // Redis sessions (they outlive the node) with SQLite results.
    let first = start(Stores::RedisPostgres).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = first.config.clone();
    config.results = ResultsConfig::Sqlite {
        path: dir.path().join("data/results.sqlite3"),
    };
    config.flows_dir = common::flows_folder(dir.path());
    write_survey(&config.flows_dir, &version_2());
    let node = common::from_config(config.clone(), dir, None, None).await;
    node.at("s2", PHONE, "*999#", "").await;
    assert_eq!(node.at("s2", PHONE, "*999#", "1").await, VILLAGE_V2);

    // The node stops; its folder goes back to version 1; it starts again.
    node.gateway
        .results
        .flush_and_close()
        .await
        .expect("results flushed");
    let TestGateway { dir, .. } = node;
    write_survey(&config.flows_dir, &fixture());
    let restarted = common::from_config(config, dir, None, None).await;
    assert!(restarted.gateway.catalog().get("e2e_survey", 2).is_none());

    let priority = restarted.at("s2", PHONE, "*999#", "1*Kisumu").await;
    assert!(
        priority.starts_with("CON What should the county fix first in Kisumu"),
        "{priority}"
    );
    let rating = restarted.at("s2", PHONE, "*999#", "1*Kisumu*3").await;
    assert!(rating.starts_with(RATING_V2), "{rating}");
    let end = restarted.at("s2", PHONE, "*999#", "1*Kisumu*3*4").await;
    assert!(end.starts_with("END Thank you"), "{end}");
    let rows = restarted.responses("e2e_survey").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].flow_version, rows[0].answers.len()), (2, 3));
    restarted
        .gateway
        .results
        .flush_and_close()
        .await
        .expect("results flushed");
    first.cleanup().await;
}

#[tokio::test]
async fn a_reload_on_one_node_reaches_another_by_its_poll() {
    let a = start(Stores::RedisPostgres).await;
    let b = node_with(&a, &fixture()).await;
    // Both start version 1; B has read what was published so far.
    b.gateway.sync_flows().await.expect("poll");
    b.at("s3", PHONE, "*999#", "").await;
    assert_eq!(b.at("s3", PHONE, "*999#", "1").await, VILLAGE_V1);

    write_survey(&a.config.flows_dir, &version_2());
    let (status, body) = a.post("/admin/reload", "text/plain", Vec::new()).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    assert!(body.contains("e2e_survey@2"), "{body}");
    a.at("s4", OTHER_PHONE, "*999#", "").await;
    assert_eq!(a.at("s4", OTHER_PHONE, "*999#", "1").await, VILLAGE_V2);

    // B's poll adds version 2 as the flow's latest: new sessions start on it there too.
    let sync = b.gateway.sync_flows().await.expect("poll");
    assert_eq!(sync.added, vec!["e2e_survey@2".to_string()], "{sync:?}");
    assert_eq!(
        b.gateway.sync_flows().await.expect("poll"),
        Default::default()
    );
    b.at("s5", "+254711000335", "*999#", "").await;
    assert_eq!(b.at("s5", "+254711000335", "*999#", "1").await, VILLAGE_V2);
    // The session B started before goes on with version 1.
    b.at("s3", PHONE, "*999#", "1*Kisumu").await;
    let rating = b.at("s3", PHONE, "*999#", "1*Kisumu*3").await;
    assert!(rating.starts_with(RATING_V1), "{rating}");
    a.cleanup().await;
}

#[tokio::test]
async fn a_removed_flow_finishes_its_sessions_and_starts_no_new_ones_on_any_node() {
    let a = start(Stores::RedisPostgres).await;
    let b = node_with(&a, &fixture()).await;
    b.gateway.sync_flows().await.expect("poll");
    a.at("s6", PHONE, "*999#", "").await;
    assert_eq!(a.at("s6", PHONE, "*999#", "1").await, VILLAGE_V1);

    std::fs::remove_file(a.config.flows_dir.join("e2e_survey.yaml")).expect("remove the flow");
    let (status, body) = a.post("/admin/reload", "text/plain", Vec::new()).await;
    assert_eq!(status, axum::http::StatusCode::OK, "{body}");
    assert!(body.contains("retired: e2e_survey"), "{body}");

    // A: a new dial is answered like an unknown code; the session under way goes on.
    let unknown = unknown_code_reply(&a).await;
    assert!(unknown.starts_with("END"), "{unknown}");
    assert_eq!(a.at("s7", OTHER_PHONE, "*999#", "").await, unknown);
    let priority = a.at("s6", PHONE, "*999#", "1*Kisumu").await;
    assert!(
        priority.starts_with("CON What should the county fix first"),
        "{priority}"
    );

    // B learns of the removal by its poll; it too finishes the session and starts no other.
    assert_eq!(
        b.at("s8", "+254711000336", "*999#", "").await.get(..3),
        Some("CON")
    );
    let sync = b.gateway.sync_flows().await.expect("poll");
    assert_eq!(sync.retired, vec!["e2e_survey".to_string()], "{sync:?}");
    assert_eq!(b.at("s9", "+254711000337", "*999#", "").await, unknown);
    let rating = b.at("s6", PHONE, "*999#", "1*Kisumu*3").await;
    assert!(rating.starts_with(RATING_V1), "{rating}");
    let end = b.at("s6", PHONE, "*999#", "1*Kisumu*3*4").await;
    assert!(end.starts_with("END Thank you"), "{end}");
    a.cleanup().await;
}

/// Removes a published version from the PostgreSQL schema `schema` behind the store's back.
async fn unpublish(schema: &str, flow_id: &str, version: i64) {
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls)
            .await
            .expect("connect to postgres");
    tokio::spawn(connection);
    client
        .execute(
            &format!("DELETE FROM \"{schema}\".flow_versions WHERE flow_id = $1 AND version = $2"),
            &[&flow_id, &version],
        )
        .await
        .expect("delete the version");
}

#[tokio::test]
async fn a_version_no_node_published_is_busy_and_remembered_as_missing_for_a_while() {
    let b = start(Stores::RedisPostgres).await;
    let a = node_with(&b, &version_2()).await;
    a.at("s10", PHONE, "*999#", "").await;
    assert_eq!(a.at("s10", PHONE, "*999#", "1").await, VILLAGE_V2);
    let schema = b.pg_schema.clone().expect("a PostgreSQL schema");
    unpublish(&schema, "e2e_survey", 2).await;

    // B lacks version 2 and so does the store: the polite "busy" END, not a crash.
    let busy = b.at("s10", PHONE, "*999#", "1*Kisumu").await;
    assert!(busy.starts_with("END"), "{busy}");
    // Published again now, but B remembers the miss (for `MISS_TTL`) and does not ask again.
    let stored_by_a = a
        .gateway
        .results
        .flow_versions_since(0)
        .await
        .expect("read");
    assert!(stored_by_a.iter().all(|v| v.version != 2));
    let v2 = baraza::result_store::PublishedFlow {
        flow_id: "e2e_survey".into(),
        version: 2,
        content_hash: baraza::flow::catalog::content_hash(
            &a.gateway.catalog().get("e2e_survey", 2).expect("on A").flow,
            "",
        ),
        source: version_2(),
        published_at_ms: 1,
    };
    b.gateway
        .results
        .publish_flow_versions(&[v2])
        .await
        .expect("publish");
    assert_eq!(b.at("s10", PHONE, "*999#", "1*Kisumu").await, busy);
    // The poll does not wait for the miss to expire: the version is there for the next step.
    let sync = b.gateway.sync_flows().await.expect("poll");
    assert!(sync.added.contains(&"e2e_survey@2".to_string()), "{sync:?}");
    let priority = b.at("s10", PHONE, "*999#", "1*Kisumu").await;
    assert!(
        priority.starts_with("CON What should the county fix first in Kisumu"),
        "{priority}"
    );
    b.cleanup().await;
}
