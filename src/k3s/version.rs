//! A k3s version, parsed once: `v1.30.6+k3s1` (the `v` may be left out, a
//! pre-release such as `-rc1` and the `+k3s1` build suffix are allowed and
//! do not order). The one parser of a version read from a node or an
//! inventory: anything else (control characters, a second word, a major
//! other than 1) is not a k3s version.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct K3sVersion {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
}

/// Longest text taken as a version (k3s's are about 15 characters).
const MAX_LEN: usize = 64;

impl K3sVersion {
    pub const fn new(major: u64, minor: u64, patch: u64) -> K3sVersion {
        K3sVersion {
            major,
            minor,
            patch,
        }
    }

    pub fn parse(text: &str) -> Option<K3sVersion> {
        let t = text.trim();
        let plain = t.len() <= MAX_LEN
            && t.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-'));
        if !plain {
            return None;
        }
        let core = t.strip_prefix('v').unwrap_or(t);
        let core = core.split(['+', '-']).next()?;
        let mut parts = core.split('.');
        let number = |p: Option<&str>| -> Option<u64> {
            let p = p?;
            (!p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
                .then(|| p.parse().ok())
                .flatten()
        };
        let major = number(parts.next())?;
        let minor = number(parts.next())?;
        let patch = match parts.next() {
            None => 0,
            some => number(some)?,
        };
        (major == 1 && parts.next().is_none()).then_some(K3sVersion::new(major, minor, patch))
    }
}

impl fmt::Display for K3sVersion {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "v{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_k3s_prints_and_nothing_else() {
        let v = |s| K3sVersion::parse(s);
        assert_eq!(v("v1.30.6+k3s1"), Some(K3sVersion::new(1, 30, 6)));
        assert_eq!(v("1.30.6"), Some(K3sVersion::new(1, 30, 6)));
        assert_eq!(v("v1.33.0-rc1+k3s1"), Some(K3sVersion::new(1, 33, 0)));
        assert_eq!(v("v1.30"), Some(K3sVersion::new(1, 30, 0)));
        for bad in [
            "",
            "banana",
            "v2.0.0",
            "v1.30.6 extra",
            "v1.30.6\u{1b}[2J",
            "v1..6",
            "v1.30.6.1",
            "v1.-3.0",
            "v1.99999999999.0",
        ] {
            assert_eq!(v(bad), None, "{bad:?}");
        }
        assert!(v("v1.21.0+k3s1").unwrap() < v("v1.21.1+k3s1").unwrap());
        assert!(v("v1.9.0").unwrap() < v("v1.10.0").unwrap());
        assert_eq!(v("v1.30.6+k3s1").unwrap().to_string(), "v1.30.6");
    }
}
