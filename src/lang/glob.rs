//! Shell-style wildcards (`*`, `?`), the one matcher behind host patterns,
//! known_hosts and ssh config patterns, tags, and file globs.

/// How a pattern matches.
#[derive(Clone, Copy, Default)]
pub struct Glob {
    /// Letters match regardless of case (host names).
    pub ignore_case: bool,
    /// `*` and `?` do not match `/` (paths, as the shell expands them).
    pub within_folder: bool,
}

impl Glob {
    pub const HOSTS: Glob = Glob {
        ignore_case: true,
        within_folder: false,
    };
    pub const PATHS: Glob = Glob {
        ignore_case: false,
        within_folder: true,
    };
    pub const NAMES: Glob = Glob {
        ignore_case: false,
        within_folder: false,
    };

    pub fn matches(self, pattern: &str, text: &str) -> bool {
        self.go(pattern.as_bytes(), text.as_bytes())
    }

    fn go(self, p: &[u8], s: &[u8]) -> bool {
        let free = |c: u8| !(self.within_folder && c == b'/');
        match (p.first(), s.first()) {
            (None, None) => true,
            (Some(b'*'), _) => {
                self.go(&p[1..], s) || (!s.is_empty() && free(s[0]) && self.go(p, &s[1..]))
            }
            (Some(b'?'), Some(c)) if free(*c) => self.go(&p[1..], &s[1..]),
            (Some(a), Some(b)) if a == b || (self.ignore_case && a.eq_ignore_ascii_case(b)) => {
                self.go(&p[1..], &s[1..])
            }
            _ => false,
        }
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
}
