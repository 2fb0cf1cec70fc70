//! `ussd-load`: many simulated citizens walking a flow over the Africa's Talking endpoint.
//!
//! Closed loop (`--mode closed`): each citizen sends its next step as soon as the previous
//! answer arrives: the most steps per second the target can do. Open loop (`--mode open
//! --rate R`): steps are sent on a fixed schedule, R per second in all, whatever the target
//! does; latency is measured from the scheduled send time, so a slow target cannot hide its
//! queueing (no coordinated omission). Prints steps/s and p50/p99/p99.9 latency as one JSON
//! line. The same generator loads the baseline server (`ussd-baseline`), so both are measured
//! in the same way in the same run. Never used by the gateway itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};

#[path = "at_client.rs"]
mod at_client;
use at_client::{connect, form_encode, step};

#[derive(Parser, Debug)]
#[command(about = "USSD load generator (Africa's Talking callbacks)")]
struct Args {
    /// host:port of the gateway (or the baseline server).
    #[arg(long, default_value = "127.0.0.1:8080")]
    target: String,
    /// Concurrent simulated citizens (one keep-alive connection each).
    #[arg(long, default_value_t = 64)]
    citizens: usize,
    /// Seconds to measure (after a 1 s warm-up that is not counted).
    #[arg(long, default_value_t = 10)]
    duration: u64,
    #[arg(long, value_enum, default_value = "closed")]
    mode: Mode,
    /// Open loop: steps per second, all citizens together.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// The code dialled.
    #[arg(long, default_value = "*384*12*3#")]
    service_code: String,
    /// Answers after the dial, comma-separated; a session ends after the last one.
    #[arg(
        long,
        default_value = "1,1,Water point broken for two weeks,Near the market"
    )]
    script: String,
    /// Instead of a timed run: open this many sessions (dial + first answer) and leave them
    /// live, to measure memory per live session.
    #[arg(long)]
    open_sessions: Option<u64>,
    /// Label printed in the result line.
    #[arg(long, default_value = "gateway")]
    label: String,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq)]
enum Mode {
    Closed,
    Open,
}

struct Shared {
    args: Args,
    inputs: Vec<String>,
    measuring: AtomicBool,
    stop: AtomicBool,
    errors: AtomicU64,
    ended_sessions: AtomicU64,
    run_id: u64,
}

/// One simulated citizen: dials, answers the script, dials again with a new session.
async fn citizen(shared: Arc<Shared>, index: usize) -> Vec<u32> {
    let mut latencies = Vec::with_capacity(1 << 14);
    let mut sender = match connect(&shared.args.target).await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("citizen {index}: {e:#}");
            shared.errors.fetch_add(1, Ordering::Relaxed);
            return latencies;
        }
    };
    let phone = format!("+2547{:08}", index);
    let code = form_encode(&shared.args.service_code);
    let period = match shared.args.mode {
        Mode::Open => Some(Duration::from_secs_f64(
            shared.args.citizens as f64 / shared.args.rate.max(1) as f64,
        )),
        Mode::Closed => None,
    };
    // Spread the citizens' schedules over one period so the open-loop rate is smooth.
    let mut next_send = Instant::now()
        + period.map_or(Duration::ZERO, |p| {
            p.mul_f64(index as f64 / shared.args.citizens as f64)
        });
    let mut session_number = 0u64;
    'sessions: while !shared.stop.load(Ordering::Relaxed) {
        session_number += 1;
        let session = format!("load-{}-{index}-{session_number}", shared.run_id);
        let mut text = String::new();
        for position in 0..=shared.inputs.len() {
            if position > 0 {
                if position > 1 {
                    text.push('*');
                }
                text.push_str(&shared.inputs[position - 1]);
            }
            let scheduled = match period {
                Some(p) => {
                    tokio::time::sleep_until(next_send.into()).await;
                    let s = next_send;
                    next_send += p;
                    s
                }
                None => Instant::now(),
            };
            if shared.stop.load(Ordering::Relaxed) {
                break 'sessions;
            }
            let body = format!(
                "sessionId={session}&serviceCode={code}&phoneNumber={}&networkCode=63902&text={}",
                form_encode(&phone),
                form_encode(&text)
            );
            match step(&mut sender, &shared.args.target, body).await {
                Ok(reply) => {
                    if shared.measuring.load(Ordering::Relaxed) {
                        let micros = scheduled.elapsed().as_micros();
                        latencies.push(u32::try_from(micros).unwrap_or(u32::MAX));
                    }
                    if reply.starts_with("END") {
                        shared.ended_sessions.fetch_add(1, Ordering::Relaxed);
                        continue 'sessions;
                    }
                }
                Err(e) => {
                    shared.errors.fetch_add(1, Ordering::Relaxed);
                    if shared.errors.load(Ordering::Relaxed) < 5 {
                        eprintln!("citizen {index}: {e:#}");
                    }
                    match connect(&shared.args.target).await {
                        Ok(s) => sender = s,
                        Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                    }
                    continue 'sessions;
                }
            }
        }
    }
    latencies
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1] as f64 / 1000.0
}

/// Opens `total` sessions and leaves them live (no END): for memory per session.
async fn open_sessions(args: &Args, total: u64, run_id: u64) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..args.citizens {
        let next = Arc::clone(&next);
        let target = args.target.clone();
        let code = form_encode(&args.service_code);
        let first = form_encode(args.script.split(',').next().unwrap_or("1"));
        tasks.spawn(async move {
            let mut sender = connect(&target).await?;
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= total {
                    return anyhow::Ok(());
                }
                let common = format!("sessionId=live-{run_id}-{n}&serviceCode={code}&phoneNumber=%2B2548{n:08}&networkCode=63902");
                step(&mut sender, &target, format!("{common}&text=")).await?;
                step(&mut sender, &target, format!("{common}&text={first}")).await?;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    println!("{{\"open_sessions\":{total}}}");
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let inputs: Vec<String> = args.script.split(',').map(str::to_string).collect();
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    if let Some(total) = args.open_sessions {
        return open_sessions(&args, total, run_id).await;
    }
    let shared = Arc::new(Shared {
        args,
        inputs,
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        errors: AtomicU64::new(0),
        ended_sessions: AtomicU64::new(0),
        run_id,
    });
    let mut tasks = tokio::task::JoinSet::new();
    for index in 0..shared.args.citizens {
        tasks.spawn(citizen(Arc::clone(&shared), index));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    shared.measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(shared.args.duration)).await;
    shared.measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    shared.stop.store(true, Ordering::Relaxed);
    let mut all: Vec<u32> = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done?);
    }
    all.sort_unstable();
    let result = serde_json::json!({
        "label": shared.args.label,
        "mode": format!("{:?}", shared.args.mode).to_lowercase(),
        "citizens": shared.args.citizens,
        "target_rate": (shared.args.mode == Mode::Open).then_some(shared.args.rate),
        "seconds": (elapsed * 100.0).round() / 100.0,
        "steps": all.len(),
        "steps_per_s": (all.len() as f64 / elapsed).round(),
        "p50_ms": percentile(&all, 50.0),
        "p99_ms": percentile(&all, 99.0),
        "p999_ms": percentile(&all, 99.9),
        "max_ms": all.last().map_or(0.0, |m| *m as f64 / 1000.0),
        "errors": shared.errors.load(Ordering::Relaxed),
        "sessions_completed": shared.ended_sessions.load(Ordering::Relaxed),
    });
    println!("{result}");
    Ok(())
}
