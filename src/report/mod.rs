//! The report: one event per task and host, a recap per host, the exit
//! code, and the compliance view. Everything passes the [`Redactor`]
//! (`redact`) on the way in, so no sink can leak a secret. Sinks: the
//! terminal (`human`), JSON, JUnit, compliance.
//!
//! Owns: how outcomes are shown and counted. May not touch: hosts or
//! plans; it only receives events from the engine.

pub mod compliance;
pub mod human;
pub mod json;
pub mod junit;
pub mod merge;

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::Exit;
use crate::modules::{Change, ContentDiff};
use crate::secrets::{REDACTED, Redactor};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Changed,
    /// Check mode: the outcome cannot be known without running the task.
    Unknown,
    Skipped,
    Failed,
    Unreachable,
    /// Planned but never run: an earlier task failed, the connection was
    /// lost, or the run was interrupted. The message says which.
    NotRun,
    /// The host's change is in place but its restart was never run (the
    /// rollout stopped, or Ctrl-C): changed, not restarted. Counted apart
    /// from failed; the next apply finishes it.
    Pending,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Changed => "changed",
            Status::Unknown => "unknown",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::Unreachable => "unreachable",
            Status::NotRun => "not run",
            Status::Pending => "pending",
        }
    }
}

/// How a report is written: for people, as one JSON document, or (the
/// compliance report) as one self-contained HTML page.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Human,
    Json,
    Html,
}

/// What one task did on one host, as the engine hands it to the report.
#[derive(Debug, Clone, Copy)]
pub struct Outcome<'a> {
    pub status: Status,
    /// Details and the content diff (shown with --diff).
    pub change: Option<&'a Change>,
    pub message: Option<&'a str>,
    /// What the task printed on the host (shown with -vv).
    pub output: Option<&'a str>,
    pub duration: Duration,
}

impl<'a> Outcome<'a> {
    pub fn new(status: Status) -> Outcome<'a> {
        Outcome {
            status,
            change: None,
            message: None,
            output: None,
            duration: Duration::ZERO,
        }
    }

    pub fn change(self, change: Option<&'a Change>) -> Self {
        Outcome { change, ..self }
    }

    pub fn message(self, message: Option<&'a str>) -> Self {
        Outcome { message, ..self }
    }

    pub fn output(self, output: Option<&'a str>) -> Self {
        Outcome { output, ..self }
    }

    pub fn took(self, duration: Duration) -> Self {
        Outcome { duration, ..self }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub host: String,
    pub play: String,
    pub task: String,
    pub handler: bool,
    /// A check that can fail controls but never satisfies one by itself (k3s_unit).
    pub guard: bool,
    pub status: Status,
    /// True in check mode: `changed` means "would change".
    pub check: bool,
    /// The task's CIS control IDs, in the numbering of the host's benchmark.
    pub cis: Vec<String>,
    /// The kube-bench profile that fits the host's k3s version, once known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub benchmark: Option<String>,
    pub tags: Vec<String>,
    pub details: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// What the task printed on the host (shown with -vv).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    pub duration_ms: u128,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Counts {
    pub ok: usize,
    pub changed: usize,
    pub unknown: usize,
    pub unreachable: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_run: usize,
    /// Changed, not restarted (see [`Status::Pending`]).
    pub pending: usize,
}

/// Sinks that want events as they happen.
pub trait Sink: Send {
    /// The run starts: the hosts, and how many task outcomes each will report.
    fn start(&mut self, _planned: &BTreeMap<String, usize>) {}
    /// A host will report `n` more outcomes than planned (the handlers it notified).
    fn expect(&mut self, _host: &str, _n: usize) {}
    fn play(&mut self, _name: &str, _check: bool) {}
    /// What a host is doing now ("probing", "applying 3 changes", ... "done").
    fn phase(&mut self, _host: &str, _what: &str) {}
    /// How a host was reached (address, user, key, host key, jumps), for -vvv.
    fn connection(&mut self, _host: &str, _how: &str) {}
    /// A word from khard itself to the person watching (Ctrl-C acknowledged).
    fn note(&mut self, _text: &str) {}
    /// A host waits during a rollout (for its batch, until healthy).
    fn wait(&mut self, _host: &str, _task: &str, _wait: &Wait) {}
    fn event(&mut self, _e: &Event) {}
    /// Whether `finish` reads the run's events from the summary (the report
    /// keeps them only then: sinks that write as events come need not).
    fn reads_events(&self) -> bool {
        false
    }
    /// The last word: a sink that could not write its report says why.
    fn finish(&mut self, _report: &Summary) -> Result<(), String> {
        Ok(())
    }
}

/// A wait during a rollout: as it starts, while it lasts (about once a
/// second) and as it ends.
#[derive(Debug, Clone, PartialEq)]
pub enum Wait {
    /// What the host waits for ("until healthy").
    Start(String),
    /// Still waiting for that, this long so far.
    Still(String, Duration),
    /// How the wait ended ("healthy after 12 s").
    End(String),
}

/// Everything a run produced, for the final sinks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub check: bool,
    pub events: Vec<Event>,
    pub recap: BTreeMap<String, Counts>,
    /// SSH channels opened per host (0 for local hosts).
    pub channels: BTreeMap<String, usize>,
    pub exit_code: i32,
    pub duration_ms: u128,
    /// `khard report`: every control of each node's benchmark, judged.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub audits: Vec<crate::audit::NodeAudit>,
}

pub struct Report {
    redactor: Redactor,
    check: bool,
    diff: bool,
    inner: Mutex<Inner>,
}

struct Inner {
    /// The benchmark of each host whose k3s version is known.
    benchmarks: BTreeMap<String, String>,
    /// Kept only when a sink reads them at the end (`Sink::reads_events`).
    events: Vec<Event>,
    keep_events: bool,
    recap: BTreeMap<String, Counts>,
    sinks: Vec<Box<dyn Sink>>,
    /// Per host, the wait in progress: task, what for, since when.
    waits: BTreeMap<String, (String, String, Instant)>,
    audits: Vec<crate::audit::NodeAudit>,
}

impl Report {
    pub fn new(redactor: Redactor, check: bool, diff: bool, sinks: Vec<Box<dyn Sink>>) -> Report {
        Report {
            redactor,
            check,
            diff,
            inner: Mutex::new(Inner {
                benchmarks: BTreeMap::new(),
                events: Vec::new(),
                keep_events: sinks.iter().any(|s| s.reads_events()),
                recap: BTreeMap::new(),
                sinks,
                waits: BTreeMap::new(),
                audits: Vec::new(),
            }),
        }
    }

    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// Records the benchmark of a host, which selects the numbering of its control IDs.
    pub fn benchmark(&self, host: &str, benchmark: &str) {
        self.inner
            .lock()
            .expect("report")
            .benchmarks
            .insert(host.to_owned(), benchmark.to_owned());
    }

    /// The run starts: the hosts, and how many task outcomes each will report.
    pub fn start(&self, planned: &BTreeMap<String, usize>) {
        for s in &mut self.inner.lock().expect("report").sinks {
            s.start(planned);
        }
    }

    /// A host will report `n` more outcomes than planned (the handlers it notified).
    pub fn expect(&self, host: &str, n: usize) {
        for s in &mut self.inner.lock().expect("report").sinks {
            s.expect(host, n);
        }
    }

    /// What a host is doing now, for progress displays.
    pub fn phase(&self, host: &str, what: &str) {
        for s in &mut self.inner.lock().expect("report").sinks {
            s.phase(host, what);
        }
    }

    /// How a host was reached; secrets are scrubbed like everything else.
    /// Tells every sink something the person watching must see now.
    pub fn note(&self, text: &str) {
        let mut inner = self.inner.lock().expect("report");
        for s in &mut inner.sinks {
            s.note(text);
        }
    }

    pub fn connection(&self, host: &str, how: &str) {
        let how = self.redactor.scrub(how);
        for s in &mut self.inner.lock().expect("report").sinks {
            s.connection(host, &how);
        }
    }

    /// A host starts waiting (for its batch, until healthy) in `task`.
    pub fn wait_start(&self, host: &str, task: &str, what: &str) {
        let mut inner = self.inner.lock().expect("report");
        let what = self.redactor.scrub(what);
        inner.waits.insert(
            host.to_owned(),
            (task.to_owned(), what.clone(), Instant::now()),
        );
        for s in &mut inner.sinks {
            s.wait(host, task, &Wait::Start(what.clone()));
        }
    }

    /// The host's wait is over; `how` says how, given how long it lasted.
    pub fn wait_end(&self, host: &str, how: impl FnOnce(Duration) -> String) {
        let mut inner = self.inner.lock().expect("report");
        let Some((task, _, since)) = inner.waits.remove(host) else {
            return;
        };
        let how = self.redactor.scrub(&how(since.elapsed()));
        for s in &mut inner.sinks {
            s.wait(host, &task, &Wait::End(how.clone()));
        }
    }

    /// Tells the sinks how long each wait has lasted so far.
    pub fn wait_tick(&self) {
        let mut inner = self.inner.lock().expect("report");
        let inner = &mut *inner;
        for (host, (task, what, since)) in &inner.waits {
            let still = Wait::Still(what.clone(), since.elapsed());
            for s in &mut inner.sinks {
                s.wait(host, task, &still);
            }
        }
    }

    /// A node's audit; what it found passes the redactor like everything else.
    pub fn audit(&self, mut audit: crate::audit::NodeAudit) {
        for c in &mut audit.controls {
            c.found = self.redactor.scrub(&c.found);
            c.why = self.redactor.scrub(&c.why);
        }
        for n in &mut audit.notes {
            *n = self.redactor.scrub(n);
        }
        self.inner.lock().expect("report").audits.push(audit);
    }

    /// Makes sure a host appears in the recap even if nothing ran on it.
    pub fn host(&self, name: &str) {
        self.inner
            .lock()
            .expect("report")
            .recap
            .entry(name.to_owned())
            .or_default();
    }

    pub fn play(&self, name: &str) {
        let name = self.redactor.scrub(name);
        for s in &mut self.inner.lock().expect("report").sinks {
            s.play(&name, self.check);
        }
    }

    /// Records what one task (or handler) did on one host.
    pub fn task(
        &self,
        host: &str,
        play: &str,
        task: &crate::input::playbook::Task,
        handler: bool,
        outcome: Outcome,
    ) {
        let Outcome {
            status,
            change,
            message,
            output,
            duration,
        } = outcome;
        let scrub = |s: &str| self.redactor.scrub(s);
        let benchmark = self
            .inner
            .lock()
            .expect("report")
            .benchmarks
            .get(host)
            .cloned();
        let event = Event {
            host: host.to_owned(),
            play: scrub(play),
            task: scrub(&task.name),
            handler,
            guard: task.module.is_guard(),
            status,
            check: self.check,
            cis: task.cis_for(benchmark.as_deref()).to_vec(),
            benchmark,
            tags: task.tags.clone(),
            details: change
                .map(|c| c.details.iter().map(|d| scrub(d)).collect())
                .unwrap_or_default(),
            diff: change
                .and_then(|c| c.content.as_ref())
                .filter(|_| self.diff)
                .map(|d| self.unified(d)),
            output: output.map(scrub),
            message: message.map(scrub),
            duration_ms: duration.as_millis(),
        };
        self.push(event);
    }

    /// A host that could not be reached: one event, counted once.
    pub fn unreachable(&self, host: &str, play: &str, message: &str) {
        self.host_event(host, play, "connect", Status::Unreachable, message);
    }

    /// An event about a host that is not one of the playbook's tasks (connect, sudo check).
    pub fn host_event(&self, host: &str, play: &str, what: &str, status: Status, message: &str) {
        let event = Event {
            host: host.to_owned(),
            play: self.redactor.scrub(play),
            task: what.into(),
            handler: false,
            guard: false,
            status,
            check: self.check,
            cis: Vec::new(),
            benchmark: None,
            tags: Vec::new(),
            details: Vec::new(),
            diff: None,
            output: None,
            message: Some(self.redactor.scrub(message)),
            duration_ms: 0,
        };
        self.push(event);
    }

    fn push(&self, event: Event) {
        let mut inner = self.inner.lock().expect("report");
        let c = inner.recap.entry(event.host.clone()).or_default();
        match event.status {
            // As in Ansible, `ok` counts every task that succeeded, changed or not.
            Status::Ok => c.ok += 1,
            Status::Changed => {
                c.ok += 1;
                c.changed += 1;
            }
            Status::Unknown => {
                c.ok += 1;
                c.unknown += 1;
            }
            Status::Skipped => c.skipped += 1,
            Status::Failed => c.failed += 1,
            Status::Unreachable => c.unreachable += 1,
            Status::NotRun => c.not_run += 1,
            Status::Pending => c.pending += 1,
        }
        for s in &mut inner.sinks {
            s.event(&event);
        }
        if inner.keep_events {
            inner.events.push(event);
        }
    }

    /// A unified diff, or a note when the content is secret.
    fn unified(&self, d: &ContentDiff) -> String {
        let secret = d.secret
            || self.redactor.contains_secret(&d.after)
            || d.before
                .as_deref()
                .is_some_and(|b| self.redactor.contains_secret(b));
        // A path rendered from a secret variable is a secret too.
        let path = self.redactor.scrub(&d.path);
        if secret {
            return format!("--- {path}\n+++ {path}\n{REDACTED} (secret content is never shown)\n");
        }
        let before = d.before.clone().unwrap_or_default();
        let (from, to) = match d.before {
            Some(_) => (format!("before: {path}"), format!("after: {path}")),
            None => ("before: (absent)".to_owned(), format!("after: {path}")),
        };
        similar::TextDiff::from_lines(&before, &d.after)
            .unified_diff()
            .context_radius(3)
            .header(&from, &to)
            .to_string()
    }

    /// Ends the run: computes the exit code and hands the summary to every sink.
    pub fn finish(
        &self,
        channels: BTreeMap<String, usize>,
        duration: Duration,
        interrupted: bool,
    ) -> (Summary, Vec<String>) {
        let mut inner = self.inner.lock().expect("report");
        let exit = exit_code(&inner.recap, self.check, interrupted);
        // Moved, not copied: the run is over, and a fleet's events are the
        // largest thing khard holds.
        let summary = Summary {
            check: self.check,
            events: std::mem::take(&mut inner.events),
            recap: inner.recap.clone(),
            channels,
            exit_code: exit.code(),
            duration_ms: duration.as_millis(),
            audits: std::mem::take(&mut inner.audits),
        };
        let failures = inner
            .sinks
            .iter_mut()
            .filter_map(|s| s.finish(&summary).err())
            .collect();
        (summary, failures)
    }
}

/// Unreachable wins over failed (as in Ansible), failed over drift.
pub fn exit_code(recap: &BTreeMap<String, Counts>, check: bool, interrupted: bool) -> Exit {
    if interrupted {
        Exit::Interrupted
    } else if recap.values().any(|c| c.unreachable > 0) {
        Exit::Unreachable
    } else if recap
        .values()
        .any(|c| c.failed > 0 || c.not_run > 0 || c.pending > 0)
    {
        Exit::Failed
    } else if check && recap.values().any(|c| c.changed > 0 || c.unknown > 0) {
        Exit::Drift
    } else {
        Exit::Ok
    }
}
