//! Facts khard knows about a host: from the inventory (its name, groups,
//! k3s role) and from the probe (the k3s version it runs).

use serde_json::{Map, Value};

use std::collections::BTreeSet;

use crate::k3s::version::K3sVersion;

/// Names of the facts that come from the probe; a path or guard may not use them,
/// since they are only known after probing.
pub const PROBED: &[&str] = &["k3s_version", "k3s_minor", "k3s_era", "cis_benchmark"];

/// The version the node runs, from the probe's `k3s_version` fact (the
/// first line of `k3s --version`: `k3s version v1.30.6+k3s1 (1829eaae)`):
/// its version word, or the whole line when it is not of that shape (the
/// caller then says the node answered something that is not a version).
pub fn running_version(state: &crate::facts::RemoteState) -> Option<String> {
    let line = state.facts.get("k3s_version")?;
    let mut words = line.split_whitespace();
    Some(match (words.next(), words.next(), words.next()) {
        (Some("k3s"), Some("version"), Some(v)) => v.to_owned(),
        _ => line.clone(),
    })
}

/// Groups that make a host a k3s server, and an agent: k3s-ansible's
/// current layout (`server`, `agent`, since 2023) and its older one
/// (`master`, `node`).
pub const SERVER_GROUPS: &[&str] = &["server", "servers", "master", "masters"];
pub const AGENT_GROUPS: &[&str] = &["agent", "agents", "node", "nodes"];

/// `server` or `agent` from the groups or the `k3s_role` var, as k3s-ansible lays them out.
pub fn k3s_role(groups: &BTreeSet<String>, vars: &Map<String, Value>) -> &'static str {
    match vars.get("k3s_role").and_then(Value::as_str) {
        Some("server") => return "server",
        Some("agent") => return "agent",
        _ => {}
    }
    if SERVER_GROUPS.iter().any(|g| groups.contains(*g)) {
        "server"
    } else if AGENT_GROUPS.iter().any(|g| groups.contains(*g)) {
        "agent"
    } else {
        "none"
    }
}

/// The minor version of a k3s version string such as `v1.30.6+k3s1`.
pub fn minor(version: &str) -> Option<u64> {
    K3sVersion::parse(version).map(|v| v.minor)
}

/// The content era: `psp` (≤ 1.24), `psa` (1.25–1.28), `psa129` (≥ 1.29).
pub fn era(minor: u64) -> &'static str {
    match minor {
        0..=24 => "psp",
        25..=28 => "psa",
        _ => "psa129",
    }
}

/// The kube-bench profile for a k3s minor: the newest whose range (k3s's
/// self-assessment guides, Rancher's compliance chart) holds it; see
/// roles/cis_k3s/benchmarks/README.md. k3s-cis-1.11 states no range, so it is
/// chosen only by name (`cis_benchmark`).
pub fn benchmark(minor: u64) -> &'static str {
    match minor {
        0..=21 => "cis-1.6",
        22..=23 => "k3s-cis-1.23",
        24 => "k3s-cis-1.24",
        25 => "k3s-cis-1.7",
        26 => "k3s-cis-1.8",
        27 => "k3s-cis-1.9",
        28..=31 => "k3s-cis-1.10",
        32..=33 => "k3s-cis-1.12",
        _ => "k3s-cis-2.0",
    }
}

/// Whether a k3s release passes its default TLS cipher suites to
/// kube-apiserver itself (k3s#6725: from v1.23.16, v1.24.10, v1.25.6, v1.26.1).
pub fn apiserver_default_ciphers(version: &str) -> bool {
    let Some(v) = K3sVersion::parse(version) else {
        return true;
    };
    match v.minor {
        23 => v.patch >= 16,
        24 => v.patch >= 10,
        25 => v.patch >= 6,
        26 => v.patch >= 1,
        m => m > 26,
    }
}

/// Whether ServiceLB runs a LoadBalancer Service's pods in the Service's own
/// namespace: until k3s moved them all to kube-system (k3s-io/k3s#5657,
/// released in v1.24.2, backported as #5730 to v1.23.8 and to v1.22.11).
pub fn servicelb_in_service_namespace(version: &str) -> bool {
    let Some(v) = crate::k3s::version::K3sVersion::parse(version) else {
        return false;
    };
    match v.minor {
        m if m < 22 => true,
        22 => v.patch < 11,
        23 => v.patch < 8,
        24 => v.patch < 2,
        _ => false,
    }
}

/// Adds k3s_version, k3s_minor and k3s_era from `version`; Err explains a version we cannot read.
pub fn add_version_facts(vars: &mut Map<String, Value>, version: &str) -> Result<(), String> {
    let m = minor(version).ok_or_else(|| {
        format!("cannot read the k3s version `{version}` (expected e.g. v1.30.6+k3s1)")
    })?;
    vars.insert("k3s_version".into(), Value::from(version));
    vars.insert("k3s_minor".into(), Value::from(m));
    vars.insert("k3s_era".into(), Value::from(era(m)));
    // An operator may name the benchmark (k3s-cis-1.11 has no version range of its own).
    if !vars.get("cis_benchmark").is_some_and(Value::is_string) {
        vars.insert("cis_benchmark".into(), Value::from(benchmark(m)));
    }
    vars.insert(
        "k3s_apiserver_default_ciphers".into(),
        Value::from(apiserver_default_ciphers(version)),
    );
    vars.insert(
        "k3s_servicelb_in_service_namespace".into(),
        Value::from(servicelb_in_service_namespace(version)),
    );
    Ok(())
}

/// The newest k3s minor this khard knows (benchmark k3s-cis-2.0 from 1.34).
pub const NEWEST_MINOR: u64 = 35;

/// Patch releases on each side of a boundary that k3s or the content draws:
/// the config file (v1.19.1), drop-ins (v1.21.0 reads them, v1.21.1 takes
/// `key+`), the apiserver's default ciphers (k3s#6725).
const BOUNDARIES: &[&str] = &[
    "v1.19.1+k3s1",
    "v1.21.0+k3s1",
    "v1.21.1+k3s1",
    "v1.23.15+k3s1",
    "v1.23.16+k3s1",
    "v1.24.9+k3s1",
    "v1.24.10+k3s1",
    "v1.25.5+k3s1",
    "v1.25.6+k3s1",
    "v1.26.0+k3s1",
    "v1.26.1+k3s1",
];

/// Every version the content is rendered for before any host is contacted
/// (when a host's version is known only after probing): each minor from
/// the floor to the newest, and the releases on each side of a boundary,
/// so that a broken branch is found by --syntax-check, not on the first
/// node of that version.
pub fn preflight_versions() -> Vec<String> {
    let mut out: Vec<String> = (20..=NEWEST_MINOR)
        .map(|m| format!("v1.{m}.0+k3s1"))
        .collect();
    out.extend(BOUNDARIES.iter().map(|v| (*v).to_owned()));
    out
}

/// Benchmarks an operator may name for a minor beyond the one chosen by
/// version: k3s-cis-1.11 states no range; Rancher ships it for 1.29–1.31.
pub fn also_named(minor: u64) -> &'static [&'static str] {
    match minor {
        29..=31 => &["k3s-cis-1.11"],
        _ => &[],
    }
}

#[cfg(test)]
mod tests {

    /// The version word of what real k3s prints (v1.30.6+k3s1's first
    /// line); anything else is kept whole, for the error to show it.
    #[test]
    fn the_running_version_is_the_word_after_k3s_version() {
        let mut state = crate::facts::RemoteState::default();
        assert_eq!(running_version(&state), None);
        state.facts.insert(
            "k3s_version".into(),
            "k3s version v1.30.6+k3s1 (1829eaae)".into(),
        );
        assert_eq!(running_version(&state).as_deref(), Some("v1.30.6+k3s1"));
        state
            .facts
            .insert("k3s_version".into(), "Segmentation fault".into());
        assert_eq!(
            running_version(&state).as_deref(),
            Some("Segmentation fault")
        );
    }
    use super::*;

    #[test]
    fn servicelb_moved_to_kube_system_in_each_branch() {
        for (v, own) in [
            ("v1.21.14+k3s1", true),
            ("v1.22.10+k3s1", true),
            ("v1.22.11+k3s1", false),
            ("v1.23.7+k3s1", true),
            ("v1.23.8+k3s1", false),
            ("v1.24.1+k3s1", true),
            ("v1.24.2+k3s1", false),
            ("v1.30.6+k3s1", false),
        ] {
            assert_eq!(servicelb_in_service_namespace(v), own, "{v}");
        }
    }

    #[test]
    fn eras_by_minor() {
        assert_eq!(minor("v1.24.17+k3s1"), Some(24));
        assert_eq!(minor("1.30.6"), Some(30));
        assert_eq!(minor("v2.0.0"), None);
        assert_eq!(minor("banana"), None);
        assert_eq!(
            [era(21), era(24), era(25), era(28), era(29), era(33)],
            ["psp", "psp", "psa", "psa", "psa129", "psa129"]
        );
    }

    #[test]
    fn benchmarks_and_cipher_defaults_by_version() {
        let b: Vec<&str> = [21, 23, 24, 25, 26, 27, 28, 31, 32, 33, 34, 40]
            .map(benchmark)
            .to_vec();
        assert_eq!(
            b,
            [
                "cis-1.6",
                "k3s-cis-1.23",
                "k3s-cis-1.24",
                "k3s-cis-1.7",
                "k3s-cis-1.8",
                "k3s-cis-1.9",
                "k3s-cis-1.10",
                "k3s-cis-1.10",
                "k3s-cis-1.12",
                "k3s-cis-1.12",
                "k3s-cis-2.0",
                "k3s-cis-2.0"
            ]
        );
        for (v, yes) in [
            ("v1.22.17+k3s1", false),
            ("v1.23.15+k3s1", false),
            ("v1.23.16+k3s1", true),
            ("v1.24.9+k3s2", false),
            ("v1.24.10+k3s1", true),
            ("v1.25.5+k3s2", false),
            ("v1.25.6+k3s1", true),
            ("v1.26.0+k3s2", false),
            ("v1.26.1+k3s1", true),
            ("v1.30.6+k3s1", true),
        ] {
            assert_eq!(apiserver_default_ciphers(v), yes, "{v}");
        }
    }
}
