//! Contacts and consent in PostgreSQL: reads on connections of their own, each batch of
//! writes in one transaction on a connection of its own. The statements are shared with
//! SQLite (`result_store::contacts`, turned into `$N` parameters); only the `= ANY($1)` lists
//! are this dialect's own. Kept apart from the writer and the connection code on purpose.

use tokio_postgres::types::ToSql;

use super::{Target, pg_error};
use crate::result_store::ResultStoreError;
use crate::result_store::contacts::{
    CONSENT_ALWAYS, CONSENT_COLUMNS, CONSENT_IF_UNKNOWN, CONTACT_SELECT, ConsentChange,
    ConsentRecord, ConsentRule, ContactBatch, ContactRecord, INSERT_CONSENT_LOG, MARK_SEEN,
    PAGE_AFTER, PAGE_FIRST, SELECT_CONSENT_LOG, UPSERT_CONTACT, consent_columns, dollar_params,
    fields_json, stored_fields,
};

fn contact_row(row: &tokio_postgres::Row) -> Result<ContactRecord, ResultStoreError> {
    let fields: String = row.try_get(8).map_err(pg_error)?;
    Ok(ContactRecord {
        msisdn: row.try_get(0).map_err(pg_error)?,
        name: row.try_get(1).map_err(pg_error)?,
        language: row.try_get(2).map_err(pg_error)?,
        channel: row.try_get(3).map_err(pg_error)?,
        gender: row.try_get(4).map_err(pg_error)?,
        birth_year: row.try_get(5).map_err(pg_error)?,
        age_band: row.try_get(6).map_err(pg_error)?,
        operator: row.try_get(7).map_err(pg_error)?,
        fields: stored_fields(&fields)?,
        created_at_ms: row.try_get(9).map_err(pg_error)?,
        updated_at_ms: row.try_get(10).map_err(pg_error)?,
        last_seen_at_ms: row.try_get(11).map_err(pg_error)?,
        consent: consent_columns(
            row.try_get(12).map_err(pg_error)?,
            row.try_get(13).map_err(pg_error)?,
            row.try_get(14).map_err(pg_error)?,
            row.try_get(15).map_err(pg_error)?,
            row.try_get(16).map_err(pg_error)?,
        )?,
    })
}

/// The consent columns of a consent or consent log row (number first).
fn consent_row(row: &tokio_postgres::Row) -> Result<(String, ConsentRecord), ResultStoreError> {
    let msisdn: String = row.try_get(0).map_err(pg_error)?;
    let consent = consent_columns(
        row.try_get(1).map_err(pg_error)?,
        row.try_get(2).map_err(pg_error)?,
        row.try_get(3).map_err(pg_error)?,
        row.try_get(4).map_err(pg_error)?,
        row.try_get(5).map_err(pg_error)?,
    )?
    .ok_or_else(|| ResultStoreError::Corrupt("a consent row has empty columns".into()))?;
    Ok((msisdn, consent))
}

/// See [`crate::result_store::ResultStore::contacts_by_msisdn`].
pub(in crate::result_store) async fn read_contacts(
    target: &Target,
    msisdns: &[String],
) -> Result<Vec<ContactRecord>, ResultStoreError> {
    let client = target.connect().await?;
    let sql = format!("{CONTACT_SELECT} WHERE c.msisdn = ANY($1)");
    client
        .query(&sql, &[&msisdns])
        .await
        .map_err(pg_error)?
        .iter()
        .map(contact_row)
        .collect()
}

/// See [`crate::result_store::ResultStore::contacts_page`].
pub(in crate::result_store) async fn read_page(
    target: &Target,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<ContactRecord>, ResultStoreError> {
    let client = target.connect().await?;
    let rows = match after {
        None => {
            let sql = dollar_params(&format!("{CONTACT_SELECT} {PAGE_FIRST}"));
            client.query(&sql, &[&limit]).await
        }
        Some(after) => {
            let sql = dollar_params(&format!("{CONTACT_SELECT} {PAGE_AFTER}"));
            client.query(&sql, &[&limit, &after]).await
        }
    }
    .map_err(pg_error)?;
    rows.iter().map(contact_row).collect()
}

/// See [`crate::result_store::ResultStore::write_contacts`].
pub(in crate::result_store) async fn write_batch(
    target: &Target,
    batch: &ContactBatch,
) -> Result<Vec<bool>, ResultStoreError> {
    let mut client = target.connect().await?;
    let tx = client.transaction().await.map_err(pg_error)?;
    let upsert = tx
        .prepare(&dollar_params(UPSERT_CONTACT))
        .await
        .map_err(pg_error)?;
    for c in &batch.contacts {
        let fields = fields_json(&c.fields);
        let values: [&(dyn ToSql + Sync); 12] = [
            &c.msisdn,
            &c.name,
            &c.language,
            &c.channel,
            &c.gender,
            &c.birth_year,
            &c.age_band,
            &c.operator,
            &fields,
            &c.created_at_ms,
            &c.updated_at_ms,
            &c.last_seen_at_ms,
        ];
        tx.execute(&upsert, &values).await.map_err(pg_error)?;
    }
    let mut changed = Vec::with_capacity(batch.consent.len());
    if !batch.consent.is_empty() {
        let always = tx
            .prepare(&dollar_params(CONSENT_ALWAYS))
            .await
            .map_err(pg_error)?;
        let if_unknown = tx
            .prepare(&dollar_params(CONSENT_IF_UNKNOWN))
            .await
            .map_err(pg_error)?;
        let log = tx
            .prepare(&dollar_params(INSERT_CONSENT_LOG))
            .await
            .map_err(pg_error)?;
        for (ConsentChange { msisdn, consent }, rule) in &batch.consent {
            let (status, source) = (consent.status.as_str(), consent.source.as_str());
            let values: [&(dyn ToSql + Sync); 6] = [
                msisdn,
                &status,
                &source,
                &consent.channel,
                &consent.changed_by,
                &consent.at_ms,
            ];
            let stmt = match rule {
                ConsentRule::Always => &always,
                ConsentRule::IfUnknown => &if_unknown,
            };
            let rows = tx.execute(stmt, &values).await.map_err(pg_error)?;
            if rows > 0 {
                tx.execute(&log, &values).await.map_err(pg_error)?;
            }
            changed.push(rows > 0);
        }
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(changed)
}

/// The consent rows of `msisdns`.
pub(in crate::result_store) async fn read_consent(
    target: &Target,
    msisdns: &[String],
) -> Result<Vec<(String, ConsentRecord)>, ResultStoreError> {
    let sql = format!("SELECT {CONSENT_COLUMNS} FROM consent WHERE msisdn = ANY($1)");
    // An idle connection may have died with a server restart: a failed read on one is
    // tried once more on a new connection before it counts as the store's failure.
    let pooled = match target.pooled().await {
        Ok(client) => client.query(&sql, &[&msisdns]).await.ok(),
        Err(_) => None,
    };
    let rows = match pooled {
        Some(rows) => rows,
        None => target
            .connect()
            .await?
            .query(&sql, &[&msisdns])
            .await
            .map_err(pg_error)?,
    };
    rows.iter().map(consent_row).collect()
}

/// See [`crate::result_store::ResultStore::consent_log`].
pub(in crate::result_store) async fn read_consent_log(
    target: &Target,
    msisdn: &str,
) -> Result<Vec<ConsentChange>, ResultStoreError> {
    let client = target.connect().await?;
    client
        .query(&dollar_params(SELECT_CONSENT_LOG), &[&msisdn])
        .await
        .map_err(pg_error)?
        .iter()
        .map(|row| consent_row(row).map(|(msisdn, consent)| ConsentChange { msisdn, consent }))
        .collect()
}

/// See [`crate::result_store::ResultStore::contact_seen`].
pub(in crate::result_store) async fn mark_seen(
    target: &Target,
    msisdn: &str,
    at_ms: i64,
) -> Result<bool, ResultStoreError> {
    let client = target.connect().await?;
    let rows = client
        .execute(&dollar_params(MARK_SEEN), &[&msisdn, &at_ms])
        .await
        .map_err(pg_error)?;
    Ok(rows > 0)
}
