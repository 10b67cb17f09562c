//! `khard report`'s last step: one read-only probe per node for the
//! evidence its benchmark needs, judged by `crate::audit`, handed to the report.

use std::collections::BTreeSet;

use serde_json::Value;

use super::{Runner, join_all};
use crate::audit::evidence::{self, Evidence};
use crate::audit::{NodeAudit, audit_node, benchmark_for};
use crate::plan::{HostPlan, PlayPlan};

impl Runner {
    /// Audits every host of the run once, in parallel (bounded by --forks).
    pub(super) async fn audit_all(&self, plans: &[PlayPlan]) {
        let mut seen = BTreeSet::new();
        let hosts: Vec<&HostPlan> = plans
            .iter()
            .flat_map(|p| &p.hosts)
            .filter(|h| seen.insert(h.name.clone()))
            .collect();
        for audit in join_all(hosts.into_iter().map(|h| self.audit_host(h))).await {
            self.report.audit(audit);
        }
    }

    async fn audit_host(&self, h: &HostPlan) -> NodeAudit {
        let var = |name: &str| h.vars.get(name).and_then(Value::as_str);
        let role = var("k3s_role").unwrap_or("agent");
        let ev = if self.conn(&h.name).await.is_none() {
            Evidence::unavailable(role, "the host is unreachable")
        } else {
            match self.probe_host(h, evidence::probe(role)).await {
                Ok(probed) => Evidence::from_state(role, &probed.state),
                Err(e) => Evidence::unavailable(role, &format!("its probe failed: {e}")),
            }
        };
        self.report.phase(&h.name, "audited");
        let version = ev.version.as_deref().or(var("k3s_version"));
        let benchmark = benchmark_for(var("cis_benchmark"), version);
        let tasks = |id: &str| -> Vec<String> {
            let mut names: Vec<String> = Vec::new();
            for task in self.playbook.plays.iter().flat_map(|p| &p.tasks) {
                let covers = task.cis_for(Some(&benchmark)).iter().any(|c| c == id);
                if covers && !names.contains(&task.name) {
                    names.push(task.name.clone());
                }
            }
            names
        };
        audit_node(&h.name, &benchmark, &ev, &tasks)
    }
}
