//! What a node must tell for its audit, asked in one read-only probe: the
//! effective k3s configuration (config.yaml, drop-ins, the unit's command
//! line and env files: the same computation the apply uses), the files the
//! benchmarks name (mode, owner), etcd's config file, the live kernel
//! parameters the kubelet protects, and on servers the API's answer about
//! default service accounts and cluster-admin bindings.

use std::collections::BTreeMap;

use super::flags::{Flags, Node, component_flags, running_flags};
use crate::facts::PENDING_DIR;
use crate::facts::{Kind, Probe, RemoteState};
use crate::k3s::config::{CONFIG_FILE_SINCE, DROPINS_READ_SINCE};
use crate::k3s::kubelet_config;
use crate::k3s::launch::Launch;
use crate::k3s::version::K3sVersion;
use crate::modules::sysctl_boot::{self, BootValue};

pub const ETCD_DIR: &str = "/var/lib/rancher/k3s/server/db/etcd";
pub const ETCD_CONFIG: &str = "/var/lib/rancher/k3s/server/db/etcd/config";

/// What the kubelet's protect-kernel-defaults requires of the kernel.
pub const KERNEL_DEFAULTS: &[(&str, &str)] = &[
    ("vm.overcommit_memory", "1"),
    ("vm.panic_on_oom", "0"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

fn kernel_keys() -> Vec<&'static str> {
    KERNEL_DEFAULTS.iter().map(|(k, _)| *k).collect()
}

/// The default service account of every namespace, as `namespace=automount`
/// lines (kube-bench's 5.1.5 audit asks the same).
pub const SERVICE_ACCOUNTS: &str = "k3s kubectl --request-timeout=10s get serviceaccounts --all-namespaces --field-selector metadata.name=default -o jsonpath='{range .items[*]}{.metadata.namespace}={.automountServiceAccountToken}{\"\\n\"}{end}'";

/// The names of the ClusterRoleBindings to cluster-admin, one a line (5.1.1).
pub const CLUSTER_ADMIN_BINDINGS: &str = "k3s kubectl --request-timeout=10s get clusterrolebindings -o jsonpath='{range .items[?(@.roleRef.name==\"cluster-admin\")]}{.metadata.name}{\"\\n\"}{end}'";

#[derive(Debug, Clone)]
pub struct FileFacts {
    pub path: String,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    pub is_file: bool,
}

#[derive(Debug, Clone)]
pub struct Evidence {
    /// `server` or `agent`.
    pub role: String,
    /// None: k3s is not installed, or the node could not be asked (see `missing`).
    pub version: Option<String>,
    /// Why there is no version, when it is not "k3s is not installed".
    pub missing: Option<String>,
    /// Per component (kube-apiserver, kubelet, …): its flags as configured
    /// (what k3s passes at its next start), or why they cannot be known.
    pub flags: Result<BTreeMap<String, Flags>, String>,
    /// Per component: its flags as it runs, from the "Running …" line k3s
    /// logged when it last started it (empty where the journal has none).
    pub running: BTreeMap<String, Flags>,
    /// Handlers a khard run left owed on the node: the configuration on
    /// disk is not in effect.
    pub pending: Vec<String>,
    pub files: Vec<FileFacts>,
    pub embedded_etcd: bool,
    pub etcd_config: Result<serde_yaml::Value, String>,
    /// Servers: (namespace, automountServiceAccountToken) of each default service account.
    pub service_accounts: Option<Result<Vec<(String, String)>, String>>,
    /// Servers: the ClusterRoleBindings that grant cluster-admin.
    pub cluster_admin_bindings: Option<Result<Vec<String>, String>>,
    pub sysctl: BTreeMap<String, String>,
    /// What the sysctl.d files set at the next boot for the kernel
    /// parameters the kubelet protects, or why that cannot be known.
    pub sysctl_boot: Result<BTreeMap<String, BootValue>, String>,
}

/// How many folders deep a recursive target is read.
const RECURSION_DEPTH: usize = 3;

/// The files a control's `target` names: the path in parentheses
/// (`$kubeletkubeconfig (/var/…/kubelet.kubeconfig)`), else the first path;
/// a folder read recursively also gives its files; a glob its files one level down too.
pub fn file_targets(target: &str) -> Vec<String> {
    let inner = target
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside.trim())
        .filter(|inside| inside.starts_with('/'));
    let path = inner.or_else(|| target.split_whitespace().find(|w| w.starts_with('/')));
    let Some(path) = path else {
        return Vec::new();
    };
    if target.contains("recursive") {
        // `find DIR` (every file, the folder too) or `find DIR -name '*.crt'`:
        // k3s keeps certificates up to two folders down (tls/etcd/,
        // tls/temporary-certs/); one more level for safety.
        let pattern = target
            .split("every ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .filter(|p| p.contains('*'))
            .unwrap_or("*");
        let mut out = Vec::new();
        if pattern == "*" {
            out.push(path.to_owned());
        }
        for depth in 0..RECURSION_DEPTH {
            out.push(format!("{path}{}/{pattern}", "/*".repeat(depth)));
        }
        return out;
    }
    let mut out = vec![path.to_owned()];
    if path.ends_with("/*") {
        out.push(format!("{path}/*"));
    }
    out
}

/// The components whose start k3s logs as `Running <component> <args>`.
const LOGGED: &str = "kube-apiserver|kube-controller-manager|kube-scheduler|kubelet|kube-proxy";

/// The last `Running <component> …` line k3s logged for each component in
/// this boot, by the units of the node's role (one journal read), as kube-bench reads it (`journalctl -m -u k3s | grep 'Running
/// kube-apiserver' | tail -n1`): one line per component, so the answer stays
/// small whatever the journal holds.
pub fn journal_command(role: &str) -> String {
    let units: Vec<String> = units(role).iter().map(|u| format!("-u {u}")).collect();
    format!(
        "journalctl -m -b {} --no-pager -o cat | awk 'match($0, /Running ({LOGGED}) /) {{ last[substr($0, RSTART + 8, RLENGTH - 9)] = $0 }} END {{ for (c in last) print last[c] }}'",
        units.join(" ")
    )
}

/// Component → its arguments in order, from the journal lines: logrus's
/// `msg="Running kube-apiserver --a=b --c"` (k3s joins the arguments with
/// spaces; logrus escapes `"` and `\`).
pub fn parse_journal(text: &str) -> BTreeMap<String, Vec<(String, String)>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(at) = line.find("Running ") else {
            continue;
        };
        let rest = &line[at + "Running ".len()..];
        let Some((component, args)) = rest.split_once(' ') else {
            continue;
        };
        if !LOGGED.split('|').any(|c| c == component) {
            continue;
        }
        let args = args.trim_end().strip_suffix('"').unwrap_or(args);
        let args = args.replace("\\\"", "\"").replace("\\\\", "\\");
        let parsed = args
            .split_whitespace()
            .filter_map(|a| a.strip_prefix("--"))
            .map(|a| {
                let (name, value) = a.split_once('=').unwrap_or((a, "true"));
                (name.to_owned(), value.to_owned())
            })
            .collect();
        out.insert(component.to_owned(), parsed);
    }
    out
}

/// Every file any benchmark's file controls stat, collected once per run.
fn benchmark_files() -> &'static std::collections::BTreeSet<String> {
    static FILES: std::sync::OnceLock<std::collections::BTreeSet<String>> =
        std::sync::OnceLock::new();
    FILES.get_or_init(|| {
        let mut out = std::collections::BTreeSet::new();
        for name in super::catalogue::names() {
            let catalogue = super::catalogue::load(name).expect("known profile");
            for c in catalogue.controls.iter().filter(|c| {
                matches!(c.evidence.as_str(), "file_mode" | "file_owner")
                    && c.not_applicable.is_none()
            }) {
                out.extend(file_targets(c.target.as_deref().unwrap_or("")));
            }
        }
        out
    })
}

/// The unit whose command line counts, for a role: k3s, k3s-agent, or the
/// pre-2023 k3s-ansible agent unit k3s-node where that is the one installed.
fn units(role: &str) -> &'static [&'static str] {
    if role == "server" {
        &["k3s"]
    } else {
        &["k3s-agent", "k3s-node"]
    }
}

/// The one probe of a node's audit (the same for every benchmark).
pub fn probe(role: &str, config: &str) -> Probe {
    let mut p = Probe::default();
    for unit in units(role) {
        crate::k3s::config::probe_config(&mut p, unit, config);
    }
    p.stat.insert(config.to_owned());
    // Handlers a khard run left owed: the configuration on disk is not in effect.
    p.content_glob.insert(format!("{PENDING_DIR}/*"));
    p.stat.insert(ETCD_DIR.to_owned());
    p.content.insert(ETCD_CONFIG.to_owned());
    p.stat.extend(benchmark_files().iter().cloned());
    p.reads.insert(journal_command(role));
    kubelet_config::probe(&mut p);
    p.sysctl
        .extend(KERNEL_DEFAULTS.iter().map(|(k, _)| (*k).to_owned()));
    sysctl_boot::probe(&mut p);
    if role == "server" {
        p.reads.insert(SERVICE_ACCOUNTS.to_owned());
        p.reads.insert(CLUSTER_ADMIN_BINDINGS.to_owned());
    }
    p
}

impl Evidence {
    /// Evidence from a node that could not be asked at all.
    pub fn unavailable(role: &str, why: &str) -> Evidence {
        Evidence {
            role: role.to_owned(),
            version: None,
            missing: Some(why.to_owned()),
            flags: Err(why.to_owned()),
            running: BTreeMap::new(),
            pending: Vec::new(),
            files: Vec::new(),
            embedded_etcd: false,
            etcd_config: Err(why.to_owned()),
            service_accounts: None,
            cluster_admin_bindings: None,
            sysctl: BTreeMap::new(),
            sysctl_boot: Err(why.to_owned()),
        }
    }

    /// The node's answer to [`probe`].
    pub fn from_state(role: &str, config: &str, state: &RemoteState) -> Evidence {
        let version = crate::k3s::facts::running_version(state);
        let embedded_etcd = state
            .stat
            .get(ETCD_DIR)
            .is_some_and(|s| s.kind == Kind::Dir);
        let unit = units(role)
            .iter()
            .find(|u| !Launch::from_state(state, u).files.is_empty())
            .unwrap_or(&units(role)[0]);
        let owed: Vec<String> = state
            .content
            .iter()
            .filter(|(p, _)| p.starts_with(&format!("{PENDING_DIR}/")))
            .map(|(_, text)| String::from_utf8_lossy(text).trim().to_owned())
            .collect();
        let parsed = version.as_deref().and_then(K3sVersion::parse);
        let node = parsed.map(|version| Node {
            version,
            embedded_etcd,
            kubelet_dropins: kubelet_config::dropins(state),
        });
        let mut flags = match &node {
            None => Err("the k3s version is unknown".to_owned()),
            Some(node) => config_flags(state, unit, config, node),
        };
        let logged = state.reads.get(&journal_command(role));
        let running = match (&node, logged) {
            (Some(node), Some((_, text))) => running_flags(&parse_journal(text), node)
                .unwrap_or_else(|why| {
                    flags = Err(why);
                    BTreeMap::new()
                }),
            _ => BTreeMap::new(),
        };
        let etcd_config = match state.content.get(ETCD_CONFIG) {
            Some(bytes) => crate::lang::yaml_bounds::check(&String::from_utf8_lossy(bytes))
                .and_then(|()| serde_yaml::from_slice(bytes).map_err(|e| e.to_string()))
                .map_err(|e| format!("{ETCD_CONFIG}: {e}")),
            None => Err(format!("{ETCD_CONFIG} could not be read")),
        };
        let api = |query: &str| -> Option<Result<Vec<String>, String>> {
            (role == "server").then(|| match state.reads.get(query) {
                Some((0, text)) => Ok(text.lines().map(str::to_owned).collect()),
                _ => Err("the Kubernetes API did not answer (is k3s running?)".to_owned()),
            })
        };
        let service_accounts = api(SERVICE_ACCOUNTS).map(|lines| {
            Ok(lines?
                .iter()
                .filter_map(|l| l.split_once('='))
                .map(|(ns, v)| (ns.trim().to_owned(), v.trim().to_owned()))
                .collect())
        });
        let cluster_admin_bindings = api(CLUSTER_ADMIN_BINDINGS).map(|lines| {
            Ok(lines?
                .into_iter()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty())
                .collect())
        });
        let files = state
            .stat
            .iter()
            .map(|(path, s)| FileFacts {
                path: path.clone(),
                mode: s.mode,
                owner: s.owner.clone(),
                group: s.group.clone(),
                is_file: s.kind == Kind::File,
            })
            .collect();
        Evidence {
            role: role.to_owned(),
            version,
            missing: None,
            flags,
            running,
            pending: owed,
            files,
            embedded_etcd,
            etcd_config,
            service_accounts,
            cluster_admin_bindings,
            sysctl: state.sysctl.clone(),
            sysctl_boot: sysctl_boot::boot_values(state, &kernel_keys()),
        }
    }

    /// The files behind a control's targets: exact paths, and for globs the
    /// regular files they match (without `lock` where the benchmark excepts it).
    pub fn matching_files(&self, paths: &[String], target: &str) -> Vec<&FileFacts> {
        let glob = crate::lang::glob::Glob::PATHS;
        self.files
            .iter()
            .filter(|f| {
                paths.iter().any(|p| {
                    if p.contains(['*', '?']) {
                        f.is_file && glob.matches(p, &f.path)
                    } else {
                        f.path == *p
                    }
                })
            })
            .filter(|f| !(target.contains("except lock") && f.path.ends_with("/lock")))
            .collect()
    }
}

/// The component flags of a node from its configuration files, as k3s reads them.
fn config_flags(
    state: &RemoteState,
    unit: &str,
    config: &str,
    node: &Node,
) -> Result<BTreeMap<String, Flags>, String> {
    if state.stat.contains_key(config) && !state.content.contains_key(config) {
        return Err(format!(
            "{config} could not be read whole (a link, or over 256 KiB)"
        ));
    }
    let effective = if node.version < CONFIG_FILE_SINCE {
        // k3s before v1.19.1 reads no config file: only its command line counts.
        crate::k3s::config::command_line_only(&Launch::from_state(state, unit))
    } else {
        crate::k3s::config::effective(
            state,
            unit,
            config,
            None,
            node.version >= DROPINS_READ_SINCE,
        )?
    };
    component_flags(&effective, node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_targets_as_the_catalogues_write_them() {
        assert_eq!(
            file_targets("$kubeletkubeconfig (/var/lib/rancher/k3s/agent/kubelet.kubeconfig)"),
            ["/var/lib/rancher/k3s/agent/kubelet.kubeconfig"]
        );
        assert_eq!(
            file_targets("/var/lib/rancher/k3s/server/tls/*.key"),
            ["/var/lib/rancher/k3s/server/tls/*.key"]
        );
        assert_eq!(
            file_targets("/var/lib/rancher/k3s/server/tls (recursive, every file)"),
            [
                "/var/lib/rancher/k3s/server/tls",
                "/var/lib/rancher/k3s/server/tls/*",
                "/var/lib/rancher/k3s/server/tls/*/*",
                "/var/lib/rancher/k3s/server/tls/*/*/*"
            ]
        );
        // cis-1.6 1.1.20/1.1.21: `find tls/ -name '*.key'` reaches tls/etcd/
        // and tls/temporary-certs/, where k3s rewrites keys at every start.
        assert_eq!(
            file_targets("/var/lib/rancher/k3s/server/tls (recursive, every *.key file)"),
            [
                "/var/lib/rancher/k3s/server/tls/*.key",
                "/var/lib/rancher/k3s/server/tls/*/*.key",
                "/var/lib/rancher/k3s/server/tls/*/*/*.key"
            ]
        );
        assert_eq!(
            file_targets("/var/lib/cni/networks/* (except lock)"),
            ["/var/lib/cni/networks/*", "/var/lib/cni/networks/*/*"]
        );
        assert!(file_targets("$apiserverconf").is_empty());
    }
}
