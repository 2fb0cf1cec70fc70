//! The flows a running gateway knows, addressable by id and version.
//!
//! Loading goes through the checker: a folder with any error is refused whole, with the
//! checker's messages, and the running catalog stays. A reload keeps every version already
//! loaded, so sessions in flight finish on the version they started with; a file whose content
//! changed without a new version number is refused (it would change sessions under way).
//! No I/O beyond reading the flow files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::engine::CompiledFlow;
use crate::flow::check::{self, Severity};
use crate::flow::model::Flow;

/// Every loaded flow version, and the newest version of each flow.
#[derive(Debug, Default, Clone)]
pub struct FlowCatalog {
    versions: HashMap<(String, u32), Arc<CompiledFlow>>,
    latest: HashMap<String, u32>,
}

/// Why a folder of flows was refused.
#[derive(Debug, thiserror::Error)]
#[error("flows refused:\n{}", .messages.join("\n"))]
pub struct CatalogError {
    /// One line per problem, `file:line:column: error[code]: message` when it comes from the checker.
    pub messages: Vec<String>,
}

impl FlowCatalog {
    /// Loads and checks every flow under `paths`; refuses on any checker error.
    pub fn load(paths: &[PathBuf]) -> Result<FlowCatalog, CatalogError> {
        FlowCatalog::default().reload(paths)
    }

    /// A new catalog with the flows under `paths` added to this one's versions.
    pub fn reload(&self, paths: &[PathBuf]) -> Result<FlowCatalog, CatalogError> {
        let report = check::check_paths(paths);
        let errors: Vec<String> = report
            .diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| d.to_string())
            .collect();
        if !errors.is_empty() {
            return Err(CatalogError { messages: errors });
        }
        let mut next = self.clone();
        let mut messages = Vec::new();
        for source in report.flows {
            if let Err(e) = next.insert(source.flow, &source.path) {
                messages.push(e);
            }
        }
        if messages.is_empty() {
            Ok(next)
        } else {
            Err(CatalogError { messages })
        }
    }

    /// Adds one flow version (compiled); refuses a changed flow that kept its version number.
    pub fn insert(&mut self, flow: Flow, path: &Path) -> Result<(), String> {
        let key = (flow.id.clone(), flow.version);
        if let Some(existing) = self.versions.get(&key) {
            if existing.flow == flow {
                return Ok(());
            }
            return Err(format!(
                "{}: flow `{}` changed but its version is still {}: raise `version` so sessions under way keep the old one",
                path.display(),
                flow.id,
                flow.version
            ));
        }
        let compiled = CompiledFlow::compile(flow).map_err(|errs| {
            errs.iter()
                .map(|e| format!("{}: {e}", path.display()))
                .collect::<Vec<_>>()
                .join("\n")
        })?;
        let latest = self.latest.entry(key.0.clone()).or_insert(key.1);
        if key.1 > *latest {
            *latest = key.1;
        }
        self.versions.insert(key, Arc::new(compiled));
        Ok(())
    }

    /// One exact version (what a session in flight needs).
    pub fn get(&self, id: &str, version: u32) -> Option<Arc<CompiledFlow>> {
        self.versions.get(&(id.to_string(), version)).cloned()
    }

    /// The newest version of a flow (what a new session starts on).
    pub fn latest(&self, id: &str) -> Option<Arc<CompiledFlow>> {
        let version = *self.latest.get(id)?;
        self.get(id, version)
    }

    /// Flow ids with their newest version, sorted.
    /// Every loaded version of flow `id`, oldest first.
    pub fn versions_of(&self, id: &str) -> Vec<Arc<CompiledFlow>> {
        let mut found: Vec<(u32, Arc<CompiledFlow>)> = self
            .versions
            .iter()
            .filter(|((flow_id, _), _)| flow_id == id)
            .map(|((_, version), flow)| (*version, Arc::clone(flow)))
            .collect();
        found.sort_by_key(|(version, _)| *version);
        found.into_iter().map(|(_, flow)| flow).collect()
    }

    pub fn summary(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> =
            self.latest.iter().map(|(k, v)| (k.clone(), *v)).collect();
        out.sort();
        out
    }

    /// Number of flow versions held.
    pub fn len(&self) -> usize {
        self.versions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.versions.is_empty()
    }
}
