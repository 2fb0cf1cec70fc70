//! Any bytes as what Africa's Talking sends for SMS: an incoming-message or delivery-report
//! callback (form bodies) and the messaging API's reply (any status, any body). A message, a
//! report, an outcome or a clear error; never a panic.
#![no_main]

use baraza::sms::africastalking::{parse_delivery, parse_incoming, read_answer, report_error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_incoming(data);
    if let Ok(report) = parse_delivery(data) {
        let _ = report_error(&report);
    }
    let (status, rest) = match data {
        [high, low, rest @ ..] => (u16::from_be_bytes([*high, *low]), rest),
        _ => (200, data),
    };
    let split = rest.iter().position(|b| *b == b'\n').unwrap_or(0);
    let retry_after = std::str::from_utf8(&rest[..split]).ok();
    let _ = read_answer(status, retry_after, &rest[split..]);
});
