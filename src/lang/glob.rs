//! Shell-style wildcards (`*`, `?`, and for paths `[abc]`), the one matcher
//! behind host patterns, known_hosts and ssh config patterns, tags, and file
//! globs.

/// How a pattern matches.
#[derive(Clone, Copy, Default)]
pub struct Glob {
    /// Letters match regardless of case (host names).
    pub ignore_case: bool,
    /// `*` and `?` do not match `/` (paths, as the shell expands them).
    pub within_folder: bool,
    /// `[abc]` matches one of its letters or digits (paths, as the shell
    /// expands them); elsewhere `[` is a plain character.
    pub classes: bool,
}

/// A `[…]` class of letters and digits at the start of `p`: its members and
/// its length with the brackets.
pub fn class_at(p: &[u8]) -> Option<(&[u8], usize)> {
    let rest = p.strip_prefix(b"[")?;
    let close = rest.iter().position(|&b| b == b']')?;
    let members = &rest[..close];
    (!members.is_empty() && members.iter().all(u8::is_ascii_alphanumeric))
        .then_some((members, close + 2))
}

impl Glob {
    pub const HOSTS: Glob = Glob {
        ignore_case: true,
        within_folder: false,
        classes: false,
    };
    pub const PATHS: Glob = Glob {
        ignore_case: false,
        within_folder: true,
        classes: true,
    };
    pub const NAMES: Glob = Glob {
        ignore_case: false,
        within_folder: false,
        classes: false,
    };

    /// Matches in O(pattern × text) time, whatever the pattern: the set of
    /// pattern positions reachable so far advances one text byte at a time
    /// (a backtracking matcher is exponential on `*a*a*a…b`).
    pub fn matches(self, pattern: &str, text: &str) -> bool {
        let p = pattern.as_bytes();
        let free = |c: u8| !(self.within_folder && c == b'/');
        let same = |a: u8, b: u8| a == b || (self.ignore_case && a.eq_ignore_ascii_case(&b));
        // at[i]: the first i pattern bytes can match the text read so far.
        let mut at = vec![false; p.len() + 1];
        at[0] = true;
        let close = |at: &mut Vec<bool>| {
            // A `*` may match nothing: reaching it reaches past it.
            for i in 0..p.len() {
                if at[i] && p[i] == b'*' {
                    at[i + 1] = true;
                }
            }
        };
        close(&mut at);
        for &c in text.as_bytes() {
            let mut next = vec![false; p.len() + 1];
            for i in 0..p.len() {
                if !at[i] {
                    continue;
                }
                if self.classes
                    && let Some((members, len)) = class_at(&p[i..])
                {
                    if members.contains(&c) {
                        next[i + len] = true;
                    }
                    continue;
                }
                match p[i] {
                    b'*' if free(c) => next[i] = true,
                    b'?' if free(c) => next[i + 1] = true,
                    b'*' | b'?' => {}
                    x if same(x, c) => next[i + 1] = true,
                    _ => {}
                }
            }
            close(&mut next);
            if !next.iter().any(|&b| b) {
                return false;
            }
            at = next;
        }
        at[p.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_flavours() {
        assert!(Glob::HOSTS.matches("Web-*", "web-1.example"));
        assert!(Glob::PATHS.matches("/a/*.crt", "/a/x.crt"));
        assert!(!Glob::PATHS.matches("/a/*.crt", "/a/b/x.crt"));
        assert!(Glob::PATHS.matches("/a/?.key", "/a/k.key"));
        assert!(Glob::NAMES.matches("1.2.*", "1.2.22"));
        assert!(!Glob::NAMES.matches("A*", "abc"));
    }

    #[test]
    fn stars_and_marks_in_any_mix() {
        let n = Glob::NAMES;
        for (p, t, want) in [
            ("", "", true),
            ("*", "", true),
            ("a*", "a", true),
            ("*a", "ba", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXbY", false),
            ("?", "", false),
            ("a?c", "abc", true),
            ("**", "x", true),
            ("*x*", "yyy", false),
        ] {
            assert_eq!(n.matches(p, t), want, "{p} ~ {t}");
        }
        assert!(!Glob::PATHS.matches("/a/*", "/a/b/c"));
        assert!(Glob::PATHS.matches("/a/*/c", "/a/b/c"));
    }

    #[test]
    fn paths_have_letter_classes() {
        let p = Glob::PATHS;
        let yaml = "/d/*.[yY][aA][mM][lL]";
        assert!(p.matches(yaml, "/d/x.yaml"));
        assert!(p.matches(yaml, "/d/x.YAML"));
        assert!(p.matches(yaml, "/d/x.Yaml"));
        assert!(!p.matches(yaml, "/d/x.yml"));
        assert!(!p.matches(yaml, "/d/x.yaml.bak"));
        // Not a class: a plain `[`.
        assert!(p.matches("/d/[x", "/d/[x"));
        assert!(!Glob::NAMES.matches("[ab]", "a"));
        assert!(Glob::NAMES.matches("[ab]", "[ab]"));
        assert!(p.matches("/d/]x[", "/d/]x["));
        assert_eq!(class_at(b"]a]"), None);
    }

    /// `*a` × 11 + `b` against 40 characters took 20 s with backtracking.
    /// Linear in the text, as a ratio of two sizes (never an absolute time):
    /// ten times the text may cost at most about ten times the time;
    /// backtracking grows exponentially.
    #[test]
    fn adversarial_patterns_take_linear_time() {
        let pattern = format!("{}b", "*a".repeat(11));
        assert!(!Glob::NAMES.matches(&pattern, &"a".repeat(40)));
        let long = "*a".repeat(200) + "b";
        let time = |n: usize| {
            let text = "a".repeat(n);
            let started = std::time::Instant::now();
            assert!(!Glob::HOSTS.matches(&long, &text));
            started.elapsed().as_secs_f64()
        };
        time(500); // warm-up
        let (small, large) = (time(500), time(5000));
        assert!(large < 40.0 * small, "500: {small}s, 5000: {large}s");
    }
}
