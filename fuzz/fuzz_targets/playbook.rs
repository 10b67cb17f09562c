//! Any text given as a playbook loads or fails cleanly (roles resolve to the built-in ones).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let file = khard::source::Dir::Disk("/nonexistent/fuzz.yaml".into());
        let _ = khard::playbook::Playbook::from_text(&file, text);
        let _ = khard::expr::Expr::parse(text);
    }
});
