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
//! - S6 links are followed (Debian's procps ships /etc/sysctl.d/99-sysctl.conf
//!   → ../sysctl.conf); a link to /dev/null masks the name.

use std::collections::BTreeMap;

use crate::facts::{Kind, Probe, RemoteState};

pub const DIRS: &[&str] = &[
    "/etc/sysctl.d",
    "/run/sysctl.d",
    "/usr/local/lib/sysctl.d",
    "/usr/lib/sysctl.d",
];

/// A key's value at the next boot and the file that sets it.
#[derive(Debug, Clone, PartialEq)]
pub struct BootValue {
    pub value: String,
    pub file: String,
}

/// One read for every file: `grep` prints each line that is not a comment
/// or blank as `PATH:LINE`, following links as systemd-sysctl does (a link
/// to /dev/null masks a name: it prints nothing). One process for all the
/// files, instead of two per file: `exec`, the probe's subshell becomes grep
/// (its status, 1 for no line, is not used).
pub fn read_command() -> String {
    let globs: Vec<String> = DIRS.iter().map(|d| format!("{d}/*.conf")).collect();
    format!(
        "exec grep -H -v -E '^[[:space:]]*([#;]|$)' {} 2>/dev/null",
        globs.join(" ")
    )
}

/// What a probe must ask to compute [`boot_values`]: the names (stat, to
/// know which files exist and mask each other) and their lines.
pub fn probe(p: &mut Probe) {
    for d in DIRS {
        p.stat.insert(format!("{d}/*.conf"));
    }
    p.reads.insert(read_command());
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
    let Some((_, text)) = state.reads.get(&read_command()) else {
        return Err("the sysctl.d files could not be read".into());
    };
    if text.len() >= crate::facts::MAX_READ {
        return Err("the sysctl.d files hold more than khard reads (64 KiB)".into());
    }
    // Each file's lines, by the path grep names (the longest known path that
    // prefixes the line, so a `:` in a value is never taken for the name).
    let mut lines: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in text.lines() {
        let owner = files
            .values()
            .filter(|p| {
                line.len() > p.len()
                    && line.starts_with(p.as_str())
                    && line.as_bytes()[p.len()] == b':'
            })
            .max_by_key(|p| p.len());
        if let Some(path) = owner {
            lines
                .entry(path.as_str())
                .or_default()
                .push(&line[path.len() + 1..]);
        }
    }
    let mut out = BTreeMap::new();
    // S3: by name.
    for path in files.values() {
        for line in lines.get(path.as_str()).into_iter().flatten() {
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

    /// A node's answer, from real files: each folder of DIRS made under a
    /// temporary root, the probe's own grep command run there by the real
    /// `sh` and `grep`, paths mapped back.
    fn state(files: &[(&str, Result<&str, &str>)]) -> RemoteState {
        let dir = crate::testutil::TempDir::new();
        let root = dir.path().display().to_string();
        let mut s = RemoteState::default();
        for (path, what) in files {
            let real = format!("{root}{path}");
            std::fs::create_dir_all(std::path::Path::new(&real).parent().unwrap()).unwrap();
            let kind = match what {
                Ok(text) => {
                    std::fs::write(&real, text).unwrap();
                    Kind::File
                }
                Err(target) => {
                    let target = if target.starts_with("/dev/") {
                        (*target).to_owned()
                    } else {
                        format!("{root}{target}")
                    };
                    std::os::unix::fs::symlink(target, &real).unwrap();
                    Kind::Link
                }
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
        }
        let mut command = read_command();
        for d in DIRS {
            command = command.replace(&format!("{d}/"), &format!("{root}{d}/"));
        }
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&command)
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap().replace(&root, "");
        s.reads.insert(read_command(), (0, text));
        s
    }

    const KEYS: &[&str] = &["vm.overcommit_memory", "kernel.panic"];

    #[test]
    fn names_order_the_files_and_earlier_folders_mask_later_ones() {
        let s = state(&[
            (
                "/usr/lib/sysctl.d/50-default.conf",
                Ok("kernel.panic = 0\n"),
            ),
            (
                "/etc/sysctl.d/90-local.conf",
                Ok("vm.overcommit_memory=1\nkernel.panic=10\n"),
            ),
            // Sorts after 90-local.conf, so it wins (S3, S4).
            (
                "/usr/lib/sysctl.d/99-vendor.conf",
                Ok("vm/overcommit_memory = 0\n"),
            ),
            // Masked by /etc's file of the same name (S2).
            ("/usr/lib/sysctl.d/90-local.conf", Ok("kernel.panic=99\n")),
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
    fn comments_ignore_markers_globs_and_links() {
        let s = state(&[
            (
                "/etc/sysctl.d/10-a.conf",
                Ok("# kernel.panic=1\n; kernel.panic=2\n\n-kernel.panic = 5 \n"),
            ),
            ("/etc/sysctl.d/20-glob.conf", Ok("vm.overcommit_*=2\n")),
            // Debian's link to ../sysctl.conf is followed (S6).
            ("/etc/sysctl.conf", Ok("vm.overcommit_memory=1\n")),
            ("/etc/sysctl.d/99-sysctl.conf", Err("/etc/sysctl.conf")),
        ]);
        let v = boot_values(&s, KEYS).unwrap();
        assert_eq!(v["kernel.panic"].value, "5");
        assert_eq!(v["vm.overcommit_memory"].value, "1", "the link comes last");
        assert_eq!(
            v["vm.overcommit_memory"].file,
            "/etc/sysctl.d/99-sysctl.conf"
        );
    }

    #[test]
    fn a_link_to_dev_null_masks_the_vendor_file() {
        let s = state(&[
            ("/usr/lib/sysctl.d/50-panic.conf", Ok("kernel.panic = 0\n")),
            ("/etc/sysctl.d/50-panic.conf", Err("/dev/null")),
        ]);
        assert!(boot_values(&s, KEYS).unwrap().is_empty());
    }

    #[test]
    fn no_answer_is_unknown() {
        assert!(boot_values(&RemoteState::default(), KEYS).is_err());
    }
}
