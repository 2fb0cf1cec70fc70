//! `smpp-load`: load tests of the SMPP ESME (`baraza::smpp::esme`) against the in-process SMSC
//! simulator, all in one process on loopback TCP.
//!
//! Three measurements (issue 4):
//! - `throughput`: N short submit_sm through the ESME (window 10, then 100) with instant
//!   answers, against a minimal raw client measured in the same run (a bare `TcpStream` with
//!   `SmppCodec`, bind_transceiver, then submit_sm pipelined with the same window, responses
//!   matched by count), in alternating rounds. Reports the median submits/s of each and their
//!   ratio.
//! - `throttle`: the ESME's TPS limit at 10, 100 and 500 TPS for a duration. Every accepted
//!   submit is timestamped when its response reaches the client; reports the mean rate against
//!   the limit and the most submits in any 1-second window (sliding and fixed).
//! - `window`: simulator latency 20 ms, window 10: achieved submits/s against window/latency.
//!
//! Prints one JSON line per measurement, then a human summary. It never talks to a real SMSC
//! and is never used by the gateway itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The allocator of the `baraza` binary, so the ESME is measured as it runs in the gateway
/// (the raw client gets it too).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baraza::smpp::esme::{BindConfig, Esme, EsmeHandle, LinkState, SubmitOutcome, SubmitRequest};
use baraza::smpp::framing::{Frame, SmppCodec};
use baraza::smpp::smsc_sim::{SimConfig, SimHandle, spawn_smsc_sim};
use baraza::smpp::{Bind, Body, Pdu, ShortMessage};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Framed;

#[derive(Parser, Debug)]
#[command(about = "SMPP ESME load tests against the in-process SMSC simulator")]
struct Args {
    /// Which measurements to run.
    #[arg(long, value_enum, default_value = "all")]
    only: Only,
    /// Throughput: submits per measurement (after a warm-up of 1000 that is not counted).
    #[arg(long, default_value_t = 20_000)]
    submits: u64,
    /// Throughput: the windows to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    windows: Vec<usize>,
    /// Throughput: alternating raw/ESME rounds per window; medians are compared.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Throttle: the TPS limits to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10,100,500")]
    tps: Vec<u32>,
    /// Throttle: seconds per limit (the issue asks 60).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Window use: the simulator's submit latency in milliseconds.
    #[arg(long, default_value_t = 20)]
    latency_ms: u64,
    /// Window use: the ESME window.
    #[arg(long, default_value_t = 10)]
    window: usize,
    /// Window use: seconds to measure.
    #[arg(long, default_value_t = 10)]
    window_seconds: u64,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Only {
    All,
    Throughput,
    Throttle,
    Window,
}

/// The short text every submit carries (one part, GSM-7).
const TEXT: &str = "Asante! Your feedback was received. Ref 12345";
const FROM: &str = "20202";
const TO: &str = "254700000001";

/// Submits not counted before each throughput measurement.
const WARM_UP: u64 = 1000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut results = Vec::new();
    if matches!(args.only, Only::All | Only::Throughput) {
        for &window in &args.windows {
            let result = throughput(window, args.submits, args.rounds).await?;
            println!("{result}");
            results.push(result);
        }
    }
    if matches!(args.only, Only::All | Only::Throttle) {
        for &tps in &args.tps {
            let result = throttle(tps, Duration::from_secs(args.seconds)).await?;
            println!("{result}");
            results.push(result);
        }
    }
    if matches!(args.only, Only::All | Only::Window) {
        let result = window_use(
            args.window,
            Duration::from_millis(args.latency_ms),
            Duration::from_secs(args.window_seconds),
        )
        .await?;
        println!("{result}");
        results.push(result);
    }
    println!("== summary");
    for result in &results {
        println!("{}", summary_line(result));
    }
    Ok(())
}

/// A simulator on a free loopback port with receipts off.
async fn start_sim(
    submit_latency: Duration,
    record_messages: bool,
) -> anyhow::Result<(SimHandle, u16)> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the simulator to 127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let config = SimConfig {
        submit_latency,
        receipt_delay: None,
        throttle_every: None,
        record_messages,
        ..SimConfig::default()
    };
    Ok((spawn_smsc_sim(config, listener), port))
}

/// A bound ESME to the simulator on `port`.
async fn start_esme(port: u16, window: usize, tps: Option<u32>) -> anyhow::Result<EsmeHandle> {
    let config = BindConfig {
        window,
        tps,
        response_timeout: Duration::from_secs(10),
        ..BindConfig::new("127.0.0.1", port, "baraza", "secret")
    };
    let (esme, _inbound) = Esme::start(config);
    let bound = tokio::time::timeout(
        Duration::from_secs(10),
        esme.wait_for_link(|state| *state == LinkState::Bound),
    )
    .await;
    if bound.is_err() {
        bail!("the ESME did not bind within 10 s: {:?}", esme.link_state());
    }
    Ok(esme)
}

fn request() -> SubmitRequest {
    SubmitRequest {
        to: TO.to_string(),
        from: FROM.to_string(),
        text: TEXT.to_string(),
        registered_delivery: false,
        waited: std::time::Duration::ZERO,
    }
}

/// Submits through `esme` from `callers` concurrent tasks until `total` submits were started
/// or `deadline` passed; returns the completion instant of every accepted submit.
async fn drive_esme(
    esme: &EsmeHandle,
    callers: usize,
    total: u64,
    deadline: Option<Instant>,
) -> anyhow::Result<Vec<Instant>> {
    let started = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(callers);
    for _ in 0..callers {
        let esme = esme.clone();
        let started = Arc::clone(&started);
        tasks.push(tokio::spawn(async move {
            let mut accepted = Vec::new();
            let mut failures = 0u64;
            loop {
                if deadline.is_some_and(|deadline| Instant::now() >= deadline) {
                    break;
                }
                if started.fetch_add(1, Ordering::Relaxed) >= total {
                    break;
                }
                match esme.submit(request()).await {
                    Ok(outcomes)
                        if outcomes
                            .iter()
                            .all(|o| matches!(o, SubmitOutcome::Accepted { .. })) =>
                    {
                        accepted.push(Instant::now());
                    }
                    _ => failures += 1,
                }
            }
            (accepted, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for task in tasks {
        let (accepted, failed) = task.await.context("a submitting task panicked")?;
        all.extend(accepted);
        failures += failed;
    }
    if failures > 0 {
        bail!("{failures} submits were not accepted");
    }
    all.sort();
    Ok(all)
}

/// The raw baseline: bind_transceiver on a bare framed socket, then `total` submit_sm with at
/// most `window` outstanding, each written (and flushed) on its own as the ESME does; responses
/// are counted, not matched by sequence. Returns the seconds the submits took.
async fn raw_submits(port: u16, window: usize, total: u64) -> anyhow::Result<f64> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let mut link = Framed::new(stream, SmppCodec::default());
    let bind = Bind {
        system_id: "baraza".into(),
        password: "secret".into(),
        interface_version: 0x34,
        ..Bind::default()
    };
    link.send(Pdu::new(1, Body::BindTransceiver(bind))).await?;
    match link.next().await {
        Some(Ok(Frame::Pdu(pdu))) if pdu.status.is_ok() => {}
        other => bail!("raw bind failed: {other:?}"),
    }
    let sm = ShortMessage {
        source_addr: FROM.into(),
        destination_addr: TO.into(),
        short_message: Bytes::from_static(TEXT.as_bytes()),
        ..ShortMessage::default()
    };
    let mut sequence = 1u32;
    let mut run = async |count: u64| -> anyhow::Result<()> {
        let (mut sent, mut answered) = (0u64, 0u64);
        while answered < count {
            while sent < count && sent - answered < window as u64 {
                sequence += 1;
                link.send(Pdu::new(sequence, Body::SubmitSm(sm.clone())))
                    .await?;
                sent += 1;
            }
            match link.next().await {
                Some(Ok(Frame::Pdu(pdu))) if matches!(pdu.body, Body::SubmitSmResp(_)) => {
                    if !pdu.status.is_ok() {
                        bail!("raw submit answered {}", pdu.status);
                    }
                    answered += 1;
                }
                Some(Ok(other)) => bail!("raw client got an unexpected frame: {other:?}"),
                Some(Err(error)) => return Err(error.into()),
                None => bail!("the simulator closed the raw connection"),
            }
        }
        Ok(())
    };
    run(WARM_UP).await?;
    let start = Instant::now();
    run(total).await?;
    Ok(start.elapsed().as_secs_f64())
}

/// Measurement 1: ESME and raw client submits/s with the same window, instant answers, in
/// `rounds` alternating rounds (raw, then ESME) so machine noise hits both alike; the medians
/// are compared.
async fn throughput(window: usize, total: u64, rounds: usize) -> anyhow::Result<Value> {
    let (sim, port) = start_sim(Duration::ZERO, false).await?;
    let esme = start_esme(port, window, None).await?;
    // Twice as many callers as window slots, so the window never waits for a caller.
    let callers = window * 2;
    drive_esme(&esme, callers, WARM_UP, None).await?;
    let mut raw_rates = Vec::with_capacity(rounds);
    let mut esme_rates = Vec::with_capacity(rounds);
    for _ in 0..rounds.max(1) {
        let raw_seconds = raw_submits(port, window, total).await?;
        raw_rates.push(total as f64 / raw_seconds);
        let start = Instant::now();
        let accepted = drive_esme(&esme, callers, total, None).await?;
        esme_rates.push(accepted.len() as f64 / start.elapsed().as_secs_f64());
    }
    esme.unbind().await;
    sim.shutdown();
    let raw_rate = median(&mut raw_rates);
    let esme_rate = median(&mut esme_rates);
    let rounded = |rates: &[f64]| rates.iter().map(|r| r.round()).collect::<Vec<f64>>();
    Ok(json!({
        "test": "throughput",
        "window": window,
        "submits": total,
        "rounds": raw_rates.len(),
        "esme_submits_per_s": round1(esme_rate),
        "raw_submits_per_s": round1(raw_rate),
        "esme_rounds": rounded(&esme_rates),
        "raw_rounds": rounded(&raw_rates),
        "ratio": round3(esme_rate / raw_rate),
        "target_ratio": 0.8,
        "met": esme_rate / raw_rate >= 0.8,
    }))
}

/// The median (the values get sorted).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// Measurement 2: how closely the ESME keeps to `tps` over `duration`.
async fn throttle(tps: u32, duration: Duration) -> anyhow::Result<Value> {
    let (sim, port) = start_sim(Duration::ZERO, true).await?;
    let window = 10;
    let esme = start_esme(port, window, Some(tps)).await?;
    let deadline = Instant::now() + duration;
    let times = drive_esme(&esme, window * 2, u64::MAX, Some(deadline)).await?;
    let waits = esme.counters().tps_waits;
    esme.unbind().await;
    // What the operator sees: the arrival of each submit_sm at the SMSC.
    let mut arrivals: Vec<Instant> = sim
        .stats()
        .accepted_parts
        .iter()
        .map(|part| part.received_at)
        .collect();
    arrivals.sort();
    sim.shutdown();
    let smsc = rate_figures(&arrivals, tps)?;
    let caller = rate_figures(&times, tps)?;
    Ok(json!({
        "test": "throttle",
        "tps_limit": tps,
        "seconds": duration.as_secs(),
        "accepted": times.len(),
        "mean_rate": smsc["mean_rate"],
        "deviation_pct": smsc["deviation_pct"],
        "max_in_any_1s_sliding": smsc["max_in_any_1s_sliding"],
        "max_in_fixed_1s_buckets": smsc["max_in_fixed_1s_buckets"],
        "min_gap_ms": smsc["min_gap_ms"],
        "met_mean": smsc["met_mean"],
        "met_max": smsc["met_max"],
        // The same figures from the answers' arrival at the callers (adds the response
        // path's scheduling jitter, which the operator never sees).
        "at_caller": caller,
        "tps_waits": waits,
    }))
}

/// Mean rate, deviation from `tps`, the most in any 1-second window (sliding and fixed) and
/// the smallest gap of sorted timestamps.
fn rate_figures(times: &[Instant], tps: u32) -> anyhow::Result<Value> {
    let (Some(first), Some(last)) = (times.first(), times.last()) else {
        bail!("no submit completed at {tps} TPS");
    };
    let span = last.duration_since(*first).as_secs_f64();
    // n events span n - 1 intervals.
    let mean_rate = if span > 0.0 {
        (times.len() - 1) as f64 / span
    } else {
        0.0
    };
    let deviation = mean_rate / f64::from(tps) - 1.0;
    let sliding = max_in_sliding_second(times);
    let fixed = max_in_fixed_seconds(times);
    let min_gap_ms = times
        .windows(2)
        .map(|pair| pair[1].duration_since(pair[0]).as_secs_f64() * 1000.0)
        .fold(f64::INFINITY, f64::min);
    Ok(json!({
        "mean_rate": round2(mean_rate),
        "deviation_pct": round2(deviation * 100.0),
        "max_in_any_1s_sliding": sliding,
        "max_in_fixed_1s_buckets": fixed,
        "min_gap_ms": round3(min_gap_ms),
        "met_mean": deviation.abs() <= 0.02,
        "met_max": sliding <= u64::from(tps) + 1,
    }))
}

/// The most timestamps (sorted) in any half-open window [t, t + 1 s) starting at one of them.
fn max_in_sliding_second(times: &[Instant]) -> u64 {
    let second = Duration::from_secs(1);
    let mut best = 0;
    let mut end = 0;
    for (start, &t) in times.iter().enumerate() {
        while end < times.len() && times[end].duration_since(t) < second {
            end += 1;
        }
        best = best.max(end - start);
    }
    best as u64
}

/// The most timestamps (sorted) in one of the 1-second buckets counted from the first one.
fn max_in_fixed_seconds(times: &[Instant]) -> u64 {
    let Some(&first) = times.first() else {
        return 0;
    };
    let mut counts: Vec<u64> = Vec::new();
    for t in times {
        let bucket = t.duration_since(first).as_secs() as usize;
        if counts.len() <= bucket {
            counts.resize(bucket + 1, 0);
        }
        counts[bucket] += 1;
    }
    counts.into_iter().max().unwrap_or(0)
}

/// Measurement 3: submits/s with `window` outstanding and `latency` per answer.
async fn window_use(window: usize, latency: Duration, duration: Duration) -> anyhow::Result<Value> {
    let (sim, port) = start_sim(latency, false).await?;
    let esme = start_esme(port, window, None).await?;
    let callers = window * 2;
    let start = Instant::now();
    let times = drive_esme(&esme, callers, u64::MAX, Some(start + duration)).await?;
    let elapsed = start.elapsed().as_secs_f64();
    esme.unbind().await;
    sim.shutdown();
    let achieved = times.len() as f64 / elapsed;
    let ideal = window as f64 / latency.as_secs_f64();
    Ok(json!({
        "test": "window",
        "window": window,
        "latency_ms": latency.as_millis() as u64,
        "seconds": duration.as_secs(),
        "accepted": times.len(),
        "achieved_per_s": round1(achieved),
        "ideal_per_s": round1(ideal),
        "fraction": round3(achieved / ideal),
        "met": achieved / ideal >= 0.9,
    }))
}

fn summary_line(result: &Value) -> String {
    let verdict = |met: &Value| {
        if met.as_bool() == Some(true) {
            "MET"
        } else {
            "NOT MET"
        }
    };
    match result["test"].as_str() {
        Some("throughput") => format!(
            "throughput, window {} (median of {} rounds): ESME {} submits/s, raw {} submits/s, ratio {} (target >= 0.8: {})",
            result["window"],
            result["rounds"],
            result["esme_submits_per_s"],
            result["raw_submits_per_s"],
            result["ratio"],
            verdict(&result["met"]),
        ),
        Some("throttle") => format!(
            "throttle {} TPS over {} s, at the SMSC: mean {}/s ({}%, target +-2%: {}), max in any 1 s {} (fixed buckets {}; target <= {}: {}); at the callers: mean {}/s, max in any 1 s {}",
            result["tps_limit"],
            result["seconds"],
            result["mean_rate"],
            result["deviation_pct"],
            verdict(&result["met_mean"]),
            result["max_in_any_1s_sliding"],
            result["max_in_fixed_1s_buckets"],
            result["tps_limit"].as_u64().unwrap_or(0) + 1,
            verdict(&result["met_max"]),
            result["at_caller"]["mean_rate"],
            result["at_caller"]["max_in_any_1s_sliding"],
        ),
        Some("window") => format!(
            "window {} at {} ms latency: {} submits/s of ideal {} ({}; target >= 0.9: {})",
            result["window"],
            result["latency_ms"],
            result["achieved_per_s"],
            result["ideal_per_s"],
            result["fraction"],
            verdict(&result["met"]),
        ),
        _ => result.to_string(),
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
