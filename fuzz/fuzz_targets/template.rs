//! Any template compiles and renders, or fails cleanly, with strict variables.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut t = khard::lang::template::Templates::default();
        if t.add_file("fuzz.hbs", text).is_ok() {
            let vars = serde_json::json!({"k3s_role": "server", "k3s_minor": 30, "list": ["a", "b"], "m": {"k": "v"}});
            let _ = t.render_file("fuzz.hbs", vars.as_object().unwrap());
        }
    }
});
