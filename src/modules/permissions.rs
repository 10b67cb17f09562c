//! `permissions`: mode and owner of paths that other software creates itself. A glob
//! may match several paths; a path that does not exist is left alone.

use serde::Deserialize;

use super::error::TaskError;
use super::{Change, Perms, Render};
use crate::facts::{Kind, Probe, RemoteState};
use crate::lang::template::Text;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(deserialize_with = "super::text")]
    pub path: Text,
    #[serde(deserialize_with = "super::text")]
    pub mode: Text,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub owner: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    pub group: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub pattern: String,
    pub perms: Perms,
}

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.path);
        out.push(&mut self.mode);
        out.extend([&mut self.owner, &mut self.group].into_iter().flatten());
    }

    /// Every path the pattern matches (the probe expands the glob).
    pub fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError> {
        super::stat_path(r, p, &self.path)
    }

    pub fn render(&self, r: &Render) -> Result<Desired, TaskError> {
        Ok(Desired {
            pattern: super::check_path(&r.text(&self.path)?)?,
            perms: Perms::render(r, &Some(self.mode.clone()), &self.owner, &self.group, 0)?,
        })
    }
}

impl Desired {
    pub fn diff(&self, state: &RemoteState) -> Option<Change> {
        let (mut details, mut script) = (Vec::new(), String::new());
        for (path, stat) in crate::facts::glob_range(&state.stat, &self.pattern) {
            // Links are never followed: chmod on a link would change its target.
            if stat.kind == Kind::Link {
                continue;
            }
            let (d, s) = self.perms.fix(path, stat, false);
            details.extend(d);
            script.push_str(&s);
        }
        (!details.is_empty()).then_some(Change {
            details,
            content: None,
            certain: true,
            script,
        })
    }
}
