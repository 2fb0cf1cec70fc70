//! SMPP optional parameters (TLVs): kept raw, with typed constructors and readers for the tags
//! Baraza uses (long messages, receipts, USSD sessions, interface version).
//!
//! A TLV is `tag u16, length u16, value` (big-endian). Every TLV, known or not, is kept as its tag
//! and exact value bytes, in order, so unknown and vendor tags round-trip byte-exact and are never
//! rejected. Typed readers check a known tag's length only when asked, so a peer's odd value never
//! makes the whole PDU unreadable. This module never interprets message text.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// Tag numbers of the TLVs this module knows by name (SMPP 3.4 section 5.3.2 and the USSD
/// extensions of the field notes).
pub mod tags {
    /// Receipt: the id of the message this receipt is about (C-octet string, at most 65 octets).
    pub const RECEIPTED_MESSAGE_ID: u16 = 0x001E;
    /// ESME-assigned reference number of a message (2 octets).
    pub const USER_MESSAGE_REFERENCE: u16 = 0x0204;
    /// Long message by SAR: reference shared by all parts (2 octets).
    pub const SAR_MSG_REF_NUM: u16 = 0x020C;
    /// Long message by SAR: number of parts (1 octet).
    pub const SAR_TOTAL_SEGMENTS: u16 = 0x020E;
    /// Long message by SAR: this part's number, from 1 (1 octet).
    pub const SAR_SEGMENT_SEQNUM: u16 = 0x020F;
    /// SMPP version the SMSC supports, in bind responses (1 octet, 0x34 = 3.4).
    pub const SC_INTERFACE_VERSION: u16 = 0x0210;
    /// Receipt: network-specific error (3 octets: network type, error code u16).
    pub const NETWORK_ERROR_CODE: u16 = 0x0423;
    /// Message text longer than `short_message` allows (up to 64 KiB).
    pub const MESSAGE_PAYLOAD: u16 = 0x0424;
    /// Receipt: final state of the message (1 octet).
    pub const MESSAGE_STATE: u16 = 0x0427;
    /// USSD: the dialogue operation (1 octet, see [`super::UssdServiceOp`]).
    pub const USSD_SERVICE_OP: u16 = 0x0501;
    /// USSD/CDMA: session number, sequence and end-of-session bit (2 octets).
    pub const ITS_SESSION_INFO: u16 = 0x1383;
}

/// One optional parameter exactly as it travels: the tag and the value's octets.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Tlv {
    /// Which parameter this is; unknown tags are kept, not rejected.
    pub tag: u16,
    /// The value's octets, exactly as received or to be sent (at most 65535).
    pub value: Bytes,
}

/// Why a known TLV's value could not be read as its type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvValueError {
    /// The value has a length the tag does not allow.
    #[error("TLV 0x{tag:04X} has a {actual}-octet value where {expected} is required")]
    WrongLength {
        /// The tag read.
        tag: u16,
        /// What the specification allows, in words ("2 octets", "1 to 65 octets").
        expected: &'static str,
        /// The length found.
        actual: usize,
    },
    /// A string value (a message id) is not UTF-8 text.
    #[error("TLV 0x{tag:04X} is not text")]
    NotText {
        /// The tag read.
        tag: u16,
    },
}

/// Network error of a delivery receipt (`network_error_code`, 3 octets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NetworkErrorCode {
    /// Network type: 1 ANSI-136, 2 IS-95, 3 GSM, 4 ANSI-41 (others reserved).
    pub network_type: u8,
    /// The network's own error code.
    pub error_code: u16,
}

/// Final state of a message in a delivery receipt (`message_state`); any octet is kept.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageState(pub u8);

impl MessageState {
    /// The message is in enroute state.
    pub const ENROUTE: MessageState = MessageState(1);
    /// The message was delivered.
    pub const DELIVERED: MessageState = MessageState(2);
    /// The validity period expired.
    pub const EXPIRED: MessageState = MessageState(3);
    /// The message was deleted.
    pub const DELETED: MessageState = MessageState(4);
    /// The message is undeliverable.
    pub const UNDELIVERABLE: MessageState = MessageState(5);
    /// The message was accepted (read on behalf of the subscriber by customer service).
    pub const ACCEPTED: MessageState = MessageState(6);
    /// The message is in an invalid state.
    pub const UNKNOWN: MessageState = MessageState(7);
    /// The message was rejected.
    pub const REJECTED: MessageState = MessageState(8);

    /// The specification's name (`DELIVERED`), or `None` for another value.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "ENROUTE",
            2 => "DELIVERED",
            3 => "EXPIRED",
            4 => "DELETED",
            5 => "UNDELIVERABLE",
            6 => "ACCEPTED",
            7 => "UNKNOWN",
            8 => "REJECTED",
            _ => return None,
        })
    }

    /// True when no further receipt is expected (every state but `ENROUTE`).
    pub fn is_final(self) -> bool {
        self != Self::ENROUTE
    }
}

impl fmt::Debug for MessageState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "MessageState::{name}"),
            None => write!(f, "MessageState({})", self.0),
        }
    }
}

/// The USSD operation of `ussd_service_op`; any octet is kept (32-255 are vendor-specific, and
/// some operators use their own codes: map those in configuration, not here).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UssdServiceOp(pub u8);

impl UssdServiceOp {
    /// PSSD indication.
    pub const PSSD_INDICATION: UssdServiceOp = UssdServiceOp(0);
    /// PSSR indication: a subscriber dialled a code (opens a pull session).
    pub const PSSR_INDICATION: UssdServiceOp = UssdServiceOp(1);
    /// USSR request: show a screen and wait for the answer.
    pub const USSR_REQUEST: UssdServiceOp = UssdServiceOp(2);
    /// USSN request: show a notification, no answer expected.
    pub const USSN_REQUEST: UssdServiceOp = UssdServiceOp(3);
    /// PSSD response.
    pub const PSSD_RESPONSE: UssdServiceOp = UssdServiceOp(16);
    /// PSSR response: the final screen, closes the session.
    pub const PSSR_RESPONSE: UssdServiceOp = UssdServiceOp(17);
    /// USSR confirm: the subscriber's answer to a USSR request.
    pub const USSR_CONFIRM: UssdServiceOp = UssdServiceOp(18);
    /// USSN confirm.
    pub const USSN_CONFIRM: UssdServiceOp = UssdServiceOp(19);
}

/// `its_session_info`: octet 1 session number; octet 2 bits 7..1 sequence, bit 0 end of session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ItsSessionInfo {
    /// Session number chosen by the side that opened the dialogue.
    pub session_number: u8,
    /// Sequence of this message within the session, 0..=127 (higher bits are dropped on encode).
    pub sequence: u8,
    /// True on the message that ends the session.
    pub end_of_session: bool,
}

impl Tlv {
    /// A TLV with any tag and value (kept as given; the encoder rejects values over 65535 octets).
    pub fn new(tag: u16, value: impl Into<Bytes>) -> Tlv {
        Tlv {
            tag,
            value: value.into(),
        }
    }

    fn octet(tag: u16, value: u8) -> Tlv {
        Tlv::new(tag, Bytes::copy_from_slice(&[value]))
    }

    fn u16_value(tag: u16, value: u16) -> Tlv {
        Tlv::new(tag, Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    /// `message_payload` (0x0424): the whole text when it does not fit `short_message`.
    pub fn message_payload(payload: impl Into<Bytes>) -> Tlv {
        Tlv::new(tags::MESSAGE_PAYLOAD, payload)
    }

    /// `sar_msg_ref_num` (0x020C).
    pub fn sar_msg_ref_num(reference: u16) -> Tlv {
        Tlv::u16_value(tags::SAR_MSG_REF_NUM, reference)
    }

    /// `sar_total_segments` (0x020E).
    pub fn sar_total_segments(total: u8) -> Tlv {
        Tlv::octet(tags::SAR_TOTAL_SEGMENTS, total)
    }

    /// `sar_segment_seqnum` (0x020F), counted from 1.
    pub fn sar_segment_seqnum(number: u8) -> Tlv {
        Tlv::octet(tags::SAR_SEGMENT_SEQNUM, number)
    }

    /// `receipted_message_id` (0x001E): the id as a NUL-terminated string.
    pub fn receipted_message_id(message_id: &str) -> Tlv {
        let mut value = BytesMut::with_capacity(message_id.len() + 1);
        value.put_slice(message_id.as_bytes());
        value.put_u8(0);
        Tlv::new(tags::RECEIPTED_MESSAGE_ID, value.freeze())
    }

    /// `message_state` (0x0427).
    pub fn message_state(state: MessageState) -> Tlv {
        Tlv::octet(tags::MESSAGE_STATE, state.0)
    }

    /// `network_error_code` (0x0423): 3 octets.
    pub fn network_error_code(code: NetworkErrorCode) -> Tlv {
        let [high, low] = code.error_code.to_be_bytes();
        Tlv::new(
            tags::NETWORK_ERROR_CODE,
            Bytes::copy_from_slice(&[code.network_type, high, low]),
        )
    }

    /// `user_message_reference` (0x0204).
    pub fn user_message_reference(reference: u16) -> Tlv {
        Tlv::u16_value(tags::USER_MESSAGE_REFERENCE, reference)
    }

    /// `ussd_service_op` (0x0501).
    pub fn ussd_service_op(op: UssdServiceOp) -> Tlv {
        Tlv::octet(tags::USSD_SERVICE_OP, op.0)
    }

    /// `its_session_info` (0x1383).
    pub fn its_session_info(info: ItsSessionInfo) -> Tlv {
        let second = ((info.sequence & 0x7F) << 1) | u8::from(info.end_of_session);
        Tlv::new(
            tags::ITS_SESSION_INFO,
            Bytes::copy_from_slice(&[info.session_number, second]),
        )
    }

    /// `sc_interface_version` (0x0210): 0x34 for SMPP 3.4.
    pub fn sc_interface_version(version: u8) -> Tlv {
        Tlv::octet(tags::SC_INTERFACE_VERSION, version)
    }

    fn fixed<const N: usize>(&self, expected: &'static str) -> Result<[u8; N], TlvValueError> {
        <[u8; N]>::try_from(self.value.as_ref()).map_err(|_| TlvValueError::WrongLength {
            tag: self.tag,
            expected,
            actual: self.value.len(),
        })
    }

    /// The value as one octet, or an error if it is not exactly one.
    pub fn as_u8(&self) -> Result<u8, TlvValueError> {
        let [octet] = self.fixed::<1>("1 octet")?;
        Ok(octet)
    }

    /// The value as a big-endian u16, or an error if it is not exactly two octets.
    pub fn as_u16(&self) -> Result<u16, TlvValueError> {
        Ok(u16::from_be_bytes(self.fixed::<2>("2 octets")?))
    }

    /// The value as a C-octet string: text up to the first NUL (a missing NUL is tolerated,
    /// since some SMSCs omit it). An empty value or one over 65 octets is an error.
    pub fn as_c_octet_str(&self) -> Result<&str, TlvValueError> {
        if self.value.is_empty() || self.value.len() > 65 {
            return Err(TlvValueError::WrongLength {
                tag: self.tag,
                expected: "1 to 65 octets",
                actual: self.value.len(),
            });
        }
        let end = self
            .value
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.value.len());
        std::str::from_utf8(&self.value[..end])
            .map_err(|_| TlvValueError::NotText { tag: self.tag })
    }

    /// The value as `network_error_code`.
    pub fn as_network_error_code(&self) -> Result<NetworkErrorCode, TlvValueError> {
        let [network_type, high, low] = self.fixed::<3>("3 octets")?;
        Ok(NetworkErrorCode {
            network_type,
            error_code: u16::from_be_bytes([high, low]),
        })
    }

    /// The value as `its_session_info`.
    pub fn as_its_session_info(&self) -> Result<ItsSessionInfo, TlvValueError> {
        let [session_number, second] = self.fixed::<2>("2 octets")?;
        Ok(ItsSessionInfo {
            session_number,
            sequence: second >> 1,
            end_of_session: second & 1 == 1,
        })
    }

    /// Octets this TLV takes on the wire (4 header octets plus the value).
    pub fn encoded_len(&self) -> usize {
        4 + self.value.len()
    }
}

impl fmt::Debug for Tlv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tlv(0x{:04X}, {:02X?})", self.tag, self.value.as_ref())
    }
}

/// Typed look-ups over the TLV list of a PDU. Each returns `Ok(None)` when the tag is absent,
/// `Err` when it is present with a value of the wrong shape, and reads the first occurrence.
pub trait TlvList {
    /// The first TLV with this tag.
    fn find_tag(&self, tag: u16) -> Option<&Tlv>;

    /// `message_payload` octets.
    fn message_payload(&self) -> Option<&Bytes> {
        self.find_tag(tags::MESSAGE_PAYLOAD).map(|tlv| &tlv.value)
    }
    /// `sar_msg_ref_num`.
    fn sar_msg_ref_num(&self) -> Result<Option<u16>, TlvValueError> {
        self.find_tag(tags::SAR_MSG_REF_NUM)
            .map(Tlv::as_u16)
            .transpose()
    }
    /// `sar_total_segments`.
    fn sar_total_segments(&self) -> Result<Option<u8>, TlvValueError> {
        self.find_tag(tags::SAR_TOTAL_SEGMENTS)
            .map(Tlv::as_u8)
            .transpose()
    }
    /// `sar_segment_seqnum`.
    fn sar_segment_seqnum(&self) -> Result<Option<u8>, TlvValueError> {
        self.find_tag(tags::SAR_SEGMENT_SEQNUM)
            .map(Tlv::as_u8)
            .transpose()
    }
    /// `receipted_message_id`, without its NUL.
    fn receipted_message_id(&self) -> Result<Option<&str>, TlvValueError> {
        self.find_tag(tags::RECEIPTED_MESSAGE_ID)
            .map(Tlv::as_c_octet_str)
            .transpose()
    }
    /// `message_state`.
    fn message_state(&self) -> Result<Option<MessageState>, TlvValueError> {
        self.find_tag(tags::MESSAGE_STATE)
            .map(|t| t.as_u8().map(MessageState))
            .transpose()
    }
    /// `network_error_code`.
    fn network_error_code(&self) -> Result<Option<NetworkErrorCode>, TlvValueError> {
        self.find_tag(tags::NETWORK_ERROR_CODE)
            .map(Tlv::as_network_error_code)
            .transpose()
    }
    /// `user_message_reference`.
    fn user_message_reference(&self) -> Result<Option<u16>, TlvValueError> {
        self.find_tag(tags::USER_MESSAGE_REFERENCE)
            .map(Tlv::as_u16)
            .transpose()
    }
    /// `ussd_service_op`.
    fn ussd_service_op(&self) -> Result<Option<UssdServiceOp>, TlvValueError> {
        self.find_tag(tags::USSD_SERVICE_OP)
            .map(|t| t.as_u8().map(UssdServiceOp))
            .transpose()
    }
    /// `its_session_info`.
    fn its_session_info(&self) -> Result<Option<ItsSessionInfo>, TlvValueError> {
        self.find_tag(tags::ITS_SESSION_INFO)
            .map(Tlv::as_its_session_info)
            .transpose()
    }
    /// `sc_interface_version`.
    fn sc_interface_version(&self) -> Result<Option<u8>, TlvValueError> {
        self.find_tag(tags::SC_INTERFACE_VERSION)
            .map(Tlv::as_u8)
            .transpose()
    }
}

impl TlvList for [Tlv] {
    fn find_tag(&self, tag: u16) -> Option<&Tlv> {
        self.iter().find(|tlv| tlv.tag == tag)
    }
}

impl TlvList for Vec<Tlv> {
    fn find_tag(&self, tag: u16) -> Option<&Tlv> {
        self.as_slice().find_tag(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_constructors_and_readers_agree() {
        let tlvs = vec![
            Tlv::message_payload(&b"hello"[..]),
            Tlv::sar_msg_ref_num(0xBEEF),
            Tlv::sar_total_segments(3),
            Tlv::sar_segment_seqnum(2),
            Tlv::receipted_message_id("0A1B"),
            Tlv::message_state(MessageState::DELIVERED),
            Tlv::network_error_code(NetworkErrorCode {
                network_type: 3,
                error_code: 0x0102,
            }),
            Tlv::user_message_reference(7),
            Tlv::ussd_service_op(UssdServiceOp::USSR_CONFIRM),
            Tlv::its_session_info(ItsSessionInfo {
                session_number: 9,
                sequence: 5,
                end_of_session: true,
            }),
            Tlv::sc_interface_version(0x34),
        ];
        assert_eq!(
            tlvs.message_payload().map(|b| b.as_ref()),
            Some(&b"hello"[..])
        );
        assert_eq!(tlvs.sar_msg_ref_num(), Ok(Some(0xBEEF)));
        assert_eq!(tlvs.sar_total_segments(), Ok(Some(3)));
        assert_eq!(tlvs.sar_segment_seqnum(), Ok(Some(2)));
        assert_eq!(tlvs.receipted_message_id(), Ok(Some("0A1B")));
        assert_eq!(tlvs.message_state(), Ok(Some(MessageState::DELIVERED)));
        assert_eq!(
            tlvs.network_error_code(),
            Ok(Some(NetworkErrorCode {
                network_type: 3,
                error_code: 0x0102
            }))
        );
        assert_eq!(tlvs.user_message_reference(), Ok(Some(7)));
        assert_eq!(tlvs.ussd_service_op(), Ok(Some(UssdServiceOp(18))));
        assert_eq!(
            tlvs.its_session_info(),
            Ok(Some(ItsSessionInfo {
                session_number: 9,
                sequence: 5,
                end_of_session: true
            }))
        );
        assert_eq!(tlvs.sc_interface_version(), Ok(Some(0x34)));
    }

    #[test]
    fn exact_value_bytes() {
        assert_eq!(Tlv::receipted_message_id("ab").value.as_ref(), b"ab\0");
        assert_eq!(
            Tlv::network_error_code(NetworkErrorCode {
                network_type: 3,
                error_code: 0x0102
            })
            .value
            .as_ref(),
            [3, 1, 2]
        );
        // session 0x12, sequence 3 (0b0000011 << 1 = 0x06), end bit set -> 0x07
        let info = ItsSessionInfo {
            session_number: 0x12,
            sequence: 3,
            end_of_session: true,
        };
        assert_eq!(Tlv::its_session_info(info).value.as_ref(), [0x12, 0x07]);
    }

    #[test]
    fn absent_and_wrong_length() {
        let empty: Vec<Tlv> = Vec::new();
        assert_eq!(empty.message_state(), Ok(None));
        assert_eq!(empty.message_payload(), None);
        let bad = vec![Tlv::new(tags::MESSAGE_STATE, &[1u8, 2][..])];
        assert_eq!(
            bad.message_state(),
            Err(TlvValueError::WrongLength {
                tag: tags::MESSAGE_STATE,
                expected: "1 octet",
                actual: 2
            })
        );
        let not_text = vec![Tlv::new(tags::RECEIPTED_MESSAGE_ID, &[0xFFu8, 0][..])];
        assert!(not_text.receipted_message_id().is_err());
        let no_nul = vec![Tlv::new(tags::RECEIPTED_MESSAGE_ID, &b"42"[..])];
        assert_eq!(no_nul.receipted_message_id(), Ok(Some("42")));
    }

    #[test]
    fn message_state_names() {
        assert_eq!(MessageState(5).name(), Some("UNDELIVERABLE"));
        assert_eq!(MessageState(0).name(), None);
        assert!(!MessageState::ENROUTE.is_final());
        assert!(MessageState::REJECTED.is_final());
    }
}
