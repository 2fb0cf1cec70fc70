//! Text encodings of the telecom world: GSM 03.38 (7-bit default alphabet), UCS-2 and
//! Latin-1, and what SMS does with them: splitting long texts into concatenated parts and
//! reassembling inbound parts.
//!
//! Pure functions and in-memory state over `&str` and bytes; no I/O, no clocks (callers pass
//! `Instant`s). Used by the engine's renderers (USSD screen limits, SMS segment counts) and by
//! the SMPP layer (encoding, splitting and reassembling messages).
pub mod gsm7;
pub mod reassembly;
pub mod split;
