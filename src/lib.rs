pub mod encoding;
pub mod engine;
pub mod flow;
pub mod simulator;
