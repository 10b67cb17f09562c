//! The terminal report: a line per task and host as it finishes, then a
//! recap in Ansible's format.

use std::io::Write;

use super::{Event, Sink, Status, Summary};

pub struct Human {
    /// Show change details and remote output (-v).
    pub verbose: bool,
    /// Show unified diffs (--diff).
    pub diff: bool,
    /// Print only the recap (-q).
    pub quiet: bool,
    pub out: Box<dyn Write + Send>,
}

impl Sink for Human {
    fn play(&mut self, name: &str, check: bool) {
        if !self.quiet {
            let mode = if check {
                " (check mode: nothing is changed)"
            } else {
                ""
            };
            let _ = writeln!(self.out, "\nPLAY [{name}]{mode}");
        }
    }

    fn event(&mut self, e: &Event) {
        if self.quiet {
            return;
        }
        let label = match (e.status, e.check) {
            (Status::Changed, true) => "would change",
            (s, _) => s.as_str(),
        };
        let kind = if e.handler { "handler " } else { "" };
        let mut line = format!("{label}: [{}] {kind}{}", e.host, e.task);
        if let Some(m) = &e.message {
            line.push_str(&format!(" => {m}"));
        }
        let _ = writeln!(self.out, "{line}");
        if self.verbose || self.diff {
            for d in &e.details {
                let _ = writeln!(self.out, "    {d}");
            }
        }
        if let Some(diff) = e.diff.as_ref().filter(|_| self.diff) {
            for l in diff.lines() {
                let _ = writeln!(self.out, "    {l}");
            }
        }
    }

    fn finish(&mut self, s: &Summary) {
        let _ = writeln!(self.out, "\nPLAY RECAP");
        for (host, c) in &s.recap {
            let mut line = format!(
                "{host:<26} : ok={:<4} changed={:<4} unreachable={:<4} failed={:<4} skipped={:<4}",
                c.ok, c.changed, c.unreachable, c.failed, c.skipped
            );
            if s.check {
                line.push_str(&format!(" unknown={}", c.unknown));
            }
            let _ = writeln!(self.out, "{}", line.trim_end());
        }
        let _ = self.out.flush();
    }
}
