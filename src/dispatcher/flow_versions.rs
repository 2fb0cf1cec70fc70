//! Flow versions beyond this node's folder: a session pinned to a version the catalog lacks
//! (published by another node, or by this node before a restart) loads it from the result
//! store; every node publishes the versions it loads and polls the store for the versions
//! and retirements other nodes published.
//!
//! A stored version goes through the same loader, checker and compiler as a file
//! ([`FlowCatalog::compile_source`]). A version the store lacks is remembered as missing for
//! [`MISS_TTL`], so a flood of steps pinned to it costs one read, not one read each. This
//! module never reads flow files (that is `server::reload_flows`) and never decides which
//! flow a service code starts (the catalog's latest, unless retired).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use super::{Gateway, StepError, now_ms};
use crate::engine::CompiledFlow;
use crate::flow::catalog::{FlowCatalog, Reloaded};
use crate::result_store::{PublishedFlow, ResultStore, ResultStoreError};
use crate::telemetry;

/// How long a version the store lacked is answered as missing without asking it again.
pub const MISS_TTL: Duration = Duration::from_secs(5);

/// Missing versions remembered at most; past it the expired ones go, then all of them.
const MAX_MISSES: usize = 1024;

/// This node's view of the stored flow versions.
#[derive(Default)]
pub(super) struct StoredFlows {
    /// Versions the store lacked lately, with when it was asked: a step pinned to one is
    /// refused without a read until [`MISS_TTL`] has passed.
    misses: Mutex<HashMap<(String, u32), Instant>>,
    /// One store read for a missing version at a time: the steps queued behind it find the
    /// version in the catalog (or in `misses`) instead of reading it again.
    fetching: tokio::sync::Mutex<()>,
    /// The store's change counter up to which this node applied the stored versions and
    /// retirements (see [`Gateway::sync_flows`]); held for a whole poll so polls never
    /// interleave.
    cursor: tokio::sync::Mutex<i64>,
}

impl StoredFlows {
    /// Whether the store lacked `key` less than [`MISS_TTL`] ago.
    fn recently_missed(&self, key: &(String, u32)) -> bool {
        let Ok(misses) = self.misses.lock() else {
            return false;
        };
        misses.get(key).is_some_and(|at| at.elapsed() < MISS_TTL)
    }

    /// Remembers that the store lacks `key` (bounded: see [`MAX_MISSES`]).
    fn remember_miss(&self, key: (String, u32)) {
        let Ok(mut misses) = self.misses.lock() else {
            return;
        };
        if misses.len() >= MAX_MISSES {
            misses.retain(|_, at| at.elapsed() < MISS_TTL);
            if misses.len() >= MAX_MISSES {
                misses.clear();
            }
        }
        misses.insert(key, Instant::now());
    }
}

/// What one poll of the stored flow versions changed on this node.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FlowSync {
    /// Versions added to the catalog, as `id@version`.
    pub added: Vec<String>,
    /// Flows that no longer start new sessions.
    pub retired: Vec<String>,
    /// Flows that start new sessions again (a reload had them again).
    pub restored: Vec<String>,
    /// Stored versions this build could not load (logged; a step pinned to one is refused).
    pub refused: usize,
}

impl FlowSync {
    /// Whether the poll changed nothing.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.retired.is_empty() && self.restored.is_empty()
    }
}

/// The versions a folder holds, as the store keeps them.
fn publications(reloaded: &Reloaded, at_ms: i64) -> Vec<PublishedFlow> {
    reloaded
        .loaded
        .iter()
        .map(|v| PublishedFlow {
            flow_id: v.flow_id.clone(),
            version: v.version,
            content_hash: v.content_hash.clone(),
            source: v.source.clone(),
            published_at_ms: at_ms,
        })
        .collect()
}

/// Publishes what a load or reload of the flows folder found: its versions (refused as a
/// whole if one was published before with other content), then the flows it retired.
pub async fn publish(results: &ResultStore, reloaded: &Reloaded) -> Result<(), ResultStoreError> {
    let now = now_ms();
    results
        .publish_flow_versions(&publications(reloaded, now))
        .await?;
    results.retire_flows(&reloaded.retired, now).await
}

impl Gateway {
    /// The exact version a session is pinned to: from the catalog, else from the result
    /// store (added to the catalog for the next steps); `MissingFlow` when neither has it.
    pub(super) async fn pinned_flow(
        &self,
        flow_id: &str,
        version: u32,
    ) -> Result<Arc<CompiledFlow>, StepError> {
        if let Some(flow) = self.catalog().get(flow_id, version) {
            return Ok(flow);
        }
        self.flow_from_store(flow_id, version)
            .await?
            .ok_or_else(|| StepError::MissingFlow(flow_id.to_string(), version))
    }

    /// Loads a version this node lacks from the store, one read at a time per node; `None`
    /// when the store lacks it (remembered for [`MISS_TTL`]) or it cannot be loaded.
    async fn flow_from_store(
        &self,
        flow_id: &str,
        version: u32,
    ) -> Result<Option<Arc<CompiledFlow>>, StepError> {
        let key = (flow_id.to_string(), version);
        if self.stored_flows.recently_missed(&key) {
            return Ok(None);
        }
        let _one_read = self.stored_flows.fetching.lock().await;
        // A step queued behind the read that loaded it, or a poll meanwhile.
        if let Some(flow) = self.catalog().get(flow_id, version) {
            return Ok(Some(flow));
        }
        if self.stored_flows.recently_missed(&key) {
            return Ok(None);
        }
        let stored = self
            .results
            .flow_version(flow_id, version)
            .await
            .map_err(|e| StepError::Results(e.to_string()))?;
        let Some(stored) = stored else {
            self.stored_flows.remember_miss(key);
            return Ok(None);
        };
        let origin = format!("stored flow {flow_id}@{version}");
        let compiled = match FlowCatalog::compile_source(&origin, &stored.source) {
            Ok(c) if c.flow.id == flow_id && c.flow.version == version => c,
            Ok(c) => {
                warn!(
                    flow = flow_id,
                    version,
                    found = %format!("{}@{}", c.flow.id, c.flow.version),
                    "stored flow version holds another flow"
                );
                telemetry::error("stored_flow_refused");
                self.stored_flows.remember_miss(key);
                return Ok(None);
            }
            Err(e) => {
                warn!(flow = flow_id, version, error = %e, "stored flow version refused");
                telemetry::error("stored_flow_refused");
                self.stored_flows.remember_miss(key);
                return Ok(None);
            }
        };
        let added =
            self.edit_catalog(|catalog| catalog.insert_compiled(Arc::clone(&compiled), &origin));
        if let Err(message) = added {
            // This node loaded another flow under the same version (a folder that disagrees
            // with what was published): the session needs the published one, which this node
            // cannot hold beside its own.
            warn!(flow = flow_id, version, error = %message, "stored flow version not added");
            telemetry::error("stored_flow_refused");
            return Ok(None);
        }
        info!(
            flow = flow_id,
            version, "flow version loaded from the result store"
        );
        Ok(Some(compiled))
    }

    /// One poll of the stored flow versions: adds the versions published since the last poll
    /// (a newer one becomes its flow's latest, what new sessions start on) and applies
    /// retirements, then moves the cursor past them. `server::serve` calls it on a timer
    /// (`flows_poll_ms`); tests call it directly.
    pub async fn sync_flows(&self) -> Result<FlowSync, ResultStoreError> {
        let mut cursor = self.stored_flows.cursor.lock().await;
        let rows = self.results.flow_versions_since(*cursor).await?;
        let Some(last) = rows.last().map(|r| r.changed_seq) else {
            return Ok(FlowSync::default());
        };
        let mut sync = FlowSync::default();
        // Compiled outside the catalog's lock; the retirement a flow ends with is its last row's.
        let snapshot = self.catalog();
        let mut compiled = Vec::new();
        let mut retired: Vec<(String, bool)> = Vec::new();
        for row in &rows {
            retired.retain(|(id, _)| *id != row.flow_id);
            retired.push((row.flow_id.clone(), row.retired_at_ms.is_some()));
            if snapshot.get(&row.flow_id, row.version).is_some() {
                continue;
            }
            let origin = format!("stored flow {}@{}", row.flow_id, row.version);
            match FlowCatalog::compile_source(&origin, &row.source) {
                Ok(flow) if flow.flow.id == row.flow_id && flow.flow.version == row.version => {
                    compiled.push((origin, flow))
                }
                Ok(_) => {
                    warn!(%origin, "stored flow version holds another flow; skipped");
                    sync.refused += 1;
                }
                Err(e) => {
                    warn!(%origin, error = %e, "stored flow version refused; skipped");
                    sync.refused += 1;
                }
            }
        }
        self.edit_catalog(|catalog| {
            for (origin, flow) in &compiled {
                let name = format!("{}@{}", flow.flow.id, flow.flow.version);
                match catalog.insert_compiled(Arc::clone(flow), origin) {
                    Ok(()) if !sync.added.contains(&name) => sync.added.push(name),
                    Ok(()) => {}
                    Err(message) => {
                        warn!(error = %message, "stored flow version not added");
                        sync.refused += 1;
                    }
                }
            }
            for (id, retire) in &retired {
                match (catalog.is_retired(id), *retire) {
                    (false, true) => sync.retired.push(id.clone()),
                    (true, false) => sync.restored.push(id.clone()),
                    _ => continue,
                }
                catalog.set_retired(id, *retire);
            }
        });
        if sync.refused > 0 {
            telemetry::error("stored_flow_refused");
        }
        *cursor = last;
        Ok(sync)
    }

    /// Changes the catalog in place of every reader: `edit` works on a copy, installed
    /// whole when it returns (readers keep the catalog they took). No compiling in `edit`:
    /// steps wait for the lock.
    pub(super) fn edit_catalog<R>(&self, edit: impl FnOnce(&mut FlowCatalog) -> R) -> R {
        let mut guard = match self.catalog.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut next = FlowCatalog::clone(&guard);
        let out = edit(&mut next);
        *guard = Arc::new(next);
        out
    }

    /// Installs `next` if the catalog is still `snapshot` (the one `next` was computed
    /// from); false when a poll or a stored version changed it meanwhile (compute again).
    pub fn replace_catalog_if(&self, snapshot: &Arc<FlowCatalog>, next: FlowCatalog) -> bool {
        let mut guard = match self.catalog.write() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        };
        if !Arc::ptr_eq(&guard, snapshot) {
            return false;
        }
        *guard = Arc::new(next);
        true
    }
}
