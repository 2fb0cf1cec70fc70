//! The stored side of flow versions: every version a gateway node published (its YAML text
//! and the hash of its canonical form), and which flows a reload retired.
//!
//! Nodes publish the versions they load (at start and at each reload) and read back the ones
//! they lack: a session pinned to a version any node published finishes on it everywhere,
//! and a node polls [`ResultStore::flow_versions_since`](super::ResultStore::flow_versions_since)
//! to learn of new versions and retirements. Publication writes on a connection of its own
//! (not through the group-committing writer: it is rare and must answer with a conflict).
//! This module never parses, checks or compiles a flow (that is `flow::catalog`), and a
//! stored version is never rewritten: the same (id, version) with another hash is refused.

/// One flow version to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedFlow {
    /// The flow's `id`.
    pub flow_id: String,
    /// The flow's `version`; with the id, the key sessions are pinned by.
    pub version: u32,
    /// Hex SHA-256 of the flow's canonical form: the same (id, version) published again with
    /// another hash is a changed flow that kept its number, and is refused.
    pub content_hash: String,
    /// The YAML file's text, so any node can parse, check and compile the same flow.
    pub source: String,
    /// When the version was first published, ms since the Unix epoch (kept on republish).
    pub published_at_ms: i64,
}

/// One stored flow version, as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFlowVersion {
    /// See [`PublishedFlow::flow_id`].
    pub flow_id: String,
    /// See [`PublishedFlow::version`].
    pub version: u32,
    /// See [`PublishedFlow::content_hash`].
    pub content_hash: String,
    /// See [`PublishedFlow::source`].
    pub source: String,
    /// See [`PublishedFlow::published_at_ms`].
    pub published_at_ms: i64,
    /// Set when a reload retired the flow (no new sessions start it); `None` while it may
    /// start sessions.
    pub retired_at_ms: Option<i64>,
    /// The store's change counter when this row last changed (inserted, retired, or brought
    /// back): the cursor a poll passes to [`super::ResultStore::flow_versions_since`].
    pub changed_seq: i64,
}

/// The columns [`StoredFlowVersion`] is read from, in field order.
pub(crate) const FLOW_VERSION_COLUMNS: &str = "flow_id, version, content_hash, source, \
     published_at_ms, retired_at_ms, changed_seq";

/// A stored version number, checked to fit a `u32`.
pub(crate) fn stored_version(flow_id: &str, stored: i64) -> Result<u32, super::ResultStoreError> {
    u32::try_from(stored).map_err(|_| {
        super::ResultStoreError::Corrupt(format!("flow `{flow_id}` has version {stored}"))
    })
}

/// The refusal of a changed flow that kept its version number.
pub(crate) fn changed_version(flow_id: &str, version: u32) -> super::ResultStoreError {
    super::ResultStoreError::FlowVersionChanged {
        flow_id: flow_id.to_string(),
        version,
    }
}
