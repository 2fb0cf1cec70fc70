//! The flows a running gateway knows, addressable by id and version.
//!
//! Loading goes through the checker: a folder with any error is refused whole, with the
//! checker's messages, and the running catalog stays. A reload keeps every version already
//! loaded, so sessions in flight finish on the version they started with; a file whose content
//! changed without a new version number is refused (it would change sessions under way).
//! A flow that a reload's folder no longer has is *retired*: its versions stay (sessions
//! pinned to them finish) but no new session starts it. A version can also be added from its
//! YAML text ([`FlowCatalog::insert_source`], for versions other nodes published), through
//! the same loader and checker as the files.
//! No I/O beyond reading the flow files.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::engine::CompiledFlow;
use crate::flow::check::{self, Severity};
use crate::flow::load::SourceFlow;
use crate::flow::model::Flow;

/// Every loaded flow version, and the newest version of each flow.
#[derive(Debug, Default, Clone)]
pub struct FlowCatalog {
    versions: HashMap<(String, u32), Arc<CompiledFlow>>,
    latest: HashMap<String, u32>,
    /// Flows no new session may start (a reload's folder no longer had them); their versions
    /// stay in `versions` so the sessions pinned to them finish.
    retired: HashSet<String>,
}

/// One flow version as its file gave it: what a gateway publishes so that other nodes (and
/// this one after a restart) can load the very same version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSource {
    /// The flow's `id`.
    pub flow_id: String,
    /// The flow's `version`.
    pub version: u32,
    /// [`content_hash`] of the parsed flow: equal for files that differ only in comments or
    /// layout, as the catalog's own "changed but same version" rule sees them.
    pub content_hash: String,
    /// The file's text.
    pub source: String,
}

/// What a reload produced: the next catalog and what changed, for publishing.
#[derive(Debug, Clone)]
pub struct Reloaded {
    /// The catalog to install.
    pub catalog: FlowCatalog,
    /// Every flow version the folder holds (loaded now or before), oldest file first.
    pub loaded: Vec<VersionSource>,
    /// Flows the previous catalog started that the folder no longer has, sorted.
    pub retired: Vec<String>,
}

/// Hex SHA-256 of a flow's canonical form (the parsed flow as JSON): comments, quoting and
/// layout of the file do not change it; any change to what the flow does does.
pub fn content_hash(flow: &Flow, source: &str) -> String {
    let canonical = serde_json::to_vec(flow).unwrap_or_else(|_| source.as_bytes().to_vec());
    hex::encode(Sha256::digest(&canonical))
}

/// Why a folder of flows was refused.
#[derive(Debug, thiserror::Error)]
#[error("flows refused:\n{}", .messages.join("\n"))]
pub struct CatalogError {
    /// One line per problem, `file:line:column: error[code]: message` when it comes from the checker.
    pub messages: Vec<String>,
}

/// Refuses a set of checker diagnostics that holds any error, with every error's message.
fn refuse_errors(diagnostics: &[crate::flow::diagnostic::Diagnostic]) -> Result<(), CatalogError> {
    let errors: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity == Severity::Error)
        .map(|d| d.to_string())
        .collect();
    match errors.is_empty() {
        true => Ok(()),
        false => Err(CatalogError { messages: errors }),
    }
}

impl FlowCatalog {
    /// Loads and checks every flow under `paths`; refuses on any checker error.
    pub fn load(paths: &[PathBuf]) -> Result<FlowCatalog, CatalogError> {
        FlowCatalog::default().reload(paths)
    }

    /// A new catalog with the flows under `paths` added to this one's versions.
    pub fn reload(&self, paths: &[PathBuf]) -> Result<FlowCatalog, CatalogError> {
        self.reload_folder(paths).map(|reloaded| reloaded.catalog)
    }

    /// [`FlowCatalog::reload`], also saying which versions the folder holds and which flows
    /// it no longer has (those are retired in the new catalog; the ones it has are not).
    pub fn reload_folder(&self, paths: &[PathBuf]) -> Result<Reloaded, CatalogError> {
        let report = check::check_paths(paths);
        refuse_errors(&report.diagnostics)?;
        let mut next = self.clone();
        let mut messages = Vec::new();
        let mut loaded = Vec::new();
        for source in report.flows {
            let version = version_source(&source);
            if let Err(e) = next.insert(source.flow, &source.path) {
                messages.push(e);
            }
            loaded.push(version);
        }
        if !messages.is_empty() {
            return Err(CatalogError { messages });
        }
        let in_folder: HashSet<&str> = loaded.iter().map(|v| v.flow_id.as_str()).collect();
        let mut retired: Vec<String> = self
            .latest
            .keys()
            .filter(|id| !self.retired.contains(*id) && !in_folder.contains(id.as_str()))
            .cloned()
            .collect();
        retired.sort();
        for id in &in_folder {
            next.retired.remove(*id);
        }
        next.retired.extend(retired.iter().cloned());
        Ok(Reloaded {
            catalog: next,
            loaded,
            retired,
        })
    }

    /// Adds one flow version from its YAML text (`origin` names it in messages): see
    /// [`FlowCatalog::compile_source`] and [`FlowCatalog::insert_compiled`].
    pub fn insert_source(
        &mut self,
        origin: &str,
        text: &str,
    ) -> Result<Arc<CompiledFlow>, CatalogError> {
        let compiled = FlowCatalog::compile_source(origin, text)?;
        self.insert_compiled(Arc::clone(&compiled), origin)
            .map_err(|message| CatalogError {
                messages: vec![message],
            })?;
        Ok(compiled)
    }

    /// One flow version from its YAML text, loaded, checked and compiled exactly as a file
    /// in the flows folder is (`origin` names it in messages); refused on any checker error.
    pub fn compile_source(origin: &str, text: &str) -> Result<Arc<CompiledFlow>, CatalogError> {
        let source =
            crate::flow::load::load_str(origin, text).map_err(|diagnostics| CatalogError {
                messages: diagnostics.iter().map(|d| d.to_string()).collect(),
            })?;
        refuse_errors(&check::check(&source))?;
        compile(source.flow, &source.path)
            .map(Arc::new)
            .map_err(|message| CatalogError {
                messages: vec![message],
            })
    }

    /// Retires flow `id` (no new session starts it; its sessions finish) or brings it back.
    pub fn set_retired(&mut self, id: &str, retired: bool) {
        if retired {
            self.retired.insert(id.to_string());
        } else {
            self.retired.remove(id);
        }
    }

    /// Whether flow `id` is retired.
    pub fn is_retired(&self, id: &str) -> bool {
        self.retired.contains(id)
    }

    /// Adds one flow version (compiled); refuses a changed flow that kept its version number.
    pub fn insert(&mut self, flow: Flow, path: &Path) -> Result<(), String> {
        let key = (flow.id.clone(), flow.version);
        if let Some(existing) = self.versions.get(&key) {
            if existing.flow == flow {
                return Ok(());
            }
            return Err(changed_message(&path.display().to_string(), &flow));
        }
        let compiled = compile(flow, path)?;
        self.insert_compiled(Arc::new(compiled), &path.display().to_string())
    }

    /// Adds one compiled flow version; the same version again changes nothing, a changed flow
    /// that kept its version number is refused. A newer version becomes the flow's latest.
    pub fn insert_compiled(
        &mut self,
        compiled: Arc<CompiledFlow>,
        origin: &str,
    ) -> Result<(), String> {
        let key = (compiled.flow.id.clone(), compiled.flow.version);
        if let Some(existing) = self.versions.get(&key) {
            if existing.flow == compiled.flow {
                return Ok(());
            }
            return Err(changed_message(origin, &compiled.flow));
        }
        let latest = self.latest.entry(key.0.clone()).or_insert(key.1);
        if key.1 > *latest {
            *latest = key.1;
        }
        self.versions.insert(key, compiled);
        Ok(())
    }

    /// One exact version (what a session in flight needs).
    pub fn get(&self, id: &str, version: u32) -> Option<Arc<CompiledFlow>> {
        self.versions.get(&(id.to_string(), version)).cloned()
    }

    /// The newest version of a flow (what a new session starts on); `None` for a retired flow.
    pub fn latest(&self, id: &str) -> Option<Arc<CompiledFlow>> {
        if self.retired.contains(id) {
            return None;
        }
        let version = *self.latest.get(id)?;
        self.get(id, version)
    }

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

    /// Flow ids that new sessions may start with their newest version, sorted (retired
    /// flows are left out).
    pub fn summary(&self) -> Vec<(String, u32)> {
        let mut out: Vec<(String, u32)> = self
            .latest
            .iter()
            .filter(|(k, _)| !self.retired.contains(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect();
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

/// The refusal of a changed flow that kept a loaded version number.
fn changed_message(origin: &str, flow: &Flow) -> String {
    format!(
        "{origin}: flow `{}` changed but its version is still {}: raise `version` so sessions under way keep the old one",
        flow.id, flow.version
    )
}

/// Compiles a checked flow; the engine's problems are placed in `path`.
fn compile(flow: Flow, path: &Path) -> Result<CompiledFlow, String> {
    CompiledFlow::compile(flow).map_err(|errs| {
        errs.iter()
            .map(|e| format!("{}: {e}", path.display()))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// A checked flow file as it is published.
fn version_source(source: &SourceFlow) -> VersionSource {
    VersionSource {
        flow_id: source.flow.id.clone(),
        version: source.flow.version,
        content_hash: content_hash(&source.flow, &source.source),
        source: source.source.clone(),
    }
}
