//! The terminal report: a line per task and host as it finishes, then a
//! recap in Ansible's format. In a terminal, indicatif shows one line per
//! active host with what it is doing or waiting for, and an overall bar of
//! task outcomes with the counts; without one (CI logs), plain lines only,
//! no escape codes, and a line when a wait starts, every 30 s, and when it ends.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Counts, Event, Sink, Status, Summary, Wait};
use crate::terminal::{lines, one_line};

pub struct Human {
    /// 1: change details; 2: also remote output (-v, -vv).
    pub verbose: u8,
    /// Show unified diffs (--diff).
    pub diff: bool,
    /// Print only the recap (-q).
    pub quiet: bool,
    pub color: bool,
    pub out: Box<dyn Write + Send>,
    /// Progress bars, when stdout is a terminal.
    pub progress: Option<Progress>,
    /// What happened, per task, for the summary at the end.
    pub tasks: TaskSummary,
    /// Per waiting host, how many 30-second marks its wait has printed (plain mode).
    pub waits: HashMap<String, u64>,
}

/// Without a terminal, a wait prints a line when it starts, every this
/// many seconds while it lasts, and when it ends.
const PLAIN_WAIT_EVERY: u64 = 30;

/// Per task (in the order first seen): the hosts it changed and failed on,
/// and how many skip lines were folded.
#[derive(Default)]
pub struct TaskSummary {
    order: Vec<String>,
    by_task: HashMap<String, TaskHosts>,
    folded_skips: usize,
    /// Tasks not run, folded by reason: (tasks, hosts).
    folded_not_run: BTreeMap<String, (usize, BTreeSet<String>)>,
}

/// The hosts a task changed (or would change), failed on, or could not judge.
#[derive(Debug, Clone, Default)]
struct TaskHosts {
    changed: Vec<String>,
    failed: Vec<String>,
    unknown: Vec<String>,
}

/// In a terminal: a line per active host saying what it does or waits for,
/// and an overall bar counting task outcomes (so it moves during a rollout,
/// when no host is finished yet).
pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: HashMap<String, ProgressBar>,
    /// Per host: outcomes expected, outcomes seen.
    tasks: HashMap<String, (u64, u64)>,
    counts: Counts,
}

impl Progress {
    pub fn new() -> Progress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} steps  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Progress {
            multi,
            overall,
            hosts: HashMap::new(),
            tasks: HashMap::new(),
            counts: Counts::default(),
        }
    }

    /// Moves the bar by one outcome of `host`. An unreachable host reports
    /// nothing more: what it would have reported counts as done. A task
    /// skipped by its `when:` was never work: it leaves the bar's length
    /// instead of filling it, so what remains is what will run (during a
    /// rollout, the restarts: the bar moves with each).
    fn count(&mut self, host: &str, status: Status) {
        let (expected, seen) = self.tasks.entry(host.to_owned()).or_default();
        if status == Status::Skipped && *seen < *expected {
            *expected -= 1;
            let len = self.overall.length().unwrap_or(0);
            self.overall.set_length(len.saturating_sub(1));
            return;
        }
        *seen += 1;
        if *seen > *expected {
            *expected = *seen;
            self.overall.inc_length(1);
        }
        let mut step = 1;
        if status == Status::Unreachable {
            step += *expected - *seen;
            *seen = *expected;
        }
        self.overall.inc(step);
    }

    /// Shows what a host is doing on its own line, adding the line if needed.
    fn show(&mut self, host: &str, what: &str) {
        let bar = self.hosts.entry(host.to_owned()).or_insert_with(|| {
            let bar = self.multi.add(ProgressBar::new_spinner());
            bar.set_style(
                ProgressStyle::with_template("  {spinner} {prefix:.bold} {msg}")
                    .expect("valid template"),
            );
            bar.set_prefix(host.to_owned());
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        });
        bar.set_message(what.to_owned());
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// An event's text as a terminal may show it (see `terminal`).
fn visible(e: &Event) -> Event {
    let mut e = e.clone();
    e.host = one_line(&e.host);
    e.play = one_line(&e.play);
    e.task = one_line(&e.task);
    e.message = e.message.as_deref().map(one_line);
    e.details = e.details.iter().map(|d| one_line(d)).collect();
    e.diff = e.diff.as_deref().map(lines);
    e.output = e.output.as_deref().map(lines);
    e
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

fn paint(color: bool, code: &str, text: &str) -> String {
    if color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn status_color(s: Status) -> &'static str {
    match s {
        Status::Ok => "32",
        Status::Changed | Status::Unknown => "33",
        Status::Skipped | Status::NotRun => "36",
        Status::Pending => "35",
        Status::Failed | Status::Unreachable => "31",
    }
}

impl Human {
    fn line(&mut self, text: &str) {
        match &self.progress {
            Some(p) => {
                let _ = p.multi.println(text);
            }
            None => {
                let _ = writeln!(self.out, "{text}");
            }
        }
    }
}

impl Sink for Human {
    fn start(&mut self, planned: &BTreeMap<String, usize>) {
        if let Some(p) = self.progress.as_mut() {
            for (host, n) in planned {
                p.tasks.insert(host.clone(), (*n as u64, 0));
            }
            p.overall.set_length(planned.values().sum::<usize>() as u64);
        }
    }

    fn expect(&mut self, host: &str, n: usize) {
        if let Some(p) = self.progress.as_mut() {
            p.tasks.entry(host.to_owned()).or_default().0 += n as u64;
            p.overall.inc_length(n as u64);
        }
    }

    fn play(&mut self, name: &str, check: bool) {
        let name = &one_line(name);
        if !self.quiet {
            let mode = if check {
                " (check mode: nothing is changed)"
            } else {
                ""
            };
            self.line(&format!("\nPLAY [{name}]{mode}"));
        }
    }

    /// In a terminal the bars redraw over stderr: the note goes above them.
    fn note(&mut self, text: &str) {
        if let Some(p) = &self.progress {
            let _ = p.multi.println(one_line(text));
        }
    }

    fn connection(&mut self, host: &str, how: &str) {
        let (host, how) = (&one_line(host), &one_line(how));
        if self.verbose >= 3 {
            self.line(&format!("connected: [{host}] {how}"));
        }
    }

    fn phase(&mut self, host: &str, what: &str) {
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        let what = &one_line(what);
        if what == "done" {
            if let Some(bar) = p.hosts.remove(host) {
                bar.finish_and_clear();
            }
            return;
        }
        p.show(host, what);
    }

    fn wait(&mut self, host: &str, task: &str, wait: &Wait) {
        let task = &one_line(task);
        let wait = &match wait {
            Wait::Start(what) => Wait::Start(one_line(what)),
            Wait::Still(what, d) => Wait::Still(one_line(what), *d),
            Wait::End(how) => Wait::End(one_line(how)),
        };
        if let Some(p) = self.progress.as_mut() {
            match wait {
                Wait::Start(what) => p.show(host, &format!("{task}: waiting {what}")),
                Wait::Still(what, d) => {
                    p.show(host, &format!("{task}: waiting {what} ({} s)", d.as_secs()))
                }
                Wait::End(_) => {}
            }
            return;
        }
        if self.quiet {
            return;
        }
        let line = match wait {
            Wait::Start(what) => {
                self.waits.insert(host.to_owned(), 0);
                format!("waiting: [{host}] {task} => {what}")
            }
            Wait::Still(what, d) => {
                let marks = d.as_secs() / PLAIN_WAIT_EVERY;
                let printed = self.waits.entry(host.to_owned()).or_default();
                if marks <= *printed {
                    return;
                }
                *printed = marks;
                let secs = marks * PLAIN_WAIT_EVERY;
                format!("still waiting: [{host}] {task} => {what} ({secs} s)")
            }
            Wait::End(how) => {
                self.waits.remove(host);
                format!("waited: [{host}] {task} => {how}")
            }
        };
        self.line(&line);
    }

    fn event(&mut self, e: &Event) {
        let e = &visible(e);
        if let Some(p) = self.progress.as_mut() {
            p.count(&e.host, e.status);
            let c = &mut p.counts;
            match e.status {
                Status::Ok => c.ok += 1,
                // As in the recap: ok counts every task that succeeded.
                Status::Changed | Status::Unknown => {
                    c.ok += 1;
                    c.changed += 1;
                }
                Status::Failed => c.failed += 1,
                Status::Unreachable => c.unreachable += 1,
                Status::Skipped | Status::NotRun => c.skipped += 1,
                Status::Pending => c.pending += 1,
            }
            let msg = format!(
                "ok={} changed={} failed={} unreachable={}",
                c.ok, c.changed, c.failed, c.unreachable
            );
            p.overall.set_message(msg);
            // The host's line says what it does now: a handler that finished,
            // a failure, an unreachable or pending host end what it showed
            // (it comes back when the host does something else).
            let stopped = matches!(
                e.status,
                Status::Failed | Status::Unreachable | Status::Pending
            );
            if (stopped || e.handler)
                && let Some(bar) = p.hosts.remove(&e.host)
            {
                bar.finish_and_clear();
            }
        }
        let name = format!("{}{}", if e.handler { "handler " } else { "" }, e.task);
        if matches!(
            e.status,
            Status::Changed | Status::Unknown | Status::Failed | Status::Unreachable
        ) && e.task != "connect"
        {
            let t = &mut self.tasks;
            if !t.by_task.contains_key(&name) {
                t.order.push(name.clone());
            }
            let entry = t.by_task.entry(name).or_default();
            match e.status {
                Status::Failed | Status::Unreachable => entry.failed.push(e.host.clone()),
                // Not "would change": whether it would is what is unknown.
                Status::Unknown => entry.unknown.push(e.host.clone()),
                _ => entry.changed.push(e.host.clone()),
            }
        }
        // -q keeps why something failed; everything else waits for the recap.
        let failure = matches!(e.status, Status::Failed | Status::Unreachable);
        if self.quiet && !failure {
            return;
        }
        // A task whose `when:` is false on a host says nothing new: counted, shown with -v.
        let plain_skip = e.status == Status::Skipped
            && e.message.is_none()
            && e.details.is_empty()
            && !e.handler;
        if plain_skip && self.verbose == 0 {
            self.tasks.folded_skips += 1;
            return;
        }
        // Tasks a stopped host never ran repeat one reason many times: one
        // line per reason in the recap instead (-v lists them), so the
        // failures that stopped them stay in sight.
        if e.status == Status::NotRun && !e.handler && self.verbose == 0 {
            let why = e.message.clone().unwrap_or_else(|| "not run".into());
            let entry = self.tasks.folded_not_run.entry(why).or_default();
            entry.0 += 1;
            entry.1.insert(e.host.clone());
            return;
        }
        let label = match (e.status, e.check) {
            (Status::Changed, true) => "would change",
            (s, _) => s.as_str(),
        };
        let kind = if e.handler { "handler " } else { "" };
        let mut line = format!(
            "{}: [{}] {kind}{}",
            paint(self.color, status_color(e.status), label),
            e.host,
            e.task
        );
        if let Some(m) = &e.message {
            line.push_str(&format!(" => {m}"));
        }
        let mut text = vec![line];
        if self.verbose > 0 || self.diff {
            text.extend(e.details.iter().map(|d| format!("    {d}")));
        }
        if let Some(diff) = e.diff.as_ref().filter(|_| self.diff) {
            for l in diff.lines() {
                let code = if l.starts_with('+') {
                    "32"
                } else if l.starts_with('-') {
                    "31"
                } else {
                    "0"
                };
                text.push(format!("    {}", paint(self.color && code != "0", code, l)));
            }
        }
        if let Some(out) = e
            .output
            .as_ref()
            .filter(|o| self.verbose > 1 && !o.trim().is_empty())
        {
            text.extend(out.lines().map(|l| format!("    | {l}")));
        }
        for l in text {
            self.line(&l);
        }
    }

    fn finish(&mut self, s: &Summary) -> Result<(), String> {
        if let Some(p) = self.progress.take() {
            for bar in p.hosts.values() {
                bar.finish_and_clear();
            }
            p.overall.finish_and_clear();
            let _ = p.multi.clear();
        }
        if !self.quiet {
            for (why, (tasks, hosts)) in &self.tasks.folded_not_run {
                let hosts: Vec<&str> = hosts.iter().map(String::as_str).collect();
                let _ = writeln!(
                    self.out,
                    "{why}: {tasks} task(s) on {} ({}); -v lists them",
                    plural(hosts.len(), "host"),
                    hosts.join(", ")
                );
            }
        }
        if self.tasks.folded_skips > 0 && !self.quiet {
            let _ = writeln!(
                self.out,
                "({} skipped task(s) whose `when:` is false not shown; -v lists them)",
                self.tasks.folded_skips
            );
        }
        // Which hosts each task changed or failed on, task by task.
        if !self.quiet && !self.tasks.order.is_empty() {
            let _ = writeln!(self.out, "\nTASK SUMMARY");
            let verb = if s.check { "would change" } else { "changed" };
            for name in &self.tasks.order {
                // Hosts in name order, not in the order they answered.
                let TaskHosts {
                    mut changed,
                    mut failed,
                    mut unknown,
                } = self.tasks.by_task[name].clone();
                changed.sort();
                failed.sort();
                unknown.sort();
                let mut parts = Vec::new();
                if !changed.is_empty() {
                    parts.push(format!(
                        "{verb} on {} ({})",
                        changed.len(),
                        changed.join(", ")
                    ));
                }
                if !unknown.is_empty() {
                    parts.push(format!(
                        "unknown on {} ({})",
                        unknown.len(),
                        unknown.join(", ")
                    ));
                }
                if !failed.is_empty() {
                    parts.push(format!(
                        "failed on {} ({})",
                        failed.len(),
                        failed.join(", ")
                    ));
                }
                let _ = writeln!(self.out, "{name}: {}", parts.join("; "));
            }
        }
        let _ = writeln!(self.out, "\nPLAY RECAP");
        for (host, c) in &s.recap {
            let host = one_line(host);
            let name = if c.failed + c.unreachable > 0 {
                paint(self.color, "31", &format!("{host:<26}"))
            } else if c.changed > 0 {
                paint(self.color, "33", &format!("{host:<26}"))
            } else {
                paint(self.color, "32", &format!("{host:<26}"))
            };
            let mut line = format!(
                "{name} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={:<4}",
                c.ok, c.changed, c.unreachable, c.failed, c.skipped
            );
            if s.check {
                line.push_str(&format!(" unknown={}", c.unknown));
            }
            if c.not_run > 0 || c.pending > 0 {
                line.push_str(&format!(" not_run={:<4}", c.not_run));
            }
            if c.pending > 0 {
                line.push_str(&format!(" pending={}", c.pending));
            }
            let _ = writeln!(self.out, "{}", line.trim_end());
        }
        let _ = self.out.flush();
        // Lines for a person: a closed terminal or pipe is not a report lost.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn plain(out: &Shared) -> Human {
        Human {
            verbose: 0,
            diff: false,
            quiet: false,
            color: false,
            out: Box::new(out.clone()),
            progress: None,
            tasks: TaskSummary::default(),
            waits: HashMap::new(),
        }
    }

    #[test]
    fn without_a_terminal_a_wait_prints_when_it_starts_every_30_s_and_when_it_ends() {
        let out = Shared::default();
        let mut human = plain(&out);
        let what = "until healthy".to_owned();
        let task = "handler restart k3s";
        human.wait("s1", task, &Wait::Start(what.clone()));
        for secs in [1, 2, 29, 30, 31, 45, 59, 60, 61, 89] {
            human.wait(
                "s1",
                task,
                &Wait::Still(what.clone(), Duration::from_secs(secs)),
            );
        }
        human.wait("s1", task, &Wait::End("healthy after 89 s".into()));
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "waiting: [s1] handler restart k3s => until healthy\n\
             still waiting: [s1] handler restart k3s => until healthy (30 s)\n\
             still waiting: [s1] handler restart k3s => until healthy (60 s)\n\
             waited: [s1] handler restart k3s => healthy after 89 s\n"
        );
    }

    #[test]
    fn quiet_prints_no_waits() {
        let out = Shared::default();
        let mut human = plain(&out);
        human.quiet = true;
        human.wait("s1", "t", &Wait::Start("until healthy".into()));
        human.wait(
            "s1",
            "t",
            &Wait::Still("until healthy".into(), Duration::from_secs(90)),
        );
        assert!(out.0.lock().unwrap().is_empty());
    }
}
