//! One read-only probe per host, for callers that judge what comes back
//! themselves (`khard report`): no task is diffed or applied.

use std::collections::{BTreeMap, BTreeSet};

use super::Runner;
use crate::facts::{Probe, RemoteState};
use crate::plan::{HostPlan, PlayPlan};

/// A host's answer: its state, or why there is none (unreachable, a probe
/// that failed).
pub type Answer = Result<RemoteState, String>;

impl Runner {
    /// Probes every host of the plans once, in parallel (bounded by
    /// --forks), each with the probe `probe_of` asks for it, plus the
    /// domain's facts, and hands each answer to `judge` as it comes: only
    /// what `judge` makes of it is kept, not every host's state at once.
    /// Returns the judgements in plan order, and the SSH channels opened per
    /// host.
    pub async fn probe_all<T: Send>(
        &self,
        plans: &[PlayPlan],
        probe_of: &(dyn Fn(&HostPlan) -> Probe + Sync),
        judge: &(dyn Fn(&HostPlan, Answer) -> T + Sync),
    ) -> (Vec<T>, BTreeMap<String, usize>) {
        let mut seen = BTreeSet::new();
        let hosts: Vec<&HostPlan> = plans
            .iter()
            .flat_map(|p| &p.hosts)
            .filter(|h| seen.insert(h.name.clone()))
            .collect();
        for h in &hosts {
            self.report.host(&h.name);
        }
        self.report.start(&BTreeMap::new());
        if !self.sudo_password_works(plans).await || self.stopped() {
            return (Vec::new(), self.close_all().await);
        }
        let judged = self
            .each_host(hosts.into_iter().map(|h| async move {
                let answer = self.probe_one(h, probe_of(h)).await;
                self.report.phase(&h.name, "probed");
                judge(h, answer)
            }))
            .await;
        (judged, self.close_all().await)
    }

    async fn probe_one(&self, h: &HostPlan, mut probe: Probe) -> Answer {
        if let Err(why) = self.connect(h).await {
            self.report.unreachable(&h.name, "compliance audit", &why);
            return Err("the host is unreachable".into());
        }
        self.domain.probe_facts(&mut probe);
        let answer = self
            .probe_host(h, probe)
            .await
            .map(|p| p.state)
            .map_err(|e| format!("its probe failed: {e}"));
        // One probe is all a host is asked: an idle session costs memory.
        self.release(&h.name).await;
        answer
    }
}
