//! Any text given as an inventory (YAML or INI) loads or fails cleanly: no panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = khard::input::inventory::Inventory::from_text(std::path::Path::new("/nonexistent/fuzz.yaml"), text);
    }
});
