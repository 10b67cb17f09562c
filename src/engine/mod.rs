//! The engine: runs compiled plans on hosts. Per host a fixed number of
//! round trips whatever the number of tasks: connect, ONE probe
//! (`probe`), a local pure diff (`diff`), ONE apply exec of every change in
//! order (`apply`), one exec per handler flush (`handlers`). Hosts run in
//! parallel up to --forks.
//!
//! Owns: ordering, concurrency, failure policy (any_errors_fatal,
//! max_fail_percentage, rollouts), which probe answer is still valid, and
//! turning outcomes into report events. May not touch: what a module does
//! (it asks `modules`), how bytes reach a host (it asks `transport`), or
//! what the hosts are for (it asks the [`Domain`]).

mod apply;
mod diff;
pub mod error;
mod handlers;
mod pending;
pub mod probe;
pub mod probe_all;
pub mod script;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use serde_json::{Map, Value};
use tokio::sync::Semaphore;

use crate::domain::{Domain, HostShare};
use crate::input::playbook::{Play, Playbook, Task};
use crate::layered_vars::LayeredVars;
use crate::modules::{Change, Module, Shared};
use crate::plan::{HostPlan, PlayPlan, Reach};
use crate::report::{self, Report, Status};
use crate::transport::Connection;
use crate::transport::local::Local;
use crate::transport::ssh::SshContext;
use error::{HostError, HostFailure};
use handlers::Flush;
use probe::Probed;

/// What we keep about a host across plays.
#[derive(Default)]
struct HostState {
    conn: tokio::sync::Mutex<Link>,
    /// Unreachable or failed: no further play runs on it.
    dead: std::sync::atomic::AtomicBool,
}

/// A host's connection: opened on first use, closed as soon as the host has
/// nothing left to run (an open SSH session costs about 100 KiB, so a fleet
/// of idle ones would dominate khard's memory), opened again if needed.
#[derive(Default)]
struct Link {
    open: Option<Arc<Connection>>,
    /// Why the host could not be reached; it is not tried again.
    unreachable: Option<String>,
    /// SSH channels of the connections already closed.
    channels: usize,
    /// Reached at least once in this run (local hosts count 0 channels).
    reached: bool,
}

/// What the engine takes from the command line (built once from the settings).
#[derive(Debug, Clone)]
pub struct Options {
    /// `--check`: probe and diff only, never write.
    pub check: bool,
    /// `--diff`: bring back file contents for content diffs.
    pub diff: bool,
    pub force_handlers: bool,
    pub forks: usize,
    /// Per exec (probe, apply, handler).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub known_hosts: Option<std::path::PathBuf>,
    pub accept_new_host_keys: bool,
    /// `-K`: tried on one host before any other is contacted.
    pub become_password: Option<Arc<String>>,
}

pub struct Runner {
    pub options: Options,
    domain: Arc<dyn Domain>,
    pub playbook: Arc<Playbook>,
    pub report: Arc<Report>,
    ssh: Arc<SshContext>,
    marker: String,
    hosts: Mutex<HashMap<String, Arc<HostState>>>,
    /// Per host, the index of the last play of the run it is in: its
    /// connection is closed early only there.
    last_play: Mutex<HashMap<String, usize>>,
    forks: Arc<Semaphore>,
    /// Set by Ctrl-C: no new work starts; what runs finishes (writes stay atomic).
    pub interrupted: Arc<std::sync::atomic::AtomicBool>,
}

/// The outcome of one task on one host, before it is reported.
struct Step {
    task: usize,
    status: Status,
    change: Option<Box<Change>>,
    message: Option<String>,
    /// Run-once tasks are decided across hosts once every host was probed.
    run_once: bool,
    /// What the task offers the domain's check across hosts.
    shared: Option<Shared>,
}

impl Step {
    /// A planned task that will not run, and why.
    fn not_run(task: usize, t: &Task, why: &str) -> Step {
        Step {
            task,
            status: Status::NotRun,
            change: None,
            message: Some(why.to_owned()),
            run_once: t.run_once,
            shared: None,
        }
    }
}

/// One host's part of a play segment after the local diff.
struct HostDiff {
    plan: HostPlan,
    /// The plan's variables with the probed facts (shared with the flush).
    vars: Arc<LayeredVars>,
    steps: Vec<Step>,
    elapsed: Duration,
    /// The probe this diff used, reusable for later segments if nothing changes in between.
    probed: Probed,
    /// Handlers an earlier run notified on this host and never finished.
    pending: Vec<usize>,
}

/// What applying one host's segment left behind.
struct Applied {
    host: String,
    failed: bool,
    /// Handlers notified, by index.
    notified: Vec<usize>,
    /// Those of them owed from an earlier run.
    owed: Vec<usize>,
    /// The probe this host's diff used, marked stale when anything ran since.
    probed: Option<Probed>,
}

impl Runner {
    pub fn new(
        options: Options,
        domain: Arc<dyn Domain>,
        playbook: Playbook,
        report: Report,
    ) -> Result<Runner> {
        let ssh = SshContext::new(
            options.known_hosts.clone(),
            options.accept_new_host_keys,
            options.connect_timeout,
        )?;
        let forks = Arc::new(Semaphore::new(options.forks));
        Ok(Runner {
            playbook: Arc::new(playbook),
            report: Arc::new(report),
            ssh: Arc::new(ssh),
            marker: crate::shell::new_marker(),
            hosts: Mutex::new(HashMap::new()),
            last_play: Mutex::default(),
            forks,
            interrupted: Arc::default(),
            domain,
            options,
        })
    }

    /// Asks key passphrases before the run starts (see `SshContext::preload_keys`).
    pub fn preload_keys(&self, plans: &[PlayPlan]) -> Result<()> {
        let targets = plans
            .iter()
            .flat_map(|p| &p.hosts)
            .filter_map(|h| match &h.reach {
                Reach::Ssh(t) => Some(t.as_ref()),
                Reach::Local => None,
            });
        self.ssh.preload_keys(targets)
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
        // How many task outcomes each host will report, for the progress bar.
        let mut planned = BTreeMap::new();
        for plan in plans {
            let tasks = plan.selected.iter().filter(|s| **s).count();
            for h in &plan.hosts {
                self.report.host(&h.name);
                *planned.entry(h.name.clone()).or_default() += tasks;
                self.last_play
                    .lock()
                    .expect("last play")
                    .insert(h.name.clone(), plan.index);
            }
        }
        self.report.start(&planned);
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

    /// Whether `play` is the last play of the run with `host` in it.
    fn last_play_of(&self, host: &str, play: usize) -> bool {
        self.last_play.lock().expect("last play").get(host) == Some(&play)
    }

    fn stopped(&self) -> bool {
        self.interrupted.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// With -K, the password is tried on one host before any other host is
    /// contacted: a wrong password then costs one failed sudo, not one per host.
    async fn sudo_password_works(&self, plans: &[PlayPlan]) -> bool {
        if self.options.become_password.is_none() {
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
            .run(b"true\n", &h.r#become, self.options.connect_timeout * 3)
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
            let mut link = st.conn.lock().await;
            let open = link.open.take();
            if let Some(c) = &open {
                link.channels += c.channels();
            }
            if link.reached {
                channels.insert(name, link.channels);
            }
            drop(link);
            if let Some(c) = open {
                c.close().await;
            }
        }
        channels
    }

    /// The host's connection, opened now if it has none. The caller holds a
    /// --forks permit for the connect and the exec that follows: taken apart,
    /// every host would queue to connect before any would run its exec, and
    /// all their sessions would be open at once.
    async fn connect(&self, h: &HostPlan) -> Result<Arc<Connection>, String> {
        let st = self.state(&h.name);
        let mut link = st.conn.lock().await;
        if let Some(c) = &link.open {
            return Ok(c.clone());
        }
        if let Some(why) = &link.unreachable {
            return Err(why.clone());
        }
        self.report.phase(&h.name, "connecting");
        let conn = match &h.reach {
            Reach::Local => Ok(Arc::new(Connection::Local(Local::new()))),
            Reach::Ssh(t) => self
                .ssh
                .connect(t)
                .await
                .map(|s| Arc::new(Connection::Ssh(s)))
                .map_err(|e| e.to_string()),
        };
        match &conn {
            Ok(c) => {
                self.report.connection(&h.name, &c.describe());
                link.open = Some(c.clone());
                link.reached = true;
            }
            Err(why) => link.unreachable = Some(why.clone()),
        }
        conn
    }

    /// Closes the host's connection: it has nothing left to run for now.
    async fn release(&self, host: &str) {
        let st = self.state(host);
        let mut link = st.conn.lock().await;
        let Some(c) = link.open.take() else {
            return;
        };
        link.channels += c.channels();
        drop(link);
        c.close().await;
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
        // A host that cannot be reached drops out of the play at its first
        // probe (each host connects when its turn comes, bounded by --forks).
        let mut total = alive.len();
        let mut flush = Flush::default();
        let segments = segments(play);
        for (k, segment) in segments.iter().enumerate() {
            let stop = if self.stopped() {
                Some("not run: interrupted")
            } else if self.abort(play, total, flush.failed.len()) {
                Some("not run: the play stopped (any_errors_fatal / max_fail_percentage)")
            } else {
                None
            };
            if let Some(why) = stop {
                let rest: Vec<usize> = segments[k..].iter().flatten().copied().collect();
                for h in alive.iter().filter(|h| !flush.failed.contains(&h.name)) {
                    let vars = flush.vars.get(&h.name).map(|v| v.merged());
                    self.report_not_run(play, plan, h, &rest, why, vars.as_ref());
                }
                break;
            }
            let rest: Vec<usize> = segments[k + 1..].iter().flatten().copied().collect();
            // A host that failed, or whose restart the rollout never reached,
            // runs nothing more in this play; its tasks say so.
            for h in &alive {
                let why = if flush.failed.contains(&h.name) {
                    "not run: the host failed earlier in this play"
                } else if flush.held.contains(&h.name) {
                    "not run: the rollout stopped before this host's restart"
                } else {
                    continue;
                };
                let vars = flush.vars.get(&h.name).map(|v| v.merged());
                self.report_not_run(play, plan, h, segment, why, vars.as_ref());
            }
            let hosts: Vec<HostPlan> = alive
                .iter()
                .filter(|h| !flush.failed.contains(&h.name) && !flush.held.contains(&h.name))
                .cloned()
                .collect();
            let probes = hosts.into_iter().map(|h| {
                let cached = flush
                    .probes
                    .remove(&h.name)
                    .map(|p| (p, flush.vars.get(&h.name).cloned()));
                self.diff_host(play, plan, h, segment.clone(), rest.clone(), cached)
            });
            let mut diffs = self.each_host(probes).await;
            diffs.retain(|d| match d {
                Err(HostFailure {
                    host,
                    error: HostError::Connect(why),
                }) => {
                    self.report.unreachable(host, &play.name, why);
                    self.kill(host);
                    total -= 1;
                    false
                }
                _ => true,
            });
            alive.retain(|h| !self.is_dead(&h.name));
            let mut diffs = self.decide_run_once(diffs);
            self.check_across_hosts(&mut diffs);
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
            for done in self
                .each_host(
                    diffs
                        .into_iter()
                        .map(|d| self.apply_host(play, d, hold.as_deref())),
                )
                .await
            {
                if done.failed {
                    flush.failed.insert(done.host.clone());
                }
                if let Some(probed) = done.probed {
                    flush.probes.insert(done.host.clone(), probed);
                }
                flush
                    .owed
                    .entry(done.host.clone())
                    .or_default()
                    .extend(done.owed);
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
        for name in flush.failed.iter().chain(&flush.held) {
            self.kill(name);
        }
        for h in &plan.hosts {
            if self.last_play_of(&h.name, plan.index) {
                self.release(&h.name).await;
            }
            self.report.phase(&h.name, "done");
        }
    }

    /// Reports tasks of a host that will not run, each once: skipped when
    /// its `when:` is already false (with the facts probed on the host where
    /// there are some: an agent's server-only tasks are skipped, not "not
    /// run"), otherwise not run, with the reason.
    fn report_not_run(
        &self,
        play: &Play,
        plan: &PlayPlan,
        h: &HostPlan,
        tasks: &[usize],
        why: &str,
        probed_vars: Option<&Map<String, Value>>,
    ) {
        let planned;
        let vars = match probed_vars {
            Some(vars) => vars,
            None => {
                planned = h.vars.merged();
                &planned
            }
        };
        for &i in tasks.iter().filter(|i| plan.selected[**i]) {
            let task = &play.tasks[i];
            let outcome = if diff::when_known_false(task, vars) {
                report::Outcome::new(Status::Skipped)
            } else {
                report::Outcome::new(Status::NotRun).message(Some(why))
            };
            self.report.task(&h.name, &play.name, task, false, outcome);
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

    /// The domain's check across hosts (the servers of a cluster must agree
    /// on critical flags): where it objects, each task that offered it
    /// something fails before anything is written.
    fn check_across_hosts(&self, diffs: &mut [Result<HostDiff, HostFailure>]) {
        // Only hosts whose tasks shared something take part.
        let sharing: Vec<(&HostDiff, Map<String, Value>)> = diffs
            .iter()
            .flatten()
            .filter(|d| d.steps.iter().any(|s| s.shared.is_some()))
            .map(|d| (d, d.vars.merged()))
            .collect();
        let shares: Vec<HostShare> = sharing
            .iter()
            .map(|(d, vars)| HostShare {
                host: &d.plan.name,
                vars,
                shared: d.steps.iter().filter_map(|s| s.shared.as_ref()).collect(),
            })
            .collect();
        let messages = self.domain.check_across_hosts(&shares);
        for d in diffs.iter_mut().flatten() {
            let Some(message) = messages.get(&d.plan.name) else {
                continue;
            };
            for s in d.steps.iter_mut().filter(|s| s.shared.is_some()) {
                s.status = Status::Failed;
                s.change = None;
                s.message = Some(message.clone());
            }
        }
    }

    /// A run-once task runs on the first host (in play order) where its `when` holds.
    fn decide_run_once(
        &self,
        diffs: Vec<Result<HostDiff, HostFailure>>,
    ) -> Vec<Result<HostDiff, HostFailure>> {
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

impl Runner {
    /// Runs one future per host, --forks of them at a time, and collects
    /// their results in order. Only the running ones exist: a future per
    /// host of a large fleet, each waiting for its turn, would cost more
    /// memory than the work itself (--forks bounds the work anyway).
    async fn each_host<F: std::future::Future>(
        &self,
        futures: impl IntoIterator<Item = F>,
    ) -> Vec<F::Output> {
        use futures::StreamExt;
        futures::stream::iter(futures)
            .buffered(self.options.forks.max(1))
            .collect()
            .await
    }
}

/// Runs futures concurrently on this task and collects their results in order.
/// (The SSH sessions run in tasks of their own, so crypto still uses every core.)
async fn join_all<F: std::future::Future>(futures: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    futures::future::join_all(futures).await
}
