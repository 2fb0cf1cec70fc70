//! SMPP 3.4: PDU values, their binary codec, TLVs, command statuses, stream framing and
//! sequence numbers. It never opens connections, binds, retries or keeps session state.
//!
//! Why in-house: the subset Baraza needs (binds, submit/deliver/data_sm, receipts, USSD TLVs)
//! is small, about a thousand lines over a fixed, decades-old wire format, so owning it costs
//! little and lets every byte be tested against annotated fixtures, property tests and a fuzz
//! target. The crates available are either abandoned (`smpp`) or bring a fast-moving 0.x API and
//! a client that was seen to stall (`rusmppc`). Baraza's interop needs (unknown TLVs kept
//! byte-exact, USSD TLVs accepted, a malformed body answered with generic_nack instead of a
//! dropped bind) are easier to guarantee in code we own. `rusmpp-core` serves only as an
//! independent reference in a differential test (a dev-dependency).

pub mod esme;
pub mod framing;
pub mod pdu;
pub mod profile;
pub mod receipt;
pub mod sim_http;
pub mod smsc_sim;
pub mod status;
pub mod tlv;

use std::sync::atomic::{AtomicU32, Ordering};

pub use framing::{Frame, FramingError, SmppCodec};
pub use pdu::{
    Bind, BindResp, Body, COctetString, DataSm, DecodeError, EncodeError, Malformation,
    MessageIdResp, Outbind, Pdu, ShortMessage,
};
pub use status::CommandStatus;
pub use tlv::{Tlv, TlvList};

/// The largest sequence number SMPP allows (the high bit is reserved).
pub const MAX_SEQUENCE: u32 = 0x7FFF_FFFF;

/// Hands out request sequence numbers 1, 2, ..., 0x7FFFFFFF, then 1 again. Shareable between
/// tasks of one bind (`&self`), so every request of a bind gets a distinct number until wrap.
#[derive(Debug)]
pub struct SequenceNumbers {
    /// The number the next call returns, always in 1..=MAX_SEQUENCE.
    next: AtomicU32,
}

impl Default for SequenceNumbers {
    fn default() -> Self {
        SequenceNumbers::starting_at(1)
    }
}

impl SequenceNumbers {
    /// Numbers from 1.
    pub fn new() -> SequenceNumbers {
        SequenceNumbers::default()
    }

    /// Numbers from `first` (0 and values over 0x7FFFFFFF start at 1), e.g. to resume.
    pub fn starting_at(first: u32) -> SequenceNumbers {
        let first = if (1..=MAX_SEQUENCE).contains(&first) {
            first
        } else {
            1
        };
        SequenceNumbers {
            next: AtomicU32::new(first),
        }
    }

    /// The next sequence number.
    pub fn next_sequence(&self) -> u32 {
        let step = |n: u32| Some(if n >= MAX_SEQUENCE { 1 } else { n + 1 });
        match self
            .next
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, step)
        {
            Ok(previous) | Err(previous) => previous,
        }
    }
}

impl Iterator for SequenceNumbers {
    type Item = u32;

    fn next(&mut self) -> Option<u32> {
        Some(self.next_sequence())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequence_starts_at_one_and_wraps_to_one() {
        let sequences = SequenceNumbers::new();
        assert_eq!(sequences.next_sequence(), 1);
        assert_eq!(sequences.next_sequence(), 2);
        let near_end = SequenceNumbers::starting_at(MAX_SEQUENCE - 1);
        let taken: Vec<u32> = near_end.take(4).collect();
        assert_eq!(taken, [MAX_SEQUENCE - 1, MAX_SEQUENCE, 1, 2]);
        assert_eq!(SequenceNumbers::starting_at(0).next_sequence(), 1);
        assert_eq!(SequenceNumbers::starting_at(0x8000_0000).next_sequence(), 1);
    }
}
