//! The SMS encoding layer end to end: choose a data_coding, split into parts, carry the parts
//! as an SMSC would (in any order, with duplicates), read the concatenation marks back,
//! reassemble and decode; the text must come back unchanged. Also byte-level examples, the
//! part boundaries around escape and surrogate pairs, and decoders that never panic.

use std::time::{Duration, Instant};

use proptest::prelude::*;

use baraza::encoding::gsm7::{self, DataCoding, Encoding, GsmCoding};
use baraza::encoding::reassembly::{self, ConcatInfo, ConcatKind, Reassembler};
use baraza::encoding::split::{self, Concat, Part, SplitError};

/// What a receiver does with one submitted part: the concatenation mark (if any) and the
/// payload octets.
fn receive(part: &Part) -> (Option<ConcatInfo>, Vec<u8>) {
    if let Some(payload) = &part.message_payload {
        return (None, payload.clone());
    }
    if part.esm_class_udhi {
        let Some((info, payload)) = reassembly::parse_udh(&part.short_message) else {
            panic!("a UDH we built does not parse: {:02X?}", part.short_message);
        };
        return (Some(info), payload.to_vec());
    }
    if let Some((reference, total, seq)) = part.sar {
        return (
            Some(ConcatInfo::from_sar(reference, total, seq)),
            part.short_message.clone(),
        );
    }
    (None, part.short_message.clone())
}

/// Delivers `parts` in the order given by `order_keys` (sorted), each first part twice, and
/// returns the reassembled octets.
fn deliver(parts: &[Part], order_keys: &[u32]) -> Vec<u8> {
    let mut order: Vec<usize> = (0..parts.len()).collect();
    order.sort_by_key(|&index| order_keys.get(index).copied().unwrap_or(0));
    let now = Instant::now();
    let mut reassembler = Reassembler::new(Duration::from_secs(60), 4);
    let mut complete = None;
    for (step, &index) in order.iter().enumerate() {
        let (info, payload) = receive(&parts[index]);
        let Some(info) = info else {
            assert_eq!(parts.len(), 1, "only a lone part has no mark");
            return payload;
        };
        if step == 0 && parts.len() > 1 {
            // An SMSC retry: the same part twice.
            assert_eq!(
                reassembler.push("254700000001", info, &payload, now),
                Ok(None)
            );
        }
        let result = reassembler.push("254700000001", info, &payload, now);
        let Ok(result) = result else {
            panic!("part rejected: {result:?}");
        };
        if step + 1 < order.len() {
            assert_eq!(result, None, "complete before the last part");
        } else {
            complete = result;
        }
    }
    assert_eq!(reassembler.pending(), 0);
    complete.unwrap_or_else(|| panic!("never completed"))
}

/// Septets (GSM) or octets (otherwise) of a part's text, UDH excluded.
fn text_octets(part: &Part) -> usize {
    receive(part).1.len()
}

fn texts() -> impl Strategy<Value = String> {
    // Characters that make boundaries interesting: base, extension (2 septets), non-GSM BMP,
    // non-BMP (surrogate pairs), and the GSM/ASCII look-alikes.
    let palette = prop::sample::select(vec![
        'a', 'Z', ' ', '@', '$', '_', '\n', 'é', 'Ç', '€', '{', '|', '\u{C}', 'ç', 'ł', 'Ж', '😀',
        '𝄞', '\u{1B}', '\u{FFFD}',
    ]);
    prop_oneof![
        any::<String>(),
        prop::collection::vec(palette.clone(), 0..700)
            .prop_map(|chars| chars.into_iter().collect()),
        // Mostly GSM: stays GSM-7 and crosses 153-septet boundaries.
        prop::collection::vec(
            prop::sample::select(vec!['a', 'b', '€', '[', '~', ' ', '@']),
            100..800
        )
        .prop_map(|chars| chars.into_iter().collect()),
    ]
}

fn concats() -> impl Strategy<Value = Concat> {
    prop_oneof![
        any::<u8>().prop_map(|reference| Concat::Udh8 { reference }),
        any::<u16>().prop_map(|reference| Concat::Udh16 { reference }),
        any::<u16>().prop_map(|reference| Concat::Sar { reference }),
        Just(Concat::Payload),
    ]
}

fn gsm_codings() -> impl Strategy<Value = GsmCoding> {
    prop_oneof![Just(GsmCoding::Zero), Just(GsmCoding::One)]
}

proptest! {
    #[test]
    fn any_text_survives_split_and_reassembly(
        text in texts(),
        gsm_coding in gsm_codings(),
        concat in concats(),
        order_keys in prop::collection::vec(any::<u32>(), 255),
    ) {
        let coding = gsm7::choose(&text, gsm_coding);
        let parts = split::split(&text, coding, concat);
        let Ok(parts) = parts else {
            return Err(TestCaseError::fail(format!("split failed: {parts:?}")));
        };
        let octets = deliver(&parts, &order_keys);
        prop_assert_eq!(coding.decode(&octets), Some(text));
    }

    #[test]
    fn parts_respect_limits_and_never_cut_a_pair(text in texts(), concat in concats()) {
        let coding = gsm7::choose(&text, GsmCoding::Zero);
        let Ok(parts) = split::split(&text, coding, concat) else {
            return Err(TestCaseError::fail("split failed"));
        };
        prop_assert!(!parts.is_empty());
        if parts.len() == 1 {
            return Ok(());
        }
        let limit = match (coding, concat) {
            (DataCoding::Ucs2, Concat::Udh16 { .. }) => split::UCS2_PER_PART_UDH16,
            (DataCoding::Ucs2, _) => split::OCTETS_PER_PART_UDH8,
            (_, Concat::Udh16 { .. }) => split::GSM_PER_PART_UDH16,
            _ => split::GSM_PER_PART_UDH8,
        };
        for part in &parts {
            let (_, payload) = receive(part);
            prop_assert!(payload.len() <= limit, "{} > {limit}", payload.len());
            if coding == DataCoding::Ucs2 {
                prop_assert_eq!(payload.len() % 2, 0);
                // The part ends on a whole character: no lone high surrogate at its end.
                let last = payload.len().checked_sub(2).map(|at| payload[at]);
                prop_assert!(!matches!(last, Some(0xD8..=0xDB)));
                let replacement = '\u{FFFD}';
                let decodes_cleanly = !gsm7::decode_ucs2(&payload).contains(replacement);
                prop_assert!(decodes_cleanly || text.contains(replacement));
            } else {
                // An escape octet is never last: the pair went whole to the next part.
                let escapes_at_end = payload.iter().rev().take_while(|&&octet| octet == gsm7::ESCAPE).count();
                prop_assert_eq!(escapes_at_end % 2, 0);
            }
        }
    }

    #[test]
    fn sms_info_counts_what_split_cuts(text in texts()) {
        let info = gsm7::sms_info(&text);
        let coding = gsm7::choose(&text, GsmCoding::Zero);
        prop_assert_eq!(info.encoding == Encoding::Ucs2, coding == DataCoding::Ucs2);
        match split::split(&text, coding, Concat::Udh8 { reference: 0 }) {
            Ok(parts) => prop_assert_eq!(info.segments, parts.len()),
            Err(SplitError::TooManyParts { parts }) => prop_assert_eq!(info.segments, parts),
            Err(other) => return Err(TestCaseError::fail(format!("{other}"))),
        }
    }

    #[test]
    fn decoders_never_panic(
        octets in prop::collection::vec(any::<u8>(), 0..400),
        fill in 0u8..16,
        count in 0usize..500,
        data_coding in any::<u8>(),
    ) {
        let _ = gsm7::decode_unpacked(&octets);
        let _ = gsm7::decode_ucs2(&octets);
        let _ = gsm7::decode_latin1(&octets);
        let _ = gsm7::unpack_septets(&octets, fill, count);
        let _ = reassembly::parse_udh(&octets);
        let _ = reassembly::strip_udh(&octets);
        if let Some(coding) = DataCoding::from_inbound(data_coding) {
            let _ = coding.decode(&octets);
        }
    }

    #[test]
    fn parse_udh_payload_is_a_suffix(octets in prop::collection::vec(any::<u8>(), 0..300)) {
        if let Some((info, payload)) = reassembly::parse_udh(&octets) {
            prop_assert!(octets.ends_with(payload));
            prop_assert!(matches!(info.kind, ConcatKind::Udh8 | ConcatKind::Udh16));
        }
    }

    #[test]
    fn packing_round_trips(septets in prop::collection::vec(0u8..0x80, 0..300), fill in 0u8..7) {
        let packed = gsm7::pack_septets(&septets, fill);
        prop_assert_eq!(packed.len(), (usize::from(fill) + septets.len() * 7).div_ceil(8));
        prop_assert_eq!(gsm7::unpack_septets(&packed, fill, septets.len()), septets);
    }

    #[test]
    fn gsm_text_round_trips_unpacked(text in texts()) {
        match gsm7::encode_unpacked(&text) {
            Ok(octets) => {
                prop_assert_eq!(octets.len(), gsm7::units(&text, Encoding::Gsm7));
                prop_assert!(octets.iter().all(|&octet| octet < 0x80));
                prop_assert_eq!(gsm7::decode_unpacked(&octets), text.clone());
            }
            Err(not_gsm) => {
                prop_assert_eq!(gsm7::first_non_gsm(&text), Some((not_gsm.index, not_gsm.ch)));
            }
        }
        prop_assert_eq!(gsm7::decode_ucs2(&gsm7::encode_ucs2(&text)), text.clone());
        if let Ok(octets) = gsm7::encode_latin1(&text) {
            prop_assert_eq!(gsm7::decode_latin1(&octets), text);
        }
    }

    #[test]
    fn the_reassembler_stays_bounded_under_garbage(
        pushes in prop::collection::vec((0u8..3, any::<u16>(), any::<u8>(), any::<u8>(), 0u64..100), 0..200),
    ) {
        let start = Instant::now();
        let mut reassembler = Reassembler::new(Duration::from_secs(30), 8);
        for (source, reference, total, seq, second) in pushes {
            let info = ConcatInfo { kind: ConcatKind::Udh16, reference: reference % 16, total: total % 6, seq: seq % 7 };
            let now = start + Duration::from_secs(second);
            let _ = reassembler.push(&source.to_string(), info, &[seq], now);
            prop_assert!(reassembler.pending() <= 8);
            if second % 7 == 0 {
                for expired in reassembler.expire(now) {
                    prop_assert!(expired.received.len() < usize::from(expired.total));
                }
            }
        }
    }
}

#[test]
fn a_two_part_gsm_message_byte_by_byte() {
    // 160 'a' + "€": 162 septets > 160, so two parts with an 8-bit-reference UDH.
    let text = format!("{}€", "a".repeat(160));
    let Ok(parts) = split::split(
        &text,
        DataCoding::SmscDefaultGsm,
        Concat::Udh8 { reference: 0x42 },
    ) else {
        panic!("splits");
    };
    assert_eq!(parts.len(), 2);
    // Part 1: UDHL 05, IEI 00 (concatenation, 8-bit ref), IEDL 03, ref 42, total 02, seq 01,
    // then 153 septets of 'a' (0x61), one per octet.
    let mut expected = vec![0x05, 0x00, 0x03, 0x42, 0x02, 0x01];
    expected.extend([0x61; 153]);
    assert_eq!(parts[0].short_message, expected);
    // Part 2: same header with seq 02, then 7 'a' and '€' as ESC 0x65.
    let mut expected = vec![0x05, 0x00, 0x03, 0x42, 0x02, 0x02];
    expected.extend([0x61; 7]);
    expected.extend([0x1B, 0x65]);
    assert_eq!(parts[1].short_message, expected);
    assert!(parts.iter().all(|part| part.esm_class_udhi));
}

#[test]
fn an_escape_pair_at_septets_153_154_goes_whole_to_the_next_part() {
    // 152 'a', then '€' would occupy septets 153 and 154 of part one.
    let text = format!("{}€{}", "a".repeat(152), "b".repeat(20));
    let Ok(parts) = split::split(
        &text,
        DataCoding::SmscDefaultGsm,
        Concat::Udh8 { reference: 1 },
    ) else {
        panic!("splits");
    };
    assert_eq!(parts.iter().map(text_octets).collect::<Vec<_>>(), [152, 22]);
    assert_eq!(receive(&parts[1]).1[..2], [0x1B, 0x65]);
    assert_eq!(gsm7::sms_info(&text).segments, 2);
}

#[test]
fn an_escape_pair_at_septets_152_153_stays_in_part_one() {
    // 151 'a', then '€' fills septets 152 and 153 exactly.
    let text = format!("{}€{}", "a".repeat(151), "b".repeat(20));
    let Ok(parts) = split::split(
        &text,
        DataCoding::SmscDefaultGsm,
        Concat::Udh8 { reference: 1 },
    ) else {
        panic!("splits");
    };
    assert_eq!(parts.iter().map(text_octets).collect::<Vec<_>>(), [153, 20]);
    assert_eq!(receive(&parts[0]).1[151..], [0x1B, 0x65]);
}

#[test]
fn with_a_16_bit_reference_the_boundary_is_152() {
    // 151 'a' + '€' would be septets 152-153: too many for 152, so it moves.
    let text = format!("{}€{}", "a".repeat(151), "b".repeat(20));
    let Ok(parts) = split::split(
        &text,
        DataCoding::SmscDefaultGsm,
        Concat::Udh16 { reference: 0x0102 },
    ) else {
        panic!("splits");
    };
    assert_eq!(parts.iter().map(text_octets).collect::<Vec<_>>(), [151, 22]);
    assert_eq!(
        parts[0].short_message[..7],
        [0x06, 0x08, 0x04, 0x01, 0x02, 0x02, 0x01]
    );
}

#[test]
fn an_emoji_at_the_ucs2_boundary_goes_whole_to_the_next_part() {
    // 66 'ж' = 132 octets; '😀' (D8 3D DE 00) would take octets 133-136 of a 134-octet part.
    let text = format!("{}😀{}", "ж".repeat(66), "ж".repeat(5));
    let Ok(parts) = split::split(&text, DataCoding::Ucs2, Concat::Udh8 { reference: 3 }) else {
        panic!("splits");
    };
    assert_eq!(parts.iter().map(text_octets).collect::<Vec<_>>(), [132, 14]);
    assert_eq!(receive(&parts[1]).1[..4], [0xD8, 0x3D, 0xDE, 0x00]);
    assert_eq!(gsm7::sms_info(&text).segments, 2);
    // 65 'ж' + '😀' = 134 octets: the emoji ends part one exactly.
    let text = format!("{}😀{}", "ж".repeat(65), "ж".repeat(5));
    let Ok(parts) = split::split(&text, DataCoding::Ucs2, Concat::Udh8 { reference: 3 }) else {
        panic!("splits");
    };
    assert_eq!(parts.iter().map(text_octets).collect::<Vec<_>>(), [134, 10]);
}

#[test]
fn sms_info_is_exact_where_the_naive_count_is_not() {
    // 152 'a' + '€' + 152 'a' = 306 septets = 2 × 153, but the pair cannot straddle: 3 parts.
    let gsm = format!("{}€{}", "a".repeat(152), "a".repeat(152));
    assert_eq!(gsm7::units(&gsm, Encoding::Gsm7), 306);
    assert_eq!(gsm7::sms_info(&gsm).segments, 3);
    // 66 'ж' + '😀' + 66 'ж' = 134 UTF-16 units = 2 × 67, but the pair cannot straddle: 3.
    let ucs2 = format!("{}😀{}", "ж".repeat(66), "ж".repeat(66));
    assert_eq!(gsm7::units(&ucs2, Encoding::Ucs2), 134);
    assert_eq!(gsm7::sms_info(&ucs2).segments, 3);
    // The single-part limits stay 160 septets and 70 units.
    assert_eq!(gsm7::sms_info(&format!("{}€", "a".repeat(158))).segments, 1);
    assert_eq!(gsm7::sms_info(&format!("{}€", "a".repeat(159))).segments, 2);
    assert_eq!(gsm7::sms_info(&format!("{}😀", "ж".repeat(68))).segments, 1);
    assert_eq!(gsm7::sms_info(&format!("{}😀", "ж".repeat(69))).segments, 2);
}

#[test]
fn data_coding_one_carries_the_same_septets_as_zero() {
    let text = "Habari @ {2}";
    assert_eq!(gsm7::choose(text, GsmCoding::One), DataCoding::Ia5);
    assert_eq!(
        DataCoding::Ia5.encode(text),
        DataCoding::SmscDefaultGsm.encode(text)
    );
}

#[test]
fn sar_and_udh_parts_of_one_reference_are_different_messages() {
    let now = Instant::now();
    let mut reassembler = Reassembler::new(Duration::from_secs(60), 4);
    let udh = ConcatInfo {
        kind: ConcatKind::Udh8,
        reference: 5,
        total: 2,
        seq: 1,
    };
    assert_eq!(reassembler.push("x", udh, b"u", now), Ok(None));
    assert_eq!(
        reassembler.push("x", ConcatInfo::from_sar(5, 3, 1), b"s", now),
        Ok(None)
    );
    assert_eq!(reassembler.pending(), 2);
}
