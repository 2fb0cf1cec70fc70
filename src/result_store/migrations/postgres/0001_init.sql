-- Baraza result store, version 1 (PostgreSQL dialect; keep in step with sqlite/0001_init.sql).
-- Times are milliseconds since the Unix epoch (UTC); statuses are the lower-case names of
-- result_store::ResponseStatus. Unsigned 32-bit numbers (flow_version, step) are BIGINT.

CREATE TABLE responses (
    response_id   TEXT   NOT NULL PRIMARY KEY,
    flow_id       TEXT   NOT NULL,
    flow_version  BIGINT NOT NULL,
    channel       TEXT   NOT NULL,
    provider      TEXT   NOT NULL,
    subscriber    TEXT   NOT NULL,
    language      TEXT   NOT NULL,
    status        TEXT   NOT NULL
        CHECK (status IN ('active', 'completed', 'dropped', 'timed_out', 'opted_out', 'failed')),
    started_at_ms BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL,
    ended_at_ms   BIGINT
);

CREATE INDEX responses_by_flow ON responses (flow_id, started_at_ms);

-- One row per (response, result, step): a repeated delivery of a step overwrites its row, an
-- answer given again at a later step (the respondent went back) adds a row, and readers take
-- the row with the highest step as the current value.
CREATE TABLE answers (
    response_id    TEXT   NOT NULL REFERENCES responses (response_id),
    result         TEXT   NOT NULL,
    step           BIGINT NOT NULL,
    value          TEXT   NOT NULL,
    label          TEXT,
    node           TEXT   NOT NULL,
    answered_at_ms BIGINT NOT NULL,
    PRIMARY KEY (response_id, result, step)
);
