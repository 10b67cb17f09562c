//! `k3s_unit`: a read-only check that the k3s service's command line does
//! not defeat config.yaml. k3s lets a flag repeated on its command line
//! replace the whole list from the config file, so a `--kube-apiserver-arg`
//! in the unit's ExecStart (or its environment file) silently discards the
//! hardening. The check fails, naming the flags and the fix; it changes nothing.

use serde::Deserialize;

use crate::facts::{Probe, RemoteState};
use crate::k3s::unit::overriding_flags;
use crate::lang::template::Text;
use crate::modules::error::TaskError;
use crate::modules::{Change, ExtAction, Extension, Render};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The systemd unit: `k3s` or `k3s-agent`.
    #[serde(deserialize_with = "crate::modules::text")]
    pub unit: Text,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub unit: String,
}

/// A systemd unit name as khard accepts it for k3s (letters, digits, `-`, `_`).
pub fn unit_name(unit: &str) -> Result<String, TaskError> {
    if unit.is_empty()
        || !unit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!("`{unit}` is not a unit name").into());
    }
    Ok(unit.to_owned())
}

impl Args {
    fn desired(&self, r: &Render) -> Result<Desired, TaskError> {
        Ok(Desired {
            unit: unit_name(&r.text(&self.unit)?)?,
        })
    }
}

impl Extension for Args {
    fn texts(&mut self) -> Vec<&mut Text> {
        vec![&mut self.unit]
    }

    /// The unit's files and its environment files, whole.
    fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError> {
        p.content.extend(self.desired(r)?.files());
        Ok(())
    }

    fn render(&self, r: &Render) -> Result<Box<dyn ExtAction>, TaskError> {
        Ok(Box::new(self.desired(r)?))
    }

    /// It checks the unit; the controls it carries are fixed by other tasks.
    fn is_guard(&self) -> bool {
        true
    }

    fn clone_box(&self) -> Box<dyn Extension> {
        Box::new(self.clone())
    }
}

impl Desired {
    fn files(&self) -> Vec<String> {
        crate::k3s::unit::unit_files(&self.unit)
    }
}

impl ExtAction for Desired {
    fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        let mut found = Vec::new();
        for file in self.files() {
            let Some(text) = state.content.get(&file) else {
                continue;
            };
            for flag in overriding_flags(&String::from_utf8_lossy(text)) {
                found.push(format!("{file}: {flag}"));
            }
        }
        if found.is_empty() {
            return Ok(None);
        }
        Err(TaskError::Refused(format!(
            "the {} service's command line overrides config.yaml, which discards the hardening: {}. \
             Move these settings into /etc/rancher/k3s/config.yaml (or the role's variables), remove them \
             from the unit or its environment file, then run `systemctl daemon-reload` and khard again",
            self.unit,
            found.join("; ")
        )))
    }

    fn clone_box(&self) -> Box<dyn ExtAction> {
        Box::new(self.clone())
    }
}
