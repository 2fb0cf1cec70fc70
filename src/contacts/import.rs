//! `baraza contacts import`: a CSV file of contacts, however a spreadsheet wrote it, into the
//! result store.
//!
//! The file is read as a stream (UTF-8 with or without a BOM; comma, semicolon or tab,
//! guessed from the header line; quoted cells with commas and newlines) and written in
//! transactional batches, so memory stays nearly flat (a few tens of bytes per distinct
//! number, to find duplicates) and a re-run after a crash finishes the job. Header names are matched
//! without case and through aliases (`phone`, `msisdn`, `simu`...), or by `--map`.
//!
//! Each row is normalised by the [`ContactSchema`]; a bad row is reported as
//! `FILE:LINE: reason` and skipped. A row whose number an earlier row of the file already had
//! is merged into it: it only fills fields still empty (the first row wins), so importing a
//! file again changes nothing. An empty cell never erases a stored value. Consent from a file
//! can opt a number out, or record an opt-in where nothing is recorded yet; it never undoes an
//! opt-out. Reports never quote a number or a name.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::result_store::{
    ConsentChange, ConsentRecord, ConsentRule, ConsentSource, ConsentStatus, ContactBatch,
    ContactRecord, ResultStore, ResultStoreError,
};

use super::{ContactSchema, Field, squash};

/// Rows written per transaction.
pub const DEFAULT_BATCH_ROWS: usize = 500;

/// How to import.
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// Read and check everything, compare with the store, write nothing.
    pub dry_run: bool,
    /// `COLUMN=FIELD` overrides of the header matching (`FIELD` may be `ignore`).
    pub mappings: Vec<(String, String)>,
    /// Rows per transaction.
    pub batch_rows: usize,
    /// The time written as created / updated / consent time, ms since the epoch.
    pub now_ms: i64,
}

/// What an import did, by row (the header is not a row).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Data rows read.
    pub rows: u64,
    /// Rows whose number was not stored before.
    pub new: u64,
    /// Rows that changed a stored contact (or its consent).
    pub updated: u64,
    /// Rows that matched the store already.
    pub unchanged: u64,
    /// Rows skipped with a reason.
    pub rejected: u64,
    /// Rows whose number an earlier row of the file had, merged into it.
    pub duplicates: u64,
    /// Rows with no value in any cell, skipped silently.
    pub blank: u64,
}

impl ImportSummary {
    /// Every row is counted exactly once.
    pub fn accounts_for_every_row(&self) -> bool {
        self.new + self.updated + self.unchanged + self.rejected + self.duplicates + self.blank
            == self.rows
    }
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rows: {} new, {} updated, {} unchanged, {} rejected, {} duplicates merged",
            self.rows, self.new, self.updated, self.unchanged, self.rejected, self.duplicates
        )?;
        if self.blank > 0 {
            write!(f, ", {} blank", self.blank)?;
        }
        Ok(())
    }
}

/// What a notice says about a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoticeKind {
    /// The row was skipped.
    Rejected,
    /// The row was merged into an earlier row with the same number.
    Merged,
    /// Something the user should know that skipped nothing (an ignored column, a consent
    /// the file could not change).
    Note,
}

/// One line of the report: `FILE:LINE: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub file: String,
    /// 1-based line where the row starts (the header is line 1).
    pub line: u64,
    pub kind: NoticeKind,
    pub message: String,
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

/// Where an import reports as it goes (a progress bar, plain lines, a test's list).
pub trait Observer {
    /// A line's notice, as soon as it is known.
    fn notice(&mut self, notice: &Notice);
    /// After each batch: bytes of the file read so far, rows so far.
    fn progress(&mut self, _bytes: u64, _rows: u64) {}
}

/// Collects notices (tests, `--dry-run` callers).
#[derive(Debug, Default)]
pub struct Collect(pub Vec<Notice>);

impl Observer for Collect {
    fn notice(&mut self, notice: &Notice) {
        self.0.push(notice.clone());
    }
}

/// Reports to standard error: an indicatif progress bar on a terminal, otherwise a plain line
/// every 100,000 rows; notices as they come.
pub struct Console {
    bar: Option<indicatif::ProgressBar>,
    next_line_at: u64,
}

impl Console {
    /// `file_len` sizes the bar; `terminal`: whether standard error is one.
    pub fn new(file_len: u64, terminal: bool) -> Console {
        let bar = terminal.then(|| {
            let bar = indicatif::ProgressBar::new(file_len);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {msg} ({eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            bar
        });
        Console {
            bar,
            next_line_at: PLAIN_PROGRESS_EVERY,
        }
    }

    /// Removes the bar before the summary is printed.
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// Rows between two plain progress lines.
const PLAIN_PROGRESS_EVERY: u64 = 100_000;

impl Observer for Console {
    fn notice(&mut self, notice: &Notice) {
        match &self.bar {
            Some(bar) => bar.println(notice.to_string()),
            None => eprintln!("{notice}"),
        }
    }

    fn progress(&mut self, bytes: u64, rows: u64) {
        match &self.bar {
            Some(bar) => {
                bar.set_position(bytes);
                bar.set_message(format!("{rows} rows"));
            }
            None if rows >= self.next_line_at => {
                eprintln!("{rows} rows read");
                self.next_line_at = rows - rows % PLAIN_PROGRESS_EVERY + PLAIN_PROGRESS_EVERY;
            }
            None => {}
        }
    }
}

/// Why an import could not run at all (a bad row is a notice, not this).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: the file is empty; expected a header line naming at least a phone number column")]
    Empty(String),
    #[error("{0}: not a CSV text file (it holds binary data); export the sheet as CSV UTF-8")]
    Binary(String),
    #[error("{0}:1: the header line is not UTF-8 text; export the sheet as CSV UTF-8")]
    HeaderNotUtf8(String),
    #[error(
        "{file}:1: no column holds phone numbers (columns: {columns}); name one phone, msisdn or number, or use --map COLUMN=number"
    )]
    NoNumberColumn { file: String, columns: String },
    #[error(
        "{file}:1: columns `{first}` and `{second}` both mean `{field}`; use --map to ignore one"
    )]
    SameField {
        file: String,
        first: String,
        second: String,
        field: String,
    },
    #[error("--map {0}: write COLUMN=FIELD")]
    BadMapping(String),
    #[error("--map {column}={field}: the file has no column `{column}`")]
    MappedColumnMissing { column: String, field: String },
    #[error(
        "--map {column}={field}: `{field}` is not a contact field (fields: {known}, or ignore)"
    )]
    MappedFieldUnknown {
        column: String,
        field: String,
        known: String,
    },
    #[error("{file}:{line}: the CSV cannot be read further: {message}")]
    Csv {
        file: String,
        line: u64,
        message: String,
    },
    #[error("result store: {0}")]
    Store(#[from] ResultStoreError),
}

/// `COLUMN=FIELD`, as `--map` takes it.
pub fn parse_mapping(text: &str) -> Result<(String, String), ImportError> {
    text.split_once('=')
        .map(|(c, f)| (c.trim().to_string(), f.trim().to_string()))
        .filter(|(c, f)| !c.is_empty() && !f.is_empty())
        .ok_or_else(|| ImportError::BadMapping(text.to_string()))
}

/// Where the lines of the file start, as far as it has been read: the CSV reader's own line
/// numbers miss line breaks inside quoted cells written as CRLF, so rows are placed by their
/// byte offset instead. Holds only the line breaks not yet passed by a row (a buffer's worth).
#[derive(Debug, Default)]
struct Lines {
    /// Bytes read so far (also the progress bar's position).
    read: u64,
    /// Offsets of the line breaks read and not yet passed.
    breaks: std::collections::VecDeque<u64>,
    /// Line breaks passed.
    passed: u64,
}

impl Lines {
    /// The 1-based line of a record the CSV reader placed at `offset` (offsets only ever
    /// grow). After a CRLF the reader places the next record on the LF that ends the line
    /// before it, so a break at `offset` itself is passed too.
    fn line_at(&mut self, offset: u64) -> u64 {
        while self.breaks.front().is_some_and(|b| *b <= offset) {
            self.breaks.pop_front();
            self.passed += 1;
        }
        self.passed + 1
    }
}

type SharedLines = std::sync::Arc<std::sync::Mutex<Lines>>;

/// Counts bytes and notes line breaks as the CSV reader pulls the file through it.
struct Counting<R> {
    inner: R,
    lines: SharedLines,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Ok(mut lines) = self.lines.lock() {
            let base = lines.read;
            for (i, _) in buf[..n].iter().enumerate().filter(|(_, b)| **b == b'\n') {
                lines.breaks.push_back(base + i as u64);
            }
            lines.read += n as u64;
        }
        Ok(n)
    }
}

/// The line a record starts on.
fn line_of(lines: &SharedLines, record: &csv::ByteRecord) -> u64 {
    let offset = record.position().map_or(0, csv::Position::byte);
    lines.lock().map_or(0, |mut l| l.line_at(offset))
}

/// Bytes looked at to tell text from binary and to guess the delimiter.
const SNIFF_BYTES: usize = 64 * 1024;

/// What the start of the file says: binary or text, and the delimiter of its header line.
fn sniff(file: &str, head: &[u8]) -> Result<u8, ImportError> {
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    if text.iter().all(u8::is_ascii_whitespace) {
        return Err(ImportError::Empty(file.to_string()));
    }
    let valid_utf8 = match std::str::from_utf8(text) {
        Ok(_) => true,
        // Cut in the middle of a character at the end of the sample is fine.
        Err(e) => e.error_len().is_none(),
    };
    if text.contains(&0) || (!valid_utf8 && text.len() < SNIFF_BYTES) {
        // A sample that is not UTF-8 anywhere in it is binary only if it also holds control
        // bytes; a Latin-1 CSV is text with bad rows (reported one by one).
        let control = text
            .iter()
            .filter(|b| b.is_ascii_control() && !matches!(b, b'\n' | b'\r' | b'\t'))
            .count();
        if text.contains(&0) || control > 0 {
            return Err(ImportError::Binary(file.to_string()));
        }
    }
    let header_line = text.split(|b| *b == b'\n').next().unwrap_or(text);
    let mut quoted = false;
    let (mut commas, mut semicolons, mut tabs) = (0, 0, 0);
    for &b in header_line {
        match b {
            b'"' => quoted = !quoted,
            b',' if !quoted => commas += 1,
            b';' if !quoted => semicolons += 1,
            b'\t' if !quoted => tabs += 1,
            _ => {}
        }
    }
    Ok(if semicolons > commas && semicolons >= tabs {
        b';'
    } else if tabs > commas {
        b'\t'
    } else {
        b','
    })
}

/// Which field each column holds (`None`: ignored), from the header and the mappings.
fn map_columns(
    schema: &ContactSchema,
    file: &str,
    headers: &[String],
    mappings: &[(String, String)],
    observer: &mut dyn Observer,
) -> Result<Vec<Option<Field>>, ImportError> {
    for (column, field) in mappings {
        if !headers.iter().any(|h| squash(h) == squash(column)) {
            return Err(ImportError::MappedColumnMissing {
                column: column.clone(),
                field: field.clone(),
            });
        }
    }
    let mut columns = Vec::with_capacity(headers.len());
    for header in headers {
        let mapped = mappings.iter().find(|(c, _)| squash(c) == squash(header));
        let field = match mapped {
            Some((_, field)) if squash(field) == "ignore" => None,
            Some((column, field)) => {
                Some(
                    schema
                        .field_named(field)
                        .ok_or_else(|| ImportError::MappedFieldUnknown {
                            column: column.clone(),
                            field: field.clone(),
                            known: schema.field_names().join(", "),
                        })?,
                )
            }
            None => {
                let field = schema.field_named(header);
                let note = match field {
                    None if header.trim().is_empty() => None,
                    None => Some(format!(
                        "column `{header}` ignored: not a contact field (--map \"{header}\"=FIELD to keep it)"
                    )),
                    Some(Field::Operator | Field::LastSeen) => Some(format!(
                        "column `{header}` ignored: the gateway works it out itself"
                    )),
                    Some(_) => None,
                };
                if let Some(message) = note {
                    observer.notice(&Notice {
                        file: file.to_string(),
                        line: 1,
                        kind: NoticeKind::Note,
                        message,
                    });
                }
                field.filter(|f| !matches!(f, Field::Operator | Field::LastSeen))
            }
        };
        columns.push(field);
    }
    for (i, field) in columns.iter().enumerate() {
        let Some(field) = field else { continue };
        if let Some(j) = columns[..i].iter().position(|f| f.as_ref() == Some(field)) {
            return Err(ImportError::SameField {
                file: file.to_string(),
                first: headers[j].clone(),
                second: headers[i].clone(),
                field: schema.name_of(*field).to_string(),
            });
        }
    }
    if !columns.contains(&Some(Field::Number)) {
        return Err(ImportError::NoNumberColumn {
            file: file.to_string(),
            columns: headers
                .iter()
                .map(|h| format!("`{h}`"))
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(columns)
}

/// One readable row, normalised.
#[derive(Debug, Clone)]
struct Row {
    line: u64,
    msisdn: String,
    /// Fields with a value in this row (never the number or consent).
    values: Vec<(Field, String)>,
    consent: Option<ConsentStatus>,
    /// The line of the earlier row with the same number, when this is a duplicate.
    first_line: Option<u64>,
}

/// The row's values, or why it is refused (every bad cell of the row, joined).
fn read_row(
    schema: &ContactSchema,
    columns: &[Option<Field>],
    record: &csv::ByteRecord,
    line: u64,
    this_year: i32,
) -> Result<Option<Row>, String> {
    if record
        .iter()
        .all(|cell| cell.iter().all(u8::is_ascii_whitespace))
    {
        return Ok(None);
    }
    let extra = record
        .iter()
        .skip(columns.len())
        .any(|cell| !cell.iter().all(u8::is_ascii_whitespace));
    if extra {
        return Err(format!(
            "{} cells, but the header has {}",
            record.len(),
            columns.len()
        ));
    }
    let mut problems = Vec::new();
    let mut number_seen = false;
    let mut row = Row {
        line,
        msisdn: String::new(),
        values: Vec::new(),
        consent: None,
        first_line: None,
    };
    for (cell, field) in record.iter().zip(columns) {
        let Some(field) = field else { continue };
        number_seen |= *field == Field::Number;
        let Ok(text) = std::str::from_utf8(cell) else {
            problems.push(format!(
                "{}: not UTF-8 text (export the sheet as CSV UTF-8)",
                schema.name_of(*field)
            ));
            continue;
        };
        match (field, schema.normalise_value(*field, text, this_year)) {
            (Field::Number, Ok(Some(msisdn))) => row.msisdn = msisdn,
            (Field::Number, Ok(None)) => problems.push("no number".into()),
            (Field::Consent, Ok(value)) => {
                row.consent = value.as_deref().and_then(ConsentStatus::parse);
            }
            (_, Ok(Some(value))) => row.values.push((*field, value)),
            (_, Ok(None)) => {}
            (_, Err(e)) => problems.push(e.to_string()),
        }
    }
    if !number_seen {
        // A row shorter than the header, without the number column.
        problems.insert(0, "no number".into());
    }
    if problems.is_empty() {
        Ok(Some(row))
    } else {
        Err(problems.join("; "))
    }
}

/// The value of `field` in a contact.
pub(super) fn value_of(
    schema: &ContactSchema,
    contact: &ContactRecord,
    field: Field,
) -> Option<String> {
    match field {
        Field::Name => contact.name.clone(),
        Field::Language => contact.language.clone(),
        Field::Channel => contact.channel.clone(),
        Field::Gender => contact.gender.clone(),
        Field::BirthYear => contact.birth_year.map(|y| y.to_string()),
        Field::AgeBand => contact.age_band.clone(),
        Field::Operator => contact.operator.clone(),
        Field::Declared(i) => schema
            .declared()
            .get(i)
            .and_then(|d| contact.fields.get(&d.name).cloned()),
        Field::Number | Field::Consent | Field::LastSeen => None,
    }
}

/// Puts an already normalised `value` (from [`ContactSchema::normalise_value`]) into `field`;
/// the number, operator, consent and last-seen time are not set this way.
pub(crate) fn set_value(
    schema: &ContactSchema,
    contact: &mut ContactRecord,
    field: Field,
    value: String,
) {
    match field {
        Field::Name => contact.name = Some(value),
        Field::Language => contact.language = Some(value),
        Field::Channel => contact.channel = Some(value),
        Field::Gender => contact.gender = Some(value),
        // Checked by `normalise_value`: a year in range.
        Field::BirthYear => contact.birth_year = value.parse().ok(),
        Field::AgeBand => contact.age_band = Some(value),
        Field::Declared(i) => {
            if let Some(d) = schema.declared().get(i) {
                contact.fields.insert(d.name.clone(), value);
            }
        }
        Field::Number | Field::Operator | Field::Consent | Field::LastSeen => {}
    }
}

/// A contact's stored fields without its times and consent, to tell a change from none.
fn same_fields(a: &ContactRecord, b: &ContactRecord) -> bool {
    let strip = |c: &ContactRecord| ContactRecord {
        created_at_ms: 0,
        updated_at_ms: 0,
        last_seen_at_ms: None,
        consent: None,
        ..c.clone()
    };
    strip(a) == strip(b)
}

/// The import of one file, batch by batch.
struct Run<'a> {
    store: &'a ResultStore,
    schema: &'a ContactSchema,
    options: &'a ImportOptions,
    file: String,
    /// `import:<file name>`, the consent log's author.
    author: String,
    observer: &'a mut dyn Observer,
    /// The notices of the batch under way, reported in line order when it is flushed.
    notices: Vec<Notice>,
    /// Number (as digits) -> line of its first row in the file.
    seen: HashMap<u64, u64>,
    summary: ImportSummary,
}

/// The digits of an E.164 number as one integer (15 digits at most: fits).
fn number_key(msisdn: &str) -> u64 {
    msisdn
        .bytes()
        .filter(u8::is_ascii_digit)
        .fold(0u64, |n, d| {
            n.wrapping_mul(10).wrapping_add(u64::from(d - b'0'))
        })
}

impl Run<'_> {
    fn notice(&mut self, line: u64, kind: NoticeKind, message: String) {
        self.notices.push(Notice {
            file: self.file.clone(),
            line,
            kind,
            message,
        });
    }

    /// Tells the observer how far the import is.
    fn progress(&mut self, lines: &SharedLines) {
        let bytes = lines.lock().map_or(0, |l| l.read);
        self.observer.progress(bytes, self.summary.rows);
    }

    /// Reports the batch's notices, in line order.
    fn report(&mut self) {
        self.notices.sort_by_key(|n| n.line);
        for notice in self.notices.drain(..) {
            self.observer.notice(&notice);
        }
    }

    /// Compares a batch of rows with the store, merges duplicates, writes what changed.
    async fn flush(&mut self, rows: Vec<Row>) -> Result<(), ImportError> {
        let written = self.write(rows).await;
        self.report();
        written
    }

    async fn write(&mut self, rows: Vec<Row>) -> Result<(), ImportError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut numbers: Vec<String> = rows.iter().map(|r| r.msisdn.clone()).collect();
        numbers.sort();
        numbers.dedup();
        let stored: HashMap<String, ContactRecord> = self
            .store
            .contacts_by_msisdn(&numbers)
            .await?
            .into_iter()
            .map(|c| (c.msisdn.clone(), c))
            .collect();
        let mut consent: HashMap<String, ConsentRecord> = self
            .store
            .consent_among(&numbers)
            .await?
            .into_iter()
            .collect();
        // The contacts as this batch leaves them, in first-seen order.
        let mut merged: BTreeMap<String, ContactRecord> = BTreeMap::new();
        let mut changes: Vec<(ConsentChange, ConsentRule)> = Vec::new();
        for row in rows {
            let before = merged
                .get(&row.msisdn)
                .or_else(|| stored.get(&row.msisdn))
                .cloned();
            let mut contact = before.clone().unwrap_or_else(|| ContactRecord {
                msisdn: row.msisdn.clone(),
                created_at_ms: self.options.now_ms,
                updated_at_ms: self.options.now_ms,
                ..ContactRecord::default()
            });
            contact.consent = None;
            contact.operator = self.schema.operator_of(&row.msisdn).map(str::to_string);
            let mut kept = Vec::new();
            for (field, value) in &row.values {
                match (row.first_line, value_of(self.schema, &contact, *field)) {
                    (Some(_), Some(existing)) if existing != *value => {
                        kept.push(self.schema.name_of(*field).to_string());
                    }
                    (Some(_), Some(_)) => {}
                    _ => set_value(self.schema, &mut contact, *field, value.clone()),
                }
            }
            let fields_changed = before.as_ref().is_none_or(|b| !same_fields(b, &contact));
            let consent_changed = self.consent_change(&row, &mut consent, &mut changes);
            if let Some(first) = row.first_line {
                self.summary.duplicates += 1;
                let mut message = format!("same number as line {first}; merged");
                if !kept.is_empty() {
                    message.push_str(&format!(" (kept line {first}'s {})", kept.join(", ")));
                }
                self.notice(row.line, NoticeKind::Merged, message);
            } else if before.is_none() {
                self.summary.new += 1;
            } else if fields_changed || consent_changed {
                self.summary.updated += 1;
            } else {
                self.summary.unchanged += 1;
            }
            if fields_changed {
                contact.updated_at_ms = self.options.now_ms;
                merged.insert(row.msisdn.clone(), contact);
            }
        }
        if !self.options.dry_run {
            let batch = ContactBatch {
                contacts: merged.into_values().collect(),
                consent: changes,
            };
            self.store.write_contacts(batch).await?;
        }
        Ok(())
    }

    /// The consent change a row asks for, if it would change anything (noted in `changes`
    /// and `current`); a refused opt-in is reported.
    fn consent_change(
        &mut self,
        row: &Row,
        current: &mut HashMap<String, ConsentRecord>,
        changes: &mut Vec<(ConsentChange, ConsentRule)>,
    ) -> bool {
        let Some(wanted) = row.consent else {
            return false;
        };
        let now = current.get(&row.msisdn);
        let rule = match (wanted, now) {
            (_, Some(c)) if c.status == wanted => return false,
            (ConsentStatus::OptedOut, _) => ConsentRule::Always,
            (ConsentStatus::OptedIn, None) => ConsentRule::IfUnknown,
            (ConsentStatus::OptedIn, Some(c)) => {
                let message = format!(
                    "consent: stays opted out (recorded by {}); only the citizen or the admin API can opt back in",
                    c.source.as_str()
                );
                self.notice(row.line, NoticeKind::Note, message);
                return false;
            }
        };
        let record = ConsentRecord {
            status: wanted,
            source: ConsentSource::Import,
            channel: None,
            changed_by: Some(self.author.clone()),
            at_ms: self.options.now_ms,
        };
        current.insert(row.msisdn.clone(), record.clone());
        changes.push((
            ConsentChange {
                msisdn: row.msisdn.clone(),
                consent: record,
            },
            rule,
        ));
        true
    }
}

/// Imports `path` into `store`, reporting to `observer`; the summary, or why the file could
/// not be imported at all.
pub async fn import_file(
    store: &ResultStore,
    schema: &ContactSchema,
    path: &Path,
    options: &ImportOptions,
    observer: &mut dyn Observer,
) -> Result<ImportSummary, ImportError> {
    let file_name = path.display().to_string();
    let io = |source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut head = Vec::with_capacity(SNIFF_BYTES);
    (&mut file)
        .take(SNIFF_BYTES as u64)
        .read_to_end(&mut head)
        .map_err(io)?;
    let delimiter = sniff(&file_name, &head)?;
    let lines = SharedLines::default();
    let source = Counting {
        inner: std::io::Cursor::new(head).chain(file),
        lines: std::sync::Arc::clone(&lines),
    };
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .flexible(true)
        .has_headers(true)
        .from_reader(std::io::BufReader::new(source));
    let csv_error = |e: csv::Error| ImportError::Csv {
        file: file_name.clone(),
        line: e.position().map_or(0, |p| p.line()),
        message: e.to_string(),
    };
    let header = reader.byte_headers().map_err(csv_error)?.clone();
    let headers = header
        .iter()
        .map(|h| {
            std::str::from_utf8(h)
                .map(|s| s.trim().trim_start_matches('\u{feff}').to_string())
                .map_err(|_| ImportError::HeaderNotUtf8(file_name.clone()))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let columns = map_columns(schema, &file_name, &headers, &options.mappings, observer)?;
    let author = format!(
        "import:{}",
        path.file_name()
            .map_or_else(|| file_name.clone(), |n| n.to_string_lossy().into_owned())
    );
    let this_year = super::dates::Date::of_ms(options.now_ms).year;
    let mut run = Run {
        store,
        schema,
        options,
        file: file_name.clone(),
        author,
        observer,
        notices: Vec::new(),
        seen: HashMap::new(),
        summary: ImportSummary::default(),
    };
    let mut batch: Vec<Row> = Vec::with_capacity(options.batch_rows);
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).map_err(csv_error)? {
        run.summary.rows += 1;
        let line = line_of(&lines, &record);
        match read_row(schema, &columns, &record, line, this_year) {
            Ok(None) => run.summary.blank += 1,
            Ok(Some(mut row)) => {
                let first = *run.seen.entry(number_key(&row.msisdn)).or_insert(row.line);
                if first != row.line {
                    row.first_line = Some(first);
                }
                batch.push(row);
            }
            Err(reason) => {
                run.summary.rejected += 1;
                run.notice(line, NoticeKind::Rejected, reason);
            }
        }
        if batch.len() >= options.batch_rows.max(1) {
            run.flush(std::mem::take(&mut batch)).await?;
            run.progress(&lines);
        }
    }
    run.flush(batch).await?;
    run.progress(&lines);
    Ok(run.summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delimiter_comes_from_the_header_line() {
        assert_eq!(sniff("f", b"phone,name\n1,2").ok(), Some(b','));
        assert_eq!(sniff("f", b"\xEF\xBB\xBFphone;name\n1;2").ok(), Some(b';'));
        assert_eq!(sniff("f", b"\"a;b\",name\n").ok(), Some(b','));
        assert_eq!(sniff("f", b"phone\tname\n").ok(), Some(b'\t'));
        assert!(matches!(sniff("f", b""), Err(ImportError::Empty(_))));
        assert!(matches!(
            sniff("f", b"\xEF\xBB\xBF\n"),
            Err(ImportError::Empty(_))
        ));
        assert!(matches!(
            sniff("f", b"PK\x03\x04\x14\x00\x06\x00"),
            Err(ImportError::Binary(_))
        ));
    }

    #[test]
    fn mappings_are_column_equals_field() {
        assert_eq!(
            parse_mapping(" Simu ya mkononi = number ").ok(),
            Some(("Simu ya mkononi".into(), "number".into()))
        );
        assert!(parse_mapping("number").is_err());
        assert!(parse_mapping("=number").is_err());
    }

    #[test]
    fn numbers_become_distinct_keys() {
        assert_eq!(number_key("+254712345678"), 254_712_345_678);
        assert_ne!(number_key("+254712345678"), number_key("+254712345679"));
    }
}
