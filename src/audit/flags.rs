//! The flags k3s passes to its embedded components (kube-apiserver, the
//! kubelet, …), as kube-bench reads them from k3s's "Running kube-…" log
//! lines: k3s's own defaults for the node's version (src/k3s/component_args.yaml,
//! with sources in docs/research/k3s-component-args.md), then the config
//! keys that become flags, then the operator's `*-arg` items, which win.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::test_eval::Found;
use crate::k3s::config::{Effective, Setting};
use crate::k3s::kubelet_config;
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
    /// k3s passes no such default when the operator's `*-arg` items give this flag.
    #[serde(default)]
    unless_arg: Option<String>,
    /// From this release k3s writes the default to the kubelet's config file
    /// (agent/etc/kubelet.conf.d/00-k3s-defaults.conf), not its command line.
    #[serde(default)]
    config_file_since: Option<String>,
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

/// The table, parsed once per run (every node's audit reads it).
fn table() -> &'static Table {
    static TABLE: std::sync::OnceLock<Table> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        serde_yaml::from_str(include_str!("../k3s/component_args.yaml"))
            .expect("built-in table of k3s component defaults")
    })
}

/// The node facts the defaults depend on.
pub struct Node {
    pub version: Version,
    /// k3s runs embedded etcd here (not sqlite or an external datastore).
    pub embedded_etcd: bool,
    /// The kubelet config drop-ins other than k3s's own 00-k3s-defaults.conf
    /// (path, text), in the kubelet's order; read where k3s passes
    /// `--config-dir` (from v1.32.0).
    pub kubelet_dropins: Vec<(String, String)>,
}

/// Whether this node's kubelet reads the config drop-in folder.
fn reads_kubelet_dropins(node: &Node) -> bool {
    kubelet_config::reads_dropins(node.version)
}

/// The drop-ins' settings over a kubelet's defaults (command-line flags,
/// applied after, win over them: the kubelet's precedence).
fn apply_kubelet_dropins(flags: &mut Flags, node: &Node) -> Result<(), String> {
    if !reads_kubelet_dropins(node) {
        return Ok(());
    }
    for (flag, value, origin) in kubelet_config::settings(&node.kubelet_dropins)? {
        flags.insert(&flag, Found { value, origin });
    }
    Ok(())
}

impl DefaultFlag {
    /// A confirmed default that k3s passes on this node.
    fn applies(&self, node: &Node) -> bool {
        self.confidence.as_deref() != Some("unconfirmed") && self.in_range(node)
    }

    /// The node's version and datastore are within the default's range.
    fn in_range(&self, node: &Node) -> bool {
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

/// One component's flags: what is set (flag name without dashes → value
/// and origin), and the flags whose absence proves nothing, with why.
#[derive(Debug, Clone, Default)]
pub struct Flags {
    set: BTreeMap<String, Found>,
    unknown: BTreeMap<String, String>,
}

impl Flags {
    pub fn new() -> Flags {
        Flags::default()
    }

    pub fn get(&self, name: &str) -> Option<&Found> {
        self.set.get(name)
    }

    /// Why an absent flag cannot be judged absent (k3s may set it by a
    /// default khard cannot confirm, or the setting lives in a file khard
    /// does not read); None when absent means absent.
    pub fn unknown_why(&self, name: &str) -> Option<&str> {
        self.unknown.get(name).map(String::as_str)
    }

    pub fn insert(&mut self, name: &str, found: Found) {
        self.unknown.remove(name);
        self.set.insert(name.to_owned(), found);
    }
}

#[cfg(test)]
impl std::ops::Index<&str> for Flags {
    type Output = Found;
    fn index(&self, name: &str) -> &Found {
        &self.set[name]
    }
}

/// Flags whose values accumulate when given more than once: kube-apiserver's
/// and the kubelet's `StringSlice`/`StringArray`/map flags (pflag: the first
/// `Set` replaces the default, each further one appends). Every other flag
/// takes the last value given. Source: k8s.io/kubernetes
/// pkg/kubeapiserver/options (admission, authorization), component-base/cli/flag
/// (ciphers, feature gates), staging/src/k8s.io/apiserver/pkg/server/options.
const ACCUMULATING: &[&str] = &[
    "enable-admission-plugins",
    "disable-admission-plugins",
    "authorization-mode",
    "tls-cipher-suites",
    "feature-gates",
    "service-account-key-file",
    "api-audiences",
];

/// The `*-arg` config key of each component.
fn arg_key(component: &str) -> String {
    format!("{component}-arg")
}

/// Every component's flags on this node; Err when a kubelet config drop-in
/// cannot be read (the kubelet would not start on it either).
pub fn component_flags(
    effective: &Effective,
    node: &Node,
) -> Result<BTreeMap<String, Flags>, String> {
    let table = table();
    let mut out: BTreeMap<String, Flags> = BTreeMap::new();
    // The operator's `*-arg` items, per component: (name, value, origin), in order.
    let mut operator: BTreeMap<String, Vec<(String, String, String)>> = BTreeMap::new();
    for component in table.components.keys() {
        let key = arg_key(component);
        let items: Vec<(String, String)> = match effective.get(&key) {
            Some(Setting::List(items)) => items.clone(),
            Some(Setting::Scalar { value, from }) => vec![(value.clone(), from.clone())],
            None => continue,
        };
        let parsed = items.into_iter().map(|(item, from)| {
            let item = item.trim();
            let item = item.strip_prefix("--").unwrap_or(item);
            let (name, value) = item.split_once('=').unwrap_or((item, "true"));
            (
                name.to_owned(),
                value.to_owned(),
                format!("{key} in {from}"),
            )
        });
        operator.insert(component.clone(), parsed.collect());
    }
    for (component, defaults) in &table.components {
        let flags = out.entry(component.clone()).or_default();
        let given = operator.get(component).map(Vec::as_slice).unwrap_or(&[]);
        for d in defaults {
            if d.unless_arg.as_ref().is_some_and(|arg| {
                given
                    .iter()
                    .any(|(n, _, _)| n.trim_end_matches(['+', '-']) == arg)
            }) {
                let why = format!(
                    "k3s passes no --{} when {} gives --{}: the setting is in that file, which khard does not read",
                    d.flag,
                    arg_key(component),
                    d.unless_arg.as_deref().unwrap_or_default()
                );
                flags.unknown.insert(d.flag.clone(), why);
                continue;
            }
            if d.confidence.as_deref() == Some("unconfirmed") {
                if d.in_range(node) {
                    flags.unknown.insert(
                        d.flag.clone(),
                        format!(
                            "k3s may pass --{}={} by default at {}; the releases that do are not confirmed (docs/research/k3s-component-args.md)",
                            d.flag, d.value, node.version
                        ),
                    );
                }
                continue;
            }
            if d.applies(node) {
                flags.insert(
                    &d.flag,
                    Found {
                        value: d.value.clone(),
                        origin: "k3s default".into(),
                    },
                );
            }
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
            &k.flag,
            Found {
                value: flag_value,
                origin: format!("{} in {from}", k.key),
            },
        );
    }
    apply_kubelet_dropins(out.entry("kubelet".into()).or_default(), node)?;
    for (component, given) in operator {
        let flags = out.entry(component).or_default();
        apply_operator_args(flags, &given);
    }
    Ok(out)
}

/// Every component's flags as it runs: the arguments k3s logged when it
/// started it (repeats read as the component reads them), and, from the
/// releases that moved them there, the kubelet defaults k3s writes to its
/// config file instead (the command line wins over that file).
pub fn running_flags(
    logged: &BTreeMap<String, Vec<(String, String)>>,
    node: &Node,
) -> Result<BTreeMap<String, Flags>, String> {
    let table = table();
    let mut out = BTreeMap::new();
    for (component, args) in logged {
        let mut flags = Flags::new();
        let origin = format!("the \"Running {component}\" line k3s logged at its last start");
        let given: Vec<(String, String, String)> = args
            .iter()
            .map(|(n, v)| (n.clone(), v.clone(), origin.clone()))
            .collect();
        if component == "kubelet" {
            apply_kubelet_dropins(&mut flags, node)?;
        }
        apply_operator_args(&mut flags, &given);
        for d in table.components.get(component).into_iter().flatten() {
            let in_file = d
                .config_file_since
                .as_deref()
                .and_then(K3sVersion::parse)
                .is_some_and(|since| node.version >= since);
            if in_file && d.applies(node) && flags.get(&d.flag).is_none() {
                flags.insert(
                    &d.flag,
                    Found {
                        value: d.value.clone(),
                        origin: format!("k3s default in {KUBELET_DEFAULTS_FILE}"),
                    },
                );
            }
        }
        out.insert(component.clone(), flags);
    }
    Ok(out)
}

/// Where k3s ≥ 1.32 writes the kubelet's defaults.
pub const KUBELET_DEFAULTS_FILE: &str =
    "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf";

/// k3s's merge of a component's `*-arg` items into its defaults (the
/// table's `arg_merge`): a plain `name=value` replaces the default and
/// repeats emit one flag each; `name+=value` keeps the default and emits the
/// value after it, `name-=value` before it. The component then reads the
/// repeated flags: accumulating ones join, the others keep the last.
fn apply_operator_args(flags: &mut Flags, given: &[(String, String, String)]) {
    let mut names: Vec<&str> = Vec::new();
    for (name, _, _) in given {
        let base = name.trim_end_matches(['+', '-']);
        if !names.contains(&base) {
            names.push(base);
        }
    }
    for name in names {
        let of = |suffix: &str| -> Vec<(&str, &str)> {
            given
                .iter()
                .filter(|(n, _, _)| n.strip_prefix(name) == Some(suffix))
                .map(|(_, v, o)| (v.as_str(), o.as_str()))
                .collect()
        };
        let plain = of("");
        let mut emitted: Vec<(&str, &str)> = of("-");
        let default = flags.get(name).cloned();
        if plain.is_empty() {
            if let Some(d) = &default {
                emitted.push((&d.value, &d.origin));
            }
        } else {
            emitted.extend(plain);
        }
        emitted.extend(of("+"));
        let Some(&(last, origin)) = emitted.last() else {
            continue;
        };
        let value = if ACCUMULATING.contains(&name) {
            let values: Vec<&str> = emitted.iter().map(|(v, _)| *v).collect();
            values.join(",")
        } else {
            last.to_owned()
        };
        let origin = origin.to_owned();
        flags.insert(name, Found { value, origin });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k3s::config::{Source, merge};

    fn node(version: &str) -> Node {
        Node {
            version: K3sVersion::parse(version).unwrap(),
            embedded_etcd: false,
            kubelet_dropins: Vec::new(),
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
        let flags = component_flags(&eff, &node("v1.30.6+k3s1")).unwrap();
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
            component_flags(&eff, &node(v)).unwrap()["kube-apiserver"]
                .get("tls-cipher-suites")
                .is_some()
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

    fn apiserver(yaml: &str, version: &str) -> Flags {
        let eff = merge(&[Source {
            file: "/etc/rancher/k3s/config.yaml",
            text: yaml,
        }])
        .unwrap();
        component_flags(&eff, &node(version))
            .unwrap()
            .remove("kube-apiserver")
            .unwrap()
    }

    #[test]
    fn repeated_slice_flags_accumulate_and_scalar_flags_keep_the_last() {
        // k3s emits one --enable-admission-plugins per item; kube-apiserver's
        // StringSlice appends every repeat after the first.
        let f = apiserver(
            "kube-apiserver-arg:\n  - enable-admission-plugins=NodeRestriction\n  - enable-admission-plugins=EventRateLimit\n  - audit-log-maxage=30\n  - audit-log-maxage=5\n",
            "v1.30.6+k3s1",
        );
        assert_eq!(
            f["enable-admission-plugins"].value,
            "NodeRestriction,EventRateLimit"
        );
        assert_eq!(f["audit-log-maxage"].value, "5");
        // `+=` keeps k3s's default before the value; on a scalar flag the
        // value given last wins.
        let f = apiserver(
            "kube-apiserver-arg:\n  - enable-admission-plugins+=AlwaysPullImages\n  - profiling+=true\n",
            "v1.30.6+k3s1",
        );
        assert_eq!(
            f["enable-admission-plugins"].value,
            "NodeRestriction,AlwaysPullImages"
        );
        assert_eq!(f["profiling"].value, "true");
        // A plain item replaces the default.
        let f = apiserver(
            "kube-apiserver-arg: [enable-admission-plugins=EventRateLimit]\n",
            "v1.30.6+k3s1",
        );
        assert_eq!(f["enable-admission-plugins"].value, "EventRateLimit");
    }

    #[test]
    fn authentication_and_authorization_config_leave_those_defaults_unknown() {
        let f = apiserver(
            "kube-apiserver-arg:\n  - authentication-config=/etc/k3s/authn.yaml\n  - authorization-config=/etc/k3s/authz.yaml\n",
            "v1.33.5+k3s1",
        );
        assert!(f.get("anonymous-auth").is_none());
        assert!(f.get("authorization-mode").is_none());
        assert!(
            f.unknown_why("anonymous-auth")
                .unwrap()
                .contains("--authentication-config")
        );
        assert!(f.unknown_why("authorization-mode").is_some());
        // The operator's own flag is known again.
        let f = apiserver(
            "kube-apiserver-arg: [authentication-config=/a.yaml, anonymous-auth=false]\n",
            "v1.33.5+k3s1",
        );
        assert_eq!(f["anonymous-auth"].value, "false");
    }

    #[test]
    fn an_unconfirmed_default_is_unknown_in_its_range_and_absent_after() {
        let old = apiserver("", "v1.20.15+k3s1");
        assert!(old.get("insecure-port").is_none());
        assert!(
            old.unknown_why("insecure-port")
                .unwrap()
                .contains("not confirmed")
        );
        let new = apiserver("", "v1.30.6+k3s1");
        assert!(new.unknown_why("insecure-port").is_none());
    }
}
