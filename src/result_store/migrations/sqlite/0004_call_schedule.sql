-- Baraza result store, version 4 (SQLite dialect; keep in step with
-- postgres/0004_call_schedule.sql): outbound calls survive restarts and are shared by nodes.
-- A call waiting in the dialer's queue or for its retry time is stored `scheduled` with the
-- time it is due (due_at_ms) and the node that will place it (node), before anything else
-- happens to it; a node recovers only its own rows after a restart. SQLite cannot change a
-- CHECK constraint in place, so the table is rebuilt with the new status allowed.

CREATE TABLE call_attempts_v4 (
    attempt_id       TEXT    NOT NULL PRIMARY KEY,
    provider         TEXT    NOT NULL,
    subscriber       TEXT    NOT NULL,
    flow_id          TEXT    NOT NULL,
    purpose          TEXT    NOT NULL,
    attempt          INTEGER NOT NULL,
    placed_at_ms     INTEGER NOT NULL,
    status           TEXT    NOT NULL
        CHECK (status IN ('scheduled', 'placing', 'placed', 'refused', 'ended', 'timed_out')),
    outcome          TEXT
        CHECK (outcome IN ('completed', 'busy', 'no_answer', 'failed', 'canceled', 'timed_out')),
    provider_status  TEXT,
    duration_seconds INTEGER,
    provider_call_id TEXT,
    reason           TEXT,
    updated_at_ms    INTEGER NOT NULL,
    ended_at_ms      INTEGER,
    node             TEXT,
    due_at_ms        INTEGER
);

INSERT INTO call_attempts_v4 (attempt_id, provider, subscriber, flow_id, purpose, attempt,
    placed_at_ms, status, outcome, provider_status, duration_seconds, provider_call_id, reason,
    updated_at_ms, ended_at_ms)
SELECT attempt_id, provider, subscriber, flow_id, purpose, attempt, placed_at_ms, status,
    outcome, provider_status, duration_seconds, provider_call_id, reason, updated_at_ms,
    ended_at_ms
FROM call_attempts;

DROP TABLE call_attempts;
ALTER TABLE call_attempts_v4 RENAME TO call_attempts;

CREATE INDEX call_attempts_by_subscriber ON call_attempts (subscriber, placed_at_ms);
CREATE INDEX call_attempts_by_call_id ON call_attempts (provider_call_id);
-- Recovery after a restart reads a node's unfinished attempts.
CREATE INDEX call_attempts_unfinished ON call_attempts (node, ended_at_ms);
