//! Flows as campaign managers write them: the YAML format (`model`), its JSON Schema
//! (`schema`), loading with positions and the checker.
//!
//! Nothing here runs a flow; that is `engine`.

pub mod catalog;
pub mod check;
pub mod diagnostic;
pub mod load;
pub mod model;
mod positions;
pub mod schema;

pub use check::{
    CheckOptions, CheckReport, check, check_paths, check_paths_with, check_with, render_report,
};
pub use diagnostic::{Diagnostic, Severity};
pub use load::{SourceFlow, load_file, load_str};
