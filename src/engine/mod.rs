//! The executor: hosts in parallel (up to --forks), and per host a fixed
//! number of round trips whatever the number of tasks: connect, one probe,
//! one apply with every change in order, one exec per handler flush.

mod diff;
mod handlers;
pub mod probe;
pub mod script;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Map, Value};
use tokio::sync::{OnceCell, Semaphore};

use crate::input::playbook::{Play, Playbook, Task};
use crate::modules::{Change, Module, Render};
use crate::plan::{HostPlan, PlayPlan, Reach};
use crate::report::{Report, Status};
use crate::settings::Settings;
use crate::transport::Connection;
use crate::transport::local::Local;
use crate::transport::ssh::SshContext;
use diff::{
    Known, check_critical_flags, diff_task, host_vars_with_facts, when_known_false,
    with_some_version,
};
use handlers::Flush;
use probe::{Probe, RemoteState};
use script::{ApplyScript, parse_apply};

/// What we keep about a host across plays.
#[derive(Default)]
struct HostState {
    conn: OnceCell<Result<Arc<Connection>, String>>,
    /// Unreachable or failed: no further play runs on it.
    dead: std::sync::atomic::AtomicBool,
}

pub struct Runner {
    pub settings: Settings,
    pub playbook: Arc<Playbook>,
    pub report: Arc<Report>,
    ssh: Arc<SshContext>,
    marker: String,
    hosts: Mutex<HashMap<String, Arc<HostState>>>,
    forks: Arc<Semaphore>,
    /// Set by Ctrl-C: no new work starts; what runs finishes (writes stay atomic).
    pub interrupted: Arc<std::sync::atomic::AtomicBool>,
}

/// The outcome of one task on one host, before it is reported.
struct Step {
    task: usize,
    status: Status,
    change: Option<Change>,
    message: Option<String>,
    /// Run-once tasks are decided across hosts once every host was probed.
    run_once: bool,
    /// The k3s config this task writes, for the cross-server consistency check.
    k3s_config: Option<String>,
}

/// One host's part of a play segment after the local diff.
struct HostDiff {
    plan: HostPlan,
    vars: Map<String, Value>,
    steps: Vec<Step>,
    elapsed: Duration,
    /// The probe this diff used, reusable for later segments if nothing changes in between.
    probed: Option<(Probe, RemoteState)>,
}

/// What applying one host's segment left behind.
struct Applied {
    host: String,
    failed: bool,
    /// Handlers notified, by index.
    notified: Vec<usize>,
    /// The probe, still valid for later tasks when nothing was changed.
    still_valid: Option<(Probe, RemoteState)>,
}

impl Runner {
    pub fn new(settings: Settings, playbook: Playbook, report: Report) -> Result<Runner> {
        let ssh = SshContext::new(
            settings.known_hosts.clone(),
            settings.accept_new_host_keys,
            settings.connect_timeout,
        )?;
        let forks = Arc::new(Semaphore::new(settings.forks));
        Ok(Runner {
            playbook: Arc::new(playbook),
            report: Arc::new(report),
            ssh: Arc::new(ssh),
            marker: crate::engine::script::new_marker(),
            hosts: Mutex::new(HashMap::new()),
            forks,
            interrupted: Arc::default(),
            settings,
        })
    }

    fn state(&self, host: &str) -> Arc<HostState> {
        self.hosts
            .lock()
            .expect("hosts")
            .entry(host.to_owned())
            .or_default()
            .clone()
    }

    /// Runs every play; returns SSH channels opened per host.
    pub async fn run(&self, plans: &[PlayPlan]) -> BTreeMap<String, usize> {
        let mut hosts = std::collections::BTreeSet::new();
        for h in plans.iter().flat_map(|p| &p.hosts) {
            self.report.host(&h.name);
            hosts.insert(h.name.clone());
        }
        self.report.start(hosts.len());
        if !self.sudo_password_works(plans).await {
            return self.close_all().await;
        }
        for plan in plans {
            if self.stopped() {
                break;
            }
            self.play(plan).await;
        }
        self.close_all().await
    }

    fn stopped(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// With -K, the password is tried on one host before any other host is
    /// contacted: a wrong password then costs one failed sudo, not one per host.
    async fn sudo_password_works(&self, plans: &[PlayPlan]) -> bool {
        if self.settings.become_password.is_none() {
            return true;
        }
        let Some((plan, h)) = plans.iter().find_map(|p| p.hosts.first().map(|h| (p, h))) else {
            return true;
        };
        let play = &self.playbook.plays[plan.index].name;
        let Ok(conn) = self.connect(h).await else {
            return true;
        }; // reported as unreachable by the play
        match conn
            .run(b"true\n", &h.r#become, self.settings.connect_timeout * 3)
            .await
        {
            Ok(out) if out.status == Some(0) => true,
            Ok(out) => {
                let msg = format!(
                    "sudo check failed ({}); no other host was tried",
                    out.stderr_text()
                );
                self.report
                    .host_event(&h.name, play, "become", Status::Failed, &msg);
                false
            }
            Err(e) => {
                let msg = format!("{e:#}; no other host was tried");
                self.report
                    .host_event(&h.name, play, "become", Status::Failed, &msg);
                false
            }
        }
    }

    /// Closes every connection; returns the SSH channels opened per host.
    async fn close_all(&self) -> BTreeMap<String, usize> {
        let mut channels = BTreeMap::new();
        let states: Vec<(String, Arc<HostState>)> = self
            .hosts
            .lock()
            .expect("hosts")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (name, st) in states {
            if let Some(Ok(c)) = st.conn.get() {
                channels.insert(name, c.channels());
                c.close().await;
            }
        }
        channels
    }

    async fn connect(&self, h: &HostPlan) -> Result<Arc<Connection>, String> {
        let st = self.state(&h.name);
        st.conn
            .get_or_init(|| async {
                let _permit = self.forks.acquire().await.expect("semaphore");
                self.report.phase(&h.name, "connecting");
                match &h.reach {
                    Reach::Local => Ok(Arc::new(Connection::Local(Local::new()))),
                    Reach::Ssh(t) => self
                        .ssh
                        .connect(t)
                        .await
                        .map(|s| Arc::new(Connection::Ssh(s)))
                        .map_err(|e| e.to_string()),
                }
            })
            .await
            .clone()
    }

    async fn play(&self, plan: &PlayPlan) {
        let play = &self.playbook.plays[plan.index];
        self.report.play(&play.name);
        let mut alive: Vec<HostPlan> = plan
            .hosts
            .iter()
            .filter(|h| !self.is_dead(&h.name))
            .cloned()
            .collect();
        // Connect to every host first; an unreachable host drops out of the play.
        let results = join_all(
            alive
                .iter()
                .map(|h| async move { (h.name.clone(), self.connect(h).await) }),
        )
        .await;
        for (name, r) in results {
            if let Err(msg) = r {
                self.report.unreachable(&name, &play.name, &msg);
                self.kill(&name);
            }
        }
        alive.retain(|h| !self.is_dead(&h.name));
        let total = alive.len();
        let mut flush = Flush::default();
        let segments = segments(play);
        for (k, segment) in segments.iter().enumerate() {
            if self.stopped() || self.abort(play, total, flush.failed.len()) {
                break;
            }
            let rest: Vec<usize> = segments[k + 1..].iter().flatten().copied().collect();
            let hosts: Vec<HostPlan> = alive
                .iter()
                .filter(|h| !flush.failed.contains(&h.name))
                .cloned()
                .collect();
            let probes = hosts.into_iter().map(|h| {
                let cached = flush.states.remove(&h.name);
                self.probe_and_diff(play, plan, h, segment.clone(), rest.clone(), cached)
            });
            let mut diffs = self.decide_run_once(join_all(probes).await);
            check_critical_flags(&mut diffs);
            for d in diffs.iter().flatten() {
                flush.vars.insert(d.plan.name.clone(), d.vars.clone());
            }
            // any_errors_fatal / max_fail_percentage: hosts that already fail
            // before writing stop everyone's writes, not only later tasks.
            let failing = diffs
                .iter()
                .filter(|d| {
                    d.as_ref()
                        .map_or(true, |d| d.steps.iter().any(|s| s.status == Status::Failed))
                })
                .count();
            let hold = self
                .abort(play, total, flush.failed.len() + failing)
                .then(|| format!("not applied: {failing} host(s) failed and the play does not tolerate it (any_errors_fatal / max_fail_percentage)"));
            for done in join_all(
                diffs
                    .into_iter()
                    .map(|d| self.apply(play, d, hold.as_deref())),
            )
            .await
            {
                if done.failed {
                    flush.failed.insert(done.host.clone());
                }
                if let Some(state) = done.still_valid {
                    flush.states.insert(done.host.clone(), state);
                }
                flush
                    .notified
                    .entry(done.host)
                    .or_default()
                    .extend(done.notified);
            }
            if !self.abort(play, total, flush.failed.len()) {
                self.flush_handlers(play, plan, &alive, &mut flush, &rest)
                    .await;
            }
        }
        for name in flush.failed {
            self.kill(&name);
        }
        for h in &plan.hosts {
            self.report.phase(&h.name, "done");
        }
    }

    /// any_errors_fatal and max_fail_percentage, as in Ansible.
    fn abort(&self, play: &Play, total: usize, failed: usize) -> bool {
        if failed == 0 || total == 0 {
            return false;
        }
        if play.any_errors_fatal {
            return true;
        }
        play.max_fail_percentage
            .is_some_and(|pct| (failed as f64) * 100.0 / (total as f64) > pct)
    }

    fn is_dead(&self, host: &str) -> bool {
        self.state(host)
            .dead
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn kill(&self, host: &str) {
        self.state(host)
            .dead
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    async fn conn(&self, host: &str) -> Option<Arc<Connection>> {
        self.state(host)
            .conn
            .get()
            .and_then(|r| r.as_ref().ok().cloned())
    }

    /// One probe exec, then the local diff of every task of the segment.
    /// What the given tasks need to know about a host, rendered with what is
    /// known before probing (a task whose content needs probed facts is
    /// rendered with sample facts: its paths do not depend on them).
    fn probe_for(&self, play: &Play, plan: &PlayPlan, h: &HostPlan, tasks: &[usize]) -> Probe {
        let mut probe = Probe::default();
        // Paths never depend on probed facts (diff_task checks it), so any
        // version's facts will do to render them.
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
    async fn probe_and_diff(
        &self,
        play: &Play,
        plan: &PlayPlan,
        h: HostPlan,
        segment: Vec<usize>,
        rest: Vec<usize>,
        cached: Option<(Probe, RemoteState)>,
    ) -> Result<HostDiff, (String, String)> {
        let started = Instant::now();
        let pb = &self.playbook;
        let mut tasks: Vec<usize> = segment.into_iter().filter(|i| plan.selected[*i]).collect();
        if self.stopped() {
            tasks.clear();
        }
        let needs = self.probe_for(play, plan, &h, &tasks);
        let (probe, state) = match cached.filter(|(p, _)| p.covers(&needs)) {
            Some(valid) => valid,
            None => {
                let mut probe = needs;
                let later = self.probe_for(play, plan, &h, &rest);
                probe.merge(later);
                let conn = self
                    .conn(&h.name)
                    .await
                    .ok_or_else(|| (h.name.clone(), "not connected".to_owned()))?;
                let _permit = self.forks.acquire().await.expect("semaphore");
                self.report.phase(&h.name, "probing");
                let out = conn
                    .run(
                        &probe.script(&self.marker),
                        &h.r#become,
                        self.settings.timeout,
                    )
                    .await
                    .map_err(|e| (h.name.clone(), format!("probe: {e:#}")))?;
                if out.truncated {
                    return Err((h.name.clone(), "probe output exceeded the limit".into()));
                }
                let state =
                    probe::parse(&self.marker, &out.stdout_text(), &probe).ok_or_else(|| {
                        let err = out.stderr_text();
                        let err = if err.is_empty() {
                            "no output".to_owned()
                        } else {
                            err
                        };
                        (
                            h.name.clone(),
                            format!("probe failed (exit {:?}): {err}", out.status),
                        )
                    })?;
                (probe, state)
            }
        };
        let vars = host_vars_with_facts(&h.vars, &state);
        if let Some(b) = vars.get("cis_benchmark").and_then(Value::as_str) {
            self.report.benchmark(&h.name, b);
        }
        let mut steps = Vec::new();
        let ctx = crate::lang::template::Templates::context(&vars);
        let known = Known {
            vars: &vars,
            ctx: &ctx,
            state: &state,
            probed: &probe,
        };
        for &i in &tasks {
            let step = diff_task(pb, &play.tasks[i], i, &known, self.report.redactor());
            let failed = step.status == Status::Failed;
            steps.push(step);
            if failed {
                break;
            }
        }
        Ok(HostDiff {
            plan: h,
            vars,
            steps,
            elapsed: started.elapsed(),
            probed: Some((probe, state)),
        })
    }

    /// A run-once task runs on the first host (in play order) where its `when` holds.
    fn decide_run_once(
        &self,
        diffs: Vec<Result<HostDiff, (String, String)>>,
    ) -> Vec<Result<HostDiff, (String, String)>> {
        let mut chosen: HashMap<usize, String> = HashMap::new();
        let mut diffs = diffs;
        for d in diffs.iter_mut().flatten() {
            for step in d.steps.iter_mut().filter(|s| s.run_once) {
                if step.status == Status::Skipped {
                    continue;
                }
                match chosen.get(&step.task) {
                    None => {
                        chosen.insert(step.task, d.plan.name.clone());
                    }
                    Some(on) => {
                        step.status = Status::Skipped;
                        step.change = None;
                        step.message = Some(format!("run once, on {on}"));
                    }
                }
            }
        }
        diffs
    }

    /// Applies the changes of one host in one exec and reports every task.
    /// Returns the host, whether it failed, and the handlers it notified.
    async fn apply(
        &self,
        play: &Play,
        d: Result<HostDiff, (String, String)>,
        hold: Option<&str>,
    ) -> Applied {
        let d = match d {
            Ok(d) => d,
            Err((host, msg)) => {
                self.report.unreachable(&host, &play.name, &msg);
                self.kill(&host);
                return Applied {
                    host,
                    failed: true,
                    notified: Vec::new(),
                    still_valid: None,
                };
            }
        };
        let mut d = d;
        // A host stops at its first failed task (a cross-host check may have failed one late).
        if let Some(i) = d.steps.iter().position(|s| s.status == Status::Failed) {
            d.steps.truncate(i + 1);
        }
        let name = d.plan.name.clone();
        if let Some(why) = hold {
            // Nothing is written anywhere: pending changes are reported as held back.
            for s in d.steps.iter_mut().filter(|s| s.status == Status::Changed) {
                s.status = Status::Skipped;
                s.message = Some(why.to_owned());
            }
        }
        let pending: Vec<&Step> = d
            .steps
            .iter()
            .filter(|s| s.change.is_some() && s.status == Status::Changed)
            .collect();
        let mut results: HashMap<usize, (bool, String)> = HashMap::new();
        // Why the apply stopped before reporting every task: (status of the task cut short, why).
        let mut lost: Option<(Status, String)> = None;
        let mut apply_time = Duration::ZERO;
        if !self.settings.check && !pending.is_empty() && !self.stopped() {
            let mut script = ApplyScript::new(&self.marker);
            for s in &pending {
                let timeout = play.tasks[s.task].timeout;
                script.task_with_timeout(
                    s.task,
                    &s.change.as_ref().expect("pending").script,
                    timeout,
                );
            }
            let started = Instant::now();
            let conn = self.conn(&name).await;
            let run = match conn {
                Some(c) => {
                    let _permit = self.forks.acquire().await.expect("semaphore");
                    self.report
                        .phase(&name, &format!("applying {} change(s)", pending.len()));
                    c.run(&script.finish(), &d.plan.r#become, self.settings.timeout)
                        .await
                }
                None => Err(anyhow::anyhow!("not connected")),
            };
            apply_time = started.elapsed();
            match run {
                Ok(out) => {
                    let (runs, finished) = parse_apply(&self.marker, &out.stdout_text());
                    for r in runs {
                        results.insert(r.index, (r.ok, r.output));
                    }
                    if !finished && results.values().all(|(ok, _)| *ok) {
                        let why = format!(
                            "apply stopped early (exit {:?}): {}",
                            out.status,
                            out.stderr_text()
                        );
                        lost = Some((Status::Failed, why));
                    }
                }
                // The exec itself failed: the connection is gone, the host unreachable.
                Err(e) => lost = Some((Status::Unreachable, format!("apply: {e:#}"))),
            }
        }
        let mut failed = false;
        let mut notify = Vec::new();
        for step in &d.steps {
            let task = &play.tasks[step.task];
            let (status, message, elapsed) = match (step.status, results.get(&step.task)) {
                (Status::Changed, Some((true, _))) => (Status::Changed, None, apply_time),
                (Status::Changed, Some((false, output))) => {
                    (Status::Failed, Some(output.trim().to_owned()), apply_time)
                }
                (Status::Changed, None) if !self.settings.check => {
                    // Not run: an earlier task failed, or the connection was lost.
                    if let Some((status, msg)) = lost.take() {
                        self.report.task(
                            &name,
                            &play.name,
                            task,
                            false,
                            status,
                            step.change.as_ref(),
                            Some(msg),
                            apply_time,
                        );
                        if status == Status::Unreachable {
                            self.kill(&name);
                        }
                        failed = true;
                    }
                    continue;
                }
                (Status::Changed, None) if !step.change.as_ref().is_some_and(|c| c.certain) => {
                    (Status::Unknown, None, d.elapsed)
                }
                (s, _) => (s, step.message.clone(), d.elapsed),
            };
            if matches!(status, Status::Changed | Status::Unknown) {
                notify.extend(handler_indices(play, task));
            }
            failed |= status == Status::Failed;
            let output = results.get(&step.task).map(|(_, o)| o.as_str());
            let change = step.change.as_ref();
            self.report.task_output(
                &name, &play.name, task, false, status, change, message, output, elapsed,
            );
        }
        if let Some((_, msg)) = lost {
            self.report.unreachable(&name, &play.name, &msg);
            self.kill(&name);
            failed = true;
        }
        // Nothing changed on the host: its probe still describes it for later segments.
        let still_valid = (pending.is_empty() || self.settings.check)
            .then_some(d.probed)
            .flatten();
        Applied {
            host: name,
            failed,
            notified: notify,
            still_valid,
        }
    }
}

/// Tasks of a play split at `meta: flush_handlers` (the meta tasks themselves dropped).
fn segments(play: &Play) -> Vec<Vec<usize>> {
    let mut out = vec![Vec::new()];
    for (i, t) in play.tasks.iter().enumerate() {
        if matches!(t.module, Module::FlushHandlers) {
            out.push(Vec::new());
        } else {
            out.last_mut().expect("non-empty").push(i);
        }
    }
    out.retain(|s| !s.is_empty());
    if out.is_empty() {
        out.push(Vec::new());
    }
    out
}

fn handler_indices(play: &Play, task: &Task) -> Vec<usize> {
    task.notify
        .iter()
        .filter_map(|n| play.handlers.iter().position(|h| &h.name == n))
        .collect()
}

/// Runs futures concurrently on this task and collects their results in order.
/// (The SSH sessions run in tasks of their own, so crypto still uses every core.)
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}
