//! `command`: a shell command. With a guard (`creates`, `unless`) it is
//! idempotent and check mode knows what it would do; without one it always
//! runs and reports changed.

use serde::Deserialize;

use super::error::TaskError;
use super::{Change, Render};
use crate::facts::{Probe, RemoteState};
use crate::lang::glob::Glob;
use crate::lang::template::Text;

#[derive(Debug, Clone)]
pub struct Args {
    pub cmd: Text,
    pub creates: Option<Text>,
    pub unless: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Full {
    #[serde(deserialize_with = "super::text")]
    cmd: Text,
    #[serde(default, deserialize_with = "super::opt_text")]
    creates: Option<Text>,
    #[serde(default, deserialize_with = "super::opt_text")]
    unless: Option<Text>,
}

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        if let serde_yaml::Value::String(cmd) = v {
            return Ok(Args {
                cmd: Text::plain(cmd),
                creates: None,
                unless: None,
            });
        }
        let full: Full = serde_yaml::from_value(v).map_err(serde::de::Error::custom)?;
        Ok(Args {
            cmd: full.cmd,
            creates: full.creates,
            unless: full.unless,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub cmd: String,
    pub creates: Option<String>,
    pub unless: Option<String>,
}

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.cmd);
        out.extend([&mut self.creates, &mut self.unless].into_iter().flatten());
    }

    /// Whether `creates` exists and the `unless` guard's exit status.
    pub fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError> {
        if let Some(c) = r.opt(&self.creates)? {
            p.stat.insert(super::check_path(&c)?);
        }
        if let Some(u) = r.opt(&self.unless)? {
            p.add_guard(&u);
        }
        Ok(())
    }

    pub fn render(&self, r: &Render) -> Result<Desired, TaskError> {
        Ok(Desired {
            cmd: r.text(&self.cmd)?,
            creates: r
                .opt(&self.creates)?
                .map(|p| super::check_path(&p))
                .transpose()?,
            unless: r.opt(&self.unless)?,
        })
    }
}

impl Desired {
    pub fn diff(&self, state: &RemoteState) -> Option<Change> {
        // A `creates` glob is expanded by the probe: any path it matched counts.
        if let Some(path) = &self.creates
            && state
                .stat
                .keys()
                .any(|p| p == path || Glob::PATHS.matches(path, p))
        {
            return None;
        }
        if let Some(guard) = &self.unless
            && state.guards.get(guard) == Some(&0)
        {
            return None;
        }
        Some(Change {
            details: vec![format!("run: {}", self.cmd)],
            content: None,
            certain: self.creates.is_some() || self.unless.is_some(),
            script: self.cmd.clone(),
        })
    }

    /// For a handler, which runs without a probe of its own: the guards are
    /// checked on the host in the same exec, just before the command. When
    /// one holds, `<marker>-guard-held` is printed and the task ends there (its
    /// health gate included: nothing was restarted).
    pub fn guarded_script(&self, marker: &str) -> String {
        let mut checks = Vec::new();
        if let Some(path) = &self.creates {
            checks.push(format!(
                "{{ set -- {}; [ -e \"$1\" ] || [ -L \"$1\" ]; }}",
                crate::facts::glob_words(path)
            ));
        }
        if let Some(guard) = &self.unless {
            checks.push(format!("( {guard}\n) </dev/null >/dev/null 2>&1"));
        }
        if checks.is_empty() {
            return self.cmd.clone();
        }
        format!(
            "if {}; then echo {}; exit 0; else\n{}\nfi",
            checks.join(" || "),
            crate::shell::quote(&format!("{marker}-guard-held")),
            self.cmd
        )
    }
}
