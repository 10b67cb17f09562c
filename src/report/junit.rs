//! `--junit FILE`: one testcase per host × task, so CI dashboards show each
//! control on each node. Failed and unreachable are failures; in check mode,
//! drift (a pending change) is a failure too.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::compliance::Gate;
use super::{Sink, Status, Summary};
use crate::audit::NodeAudit;
use crate::audit::judge::Verdict;

pub struct Junit {
    pub path: PathBuf,
    /// `khard report`: one testcase per control and node, failing as the gate says.
    pub gate: Option<Gate>,
}

fn escape(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_control() || *c == '\n' || *c == '\t')
        .map(|c| match c {
            '<' => "&lt;".to_owned(),
            '>' => "&gt;".to_owned(),
            '&' => "&amp;".to_owned(),
            '"' => "&quot;".to_owned(),
            '\'' => "&apos;".to_owned(),
            c => c.to_string(),
        })
        .collect()
}

pub fn render(s: &Summary) -> String {
    let failing = |st: Status| {
        matches!(st, Status::Failed | Status::Unreachable)
            || (s.check && matches!(st, Status::Changed | Status::Unknown))
    };
    let failures = s.events.iter().filter(|e| failing(e.status)).count();
    let skipped = s
        .events
        .iter()
        .filter(|e| matches!(e.status, Status::Skipped | Status::NotRun))
        .count();
    let errors = s
        .events
        .iter()
        .filter(|e| e.status == Status::Pending)
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"khard\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\" time=\"{:.3}\">",
        s.events.len(),
        s.duration_ms as f64 / 1000.0
    );
    for host in s.recap.keys() {
        let events: Vec<_> = s.events.iter().filter(|e| &e.host == host).collect();
        let f = events.iter().filter(|e| failing(e.status)).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{f}\">",
            escape(host),
            events.len()
        );
        for e in events {
            let cis = if e.cis.is_empty() {
                String::new()
            } else {
                format!(" [CIS {}]", e.cis.join(", "))
            };
            let prefix = if e.handler { "handler: " } else { "" };
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                escape(host),
                escape(&format!("{prefix}{}{cis}", e.task)),
                e.duration_ms as f64 / 1000.0
            );
            let body = [e.message.clone().unwrap_or_default(), e.details.join("\n")]
                .join("\n")
                .trim()
                .to_owned();
            if failing(e.status) {
                let kind = if s.check && matches!(e.status, Status::Changed | Status::Unknown) {
                    "drift"
                } else {
                    e.status.as_str()
                };
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"{kind}\" message=\"{kind}\">{}</failure>\n    </testcase>",
                    escape(&body)
                );
            } else if e.status == Status::Pending {
                // Counted apart from the failures: the change is there, its
                // restart is owed.
                let _ = writeln!(
                    x,
                    ">\n      <error type=\"pending\" message=\"changed, not restarted\">{}</error>\n    </testcase>",
                    escape(&body)
                );
            } else if e.status == Status::Skipped {
                let _ = writeln!(x, ">\n      <skipped/>\n    </testcase>");
            } else if e.status == Status::NotRun {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(&body)
                );
            } else {
                let _ = writeln!(x, "/>");
            }
        }
        let _ = writeln!(x, "  </testsuite>");
    }
    x.push_str("</testsuites>\n");
    x
}

/// The compliance report as JUnit: a suite per node, a testcase per control
/// (`1.2.9 Ensure that …`). What fails the gate is a failure; pass is a
/// plain testcase; the rest is skipped with its verdict and why.
pub fn render_audits(audits: &[NodeAudit], gate: Gate) -> String {
    let all: Vec<_> = audits.iter().flat_map(|a| &a.controls).collect();
    let failures = all.iter().filter(|c| gate.fails(c.verdict)).count();
    let skipped = all
        .iter()
        .filter(|c| !gate.fails(c.verdict) && c.verdict != Verdict::Pass)
        .count();
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"khard report\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\">",
        all.len()
    );
    for a in audits {
        let f = a.controls.iter().filter(|c| gate.fails(c.verdict)).count();
        let _ = writeln!(
            x,
            "  <testsuite name=\"{} ({})\" tests=\"{}\" failures=\"{f}\">",
            escape(&a.host),
            escape(&a.benchmark),
            a.controls.len()
        );
        if a.controls.is_empty() {
            // A node with no benchmark (unreachable): one failing case says so.
            let why = a.notes.join("; ");
            let _ = writeln!(
                x,
                "    <testcase classname=\"{}\" name=\"benchmark\">\n      <error type=\"unknown\" message=\"{}\"/>\n    </testcase>",
                escape(&a.host),
                escape(&why)
            );
        }
        for c in &a.controls {
            let _ = write!(
                x,
                "    <testcase classname=\"{}\" name=\"{}\"",
                escape(&a.host),
                escape(&format!("{} {}", c.id, c.title))
            );
            let body = [
                ("found: ", &c.found),
                ("wants: ", &c.test),
                ("", &c.why),
                ("remediation: ", &c.remediation),
            ]
            .into_iter()
            .filter(|(_, text)| !text.is_empty())
            .map(|(label, text)| format!("{label}{text}"))
            .collect::<Vec<_>>()
            .join("\n");
            if gate.fails(c.verdict) {
                let _ = writeln!(
                    x,
                    ">\n      <failure type=\"{}\" message=\"{}\">{}</failure>\n    </testcase>",
                    c.label,
                    escape(&format!("{}: {}", c.label, c.found)),
                    escape(&body)
                );
            } else if c.verdict == Verdict::Pass {
                let _ = writeln!(x, "/>");
            } else {
                let _ = writeln!(
                    x,
                    ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                    escape(&format!("{}: {}", c.label, c.why))
                );
            }
        }
        let _ = writeln!(x, "  </testsuite>");
    }
    x.push_str("</testsuites>\n");
    x
}

impl Sink for Junit {
    fn reads_events(&self) -> bool {
        self.gate.is_none()
    }

    fn finish(&mut self, s: &Summary) -> Result<(), String> {
        let text = match self.gate {
            Some(gate) => render_audits(&s.audits, gate),
            None => render(s),
        };
        std::fs::write(&self.path, text).map_err(|e| {
            format!(
                "the JUnit report could not be written to {}: {e}",
                self.path.display()
            )
        })
    }
}
