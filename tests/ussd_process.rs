//! The real `baraza` binary: `serve` with Redis sessions, a restart mid-session (the session
//! continues from Redis on the new process), graceful shutdown, and `results export`.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_baraza");
const PHONE: &str = "+254766000123";

struct Server {
    child: Child,
    addr: SocketAddr,
}

/// Starts `baraza serve` and waits for its "listening" line (a readiness signal, not a sleep).
fn serve(config: &Path) -> Server {
    serve_with(config, &[])
}

/// [`serve`] with more arguments (`--listen ...`).
fn serve_with(config: &Path, args: &[&str]) -> Server {
    serve_with_env(config, args, None)
}

/// [`serve_with`], with `BARAZA_ADMIN_TOKEN` set to `admin_token` (unset when `None`).
fn serve_with_env(config: &Path, args: &[&str], admin_token: Option<&str>) -> Server {
    let mut command = Command::new(BIN);
    command.env_remove("BARAZA_ADMIN_TOKEN");
    if let Some(token) = admin_token {
        command.env("BARAZA_ADMIN_TOKEN", token);
    }
    let mut child = command
        .args(["serve", "--config"])
        .arg(config)
        .args(args)
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("baraza starts");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = match lines.next() {
            Some(Ok(line)) => line,
            other => panic!("baraza exited before listening: {other:?}"),
        };
        if let Some(at) = line.find("listening on http://") {
            let rest = &line[at + "listening on http://".len()..];
            let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
            break addr.parse::<SocketAddr>().expect("listen address");
        }
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines.by_ref() {});
    Server { child, addr }
}

impl Server {
    fn at(&self, session: &str, text: &str) -> String {
        let body = common::form(&[
            ("sessionId", session),
            ("serviceCode", "*999#"),
            ("phoneNumber", PHONE),
            ("networkCode", "63902"),
            ("text", text),
        ]);
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        write!(
            stream,
            "POST /ussd/africastalking HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.addr,
            body.len()
        )
        .expect("write head");
        stream.write_all(&body).expect("write body");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        assert!(response.starts_with("HTTP/1.1 200"), "{response}");
        response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .expect("body")
    }

    fn get(&self, path: &str) -> String {
        let mut stream = TcpStream::connect(self.addr).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            self.addr
        )
        .expect("write");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("read");
        response
    }

    /// SIGTERM, then the process must exit on its own, successfully (graceful shutdown).
    fn stop(mut self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let exit = self.child.wait().expect("wait");
        assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
    }
}

#[tokio::test]
async fn a_session_survives_a_gateway_restart_and_answers_export() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = common::flows_folder(dir.path());
    let prefix = common::unique("proc");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nflows_dir: {}\nsessions:\n  store: redis\n  url: {}\n  key_prefix: {prefix}\nresults:\n  store: sqlite\n  path: data/results.sqlite3\npseudonym_secret: process-test-secret-0123\nussd:\n  service_codes:\n    - {{ code: \"*999#\", flow: e2e_survey }}\n",
            flows.display(),
            common::redis_url()
        ),
    )
    .expect("config");

    let first = serve(&config);
    assert!(first.at("p-1", "").starts_with("CON Choose language"));
    assert!(first.at("p-1", "1").starts_with("CON Which village"));
    first.stop();

    // A new process: the session is in Redis, so the citizen goes on where they were.
    let second = serve(&config);
    let reply = second.at("p-1", "1*Nairobi");
    assert!(
        reply.contains("What should the county fix first in Nairobi?"),
        "{reply}"
    );
    assert!(
        second
            .at("p-1", "1*Nairobi*2")
            .starts_with("CON How satisfied")
    );
    assert!(
        second
            .at("p-1", "1*Nairobi*2*5")
            .starts_with("END Thank you")
    );

    // SIGHUP reloads the flows without a restart: a new version is picked up for new sessions.
    let path = flows.join("e2e_survey.yaml");
    let original = std::fs::read_to_string(&path).expect("read");
    std::fs::write(
        &path,
        original.replace("version: 1", "version: 2").replace(
            "Which village do you live in?",
            "Which village is your home?",
        ),
    )
    .expect("write");
    let status = Command::new("kill")
        .args(["-HUP", &second.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    // Wait for the reload to be visible (a condition, bounded), not for a fixed time.
    let mut reloaded = false;
    for _ in 0..500 {
        if second.get("/healthz").contains("e2e_survey@2") {
            reloaded = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert!(reloaded, "SIGHUP reloaded the flows");
    assert!(second.at("p-2", "").starts_with("CON Choose language"));
    assert!(
        second
            .at("p-2", "1")
            .starts_with("CON Which village is your home?")
    );
    second.stop();

    let out = dir.path().join("export.csv");
    let status = Command::new(BIN)
        .args(["results", "export", "--flow", "e2e_survey", "--config"])
        .arg(&config)
        .arg("--out")
        .arg(&out)
        .status()
        .expect("export runs");
    assert!(status.success());
    let csv = std::fs::read_to_string(&out).expect("csv");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(
        lines.len(),
        3,
        "header, the finished response, the new one: {csv}"
    );
    assert!(
        lines[0].contains("village")
            && lines[0].contains("priority")
            && lines[0].contains("rating"),
        "{csv}"
    );
    assert!(
        lines[1].contains("Nairobi")
            && lines[1].contains("health")
            && lines[1].contains("completed"),
        "{csv}"
    );
    assert!(!csv.contains(PHONE), "number pseudonymised: {csv}");

    let raw = Command::new(BIN)
        .args([
            "results",
            "export",
            "--flow",
            "e2e_survey",
            "--raw-numbers",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("export runs");
    assert!(raw.status.success());
    assert!(String::from_utf8_lossy(&raw.stdout).contains(PHONE));

    let unknown = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(dir.path().join("missing.yaml"))
        .output()
        .expect("runs");
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("missing.yaml"));
    common::delete_keys(&prefix).await;
}

/// A config with in-process sessions and SQLite under `dir`, serving the example flows.
fn embedded_config(dir: &Path, extra: &str) -> std::path::PathBuf {
    let flows = common::flows_folder(dir);
    let config = dir.join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "flows_dir: {}\nresults:\n  store: sqlite\n  path: data/results.sqlite3\npseudonym_secret: process-test-secret-0123\n{extra}",
            flows.display()
        ),
    )
    .expect("config");
    config
}

fn post_form(addr: SocketAddr, path: &str, body: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .expect("write head");
    stream.write_all(body).expect("write body");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// With no `voice.public_url`, voice replies send the provider back to the address the
/// gateway listens on (here a port the system picked), not to a fixed default.
#[test]
fn voice_callbacks_follow_the_listen_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = embedded_config(dir.path(), "");
    let server = serve_with(&config, &["--listen", "127.0.0.1:0"]);
    assert_ne!(server.addr.port(), 8080);
    let call = |extra: &[(&str, &str)]| {
        let mut fields = vec![
            ("sessionId", "ATVId_listen"),
            ("isActive", "1"),
            ("direction", "Inbound"),
            ("callerNumber", "+254711000401"),
            ("destinationNumber", "+254205000000"),
        ];
        fields.extend_from_slice(extra);
        post_form(server.addr, "/voice/africastalking", &common::form(&fields))
    };
    let first = call(&[]);
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    let expected = format!("callbackUrl=\"http://{}/voice/africastalking", server.addr);
    assert!(first.contains(&expected), "{first}");
    // The provider follows that URL with the caller's key: the call goes on.
    let second = call(&[("dtmfDigits", "1")]);
    assert!(second.starts_with("HTTP/1.1 200"), "{second}");
    assert!(
        second.contains(&expected),
        "the next prompt points back here too: {second}"
    );
    server.stop();
}

/// Listening where other hosts can reach it, the gateway needs an admin token: it refuses to
/// start without one and says how to fix it.
#[test]
fn a_reachable_gateway_without_an_admin_token_does_not_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = embedded_config(dir.path(), "");
    let refused = Command::new(BIN)
        .args(["serve", "--listen", "0.0.0.0:0", "--config"])
        .arg(&config)
        .env_remove("BARAZA_ADMIN_TOKEN")
        .output()
        .expect("runs");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("admin token") && stderr.contains("BARAZA_ADMIN_TOKEN"),
        "{stderr}"
    );
    // With a token it starts, answers, and stops cleanly.
    let server = serve_with_env(
        &config,
        &["--listen", "0.0.0.0:0"],
        Some("process-admin-token"),
    );
    assert!(server.get("/healthz").contains("\"status\":\"ok\""));
    server.stop();
}

/// Two gateway processes on one Redis and one PostgreSQL schema; one is killed (SIGKILL, no
/// goodbye) in the middle of a session, and the citizen's next step, sent to the other node,
/// carries on where they were: every answer shown as saved is in the store.
#[tokio::test]
async fn a_node_killed_mid_session_loses_nothing_the_other_node_carries_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let flows = common::flows_folder(dir.path());
    let prefix = common::unique("kill");
    let schema = common::unique("kill");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nflows_dir: {}\nsessions:\n  store: redis\n  url: {}\n  key_prefix: {prefix}\nresults:\n  store: postgres\n  url: {}\n  schema: {schema}\npseudonym_secret: process-test-secret-0123\nussd:\n  service_codes:\n    - {{ code: \"*999#\", flow: e2e_survey }}\n",
            flows.display(),
            common::redis_url(),
            common::postgres_url(),
        ),
    )
    .expect("config");
    let first = serve(&config);
    let second = serve(&config);
    assert!(first.at("k-1", "").starts_with("CON Choose language"));
    assert!(first.at("k-1", "1").starts_with("CON Which village"));
    assert!(
        first
            .at("k-1", "1*Kisumu")
            .contains("What should the county fix first")
    );
    // No graceful shutdown: the process dies as a crash would end it.
    let Server { mut child, .. } = first;
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    let reply = second.at("k-1", "1*Kisumu*2");
    assert!(
        reply.starts_with("CON ") || reply.starts_with("END "),
        "{reply}"
    );
    assert!(
        !reply.contains("busy"),
        "the other node carries on: {reply}"
    );
    second.stop();

    // Every answer the citizen saw acknowledged is stored, once.
    let (client, connection) =
        tokio_postgres::connect(&common::postgres_url(), tokio_postgres::NoTls)
            .await
            .expect("postgres");
    tokio::spawn(connection);
    let rows = client
        .query(
            &format!("SELECT result, value FROM \"{schema}\".answers ORDER BY step"),
            &[],
        )
        .await
        .expect("answers");
    let answers: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    let results: Vec<&str> = answers.iter().map(|(r, _)| r.as_str()).collect();
    assert!(
        results.contains(&"village") && results.contains(&"priority"),
        "answers before and after the kill: {answers:?}"
    );
    assert!(answers.iter().any(|(r, v)| r == "village" && v == "Kisumu"));
    common::drop_schema(&schema).await;
    common::delete_keys(&prefix).await;
}
