-- Baraza result store, version 3 (SQLite dialect; keep in step with
-- postgres/0003_call_attempts.sql): outbound call attempts (missed-call callbacks now,
-- campaigns later), one row per attempt, updated as it goes (placing, placed, then a final
-- status). Once a row has a final status (ended_at_ms set) later writes leave it as it is,
-- so a repeated status callback changes nothing. Statuses and outcomes are the lower-case
-- names of result_store::CallAttemptStatus and outbound::CallOutcome.

CREATE TABLE call_attempts (
    attempt_id       TEXT    NOT NULL PRIMARY KEY,
    provider         TEXT    NOT NULL,
    subscriber       TEXT    NOT NULL,
    flow_id          TEXT    NOT NULL,
    purpose          TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    placed_at_ms     INTEGER NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('placing', 'placed', 'refused', 'ended', 'timed_out')),
    outcome          TEXT
        CHECK (outcome IN ('completed', 'busy', 'no_answer', 'failed', 'canceled', 'timed_out')),
    provider_status  TEXT,
    duration_seconds INTEGER,
    provider_call_id TEXT,
    reason           TEXT,
    updated_at_ms    INTEGER NOT NULL,
    ended_at_ms      INTEGER
);

CREATE INDEX call_attempts_by_subscriber ON call_attempts (subscriber, placed_at_ms);
CREATE INDEX call_attempts_by_call_id ON call_attempts (provider_call_id);
