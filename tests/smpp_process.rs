//! The real binary over SMPP: `baraza smsc-sim` accepts a bind, and `baraza send` submits a
//! long message through it and prints each part's id and its delivery receipt.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_baraza");

#[test]
fn send_through_the_smsc_simulator_prints_the_receipts() {
    let mut sim = Command::new(BIN)
        .args([
            "smsc-sim",
            "--listen",
            "127.0.0.1:0",
            "--system-id",
            "county",
            "--password",
            "pw",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("smsc-sim starts");
    let stderr = sim.stderr.take().expect("stderr");
    let mut lines = BufReader::new(stderr).lines();
    // The readiness line carries the real port.
    let port: u16 = loop {
        let line = lines
            .next()
            .expect("smsc-sim printed its address")
            .expect("stderr line");
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest
                .trim()
                .rsplit(':')
                .next()
                .and_then(|p| p.parse().ok())
                .expect("port");
        }
    };
    std::thread::spawn(move || for _ in lines.by_ref() {});

    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "smpp:\n  operators:\n    - name: sim\n      host: 127.0.0.1\n      port: {port}\n      system_id: county\n      password: pw\n      sender: COUNTY\n"
        ),
    )
    .expect("config");
    let text = "Asante! Your complaint Y8PV-N7X9 is registered; the county replies within 7 days. \
                Maoni yako ni muhimu. This text is long enough to need two parts: more than \
                160 characters of the GSM alphabet, so the ESME splits it with a UDH.";
    let sent = Command::new(BIN)
        .args([
            "send",
            "--operator",
            "sim",
            "--to",
            "+254711000001",
            "--wait",
            "20",
            "--text",
            text,
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("send runs");
    let out = String::from_utf8_lossy(&sent.stdout);
    assert!(
        sent.status.success(),
        "{out}\n{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    assert_eq!(out.matches("Accepted").count(), 2, "two parts: {out}");
    assert_eq!(
        out.matches(": Delivered").count(),
        2,
        "a receipt per part: {out}"
    );

    let wrong = Command::new(BIN)
        .args([
            "send",
            "--operator",
            "other",
            "--to",
            "+254711000001",
            "--text",
            "x",
            "--config",
        ])
        .arg(&config)
        .output()
        .expect("send runs");
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("no operator `other`"));

    let _ = sim.kill();
    let _ = sim.wait();
}

/// A tiny HTTP/1.1 client for the simulator's control endpoint.
fn http(addr: &str, method: &str, path: &str, form: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{form}",
        form.len()
    )
    .expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read");
    response
}

/// Polls `path` until `condition` holds on its body (a readiness condition, bounded).
fn wait_for(addr: &str, path: &str, condition: impl Fn(&str) -> bool) -> String {
    for _ in 0..1000 {
        let body = http(addr, "GET", path, "");
        if condition(&body) {
            return body;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    panic!("{path} never satisfied the condition");
}

#[test]
fn a_two_way_sms_survey_between_the_real_binaries_with_redis_sessions() {
    let mut sim = Command::new(BIN)
        .args([
            "smsc-sim",
            "--listen",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
        ])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("smsc-sim starts");
    let mut lines = BufReader::new(sim.stderr.take().expect("stderr")).lines();
    let (mut smpp, mut control) = (None, None);
    while smpp.is_none() || control.is_none() {
        let line = lines.next().expect("a readiness line").expect("stderr");
        if let Some(rest) = line.split("smsc-sim listening on ").nth(1) {
            smpp = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.split("control endpoint on http://").nth(1) {
            control = Some(rest.trim().to_string());
        }
    }
    std::thread::spawn(move || for _ in lines.by_ref() {});
    let (smpp, control) = (smpp.expect("smpp"), control.expect("control"));
    let port = smpp.rsplit(':').next().expect("port");

    let dir = tempfile::tempdir().expect("tempdir");
    let prefix = format!("smppproc{}", std::process::id());
    let redis =
        std::env::var("BARAZA_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let config = dir.path().join("gateway.yaml");
    std::fs::write(
        &config,
        format!(
            "listen: 127.0.0.1:0\nflows_dir: {flows}\nsessions:\n  store: redis\n  url: {redis}\n  key_prefix: {prefix}\nresults:\n  store: sqlite\n  path: data/results.sqlite3\npseudonym_secret: smpp-process-secret-0123\nsmpp:\n  operators:\n    - {{ name: sim, host: 127.0.0.1, port: {port}, system_id: baraza, password: secret, sender: \"20880\" }}\n",
            flows = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("flows").display(),
        ),
    )
    .expect("config");
    let mut gateway = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .expect("serve starts");

    wait_for(&control, "/stats", |b| b.contains("\"binds\":1"));
    let citizen = "254711000042";
    let say = |text: &str| {
        http(
            &control,
            "POST",
            "/mo",
            &format!("from={citizen}&to=20880&text={text}"),
        );
    };
    say("SURVEY");
    wait_for(&control, "/messages", |b| b.contains("Choose language"));
    say("2");
    let body = wait_for(&control, "/messages", |b| {
        b.matches("\"to\":\"254711000042\"").count() >= 2
    });
    assert!(
        body.contains("Kaunti") || body.contains("kaunti"),
        "Swahili after choosing it: {body}"
    );
    say("STOP");
    let body = wait_for(&control, "/messages", |b| {
        b.contains("Tuma ANZA") || b.contains("Send START")
    });
    assert!(body.contains("\"from\":\"20880\""), "{body}");

    let _ = gateway.kill();
    let _ = gateway.wait();
    let _ = sim.kill();
    let _ = sim.wait();
    if let Ok(client) = redis::Client::open(redis.as_str())
        && let Ok(mut connection) = client.get_connection()
    {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}:*"))
            .query(&mut connection)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(keys).query(&mut connection);
        }
    }
}
