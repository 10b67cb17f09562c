//! Any text as input to khard's wildcard parser: it returns, without panicking or hanging.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        khard::fuzz::wildcard(text);
    }
});
