//! Baraza: survey and feedback flows for citizens on basic phones, over USSD, SMS and voice.
//!
//! The data path, module by module (see ARCHITECTURE.md):
//! `channels` (wire formats) -> `dispatcher` (admission, session load via `session_store`)
//! -> `engine::advance` (pure) -> actions -> `result_store` commit, session save -> `channels`
//! render. `flow` holds the format, the checker and the catalog; `server` the HTTP routes.

pub mod admission;
pub mod channels;
pub mod config;
pub mod contacts;
pub mod dispatcher;
pub mod encoding;
pub mod engine;
pub mod flow;
pub mod outbound;
pub mod pseudonym;
pub mod result_store;
pub mod routing;
pub mod server;
pub mod session_store;
pub mod simulator;
pub mod smpp;
pub mod sms;
pub mod telemetry;
pub mod tls;
