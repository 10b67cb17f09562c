//! Entry points for fuzzing: each parser of user input that is private to
//! the crate, behind a function that takes text and must never panic,
//! hang or grow without bound. The fuzz targets in `fuzz/` call these, and
//! the tests below run a short deterministic property test of each one as
//! part of `cargo test`.

use std::path::Path;

/// An ssh_config file (`Include` resolves against a folder that does not exist).
pub fn ssh_config(text: &str) {
    if let Ok(cfg) = crate::transport::ssh::config::SshConfig::from_text(
        Path::new("/nonexistent/fuzz/config"),
        text,
    ) {
        let _ = cfg.host("web-1");
    }
    let _ = crate::transport::ssh::config::proxy_command_from_ssh_args(text);
    let _ = crate::transport::ssh::config::jump_from_ssh_args(text);
    let _ = crate::transport::ssh::config::parse_jumps(text);
}

/// A known_hosts file, asked about one host.
pub fn known_hosts(text: &str) {
    use crate::transport::ssh::known_hosts::KnownHosts;
    let kh = KnownHosts::from_text(Path::new("/nonexistent/fuzz/known_hosts"), text);
    let key = russh::keys::parse_public_key_base64(
        "AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl",
    )
    .expect("a valid key");
    let _ = kh.check("web-1", &key);
    let _ = kh.check("[web-1]:2222", &key);
}

/// A `when:` expression, parsed and evaluated against a few variables.
pub fn when(text: &str) {
    if let Ok(e) = crate::lang::expr::Expr::parse(text) {
        let vars = serde_json::json!({"k3s_role": "server", "k3s_minor": 30, "groups": ["a"]});
        let _ = e.eval(vars.as_object().expect("an object"));
    }
}

/// A wildcard pattern against the text itself and a fixed name, in every flavour.
pub fn wildcard(text: &str) {
    use crate::lang::glob::Glob;
    let (pattern, subject) = text.split_once('\n').unwrap_or((text, "node-1.example"));
    for g in [Glob::HOSTS, Glob::PATHS, Glob::NAMES] {
        let _ = g.matches(pattern, subject);
    }
}

/// A `--limit` pattern against a small inventory.
pub fn limit(text: &str) {
    let inv = crate::input::inventory::Inventory::from_text(
        Path::new("/nonexistent/fuzz/inventory.yaml"),
        "k3s_cluster:\n  children:\n    server:\n      hosts: {s1: , s2: }\n    agent:\n      hosts:\n        a[1:3]:\n\n",
    )
    .expect("the fixed inventory loads");
    let _ = crate::input::inventory::pattern::select_with(&inv, text, true);
    let _ = crate::input::inventory::pattern::select_with(&inv, text, false);
}

/// An inventory, YAML or INI (whichever the text looks like).
pub fn inventory(text: &str) {
    let _ = crate::input::inventory::Inventory::from_text(
        Path::new("/nonexistent/fuzz/inventory"),
        text,
    );
    let _ = crate::input::inventory::ini::parse("fuzz.ini", text);
}

/// A playbook (roles resolve to the built-in ones).
pub fn playbook(text: &str) {
    let file = crate::input::source::Dir::Disk("/nonexistent/fuzz/playbook.yaml".into());
    let _ = crate::input::playbook::Playbook::from_text(&file, text);
}

/// A k3s config file or drop-in as a node holds it (bounded before parsing:
/// lang::yaml_bounds), merged as k3s merges it, and masked as a diff shows it.
pub fn k3s_config(text: &str) {
    let _ = crate::k3s::config::from_file(text);
    let _ = crate::k3s::validate::mask_k3s_secrets(text);
}

#[cfg(test)]
mod tests {

    /// Pieces of each input language, glued at random: likelier to reach
    /// deep paths than random bytes.
    const PIECES: &[&str] = &[
        "\n",
        " ",
        "  ",
        "\t",
        ":",
        "=",
        ",",
        "!",
        "&",
        "*",
        "?",
        "[",
        "]",
        "[1:3]",
        "{",
        "}",
        "'",
        "\"",
        "\\",
        "-",
        "- ",
        "#",
        "|",
        ">-",
        "Host ",
        "Match ",
        "all",
        "server",
        "s1",
        "a*",
        "Include ",
        "ProxyJump ",
        "ProxyCommand ",
        "-o ",
        "-J ",
        "@revoked ",
        "web-1",
        "[web-1]:2222 ",
        "ssh-ed25519 ",
        "AAAA",
        "k3s_role",
        " == ",
        " and ",
        " or ",
        "not ",
        " in ",
        "(",
        ")",
        "is defined",
        "hosts:",
        "children:",
        "vars:",
        "tasks:",
        "name: x",
        "file:",
        "dest: /x",
        "content: y",
        "roles:",
        "[server]",
        "[all:vars]",
        "ansible_host=",
        "x=1",
        "%h",
        "~",
        "é",
        "\u{0}",
        "$(",
        "`",
        ";",
    ];

    /// A deterministic pseudo-random generator (xorshift64*).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        fn text(&mut self) -> String {
            let n = self.next() % 24;
            (0..n)
                .map(|_| PIECES[(self.next() % PIECES.len() as u64) as usize])
                .collect()
        }
    }

    /// No input panics. How long a parser may take is checked where it can
    /// be stated as a ratio of sizes (the linear-time tests of the
    /// matcher and the inventory), not here against a wall clock.
    fn property(name: &str, parser: fn(&str)) {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
        for _ in 0..1500 {
            let input = rng.text();
            let ran = std::panic::catch_unwind(|| parser(&input));
            assert!(ran.is_ok(), "{name} panicked on {input:?}");
        }
    }

    #[test]
    fn parsers_of_user_input_never_panic_or_hang() {
        property("ssh_config", super::ssh_config);
        property("known_hosts", super::known_hosts);
        property("when", super::when);
        property("wildcard", super::wildcard);
        property("limit", super::limit);
        property("inventory", super::inventory);
        property("playbook", super::playbook);
        property("k3s_config", super::k3s_config);
    }
}
