//! The edges: every wire format a citizen's message arrives in or leaves by.
//!
//! One folder per channel kind, one file per provider, each owning both directions of its
//! format (parse the callback, render the reply). Nothing here loads sessions or runs flows:
//! channels turn requests into `ussd::UssdRequest` and replies into bytes; the dispatcher does
//! the rest.

pub(crate) mod form;
pub mod ussd;
pub mod voice;
