//! `baraza serve` opens the configured operator binds beside the HTTP server, counts what
//! arrives on them, and unbinds on shutdown.

use std::sync::Arc;

use baraza::config::{Config, OperatorConfig, ResultsConfig};
use baraza::smpp::smsc_sim::{SimConfig, spawn_smsc_sim};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_binds_to_each_operator_and_unbinds_on_shutdown() {
    let sim_listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = sim_listener.local_addr().expect("addr").port();
    let sim = spawn_smsc_sim(SimConfig::default(), sim_listener);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = Config::embedded();
    config.flows_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows");
    config.results = ResultsConfig::Sqlite {
        path: dir.path().join("results.sqlite3"),
    };
    config.pseudonym_secret = Some("test".into());
    let operator: OperatorConfig = serde_saphyr::from_str(&format!(
        "name: sim\nhost: 127.0.0.1\nport: {port}\nsystem_id: baraza\npassword: secret\n"
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
    let server = tokio::spawn(baraza::server::serve(gateway, listener, async move {
        let _ = stopped.await;
    }));

    let bound = sim.wait_until(|s| s.binds >= 1).await;
    assert_eq!(bound.bind_failures, 0);
    // A mobile-originated message reaches the bind and is answered (deliver_sm_resp).
    sim.inject_mo("+254711000001", "20880", "AFYA")
        .expect("inject");
    sim.wait_until(|s| s.deliver_sm_resps >= 1).await;

    stop.send(()).expect("stop");
    server
        .await
        .expect("serve task")
        .expect("serve ends cleanly");
    let after = sim.wait_until(|s| s.unbinds_received >= 1).await;
    assert_eq!(after.unbinds_received, 1, "one unbind on shutdown");
}
