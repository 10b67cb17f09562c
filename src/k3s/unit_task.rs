//! `k3s_unit`: a read-only check that the k3s service starts k3s the way
//! khard's configuration assumes (docs/research/k3s-config-semantics.md,
//! K1, K9–K12, K17–K19): systemd's unit and every drop-in could be read,
//! k3s reads the config file khard writes beside (not another one named by
//! K3S_CONFIG_FILE or --config, and not none), and no bool flag on the
//! command line turns a hardening setting off (`--protect-kernel-defaults=0`
//! as Go's ParseBool reads it; the last occurrence wins). A list flag there
//! is fine: k3s appends its items after the config file's. The check fails,
//! naming the file and the fix; it changes nothing.

use serde::Deserialize;

use crate::facts::{Probe, RemoteState};
use crate::k3s::launch::Launch;
use crate::lang::template::Text;
use crate::modules::error::TaskError;
use crate::modules::{Change, ExtAction, Extension, Render};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The systemd unit: `k3s` or `k3s-agent`.
    #[serde(deserialize_with = "crate::modules::text")]
    pub unit: Text,
    /// The config file khard reads and writes beside (`k3s_config_file`).
    #[serde(default, deserialize_with = "crate::modules::opt_text")]
    pub config: Option<Text>,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub unit: String,
    pub config: String,
}

/// Other names the same k3s service goes by: k3s-ansible and older install
/// scripts name the agent's unit `k3s-node`.
fn other_names(unit: &str) -> &'static [&'static str] {
    match unit {
        "k3s-agent" => &["k3s-node"],
        "k3s-node" => &["k3s-agent"],
        _ => &[],
    }
}

/// Bool flags whose `false` on the command line undoes the hardening.
const HARDENING_BOOLS: &[&str] = &["protect-kernel-defaults", "secrets-encryption"];

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
        let config = match r.opt(&self.config)?.filter(|c| !c.is_empty()) {
            Some(c) => crate::modules::check_path(&c)?,
            None => crate::k3s::config::CONFIG.to_owned(),
        };
        Ok(Desired {
            unit: unit_name(&r.text(&self.unit)?)?,
            config,
        })
    }
}

impl Extension for Args {
    fn texts(&mut self) -> Vec<&mut Text> {
        let mut out = vec![&mut self.unit];
        out.extend(self.config.as_mut());
        out
    }

    /// The unit, its drop-ins and its environment files, whole (and
    /// whether the service goes by another name here).
    fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError> {
        let unit = self.desired(r)?.unit;
        crate::k3s::launch::probe(p, &unit);
        for other in other_names(&unit) {
            crate::k3s::launch::probe(p, other);
        }
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

impl ExtAction for Desired {
    fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        let launch = Launch::from_state(state, &self.unit);
        let unit = &self.unit;
        if launch.files.is_empty()
            && let Some(other) = other_names(unit)
                .iter()
                .find(|o| !Launch::from_state(state, o).files.is_empty())
        {
            return Err(TaskError::Refused(format!(
                "k3s runs here as {other}.service, not {unit}.service: set k3s_agent_unit: {other} for this host, so that khard reads that unit and restarts it"
            )));
        }
        if !launch.unread.is_empty() {
            return Err(TaskError::Refused(format!(
                "the {unit} service needs files khard could not read ({}), so how it starts k3s cannot be known",
                launch.unread.join(", ")
            )));
        }
        let set_in = launch.files.join(", ");
        // No unit (k3s not installed as one): nothing says where k3s reads,
        // and the configured file stands.
        if !launch.files.is_empty() {
            match launch.config_file.as_deref() {
                None => {
                    return Err(TaskError::Refused(format!(
                        "the {unit} service starts k3s with `--config=` ({set_in}): k3s reads no config file, so the hardening does not take effect; remove it, run `systemctl daemon-reload` and khard again"
                    )));
                }
                Some(f) if f != self.config => {
                    return Err(TaskError::Refused(format!(
                        "the {unit} service makes k3s read its configuration from {f} (K3S_CONFIG_FILE or --config, {set_in}), not {}: set k3s_config_file: {f} for this host, so that khard reads and writes where k3s does",
                        self.config
                    )));
                }
                Some(_) => {}
            }
        }
        // The last occurrence of each is the one k3s keeps.
        let found: Vec<String> = HARDENING_BOOLS
            .iter()
            .filter_map(|name| launch.flags.iter().rev().find(|(n, _, _)| n == name))
            .filter(|(_, value, _)| value != "true")
            .map(|(name, value, from)| match value.as_str() {
                "false" => format!("{from}: --{name}=false"),
                other => format!("{from}: --{name}={other} (not a Go boolean: k3s exits on it)"),
            })
            .collect();
        if found.is_empty() {
            return Ok(None);
        }
        Err(TaskError::Refused(format!(
            "the {unit} service's command line turns hardening off, and on k3s's command line the last value wins over config.yaml: {}. \
             Remove these flags from the unit or its drop-in, then run `systemctl daemon-reload` and khard again",
            found.join("; ")
        )))
    }

    fn clone_box(&self) -> Box<dyn ExtAction> {
        Box::new(self.clone())
    }
}
