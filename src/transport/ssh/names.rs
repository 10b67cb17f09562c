//! Host names and user names as OpenSSH accepts them. They reach a local
//! shell through ProxyCommand's %h and %r and are written to known_hosts, so
//! a name holding shell metacharacters, white space or control characters
//! is refused before connecting, as OpenSSH 9.6 does (CVE-2023-51385).

/// Characters OpenSSH refuses in a host or user name given on the command line.
const REFUSED: &[char] = &[
    '\'', '`', '"', '$', '\\', ';', '&', '<', '>', '|', '(', ')', '{', '}', '*', '?', '!', '#',
    '~', '%', '=', ',',
];

fn check(what: &str, name: &str, also_allowed: &[char]) -> Result<(), String> {
    let bad = name.chars().find(|c| {
        c.is_whitespace() || c.is_control() || (REFUSED.contains(c) && !also_allowed.contains(c))
    });
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name.starts_with('-') {
        return Err(format!("the {what} `{name}` starts with `-`"));
    }
    match bad {
        Some(c) => Err(format!(
            "the {what} {:?} holds {:?}, which OpenSSH refuses in names (shell metacharacters, white space and control characters would reach a shell or known_hosts)",
            name, c
        )),
        None => Ok(()),
    }
}

/// A host name or address to connect to (`[::1]`-style brackets aside, an
/// IPv6 address is letters, digits, `:` and `.`).
pub fn check_host(name: &str) -> Result<(), String> {
    check("host name", name, &[])
}

/// A login user name.
pub fn check_user(name: &str) -> Result<(), String> {
    check("user name", name, &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_would_reach_a_shell_are_refused() {
        for ok in ["node1", "10.0.0.1", "::1", "node-1.example.com", "n_1"] {
            assert_eq!(check_host(ok), Ok(()), "{ok}");
        }
        for bad in [
            "$(touch /tmp/x)",
            "a`id`",
            "a;b",
            "a b",
            "a\nb",
            "-oProxyCommand=x",
            "a'b",
            "a|b",
            "",
        ] {
            assert!(check_host(bad).is_err(), "{bad:?}");
            assert!(check_user(bad).is_err(), "{bad:?}");
        }
        assert_eq!(check_user("deploy"), Ok(()));
        assert_eq!(
            check_user("ad.user@corp"),
            Ok(()),
            "domain users keep their @"
        );
    }
}
