//! Text encodings of the telecom world: GSM 03.38 (7-bit default alphabet) and UCS-2.
//!
//! Pure functions over `&str`; no I/O. Used by the engine's renderers (USSD screen limits, SMS
//! segment counts) and by the SMPP layer (encoding and splitting messages).
pub mod gsm7;
