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
