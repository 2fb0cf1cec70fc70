//! USSD over SMPP end to end, in process: the SMSC simulator opens dialogues with
//! deliver_sm carrying `ussd_service_op`, `baraza serve` runs the same flows as USSD over HTTP
//! and answers each step with a submit_sm screen (continue op, or end op with the end bit).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use baraza::config::OperatorConfig;
use baraza::dispatcher::Gateway;
use baraza::result_store::ResponseStatus;
use baraza::smpp::ShortMessage;
use baraza::smpp::smsc_sim::{SimConfig, SimHandle, spawn_smsc_sim};
use baraza::smpp::tlv::{ItsSessionInfo, Tlv, TlvList, UssdServiceOp};
use common::Stores;

/// A running simulator and server; `stop` ends the server.
struct Running {
    sim: SimHandle,
    gateway: Arc<Gateway>,
    stop: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Redis key prefix and PostgreSQL schema to remove afterwards, when used.
    redis_prefix: Option<String>,
    pg_schema: Option<String>,
    _dir: tempfile::TempDir,
}

/// Starts the simulator and `serve` on `stores` with one operator whose USSD profile is
/// `profile_yaml` (indented block under `ussd:`).
async fn start(stores: Stores, profile_yaml: &str) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, redis_prefix, pg_schema) = common::config_for(stores, dir.path());
    config.admission.burst = 100;
    let mut running = start_with(config, profile_yaml).await;
    running.redis_prefix = redis_prefix;
    running.pg_schema = pg_schema;
    running._dir = dir;
    running
}

/// Starts a simulator of its own and `serve` on `config` with one operator `sim` bound to it.
async fn start_with(mut config: baraza::config::Config, profile_yaml: &str) -> Running {
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = sim_listener.local_addr().expect("addr").port();
    let sim = spawn_smsc_sim(SimConfig::default(), sim_listener);
    let operator: OperatorConfig = serde_saphyr::from_str(&format!(
        "name: sim\nhost: 127.0.0.1\nport: {port}\nsystem_id: baraza\npassword: secret\nussd:\n{profile_yaml}"
    ))
    .expect("operator config");
    config.smpp.operators = vec![operator];
    let gateway = Arc::new(
        baraza::server::build_gateway(config)
            .await
            .expect("gateway"),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(baraza::server::serve(
        Arc::clone(&gateway),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    sim.wait_until(|s| s.binds >= 1).await;
    Running {
        sim,
        gateway,
        stop,
        server,
        redis_prefix: None,
        pg_schema: None,
        _dir: tempfile::tempdir().expect("tempdir"),
    }
}

impl Running {
    /// Waits for the `count`-th USSD screen and returns it.
    async fn screen(&self, count: usize) -> ShortMessage {
        let stats = self.sim.wait_until(|s| s.ussd_submits.len() >= count).await;
        stats.ussd_submits[count - 1].clone()
    }

    async fn shutdown(self) {
        self.stop.send(()).expect("stop");
        self.server
            .await
            .expect("serve task")
            .expect("serve ends cleanly");
        if let Some(schema) = &self.pg_schema {
            common::drop_schema(schema).await;
        }
        if let Some(prefix) = &self.redis_prefix {
            common::delete_keys(prefix).await;
        }
    }
}

fn op(sm: &ShortMessage) -> u8 {
    match sm.tlvs.ussd_service_op() {
        Ok(Some(UssdServiceOp(op))) => op,
        other => panic!("screen without ussd_service_op: {other:?}"),
    }
}

fn session_info(sm: &ShortMessage) -> ItsSessionInfo {
    match sm.tlvs.its_session_info() {
        Ok(Some(info)) => info,
        other => panic!("screen without its_session_info: {other:?}"),
    }
}

fn text(sm: &ShortMessage) -> String {
    match sm.data_coding {
        8 => baraza::encoding::gsm7::decode_ucs2(&sm.short_message),
        _ => baraza::encoding::gsm7::decode_unpacked(&sm.short_message),
    }
}

fn its(op: u8, session_number: u8, sequence: u8, end_of_session: bool) -> Vec<Tlv> {
    vec![
        Tlv::ussd_service_op(UssdServiceOp(op)),
        Tlv::its_session_info(ItsSessionInfo {
            session_number,
            sequence,
            end_of_session,
        }),
    ]
}

/// The answers the flow simulator saves for `script` (what the result store must hold).
fn expected_answers(file: &str, script: &str) -> BTreeMap<String, String> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("flows")
        .join(file);
    let source = std::fs::read_to_string(path).expect("example flow");
    let flow = baraza::flow::load_str(file, &source)
        .expect("example flow loads")
        .flow;
    let compiled = baraza::engine::CompiledFlow::compile(flow).expect("compiles");
    let mut simulation = baraza::simulator::Simulation::new(&compiled, Default::default());
    simulation.dial();
    for item in &baraza::simulator::parse_script(script) {
        simulation.feed(item);
    }
    simulation
        .saved
        .iter()
        .map(|(result, value, _)| (result.clone(), value.clone()))
        .collect()
}

/// The stored answers of `subscriber`'s response to `flow`, with its status and provider.
async fn stored(
    gateway: &Gateway,
    flow: &str,
    subscriber: &str,
) -> (ResponseStatus, String, BTreeMap<String, String>) {
    let rows = gateway.results.responses(flow).await.expect("responses");
    let row = rows
        .iter()
        // Numbers are stored in one form whatever the transport (`+` and the digits).
        .find(|r| r.subscriber == baraza::channels::normalise_msisdn(subscriber))
        .unwrap_or_else(|| panic!("no {flow} response stored for {subscriber}: {rows:?}"));
    let answers = row
        .answers
        .iter()
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect();
    (row.status, row.provider.clone(), answers)
}

const STANDARD: &str = "  session_id: its_session_info\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grievance_flow_over_ussd_smpp_memory_sqlite() {
    grievance_flow_over_ussd_smpp(Stores::MemorySqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grievance_flow_over_ussd_smpp_redis_postgres() {
    grievance_flow_over_ussd_smpp(Stores::RedisPostgres).await;
}

/// The grievance example flow with the standard ops (PSSR indication, USSR confirm; screens
/// as USSR request, the last as PSSR response with the end bit).
async fn grievance_flow_over_ussd_smpp(stores: Stores) {
    let run = start(stores, STANDARD).await;
    let citizen = "254722000301";
    let script = "1,1,Pipe burst near Kondele market,Opposite the bus stage";
    let session = 42;
    // PSSR indication with the dialled code (sub-code 3 picks the grievance flow).
    run.sim
        .inject_ussd(citizen, "384", "*384*12*3#", its(1, session, 0, false))
        .expect("inject begin");
    let mut screens = vec![run.screen(1).await];
    for (i, answer) in script.split(',').enumerate() {
        // The network numbers its messages 0, 2, 4... and the gateway's replies 1, 3, 5...
        let sequence = u8::try_from(2 * (i + 1)).expect("small");
        run.sim
            .inject_ussd(citizen, "384", answer, its(18, session, sequence, false))
            .expect("inject answer");
        screens.push(run.screen(i + 2).await);
    }
    let (last, shown) = screens.split_last().expect("screens");
    for (i, screen) in shown.iter().enumerate() {
        assert_eq!(op(screen), 2, "screen {i} continues: {}", text(screen));
        let info = session_info(screen);
        assert_eq!(info.session_number, session);
        assert!(!info.end_of_session, "screen {i}");
        assert_eq!(info.sequence, u8::try_from(2 * i + 1).expect("small"));
        assert_eq!(screen.service_type, "USSD");
        assert_eq!(screen.destination_addr, citizen);
        assert_eq!(screen.source_addr, "384");
        assert!(!text(screen).is_empty(), "screen {i} has text");
    }
    assert_eq!(op(last), 17, "the last screen ends: {}", text(last));
    let info = session_info(last);
    assert_eq!(info.session_number, session);
    assert!(info.end_of_session);

    let (status, provider, answers) = stored(&run.gateway, "grievance", citizen).await;
    assert_eq!(status, ResponseStatus::Completed);
    assert_eq!(provider, "smpp");
    assert!(answers.len() >= 3, "answers stored: {answers:?}");
    assert_eq!(answers, expected_answers("grievance.yaml", script));

    // The network reuses the session number for a later dialogue: it is a new session.
    run.sim
        .inject_ussd(citizen, "384", "*384*12*3#", its(1, session, 0, false))
        .expect("inject second begin");
    let again = run.screen(screens.len() + 1).await;
    assert_eq!(op(&again), 2, "a fresh first screen: {}", text(&again));
    assert_eq!(text(&again), text(&screens[0]));
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sessions_and_bad_messages_are_answered_or_ignored_without_harm() {
    let run = start(Stores::MemorySqlite, STANDARD).await;
    let citizen = "254722000302";
    // An answer for a session never begun, on a short code that maps to no flow: the
    // dialogue is closed politely with the end op and bit, echoing the session number.
    run.sim
        .inject_ussd(citizen, "384", "1", its(18, 77, 4, false))
        .expect("inject stray answer");
    let closed = run.screen(1).await;
    assert_eq!(op(&closed), 17);
    let info = session_info(&closed);
    assert_eq!((info.session_number, info.end_of_session), (77, true));
    assert!(
        text(&closed).contains("not in use"),
        "unknown service message: {}",
        text(&closed)
    );

    // A session is begun as 5; an answer arrives as session 6 (mismatch): closed as above,
    // and session 5 goes on undisturbed.
    run.sim
        .inject_ussd(citizen, "384", "*384*12*3#", its(1, 5, 0, false))
        .expect("inject begin");
    let first = run.screen(2).await;
    assert_eq!(op(&first), 2);
    run.sim
        .inject_ussd(citizen, "384", "1", its(18, 6, 2, false))
        .expect("inject mismatched answer");
    let mismatch = run.screen(3).await;
    assert_eq!(op(&mismatch), 17);
    assert_eq!(session_info(&mismatch).session_number, 6);

    // Messages that cannot be read, a network abort of an unknown session, and an op the
    // profile does not know: acknowledged, no screen, the bind keeps working.
    let resps_before = run.sim.stats().deliver_sm_resps;
    let malformed = vec![
        Tlv::ussd_service_op(UssdServiceOp(18)),
        Tlv::new(baraza::smpp::tlv::tags::ITS_SESSION_INFO, vec![5u8]),
    ];
    run.sim
        .inject_ussd(citizen, "384", "1", malformed)
        .expect("inject malformed");
    run.sim
        .inject_ussd(citizen, "384", "", its(18, 99, 2, true))
        .expect("inject abort");
    run.sim
        .inject_ussd(citizen, "384", "1", its(0x81, 5, 2, false))
        .expect("inject unknown op");
    run.sim
        .wait_until(|s| s.deliver_sm_resps >= resps_before + 3)
        .await;

    run.sim
        .inject_ussd(citizen, "384", "1", its(18, 5, 2, false))
        .expect("inject answer");
    let next = run.screen(4).await;
    assert_eq!(op(&next), 2, "session 5 continues: {}", text(&next));
    assert_eq!(session_info(&next).session_number, 5);
    assert_eq!(
        run.sim.stats().ussd_submits.len(),
        4,
        "no screen for the bad ones"
    );
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vendor_profile_with_own_op_codes_and_user_message_reference() {
    let vendor = "  begin_ops: [32]\n  answer_ops: [18]\n  abort_ops: [129]\n  continue_op: 18\n  end_op: 23\n  session_id: user_message_reference\n  service_type: VUSSD\n";
    let run = start(Stores::MemorySqlite, vendor).await;
    let citizen = "254722000303";
    let umr = |op: u8, reference: u16| {
        vec![
            Tlv::ussd_service_op(UssdServiceOp(op)),
            Tlv::user_message_reference(reference),
        ]
    };
    let script = "1,2,4,2,00";
    let reference = 4242;
    run.sim
        .inject_ussd(citizen, "384", "*384*12*2#", umr(32, reference))
        .expect("inject begin");
    let mut screens = vec![run.screen(1).await];
    for (i, answer) in script.split(',').enumerate() {
        run.sim
            .inject_ussd(citizen, "384", answer, umr(18, reference))
            .expect("inject answer");
        screens.push(run.screen(i + 2).await);
    }
    let (last, shown) = screens.split_last().expect("screens");
    for screen in shown {
        assert_eq!(op(screen), 18, "vendor continue op: {}", text(screen));
        assert_eq!(screen.tlvs.user_message_reference(), Ok(Some(reference)));
        assert_eq!(screen.tlvs.its_session_info(), Ok(None));
        assert_eq!(screen.service_type, "VUSSD");
    }
    assert_eq!(op(last), 23, "vendor end op: {}", text(last));
    assert_eq!(last.tlvs.user_message_reference(), Ok(Some(reference)));
    let (status, _, answers) = stored(&run.gateway, "service_feedback", citizen).await;
    assert_eq!(status, ResponseStatus::Completed);
    assert_eq!(answers, expected_answers("service_feedback.yaml", script));

    // The standard begin op means nothing to this vendor: no screen.
    let resps_before = run.sim.stats().deliver_sm_resps;
    run.sim
        .inject_ussd(citizen, "384", "*384*12*2#", umr(1, 7))
        .expect("inject standard begin");
    run.sim
        .wait_until(|s| s.deliver_sm_resps > resps_before)
        .await;
    // A second dialogue aborted by the vendor's user-abort op: the dialogue is forgotten, so
    // a later answer on it is an unknown session and is closed with the vendor's end op.
    let count = screens.len();
    run.sim
        .inject_ussd(citizen, "384", "*384*12*2#", umr(32, 43))
        .expect("inject begin");
    assert_eq!(op(&run.screen(count + 1).await), 18);
    run.sim
        .inject_ussd(citizen, "384", "", umr(129, 43))
        .expect("inject abort");
    run.sim
        .inject_ussd(citizen, "384", "1", umr(18, 43))
        .expect("inject late answer");
    let late = run.screen(count + 2).await;
    assert_eq!(op(&late), 23);
    assert_eq!(late.tlvs.user_message_reference(), Ok(Some(43)));
    assert_eq!(run.sim.stats().ussd_submits.len(), count + 2);
    run.shutdown().await;
}

/// Waits (bounded) until `subscriber`'s response to `flow` has `status`: the abort that
/// drops it sends no screen to wait for.
async fn response_status(gateway: &Gateway, flow: &str, subscriber: &str, status: ResponseStatus) {
    let wait = async {
        loop {
            let rows = gateway.results.responses(flow).await.expect("responses");
            if rows
                .iter()
                .any(|r| r.subscriber == subscriber && r.status == status)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), wait)
        .await
        .unwrap_or_else(|_| panic!("{flow} response of {subscriber} never became {status:?}"));
}

/// One session store for both transports: a dialogue the network drops over SMPP is offered
/// for resumption when the citizen dials the same flow over USSD on HTTP (Africa's Talking).
async fn dropped_over_smpp_resumes_over_http(stores: Stores) {
    let run = start(stores, STANDARD).await;
    let phone = "+254733000555";
    run.sim
        .inject_ussd(phone, "384", "*999#", its(1, 9, 0, false))
        .expect("inject begin");
    let language = run.screen(1).await;
    assert!(
        text(&language).contains("Choose language"),
        "{}",
        text(&language)
    );
    run.sim
        .inject_ussd(phone, "384", "2", its(18, 9, 2, false))
        .expect("inject language");
    run.screen(2).await;
    run.sim
        .inject_ussd(phone, "384", "Nyeri", its(18, 9, 4, false))
        .expect("inject village");
    let priority = run.screen(3).await;
    assert!(text(&priority).contains("Nyeri"), "{}", text(&priority));
    // The network releases the dialogue (end-of-session bit): no screen, the session drops.
    run.sim
        .inject_ussd(phone, "384", "", its(18, 9, 6, true))
        .expect("inject release");
    response_status(&run.gateway, "e2e_survey", phone, ResponseStatus::Dropped).await;

    let http = common::TestGateway {
        app: baraza::server::router(
            baraza::server::AppState::new(
                Arc::clone(&run.gateway),
                baraza::telemetry::install_metrics(),
                None,
            )
            .expect("access rules parse"),
        )
        .layer(axum::extract::connect_info::MockConnectInfo(
            std::net::SocketAddr::from(([127, 0, 0, 1], 40000)),
        )),
        gateway: Arc::clone(&run.gateway),
        config: run.gateway.config.clone(),
        dir: tempfile::tempdir().expect("tempdir"),
        redis_prefix: None,
        pg_schema: None,
    };
    let offer = http.at("http-1", phone, "*999#", "").await;
    assert!(offer.starts_with("CON ") && offer.contains("1."), "{offer}");
    let resumed = http.at("http-1", phone, "*999#", "1").await;
    assert!(
        resumed.contains("Kaunti irekebishe nini kwanza Nyeri?"),
        "continues at priority: {resumed}"
    );
    assert_eq!(
        run.sim.stats().ussd_submits.len(),
        3,
        "nothing went out on the bind for the HTTP steps"
    );
    run.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_over_smpp_resumes_over_http_memory_sqlite() {
    dropped_over_smpp_resumes_over_http(Stores::MemorySqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_over_smpp_resumes_over_http_redis_postgres() {
    dropped_over_smpp_resumes_over_http(Stores::RedisPostgres).await;
}

/// A node of a two-node deployment: its own SMSC (simulator) and bind, the shared Redis and
/// PostgreSQL of `config`.
async fn node(config: &baraza::config::Config, name: &str) -> Running {
    let mut config = config.clone();
    config.smpp.node = Some(name.to_string());
    start_with(config, STANDARD).await
}

/// The dialogue's record lives in Redis, not in the node: a dialogue begun through one node's
/// bind continues when its answers arrive on another node's bind (an operator spreading one
/// USSD gateway connection over an SMSC cluster), and after that node is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialogue_begun_on_one_node_continues_on_another() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut config, redis_prefix, pg_schema) =
        common::config_for(Stores::RedisPostgres, dir.path());
    config.admission.burst = 100;
    let first = node(&config, "node-a").await;
    let second = node(&config, "node-b").await;
    let citizen = "254722000304";
    let session = 7;
    first
        .sim
        .inject_ussd(citizen, "384", "*384*12*3#", its(1, session, 0, false))
        .expect("inject begin");
    let opening = first.screen(1).await;
    assert_eq!(op(&opening), 2);
    // Node A goes away; the answer arrives through node B.
    first.shutdown().await;
    second
        .sim
        .inject_ussd(citizen, "384", "1", its(18, session, 2, false))
        .expect("inject answer");
    let next = second.screen(1).await;
    assert_eq!(op(&next), 2, "the dialogue continues: {}", text(&next));
    assert!(
        !text(&next).contains("not in use"),
        "not treated as an unknown session: {}",
        text(&next)
    );
    assert_ne!(
        text(&next),
        text(&opening),
        "the next question, not the first again"
    );
    assert_eq!(session_info(&next).session_number, session);
    let rows = second
        .gateway
        .results
        .responses("grievance")
        .await
        .expect("responses");
    assert_eq!(rows.len(), 1, "one response across both nodes: {rows:?}");
    let (_, _, answers) = stored(&second.gateway, "grievance", citizen).await;
    assert_eq!(answers, expected_answers("grievance.yaml", "1"));
    // The third screen, again on node B, follows the second.
    second
        .sim
        .inject_ussd(citizen, "384", "1", its(18, session, 4, false))
        .expect("inject answer");
    let third = second.screen(2).await;
    assert_eq!(op(&third), 2, "{}", text(&third));
    assert_ne!(text(&third), text(&next));
    let (_, _, answers) = stored(&second.gateway, "grievance", citizen).await;
    assert_eq!(answers, expected_answers("grievance.yaml", "1,1"));
    second.shutdown().await;
    if let Some(schema) = &pg_schema {
        common::drop_schema(schema).await;
    }
    if let Some(prefix) = &redis_prefix {
        common::delete_keys(prefix).await;
    }
}

/// A deliver_sm that comes twice (an SMSC's redelivery, a network duplicate: the same
/// `its_session_info` sequence) is one answer: the copy gets the same screen again and the
/// dialogue goes on as if it had come once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_duplicated_answer_counts_once() {
    let run = start(Stores::MemorySqlite, STANDARD).await;
    let citizen = "254722000309";
    let session = 77;
    let script = "1,1,Pipe burst near Kondele market,Opposite the bus stage";
    run.sim
        .inject_ussd(citizen, "384", "*384*12*3#", its(1, session, 0, false))
        .expect("inject begin");
    run.screen(1).await;
    let answers: Vec<&str> = script.split(',').collect();
    run.sim
        .inject_ussd(citizen, "384", answers[0], its(18, session, 2, false))
        .expect("inject answer");
    let second = run.screen(2).await;
    // The same message again.
    run.sim
        .inject_ussd(citizen, "384", answers[0], its(18, session, 2, false))
        .expect("inject duplicate");
    let repeated = run.screen(3).await;
    assert_eq!(text(&repeated), text(&second), "the same screen again");
    for (i, answer) in answers.iter().enumerate().skip(1) {
        let sequence = u8::try_from(2 * (i + 1)).expect("small");
        run.sim
            .inject_ussd(citizen, "384", answer, its(18, session, sequence, false))
            .expect("inject answer");
        run.screen(i + 3).await;
    }
    let (status, _, stored_answers) = stored(&run.gateway, "grievance", citizen).await;
    assert_eq!(status, ResponseStatus::Completed);
    assert_eq!(stored_answers, expected_answers("grievance.yaml", script));
    run.shutdown().await;
}
