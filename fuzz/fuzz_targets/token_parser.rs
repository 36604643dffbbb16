//! The token parser and claim checks never panic, whatever the input.
#![no_main]

use keyward_domain::verify::parse;
use keyward_domain::Timestamp;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(token) = parse(text) {
        let _ = token.check_claims("eval", Timestamp::from_millis(1_768_213_800_000), 300);
    }
});
