//! Any text as a node's k3s config or drop-in: bounded, merged and masked
//! without panicking, hanging or growing without bound.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        khard::fuzz::k3s_config(text);
    }
});
