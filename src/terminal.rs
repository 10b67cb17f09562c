//! The one boundary for text that came from a node or from input on its way
//! to a person's terminal: every C0 and C1 control character and DEL is
//! shown as an escape (`\e`, `\r`, `\x9b` …), so nothing a node prints can
//! move the cursor, retitle the terminal, hide the rest of the report or
//! forge a line. JSON, JUnit and HTML escape by their own rules and get the
//! text as it was.

/// `s` on one line: line breaks are shown as `\n` too.
pub fn one_line(s: &str) -> String {
    escape(s, false)
}

/// `s` with its line breaks and tabs kept (remote output, diffs), every
/// other control character shown.
pub fn lines(s: &str) -> String {
    escape(s, true)
}

fn escape(s: &str, keep_newlines: bool) -> String {
    if !s.chars().any(is_control) {
        return s.to_owned();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' if keep_newlines => out.push('\t'),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if is_control(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// C0, DEL and C1.
fn is_control(c: char) -> bool {
    c.is_control() || ('\u{80}'..='\u{9f}').contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_control_character_is_shown_not_sent() {
        for c in (0u32..0x20).chain([0x7f]).chain(0x80..0xa0) {
            let c = char::from_u32(c).unwrap();
            let shown = one_line(&format!("a{c}b"));
            assert!(!shown.chars().any(is_control), "{:?} -> {shown:?}", c);
        }
        assert_eq!(one_line("\x1b]0;pwned\x07"), "\\e]0;pwned\\x07");
        assert_eq!(one_line("\r\x1b[2KPLAY RECAP"), "\\r\\e[2KPLAY RECAP");
        assert_eq!(one_line("a\nb"), "a\\nb");
        assert_eq!(lines("a\nb\x1b[8m"), "a\nb\\e[8m");
        assert_eq!(one_line("plain ünïcode\tok"), "plain ünïcode\\tok");
        assert_eq!(lines("a\tb"), "a\tb");
    }
}
