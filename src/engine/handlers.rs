//! Handlers: run once per flush, in definition order, on the hosts that
//! notified them; throttled into batches, each gated on health inside the
//! same exec, halting the rollout when a batch fails.

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde_json::{Map, Value};

use super::{Runner, join_all};
use crate::engine::probe::{Probe, Probed, RemoteState};
use crate::engine::script::{ApplyScript, parse_apply, quote};
use crate::input::playbook::{Play, Playbook, Task};
use crate::lang::expr::truthy;
use crate::lang::template::Text;
use crate::modules::error::TaskError;
use crate::modules::{Change, Render};
use crate::plan::{HostPlan, PlayPlan};
use crate::report::{Outcome, Status};

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
                        Outcome::new(Status::Changed).change(Some(change)),
                    );
                }
                continue;
            }
            let size = match batch_size(&self.playbook, handler, &ready[0].2, ready.len()) {
                Ok(n) => n,
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
                            Outcome::new(status).message(Some(&msg)),
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
                return Err(TaskError::Refused(run.output.trim().to_owned()));
            }
            // A tail probe that cannot be read whole is dropped: the next segment probes again.
            let state = tail.and_then(|p| Probed::from_output(p, &self.marker, &out).ok());
            Ok::<_, TaskError>((run.output, state))
        }
        .await;
        let mut shown = change.clone();
        let message = result.as_ref().err().map(ToString::to_string);
        let guard_held = format!("{}-guard-held", self.marker);
        let status = match &result {
            Ok((output, _)) if output.lines().any(|l| l == guard_held) => {
                shown.details = vec!["skipped: its creates/unless guard holds".into()];
                Status::Skipped
            }
            Ok((output, _)) => {
                let healthy = output.lines().filter(|l| l.starts_with("healthy after"));
                shown.details.extend(healthy.map(str::to_owned));
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

/// Handler state of a play: who notified what, who failed, and whether the rollout stopped.
#[derive(Default)]
pub(super) struct Flush {
    pub(super) notified: HashMap<String, BTreeSet<usize>>,
    pub(super) failed: BTreeSet<String>,
    /// Variables (with probed facts) of each host, for handler `when:` and templates.
    pub(super) vars: HashMap<String, Map<String, Value>>,
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
