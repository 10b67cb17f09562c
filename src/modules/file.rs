//! `file`: a whole file with content (inline, from `files/`, or a template),
//! mode and owner, written atomically.

use serde::Deserialize;

use super::error::TaskError;
use super::{Change, ContentDiff, Perms, Render};
use crate::facts::{Kind, Probe, RemoteState};
use crate::lang::template::Text;
use crate::shell::{quote, with_payload};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(deserialize_with = "super::text")]
    pub dest: Text,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub content: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub src: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub template: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub mode: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub owner: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub group: Option<Text>,
    /// Never show the content or its diff.
    #[serde(default, deserialize_with = "crate::lang::yaml11::bool11")]
    pub secret: bool,
    /// Keep the replaced file under /var/backups/khard.
    #[serde(default, deserialize_with = "crate::lang::yaml11::bool11")]
    pub backup: bool,
    /// The kind of content, checked before writing (a name
    /// the domain knows, such as `manifest`), resolved at load.
    #[serde(default)]
    pub validate: Option<String>,
    #[serde(skip)]
    pub kind: Option<std::sync::Arc<dyn super::ContentKind>>,
    /// `absent` removes the file (kept under /var/backups/khard with `backup`).
    #[serde(default)]
    pub state: State,
    /// When dest is a symbolic link, write the file it points to (otherwise refused).
    #[serde(default, deserialize_with = "crate::lang::yaml11::bool11")]
    pub follow: bool,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(rename_all = "lowercase")]
pub enum State {
    #[default]
    Present,
    Absent,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub dest: String,
    /// The file must not exist.
    pub absent: bool,
    pub follow: bool,
    pub content: Vec<u8>,
    pub perms: Perms,
    pub secret: bool,
    pub backup: bool,
    /// What the content is, when the task names it (how a diff shows it).
    pub kind: Option<std::sync::Arc<dyn super::ContentKind>>,
}

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.dest);
        for t in [
            &mut self.content,
            &mut self.src,
            &mut self.template,
            &mut self.mode,
            &mut self.owner,
            &mut self.group,
        ]
        .into_iter()
        .flatten()
        {
            out.push(t);
        }
    }

    /// Exactly one source of content, or none for `state: absent` (checked at load).
    pub fn check(&self) -> Result<(), String> {
        let n = [&self.content, &self.src, &self.template]
            .iter()
            .filter(|t| t.is_some())
            .count();
        if self.state == State::Absent {
            if n != 0 {
                return Err(
                    "a file with `state: absent` takes no `content`, `src` or `template`".into(),
                );
            }
            return Ok(());
        }
        if n != 1 {
            return Err("file needs exactly one of `content`, `src` or `template`".into());
        }
        Ok(())
    }

    /// Metadata and checksum of dest (what a symbolic link points to with
    /// `follow`); its content for --diff, unless the file is secret.
    pub fn probe(&self, r: &Render, p: &mut Probe, want_content: bool) -> Result<(), TaskError> {
        let dest = super::check_path(&r.text(&self.dest)?)?;
        if self.follow {
            p.stat_follow.insert(dest.clone());
        }
        p.stat.insert(dest.clone());
        p.sha256.insert(dest.clone());
        if want_content && !self.secret {
            p.content.insert(dest);
        }
        Ok(())
    }

    pub fn render(&self, r: &Render) -> Result<Desired, TaskError> {
        let dest = super::check_path(&r.text(&self.dest)?)?;
        let absent = self.state == State::Absent;
        let content = if absent {
            String::new()
        } else if let Some(c) = &self.content {
            r.text(c)?
        } else if let Some(src) = &self.src {
            r.files.file(&r.text(src)?)?
        } else {
            let name = r.text(self.template.as_ref().expect("checked at load"))?;
            r.files.template(r.templates, &name, r.ctx)?
        };
        if let Some(kind) = &self.kind {
            kind.check(&content, r.vars)
                .map_err(|e| format!("{dest}: refusing to write invalid content: {e}"))?;
        }
        Ok(Desired {
            dest,
            absent,
            follow: self.follow,
            content: content.into_bytes(),
            perms: Perms::render(r, &self.mode, &self.owner, &self.group, 0o644)?,
            secret: self.secret,
            backup: self.backup,
            kind: self.kind.clone(),
        })
    }
}

impl Desired {
    pub fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        if self.absent {
            return remove_diff(&self.dest, self.backup, state);
        }
        let opts = WriteOpts {
            secret: self.secret,
            backup: self.backup,
            follow: self.follow,
        };
        let mut change = write_diff(&self.dest, &self.content, &self.perms, opts, state)?;
        if let Some(kind) = &self.kind {
            super::mask_diff(&mut change, kind.as_ref());
        }
        Ok(change)
    }
}

/// Removes a file (or a link) that should not exist; a folder is refused.
fn remove_diff(dest: &str, backup: bool, state: &RemoteState) -> Result<Option<Change>, TaskError> {
    match state.stat.get(dest) {
        None => Ok(None),
        Some(s) if s.kind == Kind::Dir => Err(TaskError::Refused(format!(
            "{dest} is a folder; `state: absent` removes files only"
        ))),
        Some(_) => {
            let q = quote(dest);
            let keep = if backup {
                format!("khard_backup {q}\n")
            } else {
                String::new()
            };
            Ok(Some(Change {
                details: vec![format!("{dest}: remove")],
                content: None,
                certain: true,
                script: format!("{keep}rm -f -- {q}\nsync \"$(dirname -- {q})\""),
            }))
        }
    }
}

/// How a whole file is written.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    /// Never show content or diff.
    pub secret: bool,
    /// Keep the replaced file under /var/backups/khard.
    pub backup: bool,
    /// Write through a symbolic link at dest (to the file it points to).
    pub follow: bool,
}

/// Compares a whole file with what the probe saw; shared by `file` and `sysctl`.
pub fn write_diff(
    dest: &str,
    content: &[u8],
    perms: &Perms,
    opts: WriteOpts,
    state: &RemoteState,
) -> Result<Option<Change>, TaskError> {
    let WriteOpts {
        secret,
        backup,
        follow,
    } = opts;
    let write = || {
        let cmd = format!(
            "khard_write {} {:04o} {} {} {} {}",
            quote(dest),
            perms.mode,
            quote(perms.owner.as_deref().unwrap_or("")),
            quote(perms.group.as_deref().unwrap_or("")),
            u8::from(backup),
            u8::from(follow)
        );
        with_payload(&cmd, content)
    };
    let content_diff = |before: Option<&Vec<u8>>| ContentDiff {
        path: dest.to_owned(),
        before: before.map(|b| String::from_utf8_lossy(b).into_owned()),
        after: String::from_utf8_lossy(content).into_owned(),
        secret,
    };
    // With follow, what counts is the file the link points to (stat -L).
    let seen = if follow {
        state.stat_follow.get(dest)
    } else {
        state.stat.get(dest)
    };
    match seen {
        None => Ok(Some(Change {
            details: vec![format!(
                "{dest}: create ({} bytes, mode {:04o})",
                content.len(),
                perms.mode
            )],
            content: Some(content_diff(None)),
            certain: true,
            script: write(),
        })),
        Some(s) if s.kind == Kind::Link => Err(TaskError::Refused(format!(
            "{dest} is a symbolic link; khard does not write through links unless the task says `follow: true`"
        ))),
        Some(s) if s.kind != Kind::File => Err(TaskError::Refused(format!(
            "{dest} exists and is not a regular file"
        ))),
        Some(s) => {
            let same_content = state
                .sha256
                .get(dest)
                .is_some_and(|h| *h == crate::facts::sha256_hex(content));
            let (mut details, fix) = perms.fix(dest, s, follow);
            if !same_content {
                details.insert(0, format!("{dest}: content differs"));
                return Ok(Some(Change {
                    details,
                    content: Some(content_diff(state.content.get(dest))),
                    certain: true,
                    script: write(),
                }));
            }
            Ok((!details.is_empty()).then_some(Change {
                details,
                content: None,
                certain: true,
                script: fix,
            }))
        }
    }
}
