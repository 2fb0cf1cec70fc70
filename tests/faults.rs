//! Faults at small scale, one test per fault of the suite in `load-tests/faults/`, against
//! servers the test owns (so no other test is disturbed): a private Redis stopped and
//! restarted, or paused for 5 s (`CLIENT PAUSE`), a private PostgreSQL cluster restarted, the
//! SMSC simulator dropping its connections mid-window and throttling during an SMS survey
//! (SIGKILL of one of two nodes is in `tests/ussd_process.rs`). Each holds: while the fault
//! lasts a step gets the polite "busy" answer within the step deadline and nothing half-done
//! is stored; afterwards the same gateway works again (no restart); nothing is lost and
//! nothing is stored or sent twice.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use baraza::config::SessionsConfig;
use common::Stores;
use common::servers::{PrivateRedis, free_port};

/// Waits (bounded) until the Redis at `url` answers PING on a new connection.
async fn until_up(url: &str) {
    let ready = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Ok(client) = redis::Client::open(url)
                && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                && redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(ready.is_ok(), "the private Redis at {url} never answered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_costs_the_live_sessions_and_nothing_else() {
    let mut redis = PrivateRedis::start();
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.sessions = SessionsConfig::Redis {
            url: Some(redis.url().into()),
            key_prefix: "faults".into(),
            response_timeout_ms: 300,
            node_cache_entries: 0,
        };
    })
    .await;
    let phone = "+254700900001";
    assert!(
        gw.at("f-1", phone, "*999#", "")
            .await
            .starts_with("CON Choose language")
    );
    assert!(
        gw.at("f-1", phone, "*999#", "1")
            .await
            .starts_with("CON Which village")
    );

    // Redis goes away.
    redis.stop();
    let started = std::time::Instant::now();
    let down = gw.at("f-1", phone, "*999#", "1*Kisumu").await;
    assert!(down.starts_with("END ") && down.contains("busy"), "{down}");
    assert!(
        started.elapsed() < Duration::from_millis(gw.config.ussd.step_deadline_ms + 1_000),
        "answered within the step deadline"
    );
    let rows = gw.responses("e2e_survey").await;
    assert!(
        rows.iter().all(|r| !r.answers.contains_key("village")),
        "no answer stored for a step that failed: {rows:?}"
    );

    // Redis is back (empty: it keeps nothing): a new dial works on the same gateway.
    redis.start_again();
    let again = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let reply = gw.at("f-2", phone, "*999#", "").await;
            if reply.starts_with("CON ") {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the gateway reconnects to Redis");
    assert!(again.contains("Choose language"), "{again}");
    assert!(
        gw.at("f-2", phone, "*999#", "1")
            .await
            .starts_with("CON Which village")
    );
    gw.cleanup().await;
}

/// Fails the test instead of hanging it when something never happens.
async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(30), future)
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// Sends one Africa's Talking step until it gets a `CON`/`END` other than the "busy" one
/// (bounded): the gateway coming back after a fault, without a restart.
async fn until_served(gw: &common::TestGateway, session: &str, phone: &str, text: &str) -> String {
    within("the gateway to serve again", async {
        loop {
            let reply = gw.at(session, phone, "*999#", text).await;
            if !reply.contains("busy") {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Dials and chooses English: the session then waits for the village.
async fn begin(gw: &common::TestGateway, session: &str, phone: &str) {
    assert!(gw.at(session, phone, "*999#", "").await.starts_with("CON "));
    assert!(
        gw.at(session, phone, "*999#", "1")
            .await
            .starts_with("CON Which village")
    );
}

/// After a fault: the village step it refused, again until the same gateway serves it, then
/// the rest of the survey, each screen as expected.
async fn finish(gw: &common::TestGateway, session: &str, phone: &str) {
    let again = until_served(gw, session, phone, "1*Kisumu").await;
    assert!(
        again.starts_with("CON What should the county fix first in Kisumu"),
        "{again}"
    );
    assert!(
        gw.at(session, phone, "*999#", "1*Kisumu*1")
            .await
            .starts_with("CON How satisfied")
    );
    assert!(
        gw.at(session, phone, "*999#", "1*Kisumu*1*4")
            .await
            .starts_with("END Thank you")
    );
}

/// The polite refusal of a step that could not be done, and within the step deadline.
fn assert_polite_and_prompt(reply: &str, started: std::time::Instant, gw: &common::TestGateway) {
    assert!(
        reply.starts_with("END ") && reply.contains("busy"),
        "{reply}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(gw.config.ussd.step_deadline_ms + 1_000),
        "answered within the step deadline: {:?}",
        started.elapsed()
    );
}

/// Rows of `sql` (two columns: a name and a count) in the SQLite result store at `path`.
fn sqlite_counts(path: &std::path::Path, sql: &str) -> Vec<(String, i64)> {
    let conn = rusqlite::Connection::open(path).expect("open the result store");
    let mut statement = conn.prepare(sql).expect("query");
    statement
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .map(|row| row.expect("row"))
        .collect()
}

fn pairs(rows: &[(&str, i64)]) -> Vec<(String, i64)> {
    rows.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

/// `CLIENT PAUSE 5000 ALL` on a private Redis under two gateways, one reading every session
/// from Redis and one stepping from its own copy: both answer the paused step politely within
/// the deadline; once the pause ends the same step goes through on the same gateways and each
/// answer is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_pause_of_5_s_gets_polite_answers_and_stores_each_answer_once() {
    let redis = PrivateRedis::start();
    let url = redis.url();
    let on_redis = |copies: usize| {
        let url = url.clone();
        move |c: &mut baraza::config::Config| {
            c.sessions = SessionsConfig::Redis {
                url: Some(url.into()),
                key_prefix: format!("pause{copies}"),
                // Longer than the pause: only the step deadline answers the citizen.
                response_timeout_ms: 10_000,
                node_cache_entries: copies,
            };
        }
    };
    let gateways = [
        common::start_with(Stores::MemorySqlite, on_redis(0)).await,
        common::start_with(Stores::MemorySqlite, on_redis(1000)).await,
    ];
    let phone = "+254700900201";
    for gw in &gateways {
        begin(gw, "q-1", phone).await;
    }

    let mut pause = redis::Client::open(url.as_str())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    common::pause_redis(&mut pause, 5_000, "ALL").await;
    // Together, so that all three fall within the pause.
    let started = std::time::Instant::now();
    let (a, b, dial) = tokio::join!(
        gateways[0].at("q-1", phone, "*999#", "1*Kisumu"),
        gateways[1].at("q-1", phone, "*999#", "1*Kisumu"),
        gateways[0].at("q-2", "+254700900202", "*999#", ""),
    );
    assert_polite_and_prompt(&a, started, &gateways[0]);
    assert_polite_and_prompt(&b, started, &gateways[1]);
    assert_polite_and_prompt(&dial, started, &gateways[0]);

    // PING on a new connection is answered once the pause is over.
    until_up(&url).await;
    for gw in &gateways {
        finish(gw, "q-1", phone).await;
        let answers = sqlite_counts(
            &gw.dir.path().join("data/results.sqlite3"),
            "SELECT result, count(*) FROM answers GROUP BY result ORDER BY result",
        );
        assert_eq!(
            answers,
            pairs(&[("priority", 1), ("rating", 1), ("village", 1)])
        );
        assert!(
            gw.at("q-3", "+254700900203", "*999#", "")
                .await
                .starts_with("CON Choose language")
        );
    }
    drop(redis);
    for gw in gateways {
        gw.cleanup().await;
    }
}

/// Where initdb and pg_ctl are: `BARAZA_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian), else `pg_config --bindir`, else PATH.
fn postgres_bin() -> std::path::PathBuf {
    if let Ok(dir) = std::env::var("BARAZA_TEST_PG_BIN") {
        return dir.into();
    }
    let mut versions: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    // Else `pg_config`'s folder, or (empty) the programs on PATH; a missing initdb fails the
    // test with the hint below.
    Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().into())
        .unwrap_or_default()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0")
}

/// A PostgreSQL cluster of this test's own: initdb in a temporary folder, a free port, trust
/// authentication, so stopping it disturbs no other test. As root its programs run as
/// `postgres` (initdb refuses root). Stopped at once when dropped.
struct PrivatePostgres {
    dir: tempfile::TempDir,
    port: u16,
    bin: std::path::PathBuf,
    as_postgres: bool,
}

impl PrivatePostgres {
    fn start() -> PrivatePostgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let as_postgres = running_as_root();
        if as_postgres {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
                .expect("chmod");
            let chown = Command::new("chown")
                .arg("postgres")
                .arg(dir.path())
                .status()
                .expect("chown");
            assert!(chown.success(), "chown postgres {:?}", dir.path());
        }
        let pg = PrivatePostgres {
            dir,
            port: free_port(),
            bin: postgres_bin(),
            as_postgres,
        };
        let mut initdb = pg.program("initdb");
        initdb.arg("-D").arg(pg.data()).args([
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(
            "initdb (PostgreSQL's server programs: run .ci/services.sh or set BARAZA_TEST_PG_BIN)",
            initdb,
        );
        pg.start_again();
        pg
    }

    fn program(&self, name: &str) -> Command {
        let path = self.bin.join(name);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(path);
            c
        } else {
            Command::new(path)
        };
        command.stdout(Stdio::null()).stderr(Stdio::null());
        command
    }

    fn data(&self) -> std::path::PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the cluster and waits until it accepts connections (`pg_ctl -w`).
    fn start_again(&self) {
        let mut start = self.program("pg_ctl");
        start
            .arg("-D")
            .arg(self.data())
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .arg("-w")
            .arg("-o")
            .arg(format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                self.port,
                self.dir.path().display()
            ))
            .arg("start");
        run("pg_ctl start", start);
    }

    /// Stops the cluster (`fast`: connections closed, a clean shutdown) and waits.
    fn stop(&self, mode: &str) {
        let mut stop = self.program("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-w", "-m", mode, "stop"]);
        run("pg_ctl stop", stop);
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let mut stop = self.program("pg_ctl");
        stop.arg("-D")
            .arg(self.data())
            .args(["-m", "immediate", "stop"]);
        let _ = stop.status();
    }
}

fn run(what: &str, mut command: Command) {
    let status = command.status().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(status.success(), "{what}: {status}");
}

/// A private PostgreSQL result store restarted under a gateway: the step that needs it while
/// it is down gets the polite answer within the deadline and stores nothing; once it is back
/// the same step of the same session goes through on the same gateway, each answer stored
/// once, and new sessions work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_restart_gets_polite_answers_and_then_stores_each_answer_once() {
    let pg = PrivatePostgres::start();
    let url = pg.url();
    let gw = common::start_with(Stores::MemorySqlite, |c| {
        c.results = baraza::config::ResultsConfig::Postgres {
            url: Some(url.clone().into()),
            schema: Some("faults".into()),
        };
    })
    .await;
    let phone = "+254700900301";
    begin(&gw, "p-1", phone).await;

    pg.stop("fast");
    let started = std::time::Instant::now();
    let down = gw.at("p-1", phone, "*999#", "1*Kisumu").await;
    assert_polite_and_prompt(&down, started, &gw);
    let started = std::time::Instant::now();
    let dial = gw.at("p-2", "+254700900302", "*999#", "").await;
    assert_polite_and_prompt(&dial, started, &gw);

    pg.start_again();
    finish(&gw, "p-1", phone).await;
    assert!(
        gw.at("p-3", "+254700900303", "*999#", "")
            .await
            .starts_with("CON Choose language")
    );

    let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    let answers: Vec<(String, i64)> = client
        .query(
            "SELECT result, count(*) FROM faults.answers GROUP BY result ORDER BY result",
            &[],
        )
        .await
        .expect("answers")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert_eq!(
        answers,
        pairs(&[("priority", 1), ("rating", 1), ("village", 1)])
    );
    let rows = gw.responses("e2e_survey").await;
    let completed: Vec<_> = rows
        .iter()
        .filter(|r| r.status == baraza::result_store::ResponseStatus::Completed)
        .collect();
    assert_eq!(completed.len(), 1, "{rows:?}");
    gw.cleanup().await;
}

/// The service feedback survey by SMS (keyword HEALTH): what the citizen sends, and what the
/// reply to it says.
const SURVEY: [(&str, &str); 5] = [
    ("HEALTH", "Which service?"),
    ("2", "How would you rate it?"),
    ("5", "Did you get the service"),
    ("yes", "When was your visit?"),
    ("12032026", "Thank you!"),
];
const SHORT_CODE: &str = "20880";

/// The SMSC simulator (in process) and a gateway (SQLite results in `dir`, node `node-1`)
/// bound to it.
async fn sms_gateway(
    sim: baraza::smpp::smsc_sim::SimConfig,
    dir: &std::path::Path,
    sessions: Option<SessionsConfig>,
) -> (
    baraza::smpp::smsc_sim::SimHandle,
    std::sync::Arc<baraza::dispatcher::Gateway>,
    baraza::sms::binds::Binds,
) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let sim = baraza::smpp::smsc_sim::spawn_smsc_sim(sim, listener);
    let mut config = baraza::config::Config::embedded();
    config.flows_dir = common::manifest_dir().join("flows");
    config.results = baraza::config::ResultsConfig::Sqlite {
        path: dir.join("results.sqlite3"),
    };
    config.pseudonym_secret = Some("test-pseudonym-secret".into());
    if let Some(sessions) = sessions {
        config.sessions = sessions;
    }
    config.smpp.node = Some("node-1".into());
    config.smpp.operators = vec![
        serde_saphyr::from_str(&format!(
            "name: sim\nhost: 127.0.0.1\nport: {port}\nsystem_id: baraza\npassword: secret\n\
             sender: \"{SHORT_CODE}\"\n"
        ))
        .expect("operator config"),
    ];
    let gateway = std::sync::Arc::new(
        baraza::server::build_gateway(config)
            .await
            .expect("gateway"),
    );
    let binds = baraza::sms::binds::Binds::start(std::sync::Arc::clone(&gateway));
    within("the bind", sim.wait_until(|s| s.bound_receivers >= 1)).await;
    (sim, gateway, binds)
}

/// Waits until the handset has `count` messages; their texts.
async fn handset(sim: &baraza::smpp::smsc_sim::SimHandle, count: usize) -> Vec<String> {
    within(
        &format!("{count} messages on the handset"),
        sim.wait_until(|s| s.messages.len() >= count),
    )
    .await
    .messages
    .iter()
    .map(|m| m.text.clone())
    .collect()
}

/// The survey's stored outcome: every reply sent once, every inbound message kept and handled
/// once, one completed response with each answer once.
async fn assert_survey_stored_once(
    gateway: &baraza::dispatcher::Gateway,
    dir: &std::path::Path,
    outbound_states: &[(&str, i64)],
) {
    let db = dir.join("results.sqlite3");
    assert_eq!(
        sqlite_counts(
            &db,
            "SELECT state, count(*) FROM sms_messages GROUP BY state ORDER BY state"
        ),
        pairs(outbound_states)
    );
    assert_eq!(
        sqlite_counts(
            &db,
            "SELECT state, count(*) FROM sms_inbound GROUP BY state ORDER BY state"
        ),
        pairs(&[("handled", 5)])
    );
    assert_eq!(
        sqlite_counts(
            &db,
            "SELECT result, count(*) FROM answers GROUP BY result ORDER BY result"
        ),
        pairs(&[
            ("got_service", 1),
            ("rating", 1),
            ("service", 1),
            ("visit_date", 1)
        ])
    );
    let rows = gateway
        .results
        .responses("service_feedback")
        .await
        .expect("responses");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].status,
        baraza::result_store::ResponseStatus::Completed
    );
}

fn assert_replies(texts: &[String]) {
    assert_eq!(
        texts.len(),
        SURVEY.len(),
        "one reply per message: {texts:?}"
    );
    for (text, (sent, expected)) in texts.iter().zip(SURVEY) {
        assert!(text.contains(expected), "after {sent}: {text}");
    }
}

/// The SMSC drops every connection twice during an SMS survey: once while the reply to the
/// keyword waits for its submit_sm_resp (recorded `unknown`, never submitted again; it had
/// reached the handset), once just after delivering an answer the bind had no time to
/// acknowledge (delivered again on the new bind, recognised, handled once). Every message is
/// answered once; each answer is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smsc_dropping_its_connections_mid_window_loses_no_sms_and_sends_none_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, gateway, binds) = sms_gateway(
        baraza::smpp::smsc_sim::SimConfig::default(),
        dir.path(),
        None,
    )
    .await;
    let citizen = "+254733000001";

    // The SMSC takes the reply (it reaches the handset) and the link fails before it answers.
    sim.set_withhold_responses(true);
    sim.inject_mo(citizen, SHORT_CODE, SURVEY[0].0)
        .expect("inject");
    within("the reply's submit_sm", sim.wait_until(|s| s.accepted >= 1)).await;
    sim.set_withhold_responses(false);
    assert_eq!(sim.drop_connections(), 1);
    within(
        "the second bind",
        sim.wait_until(|s| s.binds >= 2 && s.bound_receivers >= 1),
    )
    .await;

    sim.inject_mo(citizen, SHORT_CODE, SURVEY[1].0)
        .expect("inject");
    assert_eq!(sim.drop_connections(), 1);
    within(
        "the answer delivered again on the third bind",
        sim.wait_until(|s| s.binds >= 3 && s.redeliveries_after_close >= 1),
    )
    .await;
    handset(&sim, 2).await;

    for (i, (text, _)) in SURVEY.iter().enumerate().skip(2) {
        sim.inject_mo(citizen, SHORT_CODE, text).expect("inject");
        handset(&sim, i + 1).await;
    }
    binds.shutdown(Duration::from_secs(5)).await;
    let stats = sim.stats();
    assert_replies(
        &stats
            .messages
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>(),
    );
    assert_eq!(
        (stats.submits, stats.accepted),
        (5, 5),
        "no reply submitted twice"
    );
    // The reply whose response the drop cut off is `unknown`: it reached the handset (above)
    // and was not sent again.
    assert_survey_stored_once(&gateway, dir.path(), &[("accepted", 4), ("unknown", 1)]).await;
}

/// The SMSC answers every second submit_sm with ESME_RTHROTTLED during a whole SMS survey:
/// each reply waits and goes again, arrives once and in order; each answer is stored once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_smsc_throttling_delays_replies_but_loses_and_doubles_none() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (sim, gateway, binds) = sms_gateway(
        baraza::smpp::smsc_sim::SimConfig {
            throttle_every: Some(2),
            ..Default::default()
        },
        dir.path(),
        None,
    )
    .await;
    let citizen = "+254733000002";
    for (i, (text, _)) in SURVEY.iter().enumerate() {
        sim.inject_mo(citizen, SHORT_CODE, text).expect("inject");
        handset(&sim, i + 1).await;
    }
    binds.shutdown(Duration::from_secs(5)).await;
    let stats = sim.stats();
    assert_replies(
        &stats
            .messages
            .iter()
            .map(|m| m.text.clone())
            .collect::<Vec<_>>(),
    );
    assert!(stats.throttled >= 2, "{stats:?}");
    assert_eq!(stats.accepted, 5, "{stats:?}");
    assert_eq!(stats.submits, stats.accepted + stats.throttled);
    assert_survey_stored_once(&gateway, dir.path(), &[("accepted", 5)]).await;
}

/// A citizen answers by SMS while the session store misbehaves, twice:
/// - Redis stops taking writes for 2 s (`CLIENT PAUSE 2000 WRITE`): the step waits for its
///   turn and its save, and the reply arrives, once (before, the step failed and its message
///   waited a minute for the sweep);
/// - Redis refuses the session save itself (`ACL SETUSER default -evalsha`) after the step's
///   answers, handled mark and reply were committed: the step checks and tries its save for
///   a while, then puts the message back to `received` (before, it stayed `handled` and the
///   sweep withdrew its reply: the citizen never heard back). Once Redis takes saves again,
///   the sweep handles it: the reply arrives, once, and the answer is stored once.
/// Found by `load-tests/faults/run.sh`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sms_step_whose_session_save_fails_still_replies_once() {
    let redis = PrivateRedis::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let sessions = SessionsConfig::Redis {
        url: Some(redis.url().into()),
        key_prefix: "faults-sms-save".into(),
        response_timeout_ms: 300,
        node_cache_entries: 0,
    };
    let (sim, gateway, binds) = sms_gateway(
        baraza::smpp::smsc_sim::SimConfig::default(),
        dir.path(),
        Some(sessions),
    )
    .await;
    let mut control = redis::Client::open(redis.url())
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let citizen = "+254733000009";
    sim.inject_mo(citizen, SHORT_CODE, "HEALTH")
        .expect("inject");
    handset(&sim, 1).await;

    common::pause_redis(&mut control, 2_000, "WRITE").await;
    sim.inject_mo(citizen, SHORT_CODE, "2").expect("inject");
    let texts = handset(&sim, 2).await;
    assert!(texts[1].contains("How would you rate it?"), "{texts:?}");

    let acl = |rule: &'static str| {
        let mut control = control.clone();
        async move {
            redis::cmd("ACL")
                .arg("SETUSER")
                .arg("default")
                .arg(rule)
                .query_async::<()>(&mut control)
                .await
                .expect("ACL SETUSER");
        }
    };
    acl("-evalsha").await;
    sim.inject_mo(citizen, SHORT_CODE, "5").expect("inject");
    let db = dir.path().join("results.sqlite3");
    within("the unsaved step's message back to received", async {
        loop {
            let states = sqlite_counts(
                &db,
                "SELECT state, count(*) FROM sms_inbound GROUP BY state ORDER BY state",
            );
            if states == pairs(&[("handled", 2), ("received", 1)]) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert_eq!(sim.stats().messages.len(), 2, "no reply yet");
    acl("+evalsha").await;
    let later = baraza::dispatcher::now_ms() + 120_000;
    assert_eq!(binds.recover_inbound(later).await, 1);
    let texts = handset(&sim, 3).await;
    assert!(texts[2].contains("Did you get the service"), "{texts:?}");
    binds.shutdown(Duration::from_secs(5)).await;
    assert_eq!(
        sqlite_counts(
            &db,
            "SELECT result, count(*) FROM answers GROUP BY result ORDER BY result"
        ),
        pairs(&[("rating", 1), ("service", 1)])
    );
    assert_eq!(
        sqlite_counts(
            &db,
            "SELECT state, count(*) FROM sms_inbound GROUP BY state ORDER BY state"
        ),
        pairs(&[("handled", 3)])
    );
    assert_eq!(sim.stats().messages.len(), 3, "each reply once");
    drop(gateway);
    drop(redis);
}
