//! The local, pure part of a run: from a host's variables and probed state
//! to what each task would change, plus the checks across hosts.

use std::time::Instant;

use serde_json::{Map, Value};

use super::error::{HostError, HostFailure};
use super::probe::Probed;
use super::{HostDiff, Runner, Step};
use crate::engine::probe::{Probe, RemoteState};
use crate::input::playbook::{Play, Playbook, Task};
use crate::k3s::facts;
use crate::lang::expr::truthy;
use crate::modules::error::TaskError;
use crate::modules::{Action, Module, Render};
use crate::plan::{HostPlan, PlayPlan};
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
/// and no `k3s_version` variable): the task uses one of the facts probed
/// from `k3s --version`.
fn explain(vars: &Map<String, Value>, error: TaskError) -> String {
    let missing_fact = error
        .undefined_var()
        .is_some_and(|v| facts::PROBED.contains(&v));
    if vars.contains_key("k3s_era") || !missing_fact {
        return error.to_string();
    }
    format!(
        "the k3s version of this host is unknown (`k3s --version` did not answer: k3s is not installed?) and this task depends on it; set the k3s_version variable for this host, e.g. k3s_version: v1.30.6+k3s1 ({error})"
    )
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
                let e = TaskError::Lang(e.at("when"));
                return step(Status::Failed, None, Some(explain(vars, e)));
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
        Err(e) => return step(Status::Failed, None, Some(explain(vars, e))),
    };
    // A file that holds a secret is readable by its owner only, whatever the task says.
    if let Action::File(f) = &mut action
        && redactor.contains_secret(&String::from_utf8_lossy(&f.content))
    {
        f.perms.mode &= 0o700;
    }
    let mut needs = Probe::default();
    let covered = task.module.probe(&r, &mut needs, false).is_ok() && probed.covers(&needs);
    if !covered {
        return step(Status::Failed, None, Some("a path or guard of this task depends on facts probed from the host (k3s_version, k3s_era, ...); paths and guards may use only inventory and play variables".into()));
    }
    let mut done = match action.diff(state) {
        Ok(None) => step(Status::Ok, None, None),
        Ok(Some(change)) => step(Status::Changed, Some(change), None),
        Err(e) => step(Status::Failed, None, Some(e.to_string())),
    };
    if let Action::File(f) = &action
        && f.mask_k3s_secrets
    {
        done.k3s_config = Some(String::from_utf8_lossy(&f.content).into_owned());
    }
    // The cross-server check compares what k3s will run with, all files counted.
    if let Action::K3sConfig(c) = &action
        && let Ok(effective) = c.effective(state)
    {
        done.k3s_config = Some(crate::k3s::config::to_yaml(&effective));
    }
    done
}

impl Runner {
    /// What the given tasks need to know about a host, rendered with what is
    /// known before probing: paths and guards never depend on probed facts
    /// (diff_task checks it), so any version's facts will do to render them.
    pub(super) fn probe_for(
        &self,
        play: &Play,
        plan: &PlayPlan,
        h: &HostPlan,
        tasks: &[usize],
    ) -> Probe {
        let mut probe = Probe::default();
        let vars = with_some_version(&h.vars);
        let ctx = crate::lang::template::Templates::context(&vars);
        for &i in tasks.iter().filter(|i| plan.selected[**i]) {
            let task = &play.tasks[i];
            if matches!(task.module, Module::FlushHandlers) || when_known_false(task, &h.vars) {
                continue;
            }
            let r = Render {
                templates: &self.playbook.templates,
                vars: &vars,
                ctx: &ctx,
                files: &task.files,
            };
            // A task whose paths cannot be rendered fails in its diff, with the reason.
            let _ = task.module.probe(&r, &mut probe, self.settings.diff);
        }
        probe
    }

    /// The local diff of every task of a segment, from a probe still valid
    /// for it (`cached`), or from ONE probe exec that also covers the play's
    /// later tasks (`rest`), so that later segments need no probe of their own.
    pub(super) async fn diff_host(
        &self,
        play: &Play,
        plan: &PlayPlan,
        h: HostPlan,
        segment: Vec<usize>,
        rest: Vec<usize>,
        cached: Option<Probed>,
    ) -> Result<HostDiff, HostFailure> {
        let started = Instant::now();
        let tasks: Vec<usize> = segment.into_iter().filter(|i| plan.selected[*i]).collect();
        let needs = self.probe_for(play, plan, &h, &tasks);
        let probed = match cached.and_then(|p| p.reusable_for(&needs)) {
            Some(valid) => valid,
            None => {
                let mut probe = needs;
                probe.merge(self.probe_for(play, plan, &h, &rest));
                self.probe_host(&h, probe)
                    .await
                    .map_err(|error| HostFailure {
                        host: h.name.clone(),
                        error,
                    })?
            }
        };
        let vars = host_vars_with_facts(&h.vars, &probed.state);
        if let Some(b) = vars.get("cis_benchmark").and_then(Value::as_str) {
            self.report.benchmark(&h.name, b);
        }
        let mut steps = Vec::new();
        let ctx = crate::lang::template::Templates::context(&vars);
        let known = Known {
            vars: &vars,
            ctx: &ctx,
            state: &probed.state,
            probed: &probed.probe,
        };
        // Every selected task gets a step: those after a failure, or after
        // Ctrl-C, are reported as not run with the reason.
        let mut stopped_by = self.stopped().then_some("not run: interrupted");
        for &i in &tasks {
            let task = &play.tasks[i];
            if let Some(why) = stopped_by {
                steps.push(Step::not_run(i, task, why));
                continue;
            }
            let step = diff_task(&self.playbook, task, i, &known, self.report.redactor());
            if step.status == Status::Failed {
                stopped_by = Some("not run: an earlier task failed on this host");
            }
            steps.push(step);
        }
        Ok(HostDiff {
            plan: h,
            vars,
            steps,
            elapsed: started.elapsed(),
            probed,
        })
    }

    /// Runs one probe exec on a host.
    pub(super) async fn probe_host(&self, h: &HostPlan, probe: Probe) -> Result<Probed, HostError> {
        let conn = self.conn(&h.name).await.ok_or(HostError::NotConnected)?;
        let _permit = self.forks.acquire().await.expect("semaphore");
        self.report.phase(&h.name, "probing");
        let out = conn
            .run(
                &probe.script(&self.marker),
                &h.r#become,
                self.settings.timeout,
            )
            .await
            .map_err(|e| HostError::Exec {
                what: "probe",
                cause: format!("{e:#}"),
            })?;
        Probed::from_output(probe, &self.marker, &out)
    }
}
