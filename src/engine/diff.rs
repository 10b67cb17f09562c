//! The local, pure part of a run: from a host's variables and probed state
//! to what each task would change, plus the checks across hosts.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use super::error::{HostError, HostFailure};
use super::probe::Probed;
use super::{HostDiff, Runner, Step};
use crate::domain::Domain;
use crate::facts::Probe;
use crate::input::playbook::{Play, Playbook, Task};
use crate::lang::expr::truthy;
use crate::layered_vars::LayeredVars;
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

/// What is known about a host after its probe.
pub(super) struct Known<'a> {
    pub domain: &'a dyn Domain,
    pub vars: &'a Map<String, Value>,
    /// `vars` as a template context, built once per host.
    pub ctx: &'a handlebars::Context,
    pub state: &'a crate::facts::RemoteState,
    /// What the probe asked, to check that a task's needs were covered.
    pub probed: &'a Probe,
    /// `--check`: a task that needs what the node could not tell is unknown, not failed.
    pub check: bool,
}

pub(super) fn diff_task(
    pb: &Playbook,
    task: &Task,
    index: usize,
    known: &Known,
    redactor: &crate::secrets::Redactor,
) -> Step {
    let Known {
        domain,
        vars,
        ctx,
        state,
        probed,
        check,
    } = *known;
    let explain = |e: TaskError| domain.explain(vars, &e).unwrap_or_else(|| e.to_string());
    let step = |status, change, message: Option<String>| Step {
        task: index,
        status,
        change,
        message,
        run_once: task.run_once,
        shared: None,
    };
    for w in &task.when {
        match w.eval(vars) {
            Ok(v) if !truthy(&v) => return step(Status::Skipped, None, None),
            Ok(_) => {}
            Err(e) => {
                let e = TaskError::Lang(e.at("when"));
                return step(Status::Failed, None, Some(explain(e)));
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
        Err(e) => {
            let status = if check && domain.unknown_on_node(vars, &e) {
                Status::Unknown
            } else {
                Status::Failed
            };
            return step(status, None, Some(explain(e)));
        }
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
        let facts = domain.probed_facts().join(", ");
        return step(
            Status::Failed,
            None,
            Some(format!(
                "a path or guard of this task depends on facts probed from the host ({facts}); paths and guards may use only inventory and play variables"
            )),
        );
    }
    let mut done = match action.diff(state) {
        Ok(None) => step(Status::Ok, None, None),
        Ok(Some(change)) => step(Status::Changed, Some(Box::new(change)), None),
        Err(e) => step(Status::Failed, None, Some(e.to_string())),
    };
    // What the domain's check across hosts compares (e.g. the configuration a server will run with).
    if done.status != Status::Failed {
        done.shared = action.shared(state);
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
        self.domain.probe_facts(&mut probe);
        super::pending::probe(play, &mut probe);
        let planned = h.vars.merged();
        let vars = self.domain.assumed_facts(&planned);
        let ctx = crate::lang::template::Templates::context(&vars);
        for &i in tasks.iter().filter(|i| plan.selected[**i]) {
            let task = &play.tasks[i];
            if matches!(task.module, Module::FlushHandlers) || when_known_false(task, &planned) {
                continue;
            }
            let r = Render {
                templates: &self.playbook.templates,
                vars: &vars,
                ctx: &ctx,
                files: &task.files,
            };
            // A task whose paths cannot be rendered fails in its diff, with the reason.
            let _ = task.module.probe(&r, &mut probe, self.options.diff);
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
        cached: Option<(Probed, Option<Arc<LayeredVars>>)>,
    ) -> Result<HostDiff, HostFailure> {
        let started = Instant::now();
        let tasks: Vec<usize> = segment.into_iter().filter(|i| plan.selected[*i]).collect();
        let needs = self.probe_for(play, plan, &h, &tasks);
        let (cached, cached_vars) = match cached {
            Some((p, vars)) => (Some(p), vars),
            None => (None, None),
        };
        let reused = cached.and_then(|p| p.reusable_for(&needs));
        let fresh = reused.is_none();
        let probed = match reused {
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
        // The same plan and the same probe give the same facts: an earlier
        // segment's variables are shared, not rebuilt.
        let (vars, kept) = match cached_vars.filter(|_| !fresh) {
            Some(kept) => (kept.merged(), kept),
            None => {
                let vars = self
                    .domain
                    .with_facts(&h.vars.merged(), &probed.state)
                    .map_err(|why| HostFailure {
                        host: h.name.clone(),
                        error: HostError::Refused { why },
                    })?;
                // Layered on the play's shared map, not on this host's plan.
                let kept = Arc::new(LayeredVars::new(h.vars.base(), &vars));
                (vars, kept)
            }
        };
        if let Some(label) = self.domain.label(&vars) {
            self.report.benchmark(&h.name, &label);
        }
        let mut steps = Vec::new();
        let ctx = crate::lang::template::Templates::context(&vars);
        let known = Known {
            domain: self.domain.as_ref(),
            vars: &vars,
            ctx: &ctx,
            state: &probed.state,
            probed: &probed.probe,
            check: self.options.check,
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
        // Handlers owed from an earlier run, read once per play (a probe
        // kept from an earlier segment of this run would count them twice).
        let pending = if fresh {
            super::pending::pending(play, &probed.state)
        } else {
            Vec::new()
        };
        // Nothing to write and nothing owed (or check mode, which writes
        // nothing): the connection is not needed again in this play, whose
        // later segments reuse this probe.
        let idle =
            self.options.check || (pending.is_empty() && !steps.iter().any(|s| s.change.is_some()));
        if idle && self.last_play_of(&h.name, plan.index) {
            self.release(&h.name).await;
        }
        Ok(HostDiff {
            plan: h,
            pending,
            vars: kept,
            steps,
            elapsed: started.elapsed(),
            probed,
        })
    }

    /// Runs one probe exec on a host.
    pub(super) async fn probe_host(&self, h: &HostPlan, probe: Probe) -> Result<Probed, HostError> {
        let _permit = self.forks.acquire().await.expect("semaphore");
        let conn = self.connect(h).await.map_err(HostError::Connect)?;
        self.report.phase(&h.name, "probing");
        let out = conn
            .run(
                &probe.script(&self.marker),
                &h.r#become,
                self.options.timeout,
            )
            .await
            .map_err(
                |e| match e.downcast_ref::<crate::transport::sudo::BecomeFailed>() {
                    Some(refused) => HostError::BecomeRefused {
                        stderr: refused.0.clone(),
                    },
                    None => HostError::Exec {
                        what: "probe",
                        cause: format!("{e:#}"),
                    },
                },
            )?;
        Probed::from_output(probe, &self.marker, &out)
    }
}
