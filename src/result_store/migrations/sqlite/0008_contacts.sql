-- Baraza result store, version 8 (SQLite dialect; keep in step with postgres/0008_contacts.sql):
-- the contact list, and consent with its audit log. Times are milliseconds since the Unix epoch.
--
-- A contact is keyed by its number in E.164 (`+254712345678`), normalised before it is stored.
-- Location and custom fields (declared in the gateway config under `contacts:`) are one JSON
-- object of canonical strings in `fields`: adding a field to the config needs no migration.
--
-- Consent lives in its own table keyed by number, not in `contacts`: a number that sent STOP is
-- opted out whether or not it is in the list, and this table is the one truth every outbound
-- path asks. Every change of it adds a row to `consent_log` (what, when, channel, by whom).

CREATE TABLE contacts (
    msisdn          TEXT    NOT NULL PRIMARY KEY,
    name            TEXT,
    language        TEXT,
    channel         TEXT CHECK (channel IN ('ussd', 'sms', 'voice')),
    gender          TEXT,
    birth_year      INTEGER,
    age_band        TEXT,
    operator        TEXT,
    fields          TEXT    NOT NULL DEFAULT '{}',
    created_at_ms   INTEGER NOT NULL,
    updated_at_ms   INTEGER NOT NULL,
    last_seen_at_ms INTEGER
);

CREATE TABLE consent (
    msisdn        TEXT    NOT NULL PRIMARY KEY,
    status        TEXT    NOT NULL CHECK (status IN ('opted_in', 'opted_out')),
    source        TEXT    NOT NULL,
    channel       TEXT,
    changed_by    TEXT,
    changed_at_ms INTEGER NOT NULL
);

CREATE TABLE consent_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    msisdn     TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('opted_in', 'opted_out')),
    source     TEXT    NOT NULL,
    channel    TEXT,
    changed_by TEXT,
    at_ms      INTEGER NOT NULL
);

-- The audit trail of one number, oldest first.
CREATE INDEX consent_log_msisdn ON consent_log (msisdn, id);
