//! Any bytes as an inbound SMS part: the UDH parser, the GSM-7 and UCS-2 decoders and the
//! septet unpacker never panic.
#![no_main]

use baraza::encoding::{gsm7, reassembly};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = reassembly::parse_udh(data);
    let _ = gsm7::decode_unpacked(data);
    let _ = gsm7::decode_ucs2(data);
    if let Some((&fill, rest)) = data.split_first() {
        let _ = gsm7::unpack_septets(rest, fill % 7, rest.len() * 8 / 7);
    }
});
