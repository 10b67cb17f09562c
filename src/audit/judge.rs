//! One control, one verdict, from the node's evidence: the control's own
//! test as kube-bench states it, never khard's variables. Without evidence
//! the verdict is `unknown`, never `pass`.

use std::collections::BTreeMap;

use serde::Serialize;

use super::catalogue::{Control, Item};
use super::evidence::{Evidence, FileFacts, KERNEL_DEFAULTS};
use super::flags::Flags;
use super::test_eval::{Found, passes};
use crate::modules::sysctl_boot::BootValue;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    /// A scored control fails.
    Fail,
    /// An unscored control fails (kube-bench's WARN).
    Warn,
    /// A failing control with an exception in force (the exceptions file).
    Accepted,
    Manual,
    NotApplicable,
    Unknown,
}

impl Verdict {
    /// kube-bench's bracketed form.
    pub fn label(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Warn => "WARN",
            Verdict::Accepted => "ACCEPTED",
            Verdict::Manual => "MANUAL",
            Verdict::NotApplicable => "N/A",
            Verdict::Unknown => "UNKNOWN",
        }
    }
}

/// A verdict with what was found and, where it is not a plain pass or fail, why.
#[derive(Debug, Clone, PartialEq)]
pub struct Judged {
    pub verdict: Verdict,
    pub found: String,
    pub why: String,
}

fn judged(verdict: Verdict, found: String, why: &str) -> Judged {
    Judged {
        verdict,
        found,
        why: why.to_owned(),
    }
}

/// The component whose flags an `*_arg` evidence reads.
fn component(evidence: &str) -> Option<&'static str> {
    Some(match evidence {
        "apiserver_arg" => "kube-apiserver",
        "controller_manager_arg" => "kube-controller-manager",
        "scheduler_arg" => "kube-scheduler",
        "kubelet_arg" => "kubelet",
        "kube_proxy_arg" => "kube-proxy",
        _ => return None,
    })
}

/// Sections 1, 2, 3 and 5 are the control plane and cluster policies, judged on servers.
fn server_only(id: &str) -> bool {
    !id.starts_with("4.")
}

pub fn judge(c: &Control, ev: &Evidence) -> Judged {
    if let Some(why) = &c.not_applicable {
        return judged(Verdict::NotApplicable, String::new(), why);
    }
    if server_only(&c.id) && ev.role != "server" {
        return judged(
            Verdict::NotApplicable,
            String::new(),
            "a control-plane or cluster control, judged on the servers; this node is an agent",
        );
    }
    let judged_by_test =
        c.test.is_some() && c.kube_bench_type.as_deref() != Some("manual") && c.evidence != "none";
    if !judged_by_test {
        return judged(
            Verdict::Manual,
            String::new(),
            "the benchmark asks for a human check",
        );
    }
    if ev.version.is_none() {
        let why = match &ev.missing {
            Some(why) => format!("no evidence: {why}"),
            None => "k3s is not installed here (`k3s --version` did not answer)".to_owned(),
        };
        return judged(Verdict::Unknown, String::new(), &why);
    }
    // Controls khard does not read from the API: a scored one cannot be
    // judged (unknown); an unscored one is a human check, as kube-bench's WARN.
    if c.evidence == "api" && api_question(c).is_none() {
        let why = format!(
            "khard does not query the API for this control; check it by hand: {}",
            target(c)
        );
        let verdict = if c.scored {
            Verdict::Unknown
        } else {
            Verdict::Manual
        };
        return judged(verdict, String::new(), &why);
    }
    let result = match c.evidence.as_str() {
        "etcd_arg" => etcd(c, ev),
        "file_mode" | "file_owner" => files(c, ev),
        "api" => match api_question(c) {
            Some(Api::DefaultServiceAccounts) => default_service_accounts(ev),
            Some(Api::ClusterAdmin) => cluster_admin(c, ev),
            None => unreachable!("handled above"),
        },
        other => match component(other) {
            Some(name) => args(c, ev, name),
            None => Err(format!("khard does not read `{other}` evidence")),
        },
    };
    let (ok, mut found) = match result {
        Ok(Some(x)) => x,
        Ok(None) => {
            return judged(Verdict::NotApplicable, String::new(), &na_reason(c, ev));
        }
        Err(why) => return judged(Verdict::Unknown, String::new(), &why),
    };
    let mut verdict = if ok { Verdict::Pass } else { Verdict::Fail };
    // A kubelet that protects kernel defaults refuses to start on a kernel
    // that differs: the flag alone does not meet the control.
    if ok && mentions(c, "--protect-kernel-defaults") {
        let off = kernel_drift(&ev.sysctl);
        let at_boot = boot_drift(&ev.sysctl_boot);
        if !off.is_empty() {
            verdict = Verdict::Fail;
            found.push_str(&format!(
                "; but the live kernel differs from what the kubelet protects ({}): the kubelet refuses to start with it",
                off.join(", ")
            ));
        } else if !at_boot.is_empty() {
            verdict = Verdict::Fail;
            found.push_str(&format!(
                "; but the next boot sets {}: the kubelet will refuse to start then",
                at_boot.join(", ")
            ));
        }
    }
    judged(verdict, found, "")
}

fn mentions(c: &Control, flag: &str) -> bool {
    c.test
        .as_ref()
        .is_some_and(|t| t.items().iter().any(|i| i.flag == flag))
}

/// Live kernel parameters that differ from what protect-kernel-defaults requires.
pub fn kernel_drift(sysctl: &BTreeMap<String, String>) -> Vec<String> {
    KERNEL_DEFAULTS
        .iter()
        .filter_map(|(key, want)| match sysctl.get(*key) {
            Some(v) if v == want => None,
            Some(v) => Some(format!("{key}={v}, wants {want}")),
            None => Some(format!("{key} unreadable")),
        })
        .collect()
}

/// The kernel parameters the sysctl.d files set, at the next boot, to a
/// value protect-kernel-defaults refuses (a key they do not set keeps the
/// live value, judged above).
pub fn boot_drift(boot: &Result<BTreeMap<String, BootValue>, String>) -> Vec<String> {
    let Ok(boot) = boot else {
        return Vec::new();
    };
    KERNEL_DEFAULTS
        .iter()
        .filter_map(|(key, want)| {
            let b = boot.get(*key)?;
            (b.value != *want).then(|| format!("{key}={} ({}), wants {want}", b.value, b.file))
        })
        .collect()
}

fn na_reason(c: &Control, ev: &Evidence) -> String {
    let etcd = c.evidence == "etcd_arg"
        || target(c).contains("/db/etcd")
        || c.test
            .as_ref()
            .is_some_and(|t| t.items().iter().any(|i| i.flag.starts_with("--etcd-")));
    if etcd && !ev.embedded_etcd {
        return "no embedded etcd on this node (sqlite or an external datastore)".into();
    }
    "does not apply to this node".into()
}

/// Whether the test passes and what was found; Ok(None) when the control
/// does not apply; Err(why) when the evidence could not be read.
type Outcome = Result<Option<(bool, String)>, String>;

fn target(c: &Control) -> &str {
    c.target.as_deref().unwrap_or("")
}

fn args(c: &Control, ev: &Evidence, component: &str) -> Outcome {
    let test = c.test.as_ref().expect("judged controls have a test");
    // The apiserver's etcd client flags mean nothing without etcd: k3s then
    // talks to its datastore (kine) over a local socket.
    if !ev.embedded_etcd && test.items().iter().all(|i| i.flag.starts_with("--etcd-")) {
        return Ok(None);
    }
    let empty = Flags::new();
    let configured = ev
        .flags
        .as_ref()
        .map(|all| all.get(component).unwrap_or(&empty));
    // What runs decides where k3s logged it; else what k3s will pass, as
    // long as no unfinished rollout says the files are not in effect.
    let flags = match (ev.running.get(component), &configured) {
        (Some(running), _) => running,
        (None, Err(why)) => return Err((*why).clone()),
        (None, Ok(_)) if !ev.pending.is_empty() => {
            return Err(format!(
                "the configuration on disk is not in effect: a khard rollout did not finish here (pending: {}), and k3s logged no start of {component} to read instead; run khard apply to finish it",
                ev.pending.join(", ")
            ));
        }
        (None, Ok(configured)) => *configured,
    };
    // An absent flag proves nothing where k3s may pass it unseen.
    for item in test.items() {
        let name = item.flag.trim_start_matches('-');
        if flags.get(name).is_none()
            && let Some(why) = flags.unknown_why(name)
        {
            return Err(why.to_owned());
        }
    }
    let lookup = |item: &Item| {
        lookup_flag(flags, item).or_else(|| {
            c.absent_default(&item.flag).map(|value| Found {
                value,
                origin: "not set; the benchmark's audit takes this value then".into(),
            })
        })
    };
    let ok = passes(test, &lookup);
    let mut found = found_flags(test, &lookup);
    // Running and configured differ: the next start changes the verdict's evidence.
    if ev.running.contains_key(component)
        && let Ok(configured) = configured
    {
        let next = |item: &Item| lookup_flag(configured, item);
        let differs = test
            .items()
            .iter()
            .any(|i| lookup_flag(flags, i).map(|f| f.value) != next(i).map(|f| f.value));
        if differs {
            found.push_str(&format!(
                "; configured for the next start: {} (not active until k3s restarts)",
                found_flags(test, &next)
            ));
        }
    }
    Ok(Some((ok, found)))
}

/// A flag (`--profiling`) or a feature gate (`RotateKubeletServerCertificate`).
fn lookup_flag(flags: &Flags, item: &Item) -> Option<Found> {
    if let Some(name) = item.flag.strip_prefix("--") {
        return flags.get(name).cloned();
    }
    if item.flag == "provider" {
        return flags.get("provider").cloned();
    }
    let gates = flags.get("feature-gates")?;
    gates.value.split(',').find_map(|g| {
        let (name, value) = g.split_once('=')?;
        (name.trim() == item.flag).then(|| Found {
            value: value.trim().to_owned(),
            origin: gates.origin.clone(),
        })
    })
}

/// What the flags of a test were: `--audit-log-maxage=1 (kube-apiserver-arg in …)`.
fn found_flags(test: &super::catalogue::Test, lookup: &dyn Fn(&Item) -> Option<Found>) -> String {
    let items = test.items();
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let name = super::test_eval::item_name(item);
        let text = match lookup(item) {
            Some(f) => format!("{name}={} ({})", f.value, f.origin),
            None => format!("{name} not set"),
        };
        if !out.contains(&text) {
            out.push(text);
        }
    }
    out.join("; ")
}

fn etcd(c: &Control, ev: &Evidence) -> Outcome {
    if !ev.embedded_etcd {
        return Ok(None);
    }
    let config = ev.etcd_config.as_ref().map_err(Clone::clone)?;
    let section = audited_section(c);
    let lookup = |item: &Item| -> Option<Found> {
        let path: Vec<String> = match &item.path {
            Some(p) if item.flag.is_empty() => p
                .trim_matches(['{', '}'])
                .trim_start_matches('.')
                .split('.')
                .map(str::to_owned)
                .collect(),
            // The older profiles grep etcd's YAML config file for the flag's
            // text (check/test.go: strings.Contains): `--client-cert-auth`
            // never occurs in a file whose keys have no dashes.
            _ if item.flag.starts_with("--") => return None,
            _ => match section {
                Some(section) => vec![section.to_owned(), item.flag.clone()],
                None => etcd_key(&item.flag),
            },
        };
        let mut v = config;
        for part in &path {
            v = v.get(part.as_str())?;
        }
        let value = match v {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => return None,
        };
        Some(Found {
            value,
            origin: super::evidence::ETCD_CONFIG.into(),
        })
    };
    let test = c.test.as_ref().expect("judged controls have a test");
    Ok(Some((passes(test, &lookup), found_flags(test, &lookup))))
}

/// The block of etcd's config file an older profile's audit greps
/// (`grep -A 5 'peer-transport-security' $etcdconf | grep …`), as its note records.
fn audited_section(c: &Control) -> Option<&'static str> {
    let note = c.note.as_deref()?;
    if note.contains("peer-transport-security") {
        Some("peer-transport-security")
    } else if note.contains("client-transport-security") {
        Some("client-transport-security")
    } else {
        None
    }
}

/// Where an etcd flag lives in etcd's config file.
fn etcd_key(flag: &str) -> Vec<String> {
    const CLIENT: &[&str] = &[
        "cert-file",
        "key-file",
        "client-cert-auth",
        "auto-tls",
        "trusted-ca-file",
    ];
    if let Some(rest) = flag.strip_prefix("peer-") {
        return vec!["peer-transport-security".into(), rest.into()];
    }
    if CLIENT.contains(&flag) {
        return vec!["client-transport-security".into(), flag.into()];
    }
    vec![flag.into()]
}

fn files(c: &Control, ev: &Evidence) -> Outcome {
    let paths = super::evidence::file_targets(target(c));
    if paths.is_empty() {
        return Err(format!(
            "khard cannot tell which file `{}` means",
            target(c)
        ));
    }
    if target(c).contains("/db/etcd") && !ev.embedded_etcd {
        return Ok(None);
    }
    let test = c.test.as_ref().expect("judged controls have a test");
    let matched: Vec<&FileFacts> = ev.matching_files(&paths, target(c));
    if matched.is_empty() {
        // A test that allows the file to be absent (kube-proxy's kubeconfig) passes.
        if passes(test, &|_| None) {
            return Ok(Some((true, format!("{}: not present", paths.join(", ")))));
        }
        return Err(format!(
            "{} not found (k3s may not have created it yet)",
            paths.join(", ")
        ));
    }
    let mut ok = true;
    let mut found = Vec::new();
    for f in &matched {
        let lookup = |item: &Item| file_lookup(f, item);
        ok &= passes(test, &lookup);
        found.push(format!("{}: {:o} {}:{}", f.path, f.mode, f.owner, f.group));
    }
    let shown = found.len().min(8);
    let mut text = found[..shown].join("; ");
    if found.len() > shown {
        text.push_str(&format!("; and {} more", found.len() - shown));
    }
    Ok(Some((ok, text)))
}

/// kube-bench's file audits print `permissions=600` and `root:root`; a test
/// item names what it looks for in that output.
fn file_lookup(f: &FileFacts, item: &Item) -> Option<Found> {
    let found = |value: String| {
        Some(Found {
            value,
            origin: f.path.clone(),
        })
    };
    let mode = format!("{:o}", f.mode);
    let owner = format!("{}:{}", f.owner, f.group);
    let flag = item.flag.as_str();
    if flag == "permissions" {
        found(mode)
    } else if flag.contains(':') {
        match item.op {
            None => (owner == flag).then(|| Found {
                value: owner.clone(),
                origin: f.path.clone(),
            }),
            Some(_) => found(owner),
        }
    } else if flag.chars().all(|ch| ch.is_ascii_digit()) && !flag.is_empty() {
        (mode == flag).then(|| Found {
            value: mode.clone(),
            origin: f.path.clone(),
        })
    } else if flag.starts_with('$') {
        found(f.path.clone())
    } else {
        None
    }
}

/// The API questions khard asks.
enum Api {
    /// 5.1.5
    DefaultServiceAccounts,
    /// 5.1.1
    ClusterAdmin,
}

fn api_question(c: &Control) -> Option<Api> {
    let title = c.title.to_ascii_lowercase();
    if title.contains("default service account") {
        Some(Api::DefaultServiceAccounts)
    } else if title.contains("cluster-admin role") {
        Some(Api::ClusterAdmin)
    } else {
        None
    }
}

/// 5.1.1: only the bindings the benchmark lists may grant cluster-admin.
fn cluster_admin(c: &Control, ev: &Evidence) -> Outcome {
    let bindings = ev
        .cluster_admin_bindings
        .as_ref()
        .ok_or("the API is asked on servers only")?
        .as_ref()
        .map_err(Clone::clone)?;
    // Kubernetes bootstraps the `cluster-admin` binding itself (to
    // system:masters): an answer without it did not come from a working API.
    if !bindings.iter().any(|b| b == "cluster-admin") {
        return Err(format!(
            "implausible API answer: no `cluster-admin` ClusterRoleBinding among {} binding(s); every cluster has it",
            bindings.len()
        ));
    }
    let test = c.test.as_ref().expect("judged controls have a test");
    let lookup = |_: &Item| {
        Some(Found {
            value: bindings.join(","),
            origin: "the API".into(),
        })
    };
    let found = format!(
        "ClusterRoleBindings to cluster-admin: {}",
        bindings.join(", ")
    );
    Ok(Some((passes(test, &lookup), found)))
}

/// The namespaces Kubernetes creates in every cluster.
const ALWAYS_PRESENT_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

/// 5.1.5: the default service account of every namespace but kube-system
/// must not mount its token.
fn default_service_accounts(ev: &Evidence) -> Outcome {
    let accounts = ev
        .service_accounts
        .as_ref()
        .ok_or("the API is asked on servers only")?
        .as_ref()
        .map_err(Clone::clone)?;
    // Every cluster has these namespaces, each with its default service
    // account: an answer without them is a question that did not work.
    let missing: Vec<&str> = ALWAYS_PRESENT_NAMESPACES
        .iter()
        .copied()
        .filter(|ns| !accounts.iter().any(|(n, _)| n == ns))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "implausible API answer: no default service account in {} ({} namespace(s) listed); every cluster has them",
            missing.join(", "),
            accounts.len()
        ));
    }
    let mounting: Vec<&str> = accounts
        .iter()
        .filter(|(ns, automount)| ns != "kube-system" && automount != "false")
        .map(|(ns, _)| ns.as_str())
        .collect();
    let found = if mounting.is_empty() {
        format!(
            "automountServiceAccountToken: false on the default service account of {} namespace(s) outside kube-system",
            accounts
                .iter()
                .filter(|(ns, _)| ns != "kube-system")
                .count()
        )
    } else {
        format!(
            "the default service account mounts its token in: {}",
            mounting.join(", ")
        )
    };
    Ok(Some((mounting.is_empty(), found)))
}
