//! Any bytes as a Hubtel callback: a request or a clear error, never a panic.
#![no_main]

use baraza::channels::ussd::hubtel;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = hubtel::parse(data) {
        let _ = request.resolve(None);
        let _ = request.resolve(Some("3"));
    }
});
