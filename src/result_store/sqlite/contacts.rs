//! Contacts and consent in SQLite: reads on query-only connections, each batch of writes in
//! one `BEGIN IMMEDIATE` transaction on a connection of its own (waiting for the writer's
//! lock like another process would). The statements are shared with PostgreSQL
//! (`result_store::contacts`); only the `IN` lists are this dialect's own.

use std::path::Path;

use rusqlite::{TransactionBehavior, params, params_from_iter};

use super::{open_connection, open_reader, sqlite_error};
use crate::result_store::ResultStoreError;
use crate::result_store::contacts::{
    CONSENT_ALWAYS, CONSENT_COLUMNS, CONSENT_IF_UNKNOWN, CONTACT_SELECT, ConsentChange,
    ConsentRecord, ConsentRule, ContactBatch, ContactRecord, INSERT_CONSENT_LOG, MARK_SEEN,
    PAGE_AFTER, PAGE_FIRST, SELECT_CONSENT_LOG, UPSERT_CONTACT, consent_columns, fields_json,
    stored_fields,
};

/// `?1, ?2, ... ?n`, for an `IN` list of `n` numbers.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("?{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn contact_row(row: &rusqlite::Row<'_>) -> Result<ContactRecord, ResultStoreError> {
    let get_err = sqlite_error;
    let fields: String = row.get(8).map_err(get_err)?;
    Ok(ContactRecord {
        msisdn: row.get(0).map_err(get_err)?,
        name: row.get(1).map_err(get_err)?,
        language: row.get(2).map_err(get_err)?,
        channel: row.get(3).map_err(get_err)?,
        gender: row.get(4).map_err(get_err)?,
        birth_year: row.get(5).map_err(get_err)?,
        age_band: row.get(6).map_err(get_err)?,
        operator: row.get(7).map_err(get_err)?,
        fields: stored_fields(&fields)?,
        created_at_ms: row.get(9).map_err(get_err)?,
        updated_at_ms: row.get(10).map_err(get_err)?,
        last_seen_at_ms: row.get(11).map_err(get_err)?,
        consent: consent_columns(
            row.get(12).map_err(get_err)?,
            row.get(13).map_err(get_err)?,
            row.get(14).map_err(get_err)?,
            row.get(15).map_err(get_err)?,
            row.get(16).map_err(get_err)?,
        )?,
    })
}

/// The consent columns of a consent or consent log row (number first).
fn consent_row(row: &rusqlite::Row<'_>) -> Result<(String, ConsentRecord), ResultStoreError> {
    let msisdn: String = row.get(0).map_err(sqlite_error)?;
    let consent = consent_columns(
        row.get(1).map_err(sqlite_error)?,
        row.get(2).map_err(sqlite_error)?,
        row.get(3).map_err(sqlite_error)?,
        row.get(4).map_err(sqlite_error)?,
        row.get(5).map_err(sqlite_error)?,
    )?
    .ok_or_else(|| ResultStoreError::Corrupt("a consent row has empty columns".into()))?;
    Ok((msisdn, consent))
}

/// The rows `select` (a query ending in `WHERE <column> IN`) finds for `msisdns`, read by
/// `row_fn`, a list of at most 10,000 numbers per statement (SQLite allows 32766 parameters).
fn read_by_msisdn<T>(
    path: &Path,
    select: &str,
    msisdns: &[String],
    row_fn: impl Fn(&rusqlite::Row<'_>) -> Result<T, ResultStoreError>,
) -> Result<Vec<T>, ResultStoreError> {
    let conn = open_reader(path)?;
    let mut out = Vec::with_capacity(msisdns.len());
    for chunk in msisdns.chunks(10_000) {
        let sql = format!("{select} ({})", placeholders(chunk.len()));
        let mut stmt = conn.prepare(&sql).map_err(sqlite_error)?;
        let mut rows = stmt
            .query(params_from_iter(chunk.iter()))
            .map_err(sqlite_error)?;
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            out.push(row_fn(row)?);
        }
    }
    Ok(out)
}

/// See [`crate::result_store::ResultStore::contacts_by_msisdn`].
pub(in crate::result_store) fn read_contacts(
    path: &Path,
    msisdns: &[String],
) -> Result<Vec<ContactRecord>, ResultStoreError> {
    let select = format!("{CONTACT_SELECT} WHERE c.msisdn IN");
    read_by_msisdn(path, &select, msisdns, contact_row)
}

/// See [`crate::result_store::ResultStore::contacts_page`].
pub(in crate::result_store) fn read_page(
    path: &Path,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ContactRecord>, ResultStoreError> {
    let conn = open_reader(path)?;
    let mut out = Vec::new();
    let mut push = |rows: &mut rusqlite::Rows<'_>| -> Result<(), ResultStoreError> {
        while let Some(row) = rows.next().map_err(sqlite_error)? {
            out.push(contact_row(row)?);
        }
        Ok(())
    };
    match after {
        None => {
            let mut stmt = conn
                .prepare(&format!("{CONTACT_SELECT} {PAGE_FIRST}"))
                .map_err(sqlite_error)?;
            push(&mut stmt.query(params![limit]).map_err(sqlite_error)?)?;
        }
        Some(after) => {
            let mut stmt = conn
                .prepare(&format!("{CONTACT_SELECT} {PAGE_AFTER}"))
                .map_err(sqlite_error)?;
            push(&mut stmt.query(params![limit, after]).map_err(sqlite_error)?)?;
        }
    }
    Ok(out)
}

/// See [`crate::result_store::ResultStore::write_contacts`].
pub(in crate::result_store) fn write_batch(
    path: &Path,
    batch: &ContactBatch,
) -> Result<Vec<bool>, ResultStoreError> {
    let mut conn = open_connection(path)?;
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite_error)?;
    {
        let mut upsert = tx.prepare(UPSERT_CONTACT).map_err(sqlite_error)?;
        for c in &batch.contacts {
            upsert
                .execute(params![
                    c.msisdn,
                    c.name,
                    c.language,
                    c.channel,
                    c.gender,
                    c.birth_year,
                    c.age_band,
                    c.operator,
                    fields_json(&c.fields),
                    c.created_at_ms,
                    c.updated_at_ms,
                    c.last_seen_at_ms,
                ])
                .map_err(sqlite_error)?;
        }
    }
    let mut changed = Vec::with_capacity(batch.consent.len());
    {
        let mut always = tx.prepare(CONSENT_ALWAYS).map_err(sqlite_error)?;
        let mut if_unknown = tx.prepare(CONSENT_IF_UNKNOWN).map_err(sqlite_error)?;
        let mut log = tx.prepare(INSERT_CONSENT_LOG).map_err(sqlite_error)?;
        for (ConsentChange { msisdn, consent }, rule) in &batch.consent {
            let values = params![
                msisdn,
                consent.status.as_str(),
                consent.source.as_str(),
                consent.channel,
                consent.changed_by,
                consent.at_ms,
            ];
            let stmt = match rule {
                ConsentRule::Always => &mut always,
                ConsentRule::IfUnknown => &mut if_unknown,
            };
            let rows = stmt.execute(values).map_err(sqlite_error)?;
            if rows > 0 {
                log.execute(values).map_err(sqlite_error)?;
            }
            changed.push(rows > 0);
        }
    }
    tx.commit().map_err(sqlite_error)?;
    Ok(changed)
}

/// The consent rows of `msisdns`.
pub(in crate::result_store) fn read_consent(
    path: &Path,
    msisdns: &[String],
) -> Result<Vec<(String, ConsentRecord)>, ResultStoreError> {
    let select = format!("SELECT {CONSENT_COLUMNS} FROM consent WHERE msisdn IN");
    read_by_msisdn(path, &select, msisdns, consent_row)
}

/// See [`crate::result_store::ResultStore::consent_log`].
pub(in crate::result_store) fn read_consent_log(
    path: &Path,
    msisdn: &str,
) -> Result<Vec<ConsentChange>, ResultStoreError> {
    let conn = open_reader(path)?;
    let mut stmt = conn.prepare(SELECT_CONSENT_LOG).map_err(sqlite_error)?;
    let mut rows = stmt.query(params![msisdn]).map_err(sqlite_error)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sqlite_error)? {
        let (msisdn, consent) = consent_row(row)?;
        out.push(ConsentChange { msisdn, consent });
    }
    Ok(out)
}

/// See [`crate::result_store::ResultStore::contact_seen`].
pub(in crate::result_store) fn mark_seen(
    path: &Path,
    msisdn: &str,
    at_ms: i64,
) -> Result<bool, ResultStoreError> {
    let conn = open_connection(path)?;
    let rows = conn
        .execute(MARK_SEEN, params![msisdn, at_ms])
        .map_err(sqlite_error)?;
    Ok(rows > 0)
}
