-- Baraza result store, version 7 (PostgreSQL dialect; keep in step with sqlite/0007_sms_inbound.sql).
-- Inbound SMS kept before the SMSC is told they arrived (deliver_sm_resp), so an answer the
-- gateway acknowledged is never lost: a node that stops before handling one handles it at its
-- next start. Times are milliseconds since the Unix epoch.

CREATE TABLE sms_inbound (
    inbound_id          TEXT    NOT NULL PRIMARY KEY,
    node                TEXT    NOT NULL,
    operator            TEXT    NOT NULL,
    sender              TEXT    NOT NULL,
    recipient           TEXT    NOT NULL,
    body                TEXT    NOT NULL,
    state               TEXT    NOT NULL CHECK (state IN ('received', 'handled')),
    -- Kept, but the SMSC was told ESME_RX_T_APPN (the answer came too late): it will deliver
    -- the same message again, and that copy is recognised by this flag and not handled twice.
    redelivery_expected BOOLEAN NOT NULL DEFAULT FALSE,
    received_at_ms      BIGINT  NOT NULL,
    updated_at_ms       BIGINT  NOT NULL
);

-- Recovery reads a node's messages not handled yet.
CREATE INDEX sms_inbound_unhandled ON sms_inbound (node, state, received_at_ms);
-- A redelivery is looked up by what it carries.
CREATE INDEX sms_inbound_redelivery ON sms_inbound (operator, sender, redelivery_expected);
