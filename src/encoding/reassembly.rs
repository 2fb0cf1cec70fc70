//! Inbound concatenated SMS: reading the concatenation mark from a user data header (IEI 0x00
//! or 0x08, among any other information elements) and putting parts back together in order,
//! whether they came with a UDH or with SAR TLVs.
//!
//! In-memory and bounded (`max_pending` incomplete messages at most); no clock of its own (the
//! caller passes `now`), no I/O, never decodes text (the caller does, with the message's
//! data_coding). It never drops an incomplete message silently: [`Reassembler::expire`] hands
//! back what arrived so the caller can log it or deliver it partially.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How the parts of a message were marked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConcatKind {
    /// UDH IEI 0x00, 8-bit reference.
    Udh8,
    /// UDH IEI 0x08, 16-bit reference.
    Udh16,
    /// SAR TLVs (sar_msg_ref_num, sar_total_segments, sar_segment_seqnum).
    Sar,
}

/// Which message a part belongs to and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConcatInfo {
    /// How the part was marked; parts of one message are all marked the same way, so this is
    /// part of the key (an 8-bit and a 16-bit reference 5 are different messages).
    pub kind: ConcatKind,
    /// The message reference (8-bit references widened).
    pub reference: u16,
    /// How many parts the message has (1..=255 when valid).
    pub total: u8,
    /// Which part this is (1..=total when valid).
    pub seq: u8,
}

impl ConcatInfo {
    /// The mark read from the three SAR TLVs.
    pub fn from_sar(reference: u16, total: u8, seq: u8) -> ConcatInfo {
        ConcatInfo {
            kind: ConcatKind::Sar,
            reference,
            total,
            seq,
        }
    }
}

/// One information element of a UDH: (identifier, data).
type InformationElement<'a> = (u8, &'a [u8]);

/// The information elements of a UDH and the payload after it, when the UDH is well formed
/// (its length and every element's length stay inside the message).
fn udh_elements(short_message: &[u8]) -> Option<(Vec<InformationElement<'_>>, &[u8])> {
    let (&header_length, rest) = short_message.split_first()?;
    let header_length = usize::from(header_length);
    let header = rest.get(..header_length)?;
    let payload = rest.get(header_length..)?;
    let mut elements = Vec::new();
    let mut at = 0;
    while at < header.len() {
        let identifier = *header.get(at)?;
        let length = usize::from(*header.get(at + 1)?);
        let data = header.get(at + 2..at + 2 + length)?;
        elements.push((identifier, data));
        at += 2 + length;
    }
    Some((elements, payload))
}

/// The concatenation mark of a short_message that starts with a UDH (esm_class UDHI set),
/// and the payload after the UDH. `None` when the UDH is malformed (a length runs past the
/// end) or carries no concatenation element. Other elements (ports, national language
/// shifts...) are skipped; when the mark repeats, the last one counts (TS 23.040 §9.2.3.24).
/// An element 0x00 or 0x08 of the wrong length is ignored. Never panics.
pub fn parse_udh(short_message: &[u8]) -> Option<(ConcatInfo, &[u8])> {
    let (elements, payload) = udh_elements(short_message)?;
    let mut found = None;
    for (identifier, data) in elements {
        match (identifier, data) {
            (0x00, &[reference, total, seq]) => {
                found = Some(ConcatInfo {
                    kind: ConcatKind::Udh8,
                    reference: u16::from(reference),
                    total,
                    seq,
                });
            }
            (0x08, &[high, low, total, seq]) => {
                found = Some(ConcatInfo {
                    kind: ConcatKind::Udh16,
                    reference: u16::from_be_bytes([high, low]),
                    total,
                    seq,
                });
            }
            _ => {}
        }
    }
    found.map(|info| (info, payload))
}

/// The payload after a well-formed UDH, whatever elements it holds; `None` when malformed.
pub fn strip_udh(short_message: &[u8]) -> Option<&[u8]> {
    udh_elements(short_message).map(|(_, payload)| payload)
}

/// Why a part was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartRejected {
    /// A message of zero parts.
    #[error("part of reference {reference} claims a total of 0 parts")]
    ZeroTotal {
        /// The message reference.
        reference: u16,
    },
    /// seq 0, or beyond the total.
    #[error("part {seq} of {total} (reference {reference}) is out of range")]
    SeqOutOfRange {
        /// The message reference.
        reference: u16,
        /// The claimed position.
        seq: u8,
        /// The claimed total.
        total: u8,
    },
    /// A part whose total differs from the earlier parts of the same reference.
    #[error("part of reference {reference} says {got} parts, earlier parts said {expected}")]
    ConflictingTotal {
        /// The message reference.
        reference: u16,
        /// The total of the parts already held.
        expected: u8,
        /// The total this part claims.
        got: u8,
    },
    /// Already holding the most incomplete messages allowed; the caller should deliver this
    /// part on its own (or call `expire` and retry).
    #[error("already holding {max_pending} incomplete messages")]
    TooManyPending {
        /// The configured bound.
        max_pending: usize,
    },
}

/// An incomplete message given up on after the timeout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expired {
    /// The source the parts came from (as passed to [`Reassembler::push`]).
    pub source: String,
    /// How the parts were marked.
    pub kind: ConcatKind,
    /// The message reference.
    pub reference: u16,
    /// The parts that did arrive, as (seq, octets), in seq order.
    pub received: Vec<(u8, Vec<u8>)>,
    /// How many parts the message should have had.
    pub total: u8,
}

/// Which incomplete message a part belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct PendingKey {
    source: String,
    kind: ConcatKind,
    reference: u16,
}

/// The parts held so far of one message.
#[derive(Debug)]
struct Pending {
    /// The total every part must agree on.
    total: u8,
    /// Index seq - 1; `None` until that part arrives.
    parts: Vec<Option<Vec<u8>>>,
    /// How many entries of `parts` are filled.
    received: usize,
    /// When the first part arrived; the timeout runs from here.
    first_seen: Instant,
}

/// Puts inbound parts back together, per source and reference.
#[derive(Debug)]
pub struct Reassembler {
    /// How long after its first part an incomplete message is given up on.
    timeout: Duration,
    /// The most incomplete messages held at once (bounds memory against floods of parts).
    max_pending: usize,
    /// The incomplete messages.
    pending: HashMap<PendingKey, Pending>,
}

impl Reassembler {
    /// A reassembler that gives up on a message `timeout` after its first part and holds at
    /// most `max_pending` incomplete messages.
    pub fn new(timeout: Duration, max_pending: usize) -> Reassembler {
        Reassembler {
            timeout,
            max_pending,
            pending: HashMap::new(),
        }
    }

    /// How many incomplete messages are held.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Takes one part. `source` names the sender (include the destination or the bind when
    /// references are only unique per pair). Returns the whole message, parts joined in seq
    /// order, when this was the last missing part; `None` while parts are missing. A part that
    /// already arrived is ignored (the first copy is kept). Rejects seq 0, seq > total,
    /// total 0, a total that contradicts earlier parts, and a new message beyond
    /// `max_pending`.
    pub fn push(
        &mut self,
        source: &str,
        concat: ConcatInfo,
        octets: &[u8],
        now: Instant,
    ) -> Result<Option<Vec<u8>>, PartRejected> {
        let ConcatInfo {
            kind,
            reference,
            total,
            seq,
        } = concat;
        if total == 0 {
            return Err(PartRejected::ZeroTotal { reference });
        }
        if seq == 0 || seq > total {
            return Err(PartRejected::SeqOutOfRange {
                reference,
                seq,
                total,
            });
        }
        let key = PendingKey {
            source: source.to_string(),
            kind,
            reference,
        };
        if let Some(held) = self.pending.get(&key)
            && held.total != total
        {
            return Err(PartRejected::ConflictingTotal {
                reference,
                expected: held.total,
                got: total,
            });
        }
        if total == 1 {
            return Ok(Some(octets.to_vec()));
        }
        if !self.pending.contains_key(&key) && self.pending.len() >= self.max_pending {
            return Err(PartRejected::TooManyPending {
                max_pending: self.max_pending,
            });
        }
        let held = self.pending.entry(key.clone()).or_insert_with(|| Pending {
            total,
            parts: vec![None; usize::from(total)],
            received: 0,
            first_seen: now,
        });
        let Some(slot) = held.parts.get_mut(usize::from(seq) - 1) else {
            return Err(PartRejected::SeqOutOfRange {
                reference,
                seq,
                total,
            });
        };
        if slot.is_some() {
            return Ok(None);
        }
        *slot = Some(octets.to_vec());
        held.received += 1;
        if held.received < usize::from(held.total) {
            return Ok(None);
        }
        let complete = self
            .pending
            .remove(&key)
            .map(|held| held.parts.into_iter().flatten().flatten().collect());
        Ok(complete)
    }

    /// Gives up on every message whose first part is at least `timeout` old at `now`, and
    /// returns what arrived of each (oldest first) for the caller to log or deliver.
    pub fn expire(&mut self, now: Instant) -> Vec<Expired> {
        let timeout = self.timeout;
        let stale: Vec<PendingKey> = self
            .pending
            .iter()
            .filter(|(_, held)| now.saturating_duration_since(held.first_seen) >= timeout)
            .map(|(key, _)| key.clone())
            .collect();
        let mut expired: Vec<(Instant, Expired)> = stale
            .into_iter()
            .filter_map(|key| {
                let held = self.pending.remove(&key)?;
                let received = (1..=held.total)
                    .zip(held.parts)
                    .filter_map(|(seq, part)| part.map(|octets| (seq, octets)))
                    .collect();
                Some((
                    held.first_seen,
                    Expired {
                        source: key.source,
                        kind: key.kind,
                        reference: key.reference,
                        received,
                        total: held.total,
                    },
                ))
            })
            .collect();
        expired.sort_by(|(a_seen, a), (b_seen, b)| {
            a_seen
                .cmp(b_seen)
                .then_with(|| a.source.cmp(&b.source))
                .then_with(|| a.reference.cmp(&b.reference))
        });
        expired.into_iter().map(|(_, message)| message).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udh8(reference: u8, total: u8, seq: u8) -> ConcatInfo {
        ConcatInfo {
            kind: ConcatKind::Udh8,
            reference: u16::from(reference),
            total,
            seq,
        }
    }

    #[test]
    fn parses_an_8_bit_reference_udh() {
        // UDHL 5, IEI 00, IEDL 3, ref 0x2A, total 3, seq 2, then "hi".
        let message = [0x05, 0x00, 0x03, 0x2A, 0x03, 0x02, b'h', b'i'];
        assert_eq!(parse_udh(&message), Some((udh8(0x2A, 3, 2), &b"hi"[..])));
    }

    #[test]
    fn parses_a_16_bit_reference_udh_among_other_elements() {
        // UDHL 12: IEI 05 (ports, 4 octets: 0x1234 → 0x5678), then IEI 08 IEDL 4
        // ref 0xBEEF total 2 seq 1, then payload 0x41.
        let message = [
            0x0C, 0x05, 0x04, 0x12, 0x34, 0x56, 0x78, 0x08, 0x04, 0xBE, 0xEF, 0x02, 0x01, 0x41,
        ];
        let expected = ConcatInfo {
            kind: ConcatKind::Udh16,
            reference: 0xBEEF,
            total: 2,
            seq: 1,
        };
        assert_eq!(parse_udh(&message), Some((expected, &[0x41][..])));
    }

    #[test]
    fn malformed_udhs_are_none() {
        assert_eq!(parse_udh(&[]), None);
        // UDHL beyond the message.
        assert_eq!(parse_udh(&[0x05, 0x00, 0x03, 0x01]), None);
        // IEDL beyond the header.
        assert_eq!(parse_udh(&[0x03, 0x00, 0x03, 0x01, 0x41]), None);
        // IEI without its length octet.
        assert_eq!(parse_udh(&[0x01, 0x00]), None);
        // Well formed but no concatenation element: None, though strip_udh finds the payload.
        let ports_only = [0x06, 0x05, 0x04, 0x12, 0x34, 0x56, 0x78, 0x41];
        assert_eq!(parse_udh(&ports_only), None);
        assert_eq!(strip_udh(&ports_only), Some(&[0x41][..]));
        // A concatenation element of the wrong length is ignored.
        assert_eq!(parse_udh(&[0x04, 0x00, 0x02, 0x01, 0x02, 0x41]), None);
    }

    #[test]
    fn parts_in_any_order_come_back_in_seq_order() {
        let now = Instant::now();
        let mut reassembler = Reassembler::new(Duration::from_secs(60), 10);
        assert_eq!(
            reassembler.push("254700", udh8(1, 3, 3), b"c", now),
            Ok(None)
        );
        assert_eq!(
            reassembler.push("254700", udh8(1, 3, 1), b"a", now),
            Ok(None)
        );
        assert_eq!(reassembler.pending(), 1);
        assert_eq!(
            reassembler.push("254700", udh8(1, 3, 2), b"b", now),
            Ok(Some(b"abc".to_vec()))
        );
        assert_eq!(reassembler.pending(), 0);
    }

    #[test]
    fn duplicates_are_ignored_and_sources_kept_apart() {
        let now = Instant::now();
        let mut reassembler = Reassembler::new(Duration::from_secs(60), 10);
        assert_eq!(reassembler.push("a", udh8(9, 2, 1), b"x", now), Ok(None));
        assert_eq!(reassembler.push("a", udh8(9, 2, 1), b"DUP", now), Ok(None));
        assert_eq!(
            reassembler.push("b", udh8(9, 2, 2), b"other", now),
            Ok(None)
        );
        assert_eq!(
            reassembler.push("a", udh8(9, 2, 2), b"y", now),
            Ok(Some(b"xy".to_vec()))
        );
        assert_eq!(reassembler.pending(), 1);
    }

    #[test]
    fn invalid_parts_are_rejected() {
        let now = Instant::now();
        let mut reassembler = Reassembler::new(Duration::from_secs(60), 10);
        assert_eq!(
            reassembler.push("a", udh8(1, 0, 0), b"", now),
            Err(PartRejected::ZeroTotal { reference: 1 })
        );
        assert_eq!(
            reassembler.push("a", udh8(1, 2, 0), b"", now),
            Err(PartRejected::SeqOutOfRange {
                reference: 1,
                seq: 0,
                total: 2
            })
        );
        assert_eq!(
            reassembler.push("a", udh8(1, 2, 3), b"", now),
            Err(PartRejected::SeqOutOfRange {
                reference: 1,
                seq: 3,
                total: 2
            })
        );
        assert_eq!(reassembler.push("a", udh8(1, 2, 1), b"x", now), Ok(None));
        assert_eq!(
            reassembler.push("a", udh8(1, 3, 2), b"y", now),
            Err(PartRejected::ConflictingTotal {
                reference: 1,
                expected: 2,
                got: 3
            })
        );
    }

    #[test]
    fn a_one_part_message_is_complete_at_once() {
        let mut reassembler = Reassembler::new(Duration::from_secs(60), 0);
        assert_eq!(
            reassembler.push("a", ConcatInfo::from_sar(7, 1, 1), b"whole", Instant::now()),
            Ok(Some(b"whole".to_vec()))
        );
    }

    #[test]
    fn memory_is_bounded() {
        let now = Instant::now();
        let mut reassembler = Reassembler::new(Duration::from_secs(60), 2);
        assert_eq!(reassembler.push("a", udh8(1, 2, 1), b"x", now), Ok(None));
        assert_eq!(reassembler.push("a", udh8(2, 2, 1), b"x", now), Ok(None));
        assert_eq!(
            reassembler.push("a", udh8(3, 2, 1), b"x", now),
            Err(PartRejected::TooManyPending { max_pending: 2 })
        );
        // Parts of messages already held are still taken.
        assert_eq!(
            reassembler.push("a", udh8(2, 2, 2), b"y", now),
            Ok(Some(b"xy".to_vec()))
        );
        assert_eq!(reassembler.push("a", udh8(3, 2, 1), b"x", now), Ok(None));
    }

    #[test]
    fn incomplete_messages_expire_with_what_arrived() {
        let start = Instant::now();
        let mut reassembler = Reassembler::new(Duration::from_secs(30), 10);
        assert_eq!(reassembler.push("a", udh8(1, 3, 3), b"c", start), Ok(None));
        assert_eq!(reassembler.push("a", udh8(1, 3, 1), b"a", start), Ok(None));
        let later = start + Duration::from_secs(10);
        assert_eq!(
            reassembler.push("b", ConcatInfo::from_sar(500, 2, 2), b"z", later),
            Ok(None)
        );
        assert_eq!(
            reassembler.expire(start + Duration::from_secs(29)),
            Vec::new()
        );
        assert_eq!(
            reassembler.expire(start + Duration::from_secs(30)),
            vec![Expired {
                source: "a".to_string(),
                kind: ConcatKind::Udh8,
                reference: 1,
                received: vec![(1, b"a".to_vec()), (3, b"c".to_vec())],
                total: 3,
            }]
        );
        assert_eq!(reassembler.pending(), 1);
        let expired = reassembler.expire(start + Duration::from_secs(40));
        assert_eq!(expired.len(), 1);
        assert_eq!(expired[0].received, vec![(2, b"z".to_vec())]);
        assert_eq!(reassembler.pending(), 0);
    }
}
