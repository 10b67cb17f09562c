//! Accepted exceptions: an auditor's record that a failing control is known
//! and accepted on some nodes, by whom, why and until when. In force, it
//! turns the control's FAIL or WARN into ACCEPTED in every format; expired,
//! the control fails again and says the exception ran out.

use serde::Deserialize;

use super::NodeAudit;
use super::judge::Verdict;

/// One entry of the exceptions file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Exception {
    /// The control's ID in its benchmark (`1.2.9`).
    pub control: String,
    /// Only on nodes whose name matches this pattern (`*`, `server-*`, `s1`).
    #[serde(default = "every_node")]
    pub nodes: String,
    /// Only in this benchmark (`k3s-cis-1.10`); every benchmark when unset.
    #[serde(default)]
    pub benchmark: Option<String>,
    pub reason: String,
    /// The last day it holds, YYYY-MM-DD (UTC).
    pub expires: String,
    pub accepted_by: String,
    /// The line of the file it starts at, for messages.
    #[serde(skip)]
    pub line: usize,
}

fn every_node() -> String {
    "*".to_owned()
}

impl Exception {
    fn covers(&self, audit: &NodeAudit, id: &str) -> bool {
        self.control == id
            && self
                .benchmark
                .as_ref()
                .is_none_or(|b| *b == audit.benchmark)
            && crate::lang::glob::Glob::HOSTS.matches(&self.nodes, &audit.host)
    }
}

/// Whether `date` is a plausible YYYY-MM-DD (so string order is date order).
pub fn is_date(date: &str) -> bool {
    let b = date.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
        && (1..=12).contains(&date[5..7].parse::<u32>().unwrap_or(0))
        && (1..=31).contains(&date[8..10].parse::<u32>().unwrap_or(0))
}

/// Applies the exceptions to a node's audit, as of `today` (YYYY-MM-DD).
pub fn apply(audit: &mut NodeAudit, exceptions: &[Exception], today: &str) {
    let mut changed = false;
    for i in 0..audit.controls.len() {
        let c = &audit.controls[i];
        if !matches!(c.verdict, Verdict::Fail | Verdict::Warn) {
            continue;
        }
        let Some(e) = exceptions.iter().find(|e| e.covers(audit, &c.id)) else {
            continue;
        };
        let c = &mut audit.controls[i];
        if e.expires.as_str() >= today {
            c.verdict = Verdict::Accepted;
            c.label = Verdict::Accepted.label();
            c.why = format!(
                "exception accepted by {} until {}: {}",
                e.accepted_by, e.expires, e.reason
            );
            changed = true;
        } else {
            c.why = format!(
                "the exception accepted by {} expired on {} ({}); it fails again",
                e.accepted_by, e.expires, e.reason
            );
        }
    }
    if changed {
        audit.recount();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::evidence::Evidence;
    use crate::audit::{Fix, audit_node};

    fn failing_audit(host: &str) -> NodeAudit {
        // A node whose version is known but whose flags could not be read is
        // all unknown; make two controls fail by hand for the test.
        let ev = Evidence::unavailable("server", "test");
        let mut a = audit_node(host, Some("k3s-cis-1.10"), &ev, &|_| Fix::default());
        for c in a.controls.iter_mut() {
            if c.id == "1.2.9" {
                c.verdict = Verdict::Fail;
            }
            if c.id == "1.2.16" {
                c.verdict = Verdict::Warn;
            }
        }
        a.recount();
        a
    }

    fn exception(control: &str, nodes: &str, expires: &str) -> Exception {
        Exception {
            control: control.into(),
            nodes: nodes.into(),
            benchmark: None,
            reason: "EventRateLimit breaks our batch jobs".into(),
            expires: expires.into(),
            accepted_by: "jane@example.com".into(),
            line: 1,
        }
    }

    #[test]
    fn an_exception_in_force_accepts_and_an_expired_one_fails_again() {
        let mut a = failing_audit("server-1");
        assert_eq!(a.totals.fail, 1);
        assert_eq!(a.totals.warn, 1);
        apply(
            &mut a,
            &[
                exception("1.2.9", "server-*", "2027-01-31"),
                exception("1.2.16", "*", "2026-12-06"),
            ],
            "2026-12-07",
        );
        let c = a.controls.iter().find(|c| c.id == "1.2.9").unwrap();
        assert_eq!(c.verdict, Verdict::Accepted);
        assert_eq!(c.label, "ACCEPTED");
        assert!(
            c.why.contains("jane@example.com until 2027-01-31"),
            "{}",
            c.why
        );
        let w = a.controls.iter().find(|c| c.id == "1.2.16").unwrap();
        assert_eq!(w.verdict, Verdict::Warn);
        assert!(w.why.contains("expired on 2026-12-06"), "{}", w.why);
        assert_eq!((a.totals.fail, a.totals.warn, a.totals.accepted), (0, 1, 1));
        let section: usize = a.sections.iter().map(|s| s.totals.accepted).sum();
        assert_eq!(section, 1);
    }

    #[test]
    fn the_last_day_still_holds_and_other_nodes_or_benchmarks_are_untouched() {
        let mut a = failing_audit("agent-1");
        apply(
            &mut a,
            &[exception("1.2.9", "server-*", "2027-01-31")],
            "2026-12-07",
        );
        assert_eq!(a.totals.accepted, 0, "another node pattern");
        let mut other = exception("1.2.9", "*", "2026-12-07");
        other.benchmark = Some("k3s-cis-1.12".into());
        apply(&mut a, &[other.clone()], "2026-12-07");
        assert_eq!(a.totals.accepted, 0, "another benchmark");
        other.benchmark = Some("k3s-cis-1.10".into());
        apply(&mut a, &[other], "2026-12-07");
        assert_eq!(a.totals.accepted, 1, "valid through its last day");
    }

    #[test]
    fn dates() {
        assert!(is_date("2027-01-31"));
        for bad in [
            "2027-1-31",
            "31.01.2027",
            "2027-13-01",
            "2027-01-00",
            "next year",
            "",
        ] {
            assert!(!is_date(bad), "{bad}");
        }
    }
}
