//! `fault-load`: the driver of the fault-injection suite (`load-tests/faults/run.sh`).
//!
//! It runs the SMSC simulator in this process (the gateway nodes bind to it), keeps USSD
//! citizens walking a flow over Africa's Talking callbacks spread over the nodes (a step whose
//! node refuses or resets the connection goes to the other node, as a load balancer does), and
//! SMS citizens walking a flow through the simulator. Meanwhile it injects the faults one at a
//! time, each after a steady period and followed by a recovery period: the SMSC ones itself
//! (dropping every connection, throttling), the others through the hook command of the script
//! (`HOOK FAULT start|end`: kill and restart a node, restart or pause Redis, restart
//! PostgreSQL). At the end it waits for late SMS replies, reads the stored answers from
//! PostgreSQL and prints, per fault: steps answered, answered after more than 2 s, answers
//! shown as saved but missing from the store, SMS submitted twice, SMS lost, and the seconds
//! until every node (and the SMS flow) served a whole step again.
//!
//! What a citizen was shown as saved: the screen after an answer is the flow's next question
//! (or its closing message), which the gateway shows only once the answer is durable. A polite
//! "busy" `END`, a missing reply or an unexpected screen saves nothing. It never starts or
//! stops a server itself and is never used by the gateway.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use baraza::smpp::smsc_sim::{SimConfig, SimHandle, spawn_smsc_sim};
use clap::{Parser, ValueEnum};
use serde_json::json;
use tokio::net::TcpListener;

#[path = "../ussd/at_client.rs"]
mod at_client;
use at_client::{Sender, connect, form_encode, step as post};

#[derive(Parser, Debug)]
#[command(about = "Fault-injection driver: USSD and SMS load on gateway nodes while faults hit")]
struct Args {
    /// The gateway nodes' HTTP addresses, comma-separated; the hook's `node-kill` must kill
    /// the last one.
    #[arg(long, value_delimiter = ',', required = true)]
    nodes: Vec<String>,
    /// Where the SMSC simulator listens (the nodes' operator points here).
    #[arg(long)]
    smsc_listen: SocketAddr,
    /// Delay before each submit_sm_resp: keeps submits in the bind's window when it drops.
    #[arg(long, default_value_t = 50)]
    smsc_latency_ms: u64,
    /// Command run as `sh -c "HOOK FAULT start|end"` for faults outside this process.
    #[arg(long)]
    hook: String,
    /// The faults, in order.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "node-kill,redis-restart,redis-pause,pg-restart,smsc-drop,smsc-throttle"
    )]
    faults: Vec<Fault>,
    /// Seconds of steady load before each fault.
    #[arg(long, default_value_t = 5)]
    settle: u64,
    /// Seconds watched after each fault ends.
    #[arg(long, default_value_t = 15)]
    recovery: u64,
    /// Seconds a killed node, a stopped Redis or PostgreSQL stays down.
    #[arg(long, default_value_t = 3)]
    down: u64,
    /// USSD citizens (one session at a time each).
    #[arg(long, default_value_t = 16)]
    ussd_citizens: usize,
    /// Pause between one citizen's USSD steps, milliseconds.
    #[arg(long, default_value_t = 50)]
    think_ms: u64,
    /// The code dialled.
    #[arg(long, default_value = "*384*12*3#")]
    service_code: String,
    /// USSD answers after the dial, comma-separated.
    #[arg(
        long,
        default_value = "1,1,Water point broken for two weeks,Near the market"
    )]
    script: String,
    /// The result each answer is stored under (empty: none, e.g. the language choice).
    #[arg(long, default_value = ",category,description,location")]
    results: String,
    /// Text expected in the screen after the dial and after each answer, `|`-separated.
    #[arg(
        long,
        default_value = "Choose language|What is it about|Briefly describe|Where is it|Thank you"
    )]
    expect: String,
    /// Client timeout of one USSD step, milliseconds (an aggregator gives up too).
    #[arg(long, default_value_t = 5000)]
    step_timeout_ms: u64,
    /// SMS citizens.
    #[arg(long, default_value_t = 8)]
    sms_citizens: usize,
    /// Pause between a reply and the citizen's next SMS, milliseconds.
    #[arg(long, default_value_t = 200)]
    sms_think_ms: u64,
    /// The short code SMS go to.
    #[arg(long, default_value = "20880")]
    sms_to: String,
    /// SMS a citizen sends in turn (a keyword, then answers).
    #[arg(long, default_value = "HEALTH,2,5,yes,12032026")]
    sms_script: String,
    /// Text expected in the reply to each SMS of the script, `|`-separated.
    #[arg(
        long,
        default_value = "Which service|How would you rate|Did you get the service|When was your visit|Thank you"
    )]
    sms_expect: String,
    /// The result each SMS of the script is stored under (empty: none, e.g. the keyword).
    #[arg(long, default_value = ",service,rating,got_service,visit_date")]
    sms_results: String,
    /// Seconds a citizen waits for an SMS reply before sending its next one anyway (a message
    /// whose step failed is handled again by the nodes' sweep, a minute or more later).
    #[arg(long, default_value_t = 95)]
    sms_wait: u64,
    /// Seconds, over the whole run, that the waits for the SMS flow to catch up after each
    /// fault may take together (keeps the run within about 10 minutes).
    #[arg(long, default_value_t = 240)]
    catch_up_budget: u64,
    /// Seconds to wait at the end for replies still outstanding.
    #[arg(long, default_value_t = 95)]
    drain: u64,
    /// The shared result store, to check what citizens were shown as saved.
    #[arg(long)]
    postgres: String,
    /// The nodes' result schema.
    #[arg(long)]
    schema: String,
}

/// One fault of the suite.
#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Fault {
    /// SIGKILL of the last node, restarted after `--down` seconds (by the hook).
    NodeKill,
    /// Redis stopped (nothing kept on disk) and started again after `--down` seconds.
    RedisRestart,
    /// `CLIENT PAUSE 5000` (by the hook); the fault lasts 5 s.
    RedisPause,
    /// PostgreSQL stopped (fast shutdown) and started again after `--down` seconds.
    PgRestart,
    /// The SMSC closes every connection, three times (each half a second after the nodes are
    /// bound again), while submits wait for their responses.
    SmscDrop,
    /// The SMSC answers every second submit_sm with ESME_RTHROTTLED for 8 s.
    SmscThrottle,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::NodeKill => "node-kill",
            Fault::RedisRestart => "redis-restart",
            Fault::RedisPause => "redis-pause",
            Fault::PgRestart => "pg-restart",
            Fault::SmscDrop => "smsc-drop",
            Fault::SmscThrottle => "smsc-throttle",
        }
    }
}

/// Seconds since the run began.
type At = f64;

/// When one fault struck and ended, and until when its effects are counted.
#[derive(Debug, Clone)]
struct Phase {
    name: String,
    start: At,
    end: At,
    until: At,
}

impl Phase {
    fn holds(&self, t: At) -> bool {
        t >= self.start && t < self.until
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// The expected screen.
    Success,
    /// The polite "busy" END within the deadline.
    Busy,
    /// Some other screen.
    Unexpected,
    /// No answer (both nodes refused, or the client timeout passed).
    Failed,
}

/// One USSD step as the citizen saw it.
#[derive(Debug, Clone, Copy)]
struct StepRecord {
    sent: At,
    latency: f64,
    /// The node that answered (or was tried last).
    node: usize,
    outcome: Outcome,
}

/// An answer a citizen was shown as saved.
#[derive(Debug, Clone)]
struct Accepted {
    session: String,
    result: String,
    sent: At,
}

/// One SMS a citizen sent.
#[derive(Debug, Clone)]
struct Mo {
    sent: At,
    /// Position in the SMS script (which reply it expects).
    position: usize,
}

/// One SMS that reached a citizen's handset, when the driver first saw it.
#[derive(Debug, Clone)]
struct Arrival {
    text: String,
    at: At,
}

struct Shared {
    args: Args,
    began: Instant,
    stop: AtomicBool,
    run_id: u64,
    /// Messages seen on each handset (by number, digits only), in order.
    handsets: Mutex<HashMap<String, Vec<Arrival>>>,
    /// Bumped when a handset gets a message.
    arrivals: tokio::sync::watch::Sender<u64>,
    /// SMS citizens waiting for a reply, with when they sent the message.
    sms_waiting: Mutex<HashMap<usize, At>>,
}

impl Shared {
    fn now(&self) -> At {
        self.began.elapsed().as_secs_f64()
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// No SMS citizen has been waiting for a reply for more than 2 s: the SMS flow has caught
    /// up with what a fault held back.
    fn sms_caught_up(&self) -> bool {
        let now = self.now();
        self.sms_waiting
            .lock()
            .map(|waiting| waiting.values().all(|sent| now - sent <= 2.0))
            .unwrap_or(true)
    }

    fn received(&self, digits: &str) -> usize {
        self.handsets
            .lock()
            .map(|h| h.get(digits).map_or(0, Vec::len))
            .unwrap_or(0)
    }
}

/// How one node was reached.
enum Attempt {
    Reply(String),
    /// Refused or reset: the node is not there; another may take the step.
    Unreachable,
    /// No reply within the client timeout.
    TimedOut,
}

/// A citizen's keep-alive connection to each node.
struct Connections {
    targets: Vec<String>,
    open: Vec<Option<Sender>>,
}

impl Connections {
    fn new(targets: &[String]) -> Connections {
        Connections {
            targets: targets.to_vec(),
            open: targets.iter().map(|_| None).collect(),
        }
    }

    async fn attempt(&mut self, node: usize, body: &str, timeout: Duration) -> Attempt {
        let target = self.targets[node].clone();
        let sender = match self.open[node].take() {
            Some(sender) => sender,
            None => match connect(&target).await {
                Ok(sender) => sender,
                Err(_) => return Attempt::Unreachable,
            },
        };
        let mut sender = sender;
        match tokio::time::timeout(timeout, post(&mut sender, &target, body.to_string())).await {
            Ok(Ok(reply)) => {
                self.open[node] = Some(sender);
                Attempt::Reply(reply)
            }
            Ok(Err(_)) => Attempt::Unreachable,
            Err(_) => Attempt::TimedOut,
        }
    }

    /// The step on `node`, or on the next node when `node` cannot be reached; the reply and
    /// the node that gave it (or was tried last).
    async fn step(
        &mut self,
        node: usize,
        body: &str,
        deadline: Instant,
    ) -> (Option<String>, usize) {
        let count = self.targets.len();
        let mut last = node;
        for offset in 0..count {
            last = (node + offset) % count;
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.attempt(last, body, left).await {
                Attempt::Reply(reply) => return (Some(reply), last),
                Attempt::TimedOut => return (None, last),
                Attempt::Unreachable => {}
            }
        }
        (None, last)
    }
}

/// What one USSD citizen saw.
#[derive(Default)]
struct UssdLog {
    steps: Vec<StepRecord>,
    accepted: Vec<Accepted>,
    /// The first few unexpected screens (when, what was sent and shown).
    unexpected: Vec<(At, String)>,
}

/// One USSD citizen: dials, answers the script, dials again with a new session; its steps go
/// to the nodes in turn (step k of a session to node `citizen + k`). Each session has a
/// number of its own: a session a fault cut short would otherwise meet its resume offer.
async fn ussd_citizen(shared: Arc<Shared>, index: usize) -> UssdLog {
    let args = &shared.args;
    let inputs: Vec<&str> = args.script.split(',').collect();
    let results: Vec<&str> = args.results.split(',').collect();
    let expect: Vec<&str> = args.expect.split('|').collect();
    let mut connections = Connections::new(&args.nodes);
    let mut log = UssdLog::default();
    let code = form_encode(&args.service_code);
    let timeout = Duration::from_millis(args.step_timeout_ms);
    let mut session_number = 0u64;
    while !shared.stopped() {
        session_number += 1;
        let session = format!("fault-{}-{index}-{session_number}", shared.run_id);
        let phone = form_encode(&format!(
            "+2547{:02}{:06}",
            index % 100,
            session_number % 1_000_000
        ));
        for position in 0..=inputs.len() {
            if shared.stopped() {
                break;
            }
            let text = inputs[..position].join("*");
            let body = format!(
                "sessionId={session}&serviceCode={code}&phoneNumber={phone}&networkCode=63902&text={}",
                form_encode(&text)
            );
            let sent = shared.now();
            let started = Instant::now();
            let node = (index + position) % args.nodes.len();
            let (reply, node) = connections.step(node, &body, started + timeout).await;
            let latency = started.elapsed().as_secs_f64();
            let outcome = match &reply {
                None => Outcome::Failed,
                Some(r) if expect.get(position).is_some_and(|e| r.contains(e)) => Outcome::Success,
                Some(r) if r.starts_with("END") && r.contains("busy") => Outcome::Busy,
                Some(_) => Outcome::Unexpected,
            };
            log.steps.push(StepRecord {
                sent,
                latency,
                node,
                outcome,
            });
            if outcome == Outcome::Unexpected
                && log.unexpected.len() < 3
                && let Some(reply) = &reply
            {
                log.unexpected.push((sent, format!("{text:?} -> {reply}")));
            }
            tokio::time::sleep(Duration::from_millis(args.think_ms)).await;
            if outcome != Outcome::Success {
                break;
            }
            if position > 0
                && let Some(result) = results.get(position - 1).filter(|r| !r.is_empty())
            {
                log.accepted.push(Accepted {
                    session: session.clone(),
                    result: (*result).to_string(),
                    sent,
                });
            }
            if reply.is_some_and(|r| r.starts_with("END")) {
                break;
            }
        }
    }
    log
}

/// What one SMS citizen sent, and its number.
struct SmsLog {
    digits: String,
    mos: Vec<Mo>,
}

/// One SMS citizen: sends the script's messages in turn, each after the reply to the one
/// before (or after `--sms-wait` without one).
async fn sms_citizen(shared: Arc<Shared>, sim: SimHandle, index: usize) -> SmsLog {
    let args = &shared.args;
    let script: Vec<&str> = args.sms_script.split(',').collect();
    let phone = format!("+2547200{index:05}");
    let digits = phone.trim_start_matches('+').to_string();
    let mut mos = Vec::new();
    let mut arrivals = shared.arrivals.subscribe();
    'run: while !shared.stopped() {
        for (position, text) in script.iter().enumerate() {
            let sent = shared.now();
            // The handset keeps trying while no gateway is bound (the SMSC would queue it).
            while sim.inject_mo(&phone, &args.sms_to, text).is_err() {
                if shared.stopped() {
                    break 'run;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            mos.push(Mo { sent, position });
            if let Ok(mut waiting) = shared.sms_waiting.lock() {
                waiting.insert(index, sent);
            }
            let wanted = mos.len();
            let _ = tokio::time::timeout(Duration::from_secs(args.sms_wait), async {
                while shared.received(&digits) < wanted && !shared.stopped() {
                    if arrivals.changed().await.is_err() {
                        return;
                    }
                }
            })
            .await;
            if let Ok(mut waiting) = shared.sms_waiting.lock() {
                waiting.remove(&index);
            }
            if shared.stopped() {
                break 'run;
            }
            tokio::time::sleep(Duration::from_millis(args.sms_think_ms)).await;
        }
    }
    SmsLog { digits, mos }
}

/// Copies new handset messages from the simulator into `shared.handsets`, with the time
/// they were first seen (every 20 ms).
async fn watch_handsets(shared: Arc<Shared>, sim: SimHandle, done: Arc<AtomicBool>) {
    let mut seen = 0usize;
    loop {
        let stats = sim.stats();
        if stats.messages.len() > seen {
            let at = shared.now();
            if let Ok(mut handsets) = shared.handsets.lock() {
                for message in &stats.messages[seen..] {
                    handsets
                        .entry(message.destination.clone())
                        .or_default()
                        .push(Arrival {
                            text: message.text.clone(),
                            at,
                        });
                }
            }
            seen = stats.messages.len();
            shared.arrivals.send_modify(|n| *n += 1);
        }
        if done.load(Ordering::Relaxed) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs `HOOK FAULT PHASE` and waits for it.
async fn hook(shared: &Shared, fault: Fault, phase: &str) -> anyhow::Result<()> {
    let command = format!("{} {} {phase}", shared.args.hook, fault.name());
    let shell = command.clone();
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("sh")
            .arg("-c")
            .arg(&shell)
            .status()
    })
    .await?
    .with_context(|| format!("run {command}"))?;
    if !status.success() {
        bail!("{command} failed: {status}");
    }
    Ok(())
}

/// Injects one fault; returns when it ends (the fault's end time is the caller's clock).
async fn inject(shared: &Shared, sim: &SimHandle, fault: Fault) -> anyhow::Result<()> {
    let down = Duration::from_secs(shared.args.down);
    match fault {
        Fault::NodeKill | Fault::RedisRestart | Fault::PgRestart => {
            hook(shared, fault, "start").await?;
            tokio::time::sleep(down).await;
            hook(shared, fault, "end").await?;
        }
        Fault::RedisPause => {
            hook(shared, fault, "start").await?;
            tokio::time::sleep(Duration::from_secs(5)).await;
            hook(shared, fault, "end").await?;
        }
        Fault::SmscDrop => {
            let nodes = shared.args.nodes.len() as u64;
            for _ in 0..3 {
                // Each drop hits bound, busy binds: every node bound again since the last
                // drop, traffic flowing again.
                let binds = sim.stats().binds;
                let dropped = sim.drop_connections() as u64;
                eprintln!("smsc-drop: {dropped} connections closed");
                tokio::time::timeout(
                    Duration::from_secs(30),
                    sim.wait_until(|s| s.binds >= binds + dropped.min(nodes)),
                )
                .await
                .context("the nodes never bound again after a drop")?;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        Fault::SmscThrottle => {
            sim.set_throttle_every(Some(2));
            tokio::time::sleep(Duration::from_secs(8)).await;
            sim.set_throttle_every(None);
        }
    }
    Ok(())
}

/// Waits until the simulator has `binds` bound receivers (bounded).
async fn bound(sim: &SimHandle, binds: u64) -> anyhow::Result<()> {
    tokio::time::timeout(
        Duration::from_secs(30),
        sim.wait_until(|s| s.bound_receivers >= binds),
    )
    .await
    .map(|_| ())
    .context("the nodes never bound to the SMSC simulator")
}

/// A connection to the nodes' result store, and their schema (quoted in the queries).
async fn result_store(args: &Args) -> anyhow::Result<(tokio_postgres::Client, String)> {
    let (client, connection) = tokio_postgres::connect(&args.postgres, tokio_postgres::NoTls)
        .await
        .context("connect to the result store")?;
    tokio::spawn(connection);
    Ok((client, args.schema.replace('"', "")))
}

/// The (session, result) pairs stored for the flow's Africa's Talking responses.
async fn stored_answers(args: &Args) -> anyhow::Result<HashSet<(String, String)>> {
    let (client, schema) = result_store(args).await?;
    let rows = client
        .query(
            &format!(
                "SELECT a.response_id, a.result FROM \"{schema}\".answers a \
                 WHERE a.response_id LIKE '%-africastalking:fault-%'"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .filter_map(|row| {
            let id: String = row.get(0);
            let result: String = row.get(1);
            let session = id.split_once("-africastalking:")?.1.to_string();
            Some((session, result))
        })
        .collect())
}

/// How the outbound SMS ended, by state, as the nodes stored them.
async fn sms_states(args: &Args) -> anyhow::Result<serde_json::Value> {
    let (client, schema) = result_store(args).await?;
    let rows = client
        .query(
            &format!("SELECT state, count(*) FROM \"{schema}\".sms_messages GROUP BY state"),
            &[],
        )
        .await?;
    let mut states = serde_json::Map::new();
    for row in rows {
        let state: String = row.get(0);
        let count: i64 = row.get(1);
        states.insert(state, json!(count));
    }
    Ok(serde_json::Value::Object(states))
}

/// A citizen's SMS matched with its replies: a reply with the same text as the one before it
/// is a second copy; the rest answer the oldest unanswered message sent before them.
struct SmsOutcome {
    /// The citizen's number.
    digits: String,
    /// (sent, reply arrival) per message; `None`: never answered.
    answered: Vec<(At, Option<At>)>,
    /// Arrival times of second copies.
    duplicates: Vec<At>,
    /// Replies whose text is not the one the message's position expects.
    unexpected: Vec<At>,
    /// Script positions of the messages answered with the expected next question: the
    /// citizen was shown their answer as saved.
    shown_saved: Vec<usize>,
}

fn match_replies(log: &SmsLog, arrivals: &[Arrival], expect: &[&str]) -> SmsOutcome {
    let mut duplicates = Vec::new();
    let mut replies = Vec::new();
    for (i, arrival) in arrivals.iter().enumerate() {
        if i > 0 && arrivals[i - 1].text == arrival.text {
            duplicates.push(arrival.at);
        } else {
            replies.push(arrival);
        }
    }
    let mut answered: Vec<(At, Option<At>)> = log.mos.iter().map(|m| (m.sent, None)).collect();
    let mut unexpected = Vec::new();
    let mut shown_saved = Vec::new();
    let mut next = 0;
    let expected = |mo: &Mo, reply: &Arrival| {
        expect
            .get(mo.position)
            .is_some_and(|e| reply.text.contains(e))
    };
    for reply in replies {
        if next >= log.mos.len() || log.mos[next].sent > reply.at {
            duplicates.push(reply.at);
            continue;
        }
        // The reply answers the oldest message sent before it whose reply it is; the messages
        // it skips never got theirs (a citizen sends on after waiting long enough).
        let fits = (next..log.mos.len())
            .take_while(|&i| log.mos[i].sent <= reply.at)
            .find(|&i| expected(&log.mos[i], reply));
        match fits {
            Some(i) => {
                shown_saved.push(log.mos[i].position);
                answered[i].1 = Some(reply.at);
                next = i + 1;
            }
            None => {
                unexpected.push(reply.at);
                answered[next].1 = Some(reply.at);
                next += 1;
            }
        }
    }
    SmsOutcome {
        digits: log.digits.clone(),
        answered,
        duplicates,
        unexpected,
        shown_saved,
    }
}

/// Stored SMS answers: how many rows each (number, digits only; result) has.
async fn stored_sms_answers(args: &Args) -> anyhow::Result<HashMap<(String, String), i64>> {
    let (client, schema) = result_store(args).await?;
    let rows = client
        .query(
            &format!(
                "SELECT r.subscriber, a.result, count(*) FROM \"{schema}\".responses r \
                 JOIN \"{schema}\".answers a ON a.response_id = r.response_id \
                 WHERE r.channel = 'sms' GROUP BY 1, 2"
            ),
            &[],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|row| {
            let subscriber: String = row.get(0);
            let digits = subscriber.chars().filter(char::is_ascii_digit).collect();
            ((digits, row.get::<_, String>(1)), row.get::<_, i64>(2))
        })
        .collect())
}

/// SMS answers a citizen was shown as saved (the next question came) that the store lacks.
fn sms_saved_but_missing(
    outcomes: &[SmsOutcome],
    results: &[&str],
    stored: &HashMap<(String, String), i64>,
) -> i64 {
    let mut missing = 0;
    for outcome in outcomes {
        let mut shown: HashMap<&str, i64> = HashMap::new();
        for position in &outcome.shown_saved {
            if let Some(result) = results.get(*position).filter(|r| !r.is_empty()) {
                *shown.entry(result).or_default() += 1;
            }
        }
        for (result, count) in shown {
            let key = (outcome.digits.clone(), result.to_string());
            missing += (count - stored.get(&key).copied().unwrap_or(0)).max(0);
        }
    }
    missing
}

/// The figures of one phase.
fn phase_figures(
    phase: &Phase,
    nodes: usize,
    steps: &[StepRecord],
    accepted: &[Accepted],
    stored: &HashSet<(String, String)>,
    sms: &[SmsOutcome],
) -> serde_json::Value {
    let within: Vec<&StepRecord> = steps.iter().filter(|s| phase.holds(s.sent)).collect();
    let count = |o: Outcome| within.iter().filter(|s| s.outcome == o).count();
    let answered = within
        .iter()
        .filter(|s| s.outcome != Outcome::Failed)
        .count();
    let slow = within
        .iter()
        .filter(|s| s.outcome != Outcome::Failed && s.latency > 2.0)
        .count();
    let max_latency = within
        .iter()
        .filter(|s| s.outcome != Outcome::Failed)
        .map(|s| s.latency)
        .fold(0.0f64, f64::max);
    let missing: Vec<&Accepted> = accepted
        .iter()
        .filter(|a| phase.holds(a.sent))
        .filter(|a| !stored.contains(&(a.session.clone(), a.result.clone())))
        .collect();
    let mos = sms
        .iter()
        .flat_map(|o| o.answered.iter())
        .filter(|(sent, _)| phase.holds(*sent))
        .count();
    let lost = sms
        .iter()
        .flat_map(|o| o.answered.iter())
        .filter(|(sent, reply)| phase.holds(*sent) && reply.is_none())
        .count();
    let lost_examples: Vec<String> = sms
        .iter()
        .flat_map(|o| {
            o.answered
                .iter()
                .enumerate()
                .filter(|(_, (sent, reply))| phase.holds(*sent) && reply.is_none())
                .map(|(n, (sent, _))| format!("{} message {} sent at {sent:.1} s", o.digits, n + 1))
        })
        .take(5)
        .collect();
    let sms_slow = sms
        .iter()
        .flat_map(|o| o.answered.iter())
        .filter(|(sent, reply)| phase.holds(*sent) && reply.is_some_and(|r| r - sent > 2.0))
        .count();
    let sms_max = sms
        .iter()
        .flat_map(|o| o.answered.iter())
        .filter(|(sent, _)| phase.holds(*sent))
        .filter_map(|(sent, reply)| reply.map(|r| r - sent))
        .fold(0.0f64, f64::max);
    let duplicates = sms
        .iter()
        .flat_map(|o| o.duplicates.iter())
        .filter(|at| phase.holds(**at))
        .count();
    let unexpected_sms = sms
        .iter()
        .flat_map(|o| o.unexpected.iter())
        .filter(|at| phase.holds(**at))
        .count();
    // Recovery: from the fault's end to the first whole step after it on every node, and to
    // the last reply the fault held back (the slowest of them).
    let node_recovery: Vec<Option<f64>> = (0..nodes)
        .map(|node| {
            steps
                .iter()
                .filter(|s| s.node == node && s.sent >= phase.end)
                .filter(|s| s.outcome == Outcome::Success && s.latency <= 2.0)
                .map(|s| s.sent + s.latency - phase.end)
                .reduce(f64::min)
        })
        .collect();
    // SMS: until every message sent before the fault ended and not answered when it began
    // has its reply (never, if one is lost).
    let sms_recovery = sms
        .iter()
        .flat_map(|o| o.answered.iter())
        .filter(|(sent, reply)| *sent < phase.end && reply.is_none_or(|r| r >= phase.start))
        .try_fold(0.0f64, |worst, (_, reply)| {
            reply.map(|r| worst.max(r - phase.end))
        });
    let recovery = node_recovery
        .iter()
        .copied()
        .chain(std::iter::once(sms_recovery))
        .try_fold(0.0f64, |worst, r| r.map(|r| worst.max(r)));
    let round = |x: f64| (x * 100.0).round() / 100.0;
    json!({
        "fault": phase.name,
        "fault_seconds": round(phase.end - phase.start),
        "steps_sent": within.len(),
        "steps_answered": answered,
        "steps_ok": count(Outcome::Success),
        "steps_busy": count(Outcome::Busy),
        "steps_unexpected": count(Outcome::Unexpected),
        "steps_unanswered": count(Outcome::Failed),
        "steps_over_2s": slow,
        "step_max_s": round(max_latency),
        "saved_but_missing": missing.len(),
        "missing_examples": missing.iter().take(5).map(|a| format!("{} {}", a.session, a.result)).collect::<Vec<_>>(),
        "sms_sent": mos,
        "sms_lost": lost,
        "sms_lost_examples": lost_examples,
        "sms_twice": duplicates,
        "sms_unexpected": unexpected_sms,
        "sms_replies_over_2s": sms_slow,
        "sms_reply_max_s": round(sms_max),
        "recover_s": recovery.map(round),
        "recover_s_per_node": node_recovery.iter().map(|r| r.map(round)).collect::<Vec<_>>(),
        "recover_s_sms_backlog": sms_recovery.map(round),
    })
}

fn print_table(rows: &[serde_json::Value]) {
    println!(
        "| fault | fault s | steps answered | > 2 s | busy | unanswered | saved but missing | SMS sent | SMS twice | SMS lost | SMS reply max s | recover s: USSD nodes / SMS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    let seconds = |v: &serde_json::Value| {
        v.as_f64()
            .map_or("never".to_string(), |s| format!("{s:.2}"))
    };
    for r in rows {
        let nodes = r["recover_s_per_node"]
            .as_array()
            .map(|all| {
                all.iter()
                    .try_fold(0.0f64, |worst, n| n.as_f64().map(|n| worst.max(n)))
            })
            .unwrap_or(None);
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            r["fault"].as_str().unwrap_or("?"),
            r["fault_seconds"],
            r["steps_answered"],
            r["steps_over_2s"],
            r["steps_busy"],
            r["steps_unanswered"],
            r["saved_but_missing"],
            r["sms_sent"],
            r["sms_twice"],
            r["sms_lost"],
            r["sms_reply_max_s"],
            seconds(&json!(nodes)),
            seconds(&r["recover_s_sms_backlog"]),
        );
    }
}

/// The simulator the nodes bind to, redelivering as an SMSC does.
async fn start_smsc(args: &Args) -> anyhow::Result<SimHandle> {
    let listener = TcpListener::bind(args.smsc_listen)
        .await
        .with_context(|| format!("listen on {}", args.smsc_listen))?;
    let sim = spawn_smsc_sim(
        SimConfig {
            submit_latency: Duration::from_millis(args.smsc_latency_ms),
            // An SMSC redelivers a refused message later, for a while (not 5 times at once).
            delivery_attempts: 12,
            redelivery_delay: Duration::from_millis(250),
            ..SimConfig::default()
        },
        listener,
    );
    eprintln!("fault-load: SMSC simulator on {}", args.smsc_listen);
    Ok(sim)
}

/// The steady phase, then each fault with its recovery; the phases, in order.
async fn run_faults(shared: &Shared, sim: &SimHandle) -> anyhow::Result<Vec<Phase>> {
    let mut phases = Vec::new();
    let steady_start = shared.now();
    tokio::time::sleep(Duration::from_secs(shared.args.settle)).await;
    phases.push(Phase {
        name: "none (steady load)".into(),
        start: steady_start,
        end: steady_start,
        until: shared.now(),
    });
    let mut catch_up_left = Duration::from_secs(shared.args.catch_up_budget);
    for (i, fault) in shared.args.faults.iter().enumerate() {
        if i > 0 {
            tokio::time::sleep(Duration::from_secs(shared.args.settle)).await;
        }
        eprintln!("fault-load: {} at {:.1} s", fault.name(), shared.now());
        let start = shared.now();
        inject(shared, sim, *fault).await?;
        let end = shared.now();
        eprintln!("fault-load: {} over at {:.1} s", fault.name(), end);
        tokio::time::sleep(Duration::from_secs(shared.args.recovery)).await;
        // Replies a fault held back (a failed SMS step waits for the nodes' sweep) must not
        // spill into the next fault's figures.
        let waited = Instant::now();
        let limit = waited + Duration::from_secs(shared.args.sms_wait).min(catch_up_left);
        while !shared.sms_caught_up() && Instant::now() < limit {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        catch_up_left = catch_up_left.saturating_sub(waited.elapsed());
        phases.push(Phase {
            name: fault.name().to_string(),
            start,
            end,
            until: shared.now(),
        });
    }
    Ok(phases)
}

/// SMS sent and not yet answered (by count of handset messages).
fn outstanding(shared: &Shared, sms_logs: &[SmsLog]) -> usize {
    sms_logs
        .iter()
        .map(|l| l.mos.len().saturating_sub(shared.received(&l.digits)))
        .sum()
}

/// Stops the citizens; what they saw.
async fn stop_citizens(
    shared: &Shared,
    mut ussd: tokio::task::JoinSet<UssdLog>,
    mut sms: tokio::task::JoinSet<SmsLog>,
) -> anyhow::Result<(UssdLog, Vec<SmsLog>)> {
    shared.stop.store(true, Ordering::Relaxed);
    shared.arrivals.send_modify(|n| *n += 1);
    let mut all = UssdLog::default();
    while let Some(log) = ussd.join_next().await {
        let log = log?;
        all.steps.extend(log.steps);
        all.accepted.extend(log.accepted);
        all.unexpected.extend(log.unexpected);
    }
    let mut sms_logs = Vec::new();
    while let Some(log) = sms.join_next().await {
        sms_logs.push(log?);
    }
    Ok((all, sms_logs))
}

/// Prints one JSON line per phase, the totals, and the table.
async fn report(
    shared: &Shared,
    sim: &SimHandle,
    phases: &[Phase],
    ussd: &UssdLog,
    sms_logs: &[SmsLog],
) -> anyhow::Result<()> {
    let args = &shared.args;
    let stored = stored_answers(args).await?;
    let expect: Vec<&str> = args.sms_expect.split('|').collect();
    let handsets = shared
        .handsets
        .lock()
        .map(|h| h.clone())
        .unwrap_or_default();
    let sms_outcomes: Vec<SmsOutcome> = sms_logs
        .iter()
        .map(|log| {
            let arrivals = handsets.get(&log.digits).cloned().unwrap_or_default();
            match_replies(log, &arrivals, &expect)
        })
        .collect();
    let rows: Vec<serde_json::Value> = phases
        .iter()
        .map(|phase| {
            let mut row = phase_figures(
                phase,
                args.nodes.len(),
                &ussd.steps,
                &ussd.accepted,
                &stored,
                &sms_outcomes,
            );
            row["unexpected_examples"] = ussd
                .unexpected
                .iter()
                .filter(|(at, _)| phase.holds(*at))
                .take(3)
                .map(|(_, what)| json!(what))
                .collect();
            row
        })
        .collect();
    for row in &rows {
        println!("{row}");
    }
    let stats = sim.stats();
    let all_missing = ussd
        .accepted
        .iter()
        .filter(|a| !stored.contains(&(a.session.clone(), a.result.clone())))
        .count();
    println!(
        "{}",
        json!({
            "totals": {
                "ussd_steps": ussd.steps.len(),
                "answers_shown_saved": ussd.accepted.len(),
                "saved_but_missing": all_missing,
                "sms_replies_as_expected": sms_outcomes.iter().map(|o| o.shown_saved.len()).sum::<usize>(),
                "sms_answers_saved_but_missing": sms_saved_but_missing(
                    &sms_outcomes,
                    &args.sms_results.split(',').collect::<Vec<_>>(),
                    &stored_sms_answers(args).await?,
                ),
                "sms_sent": sms_logs.iter().map(|l| l.mos.len()).sum::<usize>(),
                "sms_outstanding_at_end": outstanding(shared, sms_logs),
                "smsc": {
                    "binds": stats.binds,
                    "submits": stats.submits,
                    "accepted": stats.accepted,
                    "throttled": stats.throttled,
                    "messages": stats.messages.len(),
                    "mo_parts_sent": stats.mo_parts_sent,
                    "deliveries_refused": stats.deliveries_refused,
                    "redeliveries": stats.redeliveries,
                    "redeliveries_after_close": stats.redeliveries_after_close,
                },
                "outbox_states": sms_states(args).await.unwrap_or(json!(null)),
            }
        })
    );
    print_table(&rows);
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sim = start_smsc(&args).await?;
    bound(&sim, args.nodes.len() as u64).await?;
    let run_id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let (arrivals, _) = tokio::sync::watch::channel(0);
    let shared = Arc::new(Shared {
        args,
        began: Instant::now(),
        stop: AtomicBool::new(false),
        run_id,
        handsets: Mutex::new(HashMap::new()),
        arrivals,
        sms_waiting: Mutex::new(HashMap::new()),
    });
    let watcher_done = Arc::new(AtomicBool::new(false));
    let watcher = tokio::spawn(watch_handsets(
        Arc::clone(&shared),
        sim.clone(),
        Arc::clone(&watcher_done),
    ));
    let mut ussd = tokio::task::JoinSet::new();
    for index in 0..shared.args.ussd_citizens {
        ussd.spawn(ussd_citizen(Arc::clone(&shared), index));
    }
    let mut sms = tokio::task::JoinSet::new();
    for index in 0..shared.args.sms_citizens {
        sms.spawn(sms_citizen(Arc::clone(&shared), sim.clone(), index));
    }

    let phases = run_faults(&shared, &sim).await?;
    let (ussd, sms_logs) = stop_citizens(&shared, ussd, sms).await?;
    // Late replies: wait (bounded) until every message is answered, then a little more for
    // second copies.
    let drain_until = Instant::now() + Duration::from_secs(shared.args.drain);
    while outstanding(&shared, &sms_logs) > 0 && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    watcher_done.store(true, Ordering::Relaxed);
    watcher.await?;
    report(&shared, &sim, &phases, &ussd, &sms_logs).await?;
    sim.shutdown();
    Ok(())
}
