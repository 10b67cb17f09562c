//! The local, pure part of a run: from a host's variables and probed state
//! to what each task would change, plus the checks across hosts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use super::{HostDiff, Step};
use crate::engine::probe::{Probe, RemoteState};
use crate::input::playbook::{Playbook, Task};
use crate::k3s::facts;
use crate::lang::expr::truthy;
use crate::modules::{Action, Render};
use crate::report::Status;

/// A `when:` that is already false before probing (e.g. a server-only task on an agent).
pub(super) fn when_known_false(task: &Task, vars: &Map<String, Value>) -> bool {
    task.when
        .iter()
        .any(|w| matches!(w.eval(vars), Ok(v) if !truthy(&v)))
}

/// The variables with k3s facts added, from the pinned version or, when the
/// version is known only after probing, from a sample version.
pub(super) fn with_some_version(vars: &Map<String, Value>) -> Map<String, Value> {
    let mut out = vars.clone();
    let version = vars
        .get("k3s_version")
        .and_then(Value::as_str)
        .unwrap_or(facts::SAMPLE_VERSIONS[facts::SAMPLE_VERSIONS.len() - 1]);
    if facts::add_version_facts(&mut out, version).is_err() {
        return vars.clone();
    }
    out
}

/// Static variables plus what the probe found (a `k3s_version` var wins over detection).
pub(super) fn host_vars_with_facts(
    vars: &Map<String, Value>,
    state: &RemoteState,
) -> Map<String, Value> {
    let mut out = vars.clone();
    let version = vars
        .get("k3s_version")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| state.facts.get("k3s_version").cloned());
    if let Some(v) = version {
        let _ = facts::add_version_facts(&mut out, &v);
    }
    out
}

/// Explains a failure caused by an unknown k3s version (k3s not installed
/// and no `k3s_version` variable): the task needs the version's facts.
fn explain(task: &Task, pb: &Playbook, vars: &Map<String, Value>, message: String) -> String {
    if vars.contains_key("k3s_era") {
        return message;
    }
    let mut with = vars.clone();
    let _ = facts::add_version_facts(
        &mut with,
        facts::SAMPLE_VERSIONS[facts::SAMPLE_VERSIONS.len() - 1],
    );
    let ctx = crate::lang::template::Templates::context(&with);
    let r = Render {
        templates: &pb.templates,
        vars: &with,
        ctx: &ctx,
        files: &task.files,
    };
    let when_ok = task.when.iter().all(|w| w.eval(&with).is_ok());
    if when_ok && task.module.render(&r).is_ok() {
        format!(
            "the k3s version of this host is unknown (`k3s --version` did not answer: k3s is not installed?) and this task depends on it; set the k3s_version variable for this host, e.g. k3s_version: v1.30.6+k3s1 ({message})"
        )
    } else {
        message
    }
}

/// What is known about a host after its probe.
pub(super) struct Known<'a> {
    pub vars: &'a Map<String, Value>,
    /// `vars` as a template context, built once per host.
    pub ctx: &'a handlebars::Context,
    pub state: &'a RemoteState,
    /// What the probe asked, to check that a task's needs were covered.
    pub probed: &'a Probe,
}

pub(super) fn diff_task(
    pb: &Playbook,
    task: &Task,
    index: usize,
    known: &Known,
    redactor: &crate::report::redact::Redactor,
) -> Step {
    let Known {
        vars,
        ctx,
        state,
        probed,
    } = *known;
    let step = |status, change, message: Option<String>| Step {
        task: index,
        status,
        change,
        message,
        run_once: task.run_once,
        k3s_config: None,
    };
    for w in &task.when {
        match w.eval(vars) {
            Ok(v) if !truthy(&v) => return step(Status::Skipped, None, None),
            Ok(_) => {}
            Err(e) => {
                return step(
                    Status::Failed,
                    None,
                    Some(explain(task, pb, vars, format!("when: {e}"))),
                );
            }
        }
    }
    let r = Render {
        templates: &pb.templates,
        vars,
        ctx,
        files: &task.files,
    };
    let mut action = match task.module.render(&r) {
        Ok(a) => a,
        Err(e) => return step(Status::Failed, None, Some(explain(task, pb, vars, e))),
    };
    // A file that holds a secret is readable by its owner only, whatever the task says.
    if let Action::File(f) = &mut action
        && redactor.contains_secret(&String::from_utf8_lossy(&f.content))
    {
        f.perms.mode &= 0o700;
    }
    let mut needs = Probe::default();
    action.probe(&mut needs, false);
    if !probed.covers(&needs) {
        return step(Status::Failed, None, Some("a path or guard of this task depends on facts probed from the host (k3s_version, k3s_era, ...); paths and guards may use only inventory and play variables".into()));
    }
    let mut done = match action.diff(state) {
        Ok(None) => step(Status::Ok, None, None),
        Ok(Some(change)) => step(Status::Changed, Some(change), None),
        Err(e) => step(Status::Failed, None, Some(e)),
    };
    if let Action::File(f) = &action
        && f.mask_k3s_secrets
    {
        done.k3s_config = Some(String::from_utf8_lossy(&f.content).into_owned());
    }
    done
}

/// Flags that must be identical on every server of a cluster, or k3s refuses
/// to start ("critical configuration value mismatch").
const CRITICAL_FLAGS: &[&str] = &[
    "secrets-encryption",
    "secrets-encryption-provider",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
    "cluster-domain",
    "disable-network-policy",
    "flannel-backend",
    "egress-selector-mode",
    "service-node-port-range",
];

/// The cluster a host belongs to: the `k3s_cluster_name` variable, so one
/// play may span several clusters; by default all its hosts form one.
fn cluster(d: &HostDiff) -> String {
    d.vars
        .get("k3s_cluster_name")
        .map(|v| {
            v.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string())
        })
        .unwrap_or_default()
}

/// The servers of each cluster must agree on critical flags. When their
/// configs disagree, every such server's config task fails before anything
/// is written, naming the flag and each server's value.
pub(super) fn check_critical_flags(diffs: &mut [Result<HostDiff, (String, String)>]) {
    let is_server = |d: &HostDiff| d.vars.get("k3s_role").and_then(Value::as_str) == Some("server");
    // cluster -> flag -> host -> value
    let mut values: BTreeMap<String, BTreeMap<&str, BTreeMap<String, String>>> = BTreeMap::new();
    for d in diffs.iter().flatten().filter(|d| is_server(d)) {
        for text in d.steps.iter().filter_map(|s| s.k3s_config.as_deref()) {
            let Ok(serde_yaml::Value::Mapping(map)) =
                serde_yaml::from_str::<serde_yaml::Value>(text)
            else {
                continue;
            };
            for flag in CRITICAL_FLAGS {
                let v = map.get(*flag).map(|v| {
                    serde_yaml::to_string(v)
                        .unwrap_or_default()
                        .trim()
                        .to_owned()
                });
                values
                    .entry(cluster(d))
                    .or_default()
                    .entry(flag)
                    .or_default()
                    .insert(d.plan.name.clone(), v.unwrap_or_else(|| "(unset)".into()));
            }
        }
    }
    let mut messages: BTreeMap<String, String> = BTreeMap::new();
    for (name, flags) in &values {
        let mismatches: Vec<String> = flags
            .iter()
            .filter(|(_, per_host)| per_host.values().collect::<BTreeSet<_>>().len() > 1)
            .map(|(flag, per_host)| {
                let list: Vec<String> = per_host.iter().map(|(h, v)| format!("{h}={v}")).collect();
                format!("{flag}: {}", list.join(", "))
            })
            .collect();
        if !mismatches.is_empty() {
            messages.insert(
                name.clone(),
                format!(
                    "the servers disagree on flags that must be identical on every server of a cluster (k3s refuses to start otherwise): {}",
                    mismatches.join("; ")
                ),
            );
        }
    }
    for d in diffs.iter_mut().flatten().filter(|d| is_server(d)) {
        let Some(message) = messages.get(&cluster(d)) else {
            continue;
        };
        for s in d.steps.iter_mut().filter(|s| s.k3s_config.is_some()) {
            s.status = Status::Failed;
            s.change = None;
            s.message = Some(message.clone());
        }
    }
}
