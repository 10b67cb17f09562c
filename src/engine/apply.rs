//! Applying one host's changes: build ONE script of every pending change in
//! order, run it, reconcile what came back with what was planned, report
//! every task. Each step is a function of its own; `reconcile` is pure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::error::HostFailure;
use super::script::{ApplyScript, parse_apply};
use super::{Applied, HostDiff, Runner, Step, handler_indices};
use crate::input::playbook::Play;
use crate::report::{Outcome, Status};

/// What the one apply exec of a host brought back.
#[derive(Debug, Default)]
struct ScriptRun {
    /// Per task index: whether it succeeded, and what it printed.
    results: HashMap<usize, (bool, String)>,
    /// Why the exec stopped before reporting every task: the status of the
    /// task cut short, and why.
    lost: Option<(Status, String)>,
    took: Duration,
    /// The script was run (false: nothing pending, check mode, or interrupted).
    ran: bool,
}

/// One reported line of a host's segment.
#[derive(Debug, PartialEq)]
struct Line {
    /// Index into the host's steps.
    step: usize,
    status: Status,
    message: Option<String>,
    elapsed: Duration,
}

/// Every line to report for a host, and how the host ends the segment.
#[derive(Debug, Default, PartialEq)]
struct Reconciled {
    lines: Vec<Line>,
    failed: bool,
    /// The connection was lost: the host is unreachable from here on.
    dead: bool,
    /// Why, when no line of a task says it.
    unreachable: Option<String>,
}

impl Runner {
    /// Applies the changes of one host in one exec and reports every task.
    pub(super) async fn apply_host(
        &self,
        play: &Play,
        d: Result<HostDiff, HostFailure>,
        hold: Option<&str>,
    ) -> Applied {
        let mut d = match d {
            Ok(d) => d,
            Err(HostFailure { host, error }) => {
                if error.unreachable() {
                    self.report
                        .unreachable(&host, &play.name, &error.to_string());
                } else {
                    let msg = error.to_string();
                    self.report
                        .host_event(&host, &play.name, error.what(), Status::Failed, &msg);
                }
                self.kill(&host);
                return Applied {
                    host,
                    failed: true,
                    notified: Vec::new(),
                    owed: Vec::new(),
                    probed: None,
                };
            }
        };
        hold_back(&mut d.steps, hold);
        let script = (!self.options.check && !self.stopped())
            .then(|| build_script(&self.marker, play, &d.steps, &d.vars.merged()))
            .flatten();
        let run = match &script {
            Some((script, count)) => self.run_script(&d, script, *count).await,
            None => ScriptRun::default(),
        };
        let reconciled = reconcile(&d.steps, &run, self.options.check, d.elapsed);
        let name = d.plan.name.clone();
        let mut notified = self.report_host(play, &d, &run, &reconciled);
        notified.extend(&d.pending);
        if let Some(msg) = &reconciled.unreachable {
            self.report.unreachable(&name, &play.name, msg);
        }
        if reconciled.dead {
            self.kill(&name);
        }
        // Anything written makes the probe stale for later segments.
        let mut probed = d.probed;
        if script.is_some() {
            probed.invalidate();
        }
        Applied {
            host: name,
            failed: reconciled.failed,
            notified,
            owed: d.pending.clone(),
            probed: Some(probed),
        }
    }

    /// Runs the apply script on the host.
    async fn run_script(&self, d: &HostDiff, script: &[u8], count: usize) -> ScriptRun {
        let started = Instant::now();
        let name = &d.plan.name;
        let _permit = self.forks.acquire().await.expect("semaphore");
        let run = match self.connect(&d.plan).await {
            Ok(c) => {
                self.report
                    .phase(name, &format!("applying {count} change(s)"));
                c.run(script, &d.plan.r#become, self.options.timeout).await
            }
            Err(why) => Err(anyhow::anyhow!(why)),
        };
        let mut out = ScriptRun {
            took: started.elapsed(),
            ran: true,
            ..ScriptRun::default()
        };
        match run {
            Ok(exec) if exec.truncated => {
                // Tasks' own output is capped on the host; past the transport's
                // limit nothing can be trusted, so nothing is claimed.
                let why = "the apply's output exceeded the transport's limit and was cut: what ran is unknown";
                out.lost = Some((Status::Failed, why.to_owned()));
            }
            Ok(exec) => {
                let (runs, finished) = parse_apply(&self.marker, &exec.stdout_text());
                for r in runs {
                    out.results.insert(r.index, (r.ok, r.output));
                }
                if !finished && out.results.values().all(|(ok, _)| *ok) {
                    let why = format!(
                        "apply stopped early (exit {:?}): {}",
                        exec.status,
                        exec.stderr_text()
                    );
                    out.lost = Some((Status::Failed, why));
                }
            }
            // The exec itself failed: the connection is gone, the host unreachable.
            Err(e) => out.lost = Some((Status::Unreachable, format!("apply: {e:#}"))),
        }
        out
    }

    /// Reports every line; returns the handlers notified.
    fn report_host(
        &self,
        play: &Play,
        d: &HostDiff,
        run: &ScriptRun,
        reconciled: &Reconciled,
    ) -> Vec<usize> {
        let mut notified = Vec::new();
        for line in &reconciled.lines {
            let step = &d.steps[line.step];
            let task = &play.tasks[step.task];
            if matches!(line.status, Status::Changed | Status::Unknown) {
                notified.extend(handler_indices(play, task));
            }
            let output = run.results.get(&step.task).map(|(_, o)| o.as_str());
            let outcome = Outcome::new(line.status)
                .change(step.change.as_deref())
                .message(line.message.as_deref())
                .output(output)
                .took(line.elapsed);
            self.report
                .task(&d.plan.name, &play.name, task, false, outcome);
        }
        notified
    }
}

/// A host stops at its first failed task (a cross-host check may have
/// failed one late); with `hold`, pending changes are held back, reported
/// as skipped with the reason, and nothing is written.
fn hold_back(steps: &mut [Step], hold: Option<&str>) {
    if let Some(i) = steps.iter().position(|s| s.status == Status::Failed) {
        for s in &mut steps[i + 1..] {
            s.status = Status::NotRun;
            s.change = None;
            s.message = Some("not run: an earlier task failed on this host".into());
        }
    }
    if let Some(why) = hold {
        for s in steps.iter_mut().filter(|s| s.status == Status::Changed) {
            s.status = Status::Skipped;
            s.message = Some(why.to_owned());
        }
    }
}

/// The one apply script of a host: every pending change, in order. None
/// when nothing is pending.
fn build_script(
    marker: &str,
    play: &Play,
    steps: &[Step],
    vars: &serde_json::Map<String, serde_json::Value>,
) -> Option<(Vec<u8>, usize)> {
    let pending: Vec<&Step> = steps.iter().filter(|s| is_pending(s)).collect();
    if pending.is_empty() {
        return None;
    }
    let mut script = ApplyScript::new(marker);
    for s in &pending {
        let change = s.change.as_ref().expect("pending");
        // The handlers it notifies are owed from the moment it changed.
        let task = &play.tasks[s.task];
        let body = format!(
            "{}{}",
            change.script,
            super::pending::mark(play, task, vars)
        );
        script.task_with_timeout(s.task, &body, task.timeout);
    }
    Some((script.finish(), pending.len()))
}

fn is_pending(s: &Step) -> bool {
    s.change.is_some() && s.status == Status::Changed
}

/// What each planned step of a host comes to, given what the apply exec
/// brought back (or, in check mode, what it would do).
fn reconcile(steps: &[Step], run: &ScriptRun, check: bool, diff_took: Duration) -> Reconciled {
    let mut out = Reconciled::default();
    let mut lost = run.lost.clone();
    let mut lost_why: Option<String> = None;
    for (i, step) in steps.iter().enumerate() {
        let line = |status, message, elapsed| Line {
            step: i,
            status,
            message,
            elapsed,
        };
        match (step.status, run.results.get(&step.task)) {
            (Status::Changed, Some((true, _))) => {
                out.lines.push(line(Status::Changed, None, run.took));
            }
            (Status::Changed, Some((false, output))) => {
                out.failed = true;
                out.lines.push(line(
                    Status::Failed,
                    Some(output.trim().to_owned()),
                    run.took,
                ));
            }
            (Status::Changed, None) if !check => {
                // Not run: the connection was lost (the first such task says
                // why), an earlier task failed, or the run was interrupted.
                if let Some((status, msg)) = lost.take() {
                    out.dead |= status == Status::Unreachable;
                    out.failed = true;
                    lost_why = Some(msg.clone());
                    out.lines.push(line(status, Some(msg), run.took));
                } else {
                    let why = match (&lost_why, run.ran) {
                        (Some(m), _) => format!("not run: the apply stopped ({m})"),
                        (None, true) => "not run: an earlier task failed on this host".into(),
                        (None, false) => "not run: interrupted".into(),
                    };
                    out.lines
                        .push(line(Status::NotRun, Some(why), Duration::ZERO));
                }
            }
            (Status::Changed, None) if !step.change.as_ref().is_some_and(|c| c.certain) => {
                out.lines.push(line(Status::Unknown, None, diff_took));
            }
            (status, _) => {
                out.failed |= status == Status::Failed;
                out.lines
                    .push(line(status, step.message.clone(), diff_took));
            }
        }
    }
    if let Some((_, msg)) = lost {
        out.unreachable = Some(msg);
        out.dead = true;
        out.failed = true;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modules::Change;

    fn step(task: usize, status: Status) -> Step {
        Step {
            task,
            status,
            change: (status == Status::Changed).then(|| {
                Box::new(Change {
                    certain: true,
                    ..Change::default()
                })
            }),
            message: None,
            run_once: false,
            shared: None,
        }
    }

    fn statuses(r: &Reconciled) -> Vec<Status> {
        r.lines.iter().map(|l| l.status).collect()
    }

    #[test]
    fn a_failed_task_fails_the_host_and_later_ones_are_reported_as_not_run() {
        let steps = [
            step(0, Status::Changed),
            step(1, Status::Changed),
            step(2, Status::Changed),
        ];
        let mut run = ScriptRun {
            ran: true,
            ..ScriptRun::default()
        };
        run.results.insert(0, (true, String::new()));
        run.results.insert(1, (false, "boom\n".into()));
        let r = reconcile(&steps, &run, false, Duration::ZERO);
        assert_eq!(
            statuses(&r),
            [Status::Changed, Status::Failed, Status::NotRun]
        );
        assert_eq!(r.lines[1].message.as_deref(), Some("boom"));
        assert_eq!(
            r.lines[2].message.as_deref(),
            Some("not run: an earlier task failed on this host")
        );
        assert!(r.failed && !r.dead);
    }

    #[test]
    fn a_lost_connection_marks_the_first_unrun_task_and_the_host() {
        let steps = [
            step(0, Status::Ok),
            step(1, Status::Changed),
            step(2, Status::Changed),
        ];
        let run = ScriptRun {
            lost: Some((Status::Unreachable, "apply: connection lost".into())),
            ran: true,
            ..ScriptRun::default()
        };
        let r = reconcile(&steps, &run, false, Duration::ZERO);
        assert_eq!(
            statuses(&r),
            [Status::Ok, Status::Unreachable, Status::NotRun]
        );
        assert!(
            r.lines[2]
                .message
                .as_deref()
                .unwrap()
                .contains("connection lost")
        );
        assert!(r.dead && r.unreachable.is_none(), "said once, on the task");
    }

    #[test]
    fn check_mode_reports_what_would_change_and_unknowns() {
        let mut unguarded = step(1, Status::Changed);
        unguarded.change.as_mut().unwrap().certain = false;
        let steps = [step(0, Status::Changed), unguarded];
        let r = reconcile(&steps, &ScriptRun::default(), true, Duration::ZERO);
        assert_eq!(statuses(&r), [Status::Changed, Status::Unknown]);
        assert!(!r.failed);
    }

    #[test]
    fn an_interrupted_host_reports_its_pending_changes_as_not_run() {
        let steps = [step(0, Status::Ok), step(1, Status::Changed)];
        let r = reconcile(&steps, &ScriptRun::default(), false, Duration::ZERO);
        assert_eq!(statuses(&r), [Status::Ok, Status::NotRun]);
        assert_eq!(r.lines[1].message.as_deref(), Some("not run: interrupted"));
    }

    #[test]
    fn held_back_changes_are_skipped_with_the_reason() {
        let mut steps = vec![step(0, Status::Changed), step(1, Status::Ok)];
        hold_back(&mut steps, Some("not applied"));
        assert_eq!(steps[0].status, Status::Skipped);
        assert_eq!(steps[0].message.as_deref(), Some("not applied"));
        assert!(!steps.iter().any(is_pending));
    }
}
