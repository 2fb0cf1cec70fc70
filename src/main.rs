//! The `baraza` command line: check flows, simulate them, serve the gateway.
//!
//! Only argument parsing and wiring live here; every command's work is in the library.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use baraza::engine::{Channel, CompiledFlow};
use baraza::simulator;

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
        Command::Check { paths } => check(paths),
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
    }
}

fn check(paths: Vec<PathBuf>) -> ExitCode {
    let paths = if paths.is_empty() {
        vec![PathBuf::from("flows")]
    } else {
        paths
    };
    let mut errors = 0;
    for path in &paths {
        match load_one(path) {
            Ok(f) => println!(
                "{}: ok ({} v{}, {} nodes)",
                path.display(),
                f.flow.id,
                f.flow.version,
                f.flow.nodes.len()
            ),
            Err(e) => {
                errors += 1;
                eprintln!("{e}");
            }
        }
    }
    if errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

fn load_one(path: &PathBuf) -> Result<CompiledFlow, String> {
    let source = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let flow = serde_saphyr::from_str(&source).map_err(|e| format!("{}: {e}", path.display()))?;
    CompiledFlow::compile(flow).map_err(|errs| {
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
