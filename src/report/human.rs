//! The terminal report: a line per task and host as it finishes, then a
//! recap in Ansible's format. In a terminal, indicatif shows one line per
//! active host with what it is doing and an overall bar with the counts;
//! without one (CI logs), plain lines only, no escape codes.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::{Counts, Event, Sink, Status, Summary};

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
}

/// Per task (in the order first seen): the hosts it changed and failed on,
/// and how many skip lines were folded.
#[derive(Default)]
pub struct TaskSummary {
    order: Vec<String>,
    by_task: HashMap<String, (Vec<String>, Vec<String>)>,
    folded_skips: usize,
}

pub struct Progress {
    multi: MultiProgress,
    overall: ProgressBar,
    hosts: HashMap<String, ProgressBar>,
    /// Hosts already counted as done (a host may take part in several plays).
    done: std::collections::HashSet<String>,
    counts: Counts,
}

impl Progress {
    pub fn new() -> Progress {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stdout());
        let overall = multi.add(ProgressBar::new(0));
        overall.set_style(
            ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} hosts  {msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        overall.enable_steady_tick(Duration::from_millis(200));
        Progress {
            multi,
            overall,
            hosts: HashMap::new(),
            done: Default::default(),
            counts: Counts::default(),
        }
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
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
    fn start(&mut self, hosts: usize) {
        if let Some(p) = &self.progress {
            p.overall.set_length(hosts as u64);
        }
    }

    fn play(&mut self, name: &str, check: bool) {
        if !self.quiet {
            let mode = if check {
                " (check mode: nothing is changed)"
            } else {
                ""
            };
            self.line(&format!("\nPLAY [{name}]{mode}"));
        }
    }

    fn connection(&mut self, host: &str, how: &str) {
        if self.verbose >= 3 {
            self.line(&format!("connected: [{host}] {how}"));
        }
    }

    fn phase(&mut self, host: &str, what: &str) {
        let Some(p) = self.progress.as_mut() else {
            return;
        };
        if what == "done" {
            if let Some(bar) = p.hosts.remove(host) {
                bar.finish_and_clear();
            }
            if p.done.insert(host.to_owned()) {
                p.overall.inc(1);
            }
            return;
        }
        let bar = p.hosts.entry(host.to_owned()).or_insert_with(|| {
            let bar = p.multi.add(ProgressBar::new_spinner());
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

    fn event(&mut self, e: &Event) {
        if let Some(p) = self.progress.as_mut() {
            let c = &mut p.counts;
            match e.status {
                Status::Ok => c.ok += 1,
                Status::Changed | Status::Unknown => c.changed += 1,
                Status::Failed => c.failed += 1,
                Status::Unreachable => c.unreachable += 1,
                Status::Skipped | Status::NotRun => c.skipped += 1,
            }
            let msg = format!(
                "ok={} changed={} failed={} unreachable={}",
                c.ok, c.changed, c.failed, c.unreachable
            );
            p.overall.set_message(msg);
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
                Status::Failed | Status::Unreachable => entry.1.push(e.host.clone()),
                _ => entry.0.push(e.host.clone()),
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

    fn finish(&mut self, s: &Summary) {
        if let Some(p) = self.progress.take() {
            for bar in p.hosts.values() {
                bar.finish_and_clear();
            }
            p.overall.finish_and_clear();
            let _ = p.multi.clear();
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
                let (changed, failed) = &self.tasks.by_task[name];
                let mut parts = Vec::new();
                if !changed.is_empty() {
                    parts.push(format!(
                        "{verb} on {} ({})",
                        changed.len(),
                        changed.join(", ")
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
            if c.not_run > 0 {
                line.push_str(&format!(" not_run={}", c.not_run));
            }
            let _ = writeln!(self.out, "{}", line.trim_end());
        }
        let _ = self.out.flush();
    }
}
