pub mod encoding;
pub mod engine;
pub mod flow;
pub mod session_store;
pub mod simulator;
