//! placeholder
pub use crate::flow::diagnostic::{Diagnostic, Severity};
use crate::flow::load::SourceFlow;
use std::path::PathBuf;
pub struct CheckReport { pub flows: Vec<SourceFlow>, pub diagnostics: Vec<Diagnostic> }
pub fn check(_s: &SourceFlow) -> Vec<Diagnostic> { Vec::new() }
pub fn check_paths(_p: &[PathBuf]) -> CheckReport { CheckReport { flows: vec![], diagnostics: vec![] } }
pub fn render_report(_r: &CheckReport) -> String { String::new() }
