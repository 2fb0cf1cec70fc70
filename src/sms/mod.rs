//! Sending and receiving SMS for the gateway: the layer between the dispatcher (which decides
//! what to say) and the SMPP protocol (which only knows PDUs and binds).
//!
//! - [`outbox`]: the outbound queue that loses nothing and sends nothing twice (stored before
//!   it is submitted, a guarded `queued -> sending` claim, outcomes and receipts stored).
//! - [`binds`]: the operator binds `baraza serve` keeps open, wiring inbound messages to the
//!   dispatcher and the outbox to the ESMEs.
//! - [`africastalking`]: Africa's Talking's SMS wire format (send request and answer, incoming
//!   messages, delivery reports) and the HTTP route the outbox sends through.
//! - [`http_inbound`]: incoming messages and delivery reports aggregators post over HTTP, kept
//!   and handled as the binds handle SMPP ones.
//!
//! The protocol folder (`crate::smpp`) sits below this and never reaches up into the
//! dispatcher; this module never encodes a PDU (the HTTP providers' forms are theirs to
//! encode, in their own files).

pub mod africastalking;
pub mod binds;
pub mod http_inbound;
pub mod outbox;
