-- Baraza result store, version 2 (PostgreSQL dialect; keep in step with sqlite/0002_sms_outbox.sql).
-- The durable outbound SMS queue and the delivery receipts. States are the lower-case names of
-- result_store::SmsState; times are milliseconds since the Unix epoch.

-- One row per message accepted for sending, written before it is submitted.
CREATE TABLE sms_messages (
    message_id    TEXT    NOT NULL PRIMARY KEY,
    node          TEXT    NOT NULL,
    operator      TEXT    NOT NULL,
    recipient     TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    body          TEXT    NOT NULL,
    purpose       TEXT    NOT NULL,
    state         TEXT    NOT NULL
        CHECK (state IN ('queued', 'sending', 'accepted', 'rejected', 'unknown', 'not_sent', 'suppressed')),
    detail        TEXT,
    created_at_ms BIGINT  NOT NULL,
    updated_at_ms BIGINT  NOT NULL
);

-- Recovery after a restart reads a node's unfinished messages.
CREATE INDEX sms_messages_unfinished ON sms_messages (node, state, created_at_ms);

-- What became of each part at submit_sm_resp time; smsc_id is normalised per operator.
CREATE TABLE sms_parts (
    message_id TEXT    NOT NULL REFERENCES sms_messages (message_id),
    part       BIGINT  NOT NULL,
    outcome    TEXT    NOT NULL CHECK (outcome IN ('accepted', 'rejected', 'unknown', 'not_sent')),
    smsc_id    TEXT,
    detail     TEXT,
    at_ms      BIGINT  NOT NULL,
    PRIMARY KEY (message_id, part)
);

CREATE INDEX sms_parts_by_smsc_id ON sms_parts (smsc_id);

-- The latest receipt per (operator, normalised SMSC id), kept even when it arrives before the
-- submit_sm_resp was recorded (or for a message this gateway never sent); a final state is
-- never replaced by a later intermediate one.
CREATE TABLE sms_receipts (
    operator       TEXT    NOT NULL,
    smsc_id        TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    error          TEXT,
    is_final       BOOLEAN NOT NULL,
    received_at_ms BIGINT  NOT NULL,
    PRIMARY KEY (operator, smsc_id)
);
