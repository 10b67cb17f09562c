//! `k3s_config`: the hardening flags of a k3s node, without taking the
//! operator's configuration away. On k3s ≥ v1.21.1 khard owns one drop-in
//! (`config.yaml.d/<name>.yaml`, list keys in the `key+:` append form) and
//! never touches config.yaml; on v1.19.1 – v1.21.0 it merges its keys into
//! config.yaml, keeping every other key and list item (backup kept); before
//! v1.19.1 k3s reads no config file, and the task fails before writing.
//! Where the operator's files or the unit's command line weaken a flag, the
//! task fails naming the file and the fix (see `k3s::config`).

use serde::Deserialize;

use crate::facts::{Probe, RemoteState};
use crate::k3s::config::{self as cfg};
use crate::k3s::validate::{Checker, Validate};
use crate::k3s::version::K3sVersion;
use crate::lang::template::Text;
use crate::modules::ContentKind;
use crate::modules::error::TaskError;
use crate::modules::file::{WriteOpts, write_diff};
use crate::modules::{Change, ExtAction, Extension, Perms, Render, Shared};

use crate::k3s::config::{CONFIG, effective};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// Template of the flags khard wants, as a plain k3s config mapping.
    #[serde(deserialize_with = "crate::modules::text")]
    pub template: Text,
    /// The systemd unit whose command line and env file also count.
    #[serde(deserialize_with = "crate::modules::text")]
    pub unit: Text,
    /// The config file k3s reads (`k3s_config_file`; K3S_CONFIG_FILE or
    /// --config on the node): config.yaml by default.
    #[serde(default, deserialize_with = "crate::modules::opt_text")]
    pub config: Option<Text>,
    /// The drop-in khard owns, in `<config>.d/`; sorts last by default.
    #[serde(default, deserialize_with = "crate::modules::opt_text")]
    pub dropin: Option<Text>,
    /// Checks the rendered flags, once per distinct content and role.
    #[serde(skip, default = "k3s_config_checker")]
    checker: std::sync::Arc<Checker>,
}

fn k3s_config_checker() -> std::sync::Arc<Checker> {
    std::sync::Arc::new(Checker::new(Validate::K3sConfig))
}

#[derive(Debug, Clone)]
pub struct Desired {
    /// The flags khard wants (rendered, validated), plain form.
    pub wanted: String,
    pub unit: String,
    pub config: String,
    pub dropin: String,
    /// The node's k3s version, when known.
    pub version: Option<K3sVersion>,
}

impl Args {
    fn config(&self, r: &Render) -> Result<String, TaskError> {
        match r.opt(&self.config)?.filter(|c| !c.is_empty()) {
            Some(c) => crate::modules::check_path(&c),
            None => Ok(CONFIG.to_owned()),
        }
    }

    /// khard's drop-in: a `.yaml` file directly in `<config>.d/` (an empty
    /// value: `99-khard-cis.yaml` there).
    fn dropin(&self, r: &Render) -> Result<String, TaskError> {
        let folder = format!("{}.d", self.config(r)?);
        let name = match r.opt(&self.dropin)?.filter(|d| !d.is_empty()) {
            Some(d) => d,
            None => format!("{folder}/99-khard-cis.yaml"),
        };
        let path = crate::modules::check_path(&name)?;
        let inside = path
            .strip_prefix(&format!("{folder}/"))
            .is_some_and(|n| !n.contains('/'));
        if !inside || !path.ends_with(".yaml") {
            return Err(format!(
                "the drop-in `{path}` must be a .yaml file in {folder}/ (the folder of k3s_config_file)"
            )
            .into());
        }
        Ok(path)
    }
}

impl Extension for Args {
    fn texts(&mut self) -> Vec<&mut Text> {
        let mut out = vec![&mut self.template, &mut self.unit];
        out.extend(self.config.as_mut());
        out.extend(self.dropin.as_mut());
        out
    }

    /// config.yaml, every drop-in, khard's drop-in, the unit's files.
    fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError> {
        let (config, dropin) = (self.config(r)?, self.dropin(r)?);
        for path in [config.clone(), dropin] {
            p.stat.insert(path.clone());
            p.sha256.insert(path.clone());
            p.content.insert(path);
        }
        let unit = super::unit_task::unit_name(&r.text(&self.unit)?)?;
        crate::k3s::config::probe_config(p, &unit, &config);
        super::kubelet_config::probe(p);
        Ok(())
    }

    fn render(&self, r: &Render) -> Result<Box<dyn ExtAction>, TaskError> {
        let name = r.text(&self.template)?;
        let wanted = r.files.template(r.templates, &name, r.ctx)?;
        self.checker
            .check(&wanted, r.vars)
            .map_err(|e| format!("{name}: refusing to write invalid content: {e}"))?;
        let version = r
            .vars
            .get("k3s_version")
            .and_then(serde_json::Value::as_str)
            .and_then(K3sVersion::parse);
        Ok(Box::new(Desired {
            wanted,
            unit: super::unit_task::unit_name(&r.text(&self.unit)?)?,
            config: self.config(r)?,
            dropin: self.dropin(r)?,
            version,
        }))
    }

    fn clone_box(&self) -> Box<dyn Extension> {
        Box::new(self.clone())
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
                "k3s {v} reads no config file (k3s reads /etc/rancher/k3s/config.yaml from v1.19.1 on): upgrade k3s before hardening it; nothing was written"
            )
            .into()),
            Some(v) if v < cfg::DROPINS_SINCE => Ok(Mode::Merge),
            _ => Ok(Mode::DropIn),
        }
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
                let config = &self.config;
                if state.stat.contains_key(config) && !state.content.contains_key(config) {
                    return Err(format!(
                        "{config} could not be read whole (a link, or over 256 KiB); khard merges only into a file it can read, so nothing was written"
                    )
                    .into());
                }
                let existing = cfg::file_text(state, config).unwrap_or_default();
                let merged = cfg::merge_into(&existing, &self.wanted)
                    .map_err(|e| format!("{config}: {e}"))?;
                Ok((config.clone(), merged, Mode::Merge))
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
        // v1.21.0 reads drop-ins but takes no `key+`: khard merges into the
        // config file there, and the drop-ins still count.
        let dropins = matches!(mode, Mode::DropIn)
            || self.version.is_none_or(|v| v >= cfg::DROPINS_READ_SINCE);
        Ok(effective(
            state,
            &self.unit,
            &self.config,
            Some((target, content)),
            dropins,
        )?)
    }
}

impl ExtAction for Desired {
    fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        let (target, content, mode) = self.target(state)?;
        let effective = self.effective_with(state, &target, &content, &mode)?;
        let mut conflicts = cfg::conflicts(&effective, &self.wanted, &target);
        // k3s >= 1.32: the kubelet also reads its config drop-ins, where a
        // file of the operator's can undo k3s's secure defaults.
        if self
            .version
            .is_none_or(super::kubelet_config::reads_dropins)
        {
            let dropins = super::kubelet_config::dropins(state);
            match super::kubelet_config::weakened(&dropins) {
                Ok(found) => conflicts.extend(found),
                Err(why) => conflicts.push(format!(
                    "a kubelet config drop-in cannot be read ({why}), and the kubelet would not start with it"
                )),
            }
        }
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
        super::validate::mask_k3s_diff(&mut change);
        Ok(change)
    }

    /// The cross-server check compares what k3s will run with, all files counted.
    fn shared(&self, state: &RemoteState) -> Option<Shared> {
        self.effective(state)
            .ok()
            .map(|e| std::sync::Arc::new(e) as Shared)
    }

    fn clone_box(&self) -> Box<dyn ExtAction> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// K5: v1.21.0 reads config.yaml.d (without `key+`): khard merges into
    /// config.yaml there, and a drop-in that weakens a flag still counts;
    /// v1.20 reads no drop-in at all.
    #[test]
    fn v1_21_0_merges_and_still_reads_dropins() {
        let mut state = RemoteState::default();
        state.content.insert(
            format!("{CONFIG}.d/50-ops.yaml"),
            b"protect-kernel-defaults: false\n".to_vec(),
        );
        let desired = |v: &str| Desired {
            wanted: "protect-kernel-defaults: true\n".into(),
            unit: "k3s".into(),
            config: CONFIG.into(),
            dropin: format!("{CONFIG}.d/99-khard-cis.yaml"),
            version: K3sVersion::parse(v),
        };
        let err = desired("v1.21.0+k3s1")
            .diff(&state)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("50-ops.yaml sets protect-kernel-defaults: false"),
            "{err}"
        );
        let change = desired("v1.21.0+k3s1");
        let (target, _, _) = change.target(&state).unwrap();
        assert_eq!(target, CONFIG, "merged into config.yaml on v1.21.0");
        let older = desired("v1.20.15+k3s1").diff(&state).unwrap();
        assert!(older.is_some(), "v1.20 reads no drop-in: nothing conflicts");
    }
}
