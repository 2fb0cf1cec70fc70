//! Flows as campaign managers write them: the YAML format (`model`), its JSON Schema
//! (`schema`), loading with positions and the checker.
//!
//! Nothing here runs a flow; that is `engine`.

pub mod model;
pub mod schema;
