//! One file per node kind: how it builds its screen and what it makes of an answer.
//!
//! Adding a node kind to `flow::model::Node` makes the compiler point at `engine::mod`'s
//! matches; its behaviour lives in a new file here. No I/O.

pub mod branch;
pub mod end;
pub mod language;
pub mod menu;
pub mod message;
pub mod question;
