//! `baraza contacts export` and `baraza contacts count`: the contact list (or one segment of
//! it) streamed out of the result store, as CSV or as counts.
//!
//! Export columns: `contact` (the number's pseudonym, the same as in logs and result exports)
//! or `number` (E.164, only when raw numbers are asked for), then `name, language, channel,
//! gender, birth_year, age_band`, the declared location and custom fields, `operator,
//! consent, consent_source, consent_at, created_at, updated_at, last_seen_at` (times RFC 3339
//! UTC). Cells a spreadsheet could run as a formula are neutralised as in the result export.
//! Without a segment every contact is exported, opted-out ones included (their `consent`
//! column says so); a segment never holds an opted-out contact.
//!
//! It never holds the whole list in memory (pages of [`crate::result_store::contacts::CONTACT_PAGE`])
//! and never writes a raw number unless asked.

use std::collections::BTreeMap;

use crate::pseudonym::Pseudonymiser;
use crate::result_store::export::{format_utc_ms, neutralise};
use crate::result_store::{ContactRecord, ResultStore, ResultStoreError};

use super::segment::{Segment, field_value};
use super::{ContactSchema, Field};

/// Why an export or count stopped.
#[derive(Debug, thiserror::Error)]
pub enum ContactExportError {
    #[error("result store: {0}")]
    Store(#[from] ResultStoreError),
    #[error("writing CSV: {0}")]
    Csv(#[from] csv::Error),
    #[error("writing CSV: {0}")]
    Io(#[from] std::io::Error),
}

/// Calls `each` with every contact (of `segment`, when given), in number order.
async fn for_each_contact(
    store: &ResultStore,
    schema: &ContactSchema,
    segment: Option<&Segment>,
    now_ms: i64,
    mut each: impl FnMut(&ContactRecord) -> Result<(), ContactExportError>,
) -> Result<(), ContactExportError> {
    let mut pages = store.contacts_stream();
    while let Some(page) = pages.recv().await {
        for contact in page? {
            if segment.is_none_or(|s| s.contains(schema, &contact, now_ms)) {
                each(&contact)?;
            }
        }
    }
    Ok(())
}

/// Writes the contacts as CSV; how many were written.
pub async fn export_contacts(
    store: &ResultStore,
    schema: &ContactSchema,
    segment: Option<&Segment>,
    pseudonyms: Option<&Pseudonymiser>,
    now_ms: i64,
    out: impl std::io::Write,
) -> Result<u64, ContactExportError> {
    let mut writer = csv::WriterBuilder::new()
        .terminator(csv::Terminator::CRLF)
        .from_writer(out);
    let builtins = [
        Field::Name,
        Field::Language,
        Field::Channel,
        Field::Gender,
        Field::BirthYear,
        Field::AgeBand,
    ];
    let declared: Vec<Field> = (0..schema.declared().len()).map(Field::Declared).collect();
    let mut header = vec![if pseudonyms.is_some() {
        "contact"
    } else {
        "number"
    }];
    header.extend(builtins.iter().chain(&declared).map(|f| schema.name_of(*f)));
    header.extend([
        "operator",
        "consent",
        "consent_source",
        "consent_at",
        "created_at",
        "updated_at",
        "last_seen_at",
    ]);
    writer.write_record(&header)?;
    let mut written = 0u64;
    for_each_contact(store, schema, segment, now_ms, |contact| {
        let id = match pseudonyms {
            Some(p) => p.of(&contact.msisdn),
            None => contact.msisdn.clone(),
        };
        let mut row: Vec<String> = vec![id];
        for field in builtins.iter().chain(&declared) {
            let value = field_value(schema, contact, *field).unwrap_or_default();
            row.push(neutralise(&value).into_owned());
        }
        let consent = contact.consent.as_ref();
        row.push(contact.operator.clone().unwrap_or_default());
        row.push(consent.map_or(String::new(), |c| c.status.as_str().into()));
        row.push(consent.map_or(String::new(), |c| c.source.as_str().into()));
        row.push(consent.map_or(String::new(), |c| format_utc_ms(c.at_ms)));
        row.push(format_utc_ms(contact.created_at_ms));
        row.push(format_utc_ms(contact.updated_at_ms));
        row.push(
            contact
                .last_seen_at_ms
                .map(format_utc_ms)
                .unwrap_or_default(),
        );
        writer.write_record(&row)?;
        written += 1;
        Ok(())
    })
    .await?;
    writer.flush()?;
    Ok(written)
}

/// The value counts group under when a contact has none.
pub const MISSING: &str = "(missing)";

/// How many contacts are in `segment`, grouped by the value of `by` when given (one group,
/// keyed `""`, otherwise).
pub async fn count_contacts(
    store: &ResultStore,
    schema: &ContactSchema,
    segment: &Segment,
    by: Option<Field>,
    now_ms: i64,
) -> Result<BTreeMap<String, u64>, ContactExportError> {
    let mut counts = BTreeMap::new();
    for_each_contact(store, schema, Some(segment), now_ms, |contact| {
        let key = match by {
            Some(field) => {
                field_value(schema, contact, field).unwrap_or_else(|| MISSING.to_string())
            }
            None => String::new(),
        };
        *counts.entry(key).or_insert(0) += 1;
        Ok(())
    })
    .await?;
    Ok(counts)
}
