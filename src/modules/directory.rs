//! `directory`: a folder, with its mode and owner.

use serde::Deserialize;

use super::error::TaskError;
use super::{Change, Perms, Render};
use crate::facts::{Kind, Probe, RemoteState};
use crate::lang::template::Text;
use crate::shell::quote;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(deserialize_with = "super::text")]
    pub path: Text,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub mode: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub owner: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub group: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub path: String,
    pub perms: Perms,
}

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.path);
        out.extend(
            [&mut self.mode, &mut self.owner, &mut self.group]
                .into_iter()
                .flatten(),
        );
    }

    pub fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError> {
        super::stat_path(r, p, &self.path)
    }

    pub fn render(&self, r: &Render) -> Result<Desired, TaskError> {
        Ok(Desired {
            path: super::check_path(&r.text(&self.path)?)?,
            perms: Perms::render(r, &self.mode, &self.owner, &self.group, 0o755)?,
        })
    }
}

impl Desired {
    pub fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        let path = &self.path;
        match state.stat.get(path) {
            None => Ok(Some(Change {
                details: vec![format!(
                    "{path}: create folder (mode {:04o})",
                    self.perms.mode
                )],
                content: None,
                certain: true,
                // Missing parents get 0755 whatever the scripts' umask (077).
                script: format!(
                    "umask 022\nmkdir -p -- {q}\numask 077\n{}chmod {:04o} {q}",
                    self.perms.chown(path),
                    self.perms.mode,
                    q = quote(path),
                ),
            })),
            Some(s) if s.kind != Kind::Dir => Err(TaskError::Refused(format!(
                "{path} exists and is not a folder"
            ))),
            Some(s) => {
                let (details, script) = self.perms.fix(path, s, false);
                Ok((!details.is_empty()).then_some(Change {
                    details,
                    content: None,
                    certain: true,
                    script,
                }))
            }
        }
    }
}
