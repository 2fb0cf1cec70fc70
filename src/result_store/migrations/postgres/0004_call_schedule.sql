-- Baraza result store, version 4 (PostgreSQL dialect; keep in step with
-- sqlite/0004_call_schedule.sql): outbound calls survive restarts and are shared by nodes.
-- A call waiting in the dialer's queue or for its retry time is stored `scheduled` with the
-- time it is due (due_at_ms) and the node that will place it (node), before anything else
-- happens to it; a node recovers only its own rows after a restart.

ALTER TABLE call_attempts ADD COLUMN node TEXT, ADD COLUMN due_at_ms BIGINT;
ALTER TABLE call_attempts DROP CONSTRAINT call_attempts_status_check;
ALTER TABLE call_attempts ADD CONSTRAINT call_attempts_status_check
    CHECK (status IN ('scheduled', 'placing', 'placed', 'refused', 'ended', 'timed_out'));

-- Recovery after a restart reads a node's unfinished attempts.
CREATE INDEX call_attempts_unfinished ON call_attempts (node, ended_at_ms);
