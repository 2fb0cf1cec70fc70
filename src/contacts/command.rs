//! The `baraza contacts` commands (import, export, count) from a loaded config to their
//! output: `main.rs` only parses arguments and calls these.
//!
//! Reports go to standard error (notices, progress), results to standard output (the
//! import's summary, the CSV, the counts). It never prints a number unless `--raw-numbers`
//! asks for them.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};

use crate::config::Config;
use crate::result_store::ResultStore;

use super::ContactSchema;
use super::export::{count_contacts, export_contacts};
use super::import::{Console, DEFAULT_BATCH_ROWS, ImportOptions, import_file, parse_mapping};
use super::segment::Segments;

/// The time now, ms since the epoch.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Where the segments are: `contacts.segments_file`, or `campaigns/segments.yaml` in the
/// flows folder.
pub fn segments_path(config: &Config) -> PathBuf {
    config
        .contacts
        .segments_file
        .clone()
        .unwrap_or_else(|| config.flows_dir.join("campaigns").join("segments.yaml"))
}

fn schema(config: &Config) -> anyhow::Result<ContactSchema> {
    Ok(ContactSchema::from_config(&config.contacts)?)
}

fn load_segments(config: &Config, schema: &ContactSchema) -> anyhow::Result<Segments> {
    Segments::load(&segments_path(config), schema).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow!("{}", lines.join("\n"))
    })
}

/// `baraza contacts import FILE [--map COLUMN=FIELD ...] [--dry-run]`.
pub async fn import(
    config: &Config,
    store: &ResultStore,
    file: &Path,
    maps: &[String],
    dry_run: bool,
) -> anyhow::Result<()> {
    let schema = schema(config)?;
    let mappings = maps
        .iter()
        .map(|m| parse_mapping(m))
        .collect::<Result<Vec<_>, _>>()?;
    let options = ImportOptions {
        dry_run,
        mappings,
        batch_rows: DEFAULT_BATCH_ROWS,
        now_ms: now_ms(),
    };
    let size = std::fs::metadata(file)
        .with_context(|| format!("cannot read {}", file.display()))?
        .len();
    let mut console = Console::new(size, std::io::stderr().is_terminal());
    let outcome = import_file(store, &schema, file, &options, &mut console).await;
    console.finish();
    let summary = outcome?;
    let note = if dry_run {
        " (dry run: nothing written)"
    } else {
        ""
    };
    println!("{}: {summary}{note}", file.display());
    Ok(())
}

/// `baraza contacts export [--segment NAME] [--raw-numbers] [--out FILE]`.
pub async fn export(
    config: &Config,
    store: &ResultStore,
    segment: Option<&str>,
    raw_numbers: bool,
    out: Option<&Path>,
) -> anyhow::Result<()> {
    let schema = schema(config)?;
    let segments = match segment {
        Some(_) => Some(load_segments(config, &schema)?),
        None => None,
    };
    let chosen = match (&segments, segment) {
        (Some(all), Some(name)) => Some(all.get(name).map_err(|e| anyhow!(e))?),
        _ => None,
    };
    let pseudonyms = if raw_numbers {
        None
    } else {
        Some(crate::pseudonym::Pseudonymiser::new(
            &config.pseudonym_key()?,
        ))
    };
    let now = now_ms();
    match out {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            let writer = std::io::BufWriter::new(file);
            let n = export_contacts(store, &schema, chosen, pseudonyms.as_ref(), now, writer);
            eprintln!("{} contacts written to {}", n.await?, path.display());
        }
        None => {
            let writer = std::io::stdout().lock();
            export_contacts(store, &schema, chosen, pseudonyms.as_ref(), now, writer).await?;
        }
    }
    Ok(())
}

/// `baraza contacts count --segment NAME [--by FIELD]`: `total N`, then `VALUE<TAB>N` per
/// value of the field, most frequent first.
pub async fn count(
    config: &Config,
    store: &ResultStore,
    segment: &str,
    by: Option<&str>,
) -> anyhow::Result<()> {
    let schema = schema(config)?;
    let segments = load_segments(config, &schema)?;
    let chosen = segments.get(segment).map_err(|e| anyhow!(e))?;
    let field = match by {
        Some(name) => Some(schema.field_named(name).ok_or_else(|| {
            anyhow!(
                "--by {name}: not a contact field (fields: {})",
                schema.field_names().join(", ")
            )
        })?),
        None => None,
    };
    let counts = count_contacts(store, &schema, chosen, field, now_ms()).await?;
    print!("{}", render_counts(&counts, by.is_some()));
    Ok(())
}

/// `total N`, then (grouped) one `VALUE<TAB>N` line per value, most frequent first.
fn render_counts(counts: &BTreeMap<String, u64>, grouped: bool) -> String {
    let total: u64 = counts.values().sum();
    let mut out = format!("total\t{total}\n");
    if grouped {
        let mut rows: Vec<(&String, &u64)> = counts.iter().collect();
        rows.sort_by(|a, b| b.1.cmp(a.1).then_with(|| a.0.cmp(b.0)));
        for (value, n) in rows {
            out.push_str(&format!("{value}\t{n}\n"));
        }
    }
    out
}
