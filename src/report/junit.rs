//! `--junit FILE`: one testcase per host × task, so CI dashboards show each
//! control on each node. Failed and unreachable are failures; in check mode,
//! drift (a pending change) is a failure too.

use std::fmt::Write as _;
use std::path::PathBuf;

use super::{Sink, Status, Summary};

pub struct Junit {
    pub path: PathBuf,
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
    let mut x = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        x,
        "<testsuites name=\"khard\" tests=\"{}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{:.3}\">",
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

impl Sink for Junit {
    fn finish(&mut self, s: &Summary) -> Result<(), String> {
        std::fs::write(&self.path, render(s)).map_err(|e| {
            format!(
                "the JUnit report could not be written to {}: {e}",
                self.path.display()
            )
        })
    }
}
