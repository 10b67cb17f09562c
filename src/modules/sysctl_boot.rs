//! What the kernel parameters will be after the next boot: the sysctl.d
//! files as systemd-sysctl reads them (systemd src/sysctl/sysctl.c with
//! conf-files.c; rows S1–S6 of docs/research/sysctl-boot.md):
//! - S1 the folders /etc/sysctl.d, /run/sysctl.d, /usr/local/lib/sysctl.d,
//!   /usr/lib/sysctl.d (CONF_PATHS("sysctl.d")), `*.conf` only;
//! - S2 a file name in an earlier folder masks the same name in later ones;
//! - S3 the files are read in the order of their names, whatever the folder;
//! - S4 a later assignment of a key replaces an earlier one;
//! - S5 lines: `#` and `;` start comments, `key = value` (spaces around
//!   both trimmed), a leading `-` only ignores failures, `/` as separator
//!   is the same key as `.`, a key with `*`/`?` applies to every key it matches;
//! - S6 Debian's procps ships /etc/sysctl.d/99-sysctl.conf as a link to
//!   ../sysctl.conf: that link is read as /etc/sysctl.conf.

use std::collections::BTreeMap;

use crate::facts::{Kind, Probe, RemoteState};

pub const DIRS: &[&str] = &[
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
];

const DEBIAN_LINK: &str = "/etc/sysctl.d/99-sysctl.conf";
const SYSCTL_CONF: &str = "/etc/sysctl.conf";

/// A key's value at the next boot and the file that sets it.
#[derive(Debug, Clone, PartialEq)]
pub struct BootValue {
    pub value: String,
    pub file: String,
}

/// What a probe must ask to compute [`boot_values`].
pub fn probe(p: &mut Probe) {
    for d in DIRS {
        p.stat.insert(format!("{d}/*.conf"));
        p.content_glob.insert(format!("{d}/*.conf"));
    }
    p.content.insert(SYSCTL_CONF.to_owned());
}

/// The key as the kernel names it under /proc/sys, with dots.
fn normalize(key: &str) -> String {
    // systemd's sysctl_normalize: when the first separator is `/`, `/` is
    // the separator and a `.` is part of a name (net/ipv4/conf/eth0.1/…).
    match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => key
            .chars()
            .map(|c| match c {
                '/' => '.',
                '.' => '/',
                c => c,
            })
            .collect(),
        _ => key.to_owned(),
    }
}

/// The values the files set at boot for `keys`; Err when a file that
/// counts could not be read (a link other than Debian's, too big).
pub fn boot_values(
    state: &RemoteState,
    keys: &[&str],
) -> Result<BTreeMap<String, BootValue>, String> {
    // S1, S2: the first folder holding a name wins.
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    for dir in DIRS {
        for (path, stat) in state.stat.range(format!("{dir}/")..) {
            let Some(name) = path.strip_prefix(&format!("{dir}/")) else {
                break;
            };
            if name.contains('/') || !name.ends_with(".conf") || stat.kind == Kind::Dir {
                continue;
            }
            files.entry(name.to_owned()).or_insert_with(|| path.clone());
        }
    }
    let mut out = BTreeMap::new();
    // S3: by name.
    for path in files.values() {
        let text = match state.content.get(path) {
            Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
            None if path == DEBIAN_LINK => match state.content.get(SYSCTL_CONF) {
                Some(bytes) => String::from_utf8_lossy(bytes).into_owned(),
                None => String::new(),
            },
            None => {
                return Err(format!(
                    "{path} could not be read (a link, or over 256 KiB): what the next boot sets is unknown"
                ));
            }
        };
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            let line = line.strip_prefix('-').unwrap_or(line);
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let key = normalize(key.trim());
            for wanted in keys {
                let matches = if key.contains(['*', '?', '[']) {
                    crate::lang::glob::Glob::NAMES.matches(&key, wanted)
                } else {
                    key == *wanted
                };
                if matches {
                    // S4: the later assignment wins.
                    out.insert(
                        (*wanted).to_owned(),
                        BootValue {
                            value: crate::facts::normalize_sysctl(value.trim()),
                            file: path.clone(),
                        },
                    );
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::Stat;

    fn state(files: &[(&str, Option<&str>)]) -> RemoteState {
        let mut s = RemoteState::default();
        for (path, text) in files {
            let kind = if text.is_some() {
                Kind::File
            } else {
                Kind::Link
            };
            s.stat.insert(
                (*path).to_owned(),
                Stat {
                    kind,
                    mode: 0o644,
                    owner: "root".into(),
                    group: "root".into(),
                    uid: "0".into(),
                    gid: "0".into(),
                    size: 0,
                },
            );
            if let Some(t) = text {
                s.content.insert((*path).to_owned(), t.as_bytes().to_vec());
            }
        }
        s
    }

    const KEYS: &[&str] = &["vm.overcommit_memory", "kernel.panic"];

    #[test]
    fn names_order_the_files_and_earlier_folders_mask_later_ones() {
        let s = state(&[
            (
                "/usr/lib/sysctl.d/50-default.conf",
                Some("kernel.panic = 0\n"),
            ),
            (
                "/etc/sysctl.d/90-kubelet.conf",
                Some("vm.overcommit_memory=1\nkernel.panic=10\n"),
            ),
            // Sorts after 90-kubelet.conf, so it wins (S3, S4).
            (
                "/usr/lib/sysctl.d/99-vendor.conf",
                Some("vm/overcommit_memory = 0\n"),
            ),
            // Masked by /etc's file of the same name (S2).
            (
                "/usr/lib/sysctl.d/90-kubelet.conf",
                Some("kernel.panic=99\n"),
            ),
        ]);
        let v = boot_values(&s, KEYS).unwrap();
        assert_eq!(v["vm.overcommit_memory"].value, "0");
        assert_eq!(
            v["vm.overcommit_memory"].file,
            "/usr/lib/sysctl.d/99-vendor.conf"
        );
        assert_eq!(v["kernel.panic"].value, "10");
    }

    #[test]
    fn comments_ignore_markers_globs_and_debians_link() {
        let mut s = state(&[
            (
                "/etc/sysctl.d/10-a.conf",
                Some("# kernel.panic=1\n; kernel.panic=2\n-kernel.panic = 5 \n"),
            ),
            ("/etc/sysctl.d/20-glob.conf", Some("vm.overcommit_*=2\n")),
            ("/etc/sysctl.d/99-sysctl.conf", None),
        ]);
        s.content.insert(
            "/etc/sysctl.conf".into(),
            b"vm.overcommit_memory=1\n".to_vec(),
        );
        let v = boot_values(&s, KEYS).unwrap();
        assert_eq!(v["kernel.panic"].value, "5");
        assert_eq!(
            v["vm.overcommit_memory"].value, "1",
            "Debian's link comes last"
        );
        // Any other link cannot be read: unknown, never guessed.
        let s = state(&[("/etc/sysctl.d/50-link.conf", None)]);
        assert!(boot_values(&s, KEYS).unwrap_err().contains("50-link.conf"));
    }
}
