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
use crate::script::{ApplyScript, parse_apply, quote};
use crate::settings::Settings;
use crate::template::Text;
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
            marker: crate::script::new_marker(),
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
        for plan in plans {
            for h in &plan.hosts {
                self.report.host(&h.name);
            }
        }
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
        for &i in tasks.iter().filter(|i| plan.selected[**i]) {
            let task = &play.tasks[i];
            if matches!(task.module, Module::FlushHandlers) || when_known_false(task, &h.vars) {
                continue;
            }
            let r = Render {
                templates: &self.playbook.templates,
                vars: &h.vars,
                files: &task.files,
            };
            if let Some(action) = task
                .module
                .render(&r)
                .ok()
                .or_else(|| render_for_probe(task, &r))
            {
                action.probe(&mut probe, self.settings.diff);
            }
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
        for &i in &tasks {
            let step = diff_task(
                pb,
                &play.tasks[i],
                &vars,
                &state,
                &probe,
                i,
                self.report.redactor(),
            );
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

    /// Runs notified handlers once each, in definition order. A handler with
    /// `throttle` runs on that many hosts at a time, and with `health` waits
    /// (inside the same exec) until the host is healthy before the next batch:
    /// a batch that fails halts the rollout, and every host still waiting
    /// reports why it was not restarted. Check mode reports the handlers that
    /// would run and runs none. A host's last handler exec also probes the
    /// play's remaining tasks (`next`), so the restart costs no extra round trip.
    async fn flush_handlers(
        &self,
        play: &Play,
        plan: &PlayPlan,
        alive: &[HostPlan],
        flush: &mut Flush,
        next: &[usize],
    ) {
        if self.stopped() {
            return;
        }
        // Which handlers run on which host, decided before any runs.
        let mut todo: Vec<Vec<HandlerRun>> = vec![Vec::new(); play.handlers.len()];
        for (hi, handler) in play.handlers.iter().enumerate() {
            for h in alive {
                let notified = flush.notified.get(&h.name).is_some_and(|n| n.contains(&hi));
                let allowed = self.settings.force_handlers || !flush.failed.contains(&h.name);
                if !notified || !allowed || self.is_dead(&h.name) {
                    continue;
                }
                let vars = flush
                    .vars
                    .get(&h.name)
                    .cloned()
                    .unwrap_or_else(|| h.vars.clone());
                match self.handler_change(handler, &vars) {
                    Ok(Some(change)) => todo[hi].push((h, change, vars)),
                    Ok(None) => self.report.task(
                        &h.name,
                        &play.name,
                        handler,
                        true,
                        Status::Skipped,
                        None,
                        None,
                        Duration::ZERO,
                    ),
                    Err(e) => {
                        self.report.task(
                            &h.name,
                            &play.name,
                            handler,
                            true,
                            Status::Failed,
                            None,
                            Some(e),
                            Duration::ZERO,
                        );
                        flush.failed.insert(h.name.clone());
                    }
                }
            }
        }
        flush.notified.clear();
        let last_handler: HashMap<&str, usize> = todo
            .iter()
            .enumerate()
            .flat_map(|(hi, v)| v.iter().map(move |(h, _, _)| (h.name.as_str(), hi)))
            .collect();
        for (hi, ready) in todo.iter().enumerate() {
            let handler = &play.handlers[hi];
            if ready.is_empty() {
                continue;
            }
            if self.settings.check {
                for (h, change, _) in ready {
                    self.report.task(
                        &h.name,
                        &play.name,
                        handler,
                        true,
                        Status::Changed,
                        Some(change),
                        None,
                        Duration::ZERO,
                    );
                }
                continue;
            }
            let size = match batch_size(&self.playbook, handler, &ready[0].2, ready.len()) {
                Ok(n) => n,
                Err(e) => {
                    for (h, _, _) in ready {
                        self.report.task(
                            &h.name,
                            &play.name,
                            handler,
                            true,
                            Status::Failed,
                            None,
                            Some(e.clone()),
                            Duration::ZERO,
                        );
                        flush.failed.insert(h.name.clone());
                    }
                    continue;
                }
            };
            for batch in ready.chunks(size) {
                let not_run = if self.stopped() {
                    Some((Status::Skipped, "not run: interrupted".to_owned()))
                } else {
                    flush.halted.as_ref().map(|why| {
                        (
                            Status::Failed,
                            format!("not run: the rollout stopped because {why}"),
                        )
                    })
                };
                if let Some((status, msg)) = not_run {
                    for (h, _, _) in batch {
                        self.report.task(
                            &h.name,
                            &play.name,
                            handler,
                            true,
                            status,
                            None,
                            Some(msg.clone()),
                            Duration::ZERO,
                        );
                        if status == Status::Failed {
                            flush.failed.insert(h.name.clone());
                        }
                    }
                    continue;
                }
                let runs = join_all(batch.iter().map(|(h, change, vars)| {
                    let tail = (last_handler.get(h.name.as_str()) == Some(&hi) && !next.is_empty())
                        .then(|| self.probe_for(play, plan, h, next));
                    self.run_handler(play, handler, h, change, vars, tail)
                }))
                .await;
                for ((h, _, _), result) in batch.iter().zip(runs) {
                    match result {
                        Ok(Some(state)) => {
                            flush.states.insert(h.name.clone(), state);
                        }
                        Ok(None) => {}
                        Err(e) => {
                            flush.failed.insert(h.name.clone());
                            if flush.halted.is_none()
                                && (handler.throttle.is_some() || handler.health.is_some())
                            {
                                flush.halted =
                                    Some(format!("`{}` failed on {}: {e}", handler.name, h.name));
                            }
                        }
                    }
                }
            }
        }
    }

    /// What a handler would do on a host, or None when its `when:` is false.
    fn handler_change(
        &self,
        handler: &Task,
        vars: &Map<String, Value>,
    ) -> Result<Option<Change>, String> {
        for w in &handler.when {
            if !truthy(&w.eval(vars)?) {
                return Ok(None);
            }
        }
        let r = Render {
            templates: &self.playbook.templates,
            vars,
            files: &handler.files,
        };
        handler.module.render(&r)?.diff(&RemoteState::default())
    }

    /// Runs a handler on one host, waits for its health gate in the same
    /// exec, and (with `tail`) probes the next tasks after it; reports the outcome.
    async fn run_handler(
        &self,
        play: &Play,
        handler: &Task,
        h: &HostPlan,
        change: &Change,
        vars: &Map<String, Value>,
        tail: Option<Probe>,
    ) -> Result<Option<(Probe, RemoteState)>, String> {
        let started = Instant::now();
        let result = async {
            let mut body = change.script.clone();
            if let Some(health) = &handler.health {
                body.push('\n');
                body.push_str(&self.health_call(health, vars)?);
            }
            let mut script = ApplyScript::new(&self.marker);
            script.task(0, &body);
            let mut bytes = script.finish();
            if let Some(p) = &tail {
                bytes.extend_from_slice(&p.script(&self.marker));
            }
            let conn = self.conn(&h.name).await.ok_or("not connected")?;
            let out = {
                let _permit = self.forks.acquire().await.expect("semaphore");
                let waiting = if handler.health.is_some() {
                    ", waiting until healthy"
                } else {
                    ""
                };
                self.report
                    .phase(&h.name, &format!("{}{waiting}", handler.name));
                conn.run(&bytes, &h.r#become, self.settings.timeout)
                    .await
                    .map_err(|e| format!("{e:#}"))?
            };
            let stdout = out.stdout_text();
            let (runs, _) = parse_apply(&self.marker, &stdout);
            let run = runs
                .into_iter()
                .next()
                .ok_or_else(|| format!("did not run: {}", out.stderr_text()))?;
            if !run.ok {
                return Err(run.output.trim().to_owned());
            }
            let state = tail.and_then(|p| probe::parse(&self.marker, &stdout, &p).map(|s| (p, s)));
            Ok((run.output, state))
        }
        .await;
        let mut shown = change.clone();
        match result {
            Ok((output, state)) => {
                shown.details.extend(
                    output
                        .lines()
                        .map(str::to_owned)
                        .filter(|l| l.starts_with("healthy after")),
                );
                self.report.task(
                    &h.name,
                    &play.name,
                    handler,
                    true,
                    Status::Changed,
                    Some(&shown),
                    None,
                    started.elapsed(),
                );
                Ok(state)
            }
            Err(e) => {
                self.report.task(
                    &h.name,
                    &play.name,
                    handler,
                    true,
                    Status::Failed,
                    Some(&shown),
                    Some(e.clone()),
                    started.elapsed(),
                );
                Err(e)
            }
        }
    }

    /// The shell line that waits until the health command succeeds (see `khard_health`).
    fn health_call(
        &self,
        health: &crate::playbook::Health,
        vars: &Map<String, Value>,
    ) -> Result<String, String> {
        let t = &self.playbook.templates;
        let command = t.render_text(&health.command, vars)?;
        let expect = health
            .expect
            .as_ref()
            .map(|e| t.render_text(e, vars))
            .transpose()?
            .unwrap_or_default();
        let seconds = |text: &Option<Text>, default: &str| -> Result<String, String> {
            let v = match text {
                None => default.to_owned(),
                Some(x) => t.render_text(x, vars)?.trim().to_owned(),
            };
            match v.parse::<f64>() {
                Ok(s) if s > 0.0 => Ok(v),
                _ => Err(format!("health: `{v}` is not a number of seconds")),
            }
        };
        let interval = seconds(&health.interval, "2")?;
        let timeout = seconds(&health.timeout, "300")?;
        Ok(format!(
            "khard_health {} {} {} {}",
            quote(&timeout),
            quote(&interval),
            quote(&command),
            quote(&expect)
        ))
    }
}

/// A handler to run on a host: the host, the change, the host's variables.
type HandlerRun<'a> = (&'a HostPlan, Change, Map<String, Value>);

/// Handler state of a play: who notified what, who failed, and whether the rollout stopped.
#[derive(Default)]
struct Flush {
    notified: HashMap<String, BTreeSet<usize>>,
    failed: BTreeSet<String>,
    /// Variables (with probed facts) of each host, for handler `when:` and templates.
    vars: HashMap<String, Map<String, Value>>,
    /// Set when a batch of a throttled or health-gated handler failed.
    halted: Option<String>,
    /// Per host, a probe still valid for the play's remaining tasks.
    states: HashMap<String, (Probe, RemoteState)>,
}

/// How many hosts a handler runs on at once: `throttle` as a number or a
/// percentage of the hosts it runs on (at least 1); all of them when unset.
fn batch_size(
    pb: &Playbook,
    handler: &Task,
    vars: &Map<String, Value>,
    hosts: usize,
) -> Result<usize, String> {
    let Some(t) = &handler.throttle else {
        return Ok(hosts.max(1));
    };
    let text = pb.templates.render_text(t, vars)?;
    let bad = || format!("throttle `{text}` is neither a number of hosts nor a percentage");
    let n = match text.trim().strip_suffix('%') {
        Some(pct) => {
            let pct: f64 = pct.trim().parse().map_err(|_| bad())?;
            if !(pct > 0.0 && pct <= 100.0) {
                return Err(bad());
            }
            ((hosts as f64) * pct / 100.0).ceil() as usize
        }
        None => text.trim().parse::<usize>().map_err(|_| bad())?,
    };
    if n == 0 {
        return Err(bad());
    }
    Ok(n.max(1))
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
    redactor: &crate::secrets::Redactor,
) -> Step {
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

/// The servers of a play must agree on critical flags. When their configs
/// disagree, every server's config task fails before anything is written,
/// naming the flag and each server's value.
fn check_critical_flags(diffs: &mut [Result<HostDiff, (String, String)>]) {
    let mut values: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for d in diffs.iter().flatten() {
        if d.vars.get("k3s_role").and_then(Value::as_str) != Some("server") {
            continue;
        }
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
                    .entry(flag)
                    .or_default()
                    .insert(d.plan.name.clone(), v.unwrap_or_else(|| "(unset)".into()));
            }
        }
    }
    let mismatches: Vec<String> = values
        .iter()
        .filter(|(_, per_host)| per_host.values().collect::<BTreeSet<_>>().len() > 1)
        .map(|(flag, per_host)| {
            let list: Vec<String> = per_host.iter().map(|(h, v)| format!("{h}={v}")).collect();
            format!("{flag}: {}", list.join(", "))
        })
        .collect();
    if mismatches.is_empty() {
        return;
    }
    let message = format!(
        "the servers disagree on flags that must be identical on every server of a cluster (k3s refuses to start otherwise): {}",
        mismatches.join("; ")
    );
    for d in diffs.iter_mut().flatten() {
        for s in d.steps.iter_mut().filter(|s| s.k3s_config.is_some()) {
            if d.vars.get("k3s_role").and_then(Value::as_str) == Some("server") {
                s.status = Status::Failed;
                s.change = None;
                s.message = Some(message.clone());
            }
        }
    }
}

/// Runs futures concurrently on this task and collects their results in order.
/// (The SSH sessions run in tasks of their own, so crypto still uses every core.)
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}
