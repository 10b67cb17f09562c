//! `k3s_config`: the hardening flags of a k3s node, without taking the
//! operator's configuration away. On k3s ≥ v1.21.1 khard owns one drop-in
//! (`config.yaml.d/<name>.yaml`, list keys in the `key+:` append form) and
//! never touches config.yaml; on v1.19.1 – v1.21.0 it merges its keys into
//! config.yaml, keeping every other key and list item (backup kept); before
//! v1.19.1 k3s reads no config file, and the task fails before writing.
//! Where the operator's files or the unit's command line weaken a flag, the
//! task fails naming the file and the fix (see `k3s::config`).

use serde::Deserialize;

use super::error::TaskError;
use super::file::{WriteOpts, write_diff};
use super::{Change, Perms, Render};
use crate::engine::probe::{Probe, RemoteState};
use crate::k3s::config::{self as cfg, Source};
use crate::k3s::validate::Validate;
use crate::lang::template::Text;

const CONFIG: &str = "/etc/rancher/k3s/config.yaml";
const DROPINS: &str = "/etc/rancher/k3s/config.yaml.d";

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Template of the flags khard wants, as a plain k3s config mapping.
    #[serde(deserialize_with = "super::text")]
    pub template: Text,
    /// The systemd unit whose command line and env file also count.
    #[serde(deserialize_with = "super::text")]
    pub unit: Text,
    /// The drop-in khard owns; sorts last by default.
    #[serde(default, deserialize_with = "super::opt_text")]
    pub dropin: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct Desired {
    /// The flags khard wants (rendered, validated), plain form.
    pub wanted: String,
    pub unit: String,
    pub dropin: String,
    /// The node's k3s version, when known.
    pub version: Option<(u64, u64, u64)>,
}

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.template);
        out.push(&mut self.unit);
        out.extend(self.dropin.as_mut());
    }

    fn dropin(&self, r: &Render) -> Result<String, TaskError> {
        let name = match r.opt(&self.dropin)? {
            Some(d) => d,
            None => format!("{DROPINS}/99-khard-cis.yaml"),
        };
        let path = super::check_path(&name)?;
        if !path.starts_with(&format!("{DROPINS}/")) || !path.ends_with(".yaml") {
            return Err(format!("the drop-in `{path}` must be a .yaml file in {DROPINS}/").into());
        }
        Ok(path)
    }

    /// config.yaml, every drop-in, khard's drop-in, the unit's files.
    pub fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError> {
        let dropin = self.dropin(r)?;
        for path in [CONFIG.to_owned(), dropin] {
            p.stat.insert(path.clone());
            p.sha256.insert(path.clone());
            p.content.insert(path);
        }
        p.content_glob.insert(format!("{DROPINS}/*.yaml"));
        p.content_glob.insert(format!("{DROPINS}/*.yml"));
        let unit = super::k3s_unit::unit_name(&r.text(&self.unit)?)?;
        p.content.extend(crate::k3s::unit::unit_files(&unit));
        Ok(())
    }

    pub fn render(&self, r: &Render) -> Result<Desired, TaskError> {
        let name = r.text(&self.template)?;
        let wanted = r.files.template(r.templates, &name, r.ctx)?;
        Validate::K3sConfig
            .check(&wanted, r.vars)
            .map_err(|e| format!("{name}: refusing to write invalid content: {e}"))?;
        let version = r
            .vars
            .get("k3s_version")
            .and_then(serde_json::Value::as_str)
            .and_then(cfg::version_triple);
        Ok(Desired {
            wanted,
            unit: super::k3s_unit::unit_name(&r.text(&self.unit)?)?,
            dropin: self.dropin(r)?,
            version,
        })
    }
}

/// How khard writes on this node's k3s release.
enum Mode {
    DropIn,
    Merge,
}

impl Desired {
    fn mode(&self) -> Result<Mode, TaskError> {
        match self.version {
            Some(v) if v < cfg::CONFIG_FILE_SINCE => Err(format!(
                "k3s v{}.{}.{} reads no config file (k3s reads /etc/rancher/k3s/config.yaml from v1.19.1 on): upgrade k3s before hardening it; nothing was written",
                v.0, v.1, v.2
            )
            .into()),
            Some(v) if v < cfg::DROPINS_SINCE => Ok(Mode::Merge),
            _ => Ok(Mode::DropIn),
        }
    }

    fn text(state: &RemoteState, path: &str) -> Option<String> {
        state
            .content
            .get(path)
            .map(|b| String::from_utf8_lossy(b).into_owned())
    }

    /// The file khard writes and its wanted content.
    fn target(&self, state: &RemoteState) -> Result<(String, String, Mode), TaskError> {
        match self.mode()? {
            Mode::DropIn => {
                let header = "# Written by khard (role cis_k3s): the CIS hardening flags, in k3s's append form\n# (`key+:`) so that config.yaml and other drop-ins keep theirs. Local edits are overwritten.\n".to_owned();
                let body = cfg::append_form(&self.wanted)?;
                Ok((self.dropin.clone(), header + &body, Mode::DropIn))
            }
            Mode::Merge => {
                // Merging blind would drop the operator's keys: a config.yaml
                // that exists but did not come back whole is refused.
                if state.stat.contains_key(CONFIG) && !state.content.contains_key(CONFIG) {
                    return Err(format!(
                        "{CONFIG} could not be read whole (a link, or over 256 KiB); khard merges only into a file it can read, so nothing was written"
                    )
                    .into());
                }
                let existing = Self::text(state, CONFIG).unwrap_or_default();
                let merged = cfg::merge_into(&existing, &self.wanted)
                    .map_err(|e| format!("{CONFIG}: {e}"))?;
                Ok((CONFIG.to_owned(), merged, Mode::Merge))
            }
        }
    }

    /// The node's configuration once khard's file is written: the one
    /// computation used for conflicts and the cross-server check.
    pub fn effective(&self, state: &RemoteState) -> Result<cfg::Effective, TaskError> {
        let (target, content, mode) = self.target(state)?;
        self.effective_with(state, &target, &content, &mode)
    }

    /// [`Desired::effective`] for a target already rendered.
    fn effective_with(
        &self,
        state: &RemoteState,
        target: &str,
        content: &str,
        mode: &Mode,
    ) -> Result<cfg::Effective, TaskError> {
        let dropins = matches!(mode, Mode::DropIn);
        Ok(effective(
            state,
            &self.unit,
            Some((target, content)),
            dropins,
        )?)
    }

    pub fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        let (target, content, mode) = self.target(state)?;
        let effective = self.effective_with(state, &target, &content, &mode)?;
        let conflicts = cfg::conflicts(&effective, &self.wanted, &target);
        if !conflicts.is_empty() {
            return Err(format!(
                "the node's k3s configuration weakens the hardening: {}",
                conflicts.join("; ")
            )
            .into());
        }
        let opts = WriteOpts {
            secret: false,
            backup: matches!(mode, Mode::Merge),
            follow: false,
        };
        let mut change = write_diff(
            &target,
            content.as_bytes(),
            &Perms::root(0o600),
            opts,
            state,
        )?;
        // config.yaml holds the token: its diff is shown masked.
        super::mask_k3s_diff(&mut change);
        Ok(change)
    }
}

/// The probe that [`effective`] needs: config.yaml, the drop-ins, the unit's files.
pub fn probe_config(p: &mut Probe, unit: &str) {
    p.content.insert(CONFIG.to_owned());
    p.content_glob.insert(format!("{DROPINS}/*.yaml"));
    p.content_glob.insert(format!("{DROPINS}/*.yml"));
    p.content.extend(crate::k3s::unit::unit_files(unit));
}

/// A node's effective k3s configuration from a probe: config.yaml, then
/// (with `dropins`) the drop-ins in name order, then the unit's overriding
/// flags. `planned` puts a file khard is about to write in place of what
/// the probe read there.
pub fn effective(
    state: &RemoteState,
    unit: &str,
    planned: Option<(&str, &str)>,
    dropins: bool,
) -> Result<cfg::Effective, String> {
    let text = |path: &str| -> Option<String> {
        match planned {
            Some((target, content)) if target == path => Some(content.to_owned()),
            _ => Desired::text(state, path),
        }
    };
    let mut files: Vec<(String, String)> = Vec::new();
    if let Some(c) = text(CONFIG) {
        files.push((CONFIG.to_owned(), c));
    }
    if dropins {
        // k3s reads every drop-in; one khard could not read makes any
        // answer about the node's configuration a guess.
        let unread = [format!("{DROPINS}/*.yaml"), format!("{DROPINS}/*.yml")];
        if unread.iter().any(|g| state.unread.contains(g)) {
            return Err(format!(
                "a drop-in in {DROPINS}/ could not be read (a link, a name with a newline, or over 256 KiB); k3s reads it, so the node's configuration cannot be known"
            ));
        }
        let mut found: Vec<(String, String)> = state
            .content
            .iter()
            .filter(|(p, _)| {
                let lower = p.to_ascii_lowercase();
                p.starts_with(&format!("{DROPINS}/"))
                    && !p[DROPINS.len() + 1..].contains('/')
                    && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
                    && planned.is_none_or(|(target, _)| *p != target)
            })
            .map(|(p, b)| (p.clone(), String::from_utf8_lossy(b).into_owned()))
            .collect();
        if let Some((target, content)) = planned.filter(|(t, _)| *t != CONFIG) {
            found.push((target.to_owned(), content.to_owned()));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        files.extend(found);
    }
    let sources: Vec<Source> = files
        .iter()
        .map(|(file, text)| Source { file, text })
        .collect();
    let mut effective = cfg::merge(&sources)?;
    for file in crate::k3s::unit::unit_files(unit) {
        if let Some(text) = Desired::text(state, &file) {
            let flags = crate::k3s::unit::overriding_flags(&text);
            cfg::apply_cli(&mut effective, &file, &flags);
        }
    }
    Ok(effective)
}
