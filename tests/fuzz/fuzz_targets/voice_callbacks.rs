//! Any bytes as a voice provider callback (body and query): a request or a clear error, never
//! a panic.
#![no_main]

use baraza::channels::voice::{africastalking, twiml};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (body, query) = data.split_at(split);
    let query = String::from_utf8_lossy(query);
    let _ = africastalking::parse(body);
    let _ = africastalking::parse_with_query(body, &query);
    let _ = twiml::parse(body, &query);
});
