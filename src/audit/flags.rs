//! The flags k3s passes to its embedded components (kube-apiserver, the
//! kubelet, …), as kube-bench reads them from k3s's "Running kube-…" log
//! lines: k3s's own defaults for the node's version (src/k3s/component_args.yaml,
//! with sources in docs/research/k3s-component-args.md), then the config
//! keys that become flags, then the operator's `*-arg` items, which win.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::test_eval::Found;
use crate::k3s::config::{Effective, Setting};
use crate::k3s::version::K3sVersion;

type Version = K3sVersion;

#[derive(Debug, Deserialize)]
struct Table {
    components: BTreeMap<String, Vec<DefaultFlag>>,
    #[serde(default)]
    config_keys: Vec<ConfigKey>,
}

#[derive(Debug, Deserialize)]
struct DefaultFlag {
    flag: String,
    value: String,
    #[serde(default)]
    since: Option<Since>,
    #[serde(default)]
    until: Option<String>,
    #[serde(default)]
    when: Option<String>,
    #[serde(default)]
    confidence: Option<String>,
}

/// The first version with a default: one version, or one per minor line
/// (a fix backported to several lines), later minors included.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Since {
    One(String),
    PerLine(Vec<String>),
}

#[derive(Debug, Deserialize)]
struct ConfigKey {
    key: String,
    component: String,
    flag: String,
    /// `$value` for the key's own value, or a literal.
    value: String,
    #[serde(default)]
    if_value: Option<String>,
}

fn table() -> Table {
    serde_yaml::from_str(include_str!("../k3s/component_args.yaml"))
        .expect("built-in table of k3s component defaults")
}

/// The node facts the defaults depend on.
pub struct Node {
    pub version: Version,
    /// k3s runs embedded etcd here (not sqlite or an external datastore).
    pub embedded_etcd: bool,
}

impl DefaultFlag {
    fn applies(&self, node: &Node) -> bool {
        if self.confidence.as_deref() == Some("unconfirmed") {
            return false;
        }
        let v = node.version;
        let since_ok = match &self.since {
            None => true,
            Some(Since::One(s)) => K3sVersion::parse(s).is_none_or(|s| v >= s),
            Some(Since::PerLine(list)) => {
                let lines: Vec<Version> =
                    list.iter().filter_map(|s| K3sVersion::parse(s)).collect();
                match lines.iter().find(|l| l.minor == v.minor) {
                    Some(first) => v >= *first,
                    None => lines.iter().all(|l| v.minor > l.minor),
                }
            }
        };
        let until_ok = self
            .until
            .as_deref()
            .and_then(K3sVersion::parse)
            .is_none_or(|u| v < u);
        let when_ok = match self.when.as_deref() {
            Some("embedded-etcd") => node.embedded_etcd,
            Some("not-embedded-etcd") => !node.embedded_etcd,
            _ => true,
        };
        since_ok && until_ok && when_ok
    }
}

/// Flag name (without dashes) → what was found, per component.
pub type Flags = BTreeMap<String, Found>;

/// The `*-arg` config key of each component.
fn arg_key(component: &str) -> String {
    format!("{component}-arg")
}

/// Every component's flags on this node.
pub fn component_flags(effective: &Effective, node: &Node) -> BTreeMap<String, Flags> {
    let table = table();
    let mut out: BTreeMap<String, Flags> = BTreeMap::new();
    for (component, defaults) in &table.components {
        let flags = out.entry(component.clone()).or_default();
        for d in defaults.iter().filter(|d| d.applies(node)) {
            flags.insert(
                d.flag.clone(),
                Found {
                    value: d.value.clone(),
                    origin: "k3s default".into(),
                },
            );
        }
    }
    for k in &table.config_keys {
        let Some(Setting::Scalar { value, from }) = effective.get(&k.key) else {
            continue;
        };
        if k.if_value.as_ref().is_some_and(|want| want != value) {
            continue;
        }
        let flag_value = if k.value == "$value" {
            value.clone()
        } else {
            k.value.clone()
        };
        out.entry(k.component.clone()).or_default().insert(
            k.flag.clone(),
            Found {
                value: flag_value,
                origin: format!("{} in {from}", k.key),
            },
        );
    }
    let components: Vec<String> = out.keys().cloned().collect();
    for component in components {
        let key = arg_key(&component);
        let items: Vec<(String, String)> = match effective.get(&key) {
            Some(Setting::List(items)) => items.clone(),
            Some(Setting::Scalar { value, from }) => vec![(value.clone(), from.clone())],
            None => continue,
        };
        let flags = out.entry(component).or_default();
        for (item, from) in items {
            let item = item.trim().trim_start_matches('-');
            let (name, value) = item.split_once('=').unwrap_or((item, "true"));
            let origin = format!("{key} in {from}");
            // `name+=value` adds to the value k3s would pass.
            match name.strip_suffix('+') {
                Some(name) => {
                    let value = match flags.get(name) {
                        Some(f) if !f.value.is_empty() => format!("{},{value}", f.value),
                        _ => value.to_owned(),
                    };
                    flags.insert(name.to_owned(), Found { value, origin });
                }
                None => {
                    flags.insert(
                        name.to_owned(),
                        Found {
                            value: value.to_owned(),
                            origin,
                        },
                    );
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k3s::config::{Source, merge};

    fn node(version: &str) -> Node {
        Node {
            version: K3sVersion::parse(version).unwrap(),
            embedded_etcd: false,
        }
    }

    #[test]
    fn the_table_parses_and_names_every_component_the_benchmarks_read() {
        let t = table();
        for c in [
            "kube-apiserver",
            "kube-controller-manager",
            "kube-scheduler",
            "kubelet",
            "kube-proxy",
        ] {
            assert!(t.components.contains_key(c), "{c}");
        }
    }

    #[test]
    fn operator_args_win_over_defaults_and_config_keys_become_flags() {
        let yaml = "protect-kernel-defaults: true\nkube-apiserver-arg:\n  - 'audit-log-maxage=1'\n  - '--profiling=true'\n";
        let eff = merge(&[Source {
            file: "/etc/rancher/k3s/config.yaml",
            text: yaml,
        }])
        .unwrap();
        let flags = component_flags(&eff, &node("v1.30.6+k3s1"));
        let api = &flags["kube-apiserver"];
        assert_eq!(api["audit-log-maxage"].value, "1");
        assert_eq!(
            api["audit-log-maxage"].origin,
            "kube-apiserver-arg in /etc/rancher/k3s/config.yaml"
        );
        assert_eq!(api["profiling"].value, "true", "the operator's value wins");
        assert_eq!(api["anonymous-auth"].value, "false");
        assert_eq!(api["anonymous-auth"].origin, "k3s default");
        assert_eq!(flags["kubelet"]["protect-kernel-defaults"].value, "true");
    }

    #[test]
    fn apiserver_ciphers_by_default_only_from_the_fixed_releases() {
        let eff = Effective::new();
        let has = |v: &str| {
            component_flags(&eff, &node(v))["kube-apiserver"].contains_key("tls-cipher-suites")
        };
        assert!(!has("v1.23.15+k3s1"));
        assert!(has("v1.23.16+k3s1"));
        assert!(!has("v1.24.9+k3s1"));
        assert!(has("v1.24.10+k3s1"));
        assert!(!has("v1.25.5+k3s2"));
        assert!(has("v1.25.6+k3s1"));
        assert!(!has("v1.26.0+k3s1"));
        assert!(has("v1.26.1+k3s1"));
        assert!(has("v1.30.6+k3s1"));
        assert!(!has("v1.22.17+k3s1"));
    }
}
