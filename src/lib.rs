pub mod encoding;
pub mod flow;
