//! `khard report`: one read-only probe per node for the
//! evidence its benchmark needs, judged by `crate::audit`, handed to the report.

use std::collections::BTreeSet;

use serde_json::Value;

use super::diff::{host_vars_with_facts, when_known_false};
use super::probe::RemoteState;
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
        let audits = join_all(hosts.into_iter().map(|h| self.audit_host(h, plans))).await;
        for audit in audits {
            self.report.audit(audit);
        }
    }

    async fn audit_host(&self, h: &HostPlan, plans: &[PlayPlan]) -> NodeAudit {
        let var = |name: &str| h.vars.get(name).and_then(Value::as_str);
        let role = var("k3s_role").unwrap_or("agent");
        let (ev, state) = if let Err(why) = self.connect(h).await {
            self.report.unreachable(&h.name, "compliance audit", &why);
            let ev = Evidence::unavailable(role, "the host is unreachable");
            (ev, RemoteState::default())
        } else {
            match self.probe_host(h, evidence::probe(role)).await {
                Ok(probed) => (Evidence::from_state(role, &probed.state), probed.state),
                Err(e) => {
                    let why = format!("its probe failed: {e}");
                    (Evidence::unavailable(role, &why), RemoteState::default())
                }
            }
        };
        self.report.phase(&h.name, "audited");
        let benchmark = benchmark_for(
            var("cis_benchmark"),
            ev.version.as_deref().or(var("k3s_version")),
        );
        // The tasks that remediate a control here: in a play of this host,
        // carrying the control's ID in this benchmark, and not ruled out by
        // their `when:` on this node (another era's config task is not).
        // The k3s_unit check guards controls but remediates none.
        let vars = host_vars_with_facts(&h.vars, &state);
        let tasks = |id: &str| -> Vec<String> {
            let mut names: Vec<String> = Vec::new();
            let plays = plans
                .iter()
                .filter(|p| p.hosts.iter().any(|x| x.name == h.name))
                .map(|p| &self.playbook.plays[p.index]);
            for task in plays.flat_map(|p| &p.tasks) {
                let guard = matches!(task.module, crate::modules::Module::K3sUnit(_));
                let covers = !guard && task.cis_for(Some(&benchmark)).iter().any(|c| c == id);
                if covers && !when_known_false(task, &vars) && !names.contains(&task.name) {
                    names.push(task.name.clone());
                }
            }
            names
        };
        audit_node(&h.name, &benchmark, &ev, &tasks)
    }
}
