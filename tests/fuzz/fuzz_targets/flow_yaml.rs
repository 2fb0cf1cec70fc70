//! Any bytes as a flow file: loading and checking never panic; a flow that loads and compiles
//! can be run with any answers without panicking.
#![no_main]

use baraza::engine::{self, Channel, CompiledFlow, Input, Start};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(loaded) = baraza::flow::load_str("fuzz.yaml", source) else {
        return;
    };
    let _ = baraza::flow::check(&loaded);
    let Ok(flow) = CompiledFlow::compile(loaded.flow) else {
        return;
    };
    let start = Start {
        session_id: "fuzz".into(),
        channel: Channel::Ussd,
        contact: Default::default(),
        language: None,
    };
    let mut step = engine::advance(&flow, None, Input::Start(start), 0);
    for (i, answer) in ["1", "2", "98", "0", "00", "x", ""].iter().enumerate() {
        step = engine::advance(&flow, Some(step.state), Input::Answer(answer.to_string()), i as i64);
    }
});
