//! Flags that every server of a k3s cluster must agree on: k3s refuses to
//! start a server whose value differs ("critical configuration value
//! mismatch"), so a disagreement fails the config task before anything is
//! written.

use std::collections::{BTreeMap, BTreeSet};

use crate::k3s::config::{Effective, Setting};

/// Flags that must be identical on every server of a cluster, or k3s refuses
/// to start ("critical configuration value mismatch").
const CRITICAL_FLAGS: &[&str] = &[
    "secrets-encryption",
    "secrets-encryption-provider",
    "cluster-cidr",
    "service-cidr",
    "cluster-dns",
    "cluster-domain",
    "disable-network-policy",
    "flannel-backend",
    "egress-selector-mode",
    "service-node-port-range",
];

/// One server's k3s config, as the cross-server check sees it.
pub struct ServerConfig<'a> {
    pub host: &'a str,
    /// The `k3s_cluster_name` variable, so one play may span several
    /// clusters; empty (one cluster) by default.
    pub cluster: String,
    /// The configuration the server will run with.
    pub config: &'a Effective,
}

/// The servers of each cluster must agree on critical flags. Returns, for
/// every server of a cluster whose configs disagree, why its config task
/// fails: each flag and every server's value.
pub fn mismatches(servers: &[ServerConfig]) -> BTreeMap<String, String> {
    // cluster -> flag -> host -> value
    let mut values: BTreeMap<&str, BTreeMap<&str, BTreeMap<&str, String>>> = BTreeMap::new();
    for s in servers {
        for flag in CRITICAL_FLAGS {
            let v = s.config.get(*flag).map(|v| match v {
                Setting::Scalar { value, .. } => value.clone(),
                Setting::List(items) => {
                    let items: Vec<&str> = items.iter().map(|(i, _)| i.as_str()).collect();
                    items.join(",")
                }
            });
            values
                .entry(&s.cluster)
                .or_default()
                .entry(flag)
                .or_default()
                .insert(s.host, v.unwrap_or_else(|| "(unset)".into()));
        }
    }
    let mut by_cluster: BTreeMap<&str, String> = BTreeMap::new();
    for (name, flags) in &values {
        let disagreements: Vec<String> = flags
            .iter()
            .filter(|(_, per_host)| per_host.values().collect::<BTreeSet<_>>().len() > 1)
            .map(|(flag, per_host)| {
                let list: Vec<String> = per_host.iter().map(|(h, v)| format!("{h}={v}")).collect();
                format!("{flag}: {}", list.join(", "))
            })
            .collect();
        if !disagreements.is_empty() {
            by_cluster.insert(
                name,
                format!(
                    "the servers disagree on flags that must be identical on every server of a cluster (k3s refuses to start otherwise): {}",
                    disagreements.join("; ")
                ),
            );
        }
    }
    servers
        .iter()
        .filter_map(|s| {
            Some((
                s.host.to_owned(),
                by_cluster.get(s.cluster.as_str())?.clone(),
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn servers_of_one_cluster_must_agree() {
        let a = &crate::k3s::config::from_file("cluster-cidr: 10.42.0.0/16\n").unwrap();
        let b = &crate::k3s::config::from_file("cluster-cidr: 10.99.0.0/16\n").unwrap();
        let s = |host, cluster: &str, config| ServerConfig {
            host,
            cluster: cluster.into(),
            config,
        };
        let m = mismatches(&[s("s1", "", a), s("s2", "", b)]);
        assert_eq!(m.len(), 2);
        assert!(m["s1"].contains("cluster-cidr: s1=10.42.0.0/16, s2=10.99.0.0/16"));
        assert!(mismatches(&[s("s1", "x", a), s("s2", "y", b)]).is_empty());
        assert!(mismatches(&[s("s1", "", a), s("s2", "", a)]).is_empty());
    }
}
