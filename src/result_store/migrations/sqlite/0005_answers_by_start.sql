-- Baraza result store, version 5 (SQLite dialect; keep in step with
-- postgres/0005_answers_by_start.sql): answers are kept in the order their responses started.
--
-- Until now answers were keyed by (response_id, result, step). Response ids come from the
-- aggregators (random session ids), so every answer of every live session landed on its own
-- page of that key, and a group commit of N answers wrote about N pages to the WAL. Led by the
-- response's start time, the key puts the answers of all live sessions together at the end of
-- the index: a group commit writes a few pages however many sessions it holds. The key stays
-- unique per (response, result, step) because a response has one start time. The table has no
-- rowid (the key is the table), so one b-tree is written per answer instead of two.

CREATE TABLE answers_v5 (
    -- The response's started_at_ms, copied here only to order the key.
    response_started_at_ms INTEGER NOT NULL,
    response_id    TEXT    NOT NULL REFERENCES responses (response_id),
    result         TEXT    NOT NULL,
    step           INTEGER NOT NULL,
    value          TEXT    NOT NULL,
    label          TEXT,
    node           TEXT    NOT NULL,
    answered_at_ms INTEGER NOT NULL,
    PRIMARY KEY (response_started_at_ms, response_id, result, step)
) WITHOUT ROWID;

INSERT INTO answers_v5 (response_started_at_ms, response_id, result, step, value, label, node,
    answered_at_ms)
SELECT r.started_at_ms, a.response_id, a.result, a.step, a.value, a.label, a.node,
    a.answered_at_ms
FROM answers a JOIN responses r ON r.response_id = a.response_id;

DROP TABLE answers;
ALTER TABLE answers_v5 RENAME TO answers;
