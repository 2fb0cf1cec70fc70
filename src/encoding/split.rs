//! Splitting an outbound text into SMS parts for concatenation: encodes it in the chosen
//! data_coding, cuts it only between characters (never inside an escape pair or a surrogate
//! pair) and builds the concatenation marks each SMPP style needs (UDH with 8- or 16-bit
//! reference, SAR TLVs, or one message_payload).
//!
//! Pure functions; never sends anything, never picks a reference number (the caller owns the
//! per-destination counter), never splits a text that fits one part.

use super::gsm7::{self, DataCoding, EncodeError};

/// GSM-7 septets in a single, unconcatenated SMS.
pub const GSM_SINGLE: usize = 160;
/// GSM-7 septets per part behind a 6-octet UDH (8-bit reference), or with SAR TLVs (the SMSC
/// adds that UDH).
pub const GSM_PER_PART_UDH8: usize = 153;
/// GSM-7 septets per part behind a 7-octet UDH (16-bit reference).
pub const GSM_PER_PART_UDH16: usize = 152;
/// Octets of user data in a single SMS (UCS-2 or Latin-1).
pub const OCTETS_SINGLE: usize = 140;
/// Octets per part behind a 6-octet UDH (8-bit reference), or with SAR TLVs.
pub const OCTETS_PER_PART_UDH8: usize = 134;
/// UCS-2 octets per part behind a 7-octet UDH: 133 rounded down to whole UTF-16 units.
pub const UCS2_PER_PART_UDH16: usize = 132;
/// Latin-1 octets per part behind a 7-octet UDH.
pub const LATIN1_PER_PART_UDH16: usize = 133;
/// The most parts a concatenated message can have (total and seq are one octet).
pub const MAX_PARTS: usize = 255;
/// The most octets a message_payload TLV can hold (its length is two octets).
pub const MAX_PAYLOAD: usize = 65_535;

/// How an operator wants a long message marked as one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Concat {
    /// UDH `05 00 03 ref total seq` in short_message, esm_class UDHI (0x40).
    Udh8 {
        /// Same for every part of one message; differs between messages to one handset.
        reference: u8,
    },
    /// UDH `06 08 04 refHi refLo total seq` in short_message, esm_class UDHI (0x40).
    Udh16 {
        /// Same for every part of one message; differs between messages to one handset.
        reference: u16,
    },
    /// SAR TLVs sar_msg_ref_num (0x020C), sar_total_segments (0x020E), sar_segment_seqnum
    /// (0x020F); the SMSC builds the UDH.
    Sar {
        /// Goes into sar_msg_ref_num.
        reference: u16,
    },
    /// The whole text in one message_payload TLV (0x0424); the SMSC splits it.
    Payload,
}

/// One submit_sm worth of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// The short_message octets, UDH first in UDH modes; empty when `message_payload` is set.
    pub short_message: Vec<u8>,
    /// The octets for the message_payload TLV (0x0424), in [`Concat::Payload`] mode when the
    /// text does not fit one part; `short_message` is then empty (SMPP forbids both).
    pub message_payload: Option<Vec<u8>>,
    /// Whether esm_class must carry UDHI (0x40): short_message starts with a UDH.
    pub esm_class_udhi: bool,
    /// (reference, total, seq) for the SAR TLVs, in [`Concat::Sar`] mode.
    pub sar: Option<(u16, u8, u8)>,
}

impl Part {
    /// A part that is the whole message, with no concatenation marks.
    fn whole(short_message: Vec<u8>) -> Part {
        Part {
            short_message,
            message_payload: None,
            esm_class_udhi: false,
            sar: None,
        }
    }
}

/// Why a text cannot be sent as asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    /// The text is not representable in the data_coding (or the coding is binary).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// More parts than one octet can number.
    #[error("the message needs {parts} parts; at most 255 can be concatenated")]
    TooManyParts {
        /// Parts the text would need.
        parts: usize,
    },
    /// More octets than a message_payload TLV can hold.
    #[error("the message is {octets} octets; message_payload holds at most 65535")]
    PayloadTooLong {
        /// Octets the encoded text takes.
        octets: usize,
    },
}

/// Octets (GSM: septets, sent one per octet) in a single part for a coding.
fn single_limit(coding: DataCoding) -> usize {
    if coding.is_gsm() {
        GSM_SINGLE
    } else {
        OCTETS_SINGLE
    }
}

/// Octets (GSM: septets) per part of a concatenated message.
fn per_part_limit(coding: DataCoding, concat: Concat) -> usize {
    let wide_reference = matches!(concat, Concat::Udh16 { .. });
    match (coding, wide_reference) {
        (DataCoding::SmscDefaultGsm | DataCoding::Ia5, false) => GSM_PER_PART_UDH8,
        (DataCoding::SmscDefaultGsm | DataCoding::Ia5, true) => GSM_PER_PART_UDH16,
        (DataCoding::Ucs2, true) => UCS2_PER_PART_UDH16,
        (DataCoding::Latin1 | DataCoding::Octet, true) => LATIN1_PER_PART_UDH16,
        (_, false) => OCTETS_PER_PART_UDH8,
    }
}

/// Octets (GSM: septets) one character takes in a coding; only called on encodable text.
fn cost(coding: DataCoding, ch: char) -> usize {
    match coding {
        DataCoding::SmscDefaultGsm | DataCoding::Ia5 => usize::from(gsm7::septets(ch).unwrap_or(1)),
        DataCoding::Ucs2 => ch.len_utf16() * 2,
        DataCoding::Latin1 | DataCoding::Octet => 1,
    }
}

/// Parts a text takes when cut only between characters: one when the total cost fits
/// `single`, else greedy parts of at most `per_part`. Not capped at [`MAX_PARTS`].
pub fn count_parts(
    text: &str,
    cost: impl Fn(char) -> usize,
    single: usize,
    per_part: usize,
) -> usize {
    let total: usize = text.chars().map(&cost).sum();
    if total <= single {
        return 1;
    }
    let mut parts = 1;
    let mut used = 0;
    for ch in text.chars() {
        let needed = cost(ch);
        if used + needed > per_part && used > 0 {
            parts += 1;
            used = 0;
        }
        used += needed;
    }
    parts
}

/// The concatenation header, if the style puts one in short_message.
fn udh(concat: Concat, total: u8, seq: u8) -> Option<Vec<u8>> {
    match concat {
        Concat::Udh8 { reference } => Some(vec![0x05, 0x00, 0x03, reference, total, seq]),
        Concat::Udh16 { reference } => {
            let [high, low] = reference.to_be_bytes();
            Some(vec![0x06, 0x08, 0x04, high, low, total, seq])
        }
        Concat::Sar { .. } | Concat::Payload => None,
    }
}

/// Cuts `text`, encoded in `coding`, into the parts to submit. A text that fits one part is
/// one part with no marks; otherwise each part holds as many whole characters as fit, so an
/// escape pair (`€`) or a surrogate pair (emoji) always travels whole.
pub fn split(text: &str, coding: DataCoding, concat: Concat) -> Result<Vec<Part>, SplitError> {
    let whole = coding.encode(text)?;
    if whole.len() <= single_limit(coding) {
        return Ok(vec![Part::whole(whole)]);
    }
    if concat == Concat::Payload {
        if whole.len() > MAX_PAYLOAD {
            return Err(SplitError::PayloadTooLong {
                octets: whole.len(),
            });
        }
        return Ok(vec![Part {
            short_message: Vec::new(),
            message_payload: Some(whole),
            esm_class_udhi: false,
            sar: None,
        }]);
    }
    let per_part = per_part_limit(coding, concat);
    let parts = count_parts(text, |ch| cost(coding, ch), 0, per_part);
    let total = match u8::try_from(parts) {
        Ok(total) => total,
        Err(_) => return Err(SplitError::TooManyParts { parts }),
    };

    // `whole` is the concatenation of each character's octets, so walk it in step with the
    // characters and cut between them.
    let mut chunks: Vec<&[u8]> = Vec::with_capacity(parts);
    let mut start = 0;
    let mut end = 0;
    for ch in text.chars() {
        let needed = cost(coding, ch);
        if end - start + needed > per_part && end > start {
            chunks.push(whole.get(start..end).unwrap_or_default());
            start = end;
        }
        end += needed;
    }
    chunks.push(whole.get(start..).unwrap_or_default());

    let mut out = Vec::with_capacity(chunks.len());
    for (seq, chunk) in (1..=total).zip(chunks) {
        let part = match udh(concat, total, seq) {
            Some(mut short_message) => {
                short_message.extend_from_slice(chunk);
                Part {
                    short_message,
                    message_payload: None,
                    esm_class_udhi: true,
                    sar: None,
                }
            }
            None => {
                let reference = match concat {
                    Concat::Sar { reference } => reference,
                    _ => 0,
                };
                Part {
                    short_message: chunk.to_vec(),
                    message_payload: None,
                    esm_class_udhi: false,
                    sar: Some((reference, total, seq)),
                }
            }
        };
        out.push(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_text_that_fits_is_never_split() {
        let parts = split(
            &"a".repeat(160),
            DataCoding::SmscDefaultGsm,
            Concat::Udh8 { reference: 7 },
        );
        assert_eq!(parts, Ok(vec![Part::whole(vec![0x61; 160])]));
        let parts = split("", DataCoding::Ucs2, Concat::Payload);
        assert_eq!(parts, Ok(vec![Part::whole(Vec::new())]));
    }

    #[test]
    fn udh8_parts_carry_05_00_03_ref_total_seq() {
        let Ok(parts) = split(
            &"a".repeat(161),
            DataCoding::SmscDefaultGsm,
            Concat::Udh8 { reference: 0x2A },
        ) else {
            panic!("161 GSM septets split");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].short_message[..6], [0x05, 0x00, 0x03, 0x2A, 2, 1]);
        assert_eq!(parts[0].short_message.len(), 6 + 153);
        assert_eq!(
            parts[1].short_message,
            [
                0x05, 0x00, 0x03, 0x2A, 2, 2, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61, 0x61
            ]
        );
        assert!(
            parts
                .iter()
                .all(|part| part.esm_class_udhi && part.sar.is_none())
        );
    }

    #[test]
    fn udh16_parts_carry_06_08_04_ref_ref_total_seq() {
        let Ok(parts) = split(
            &"b".repeat(305),
            DataCoding::Ia5,
            Concat::Udh16 { reference: 0x1234 },
        ) else {
            panic!("305 GSM septets split");
        };
        // 152 + 152 + 1.
        assert_eq!(parts.len(), 3);
        assert_eq!(
            parts[2].short_message,
            [0x06, 0x08, 0x04, 0x12, 0x34, 3, 3, 0x62]
        );
        assert_eq!(parts[0].short_message.len(), 7 + 152);
    }

    #[test]
    fn sar_parts_have_bare_short_messages() {
        let Ok(parts) = split(
            &"é".repeat(71),
            DataCoding::Ucs2,
            Concat::Sar { reference: 0xBEEF },
        ) else {
            panic!("71 UCS-2 characters split");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].sar, Some((0xBEEF, 2, 1)));
        assert_eq!(parts[1].sar, Some((0xBEEF, 2, 2)));
        assert_eq!(parts[0].short_message.len(), 134);
        // 142 octets: 67 characters (134 octets), then 4 (8 octets).
        assert_eq!(parts[1].short_message, [0x00, 0xE9].repeat(4));
        assert!(parts.iter().all(|part| !part.esm_class_udhi));
    }

    #[test]
    fn payload_mode_is_one_part_in_message_payload() {
        let Ok(parts) = split(
            &"c".repeat(500),
            DataCoding::SmscDefaultGsm,
            Concat::Payload,
        ) else {
            panic!("500 septets fit a payload");
        };
        assert_eq!(parts.len(), 1);
        assert!(parts[0].short_message.is_empty());
        assert_eq!(parts[0].message_payload.as_deref(), Some(&[0x63; 500][..]));
        assert_eq!(
            split(&"c".repeat(65_536), DataCoding::Latin1, Concat::Payload),
            Err(SplitError::PayloadTooLong { octets: 65_536 })
        );
    }

    #[test]
    fn an_escape_pair_at_the_boundary_goes_whole_to_the_next_part() {
        // 152 'a' then '€' (ESC 65) then 10 'a': septets 153-154 would be the pair.
        let text = format!("{}€{}", "a".repeat(152), "a".repeat(10));
        let Ok(parts) = split(
            &text,
            DataCoding::SmscDefaultGsm,
            Concat::Udh8 { reference: 1 },
        ) else {
            panic!("splits");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].short_message.len(), 6 + 152);
        assert_eq!(parts[0].short_message.last(), Some(&0x61));
        assert_eq!(parts[1].short_message[6..8], [0x1B, 0x65]);
    }

    #[test]
    fn a_surrogate_pair_at_the_boundary_goes_whole_to_the_next_part() {
        // 66 'é' (132 octets) then '😀' (4 octets): 136 > 134.
        let text = format!("{}😀{}", "é".repeat(66), "é".repeat(10));
        let Ok(parts) = split(&text, DataCoding::Ucs2, Concat::Udh8 { reference: 1 }) else {
            panic!("splits");
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].short_message.len(), 6 + 132);
        assert_eq!(parts[1].short_message[6..10], [0xD8, 0x3D, 0xDE, 0x00]);
    }

    #[test]
    fn latin1_uses_octet_limits() {
        let Ok(parts) = split(
            &"é".repeat(267),
            DataCoding::Latin1,
            Concat::Udh16 { reference: 9 },
        ) else {
            panic!("splits");
        };
        // 133 + 133 + 1.
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0].short_message.len(), 7 + 133);
    }

    #[test]
    fn more_than_255_parts_is_an_error() {
        assert_eq!(
            split(
                &"a".repeat(153 * 255),
                DataCoding::SmscDefaultGsm,
                Concat::Udh8 { reference: 0 }
            )
            .map(|parts| parts.len()),
            Ok(255)
        );
        assert_eq!(
            split(
                &"a".repeat(153 * 255 + 1),
                DataCoding::SmscDefaultGsm,
                Concat::Udh8 { reference: 0 }
            ),
            Err(SplitError::TooManyParts { parts: 256 })
        );
    }

    #[test]
    fn unencodable_text_and_binary_coding_are_errors() {
        assert!(matches!(
            split("😀", DataCoding::SmscDefaultGsm, Concat::Payload),
            Err(SplitError::Encode(EncodeError::NotRepresentable {
                ch: '😀',
                index: 0,
                ..
            }))
        ));
        assert_eq!(
            split("x", DataCoding::Octet, Concat::Payload),
            Err(SplitError::Encode(EncodeError::NotText))
        );
    }
}
