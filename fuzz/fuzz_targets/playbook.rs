//! Any text given as a playbook loads or fails cleanly (roles resolve to the built-in ones).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        khard::fuzz::playbook(text);
        khard::fuzz::when(text);
    }
});
