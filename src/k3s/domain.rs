//! k3s as khard's domain ([`Domain`]): a host's role from its groups, its
//! version (and so its content era and benchmark) probed from `k3s
//! --version`, the versions the preflight renders for, and the flags every
//! server of a cluster must agree on.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::domain::{Domain, HostShare, InventoryHost, Vars};
use crate::error::did_you_mean;
use crate::facts::{Probe, RemoteState};
use crate::k3s::config::Effective;
use crate::k3s::critical_flags::{self, ServerConfig};
use crate::k3s::facts::{self, AGENT_GROUPS, PROBED, SAMPLE_VERSIONS, SERVER_GROUPS};
use crate::modules::error::TaskError;

/// The k3s domain. `benchmarks` are the names `cis_benchmark` may take.
pub struct K3s {
    pub benchmarks: Vec<&'static str>,
}

/// The probe's fact: the version word of `k3s --version` (`k3s version
/// v1.30.6+k3s1 (…)`), or nothing when k3s is not installed.
const VERSION_FACT: &str =
    "if command -v k3s >/dev/null 2>&1; then set -- $(k3s --version 2>/dev/null); echo \"$3\"; fi";

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Domain for K3s {
    fn inventory_facts(&self, host: &InventoryHost) -> Vars {
        let mut f = Vars::new();
        f.insert(
            "k3s_role".into(),
            Value::from(facts::k3s_role(host.groups, host.vars)),
        );
        f
    }

    fn check_host(&self, host: &str, vars: &Vars, used: &BTreeSet<String>) -> Result<(), String> {
        if let Some(v) = vars.get("k3s_version") {
            let v = text(v);
            facts::minor(&v).ok_or_else(|| {
                format!("host {host}: k3s_version `{v}` is not a k3s version such as v1.30.6+k3s1")
            })?;
        }
        // A play that decides by k3s_role (the CIS role) must know every
        // host's: a host without one would be hardened as nothing and pass.
        if used.contains("k3s_role") && vars.get("k3s_role").and_then(Value::as_str) == Some("none")
        {
            return Err(format!(
                "host {host} has no k3s role: it is in none of the groups khard reads as servers ({}) or agents ({}), and sets no k3s_role variable; put it in one of them or set k3s_role: server|agent",
                SERVER_GROUPS.join(", "),
                AGENT_GROUPS.join(", ")
            ));
        }
        // A misspelt benchmark would silently number every control by another one.
        if let Some(named) = vars.get("cis_benchmark").map(text)
            && !self.benchmarks.contains(&named.as_str())
        {
            let hint = did_you_mean(&named, self.benchmarks.iter().copied())
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            return Err(format!(
                "host {host}: cis_benchmark `{named}` is not a benchmark khard knows{hint}; it knows {}",
                self.benchmarks.join(", ")
            ));
        }
        Ok(())
    }

    fn candidate_facts(&self, vars: &Vars) -> Vec<Vars> {
        let versions: Vec<String> = match vars.get("k3s_version").and_then(Value::as_str) {
            Some(pinned) => vec![pinned.to_owned()],
            None => SAMPLE_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
        };
        versions
            .iter()
            .filter_map(|v| {
                let mut with = vars.clone();
                facts::add_version_facts(&mut with, v).ok().map(|_| with)
            })
            .collect()
    }

    fn assumed_facts(&self, vars: &Vars) -> Vars {
        let mut out = vars.clone();
        let version = vars
            .get("k3s_version")
            .and_then(Value::as_str)
            .unwrap_or(SAMPLE_VERSIONS[SAMPLE_VERSIONS.len() - 1]);
        if facts::add_version_facts(&mut out, version).is_err() {
            return vars.clone();
        }
        out
    }

    fn probe_facts(&self, probe: &mut Probe) {
        probe
            .facts
            .insert("k3s_version".into(), VERSION_FACT.into());
    }

    /// A `k3s_version` variable wins over the probed version.
    fn with_facts(&self, vars: &Vars, state: &RemoteState) -> Vars {
        let mut out = vars.clone();
        let version = vars
            .get("k3s_version")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| state.facts.get("k3s_version").cloned());
        if let Some(v) = version {
            let _ = facts::add_version_facts(&mut out, &v);
        }
        out
    }

    fn probed_facts(&self) -> &'static [&'static str] {
        PROBED
    }

    fn explain(&self, vars: &Vars, error: &TaskError) -> Option<String> {
        let missing_fact = error.undefined_var().is_some_and(|v| PROBED.contains(&v));
        if vars.contains_key("k3s_era") || !missing_fact {
            return None;
        }
        Some(format!(
            "the k3s version of this host is unknown (`k3s --version` did not answer: k3s is not installed?) and this task depends on it; set the k3s_version variable for this host, e.g. k3s_version: v1.30.6+k3s1 ({error})"
        ))
    }

    fn label(&self, vars: &Vars) -> Option<String> {
        vars.get("cis_benchmark")
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    /// The servers of each cluster (`k3s_cluster_name`) must agree on the
    /// critical flags of the configuration they will run with.
    fn check_across_hosts(&self, hosts: &[HostShare]) -> BTreeMap<String, String> {
        let is_server =
            |h: &HostShare| h.vars.get("k3s_role").and_then(Value::as_str) == Some("server");
        let cluster = |h: &HostShare| h.vars.get("k3s_cluster_name").map(text).unwrap_or_default();
        let servers: Vec<ServerConfig> = hosts
            .iter()
            .filter(|h| is_server(h))
            .flat_map(|h| {
                h.shared
                    .iter()
                    .filter_map(|s| s.downcast_ref::<Effective>())
                    .map(|config| ServerConfig {
                        host: h.host,
                        cluster: cluster(h),
                        config,
                    })
            })
            .collect();
        critical_flags::mismatches(&servers)
    }
}
