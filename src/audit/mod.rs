//! The compliance audit: what the benchmark itself checks on a node,
//! judged from evidence read on the node (the effective k3s configuration
//! with k3s's own defaults, file modes and owners, live sysctls, the API),
//! never from khard's variables.
//!
//! Owns: the catalogues, the evidence a node must give, the verdicts.
//! May not touch: hosts or the engine; the engine runs the probe this
//! module asks for and hands back what the node answered.

pub mod catalogue;
pub mod evidence;
#[cfg(test)]
mod faults;
pub mod flags;
pub mod judge;
pub mod test_eval;

use serde::Serialize;

use evidence::Evidence;
use judge::{Verdict, judge};

/// One control's verdict on one node, with everything a reader needs.
#[derive(Debug, Clone, Serialize)]
pub struct ControlResult {
    pub id: String,
    pub title: String,
    pub section: String,
    pub verdict: Verdict,
    pub label: &'static str,
    /// Whether the benchmark scores it (kube-bench prints an unscored failure as WARN).
    pub scored: bool,
    /// The benchmark's test, in words.
    pub test: String,
    pub found: String,
    /// Why it is not applicable, manual or unknown.
    pub why: String,
    pub remediation: String,
    /// The khard tasks that remediate it.
    pub tasks: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Totals {
    pub total: usize,
    pub pass: usize,
    pub fail: usize,
    pub manual: usize,
    pub not_applicable: usize,
    pub unknown: usize,
}

impl Totals {
    pub fn add(&mut self, v: Verdict) {
        self.total += 1;
        match v {
            Verdict::Pass => self.pass += 1,
            Verdict::Fail => self.fail += 1,
            Verdict::Manual => self.manual += 1,
            Verdict::NotApplicable => self.not_applicable += 1,
            Verdict::Unknown => self.unknown += 1,
        }
    }

    pub fn sum(&mut self, other: &Totals) {
        self.total += other.total;
        self.pass += other.pass;
        self.fail += other.fail;
        self.manual += other.manual;
        self.not_applicable += other.not_applicable;
        self.unknown += other.unknown;
    }
}

/// Every control of a node's benchmark, judged.
#[derive(Debug, Clone, Serialize)]
pub struct NodeAudit {
    pub host: String,
    pub role: String,
    pub k3s_version: Option<String>,
    pub benchmark: String,
    pub totals: Totals,
    pub controls: Vec<ControlResult>,
    /// Node-wide findings that no control of its benchmark carries.
    pub notes: Vec<String>,
}

/// The benchmark of a node: the one named in its variables (`cis_benchmark`),
/// else the one k3s's self-assessment guides use for its version, else the
/// newest (when the version is unknown every judged control is unknown anyway).
pub fn benchmark_for(named: Option<&str>, version: Option<&str>) -> String {
    if let Some(n) = named.filter(|n| catalogue::names().any(|k| k == *n)) {
        return n.to_owned();
    }
    match version.and_then(crate::k3s::facts::minor) {
        Some(minor) => crate::k3s::facts::benchmark(minor).to_owned(),
        None => catalogue::names().last().expect("catalogues").to_owned(),
    }
}

/// Judges every control of `benchmark` on one node. `tasks` names the khard
/// tasks that remediate a control ID of that benchmark.
pub fn audit_node(
    host: &str,
    benchmark: &str,
    ev: &Evidence,
    tasks: &dyn Fn(&str) -> Vec<String>,
) -> NodeAudit {
    let catalogue = catalogue::load(benchmark).expect("a benchmark from benchmark_for");
    let mut totals = Totals::default();
    let controls: Vec<ControlResult> = catalogue
        .controls
        .iter()
        .map(|c| {
            let j = judge(c, ev);
            totals.add(j.verdict);
            ControlResult {
                id: c.id.clone(),
                title: c.title.clone(),
                section: c.section.clone(),
                verdict: j.verdict,
                label: j.verdict.label(),
                scored: c.scored,
                test: c.test.as_ref().map(test_eval::describe).unwrap_or_default(),
                found: j.found,
                why: j.why,
                remediation: c.remediation.clone().unwrap_or_default(),
                tasks: tasks(&c.id),
            }
        })
        .collect();
    let mut notes = Vec::new();
    if let Some(why) = &ev.missing {
        notes.push(format!("no evidence: {why}"));
    } else if ev.version.is_none() {
        notes.push("k3s is not installed: nothing could be judged".into());
    }
    let drift = judge::kernel_drift(&ev.sysctl);
    if ev.version.is_some() && !drift.is_empty() {
        notes.push(format!(
            "the live kernel differs from what the kubelet's protect-kernel-defaults requires ({}): a kubelet with that flag refuses to start",
            drift.join(", ")
        ));
    }
    NodeAudit {
        host: host.to_owned(),
        role: ev.role.clone(),
        k3s_version: ev.version.clone(),
        benchmark: catalogue.profile.clone(),
        totals,
        controls,
        notes,
    }
}
