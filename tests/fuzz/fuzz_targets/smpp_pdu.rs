//! Any bytes as one SMPP PDU frame: a PDU or a decode error, never a panic; and whatever decodes
//! re-encodes and decodes to the same value.
#![no_main]

use baraza::smpp::Pdu;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(pdu) = Pdu::decode(data) {
        let bytes = pdu.to_bytes().expect("a decoded PDU always re-encodes");
        let again = Pdu::decode(&bytes).expect("a re-encoded PDU always decodes");
        assert_eq!(again, pdu, "re-encoding changed the PDU");
    }
});
