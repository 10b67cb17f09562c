//! `khard report`: per node, the CIS controls that khard manages, each
//! `pass` or `fail` from the probed state (a check-mode run), plus the
//! controls the role lists as manual. A control passes on a node when every
//! task that carries it is ok there; a task that would change or failed
//! makes it fail; a control whose tasks were all skipped does not apply.
//! A guard (the k3s_unit check) can fail a control but never passes one alone.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use super::{Sink, Status, Summary};

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Control {
    pub id: String,
    /// `pass`, `fail` or `manual`.
    pub status: String,
    /// The tasks behind it, with what they reported.
    pub tasks: Vec<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct NodeReport {
    pub benchmark: Option<String>,
    pub pass: usize,
    pub fail: usize,
    pub manual: usize,
    pub controls: Vec<Control>,
}

/// Orders control IDs numerically: 1.2.9 before 1.2.10.
fn id_key(id: &str) -> Vec<u64> {
    id.split('.')
        .map(|p| p.parse().unwrap_or(u64::MAX))
        .collect()
}

/// The compliance of every host of a check-mode run.
pub fn compliance(s: &Summary, manual: &[(String, String)]) -> BTreeMap<String, NodeReport> {
    let mut out = BTreeMap::new();
    for host in s.recap.keys() {
        let events: Vec<_> = s
            .events
            .iter()
            .filter(|e| &e.host == host && !e.handler)
            .collect();
        let mut by_id: BTreeMap<String, (bool, bool, Vec<String>)> = BTreeMap::new();
        for e in &events {
            for id in &e.cis {
                let entry = by_id.entry(id.clone()).or_default();
                match e.status {
                    Status::Skipped | Status::NotRun => {}
                    Status::Ok => entry.0 |= !e.guard,
                    _ => entry.1 = true,
                }
                if !matches!(e.status, Status::Skipped | Status::NotRun) {
                    entry.2.push(format!("{}: {}", e.status.as_str(), e.task));
                }
            }
        }
        let mut controls: Vec<Control> = by_id
            .into_iter()
            .filter(|(_, (pass, fail, _))| *pass || *fail)
            .map(|(id, (_, fail, tasks))| Control {
                id,
                status: if fail { "fail" } else { "pass" }.into(),
                tasks,
            })
            .collect();
        controls.extend(manual.iter().map(|(id, what)| Control {
            id: id.clone(),
            status: "manual".into(),
            tasks: vec![what.clone()],
        }));
        controls.sort_by_key(|c| id_key(&c.id));
        let count = |st: &str| controls.iter().filter(|c| c.status == st).count();
        out.insert(
            host.clone(),
            NodeReport {
                benchmark: events.iter().find_map(|e| e.benchmark.clone()),
                pass: count("pass"),
                fail: count("fail"),
                manual: count("manual"),
                controls,
            },
        );
    }
    out
}

pub struct Compliance {
    pub json: bool,
    pub manual: Vec<(String, String)>,
    pub out: Box<dyn Write + Send>,
}

impl Sink for Compliance {
    fn finish(&mut self, s: &Summary) {
        let report = compliance(s, &self.manual);
        if self.json {
            let doc = serde_json::json!({ "hosts": report, "exit_code": s.exit_code });
            let _ = serde_json::to_writer_pretty(&mut self.out, &doc);
            let _ = writeln!(self.out);
            return;
        }
        for (host, r) in &report {
            let bench = r.benchmark.as_deref().unwrap_or("unknown benchmark");
            let _ = writeln!(
                self.out,
                "\n{host} ({bench}): {} pass, {} fail, {} manual",
                r.pass, r.fail, r.manual
            );
            for c in &r.controls {
                let first = c.tasks.first().map(String::as_str).unwrap_or("");
                let _ = writeln!(self.out, "  {:<6} {:<8} {first}", c.status, c.id);
                for t in c.tasks.iter().skip(1) {
                    let _ = writeln!(self.out, "  {:<6} {:<8} {t}", "", "");
                }
            }
        }
        let _ = self.out.flush();
    }
}
