//! `sysctl`: a sysctl.d file holding exactly the given values, applied with
//! `sysctl -p FILE` and verified live. Changed when the file differs or any
//! live value differs (another file can override ours at boot or later).

use serde::Deserialize;
use std::fmt::Write as _;

use super::error::TaskError;
use super::{Change, Perms, Render};
use crate::facts::{Probe, RemoteState, normalize_sysctl};
use crate::lang::template::Text;
use crate::lang::yaml11::Ordered;
use crate::shell::quote;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    #[serde(deserialize_with = "super::text")]
    pub dest: Text,
    pub values: Ordered<SysctlValue>,
}

#[derive(Debug, Clone)]
pub struct SysctlValue(pub Text);

impl<'de> Deserialize<'de> for SysctlValue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::text(d).map(SysctlValue)
    }
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub dest: String,
    /// Key and value, in the order written.
    pub values: Vec<(String, String)>,
}

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.dest);
        out.extend(self.values.0.iter_mut().map(|(_, v)| &mut v.0));
    }

    /// The file (checksum, content for --diff) and each key's live value.
    pub fn probe(&self, r: &Render, p: &mut Probe, want_content: bool) -> Result<(), TaskError> {
        let dest = super::check_path(&r.text(&self.dest)?)?;
        p.stat.insert(dest.clone());
        p.sha256.insert(dest.clone());
        if want_content {
            p.content.insert(dest);
        }
        p.sysctl.extend(self.values.iter().map(|(k, _)| k.clone()));
        Ok(())
    }

    pub fn render(&self, r: &Render) -> Result<Desired, TaskError> {
        let mut values = Vec::new();
        for (key, value) in self.values.iter() {
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(TaskError::Refused(format!("`{key}` is not a sysctl key")));
            }
            let v = normalize_sysctl(&r.text(&value.0)?);
            if v.contains(['\n', '\'']) || v.is_empty() {
                return Err(TaskError::Refused(format!(
                    "value of {key} must be one line"
                )));
            }
            values.push((key.clone(), v));
        }
        Ok(Desired {
            dest: super::check_path(&r.text(&self.dest)?)?,
            values,
        })
    }
}

impl Desired {
    pub fn content(&self) -> Vec<u8> {
        self.values
            .iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect::<String>()
            .into_bytes()
    }

    fn perms() -> Perms {
        Perms::root(0o644)
    }

    pub fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        let opts = super::file::WriteOpts::default();
        let file =
            super::file::write_diff(&self.dest, &self.content(), &Self::perms(), opts, state)?;
        let live: Vec<String> = self
            .values
            .iter()
            .filter_map(|(k, want)| {
                let now = state
                    .sysctl
                    .get(k)
                    .map(String::as_str)
                    .unwrap_or("(missing)");
                (now != want).then(|| format!("{k} (live): {now} → {want}"))
            })
            .collect();
        if file.is_none() && live.is_empty() {
            return Ok(None);
        }
        let mut change = file.unwrap_or(Change {
            certain: true,
            ..Change::default()
        });
        change.details.extend(live);
        change
            .script
            .push_str(&format!("\nsysctl -p {} >/dev/null\n", quote(&self.dest)));
        if !self.values.is_empty() {
            change.script.push_str("khard_sysctl_check");
            for (k, v) in &self.values {
                let _ = write!(
                    change.script,
                    " {} {}",
                    quote(&k.replace('.', "/")),
                    quote(v)
                );
            }
            change.script.push('\n');
        }
        Ok(Some(change))
    }
}
