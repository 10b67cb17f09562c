//! Handlers: run once per flush, in definition order, on the hosts that
//! notified them; throttled into batches, each gated on health inside the
//! same exec, halting the rollout when a batch fails.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{Runner, join_all};
use crate::engine::probe::Probed;
use crate::engine::script::{ApplyScript, parse_apply};
use crate::facts::{Probe, RemoteState};
use crate::input::playbook::{Play, Playbook, Task};
use crate::lang::expr::truthy;
use crate::lang::template::Text;
use crate::modules::error::TaskError;
use crate::modules::{Change, Render};
use crate::plan::{HostPlan, PlayPlan};
use crate::report::{Outcome, Status};
use crate::shell::quote;

impl Runner {
    /// Runs notified handlers once each, in definition order. A handler with
    /// `throttle` runs on that many hosts at a time, and with `health` waits
    /// (inside the same exec) until the host is healthy before the next batch:
    /// a batch that fails halts the rollout, and every host still waiting
    /// reports why it was not restarted. Check mode reports the handlers that
    /// would run and runs none. A host's last handler exec also probes the
    /// play's remaining tasks (`next`), so the restart costs no extra round trip.
    pub(super) async fn flush_handlers(
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
                let allowed = self.options.force_handlers || !flush.failed.contains(&h.name);
                if !notified || !allowed || self.is_dead(&h.name) {
                    continue;
                }
                let vars = flush
                    .vars
                    .get(&h.name)
                    .map(|v| v.merged())
                    .unwrap_or_else(|| h.vars.merged());
                match self.handler_change(handler, &vars) {
                    Ok(Some(mut change)) => {
                        if flush.owed.get(&h.name).is_some_and(|o| o.contains(&hi)) {
                            change.details.insert(0, "pending from an earlier run that did not finish: what it applies is written but not yet in effect".into());
                        }
                        self.report.expect(&h.name, 1);
                        todo[hi].push((h, change, vars));
                    }
                    Ok(None) => self.report.task(
                        &h.name,
                        &play.name,
                        handler,
                        true,
                        Outcome::new(Status::Skipped),
                    ),
                    Err(e) => {
                        let e = e.to_string();
                        let failed = Outcome::new(Status::Failed).message(Some(&e));
                        self.report.task(&h.name, &play.name, handler, true, failed);
                        flush.failed.insert(h.name.clone());
                    }
                }
            }
        }
        flush.notified.clear();
        flush.owed.clear();
        let last_handler: HashMap<&str, usize> = todo
            .iter()
            .enumerate()
            .flat_map(|(hi, v)| v.iter().map(move |(h, _, _)| (h.name.as_str(), hi)))
            .collect();
        // Hosts with nothing left in the play are done now, not after everyone's rollout.
        if next.is_empty() {
            for h in alive
                .iter()
                .filter(|h| !last_handler.contains_key(h.name.as_str()))
            {
                self.report.phase(&h.name, "done");
            }
        }
        let rollout = self.roll_out(play, plan, &todo, &last_handler, flush, next);
        tokio::select! {
            () = rollout => {}
            () = self.tick_waits() => {}
        }
    }

    /// Runs each handler's batches in turn. A host that is not in the batch
    /// running now waits, and says what for, until its batch starts.
    async fn roll_out(
        &self,
        play: &Play,
        plan: &PlayPlan,
        todo: &[Vec<HandlerRun<'_>>],
        last_handler: &HashMap<&str, usize>,
        flush: &mut Flush,
        next: &[usize],
    ) {
        let steps = self.batches(play, todo, flush);
        let wait_for = |i: usize, host: &str| {
            let step = &steps[i];
            let mut what = format!("for batch {} of {}", step.batch + 1, step.of);
            let before = i.checked_sub(1).map(|b| &steps[b]);
            if let Some(before) = before.filter(|b| b.handler != step.handler) {
                let name = &play.handlers[before.handler].name;
                what.push_str(&format!(", after handler `{name}`"));
            }
            let task = format!("handler {}", play.handlers[step.handler].name);
            self.report.wait_start(host, &task, &what);
        };
        let mut seen = BTreeSet::new();
        for (i, step) in steps.iter().enumerate() {
            for (h, _, _) in step.runs {
                if seen.insert(h.name.as_str()) && i > 0 {
                    wait_for(i, &h.name);
                }
            }
        }
        for (i, step) in steps.iter().enumerate() {
            let (hi, batch) = (step.handler, step.runs);
            let handler = &play.handlers[hi];
            // A handler that will not run leaves its host changed, not
            // restarted: pending, the same after a failure elsewhere or
            // Ctrl-C, and never counted as this host's failure.
            const FINISH: &str = "the change is in place and takes effect at the next restart; khard apply finishes it";
            let not_run = if self.stopped() {
                Some(format!("interrupted before this host's turn; {FINISH}"))
            } else {
                flush.halted.as_ref().map(|why| {
                    format!("the rollout stopped before this host's turn because {why}; {FINISH}")
                })
            };
            let which = format!("batch {} of {}", step.batch + 1, step.of);
            for (h, _, _) in batch {
                self.report.wait_end(&h.name, |waited| match &not_run {
                    None => format!("{which} starts after {} s", waited.as_secs()),
                    Some(_) => format!("{which} will not run"),
                });
            }
            if let Some(msg) = not_run {
                for (h, _, _) in batch {
                    self.report.task(
                        &h.name,
                        &play.name,
                        handler,
                        true,
                        Outcome::new(Status::Pending).message(Some(&msg)),
                    );
                    flush.held.insert(h.name.clone());
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
                // The host's next handler, if any, is another wait; after its last, it is done.
                let later = (i + 1..steps.len())
                    .find(|&j| steps[j].runs.iter().any(|(o, _, _)| o.name == h.name));
                match later {
                    Some(j) => wait_for(j, &h.name),
                    None if next.is_empty() => self.report.phase(&h.name, "done"),
                    None => {}
                }
                match result {
                    Ok(Some(state)) => {
                        flush.probes.insert(h.name.clone(), state);
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

    /// Every batch to run, in order: each handler's hosts in batches of its
    /// `throttle`. In check mode, and for a handler whose `throttle` is
    /// invalid, the outcome is reported here and no batch is made.
    fn batches<'a>(
        &self,
        play: &Play,
        todo: &'a [Vec<HandlerRun<'a>>],
        flush: &mut Flush,
    ) -> Vec<Batch<'a>> {
        let mut steps = Vec::new();
        for (hi, ready) in todo.iter().enumerate() {
            let handler = &play.handlers[hi];
            if ready.is_empty() {
                continue;
            }
            if self.options.check {
                for (h, change, _) in ready {
                    self.report.task(
                        &h.name,
                        &play.name,
                        handler,
                        true,
                        Outcome::new(Status::Changed).change(Some(change)),
                    );
                }
                continue;
            }
            match batch_size(&self.playbook, handler, &ready[0].2, ready.len()) {
                Ok(size) => {
                    let of = ready.len().div_ceil(size);
                    steps.extend(ready.chunks(size).enumerate().map(|(batch, runs)| Batch {
                        handler: hi,
                        batch,
                        of,
                        runs,
                    }));
                }
                Err(e) => {
                    let e = e.to_string();
                    for (h, _, _) in ready {
                        self.report.task(
                            &h.name,
                            &play.name,
                            handler,
                            true,
                            Outcome::new(Status::Failed).message(Some(&e)),
                        );
                        flush.failed.insert(h.name.clone());
                    }
                }
            }
        }
        steps
    }

    /// Tells the report, about once a second, how long each wait has lasted.
    async fn tick_waits(&self) {
        let mut every = tokio::time::interval(Duration::from_secs(1));
        loop {
            every.tick().await;
            self.report.wait_tick();
        }
    }

    /// What a handler would do on a host, or None when its `when:` is false.
    fn handler_change(
        &self,
        handler: &Task,
        vars: &Map<String, Value>,
    ) -> Result<Option<Change>, TaskError> {
        for w in &handler.when {
            if !truthy(&w.eval(vars)?) {
                return Ok(None);
            }
        }
        let ctx = crate::lang::template::Templates::context(vars);
        let r = Render {
            templates: &self.playbook.templates,
            vars,
            ctx: &ctx,
            files: &handler.files,
        };
        let action = handler.module.render(&r)?;
        let mut change = action.diff(&RemoteState::default())?;
        // Handlers have no probe of their own: command guards run on the host.
        if let (crate::modules::Action::Command(c), Some(change)) = (&action, change.as_mut()) {
            change.script = c.guarded_script(&self.marker);
        }
        Ok(change)
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
    ) -> Result<Option<Probed>, TaskError> {
        let started = Instant::now();
        let task = format!("handler {}", handler.name);
        let health_line = format!("{} health", self.marker);
        let result = async {
            let mut script = ApplyScript::new(&self.marker);
            // Owed no longer once it ran and (under set -e) passed its gate.
            let done = super::pending::clear(play, handler);
            match &handler.health {
                // The script says when the restart is over and the health wait
                // begins; fd 3 is closed for everything else it starts.
                Some(health) => script.task_reporting(
                    0,
                    &format!(
                        "{{\n{}\n}} 3>&-\necho \"$M health\" >&3\n{} 3>&-{done}",
                        change.script,
                        self.health_call(health, vars)?
                    ),
                ),
                None => script.task(0, &format!("{}{done}", change.script)),
            }
            let mut bytes = script.finish();
            if let Some(p) = &tail {
                bytes.extend_from_slice(&p.script(&self.marker));
            }
            let out = {
                let _permit = self.forks.acquire().await.expect("semaphore");
                let conn = self.connect(h).await?;
                self.report.phase(&h.name, &format!("{task}: running"));
                let partial = std::sync::Mutex::new(Vec::new());
                let watch = |data: &[u8]| {
                    let mut buf = partial.lock().expect("line buffer");
                    buf.extend_from_slice(data);
                    while let Some(end) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=end).collect();
                        if line[..end] == *health_line.as_bytes() {
                            self.report.wait_start(&h.name, &task, "until healthy");
                        }
                    }
                };
                conn.run_watched(&bytes, &h.r#become, self.options.timeout, &watch)
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
                return Err(TaskError::Refused(run.output.trim().to_owned()));
            }
            // A tail probe that cannot be read whole is dropped: the next segment probes again.
            let state = tail.and_then(|p| Probed::from_output(p, &self.marker, &out).ok());
            Ok::<_, TaskError>((run.output, state))
        }
        .await;
        self.report.wait_end(&h.name, |waited| match &result {
            Ok(_) => format!("healthy after {} s", waited.as_secs()),
            Err(_) => format!(
                "stopped waiting after {} s: the handler failed",
                waited.as_secs()
            ),
        });
        let mut shown = change.clone();
        let message = result.as_ref().err().map(ToString::to_string);
        let guard_held = format!("{}-guard-held", self.marker);
        let status = match &result {
            Ok((output, _)) if output.lines().any(|l| l == guard_held) => {
                shown.details = vec!["skipped: its creates/unless guard holds".into()];
                Status::Skipped
            }
            Ok((output, _)) => {
                // The shell says at which check; khard's clock says how long.
                if output.lines().any(|l| l.starts_with("healthy at check")) {
                    let took = started.elapsed().as_secs();
                    shown.details.push(format!("healthy after {took} s"));
                }
                Status::Changed
            }
            Err(_) => Status::Failed,
        };
        let outcome = Outcome::new(status)
            .change(Some(&shown))
            .message(message.as_deref())
            .took(started.elapsed());
        self.report
            .task(&h.name, &play.name, handler, true, outcome);
        result.map(|(_, state)| state)
    }

    /// The shell line that waits until the health command succeeds (see `khard_health`).
    fn health_call(
        &self,
        health: &crate::input::playbook::Health,
        vars: &Map<String, Value>,
    ) -> Result<String, TaskError> {
        let t = &self.playbook.templates;
        let command = t.render_text(&health.command, vars)?;
        let expect = health
            .expect
            .as_ref()
            .map(|e| t.render_text(e, vars))
            .transpose()?
            .unwrap_or_default();
        let seconds = |text: &Option<Text>, default: &str| -> Result<String, TaskError> {
            let v = match text {
                None => default.to_owned(),
                Some(x) => t.render_text(x, vars)?.trim().to_owned(),
            };
            match v.parse::<f64>() {
                Ok(s) if s > 0.0 => Ok(v),
                _ => Err(format!("health: `{v}` is not a number of seconds").into()),
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

/// One batch of a handler's rollout: batch `batch` (from 0) of `of`.
struct Batch<'a> {
    handler: usize,
    batch: usize,
    of: usize,
    runs: &'a [HandlerRun<'a>],
}

/// Handler state of a play: who notified what, who failed, and whether the rollout stopped.
#[derive(Default)]
pub(super) struct Flush {
    pub(super) notified: HashMap<String, BTreeSet<usize>>,
    /// Handlers owed from an earlier run, by host (see `pending`).
    pub(super) owed: HashMap<String, BTreeSet<usize>>,
    pub(super) failed: BTreeSet<String>,
    /// Hosts whose restart the rollout never reached (pending): they run
    /// nothing more in this play, and have not failed.
    pub(super) held: BTreeSet<String>,
    /// Variables (with probed facts) of each host, for handler `when:` and templates.
    pub(super) vars: HashMap<String, std::sync::Arc<crate::layered_vars::LayeredVars>>,
    /// Set when a batch of a throttled or health-gated handler failed.
    pub(super) halted: Option<String>,
    /// Per host, a probe still valid for the play's remaining tasks.
    pub(super) probes: HashMap<String, Probed>,
}

/// How many hosts a handler runs on at once: `throttle` as a number or a
/// percentage of the hosts it runs on (at least 1); all of them when unset.
fn batch_size(
    pb: &Playbook,
    handler: &Task,
    vars: &Map<String, Value>,
    hosts: usize,
) -> Result<usize, TaskError> {
    let Some(t) = &handler.throttle else {
        return Ok(hosts.max(1));
    };
    let text = pb.templates.render_text(t, vars)?;
    let bad = || format!("throttle `{text}` is neither a number of hosts nor a percentage");
    let n = match text.trim().strip_suffix('%') {
        Some(pct) => {
            let pct: f64 = pct.trim().parse().map_err(|_| bad())?;
            if !(pct > 0.0 && pct <= 100.0) {
                return Err(bad().into());
            }
            ((hosts as f64) * pct / 100.0).ceil() as usize
        }
        None => text.trim().parse::<usize>().map_err(|_| bad())?,
    };
    if n == 0 {
        return Err(bad().into());
    }
    Ok(n.max(1))
}
