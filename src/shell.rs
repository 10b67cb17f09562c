//! Shell text every remote script is made of: quoting, the per-run marker
//! that delimits output sections, the preamble, and payloads on stdin.
//!
//! Every remote exec runs a constant `/bin/sh -s` and gets its script on
//! stdin, so the login shell never parses anything khard generates and file
//! contents never appear on a command line. Output sections are delimited by
//! markers carrying a random per-run nonce, so remote output cannot forge them.

/// Quotes `s` for POSIX sh: single quotes, with `'` written as `'\''`.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A random marker for one run: `@@khard-<16 hex digits>`.
pub fn new_marker() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS random source works");
    format!("@@khard-{}", data_encoding::HEXLOWER.encode(&bytes))
}

/// Lines every script starts with: a fixed PATH and locale so that the same
/// commands behave the same on every node, and private temp files.
pub fn preamble(marker: &str) -> String {
    format!(
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n\
         LC_ALL=C; export LC_ALL\n\
         umask 077\n\
         M={}\n",
        quote(marker)
    )
}

/// `command` given `data`: as one more (quoted) argument when it is text a
/// shell word can hold (UTF-8 without NUL), which costs the node no process;
/// else as base64 on its stdin, from a heredoc. `command` takes either.
pub fn with_payload(command: &str, data: &[u8]) -> String {
    if let Ok(text) = std::str::from_utf8(data)
        && !text.contains('\0')
    {
        return format!("{command} {}", quote(text));
    }
    with_payload_base64(command, data)
}

/// A heredoc feeding `data` as base64 to `command` (which reads stdin).
fn with_payload_base64(command: &str, data: &[u8]) -> String {
    let encoded = data_encoding::BASE64.encode(data);
    let mut out = format!("{command} <<'KHARD_PAYLOAD_EOF'\n");
    for chunk in encoded.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str("KHARD_PAYLOAD_EOF");
    out
}
