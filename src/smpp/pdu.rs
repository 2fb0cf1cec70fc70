//! SMPP 3.4 PDUs: typed values, an encoder, and a decoder that never panics.
//!
//! A PDU is a 16-octet header (`command_length`, `command_id`, `command_status`,
//! `sequence_number`, all big-endian u32) and a body of mandatory fields followed, for some
//! commands, by TLVs. [`Pdu::decode`] takes exactly one frame (as cut by
//! [`super::framing::SmppCodec`]) and either returns a value or says why not, with the sequence
//! number when it could be read so the caller can answer generic_nack. This module does no I/O,
//! keeps no session state, and never interprets message text or data coding.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use super::status::CommandStatus;
use super::tlv::Tlv;

/// Octets in every PDU header.
pub const HEADER_LEN: usize = 16;

/// The largest `short_message` the `sm_length` octet allows.
pub const MAX_SHORT_MESSAGE: usize = 254;

/// `command_id` values (SMPP 3.4 section 5.1.2.1). A response's id is its request's with the
/// high bit set ([`command_id::RESPONSE_BIT`]).
pub mod command_id {
    /// Set on every response's command id.
    pub const RESPONSE_BIT: u32 = 0x8000_0000;
    /// generic_nack.
    pub const GENERIC_NACK: u32 = 0x8000_0000;
    /// bind_receiver.
    pub const BIND_RECEIVER: u32 = 0x0000_0001;
    /// bind_receiver_resp.
    pub const BIND_RECEIVER_RESP: u32 = 0x8000_0001;
    /// bind_transmitter.
    pub const BIND_TRANSMITTER: u32 = 0x0000_0002;
    /// bind_transmitter_resp.
    pub const BIND_TRANSMITTER_RESP: u32 = 0x8000_0002;
    /// query_sm (not supported by this codec: decodes as an unknown command).
    pub const QUERY_SM: u32 = 0x0000_0003;
    /// submit_sm.
    pub const SUBMIT_SM: u32 = 0x0000_0004;
    /// submit_sm_resp.
    pub const SUBMIT_SM_RESP: u32 = 0x8000_0004;
    /// deliver_sm.
    pub const DELIVER_SM: u32 = 0x0000_0005;
    /// deliver_sm_resp.
    pub const DELIVER_SM_RESP: u32 = 0x8000_0005;
    /// unbind.
    pub const UNBIND: u32 = 0x0000_0006;
    /// unbind_resp.
    pub const UNBIND_RESP: u32 = 0x8000_0006;
    /// bind_transceiver.
    pub const BIND_TRANSCEIVER: u32 = 0x0000_0009;
    /// bind_transceiver_resp.
    pub const BIND_TRANSCEIVER_RESP: u32 = 0x8000_0009;
    /// outbind.
    pub const OUTBIND: u32 = 0x0000_000B;
    /// enquire_link.
    pub const ENQUIRE_LINK: u32 = 0x0000_0015;
    /// enquire_link_resp.
    pub const ENQUIRE_LINK_RESP: u32 = 0x8000_0015;
    /// data_sm.
    pub const DATA_SM: u32 = 0x0000_0103;
    /// data_sm_resp.
    pub const DATA_SM_RESP: u32 = 0x8000_0103;
}

/// Maximum octets of each C-octet string field, NUL included (SMPP 3.4 section 4).
mod max {
    pub const SYSTEM_ID: usize = 16;
    pub const PASSWORD: usize = 9;
    pub const SYSTEM_TYPE: usize = 13;
    pub const ADDRESS_RANGE: usize = 41;
    pub const SERVICE_TYPE: usize = 6;
    pub const SM_ADDR: usize = 21;
    pub const DATA_SM_ADDR: usize = 65;
    pub const TIME: usize = 17;
    pub const MESSAGE_ID: usize = 65;
}

/// A C-octet string field's content, without its terminating NUL. Kept as octets (peers are
/// supposed to send ASCII but some do not), so decoding never loses or rejects a byte.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct COctetString(Vec<u8>);

impl COctetString {
    /// A string from any octets; the encoder rejects a NUL inside or a value over the field's
    /// maximum.
    pub fn new(octets: impl Into<Vec<u8>>) -> COctetString {
        COctetString(octets.into())
    }

    /// The octets, without the NUL.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The text, when the octets are UTF-8 (always so for ASCII).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The text with any invalid octet replaced by U+FFFD, for logs and messages.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    /// True for the empty string (a lone NUL on the wire).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Octets without the NUL.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl From<&str> for COctetString {
    fn from(text: &str) -> Self {
        COctetString(text.as_bytes().to_vec())
    }
}

impl From<String> for COctetString {
    fn from(text: String) -> Self {
        COctetString(text.into_bytes())
    }
}

impl PartialEq<str> for COctetString {
    fn eq(&self, other: &str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl PartialEq<&str> for COctetString {
    fn eq(&self, other: &&str) -> bool {
        self.0 == other.as_bytes()
    }
}

impl fmt::Debug for COctetString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Display for COctetString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// One SMPP PDU: the header's status and sequence, and the typed body (which fixes the
/// command id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pdu {
    /// `sequence_number`: pairs a response with its request (1..=0x7FFFFFFF for requests we send).
    pub sequence: u32,
    /// `command_status`: 0 on requests; the outcome on responses.
    pub status: CommandStatus,
    /// The command and its fields.
    pub body: Body,
}

/// The body of each supported command. Commands not listed here (query_sm, replace_sm,
/// cancel_sm, submit_multi, alert_notification) decode as [`DecodeError::UnknownCommand`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// bind_transmitter: open a session to send messages.
    BindTransmitter(Bind),
    /// bind_transmitter_resp.
    BindTransmitterResp(BindResp),
    /// bind_receiver: open a session to receive messages.
    BindReceiver(Bind),
    /// bind_receiver_resp.
    BindReceiverResp(BindResp),
    /// bind_transceiver: open a session to send and receive.
    BindTransceiver(Bind),
    /// bind_transceiver_resp.
    BindTransceiverResp(BindResp),
    /// outbind: the SMSC asks the ESME to bind as a receiver.
    Outbind(Outbind),
    /// unbind: close the session.
    Unbind,
    /// unbind_resp.
    UnbindResp,
    /// enquire_link: keep-alive.
    EnquireLink,
    /// enquire_link_resp.
    EnquireLinkResp,
    /// generic_nack: the peer could not process a PDU (the status says why).
    GenericNack,
    /// submit_sm: ESME to SMSC message.
    SubmitSm(ShortMessage),
    /// submit_sm_resp: carries the SMSC's message id (empty body allowed on failure).
    SubmitSmResp(MessageIdResp),
    /// deliver_sm: SMSC to ESME message, delivery receipt or USSD input.
    DeliverSm(ShortMessage),
    /// deliver_sm_resp (message_id is unused, normally empty).
    DeliverSmResp(MessageIdResp),
    /// data_sm: message with all content in TLVs.
    DataSm(DataSm),
    /// data_sm_resp.
    DataSmResp(MessageIdResp),
}

/// Fields of bind_transmitter, bind_receiver and bind_transceiver.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Bind {
    /// The account name (at most 15 octets).
    pub system_id: COctetString,
    /// The account password (at most 8 octets).
    pub password: COctetString,
    /// The kind of ESME, operator-defined (at most 12 octets, often empty).
    pub system_type: COctetString,
    /// SMPP version the ESME speaks: 0x34 for 3.4.
    pub interface_version: u8,
    /// Type of number of `address_range`.
    pub addr_ton: u8,
    /// Numbering plan of `address_range`.
    pub addr_npi: u8,
    /// Addresses this receiver serves (at most 40 octets, often empty).
    pub address_range: COctetString,
}

/// Fields of the three bind responses.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BindResp {
    /// The SMSC's identifier (at most 15 octets); empty when a failed response has no body.
    pub system_id: COctetString,
    /// Optional parameters, e.g. `sc_interface_version`.
    pub tlvs: Vec<Tlv>,
}

/// Fields of outbind.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outbind {
    /// The SMSC's identifier (at most 15 octets).
    pub system_id: COctetString,
    /// The password the ESME should check (at most 8 octets).
    pub password: COctetString,
}

/// Fields of submit_sm and deliver_sm (the same layout).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShortMessage {
    /// Service the message belongs to (at most 5 octets; "USSD" on many USSD gateways).
    pub service_type: COctetString,
    /// Type of number of the source address.
    pub source_addr_ton: u8,
    /// Numbering plan of the source address.
    pub source_addr_npi: u8,
    /// Sender (at most 20 octets).
    pub source_addr: COctetString,
    /// Type of number of the destination address.
    pub dest_addr_ton: u8,
    /// Numbering plan of the destination address.
    pub dest_addr_npi: u8,
    /// Recipient (at most 20 octets).
    pub destination_addr: COctetString,
    /// Message mode and type: 0x40 = UDH present, 0x04 = delivery receipt.
    pub esm_class: u8,
    /// GSM protocol identifier.
    pub protocol_id: u8,
    /// Priority level.
    pub priority_flag: u8,
    /// When to deliver: empty for now, else a 16-character SMPP time.
    pub schedule_delivery_time: COctetString,
    /// Expiry: empty for the SMSC default, else a 16-character SMPP time.
    pub validity_period: COctetString,
    /// Which receipts are wanted (bit 0: SMSC delivery receipt).
    pub registered_delivery: u8,
    /// Whether this replaces an earlier message.
    pub replace_if_present_flag: u8,
    /// Coding of `short_message` (0x00 SMSC default, 0x08 UCS-2, ...).
    pub data_coding: u8,
    /// Index of a canned message, 0 if unused.
    pub sm_default_msg_id: u8,
    /// The message octets, UDH included when esm_class says so (at most 254; longer text goes
    /// in the `message_payload` TLV with this empty).
    pub short_message: Bytes,
    /// Optional parameters in received order, unknown tags included.
    pub tlvs: Vec<Tlv>,
}

/// Fields of data_sm.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DataSm {
    /// Service the message belongs to (at most 5 octets).
    pub service_type: COctetString,
    /// Type of number of the source address.
    pub source_addr_ton: u8,
    /// Numbering plan of the source address.
    pub source_addr_npi: u8,
    /// Sender (at most 64 octets).
    pub source_addr: COctetString,
    /// Type of number of the destination address.
    pub dest_addr_ton: u8,
    /// Numbering plan of the destination address.
    pub dest_addr_npi: u8,
    /// Recipient (at most 64 octets).
    pub destination_addr: COctetString,
    /// Message mode and type.
    pub esm_class: u8,
    /// Which receipts are wanted.
    pub registered_delivery: u8,
    /// Coding of the payload.
    pub data_coding: u8,
    /// Optional parameters; the text is in `message_payload`.
    pub tlvs: Vec<Tlv>,
}

/// Fields of submit_sm_resp, deliver_sm_resp and data_sm_resp. TLVs are accepted on all three
/// (SMPP 5.0 peers send them on submit_sm_resp).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageIdResp {
    /// The SMSC's id for the message (at most 64 octets); empty when a failed response has no
    /// body, and on deliver_sm_resp.
    pub message_id: COctetString,
    /// Optional parameters.
    pub tlvs: Vec<Tlv>,
}

/// Why a frame is not a PDU this codec can return.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The frame is not a valid PDU of a known command. Answer generic_nack with
    /// [`DecodeError::nack_status`] and the sequence when it is known (and the command is a
    /// request); the connection can stay.
    #[error("malformed PDU (command id 0x{command_id:08X}, sequence {sequence:?}): {reason}")]
    Malformed {
        /// The header's sequence number, when the frame had a header.
        sequence: Option<u32>,
        /// The header's command id (0 when the frame is too short to hold one).
        command_id: u32,
        /// What is wrong.
        reason: Malformation,
    },
    /// A well-formed header with a command id this codec does not handle. Answer generic_nack
    /// with `ESME_RINVCMDID`.
    #[error("unknown command id 0x{command_id:08X} (sequence {sequence})")]
    UnknownCommand {
        /// The header's sequence number.
        sequence: u32,
        /// The unknown command id.
        command_id: u32,
    },
}

/// What is wrong with a malformed PDU; each maps to the status a generic_nack should carry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformation {
    /// Fewer than 16 octets: no complete header.
    #[error("{len} octets is shorter than the 16-octet header")]
    ShortHeader {
        /// Octets in the frame.
        len: usize,
    },
    /// `command_length` differs from the frame's length.
    #[error("command_length says {declared} octets but the frame has {actual}")]
    LengthMismatch {
        /// The header's command_length.
        declared: u32,
        /// Octets in the frame.
        actual: usize,
    },
    /// The body ended inside a mandatory field.
    #[error("the body ends inside field `{field}`")]
    Truncated {
        /// The field being read.
        field: &'static str,
    },
    /// A C-octet string has no NUL within its maximum length.
    #[error("field `{field}` is longer than {max} octets (NUL included) or has no NUL")]
    StringTooLong {
        /// The field being read.
        field: &'static str,
        /// Its maximum length, NUL included.
        max: usize,
    },
    /// `sm_length` is over 254.
    #[error("sm_length {sm_length} is over 254")]
    ShortMessageTooLong {
        /// The declared length.
        sm_length: u8,
    },
    /// Octets after the last field of a command that has no TLVs.
    #[error("{extra} unexpected octets after the last field")]
    TrailingOctets {
        /// How many.
        extra: usize,
    },
    /// The TLV part ends inside a TLV's 4-octet header.
    #[error("the optional part ends inside a TLV header ({remaining} octets left)")]
    TlvHeaderTruncated {
        /// Octets left where a TLV header was expected.
        remaining: usize,
    },
    /// A TLV's length runs past the end of the PDU.
    #[error("TLV 0x{tag:04X} declares {declared} octets but only {available} remain")]
    TlvOverrun {
        /// The TLV's tag.
        tag: u16,
        /// Its declared length.
        declared: u16,
        /// Octets left in the PDU.
        available: usize,
    },
}

impl Malformation {
    /// The status a generic_nack (or error response) should carry for this problem.
    pub fn nack_status(&self) -> CommandStatus {
        match self {
            Malformation::ShortHeader { .. }
            | Malformation::LengthMismatch { .. }
            | Malformation::Truncated { .. }
            | Malformation::TrailingOctets { .. } => CommandStatus::ESME_RINVCMDLEN,
            Malformation::StringTooLong { field, .. } => match *field {
                "system_id" => CommandStatus::ESME_RINVSYSID,
                "password" => CommandStatus::ESME_RINVPASWD,
                "system_type" => CommandStatus::ESME_RINVSYSTYP,
                "service_type" => CommandStatus::ESME_RINVSERTYP,
                "source_addr" => CommandStatus::ESME_RINVSRCADR,
                "destination_addr" => CommandStatus::ESME_RINVDSTADR,
                "schedule_delivery_time" => CommandStatus::ESME_RINVSCHED,
                "validity_period" => CommandStatus::ESME_RINVEXPIRY,
                "message_id" => CommandStatus::ESME_RINVMSGID,
                _ => CommandStatus::ESME_RINVCMDLEN,
            },
            Malformation::ShortMessageTooLong { .. } => CommandStatus::ESME_RINVMSGLEN,
            Malformation::TlvHeaderTruncated { .. } | Malformation::TlvOverrun { .. } => {
                CommandStatus::ESME_RINVOPTPARSTREAM
            }
        }
    }
}

impl DecodeError {
    /// The header's sequence number, when it could be read.
    pub fn sequence(&self) -> Option<u32> {
        match self {
            DecodeError::Malformed { sequence, .. } => *sequence,
            DecodeError::UnknownCommand { sequence, .. } => Some(*sequence),
        }
    }

    /// The header's command id (0 if the frame had none).
    pub fn command_id(&self) -> u32 {
        match self {
            DecodeError::Malformed { command_id, .. }
            | DecodeError::UnknownCommand { command_id, .. } => *command_id,
        }
    }

    /// True when the bad frame claims to be a response (high bit of the command id set). SMPP
    /// answers bad requests with generic_nack; a bad response is usually only logged, since
    /// answering it would start a nack exchange with a peer that expects none.
    pub fn is_response(&self) -> bool {
        self.command_id() & command_id::RESPONSE_BIT != 0
    }

    /// The status to answer with: `ESME_RINVCMDID` for an unknown command, else per problem.
    pub fn nack_status(&self) -> CommandStatus {
        match self {
            DecodeError::Malformed { reason, .. } => reason.nack_status(),
            DecodeError::UnknownCommand { .. } => CommandStatus::ESME_RINVCMDID,
        }
    }

    /// The generic_nack answering the bad frame: its sequence (0 when unknown) and
    /// [`DecodeError::nack_status`]. Whether to send it (e.g. not for a bad response) is the
    /// session's decision.
    pub fn generic_nack(&self) -> Pdu {
        Pdu {
            sequence: self.sequence().unwrap_or(0),
            status: self.nack_status(),
            body: Body::GenericNack,
        }
    }
}

/// Why a PDU value cannot be put on the wire.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    /// A C-octet string holds a NUL, which would cut it short.
    #[error("field `{field}` contains a NUL octet")]
    NulInString {
        /// The field.
        field: &'static str,
    },
    /// A C-octet string is longer than the field allows.
    #[error("field `{field}` has {len} octets; at most {max} are allowed")]
    StringTooLong {
        /// The field.
        field: &'static str,
        /// Its length without NUL.
        len: usize,
        /// The most allowed without NUL.
        max: usize,
    },
    /// `short_message` is over 254 octets (use the `message_payload` TLV instead).
    #[error("short_message has {len} octets; at most 254 are allowed (use message_payload)")]
    ShortMessageTooLong {
        /// Its length.
        len: usize,
    },
    /// A TLV value is over 65535 octets.
    #[error("TLV 0x{tag:04X} has {len} octets; at most 65535 are allowed")]
    TlvTooLong {
        /// The tag.
        tag: u16,
        /// Its length.
        len: usize,
    },
    /// The whole PDU is over 4 GiB.
    #[error("the PDU is longer than command_length can say")]
    PduTooLong,
}

impl Body {
    /// The `command_id` of this body.
    pub fn command_id(&self) -> u32 {
        use command_id as id;
        match self {
            Body::BindTransmitter(_) => id::BIND_TRANSMITTER,
            Body::BindTransmitterResp(_) => id::BIND_TRANSMITTER_RESP,
            Body::BindReceiver(_) => id::BIND_RECEIVER,
            Body::BindReceiverResp(_) => id::BIND_RECEIVER_RESP,
            Body::BindTransceiver(_) => id::BIND_TRANSCEIVER,
            Body::BindTransceiverResp(_) => id::BIND_TRANSCEIVER_RESP,
            Body::Outbind(_) => id::OUTBIND,
            Body::Unbind => id::UNBIND,
            Body::UnbindResp => id::UNBIND_RESP,
            Body::EnquireLink => id::ENQUIRE_LINK,
            Body::EnquireLinkResp => id::ENQUIRE_LINK_RESP,
            Body::GenericNack => id::GENERIC_NACK,
            Body::SubmitSm(_) => id::SUBMIT_SM,
            Body::SubmitSmResp(_) => id::SUBMIT_SM_RESP,
            Body::DeliverSm(_) => id::DELIVER_SM,
            Body::DeliverSmResp(_) => id::DELIVER_SM_RESP,
            Body::DataSm(_) => id::DATA_SM,
            Body::DataSmResp(_) => id::DATA_SM_RESP,
        }
    }

    /// True for responses and generic_nack (command id with the high bit set).
    pub fn is_response(&self) -> bool {
        self.command_id() & command_id::RESPONSE_BIT != 0
    }

    /// The specification's name of the command (`submit_sm_resp`), for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Body::BindTransmitter(_) => "bind_transmitter",
            Body::BindTransmitterResp(_) => "bind_transmitter_resp",
            Body::BindReceiver(_) => "bind_receiver",
            Body::BindReceiverResp(_) => "bind_receiver_resp",
            Body::BindTransceiver(_) => "bind_transceiver",
            Body::BindTransceiverResp(_) => "bind_transceiver_resp",
            Body::Outbind(_) => "outbind",
            Body::Unbind => "unbind",
            Body::UnbindResp => "unbind_resp",
            Body::EnquireLink => "enquire_link",
            Body::EnquireLinkResp => "enquire_link_resp",
            Body::GenericNack => "generic_nack",
            Body::SubmitSm(_) => "submit_sm",
            Body::SubmitSmResp(_) => "submit_sm_resp",
            Body::DeliverSm(_) => "deliver_sm",
            Body::DeliverSmResp(_) => "deliver_sm_resp",
            Body::DataSm(_) => "data_sm",
            Body::DataSmResp(_) => "data_sm_resp",
        }
    }
}

impl Pdu {
    /// A PDU with status `ESME_ROK`.
    pub fn new(sequence: u32, body: Body) -> Pdu {
        Pdu {
            sequence,
            status: CommandStatus::ESME_ROK,
            body,
        }
    }

    /// The `command_id` of this PDU.
    pub fn command_id(&self) -> u32 {
        self.body.command_id()
    }

    /// Appends this PDU, header included, to `out`. On error `out` is left as it was.
    pub fn encode(&self, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.encode_unchecked(out, start);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn encode_unchecked(&self, out: &mut BytesMut, start: usize) -> Result<(), EncodeError> {
        out.put_u32(0); // command_length, patched below
        out.put_u32(self.command_id());
        out.put_u32(self.status.0);
        out.put_u32(self.sequence);
        let failed = !self.status.is_ok();
        match &self.body {
            Body::BindTransmitter(bind)
            | Body::BindReceiver(bind)
            | Body::BindTransceiver(bind) => {
                put_c_str(out, "system_id", &bind.system_id, max::SYSTEM_ID)?;
                put_c_str(out, "password", &bind.password, max::PASSWORD)?;
                put_c_str(out, "system_type", &bind.system_type, max::SYSTEM_TYPE)?;
                out.put_u8(bind.interface_version);
                out.put_u8(bind.addr_ton);
                out.put_u8(bind.addr_npi);
                put_c_str(
                    out,
                    "address_range",
                    &bind.address_range,
                    max::ADDRESS_RANGE,
                )?;
            }
            Body::BindTransmitterResp(resp)
            | Body::BindReceiverResp(resp)
            | Body::BindTransceiverResp(resp) => {
                // A failed response with nothing to say is sent without a body, as peers do.
                if !(failed && resp.system_id.is_empty() && resp.tlvs.is_empty()) {
                    put_c_str(out, "system_id", &resp.system_id, max::SYSTEM_ID)?;
                    put_tlvs(out, &resp.tlvs)?;
                }
            }
            Body::Outbind(outbind) => {
                put_c_str(out, "system_id", &outbind.system_id, max::SYSTEM_ID)?;
                put_c_str(out, "password", &outbind.password, max::PASSWORD)?;
            }
            Body::Unbind
            | Body::UnbindResp
            | Body::EnquireLink
            | Body::EnquireLinkResp
            | Body::GenericNack => {}
            Body::SubmitSm(sm) | Body::DeliverSm(sm) => put_short_message(out, sm)?,
            Body::SubmitSmResp(resp) | Body::DeliverSmResp(resp) | Body::DataSmResp(resp) => {
                if !(failed && resp.message_id.is_empty() && resp.tlvs.is_empty()) {
                    put_c_str(out, "message_id", &resp.message_id, max::MESSAGE_ID)?;
                    put_tlvs(out, &resp.tlvs)?;
                }
            }
            Body::DataSm(data) => {
                put_c_str(out, "service_type", &data.service_type, max::SERVICE_TYPE)?;
                out.put_u8(data.source_addr_ton);
                out.put_u8(data.source_addr_npi);
                put_c_str(out, "source_addr", &data.source_addr, max::DATA_SM_ADDR)?;
                out.put_u8(data.dest_addr_ton);
                out.put_u8(data.dest_addr_npi);
                put_c_str(
                    out,
                    "destination_addr",
                    &data.destination_addr,
                    max::DATA_SM_ADDR,
                )?;
                out.put_u8(data.esm_class);
                out.put_u8(data.registered_delivery);
                out.put_u8(data.data_coding);
                put_tlvs(out, &data.tlvs)?;
            }
        }
        let length = u32::try_from(out.len() - start).map_err(|_| EncodeError::PduTooLong)?;
        out[start..start + 4].copy_from_slice(&length.to_be_bytes());
        Ok(())
    }

    /// The PDU as a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut out = BytesMut::new();
        self.encode(&mut out)?;
        Ok(out.freeze())
    }

    /// Decodes exactly one PDU: `frame` must hold the header and the whole body, no more.
    pub fn decode(frame: &[u8]) -> Result<Pdu, DecodeError> {
        let word = |at: usize| -> Option<u32> {
            let octets = frame.get(at..at + 4)?;
            Some(u32::from_be_bytes([
                octets[0], octets[1], octets[2], octets[3],
            ]))
        };
        let (Some(command_length), Some(command_id), Some(status), Some(sequence)) =
            (word(0), word(4), word(8), word(12))
        else {
            return Err(DecodeError::Malformed {
                sequence: None,
                command_id: word(4).unwrap_or(0),
                reason: Malformation::ShortHeader { len: frame.len() },
            });
        };
        let malformed = |reason| DecodeError::Malformed {
            sequence: Some(sequence),
            command_id,
            reason,
        };
        if usize::try_from(command_length).ok() != Some(frame.len()) {
            return Err(malformed(Malformation::LengthMismatch {
                declared: command_length,
                actual: frame.len(),
            }));
        }
        let status = CommandStatus(status);
        let mut body = Reader {
            rest: &frame[HEADER_LEN..],
        };
        let decoded = decode_body(command_id, &mut body).map_err(malformed)?;
        match decoded {
            Some(body) => Ok(Pdu {
                sequence,
                status,
                body,
            }),
            None => Err(DecodeError::UnknownCommand {
                sequence,
                command_id,
            }),
        }
    }
}

/// Whether `value` fits a C-octet string field of `max_with_nul` octets.
fn check_c_str(
    field: &'static str,
    value: &COctetString,
    max_with_nul: usize,
) -> Result<(), EncodeError> {
    let octets = value.as_bytes();
    if octets.contains(&0) {
        return Err(EncodeError::NulInString { field });
    }
    if octets.len() >= max_with_nul {
        return Err(EncodeError::StringTooLong {
            field,
            len: octets.len(),
            max: max_with_nul - 1,
        });
    }
    Ok(())
}

fn put_c_str(
    out: &mut BytesMut,
    field: &'static str,
    value: &COctetString,
    max_with_nul: usize,
) -> Result<(), EncodeError> {
    check_c_str(field, value, max_with_nul)?;
    out.put_slice(value.as_bytes());
    out.put_u8(0);
    Ok(())
}

/// The `short_message` length octet, if the message fits.
fn short_message_length(sm: &ShortMessage) -> Result<u8, EncodeError> {
    u8::try_from(sm.short_message.len())
        .ok()
        .filter(|&len| usize::from(len) <= MAX_SHORT_MESSAGE)
        .ok_or(EncodeError::ShortMessageTooLong {
            len: sm.short_message.len(),
        })
}

impl ShortMessage {
    /// The error encoding this message in a submit_sm or deliver_sm would give, found without
    /// building the PDU (the ESME checks every part before sending the first).
    pub fn check_encodable(&self) -> Result<(), EncodeError> {
        check_c_str("service_type", &self.service_type, max::SERVICE_TYPE)?;
        check_c_str("source_addr", &self.source_addr, max::SM_ADDR)?;
        check_c_str("destination_addr", &self.destination_addr, max::SM_ADDR)?;
        check_c_str(
            "schedule_delivery_time",
            &self.schedule_delivery_time,
            max::TIME,
        )?;
        check_c_str("validity_period", &self.validity_period, max::TIME)?;
        short_message_length(self)?;
        if let Some(tlv) = self
            .tlvs
            .iter()
            .find(|t| t.value.len() > usize::from(u16::MAX))
        {
            return Err(EncodeError::TlvTooLong {
                tag: tlv.tag,
                len: tlv.value.len(),
            });
        }
        Ok(())
    }
}

fn put_tlvs(out: &mut BytesMut, tlvs: &[Tlv]) -> Result<(), EncodeError> {
    for tlv in tlvs {
        let len = u16::try_from(tlv.value.len()).map_err(|_| EncodeError::TlvTooLong {
            tag: tlv.tag,
            len: tlv.value.len(),
        })?;
        out.put_u16(tlv.tag);
        out.put_u16(len);
        out.put_slice(&tlv.value);
    }
    Ok(())
}

fn put_short_message(out: &mut BytesMut, sm: &ShortMessage) -> Result<(), EncodeError> {
    put_c_str(out, "service_type", &sm.service_type, max::SERVICE_TYPE)?;
    out.put_u8(sm.source_addr_ton);
    out.put_u8(sm.source_addr_npi);
    put_c_str(out, "source_addr", &sm.source_addr, max::SM_ADDR)?;
    out.put_u8(sm.dest_addr_ton);
    out.put_u8(sm.dest_addr_npi);
    put_c_str(out, "destination_addr", &sm.destination_addr, max::SM_ADDR)?;
    out.put_u8(sm.esm_class);
    out.put_u8(sm.protocol_id);
    out.put_u8(sm.priority_flag);
    put_c_str(
        out,
        "schedule_delivery_time",
        &sm.schedule_delivery_time,
        max::TIME,
    )?;
    put_c_str(out, "validity_period", &sm.validity_period, max::TIME)?;
    out.put_u8(sm.registered_delivery);
    out.put_u8(sm.replace_if_present_flag);
    out.put_u8(sm.data_coding);
    out.put_u8(sm.sm_default_msg_id);
    out.put_u8(short_message_length(sm)?);
    out.put_slice(&sm.short_message);
    put_tlvs(out, &sm.tlvs)
}

/// Reads fields off the body; every read checks the remaining length first.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], Malformation> {
        if self.rest.len() < n {
            return Err(Malformation::Truncated { field });
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, Malformation> {
        let (&first, rest) = self
            .rest
            .split_first()
            .ok_or(Malformation::Truncated { field })?;
        self.rest = rest;
        Ok(first)
    }

    fn c_str(
        &mut self,
        field: &'static str,
        max_with_nul: usize,
    ) -> Result<COctetString, Malformation> {
        let window = &self.rest[..self.rest.len().min(max_with_nul)];
        match window.iter().position(|&b| b == 0) {
            Some(nul) => {
                let value = COctetString(window[..nul].to_vec());
                self.rest = &self.rest[nul + 1..];
                Ok(value)
            }
            None if self.rest.len() >= max_with_nul => Err(Malformation::StringTooLong {
                field,
                max: max_with_nul,
            }),
            None => Err(Malformation::Truncated { field }),
        }
    }

    fn tlvs(&mut self) -> Result<Vec<Tlv>, Malformation> {
        let mut tlvs = Vec::new();
        while !self.rest.is_empty() {
            let [t0, t1, l0, l1, ..] = *self.rest else {
                return Err(Malformation::TlvHeaderTruncated {
                    remaining: self.rest.len(),
                });
            };
            let tag = u16::from_be_bytes([t0, t1]);
            let declared = u16::from_be_bytes([l0, l1]);
            let after_header = &self.rest[4..];
            let Some(value) = after_header.get(..usize::from(declared)) else {
                return Err(Malformation::TlvOverrun {
                    tag,
                    declared,
                    available: after_header.len(),
                });
            };
            tlvs.push(Tlv {
                tag,
                value: Bytes::copy_from_slice(value),
            });
            self.rest = &after_header[usize::from(declared)..];
        }
        Ok(tlvs)
    }

    fn end(&self) -> Result<(), Malformation> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Malformation::TrailingOctets {
                extra: self.rest.len(),
            })
        }
    }
}

/// The body for a known command id, `None` for an unknown one.
fn decode_body(command: u32, r: &mut Reader<'_>) -> Result<Option<Body>, Malformation> {
    use command_id as id;
    let body = match command {
        id::BIND_TRANSMITTER => Body::BindTransmitter(read_bind(r)?),
        id::BIND_RECEIVER => Body::BindReceiver(read_bind(r)?),
        id::BIND_TRANSCEIVER => Body::BindTransceiver(read_bind(r)?),
        id::BIND_TRANSMITTER_RESP => Body::BindTransmitterResp(read_bind_resp(r)?),
        id::BIND_RECEIVER_RESP => Body::BindReceiverResp(read_bind_resp(r)?),
        id::BIND_TRANSCEIVER_RESP => Body::BindTransceiverResp(read_bind_resp(r)?),
        id::OUTBIND => {
            let outbind = Outbind {
                system_id: r.c_str("system_id", max::SYSTEM_ID)?,
                password: r.c_str("password", max::PASSWORD)?,
            };
            r.end()?;
            Body::Outbind(outbind)
        }
        id::UNBIND => empty(r, Body::Unbind)?,
        id::UNBIND_RESP => empty(r, Body::UnbindResp)?,
        id::ENQUIRE_LINK => empty(r, Body::EnquireLink)?,
        id::ENQUIRE_LINK_RESP => empty(r, Body::EnquireLinkResp)?,
        id::GENERIC_NACK => empty(r, Body::GenericNack)?,
        id::SUBMIT_SM => Body::SubmitSm(read_short_message(r)?),
        id::DELIVER_SM => Body::DeliverSm(read_short_message(r)?),
        id::SUBMIT_SM_RESP => Body::SubmitSmResp(read_message_id_resp(r)?),
        id::DELIVER_SM_RESP => Body::DeliverSmResp(read_message_id_resp(r)?),
        id::DATA_SM_RESP => Body::DataSmResp(read_message_id_resp(r)?),
        id::DATA_SM => Body::DataSm(DataSm {
            service_type: r.c_str("service_type", max::SERVICE_TYPE)?,
            source_addr_ton: r.u8("source_addr_ton")?,
            source_addr_npi: r.u8("source_addr_npi")?,
            source_addr: r.c_str("source_addr", max::DATA_SM_ADDR)?,
            dest_addr_ton: r.u8("dest_addr_ton")?,
            dest_addr_npi: r.u8("dest_addr_npi")?,
            destination_addr: r.c_str("destination_addr", max::DATA_SM_ADDR)?,
            esm_class: r.u8("esm_class")?,
            registered_delivery: r.u8("registered_delivery")?,
            data_coding: r.u8("data_coding")?,
            tlvs: r.tlvs()?,
        }),
        _ => return Ok(None),
    };
    Ok(Some(body))
}

fn empty(r: &Reader<'_>, body: Body) -> Result<Body, Malformation> {
    r.end()?;
    Ok(body)
}

fn read_bind(r: &mut Reader<'_>) -> Result<Bind, Malformation> {
    let bind = Bind {
        system_id: r.c_str("system_id", max::SYSTEM_ID)?,
        password: r.c_str("password", max::PASSWORD)?,
        system_type: r.c_str("system_type", max::SYSTEM_TYPE)?,
        interface_version: r.u8("interface_version")?,
        addr_ton: r.u8("addr_ton")?,
        addr_npi: r.u8("addr_npi")?,
        address_range: r.c_str("address_range", max::ADDRESS_RANGE)?,
    };
    r.end()?;
    Ok(bind)
}

/// An empty body is accepted (failed responses are often sent without one).
fn read_bind_resp(r: &mut Reader<'_>) -> Result<BindResp, Malformation> {
    if r.rest.is_empty() {
        return Ok(BindResp::default());
    }
    Ok(BindResp {
        system_id: r.c_str("system_id", max::SYSTEM_ID)?,
        tlvs: r.tlvs()?,
    })
}

/// An empty body is accepted (failed responses are often sent without one).
fn read_message_id_resp(r: &mut Reader<'_>) -> Result<MessageIdResp, Malformation> {
    if r.rest.is_empty() {
        return Ok(MessageIdResp::default());
    }
    Ok(MessageIdResp {
        message_id: r.c_str("message_id", max::MESSAGE_ID)?,
        tlvs: r.tlvs()?,
    })
}

fn read_short_message(r: &mut Reader<'_>) -> Result<ShortMessage, Malformation> {
    let mut sm = ShortMessage {
        service_type: r.c_str("service_type", max::SERVICE_TYPE)?,
        source_addr_ton: r.u8("source_addr_ton")?,
        source_addr_npi: r.u8("source_addr_npi")?,
        source_addr: r.c_str("source_addr", max::SM_ADDR)?,
        dest_addr_ton: r.u8("dest_addr_ton")?,
        dest_addr_npi: r.u8("dest_addr_npi")?,
        destination_addr: r.c_str("destination_addr", max::SM_ADDR)?,
        esm_class: r.u8("esm_class")?,
        protocol_id: r.u8("protocol_id")?,
        priority_flag: r.u8("priority_flag")?,
        schedule_delivery_time: r.c_str("schedule_delivery_time", max::TIME)?,
        validity_period: r.c_str("validity_period", max::TIME)?,
        registered_delivery: r.u8("registered_delivery")?,
        replace_if_present_flag: r.u8("replace_if_present_flag")?,
        data_coding: r.u8("data_coding")?,
        sm_default_msg_id: r.u8("sm_default_msg_id")?,
        short_message: Bytes::new(),
        tlvs: Vec::new(),
    };
    let sm_length = r.u8("sm_length")?;
    if usize::from(sm_length) > MAX_SHORT_MESSAGE {
        return Err(Malformation::ShortMessageTooLong { sm_length });
    }
    sm.short_message = Bytes::copy_from_slice(r.take(usize::from(sm_length), "short_message")?);
    sm.tlvs = r.tlvs()?;
    Ok(sm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(command_id: u32, sequence: u32, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&((HEADER_LEN + body.len()) as u32).to_be_bytes());
        out.extend_from_slice(&command_id.to_be_bytes());
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&sequence.to_be_bytes());
        out.extend_from_slice(body);
        out
    }

    #[test]
    fn short_header_has_no_sequence() {
        let err = Pdu::decode(&[0, 0, 0, 16, 0, 0, 0, 0x15, 0]).unwrap_err();
        assert_eq!(
            err,
            DecodeError::Malformed {
                sequence: None,
                command_id: 0x15,
                reason: Malformation::ShortHeader { len: 9 }
            }
        );
        assert_eq!(err.nack_status(), CommandStatus::ESME_RINVCMDLEN);
        assert_eq!(Pdu::decode(&[]).unwrap_err().command_id(), 0);
    }

    #[test]
    fn length_mismatch_keeps_sequence() {
        let mut bytes = frame(command_id::ENQUIRE_LINK, 77, &[]);
        bytes[3] = 17;
        let err = Pdu::decode(&bytes).unwrap_err();
        assert_eq!(err.sequence(), Some(77));
        assert_eq!(err.generic_nack().status, CommandStatus::ESME_RINVCMDLEN);
    }

    #[test]
    fn unknown_command_is_its_own_error() {
        let err = Pdu::decode(&frame(command_id::QUERY_SM, 5, b"1\0\0\0\0")).unwrap_err();
        assert_eq!(
            err,
            DecodeError::UnknownCommand {
                sequence: 5,
                command_id: 3
            }
        );
        assert!(!err.is_response());
        let nack = err.generic_nack();
        assert_eq!(
            nack,
            Pdu {
                sequence: 5,
                status: CommandStatus::ESME_RINVCMDID,
                body: Body::GenericNack
            }
        );
    }

    #[test]
    fn too_long_system_id_maps_to_rinvsysid() {
        let mut body = vec![b'a'; 20];
        body.push(0);
        let err = Pdu::decode(&frame(command_id::BIND_TRANSCEIVER, 1, &body)).unwrap_err();
        assert_eq!(err.nack_status(), CommandStatus::ESME_RINVSYSID);
    }

    #[test]
    fn trailing_octets_on_enquire_link() {
        let err = Pdu::decode(&frame(command_id::ENQUIRE_LINK, 1, &[0])).unwrap_err();
        assert_eq!(err.sequence(), Some(1));
        assert!(matches!(
            err,
            DecodeError::Malformed {
                reason: Malformation::TrailingOctets { extra: 1 },
                ..
            }
        ));
    }

    #[test]
    fn encode_rejects_bad_values_and_leaves_buffer() {
        let mut out = BytesMut::from(&b"keep"[..]);
        let pdu = Pdu::new(
            1,
            Body::BindTransmitter(Bind {
                system_id: "a\0b".into(),
                ..Bind::default()
            }),
        );
        assert_eq!(
            pdu.encode(&mut out),
            Err(EncodeError::NulInString { field: "system_id" })
        );
        assert_eq!(&out[..], b"keep");
        let pdu = Pdu::new(
            1,
            Body::SubmitSm(ShortMessage {
                short_message: Bytes::from(vec![0u8; 255]),
                ..ShortMessage::default()
            }),
        );
        assert_eq!(
            pdu.encode(&mut out),
            Err(EncodeError::ShortMessageTooLong { len: 255 })
        );
        let pdu = Pdu::new(
            1,
            Body::BindTransmitter(Bind {
                password: "123456789".into(),
                ..Bind::default()
            }),
        );
        assert_eq!(
            pdu.encode(&mut out),
            Err(EncodeError::StringTooLong {
                field: "password",
                len: 9,
                max: 8
            })
        );
        assert_eq!(&out[..], b"keep");
    }

    #[test]
    fn failed_response_without_body() {
        let pdu = Pdu {
            sequence: 9,
            status: CommandStatus::ESME_RTHROTTLED,
            body: Body::SubmitSmResp(MessageIdResp::default()),
        };
        let bytes = pdu.to_bytes().unwrap();
        assert_eq!(bytes.len(), HEADER_LEN);
        assert_eq!(Pdu::decode(&bytes), Ok(pdu));
    }
}
