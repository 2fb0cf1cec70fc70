//! SMPP delivery receipts: reading the message id, final state, error and completion time from
//! a receipt deliver_sm (TLVs first, then the conventional text of SMPP 3.4 Appendix B), and
//! normalising message ids so the id an SMSC returned in submit_sm_resp and the id it later puts
//! in the receipt compare equal for a given operator.
//!
//! Pure functions over already-decoded fields: no I/O, no session state, no storage; it never
//! decides what a receipt means for a survey (that is the caller's business) and never panics
//! on a peer's text.

use super::tlv::{MessageState, Tlv, TlvList};

/// The state a receipt reports for a message (SMPP 3.4 `message_state`, or the `stat:` word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptState {
    /// Delivered to the handset (`DELIVRD`, state 2).
    Delivered,
    /// The validity period ran out before delivery (`EXPIRED`, state 3).
    Expired,
    /// Deleted by the SMSC or an operator (`DELETED`, state 4).
    Deleted,
    /// Cannot be delivered, e.g. an unknown subscriber (`UNDELIV`, state 5).
    Undeliverable,
    /// Accepted on the subscriber's behalf (`ACCEPTD`, state 6).
    Accepted,
    /// The SMSC does not know, or sent a state word this module does not recognise (`UNKNOWN`,
    /// state 7).
    Unknown,
    /// Refused by the SMSC (`REJECTD`, state 8).
    Rejected,
    /// Still on its way; an intermediate notification (`ENROUTE`, state 1).
    Enroute,
}

impl ReceiptState {
    /// The state for a `stat:` word, case-insensitive; both the 7-letter Appendix B words and
    /// the spelled-out names are accepted. Anything else is [`ReceiptState::Unknown`].
    pub fn from_stat(word: &str) -> ReceiptState {
        match word.trim().to_ascii_uppercase().as_str() {
            "DELIVRD" | "DELIVERED" => ReceiptState::Delivered,
            "EXPIRED" => ReceiptState::Expired,
            "DELETED" => ReceiptState::Deleted,
            "UNDELIV" | "UNDELIVERABLE" | "UNDELIVERED" => ReceiptState::Undeliverable,
            "ACCEPTD" | "ACCEPTED" => ReceiptState::Accepted,
            "REJECTD" | "REJECTED" => ReceiptState::Rejected,
            "ENROUTE" => ReceiptState::Enroute,
            _ => ReceiptState::Unknown,
        }
    }

    /// The state for a `message_state` TLV value; values outside 1..=8 are `Unknown`.
    pub fn from_message_state(state: MessageState) -> ReceiptState {
        match state {
            MessageState::ENROUTE => ReceiptState::Enroute,
            MessageState::DELIVERED => ReceiptState::Delivered,
            MessageState::EXPIRED => ReceiptState::Expired,
            MessageState::DELETED => ReceiptState::Deleted,
            MessageState::UNDELIVERABLE => ReceiptState::Undeliverable,
            MessageState::ACCEPTED => ReceiptState::Accepted,
            MessageState::REJECTED => ReceiptState::Rejected,
            _ => ReceiptState::Unknown,
        }
    }

    /// The `message_state` TLV value for this state.
    pub fn to_message_state(self) -> MessageState {
        match self {
            ReceiptState::Enroute => MessageState::ENROUTE,
            ReceiptState::Delivered => MessageState::DELIVERED,
            ReceiptState::Expired => MessageState::EXPIRED,
            ReceiptState::Deleted => MessageState::DELETED,
            ReceiptState::Undeliverable => MessageState::UNDELIVERABLE,
            ReceiptState::Accepted => MessageState::ACCEPTED,
            ReceiptState::Unknown => MessageState::UNKNOWN,
            ReceiptState::Rejected => MessageState::REJECTED,
        }
    }

    /// The Appendix B `stat:` word (`DELIVRD`, `UNDELIV`, ...).
    pub fn stat_word(self) -> &'static str {
        match self {
            ReceiptState::Delivered => "DELIVRD",
            ReceiptState::Expired => "EXPIRED",
            ReceiptState::Deleted => "DELETED",
            ReceiptState::Undeliverable => "UNDELIV",
            ReceiptState::Accepted => "ACCEPTD",
            ReceiptState::Unknown => "UNKNOWN",
            ReceiptState::Rejected => "REJECTD",
            ReceiptState::Enroute => "ENROUTE",
        }
    }

    /// True when no later receipt is expected for the message (all but `Enroute`).
    pub fn is_final(self) -> bool {
        self != ReceiptState::Enroute
    }
}

/// What a delivery receipt says about one submitted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The SMSC's message id as the receipt gives it (not normalised: see
    /// [`MessageIdNormalisation`]), to find the submission this receipt is about.
    pub message_id: String,
    /// The message's state.
    pub state: ReceiptState,
    /// The error: `network_error_code` as `type:code` when that TLV is present and non-zero,
    /// else the text's `err:` field; `None` when absent or all zeros (no error).
    pub error: Option<String>,
    /// The text's `done date:` (usually `YYMMDDhhmm`), kept as sent: SMSC clocks and formats
    /// vary too much to interpret here.
    pub done_at: Option<String>,
}

/// The fields of a receipt text, each `None` when the text lacks it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptText {
    /// `id:`.
    pub id: Option<String>,
    /// `sub:` (number of messages originally submitted).
    pub sub: Option<String>,
    /// `dlvrd:` (number delivered).
    pub dlvrd: Option<String>,
    /// `submit date:`.
    pub submit_date: Option<String>,
    /// `done date:`.
    pub done_date: Option<String>,
    /// `stat:`.
    pub stat: Option<String>,
    /// `err:`.
    pub err: Option<String>,
    /// `text:` (the first characters of the original message; runs to the end).
    pub text: Option<String>,
}

/// The keys of the Appendix B format, in words (a space in a key matches any run of spaces).
const KEYS: [&str; 8] = [
    "id",
    "sub",
    "dlvrd",
    "submit date",
    "done date",
    "stat",
    "err",
    "text",
];

/// Where `key` (case-insensitive, its inner space matching one or more whitespace) followed by
/// optional whitespace and `:` occurs at a word start at or after `from`: returns (key start,
/// value start).
fn find_key(lower: &str, key: &str, from: usize) -> Option<(usize, usize)> {
    let bytes = lower.as_bytes();
    let first_word = key.split(' ').next().unwrap_or(key);
    let mut search = from;
    while let Some(offset) = lower.get(search..).and_then(|rest| rest.find(first_word)) {
        let start = search + offset;
        search = start + 1;
        if start > 0 && !bytes[start - 1].is_ascii_whitespace() {
            continue;
        }
        let mut at = start;
        let mut matched = true;
        for (index, word) in key.split(' ').enumerate() {
            if index > 0 {
                let spaces = bytes[at..]
                    .iter()
                    .take_while(|b| b.is_ascii_whitespace())
                    .count();
                if spaces == 0 {
                    matched = false;
                    break;
                }
                at += spaces;
            }
            if bytes[at..].starts_with(word.as_bytes()) {
                at += word.len();
            } else {
                matched = false;
                break;
            }
        }
        if !matched {
            continue;
        }
        at += bytes[at..]
            .iter()
            .take_while(|b| b.is_ascii_whitespace())
            .count();
        if bytes.get(at) == Some(&b':') {
            return Some((start, at + 1));
        }
    }
    None
}

/// Reads the `id:... sub:... dlvrd:... submit date:... done date:... stat:... err:...
/// text:...` format: keys case-insensitive and in any order, missing fields and extra spaces
/// tolerated, `text:` taking the rest of the line. `None` when no key is found at all.
pub fn parse_receipt_text(text: &str) -> Option<ReceiptText> {
    let lower = text.to_ascii_lowercase();
    // Everything after `text:` is message content, so keys are only looked for before it.
    let text_key = find_key(&lower, "text", 0);
    let limit = text_key.map_or(lower.len(), |(start, _)| start);
    let mut found: Vec<(usize, usize, usize)> = Vec::new();
    for (index, key) in KEYS.iter().enumerate() {
        if *key == "text" {
            if let Some((start, value)) = text_key {
                found.push((start, value, index));
            }
            continue;
        }
        if let Some((start, value)) = find_key(&lower, key, 0).filter(|(start, _)| *start < limit) {
            found.push((start, value, index));
        }
    }
    if found.is_empty() {
        return None;
    }
    found.sort_unstable();
    let mut fields = ReceiptText::default();
    for (position, &(_, value_start, index)) in found.iter().enumerate() {
        let value_end = found
            .get(position + 1)
            .map_or(text.len(), |&(next_start, _, _)| next_start);
        let value = text
            .get(value_start..value_end.max(value_start))
            .unwrap_or_default()
            .trim()
            .to_string();
        let value = Some(value).filter(|v| !v.is_empty());
        let slot = match index {
            0 => &mut fields.id,
            1 => &mut fields.sub,
            2 => &mut fields.dlvrd,
            3 => &mut fields.submit_date,
            4 => &mut fields.done_date,
            5 => &mut fields.stat,
            6 => &mut fields.err,
            _ => &mut fields.text,
        };
        *slot = value;
    }
    Some(fields)
}

/// True for an error code that means "no error" ("000", "0", "").
fn is_zero_code(code: &str) -> bool {
    code.chars().all(|c| c == '0')
}

/// The receipt in a deliver_sm's TLVs and short message text. TLVs win field by field
/// (`receipted_message_id`, `message_state`, `network_error_code`); the text fills the rest.
/// `None` when neither gives a message id. Malformed TLV values are ignored, not fatal.
pub fn parse_receipt(tlvs: &[Tlv], text: &str) -> Option<Receipt> {
    let fields = parse_receipt_text(text).unwrap_or_default();
    let message_id = tlvs
        .receipted_message_id()
        .ok()
        .flatten()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty())
        .or(fields.id)?;
    let state = match tlvs.message_state().ok().flatten() {
        Some(state) => ReceiptState::from_message_state(state),
        None => fields
            .stat
            .as_deref()
            .map_or(ReceiptState::Unknown, ReceiptState::from_stat),
    };
    let network_error = tlvs
        .network_error_code()
        .ok()
        .flatten()
        .filter(|code| code.error_code != 0)
        .map(|code| format!("{}:{}", code.network_type, code.error_code));
    let error = network_error.or(fields.err.filter(|err| !is_zero_code(err)));
    Some(Receipt {
        message_id,
        state,
        error,
        done_at: fields.done_date,
    })
}

/// How an operator's submit_sm_resp ids relate to its receipt ids (the conversion applies to
/// the submit_sm_resp side).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdConversion {
    /// Both sides use the same notation.
    #[default]
    None,
    /// submit_sm_resp ids are hexadecimal, receipt ids decimal.
    HexToDecimal,
    /// submit_sm_resp ids are decimal, receipt ids hexadecimal.
    DecimalToHex,
}

/// Which PDU an id comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdSide {
    /// The `message_id` of a submit_sm_resp.
    SubmitResp,
    /// The id in a delivery receipt.
    Receipt,
}

/// Per-operator rules that make the two ids of one message compare equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct MessageIdNormalisation {
    /// Notation change applied to submit_sm_resp ids.
    pub conversion: IdConversion,
    /// Lower-case both ids (hex ids change case between PDUs on some SMSCs).
    pub lowercase: bool,
    /// Drop leading zeros from both ids ("0" stays "0").
    pub strip_leading_zeros: bool,
}

impl MessageIdNormalisation {
    /// No change but trimming surrounding whitespace.
    pub fn none() -> MessageIdNormalisation {
        MessageIdNormalisation::default()
    }

    /// The id in the form used for matching. An id the conversion cannot parse (not hex, not
    /// decimal, or over 128 bits) is kept as it is, so it still matches itself.
    pub fn normalise(&self, id: &str, side: IdSide) -> String {
        let id = id.trim();
        let converted = match (side, self.conversion) {
            (IdSide::SubmitResp, IdConversion::HexToDecimal) => {
                u128::from_str_radix(id, 16).map(|n| n.to_string()).ok()
            }
            (IdSide::SubmitResp, IdConversion::DecimalToHex) => {
                id.parse::<u128>().map(|n| format!("{n:x}")).ok()
            }
            _ => None,
        };
        let mut out = converted.unwrap_or_else(|| id.to_string());
        if self.lowercase {
            out = out.to_ascii_lowercase();
        }
        if self.strip_leading_zeros {
            let stripped = out.trim_start_matches('0');
            out = if stripped.is_empty() && !out.is_empty() {
                "0".to_string()
            } else {
                stripped.to_string()
            };
        }
        out
    }

    /// [`Self::normalise`] for a submit_sm_resp id.
    pub fn submit_id(&self, id: &str) -> String {
        self.normalise(id, IdSide::SubmitResp)
    }

    /// [`Self::normalise`] for a receipt id.
    pub fn receipt_id(&self, id: &str) -> String {
        self.normalise(id, IdSide::Receipt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::tlv::NetworkErrorCode;

    /// (receipt text, id, state, error, done date).
    type Case = (
        &'static str,
        &'static str,
        ReceiptState,
        Option<&'static str>,
        Option<&'static str>,
    );

    /// Real-world shaped receipt texts and what must be read from them.
    #[test]
    fn text_table() {
        let cases: &[Case] = &[
            (
                "id:0123456789 sub:001 dlvrd:001 submit date:2305011200 done date:2305011201 stat:DELIVRD err:000 text:Hello there",
                "0123456789",
                ReceiptState::Delivered,
                None,
                Some("2305011201"),
            ),
            (
                "ID:7F3A2B sub:001 dlvrd:000 Submit Date:2305011200 Done Date:2305021200 Stat:EXPIRED Err:  027 Text:",
                "7F3A2B",
                ReceiptState::Expired,
                Some("027"),
                Some("2305021200"),
            ),
            (
                "id:44 submit date:2305011200 done  date:2305011201 stat:UNDELIV err:001",
                "44",
                ReceiptState::Undeliverable,
                Some("001"),
                Some("2305011201"),
            ),
            (
                "id: 9 stat: REJECTD",
                "9",
                ReceiptState::Rejected,
                None,
                None,
            ),
            (
                "id:c0ffee sub:001 dlvrd:001 submit date:230501120000 done date:230501120100 stat:ACCEPTD err:0 text:id:fake stat:DELETED",
                "c0ffee",
                ReceiptState::Accepted,
                None,
                Some("230501120100"),
            ),
            (
                "id:55 stat:ENROUTE",
                "55",
                ReceiptState::Enroute,
                None,
                None,
            ),
            ("id:56 stat:weird", "56", ReceiptState::Unknown, None, None),
        ];
        for (text, id, state, error, done) in cases {
            let receipt = parse_receipt(&[], text).unwrap_or_else(|| panic!("parses {text}"));
            assert_eq!(receipt.message_id, *id, "{text}");
            assert_eq!(receipt.state, *state, "{text}");
            assert_eq!(receipt.error.as_deref(), *error, "{text}");
            assert_eq!(receipt.done_at.as_deref(), *done, "{text}");
        }
    }

    #[test]
    fn text_field_keeps_key_like_content() {
        let fields = parse_receipt_text("id:1 stat:DELIVRD text:id:2 err:5").unwrap();
        assert_eq!(fields.id.as_deref(), Some("1"));
        assert_eq!(fields.err, None);
        assert_eq!(fields.text.as_deref(), Some("id:2 err:5"));
    }

    #[test]
    fn no_id_is_no_receipt() {
        assert_eq!(parse_receipt(&[], "hello world"), None);
        assert_eq!(parse_receipt(&[], "stat:DELIVRD"), None);
        assert_eq!(parse_receipt(&[], ""), None);
        // A word that merely ends in "id" is not the key.
        assert_eq!(parse_receipt(&[], "paid:5 stat:DELIVRD"), None);
    }

    #[test]
    fn tlvs_win_over_text() {
        let tlvs = vec![
            Tlv::receipted_message_id("ABC"),
            Tlv::message_state(MessageState::UNDELIVERABLE),
            Tlv::network_error_code(NetworkErrorCode {
                network_type: 3,
                error_code: 11,
            }),
        ];
        let receipt = parse_receipt(
            &tlvs,
            "id:999 stat:DELIVRD err:000 done date:2301010000 text:x",
        )
        .unwrap();
        assert_eq!(receipt.message_id, "ABC");
        assert_eq!(receipt.state, ReceiptState::Undeliverable);
        assert_eq!(receipt.error.as_deref(), Some("3:11"));
        assert_eq!(receipt.done_at.as_deref(), Some("2301010000"));
        // A malformed message_state TLV falls back to the text.
        let odd = vec![Tlv::new(0x0427, vec![1, 2])];
        let receipt = parse_receipt(&odd, "id:1 stat:DELIVRD").unwrap();
        assert_eq!(receipt.state, ReceiptState::Delivered);
    }

    #[test]
    fn normalisation_makes_both_sides_equal() {
        let hex_to_dec = MessageIdNormalisation {
            conversion: IdConversion::HexToDecimal,
            lowercase: false,
            strip_leading_zeros: true,
        };
        assert_eq!(hex_to_dec.submit_id("0000002A"), "42");
        assert_eq!(hex_to_dec.receipt_id("0042"), "42");
        let dec_to_hex = MessageIdNormalisation {
            conversion: IdConversion::DecimalToHex,
            lowercase: true,
            strip_leading_zeros: true,
        };
        assert_eq!(dec_to_hex.submit_id("255"), "ff");
        assert_eq!(dec_to_hex.receipt_id("00FF"), "ff");
        let case_only = MessageIdNormalisation {
            conversion: IdConversion::None,
            lowercase: true,
            strip_leading_zeros: false,
        };
        assert_eq!(case_only.submit_id(" AbC "), case_only.receipt_id("abc"));
        assert_eq!(hex_to_dec.submit_id("not-hex"), "not-hex");
        assert_eq!(hex_to_dec.receipt_id("000"), "0");
    }

    #[test]
    fn state_round_trips_through_tlv_and_word() {
        for state in [
            ReceiptState::Delivered,
            ReceiptState::Expired,
            ReceiptState::Deleted,
            ReceiptState::Undeliverable,
            ReceiptState::Accepted,
            ReceiptState::Unknown,
            ReceiptState::Rejected,
            ReceiptState::Enroute,
        ] {
            assert_eq!(
                ReceiptState::from_message_state(state.to_message_state()),
                state
            );
            assert_eq!(ReceiptState::from_stat(state.stat_word()), state);
        }
    }

    proptest::proptest! {
        /// Any text, including key fragments and multi-byte characters, parses without panic,
        /// and a receipt found always has a non-empty id.
        #[test]
        fn never_panics(text in "(id|stat|err|text|done date|submit  date|[:é😀 a-zA-Z0-9]){0,40}") {
            if let Some(receipt) = parse_receipt(&[], &text) {
                proptest::prop_assert!(!receipt.message_id.is_empty());
            }
        }
    }
}
