-- Baraza result store, version 6 (PostgreSQL dialect; keep in step with
-- sqlite/0006_flow_versions.sql): every published flow version, so a session pinned to a
-- version finishes on it on any node and after any restart.
--
-- One row per (flow_id, version), never rewritten: content_hash is the hex SHA-256 of the
-- flow's canonical form (comments and layout do not count), and publishing the same
-- (flow_id, version) with another hash is refused ("raise `version`"). `changed_seq` is the
-- cursor other nodes poll by: set from a counter on insert and whenever the flow's retirement
-- changes, so a poll for `changed_seq > last seen` finds new versions and retirements alike.
-- Writers lock the table (SHARE ROW EXCLUSIVE) so counters commit in the order they were
-- taken and a poll never skips a change that commits late.
-- `retired_at_ms` is set on every version of a flow a reload no longer has: its sessions
-- finish, no new session starts it; publishing the flow again clears it.

CREATE TABLE flow_versions (
    flow_id         TEXT   NOT NULL,
    version         BIGINT NOT NULL,
    content_hash    TEXT   NOT NULL,
    source          TEXT   NOT NULL,
    published_at_ms BIGINT NOT NULL,
    retired_at_ms   BIGINT,
    changed_seq     BIGINT NOT NULL,
    PRIMARY KEY (flow_id, version)
);

CREATE INDEX flow_versions_changed ON flow_versions (changed_seq);
