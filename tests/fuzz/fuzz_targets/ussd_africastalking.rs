//! Any bytes as an Africa's Talking callback or end-of-session notification: a request or a
//! clear error, never a panic; resolving the newest input never panics either.
#![no_main]

use baraza::channels::ussd::africastalking;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = africastalking::parse_event(data);
    if let Ok(request) = africastalking::parse(data) {
        let split = data.len() / 2;
        let consumed = String::from_utf8_lossy(&data[..split]).into_owned();
        let _ = request.resolve(None);
        let _ = request.resolve(Some(&consumed));
    }
});
