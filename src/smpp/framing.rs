//! Cutting a TCP byte stream into SMPP PDUs: a `tokio_util` codec.
//!
//! The decoder waits until `command_length` octets are buffered, then hands exactly that frame
//! to [`Pdu::decode`]; split and coalesced reads are both fine. A length below the header size
//! or above the configured maximum means the stream is out of step: that is a
//! [`FramingError::Garbage`] and the caller must drop the connection. A well-framed PDU whose
//! body is bad is yielded as [`Frame::Invalid`] so the session can answer generic_nack and keep
//! the connection. This module never reads sockets itself and keeps no session state.

use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use super::pdu::{DecodeError, EncodeError, HEADER_LEN, Pdu};

/// The default largest PDU accepted: 64 KiB (a full `message_payload` plus headroom).
pub const DEFAULT_MAX_PDU: u32 = 64 * 1024;

/// One item from the decoder: a PDU, or a frame that was cut cleanly but could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A decoded PDU.
    Pdu(Pdu),
    /// A frame with a bad body or unknown command; answer with `error.generic_nack()`.
    Invalid(DecodeError),
}

/// Errors that end the connection.
#[derive(Debug, thiserror::Error)]
pub enum FramingError {
    /// `command_length` is impossible: the stream is not SMPP or lost its framing.
    #[error(
        "command_length {command_length} is outside 16..={max_pdu}: the stream is not framed SMPP"
    )]
    Garbage {
        /// The length read.
        command_length: u32,
        /// The configured maximum.
        max_pdu: u32,
    },
    /// A PDU to send cannot be encoded (a caller bug; nothing was written).
    #[error("cannot encode PDU: {0}")]
    Encode(#[from] EncodeError),
    /// The underlying transport failed.
    #[error("SMPP transport: {0}")]
    Io(#[from] std::io::Error),
}

/// The SMPP codec for `tokio_util::codec::Framed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmppCodec {
    /// Largest `command_length` accepted; bigger means garbage. Bounds the memory one peer can
    /// make us buffer.
    pub max_pdu: u32,
}

impl Default for SmppCodec {
    fn default() -> Self {
        SmppCodec {
            max_pdu: DEFAULT_MAX_PDU,
        }
    }
}

impl SmppCodec {
    /// A codec accepting PDUs up to `max_pdu` octets.
    pub fn new(max_pdu: u32) -> SmppCodec {
        SmppCodec { max_pdu }
    }
}

impl Decoder for SmppCodec {
    type Item = Frame;
    type Error = FramingError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        let Some(&[a, b, c, d]) = src.get(..4) else {
            return Ok(None);
        };
        let command_length = u32::from_be_bytes([a, b, c, d]);
        let frame_len = usize::try_from(command_length).unwrap_or(usize::MAX);
        if frame_len < HEADER_LEN || command_length > self.max_pdu {
            return Err(FramingError::Garbage {
                command_length,
                max_pdu: self.max_pdu,
            });
        }
        if src.len() < frame_len {
            src.reserve(frame_len - src.len());
            return Ok(None);
        }
        let frame = src.split_to(frame_len);
        Ok(Some(match Pdu::decode(&frame) {
            Ok(pdu) => Frame::Pdu(pdu),
            Err(error) => Frame::Invalid(error),
        }))
    }

    fn decode_eof(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, FramingError> {
        match self.decode(src)? {
            Some(frame) => Ok(Some(frame)),
            None if src.is_empty() => Ok(None),
            None => {
                let left = src.len();
                src.advance(left);
                Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("connection closed inside a PDU ({left} octets buffered)"),
                )
                .into())
            }
        }
    }
}

impl Encoder<Pdu> for SmppCodec {
    type Error = FramingError;

    fn encode(&mut self, pdu: Pdu, dst: &mut BytesMut) -> Result<(), FramingError> {
        self.encode(&pdu, dst)
    }
}

impl Encoder<&Pdu> for SmppCodec {
    type Error = FramingError;

    fn encode(&mut self, pdu: &Pdu, dst: &mut BytesMut) -> Result<(), FramingError> {
        Ok(pdu.encode(dst)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::smpp::pdu::Body;

    #[test]
    fn waits_for_whole_frame_then_consumes_exactly_it() {
        let mut codec = SmppCodec::default();
        let mut wire = BytesMut::new();
        Pdu::new(3, Body::EnquireLink).encode(&mut wire).unwrap();
        wire.extend_from_slice(&[0, 0]); // start of the next PDU
        let mut partial = BytesMut::from(&wire[..10]);
        assert!(codec.decode(&mut partial).unwrap().is_none());
        assert_eq!(
            partial.len(),
            10,
            "nothing consumed before the frame is complete"
        );
        let frame = codec.decode(&mut wire).unwrap();
        assert_eq!(frame, Some(Frame::Pdu(Pdu::new(3, Body::EnquireLink))));
        assert_eq!(&wire[..], &[0, 0]);
    }

    #[test]
    fn eof_inside_a_pdu_is_an_error() {
        let mut codec = SmppCodec::default();
        let mut buf = BytesMut::from(&[0u8, 0, 0, 16, 0][..]);
        assert!(matches!(
            codec.decode_eof(&mut buf),
            Err(FramingError::Io(_))
        ));
        assert!(codec.decode_eof(&mut BytesMut::new()).unwrap().is_none());
    }

    #[test]
    fn length_bounds() {
        let mut codec = SmppCodec::new(100);
        let mut over = BytesMut::from(&101u32.to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut over),
            Err(FramingError::Garbage {
                command_length: 101,
                max_pdu: 100
            })
        ));
        let mut at_max = BytesMut::from(&100u32.to_be_bytes()[..]);
        assert!(codec.decode(&mut at_max).unwrap().is_none());
        let mut under = BytesMut::from(&15u32.to_be_bytes()[..]);
        assert!(matches!(
            codec.decode(&mut under),
            Err(FramingError::Garbage { .. })
        ));
    }
}
