//! `k3s_unit`: a read-only check that the k3s service's command line does
//! not defeat config.yaml. k3s lets a flag repeated on its command line
//! replace the whole list from the config file, so a `--kube-apiserver-arg`
//! in the unit's ExecStart (or its environment file) silently discards the
//! hardening. The check fails, naming the flags and the fix; it changes nothing.

use serde::Deserialize;

use super::{Change, Render};
use crate::engine::probe::{Probe, RemoteState};
use crate::lang::template::Text;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// The systemd unit: `k3s` or `k3s-agent`.
    #[serde(deserialize_with = "super::text")]
    pub unit: Text,
}

#[derive(Debug, Clone)]
pub struct Desired {
    pub unit: String,
}

/// Repeatable flags whose command-line use replaces the config file's list,
/// and scalar flags whose command-line value would undo a hardening value.
const LIST_FLAGS: &[&str] = &[
    "kube-apiserver-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "kubelet-arg",
    "kube-proxy-arg",
    "etcd-arg",
    "kube-cloud-controller-manager-arg",
];
const UNDOING_FLAGS: &[&str] = &["protect-kernel-defaults=false", "secrets-encryption=false"];

impl Args {
    pub fn texts<'a>(&'a mut self, out: &mut Vec<&'a mut Text>) {
        out.push(&mut self.unit);
    }

    pub fn render(&self, r: &Render) -> Result<Desired, String> {
        let unit = r.text(&self.unit)?;
        if unit.is_empty()
            || !unit
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!("`{unit}` is not a unit name"));
        }
        Ok(Desired { unit })
    }
}

impl Desired {
    fn files(&self) -> Vec<String> {
        let u = &self.unit;
        vec![
            format!("/etc/systemd/system/{u}.service"),
            format!("/etc/systemd/system/{u}.service.env"),
            format!("/etc/systemd/system/{u}.service.d/override.conf"),
            format!("/etc/default/{u}"),
            format!("/etc/sysconfig/{u}"),
        ]
    }

    pub fn probe(&self, p: &mut Probe) {
        p.content.extend(self.files());
    }

    pub fn diff(&self, state: &RemoteState) -> Result<Option<Change>, String> {
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
        Err(format!(
            "the {} service's command line overrides config.yaml, which discards the hardening: {}. \
             Move these settings into /etc/rancher/k3s/config.yaml (or the role's variables), remove them \
             from the unit or its environment file, then run `systemctl daemon-reload` and khard again",
            self.unit,
            found.join("; ")
        ))
    }
}

/// Flags in a unit file or environment file that override the config file.
pub fn overriding_flags(text: &str) -> Vec<String> {
    // Join systemd's backslash continuations so one ExecStart is one line.
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
    {
        for word in line.split_whitespace() {
            let word = word
                .trim_start_matches("ExecStart=")
                .trim_matches(['\'', '"']);
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            let name = flag.split('=').next().unwrap_or(flag);
            if LIST_FLAGS.contains(&name) || UNDOING_FLAGS.contains(&flag) {
                out.push(format!("--{flag}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_flags_that_replace_config_lists() {
        let unit = "[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kube-apiserver-arg=audit-log-path=/x' \\\n    '--node-ip=10.0.0.1' \\\n    --protect-kernel-defaults=false\n";
        assert_eq!(
            overriding_flags(unit),
            [
                "--kube-apiserver-arg=audit-log-path=/x",
                "--protect-kernel-defaults=false"
            ]
        );
        assert!(
            overriding_flags("ExecStart=/usr/local/bin/k3s server --node-ip 10.0.0.1\n").is_empty()
        );
        assert_eq!(
            overriding_flags("K3S_ARGS=\"--kubelet-arg=max-pods=50\"\n").len(),
            0,
            "only flags as words"
        );
        assert_eq!(
            overriding_flags("EXTRA=--kubelet-arg=max-pods=50\n").len(),
            0
        );
        assert_eq!(overriding_flags("# --kubelet-arg=x\n").len(), 0);
    }
}
