//! The `baraza` command line: check flows, simulate them, serve the gateway.
//!
//! Only argument parsing and wiring live here; every command's work is in the library.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use baraza::config::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
use baraza::engine::{Channel, CompiledFlow};
use baraza::{result_store, server, simulator};

#[derive(Parser)]
#[command(
    name = "baraza",
    version,
    about = "Survey and feedback flows for basic phones over USSD, SMS and voice"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check flow files and report every problem with file:line:column.
    Check {
        /// Flow files or folders (default: flows/).
        paths: Vec<PathBuf>,
        /// Folder of recorded prompts: every recording a flow names must exist in it.
        #[arg(long)]
        audio_dir: Option<PathBuf>,
        /// Gateway config whose `contacts:` fields the segments are checked against
        /// (default: the embedded one).
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Try a flow as a citizen would, on a simulated basic phone.
    Simulate {
        /// The flow file.
        flow: PathBuf,
        #[arg(long, value_enum, default_value = "ussd")]
        channel: ChannelArg,
        /// Language to start in (the flow's default otherwise).
        #[arg(long)]
        lang: Option<String>,
        /// Answers separated by commas ("1,2,hello"); `\,` is a comma inside an answer;
        /// `!hangup`, `!timeout` and `!dial` simulate network events. Without it, reads the keyboard.
        #[arg(long)]
        input: Option<String>,
        /// Contact attributes known before the session, as key=value (repeatable).
        #[arg(long = "contact", value_parser = parse_key_value)]
        contact: Vec<(String, String)>,
    },
    /// Print the JSON Schema of the flow format (flows/schema.json).
    Schema,
    /// Run the gateway: USSD over HTTP (Africa's Talking, Hubtel), health and metrics.
    Serve {
        /// Gateway config (see gateway-config/); without one, the embedded defaults:
        /// in-memory sessions, SQLite under ./data, the flows in flows/.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Address to listen on (default 127.0.0.1:8080, or the config's `listen`).
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
    },
    /// Send one SMS through an operator's SMPP bind and print its delivery receipt (what an
    /// operator's engineer runs to test a new bind).
    Send {
        /// Operator name, as in the config's `smpp.operators`.
        #[arg(long)]
        operator: String,
        /// Destination number.
        #[arg(long)]
        to: String,
        #[arg(long)]
        text: String,
        /// Sender (the operator's `sender` otherwise).
        #[arg(long)]
        from: Option<String>,
        /// Gateway config with the operator (see gateway-config/).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Seconds to wait for the bind, the submission and the receipt.
        #[arg(long, default_value_t = 30)]
        wait: u64,
    },
    /// An SMSC simulator for development and tests: accepts binds, answers submit_sm, sends
    /// delivery receipts.
    SmscSim {
        #[arg(long, default_value = "127.0.0.1:2775")]
        listen: std::net::SocketAddr,
        #[arg(long, default_value = "baraza")]
        system_id: String,
        #[arg(long, default_value = "secret")]
        password: String,
        /// Delay before each submit_sm_resp, in milliseconds.
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Answer every Nth submit_sm with ESME_RTHROTTLED.
        #[arg(long)]
        throttle_every: Option<u32>,
        /// The `stat:` of delivery receipts (DELIVRD, UNDELIV, EXPIRED...).
        #[arg(long, default_value = "DELIVRD")]
        receipt_status: String,
        /// Also serve a control endpoint here (POST /mo, /ussd, /drop; GET /messages, /stats)
        /// to play the handset side by hand.
        #[arg(long)]
        http: Option<std::net::SocketAddr>,
    },
    /// Stored answers.
    Results {
        #[command(subcommand)]
        command: ResultsCommand,
    },
    /// The contact list: import from CSV, export, count segments.
    Contacts {
        #[command(subcommand)]
        command: ContactsCommand,
        /// Gateway config naming the result store and the contact fields (the embedded
        /// defaults otherwise).
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum ContactsCommand {
    /// Import contacts from a CSV file (UTF-8, comma or semicolon); bad rows are reported as
    /// FILE:LINE: reason and skipped, the rest go in. Importing a file again changes nothing.
    Import {
        file: PathBuf,
        /// Read COLUMN as FIELD (or `ignore` it), beside the header names matched by themselves.
        #[arg(long = "map", value_name = "COLUMN=FIELD")]
        map: Vec<String>,
        /// Check the file and count what would change, without writing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write contacts as CSV, numbers pseudonymised unless --raw-numbers.
    Export {
        /// Only the contacts of this segment (never opted-out ones).
        #[arg(long)]
        segment: Option<String>,
        /// Export phone numbers as they are instead of pseudonyms. Handle with care.
        #[arg(long)]
        raw_numbers: bool,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// How many contacts a segment holds, optionally per value of a field.
    Count {
        #[arg(long)]
        segment: String,
        /// Count per value of this field (ward, gender, operator...).
        #[arg(long)]
        by: Option<String>,
    },
}

#[derive(Subcommand)]
enum ResultsCommand {
    /// One row per response (completed or partial), a column per result name.
    Export {
        /// Flow id.
        #[arg(long)]
        flow: String,
        #[arg(long, value_enum, default_value = "csv")]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Gateway config naming the result store (the embedded SQLite store otherwise).
        #[arg(long)]
        config: Option<PathBuf>,
        /// Export phone numbers as they are instead of pseudonyms. Handle with care.
        #[arg(long)]
        raw_numbers: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ExportFormat {
    Csv,
}

#[derive(Clone, Copy, ValueEnum)]
enum ChannelArg {
    Ussd,
    Sms,
    Voice,
}

impl From<ChannelArg> for Channel {
    fn from(c: ChannelArg) -> Channel {
        match c {
            ChannelArg::Ussd => Channel::Ussd,
            ChannelArg::Sms => Channel::Sms,
            ChannelArg::Voice => Channel::Voice,
        }
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .ok_or_else(|| format!("`{s}` is not key=value"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            paths,
            audio_dir,
            config,
        } => check(paths, audio_dir, config),
        Command::Simulate {
            flow,
            channel,
            lang,
            input,
            contact,
        } => simulate(flow, channel.into(), lang, input, contact),
        Command::Schema => {
            print!("{}", baraza::flow::schema::generate());
            ExitCode::SUCCESS
        }
        Command::Serve { config, listen } => report(serve(config, listen)),
        Command::Send {
            operator,
            to,
            text,
            from,
            config,
            wait,
        } => report(send(config, operator, to, text, from, wait)),
        Command::SmscSim {
            listen,
            system_id,
            password,
            latency_ms,
            throttle_every,
            receipt_status,
            http,
        } => {
            let sim = baraza::smpp::smsc_sim::SimConfig {
                system_id,
                password,
                submit_latency: std::time::Duration::from_millis(latency_ms),
                throttle_every,
                receipt_status,
                ..Default::default()
            };
            report(smsc_sim(sim, listen, http))
        }
        Command::Results {
            command:
                ResultsCommand::Export {
                    flow,
                    format: ExportFormat::Csv,
                    out,
                    config,
                    raw_numbers,
                },
        } => report(export(config, flow, out, raw_numbers)),
        Command::Contacts { command, config } => report(contacts(config, command)),
    }
}

fn contacts(config: Option<PathBuf>, command: ContactsCommand) -> anyhow::Result<()> {
    use baraza::contacts::command as run;
    let config = load_config(config)?;
    runtime()?.block_on(async move {
        let store = server::open_result_store(&config).await?;
        let outcome = match command {
            ContactsCommand::Import { file, map, dry_run } => {
                run::import(&config, &store, &file, &map, dry_run).await
            }
            ContactsCommand::Export {
                segment,
                raw_numbers,
                out,
            } => {
                run::export(
                    &config,
                    &store,
                    segment.as_deref(),
                    raw_numbers,
                    out.as_deref(),
                )
                .await
            }
            ContactsCommand::Count { segment, by } => {
                run::count(&config, &store, &segment, by.as_deref()).await
            }
        };
        store.flush_and_close().await?;
        outcome
    })
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(path: Option<PathBuf>) -> anyhow::Result<Config> {
    let mut config = match path {
        Some(p) => Config::from_file(&p)?,
        None => Config::embedded(),
    };
    config.apply_env();
    Ok(config)
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn serve(config: Option<PathBuf>, listen: Option<std::net::SocketAddr>) -> anyhow::Result<()> {
    baraza::telemetry::init_logging();
    let mut config = load_config(config)?;
    if let Some(addr) = listen {
        config.listen = addr;
    }
    runtime()?.block_on(async move {
        let addr = config.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        config.settle_public_url(listener.local_addr()?);
        let gateway = std::sync::Arc::new(server::build_gateway(config).await?);
        let shutdown = server::shutdown_signal(std::sync::Arc::clone(&gateway));
        server::serve(gateway, listener, shutdown).await
    })
}

fn smsc_sim(
    sim: baraza::smpp::smsc_sim::SimConfig,
    listen: std::net::SocketAddr,
    http: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    baraza::telemetry::init_logging();
    runtime()?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
        // Scripts and tests wait for this line (it carries the real port for port 0).
        eprintln!("smsc-sim listening on {}", listener.local_addr()?);
        let shutdown = async {
            use tokio::signal::unix::{SignalKind, signal};
            match signal(SignalKind::terminate()) {
                Ok(mut term) => {
                    tokio::select! {
                        _ = tokio::signal::ctrl_c() => {}
                        _ = term.recv() => {}
                    }
                }
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        };
        let simulator = baraza::smpp::smsc_sim::SmscSim::new(sim);
        if let Some(http) = http {
            let control = tokio::net::TcpListener::bind(http)
                .await
                .map_err(|e| anyhow::anyhow!("cannot listen on {http}: {e}"))?;
            eprintln!(
                "smsc-sim control endpoint on http://{}",
                control.local_addr()?
            );
            let app = baraza::smpp::sim_http::router(simulator.handle());
            tokio::spawn(async move {
                let _ = axum::serve(control, app).await;
            });
        }
        simulator.run(listener, shutdown).await?;
        Ok(())
    })
}

fn send(
    config: Option<PathBuf>,
    operator: String,
    to: String,
    text: String,
    from: Option<String>,
    wait: u64,
) -> anyhow::Result<()> {
    use baraza::smpp::esme::{Esme, Inbound, SubmitOutcome, SubmitRequest};
    let config = load_config(config)?;
    let Some(account) = config.smpp.operators.iter().find(|o| o.name == operator) else {
        let known: Vec<&str> = config
            .smpp
            .operators
            .iter()
            .map(|o| o.name.as_str())
            .collect();
        anyhow::bail!(
            "no operator `{operator}` in the config (known: {})",
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        );
    };
    let normalise = account.receipt_ids;
    let from = from.unwrap_or_else(|| account.sender.clone());
    let bind = account.bind_config();
    let budget = std::time::Duration::from_secs(wait.max(1));
    runtime()?.block_on(async move {
        let (esme, mut inbound) = Esme::start(bind);
        let request = SubmitRequest {
            to,
            from,
            text,
            registered_delivery: true,
            waited: std::time::Duration::ZERO,
        };
        let outcomes = tokio::time::timeout(budget, esme.submit(request))
            .await
            .map_err(|_| anyhow::anyhow!("no bind or no answer within {} s", budget.as_secs()))?
            .map_err(|e| anyhow::anyhow!("submit refused: {e}"))?;
        let mut waiting = std::collections::BTreeSet::new();
        for (part, outcome) in outcomes.iter().enumerate() {
            println!("part {}: {outcome:?}", part + 1);
            if let SubmitOutcome::Accepted { message_id } = outcome {
                waiting.insert(normalise.submit_id(message_id));
            }
        }
        let deadline = tokio::time::Instant::now() + budget;
        while !waiting.is_empty() {
            match tokio::time::timeout_at(deadline, inbound.recv())
                .await
                .map(|d| d.map(|d| d.message))
            {
                Ok(Some(Inbound::Receipt(receipt))) => {
                    let id = normalise.receipt_id(&receipt.message_id);
                    if waiting.remove(&id) {
                        println!(
                            "receipt {}: {:?}{}",
                            receipt.message_id,
                            receipt.state,
                            receipt
                                .error
                                .as_deref()
                                .map(|e| format!(" (error {e})"))
                                .unwrap_or_default()
                        );
                    }
                }
                Ok(Some(Inbound::Deliver { from, text, .. })) => {
                    println!("incoming from {from}: {text}")
                }
                Ok(Some(Inbound::Ussd(sm))) => {
                    println!("incoming USSD from {}", sm.source_addr)
                }
                Ok(None) => break,
                Err(_) => {
                    println!(
                        "no receipt within {} s for {} part(s)",
                        budget.as_secs(),
                        waiting.len()
                    );
                    break;
                }
            }
        }
        esme.unbind().await;
        let refused = outcomes
            .iter()
            .any(|o| !matches!(o, SubmitOutcome::Accepted { .. }));
        if refused {
            anyhow::bail!("not every part was accepted");
        }
        Ok(())
    })
}

fn export(
    config: Option<PathBuf>,
    flow_id: String,
    out: Option<PathBuf>,
    raw_numbers: bool,
) -> anyhow::Result<()> {
    let config = load_config(config)?;
    let key = if raw_numbers {
        None
    } else {
        Some(baraza::pseudonym::Pseudonymiser::new(
            &config.pseudonym_key()?,
        ))
    };
    // Result names in the order the flow asks them (every loaded version), then any others
    // found in the stored answers.
    let mut names: Vec<String> = Vec::new();
    if let Ok(catalog) =
        baraza::flow::catalog::FlowCatalog::load(std::slice::from_ref(&config.flows_dir))
    {
        for flow in catalog.versions_of(&flow_id) {
            for node in flow.flow.nodes.values() {
                if let Some(r) = node.result()
                    && !names.iter().any(|n| n == r)
                {
                    names.push(r.to_string());
                }
            }
        }
    }
    runtime()?.block_on(async move {
        let store = server::open_result_store(&config).await?;
        let rows = store.responses(&flow_id).await?;
        for row in &rows {
            for name in row.answers.keys() {
                if !names.iter().any(|n| n == name) {
                    names.push(name.clone());
                }
            }
        }
        let count = rows.len();
        match &out {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                result_store::export::export_csv(
                    &rows,
                    &names,
                    key.as_ref(),
                    std::io::BufWriter::new(file),
                )?;
                eprintln!("{count} responses written to {}", path.display());
            }
            None => {
                result_store::export::export_csv(
                    &rows,
                    &names,
                    key.as_ref(),
                    std::io::stdout().lock(),
                )?;
            }
        }
        store.flush_and_close().await?;
        Ok(())
    })
}

fn check(paths: Vec<PathBuf>, audio_dir: Option<PathBuf>, config: Option<PathBuf>) -> ExitCode {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("flows")]
    } else {
        paths
    };
    let options = baraza::flow::CheckOptions { audio_dir };
    let report = baraza::flow::check_paths_with(&paths, &options);
    print!("{}", baraza::flow::render_report(&report));
    let segments_ok = check_segments(&paths, config);
    if report.has_errors() || !segments_ok {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// Checks `campaigns/segments.yaml` in each checked folder that has one against the contact
/// fields of `config`; prints every mistake. Whether all were sound.
fn check_segments(paths: &[PathBuf], config: Option<PathBuf>) -> bool {
    let files: Vec<PathBuf> = paths
        .iter()
        .map(|dir| dir.join("campaigns").join("segments.yaml"))
        .filter(|file| file.is_file())
        .collect();
    if files.is_empty() {
        return true;
    }
    let schema = load_config(config).and_then(|config| {
        baraza::contacts::ContactSchema::from_config(&config.contacts)
            .map_err(|e| anyhow::anyhow!("contacts: {e}"))
    });
    let schema = match schema {
        Ok(schema) => schema,
        Err(e) => {
            eprintln!("segments not checked: {e:#}");
            return false;
        }
    };
    let mut sound = true;
    for file in files {
        match baraza::contacts::segment::Segments::load(&file, &schema) {
            Ok(segments) => println!(
                "{}: {} segment(s), all sound",
                file.display(),
                segments.segments.len()
            ),
            Err(errors) => {
                sound = false;
                for error in errors {
                    println!("error: {error}");
                }
            }
        }
    }
    sound
}

/// Loads a flow for the simulator: the checker's loader (placed errors), then compiled.
/// Only errors stop it; warnings are the checker's business.
fn load_one(path: &PathBuf) -> Result<CompiledFlow, String> {
    let source = baraza::flow::load_file(path).map_err(|diagnostics| {
        diagnostics
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    })?;
    let errors: Vec<String> = baraza::flow::check(&source)
        .into_iter()
        .filter(|d| d.severity == baraza::flow::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    if !errors.is_empty() {
        return Err(format!(
            "{}\n(run `baraza check {}` for details)",
            errors.join("\n"),
            path.display()
        ));
    }
    CompiledFlow::compile(source.flow).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

fn simulate(
    path: PathBuf,
    channel: Channel,
    lang: Option<String>,
    input: Option<String>,
    contact: Vec<(String, String)>,
) -> ExitCode {
    let flow = match load_one(&path) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    let options = simulator::Options {
        channel,
        language: lang,
        contact: contact.into_iter().collect::<BTreeMap<_, _>>(),
        ..simulator::Options::default()
    };
    match input {
        Some(script) => {
            let items = simulator::parse_script(&script);
            print!("{}", simulator::run_script(&flow, options, &items));
            ExitCode::SUCCESS
        }
        None => {
            let stdin = std::io::stdin();
            if !stdin.is_terminal() {
                eprintln!("(reading answers from standard input, one per line)");
            }
            let mut input = stdin.lock();
            let mut output = std::io::stdout();
            match simulator::run_interactive(&flow, options, &mut input, &mut output) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("simulator: {e}");
                    ExitCode::from(1)
                }
            }
        }
    }
}
