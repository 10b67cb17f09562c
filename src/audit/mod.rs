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
pub mod exceptions;
#[cfg(test)]
mod faults;
pub mod flags;
pub mod judge;
pub mod test_eval;

use serde::{Deserialize, Serialize};

use evidence::Evidence;
use judge::{Verdict, judge};

/// One control's verdict on one node, with everything a reader needs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ControlResult {
    pub id: String,
    pub title: String,
    pub section: String,
    pub verdict: Verdict,
    /// Set from the verdict (also when read back from JSON).
    #[serde(skip_deserializing)]
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
    /// The khard variables that set what the control tests, with their
    /// value on this node: `cis_audit_log_maxage (now 30)`.
    pub variables: Vec<String>,
}

/// What khard offers for a control on a node: the tasks that remediate it
/// and the variables that set what it tests.
#[derive(Debug, Clone, Default)]
pub struct Fix {
    pub tasks: Vec<String>,
    pub variables: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Totals {
    pub total: usize,
    pub pass: usize,
    /// Scored controls that fail.
    pub fail: usize,
    /// Unscored controls that fail (kube-bench's WARN).
    pub warn: usize,
    /// Failing controls with an exception in force.
    pub accepted: usize,
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
            Verdict::Warn => self.warn += 1,
            Verdict::Accepted => self.accepted += 1,
            Verdict::Manual => self.manual += 1,
            Verdict::NotApplicable => self.not_applicable += 1,
            Verdict::Unknown => self.unknown += 1,
        }
    }

    pub fn sum(&mut self, other: &Totals) {
        self.total += other.total;
        self.pass += other.pass;
        self.fail += other.fail;
        self.warn += other.warn;
        self.accepted += other.accepted;
        self.manual += other.manual;
        self.not_applicable += other.not_applicable;
        self.unknown += other.unknown;
    }
}

/// Every control of a node's benchmark, judged.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeAudit {
    pub host: String,
    pub role: String,
    pub k3s_version: Option<String>,
    pub benchmark: String,
    pub totals: Totals,
    /// Totals per section of the benchmark, in its order.
    pub sections: Vec<SectionTotals>,
    pub controls: Vec<ControlResult>,
    /// Node-wide findings that no control of its benchmark carries.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SectionTotals {
    pub section: String,
    #[serde(flatten)]
    pub totals: Totals,
}

impl NodeAudit {
    /// Totals and section totals again, after verdicts changed (exceptions).
    pub fn recount(&mut self) {
        self.totals = Totals::default();
        self.sections.clear();
        for c in &self.controls {
            self.totals.add(c.verdict);
            match self.sections.last_mut() {
                Some(s) if s.section == c.section => s.totals.add(c.verdict),
                _ => {
                    let mut totals = Totals::default();
                    totals.add(c.verdict);
                    self.sections.push(SectionTotals {
                        section: c.section.clone(),
                        totals,
                    });
                }
            }
        }
    }
}

/// The benchmark name of a node whose benchmark cannot be known.
pub const UNKNOWN_BENCHMARK: &str = "unknown";

/// The benchmark of a node: the one named in its variables (`cis_benchmark`),
/// else the one k3s's self-assessment guides use for its version; None when
/// neither is known (the node could not be asked).
pub fn benchmark_for(named: Option<&str>, version: Option<&str>) -> Option<String> {
    if let Some(n) = named.filter(|n| catalogue::names().any(|k| k == *n)) {
        return Some(n.to_owned());
    }
    let minor = version.and_then(crate::k3s::facts::minor)?;
    Some(crate::k3s::facts::benchmark(minor).to_owned())
}

/// Judges every control of `benchmark` on one node (no control at all when
/// the benchmark is unknown). `fix` names what khard offers for a control.
pub fn audit_node(
    host: &str,
    benchmark: Option<&str>,
    ev: &Evidence,
    fix: &dyn Fn(&catalogue::Control) -> Fix,
) -> NodeAudit {
    let empty = catalogue::Catalogue {
        profile: UNKNOWN_BENCHMARK.to_owned(),
        controls: Vec::new(),
    };
    let catalogue = match benchmark {
        Some(name) => catalogue::load(name).expect("a benchmark from benchmark_for"),
        None => &empty,
    };
    let controls: Vec<ControlResult> = catalogue
        .controls
        .iter()
        .map(|c| {
            let j = judge(c, ev);
            // kube-bench prints an unscored failure as WARN, and so does khard.
            let verdict = match j.verdict {
                Verdict::Fail if !c.scored => Verdict::Warn,
                v => v,
            };
            let Fix { tasks, variables } = fix(c);
            ControlResult {
                id: c.id.clone(),
                title: c.title.clone(),
                section: c.section.clone(),
                verdict,
                label: verdict.label(),
                scored: c.scored,
                test: c.test.as_ref().map(test_eval::describe).unwrap_or_default(),
                found: j.found,
                why: j.why,
                remediation: c.remediation.clone().unwrap_or_default(),
                tasks,
                variables,
            }
        })
        .collect();
    let mut notes = Vec::new();
    if let Some(why) = &ev.missing {
        notes.push(format!("no evidence: {why}"));
    } else if ev.version.is_none() {
        notes.push("k3s is not installed: nothing could be judged".into());
    }
    if benchmark.is_none() {
        notes.push(
            "benchmark unknown: the node's k3s version could not be read and no cis_benchmark names one"
                .into(),
        );
    }
    let drift = judge::kernel_drift(&ev.sysctl);
    if ev.version.is_some() && !drift.is_empty() {
        notes.push(format!(
            "the live kernel differs from what the kubelet's protect-kernel-defaults requires ({}): a kubelet with that flag refuses to start",
            drift.join(", ")
        ));
    }
    let at_boot = judge::boot_drift(&ev.sysctl_boot);
    if ev.version.is_some() && !at_boot.is_empty() {
        notes.push(format!(
            "the next boot sets kernel parameters that the kubelet's protect-kernel-defaults refuses ({}): a kubelet with that flag will not start after a reboot",
            at_boot.join(", ")
        ));
    }
    if ev.version.is_some()
        && let Err(why) = &ev.sysctl_boot
    {
        notes.push(format!(
            "the kernel parameters of the next boot are unknown: {why}"
        ));
    }
    let mut audit = NodeAudit {
        host: host.to_owned(),
        role: ev.role.clone(),
        k3s_version: ev.version.clone(),
        benchmark: catalogue.profile.clone(),
        totals: Totals::default(),
        sections: Vec::new(),
        controls,
        notes,
    };
    audit.recount();
    audit
}
