//! Where playbooks, roles, templates and files come from: the disk, or the
//! copies built into the binary (`playbooks/` and `roles/` of this repository).

use std::path::{Path, PathBuf};

use anyhow::Result;

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded.rs"));
}

/// The built-in CIS playbook, used when no playbook is given.
pub const DEFAULT_PLAYBOOK: &str = "playbooks/cis-hardening.yaml";

/// A folder of content: a real directory, or a prefix among the built-in files.
#[derive(Debug, Clone, PartialEq)]
pub enum Dir {
    Disk(PathBuf),
    Builtin(String),
}

impl Dir {
    pub fn join(&self, rel: &str) -> Dir {
        match self {
            Dir::Disk(p) => Dir::Disk(p.join(rel)),
            Dir::Builtin(p) if p.is_empty() => Dir::Builtin(rel.to_owned()),
            Dir::Builtin(p) => Dir::Builtin(format!("{p}/{rel}")),
        }
    }

    /// How the user sees this path in messages.
    pub fn display(&self) -> String {
        match self {
            Dir::Disk(p) => p.display().to_string(),
            Dir::Builtin(p) => format!("(built-in) {p}"),
        }
    }

    pub fn exists(&self) -> bool {
        match self {
            Dir::Disk(p) => p.exists(),
            Dir::Builtin(p) => {
                let prefix = format!("{p}/");
                embedded::FILES
                    .iter()
                    .any(|(name, _)| *name == p || name.starts_with(&prefix))
            }
        }
    }

    /// Reads this path as a UTF-8 file; `Ok(None)` when it does not exist.
    pub fn read(&self) -> Result<Option<String>> {
        match self {
            Dir::Disk(p) if !p.is_file() => Ok(None),
            Dir::Disk(p) => crate::input::inventory::read_utf8(p).map(Some),
            Dir::Builtin(p) => Ok(embedded::FILES
                .iter()
                .find(|(n, _)| n == p)
                .map(|(_, t)| (*t).to_owned())),
        }
    }

    /// The first of `NAME.yaml`, `NAME.yml` or `NAME` that exists.
    pub fn find_yaml(&self, name: &str) -> Option<Dir> {
        [
            format!("{name}.yaml"),
            format!("{name}.yml"),
            name.to_owned(),
        ]
        .into_iter()
        .map(|n| self.join(&n))
        .find(|d| match d {
            Dir::Disk(p) => p.is_file(),
            Dir::Builtin(_) => matches!(d.read(), Ok(Some(_))),
        })
    }
}

/// The folder a playbook sits in, for looking up roles beside it.
pub fn parent(dir: &Dir) -> Dir {
    match dir {
        Dir::Disk(p) => Dir::Disk(p.parent().map(Path::to_path_buf).unwrap_or_default()),
        Dir::Builtin(p) => Dir::Builtin(
            p.rsplit_once('/')
                .map(|(a, _)| a.to_owned())
                .unwrap_or_default(),
        ),
    }
}

impl Dir {
    /// Files directly or indirectly below this folder, as (relative name, full path).
    pub fn list(&self) -> Vec<(String, Dir)> {
        match self {
            Dir::Disk(p) => {
                let mut out = Vec::new();
                let mut stack = vec![p.clone()];
                // Each real folder once: links to `.` or to a parent would loop.
                let mut seen = std::collections::HashSet::new();
                while let Some(d) = stack.pop() {
                    let Ok(real) = std::fs::canonicalize(&d) else {
                        continue;
                    };
                    if !seen.insert(real) || seen.len() > 10_000 {
                        continue;
                    }
                    let Ok(entries) = std::fs::read_dir(&d) else {
                        continue;
                    };
                    for e in entries.flatten() {
                        let path = e.path();
                        if path.is_dir() {
                            stack.push(path);
                        } else if let Ok(rel) = path.strip_prefix(p) {
                            out.push((rel.to_string_lossy().into_owned(), Dir::Disk(path.clone())));
                        }
                    }
                }
                out.sort_by(|a, b| a.0.cmp(&b.0));
                out
            }
            Dir::Builtin(p) => {
                let prefix = format!("{p}/");
                embedded::FILES
                    .iter()
                    .filter_map(|(n, _)| {
                        n.strip_prefix(&prefix)
                            .map(|rel| (rel.to_owned(), Dir::Builtin((*n).to_owned())))
                    })
                    .collect()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_back_to_a_folder_do_not_loop() {
        let dir = crate::testutil::TempDir::new();
        let files = dir.path().join("files");
        std::fs::create_dir_all(&files).unwrap();
        std::fs::write(files.join("a.txt"), "a").unwrap();
        std::os::unix::fs::symlink(".", files.join("self")).unwrap();
        std::os::unix::fs::symlink("..", files.join("up")).unwrap();
        let listed = Dir::Disk(files).list();
        assert!(
            listed.iter().any(|(n, _)| n == "a.txt"),
            "{:?}",
            listed.len()
        );
        assert!(listed.len() < 10, "{}", listed.len());
    }
}
