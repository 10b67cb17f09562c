//! The executor: hosts in parallel (up to --forks), and per host a fixed
//! number of round trips whatever the number of tasks: connect, one probe,
//! one apply with every change in order, one exec per handler flush.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{Map, Value};
use tokio::sync::{OnceCell, Semaphore};

use crate::expr::truthy;
use crate::facts;
use crate::modules::{Action, Change, Module, Render};
use crate::plan::{HostPlan, PlayPlan, Reach};
use crate::playbook::{Play, Playbook, Task};
use crate::probe::{self, Probe, RemoteState};
use crate::report::{Report, Status};
use crate::script::{ApplyScript, parse_apply};
use crate::settings::Settings;
use crate::transport::Connection;
use crate::transport::local::Local;
use crate::transport::ssh::SshContext;

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
}

/// The outcome of one task on one host, before it is reported.
struct Step {
    task: usize,
    status: Status,
    change: Option<Change>,
    message: Option<String>,
    /// Run-once tasks are decided across hosts once every host was probed.
    run_once: bool,
}

/// One host's part of a play segment after the local diff.
struct HostDiff {
    plan: HostPlan,
    vars: Map<String, Value>,
    steps: Vec<Step>,
    elapsed: Duration,
}

impl Runner {
    pub fn new(settings: Settings, playbook: Playbook, report: Report) -> Result<Runner> {
        let known = crate::known_hosts::KnownHosts::load(&settings.known_hosts).map_err(|e| {
            crate::error::InputError::new(format!("{}: {e}", settings.known_hosts.display()))
        })?;
        let ssh = SshContext::new(
            known,
            settings.accept_new_host_keys,
            settings.connect_timeout,
        );
        let forks = Arc::new(Semaphore::new(settings.forks));
        Ok(Runner {
            playbook: Arc::new(playbook),
            report: Arc::new(report),
            ssh: Arc::new(ssh),
            marker: crate::script::new_marker(),
            hosts: Mutex::new(HashMap::new()),
            forks,
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
        for plan in plans {
            for h in &plan.hosts {
                self.report.host(&h.name);
            }
        }
        for plan in plans {
            self.play(plan).await;
        }
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
        let mut notified: HashMap<String, BTreeSet<usize>> = HashMap::new();
        let mut failed: BTreeSet<String> = BTreeSet::new();
        for segment in segments(play) {
            if self.abort(play, total, failed.len()) {
                break;
            }
            let hosts: Vec<HostPlan> = alive
                .iter()
                .filter(|h| !failed.contains(&h.name))
                .cloned()
                .collect();
            let diffs = join_all(
                hosts
                    .into_iter()
                    .map(|h| self.probe_and_diff(play, plan, h, segment.clone())),
            )
            .await;
            let diffs = self.decide_run_once(diffs);
            let outcomes = join_all(diffs.into_iter().map(|d| self.apply(play, d))).await;
            for (host, host_failed, notes) in outcomes {
                if host_failed {
                    failed.insert(host.clone());
                }
                notified.entry(host).or_default().extend(notes);
            }
            if !self.abort(play, total, failed.len()) {
                self.flush_handlers(play, &alive, &mut notified, &failed)
                    .await;
            }
        }
        for name in failed {
            self.kill(&name);
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
    async fn probe_and_diff(
        &self,
        play: &Play,
        plan: &PlayPlan,
        h: HostPlan,
        segment: Vec<usize>,
    ) -> Result<HostDiff, (String, String)> {
        let started = Instant::now();
        let pb = &self.playbook;
        let tasks: Vec<usize> = segment.into_iter().filter(|i| plan.selected[*i]).collect();
        // What to ask: paths and guards rendered with what we know before probing.
        let mut probe = Probe::default();
        for &i in &tasks {
            let task = &play.tasks[i];
            if when_known_false(task, &h.vars) {
                continue;
            }
            let r = Render {
                templates: &pb.templates,
                vars: &h.vars,
                files: &task.files,
            };
            if let Ok(action) = task.module.render(&r) {
                action.probe(&mut probe, self.settings.diff);
            } else if let Some(action) = render_for_probe(task, &r) {
                action.probe(&mut probe, self.settings.diff);
            }
        }
        let conn = self
            .conn(&h.name)
            .await
            .ok_or_else(|| (h.name.clone(), "not connected".to_owned()))?;
        let state = {
            let _permit = self.forks.acquire().await.expect("semaphore");
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
            probe::parse(&self.marker, &out.stdout_text(), &probe).ok_or_else(|| {
                let err = out.stderr_text();
                (
                    h.name.clone(),
                    format!(
                        "probe failed (exit {:?}): {}",
                        out.status,
                        if err.is_empty() { "no output" } else { &err }
                    ),
                )
            })?
        };
        let vars = host_vars_with_facts(&h.vars, &state);
        let mut steps = Vec::new();
        for &i in &tasks {
            let task = &play.tasks[i];
            let step = diff_task(pb, task, &vars, &state, &probe, i);
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
    ) -> (String, bool, Vec<usize>) {
        let d = match d {
            Ok(d) => d,
            Err((host, msg)) => {
                self.report.unreachable(&host, &play.name, &msg);
                self.kill(&host);
                return (host, true, Vec::new());
            }
        };
        let name = d.plan.name.clone();
        let pending: Vec<&Step> = d
            .steps
            .iter()
            .filter(|s| s.change.is_some() && s.status == Status::Changed)
            .collect();
        let mut results: HashMap<usize, (bool, String)> = HashMap::new();
        let mut lost: Option<String> = None;
        let mut apply_time = Duration::ZERO;
        if !self.settings.check && !pending.is_empty() {
            let mut script = ApplyScript::new(&self.marker);
            for s in &pending {
                script.task(s.task, &s.change.as_ref().expect("pending").script);
            }
            let started = Instant::now();
            let conn = self.conn(&name).await;
            let run = match conn {
                Some(c) => {
                    let _permit = self.forks.acquire().await.expect("semaphore");
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
                        lost = Some(format!(
                            "apply stopped early (exit {:?}): {}",
                            out.status,
                            out.stderr_text()
                        ));
                    }
                }
                Err(e) => lost = Some(format!("apply: {e:#}")),
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
                    if let Some(msg) = lost.take() {
                        self.report.task(
                            &name,
                            &play.name,
                            task,
                            false,
                            Status::Failed,
                            step.change.as_ref(),
                            Some(msg),
                            apply_time,
                        );
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
            self.report.task(
                &name,
                &play.name,
                task,
                false,
                status,
                step.change.as_ref(),
                message,
                elapsed,
            );
        }
        if let Some(msg) = lost {
            self.report.unreachable(&name, &play.name, &msg);
            self.kill(&name);
            failed = true;
        }
        let _ = d.vars;
        (name, failed, notify)
    }

    /// Runs notified handlers once each, in definition order. Check mode
    /// reports the handlers that would run and runs none.
    async fn flush_handlers(
        &self,
        play: &Play,
        alive: &[HostPlan],
        notified: &mut HashMap<String, BTreeSet<usize>>,
        failed: &BTreeSet<String>,
    ) {
        for (hi, handler) in play.handlers.iter().enumerate() {
            let hosts: Vec<&HostPlan> = alive
                .iter()
                .filter(|h| notified.get(&h.name).is_some_and(|n| n.contains(&hi)))
                .filter(|h| self.settings.force_handlers || !failed.contains(&h.name))
                .filter(|h| !self.is_dead(&h.name))
                .collect();
            join_all(
                hosts
                    .into_iter()
                    .map(|h| self.run_handler(play, handler, h)),
            )
            .await;
        }
        notified.clear();
    }

    async fn run_handler(&self, play: &Play, handler: &Task, h: &HostPlan) {
        let started = Instant::now();
        let vars = h.vars.clone();
        let pb = &self.playbook;
        let fail = |msg: String| {
            self.report.task(
                &h.name,
                &play.name,
                handler,
                true,
                Status::Failed,
                None,
                Some(msg),
                started.elapsed(),
            )
        };
        let mut holds = true;
        for w in &handler.when {
            match w.eval(&vars) {
                Ok(v) => holds &= truthy(&v),
                Err(e) => return fail(e),
            }
        }
        if !holds {
            return self.report.task(
                &h.name,
                &play.name,
                handler,
                true,
                Status::Skipped,
                None,
                None,
                started.elapsed(),
            );
        }
        let r = Render {
            templates: &pb.templates,
            vars: &vars,
            files: &handler.files,
        };
        let action = match handler.module.render(&r) {
            Ok(a) => a,
            Err(e) => return fail(e),
        };
        let change = match action.diff(&RemoteState::default()) {
            Ok(Some(c)) => c,
            Ok(None) => {
                return self.report.task(
                    &h.name,
                    &play.name,
                    handler,
                    true,
                    Status::Ok,
                    None,
                    None,
                    started.elapsed(),
                );
            }
            Err(e) => return fail(e),
        };
        if self.settings.check {
            return self.report.task(
                &h.name,
                &play.name,
                handler,
                true,
                Status::Changed,
                Some(&change),
                None,
                started.elapsed(),
            );
        }
        let Some(conn) = self.conn(&h.name).await else {
            return fail("not connected".into());
        };
        let mut script = ApplyScript::new(&self.marker);
        script.task(0, &change.script);
        let out = {
            let _permit = self.forks.acquire().await.expect("semaphore");
            conn.run(&script.finish(), &h.r#become, self.settings.timeout)
                .await
        };
        match out {
            Ok(out) => {
                let (runs, _) = parse_apply(&self.marker, &out.stdout_text());
                match runs.first() {
                    Some(r) if r.ok => self.report.task(
                        &h.name,
                        &play.name,
                        handler,
                        true,
                        Status::Changed,
                        Some(&change),
                        None,
                        started.elapsed(),
                    ),
                    Some(r) => fail(r.output.trim().to_owned()),
                    None => fail(format!("handler did not run: {}", out.stderr_text())),
                }
            }
            Err(e) => fail(format!("{e:#}")),
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

/// A `when:` that is already false before probing (e.g. a server-only task on an agent).
fn when_known_false(task: &Task, vars: &Map<String, Value>) -> bool {
    task.when
        .iter()
        .any(|w| matches!(w.eval(vars), Ok(v) if !truthy(&v)))
}

/// For probing, a task whose content depends on probed facts still has a
/// known path: render it with sample facts to learn what to probe.
fn render_for_probe(task: &Task, r: &Render) -> Option<Action> {
    for v in facts::SAMPLE_VERSIONS {
        let mut vars = r.vars.clone();
        if facts::add_version_facts(&mut vars, v).is_ok() {
            let r2 = Render {
                templates: r.templates,
                vars: &vars,
                files: r.files,
            };
            if let Ok(a) = task.module.render(&r2) {
                return Some(a);
            }
        }
    }
    None
}

/// Static variables plus what the probe found (a `k3s_version` var wins over detection).
fn host_vars_with_facts(vars: &Map<String, Value>, state: &RemoteState) -> Map<String, Value> {
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
    let r = Render {
        templates: &pb.templates,
        vars: &with,
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

fn diff_task(
    pb: &Playbook,
    task: &Task,
    vars: &Map<String, Value>,
    state: &RemoteState,
    probed: &Probe,
    index: usize,
) -> Step {
    let step = |status, change, message: Option<String>| Step {
        task: index,
        status,
        change,
        message,
        run_once: task.run_once,
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
        files: &task.files,
    };
    let action = match task.module.render(&r) {
        Ok(a) => a,
        Err(e) => return step(Status::Failed, None, Some(explain(task, pb, vars, e))),
    };
    let mut needs = Probe::default();
    action.probe(&mut needs, false);
    if !probed.covers(&needs) {
        return step(Status::Failed, None, Some("a path or guard of this task depends on facts probed from the host (k3s_version, k3s_era, ...); paths and guards may use only inventory and play variables".into()));
    }
    match action.diff(state) {
        Ok(None) => step(Status::Ok, None, None),
        Ok(Some(change)) => step(Status::Changed, Some(change), None),
        Err(e) => step(Status::Failed, None, Some(e)),
    }
}

/// Runs futures concurrently on this task and collects their results in order.
/// (The SSH sessions run in tasks of their own, so crypto still uses every core.)
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}
