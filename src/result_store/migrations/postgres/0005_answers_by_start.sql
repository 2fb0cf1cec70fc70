-- Baraza result store, version 5 (PostgreSQL dialect; keep in step with
-- sqlite/0005_answers_by_start.sql): answers are kept in the order their responses started.
-- Response ids are the aggregators' random session ids; led by the response's start time, the
-- primary key puts the answers of all live sessions together at the end of its index instead
-- of one index page per live session. Unique per (response, result, step) as before, since a
-- response has one start time.

ALTER TABLE answers ADD COLUMN response_started_at_ms BIGINT;

UPDATE answers a SET response_started_at_ms = r.started_at_ms
FROM responses r WHERE r.response_id = a.response_id;

ALTER TABLE answers ALTER COLUMN response_started_at_ms SET NOT NULL;
ALTER TABLE answers DROP CONSTRAINT answers_pkey;
ALTER TABLE answers ADD PRIMARY KEY (response_started_at_ms, response_id, result, step);
