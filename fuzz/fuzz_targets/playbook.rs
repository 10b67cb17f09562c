//! Any text given as a playbook loads or fails cleanly (roles resolve to the built-in ones).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let file = khard::input::source::Dir::Disk("/nonexistent/fuzz.yaml".into());
        let _ = khard::input::playbook::Playbook::from_text(&file, text);
        let _ = khard::lang::expr::Expr::parse(text);
    }
});
