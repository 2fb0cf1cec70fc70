pub mod encoding;
pub mod engine;
pub mod flow;
pub mod result_store;
pub mod session_store;
pub mod simulator;
