//! Contacts and consent as stored: the records, and the store's calls that read and write
//! them (the SQL of each dialect is in `sqlite/contacts.rs` and `postgres/contacts.rs`).
//!
//! Contacts do not go through the group-commit writer: an import writes a batch of contacts
//! (with the consent changes it carries) in one transaction on a connection of its own, like
//! flow versions, so a long import never delays a citizen's step. Consent is one table keyed
//! by number (a number may be opted out without being a contact) and every change of it adds
//! a row to the consent log in the same transaction.
//!
//! It never normalises or validates a number or a field (the `contacts` module does, before
//! anything reaches the store) and never logs a number, a name or a field value.

use std::collections::{BTreeMap, HashSet};

use tokio::sync::mpsc;

use super::{ReadSource, ResultStore, ResultStoreError, postgres, sqlite};

/// Contacts read per page when a whole list is streamed (segments, export, count).
pub const CONTACT_PAGE: usize = 1000;

// The statements both dialects share, written with SQLite's `?N` parameters; the PostgreSQL
// backend turns them into `$N` ([`dollar_params`]). No data is ever part of the text.

/// A contact with its consent; [`contact_row`]s read the columns in this order.
pub(crate) const CONTACT_SELECT: &str = "SELECT c.msisdn, c.name, c.language, c.channel, \
     c.gender, c.birth_year, c.age_band, c.operator, c.fields, c.created_at_ms, \
     c.updated_at_ms, c.last_seen_at_ms, k.status, k.source, k.channel, k.changed_by, \
     k.changed_at_ms FROM contacts c LEFT JOIN consent k ON k.msisdn = c.msisdn";

/// The first page of the walk through every contact ([`CONTACT_SELECT`] follows `WHERE`).
pub(crate) const PAGE_FIRST: &str = "ORDER BY c.msisdn LIMIT ?1";
/// A later page: after the last number of the previous one.
pub(crate) const PAGE_AFTER: &str = "WHERE c.msisdn > ?2 ORDER BY c.msisdn LIMIT ?1";

/// Inserts a contact or replaces its fields; its creation and last-seen times stay.
pub(crate) const UPSERT_CONTACT: &str = "INSERT INTO contacts (msisdn, name, language, channel, \
     gender, birth_year, age_band, operator, fields, created_at_ms, updated_at_ms, \
     last_seen_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12) \
     ON CONFLICT (msisdn) DO UPDATE SET name = excluded.name, language = excluded.language, \
     channel = excluded.channel, gender = excluded.gender, birth_year = excluded.birth_year, \
     age_band = excluded.age_band, operator = excluded.operator, fields = excluded.fields, \
     updated_at_ms = excluded.updated_at_ms";

/// [`ConsentRule::Always`]: stored, or changed when the status differs (one row counted
/// exactly when something changed).
pub(crate) const CONSENT_ALWAYS: &str = "INSERT INTO consent (msisdn, status, source, channel, \
     changed_by, changed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (msisdn) DO UPDATE SET status = excluded.status, source = excluded.source, \
     channel = excluded.channel, changed_by = excluded.changed_by, \
     changed_at_ms = excluded.changed_at_ms WHERE consent.status <> excluded.status";

/// [`ConsentRule::IfUnknown`]: stored only when the number has no consent yet.
pub(crate) const CONSENT_IF_UNKNOWN: &str = "INSERT INTO consent (msisdn, status, source, \
     channel, changed_by, changed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
     ON CONFLICT (msisdn) DO NOTHING";

/// One entry of the audit trail, written with each change.
pub(crate) const INSERT_CONSENT_LOG: &str = "INSERT INTO consent_log (msisdn, status, source, \
     channel, changed_by, at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";

/// A number's audit trail, oldest first.
pub(crate) const SELECT_CONSENT_LOG: &str = "SELECT msisdn, status, source, channel, changed_by, \
     at_ms FROM consent_log WHERE msisdn = ?1 ORDER BY id";

/// The columns of a consent read ([`SELECT_CONSENT_LOG`] has them in this order too).
pub(crate) const CONSENT_COLUMNS: &str =
    "msisdn, status, source, channel, changed_by, changed_at_ms";

/// Moves a contact's last-seen time forward (never back).
pub(crate) const MARK_SEEN: &str = "UPDATE contacts SET last_seen_at_ms = ?2 WHERE msisdn = ?1 \
     AND (last_seen_at_ms IS NULL OR last_seen_at_ms < ?2)";

/// A shared statement in PostgreSQL's parameter style (`?3` becomes `$3`).
pub(crate) fn dollar_params(sql: &str) -> String {
    sql.replace('?', "$")
}

/// The stored consent of a contact row or a consent row, from its five columns (status,
/// source, channel, author, time), all `NULL` when the number has none.
pub(crate) fn consent_columns(
    status: Option<String>,
    source: Option<String>,
    channel: Option<String>,
    changed_by: Option<String>,
    at_ms: Option<i64>,
) -> Result<Option<ConsentRecord>, ResultStoreError> {
    let (Some(status), Some(source), Some(at_ms)) = (status, source, at_ms) else {
        return Ok(None);
    };
    let (status, source) = stored_consent(&status, &source)?;
    Ok(Some(ConsentRecord {
        status,
        source,
        channel,
        changed_by,
        at_ms,
    }))
}

/// One contact, as written and as read back.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ContactRecord {
    /// The number in E.164 (`+254712345678`): the key, normalised before it is stored.
    pub msisdn: String,
    /// The citizen's name as given (any script).
    pub name: Option<String>,
    /// Preferred language (an ISO 639-1 code such as `sw`), so a session can start in it.
    pub language: Option<String>,
    /// Preferred channel (`ussd`, `sms` or `voice`), for campaigns that can choose.
    pub channel: Option<String>,
    /// `female`, `male`, `intersex` or `other`, for results by gender.
    pub gender: Option<String>,
    /// Year of birth, when known (a band otherwise).
    pub birth_year: Option<i32>,
    /// An age band such as `20-24` or `35+`, when the year of birth is not known.
    pub age_band: Option<String>,
    /// The operator the number's prefix was allocated to (a ported number keeps its old one).
    pub operator: Option<String>,
    /// Location and custom fields declared in config, by name, in their canonical text form.
    pub fields: BTreeMap<String, String>,
    /// When the contact was first stored.
    pub created_at_ms: i64,
    /// When a field last changed.
    pub updated_at_ms: i64,
    /// When the citizen last reached the gateway (any channel); `None` if never.
    pub last_seen_at_ms: Option<i64>,
    /// The number's consent, read with the contact; ignored when a contact is written
    /// (consent changes go through [`ConsentChange`], so they are logged).
    pub consent: Option<ConsentRecord>,
}

/// Whether a number may be contacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentStatus {
    /// Agreed to be contacted (on a register, by an import, or by a start word).
    OptedIn,
    /// Asked not to be contacted: nothing is sent to the number.
    OptedOut,
}

impl ConsentStatus {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentStatus::OptedIn => "opted_in",
            ConsentStatus::OptedOut => "opted_out",
        }
    }

    /// The status named `name` (as produced by [`ConsentStatus::as_str`]).
    pub fn parse(name: &str) -> Option<ConsentStatus> {
        [ConsentStatus::OptedIn, ConsentStatus::OptedOut]
            .into_iter()
            .find(|s| s.as_str() == name)
    }
}

/// Where a consent change came from, for the audit log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConsentSource {
    /// A column of an imported contact file.
    Import,
    /// A stop or start word sent by SMS.
    Keyword,
    /// A flow action ("press 9 to stop receiving messages"), on any channel.
    Flow,
    /// The admin API (an operator acting on a citizen's request).
    Api,
    /// The citizen's first message to the gateway (consent to be answered).
    Inbound,
    /// Carried over from an opt-out the session store held before contacts existed.
    SessionStore,
}

impl ConsentSource {
    /// Every source, in declaration order.
    pub const ALL: [ConsentSource; 6] = [
        ConsentSource::Import,
        ConsentSource::Keyword,
        ConsentSource::Flow,
        ConsentSource::Api,
        ConsentSource::Inbound,
        ConsentSource::SessionStore,
    ];

    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            ConsentSource::Import => "import",
            ConsentSource::Keyword => "keyword",
            ConsentSource::Flow => "flow",
            ConsentSource::Api => "api",
            ConsentSource::Inbound => "inbound",
            ConsentSource::SessionStore => "session_store",
        }
    }

    /// The source named `name` (as produced by [`ConsentSource::as_str`]).
    pub fn parse(name: &str) -> Option<ConsentSource> {
        ConsentSource::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A number's consent as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub status: ConsentStatus,
    /// What set it.
    pub source: ConsentSource,
    /// The channel it came over (`sms`, `ussd`, `voice`), when it came from the citizen.
    pub channel: Option<String>,
    /// Who made the change (an operator's name, an import file's name), when not the citizen.
    pub changed_by: Option<String>,
    /// When it was set.
    pub at_ms: i64,
}

/// A change of one number's consent (also one entry of the consent log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    /// The number in E.164.
    pub msisdn: String,
    /// The status, source, channel, author and time it sets.
    pub consent: ConsentRecord,
}

/// When a consent change applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentRule {
    /// Whenever the stored status differs (an opt-out; an opt-in by start word or the API).
    Always,
    /// Only when the number has no consent stored yet (an import's or a first message's
    /// opt-in must never undo an opt-out).
    IfUnknown,
}

/// Contacts and consent changes written in one transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContactBatch {
    /// Inserted, or replacing the stored contact's fields (its creation and last-seen times
    /// are kept).
    pub contacts: Vec<ContactRecord>,
    /// Applied in order, each by its rule; each one that changes something is logged.
    pub consent: Vec<(ConsentChange, ConsentRule)>,
}

impl ContactBatch {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.contacts.is_empty() && self.consent.is_empty()
    }
}

/// A stored consent status word, checked.
pub(crate) fn stored_consent(
    status: &str,
    source: &str,
) -> Result<(ConsentStatus, ConsentSource), ResultStoreError> {
    let corrupt = || {
        ResultStoreError::Corrupt(format!(
            "a consent row has status `{status}` and source `{source}`"
        ))
    };
    Ok((
        ConsentStatus::parse(status).ok_or_else(corrupt)?,
        ConsentSource::parse(source).ok_or_else(corrupt)?,
    ))
}

/// The stored `fields` JSON object, checked.
pub(crate) fn stored_fields(text: &str) -> Result<BTreeMap<String, String>, ResultStoreError> {
    serde_json::from_str(text)
        .map_err(|e| ResultStoreError::Corrupt(format!("a contact's fields are not valid: {e}")))
}

/// The `fields` JSON object to store.
pub(crate) fn fields_json(fields: &BTreeMap<String, String>) -> String {
    serde_json::to_string(fields).unwrap_or_else(|_| "{}".to_string())
}

/// Every text of a batch with NUL characters replaced (see the result store's module docs).
fn scrub_batch(batch: &mut ContactBatch) {
    fn scrub(text: &mut String) {
        if text.contains('\0') {
            *text = text.replace('\0', "\u{FFFD}");
        }
    }
    for contact in &mut batch.contacts {
        scrub(&mut contact.msisdn);
        for text in [
            &mut contact.name,
            &mut contact.language,
            &mut contact.channel,
            &mut contact.gender,
            &mut contact.age_band,
            &mut contact.operator,
        ]
        .into_iter()
        .flatten()
        {
            scrub(text);
        }
        let fields = std::mem::take(&mut contact.fields);
        contact.fields = fields
            .into_iter()
            .map(|(mut k, mut v)| {
                scrub(&mut k);
                scrub(&mut v);
                (k, v)
            })
            .collect();
    }
    for (change, _) in &mut batch.consent {
        scrub(&mut change.msisdn);
        for text in [&mut change.consent.channel, &mut change.consent.changed_by]
            .into_iter()
            .flatten()
        {
            scrub(text);
        }
    }
}

/// Runs a blocking SQLite call off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ResultStoreError> + Send + 'static,
) -> Result<T, ResultStoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ResultStoreError::Sqlite(format!("contacts task failed: {e}")))?
}

impl ResultStore {
    /// The stored contacts among `msisdns` (E.164), with their consent, in no set order.
    pub async fn contacts_by_msisdn(
        &self,
        msisdns: &[String],
    ) -> Result<Vec<ContactRecord>, ResultStoreError> {
        if msisdns.is_empty() {
            return Ok(Vec::new());
        }
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let (path, msisdns) = (path.clone(), msisdns.to_vec());
                blocking(move || sqlite::contacts::read_contacts(&path, &msisdns)).await
            }
            ReadSource::Postgres(target) => {
                postgres::contacts::read_contacts(target, msisdns).await
            }
        }
    }

    /// Up to `limit` contacts whose numbers sort after `after` (all from the start when
    /// `None`), in number order: one page of a walk through the whole list.
    pub async fn contacts_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ContactRecord>, ResultStoreError> {
        let limit = i64::try_from(limit.max(1)).unwrap_or(i64::MAX);
        let after = after.map(str::to_string);
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::contacts::read_page(&path, after.as_deref(), limit)).await
            }
            ReadSource::Postgres(target) => {
                postgres::contacts::read_page(target, after.as_deref(), limit).await
            }
        }
    }

    /// Every contact, in number order, a page at a time through a bounded channel (memory
    /// stays flat whatever the size of the list). An error ends the stream.
    pub fn contacts_stream(&self) -> mpsc::Receiver<Result<Vec<ContactRecord>, ResultStoreError>> {
        let (tx, rx) = mpsc::channel(2);
        let store = self.clone();
        tokio::spawn(async move {
            let mut after: Option<String> = None;
            loop {
                let page = store.contacts_page(after.as_deref(), CONTACT_PAGE).await;
                let last = match &page {
                    Ok(rows) if rows.is_empty() => return,
                    Ok(rows) => rows.last().map(|c| c.msisdn.clone()),
                    Err(_) => None,
                };
                let failed = page.is_err();
                if tx.send(page).await.is_err() || failed {
                    return;
                }
                after = last;
            }
        });
        rx
    }

    /// Writes `batch` in one transaction on a connection of its own. Answers, for each
    /// consent change in order, whether it changed the stored consent (and was logged).
    pub async fn write_contacts(
        &self,
        mut batch: ContactBatch,
    ) -> Result<Vec<bool>, ResultStoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        scrub_batch(&mut batch);
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::contacts::write_batch(&path, &batch)).await
            }
            ReadSource::Postgres(target) => postgres::contacts::write_batch(target, &batch).await,
        }
    }

    /// Applies one consent change by `rule`; whether it changed anything (and was logged).
    pub async fn change_consent(
        &self,
        change: ConsentChange,
        rule: ConsentRule,
    ) -> Result<bool, ResultStoreError> {
        let batch = ContactBatch {
            contacts: Vec::new(),
            consent: vec![(change, rule)],
        };
        Ok(self
            .write_contacts(batch)
            .await?
            .first()
            .copied()
            .unwrap_or(false))
    }

    /// The consent stored for `msisdn` (E.164), if any.
    pub async fn consent_of(
        &self,
        msisdn: &str,
    ) -> Result<Option<ConsentRecord>, ResultStoreError> {
        let found = self.consent_among(&[msisdn.to_string()]).await?;
        Ok(found.into_iter().next().map(|(_, consent)| consent))
    }

    /// The numbers among `msisdns` (E.164) that are opted out: one read for a whole send.
    pub async fn opted_out_among(
        &self,
        msisdns: &[String],
    ) -> Result<HashSet<String>, ResultStoreError> {
        Ok(self
            .consent_among(msisdns)
            .await?
            .into_iter()
            .filter(|(_, c)| c.status == ConsentStatus::OptedOut)
            .map(|(msisdn, _)| msisdn)
            .collect())
    }

    /// The consent stored for each of `msisdns` (E.164) that has one, in no set order.
    pub async fn consent_among(
        &self,
        msisdns: &[String],
    ) -> Result<Vec<(String, ConsentRecord)>, ResultStoreError> {
        if msisdns.is_empty() {
            return Ok(Vec::new());
        }
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let (path, msisdns) = (path.clone(), msisdns.to_vec());
                blocking(move || sqlite::contacts::read_consent(&path, &msisdns)).await
            }
            ReadSource::Postgres(target) => postgres::contacts::read_consent(target, msisdns).await,
        }
    }

    /// Every consent change of `msisdn` (E.164), oldest first: the audit trail.
    pub async fn consent_log(&self, msisdn: &str) -> Result<Vec<ConsentChange>, ResultStoreError> {
        let msisdn = msisdn.to_string();
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::contacts::read_consent_log(&path, &msisdn)).await
            }
            ReadSource::Postgres(target) => {
                postgres::contacts::read_consent_log(target, &msisdn).await
            }
        }
    }

    /// Records that `msisdn` (E.164) reached the gateway at `at_ms` (a later time only ever
    /// moves it forward); a number that is not a contact changes nothing. Whether a contact
    /// was touched.
    pub async fn contact_seen(&self, msisdn: &str, at_ms: i64) -> Result<bool, ResultStoreError> {
        let msisdn = msisdn.to_string();
        match &self.shared.reads {
            ReadSource::Sqlite(path) => {
                let path = path.clone();
                blocking(move || sqlite::contacts::mark_seen(&path, &msisdn, at_ms)).await
            }
            ReadSource::Postgres(target) => {
                postgres::contacts::mark_seen(target, &msisdn, at_ms).await
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_names_round_trip() {
        for source in ConsentSource::ALL {
            assert_eq!(ConsentSource::parse(source.as_str()), Some(source));
        }
        for status in [ConsentStatus::OptedIn, ConsentStatus::OptedOut] {
            assert_eq!(ConsentStatus::parse(status.as_str()), Some(status));
        }
        assert_eq!(ConsentStatus::parse("OptedOut"), None);
    }

    #[test]
    fn fields_round_trip_through_json() {
        let mut fields = BTreeMap::new();
        fields.insert("ward".to_string(), "Kibra \"Olympic\"".to_string());
        fields.insert("household_size".to_string(), "4".to_string());
        assert_eq!(stored_fields(&fields_json(&fields)), Ok(fields));
        assert!(stored_fields("[1]").is_err());
    }
}
