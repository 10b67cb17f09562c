//! k3s as khard's domain ([`Domain`]): a host's role from its groups, its
//! version (and so its content era and benchmark) probed from `k3s
//! --version`, the versions the preflight renders for, and the flags every
//! server of a cluster must agree on.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use crate::domain::{Domain, HostShare, InventoryHost, Vars};
use crate::error::did_you_mean;
use crate::facts::{Probe, RemoteState};
use crate::k3s::config::{CONFIG_FILE_SINCE, Effective};
use crate::k3s::critical_flags::{self, ServerConfig};
use crate::k3s::facts::{self, AGENT_GROUPS, PROBED, SERVER_GROUPS};
use crate::k3s::node_cidrs;
use crate::k3s::version::K3sVersion;
use crate::modules::error::TaskError;

/// The k3s domain. `benchmarks` are the names `cis_benchmark` may take.
pub struct K3s {
    pub benchmarks: Vec<&'static str>,
}

/// The probe's fact: the first line of `k3s --version` (`k3s version
/// v1.30.6+k3s1 (…)`; [`facts::running_version`] takes the version word),
/// or nothing when k3s is not installed. `exec`: the fact's subshell
/// becomes k3s, one process on the node instead of two.
pub const VERSION_FACT: &str = "command -v k3s >/dev/null 2>&1 && exec k3s --version 2>/dev/null";

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// `cis_netpol_node_cidrs: auto` is known only once a server answered: the
/// preflight renders with a stand-in list.
fn preflight_node_cidrs(vars: &mut Vars) {
    if vars.get(node_cidrs::VARIABLE).and_then(Value::as_str) == Some(node_cidrs::AUTO) {
        vars.insert(node_cidrs::VARIABLE.into(), node_cidrs::preflight_value());
    }
}

/// A Kubernetes namespace name (RFC 1123 label).
fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

impl Domain for K3s {
    fn variables(&self) -> &'static [&'static str] {
        &[
            "k3s_version",
            "k3s_role",
            "cis_benchmark",
            "k3s_config_file",
        ]
    }

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
        // Namespace names go into manifests (the PSP era's exemptions name
        // an object after each): only what Kubernetes accepts as a name.
        for variable in ["cis_psa_exempt_namespaces", "cis_psp_servicelb_namespaces"] {
            let Some(list) = vars.get(variable) else {
                continue;
            };
            let names = list.as_array().ok_or_else(|| {
                format!("host {host}: {variable} must be a list of namespace names")
            })?;
            for n in names {
                let name = text(n);
                if !is_dns_label(&name) {
                    return Err(format!(
                        "host {host}: {variable}: `{}` is not a namespace name (lower-case letters, digits and `-`, at most 63)",
                        crate::terminal::one_line(&name)
                    ));
                }
            }
        }
        if let Some(v) = vars.get(node_cidrs::VARIABLE) {
            node_cidrs::check(v).map_err(|e| format!("host {host}: {e}"))?;
        }
        Ok(())
    }

    /// Every version the host may run (the pinned one alone: a node that
    /// runs another is refused), each with the benchmark its version picks
    /// and, unless the host names one, any other an operator may name for
    /// it; the same variables once.
    fn candidate_facts(&self, vars: &Vars) -> Vec<Vars> {
        let versions: Vec<String> = match vars.get("k3s_version").and_then(Value::as_str) {
            Some(pinned) => vec![pinned.to_owned()],
            None => facts::preflight_versions(),
        };
        let named = vars.get("cis_benchmark").is_some_and(Value::is_string);
        let mut out: Vec<Vars> = Vec::new();
        for v in &versions {
            let Some(minor) = facts::minor(v) else {
                continue;
            };
            let mut sets = vec![vars.clone()];
            if !named {
                for b in facts::also_named(minor) {
                    let mut with = vars.clone();
                    with.insert("cis_benchmark".into(), Value::from(*b));
                    sets.push(with);
                }
            }
            for mut with in sets {
                preflight_node_cidrs(&mut with);
                if facts::add_version_facts(&mut with, v).is_ok() && !out.contains(&with) {
                    out.push(with);
                }
            }
        }
        out
    }

    fn assumed_facts(&self, vars: &Vars) -> Vars {
        let mut out = vars.clone();
        preflight_node_cidrs(&mut out);
        let version = vars
            .get("k3s_version")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .unwrap_or_else(|| format!("v1.{}.0+k3s1", facts::NEWEST_MINOR));
        if facts::add_version_facts(&mut out, &version).is_err() {
            let mut out = vars.clone();
            preflight_node_cidrs(&mut out);
            return out;
        }
        out
    }

    fn probe_facts(&self, probe: &mut Probe) {
        probe
            .facts
            .insert("k3s_version".into(), VERSION_FACT.into());
        probe
            .facts
            .insert(node_cidrs::FACT.into(), node_cidrs::FACT_COMMAND.into());
        probe
            .fact_needs
            .insert(node_cidrs::FACT.into(), node_cidrs::FACT_NEEDS.into());
    }

    /// The version k3s reports on the node decides. A pinned `k3s_version`
    /// (in k3s-ansible the version to install) is taken only where k3s
    /// cannot be asked (not installed: the pin is then assumed, and says so
    /// in `k3s_version_assumed`); where the node answers, the two must
    /// agree. A node below the version floor is refused here, before any of
    /// its tasks, so nothing at all is written to it.
    fn with_facts(&self, vars: &Vars, state: &RemoteState) -> Result<Vars, String> {
        let mut out = vars.clone();
        // `auto`: the nodes' addresses as the cluster reports them now, so a
        // node that joined changes the policies on the next run; unknown
        // leaves the variable undefined, and the tasks that need it fail
        // with the reason (`explain`) rather than admit the pod network.
        if vars.get(node_cidrs::VARIABLE).and_then(Value::as_str) == Some(node_cidrs::AUTO) {
            out.remove(node_cidrs::VARIABLE);
            match node_cidrs::derive(state.facts.get(node_cidrs::FACT).map(String::as_str)) {
                Ok(list) => {
                    out.insert(node_cidrs::VARIABLE.into(), Value::from(list));
                }
                Err(why) => {
                    out.insert(node_cidrs::UNKNOWN_REASON.into(), Value::from(why));
                }
            }
        }
        let pinned = vars.get("k3s_version").map(text);
        let running = facts::running_version(state);
        let running = running.as_ref();
        let version = match (running, pinned) {
            (Some(real), pin) => {
                let parsed = K3sVersion::parse(real).ok_or_else(|| {
                    format!(
                        "`k3s --version` on the node answered `{real}`, which is not a k3s version"
                    )
                })?;
                if let Some(pin) = pin
                    && K3sVersion::parse(&pin) != Some(parsed)
                {
                    return Err(format!(
                        "k3s_version is pinned to {pin} for this host, but the node runs k3s {real} (`k3s --version`): khard chooses the hardening by the version that runs. Remove the pin (in k3s-ansible, k3s_version is the version to install), or upgrade the node to it first"
                    ));
                }
                real.clone()
            }
            (None, Some(pin)) => {
                out.insert("k3s_version_assumed".into(), Value::Bool(true));
                pin
            }
            (None, None) => return Ok(out),
        };
        if let Some(v) = K3sVersion::parse(&version)
            && v < CONFIG_FILE_SINCE
        {
            return Err(format!(
                "k3s {version} reads no config file (k3s reads /etc/rancher/k3s/config.yaml from v1.19.1 on): upgrade k3s before hardening it; nothing was written"
            ));
        }
        facts::add_version_facts(&mut out, &version)?;
        Ok(out)
    }

    fn probed_facts(&self) -> &'static [&'static str] {
        PROBED
    }

    fn unknown_on_node(&self, vars: &Vars, error: &TaskError) -> bool {
        error.undefined_var() == Some(node_cidrs::VARIABLE)
            && vars.contains_key(node_cidrs::UNKNOWN_REASON)
    }

    fn explain(&self, vars: &Vars, error: &TaskError) -> Option<String> {
        if error.undefined_var() == Some(node_cidrs::VARIABLE)
            && let Some(why) = vars.get(node_cidrs::UNKNOWN_REASON).and_then(Value::as_str)
        {
            return Some(format!(
                "the nodes' addresses the NetworkPolicies admit ({} is `{}`) are unknown: {why}. khard writes no policy without them: leaving them out would cut the other nodes off, and the pod network instead would admit every pod. Start k3s and run again, or set {} to the nodes' flannel addresses (docs/network-policies.md)",
                node_cidrs::VARIABLE,
                node_cidrs::AUTO,
                node_cidrs::VARIABLE
            ));
        }
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
