//! The kubelet's config drop-ins (`agent/etc/kubelet.conf.d/`), which k3s
//! passes as `--config-dir` from v1.32.0: k3s writes its own defaults to
//! 00-k3s-defaults.conf there, and a later drop-in of the operator's
//! overrides them (the kubelet merges the folder in name order; its
//! command-line flags still win over every file).

use crate::facts::{Probe, RemoteState};
use crate::k3s::version::K3sVersion;

/// The folder of kubelet config drop-ins k3s ≥ 1.32 passes as `--config-dir`.
pub const CONFIG_DIR: &str = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d";

/// The first release whose kubelet reads `CONFIG_DIR`.
pub const CONFIG_DIR_SINCE: &str = "v1.32.0";

/// KubeletConfiguration fields (k8s.io/kubelet/config/v1beta1) and the
/// flags they stand for, for the settings the benchmarks test.
const FIELDS: &[(&str, &str)] = &[
    ("authentication.anonymous.enabled", "anonymous-auth"),
    ("authorization.mode", "authorization-mode"),
    ("authentication.x509.clientCAFile", "client-ca-file"),
    ("readOnlyPort", "read-only-port"),
    (
        "streamingConnectionIdleTimeout",
        "streaming-connection-idle-timeout",
    ),
    ("protectKernelDefaults", "protect-kernel-defaults"),
    ("makeIPTablesUtilChains", "make-iptables-util-chains"),
    ("eventRecordQPS", "event-qps"),
    ("tlsCertFile", "tls-cert-file"),
    ("tlsPrivateKeyFile", "tls-private-key-file"),
    ("rotateCertificates", "rotate-certificates"),
    ("podPidsLimit", "pod-max-pids"),
    ("seccompDefault", "seccomp-default"),
];

/// The kubelet settings of the operator's config drop-ins, as flags: later
/// files win (the kubelet merges the folder in name order); a file that is
/// not YAML is an error, as it is for the kubelet.
pub fn settings(dropins: &[(String, String)]) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    for (path, text) in dropins {
        crate::lang::yaml_bounds::check(text).map_err(|e| format!("{path}: {e}"))?;
        let doc: serde_yaml::Value =
            serde_yaml::from_str(text).map_err(|e| format!("{path}: {e}"))?;
        for (field, flag) in FIELDS {
            let mut v = &doc;
            for part in field.split('.') {
                match v.get(part) {
                    Some(next) => v = next,
                    None => {
                        v = &serde_yaml::Value::Null;
                        break;
                    }
                }
            }
            let value = match v {
                serde_yaml::Value::String(s) => s.clone(),
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::Number(n) => n.to_string(),
                _ => continue,
            };
            out.push(((*flag).to_owned(), value, format!("{field} in {path}")));
        }
        if let Some(suites) = doc.get("tlsCipherSuites").and_then(|s| s.as_sequence()) {
            let list: Vec<&str> = suites.iter().filter_map(|s| s.as_str()).collect();
            out.push((
                "tls-cipher-suites".into(),
                list.join(","),
                format!("tlsCipherSuites in {path}"),
            ));
        }
        if let Some(gates) = doc.get("featureGates").and_then(|g| g.as_mapping()) {
            let list: Vec<String> = gates
                .iter()
                .filter_map(|(k, v)| Some(format!("{}={}", k.as_str()?, v.as_bool()?)))
                .collect();
            out.push((
                "feature-gates".into(),
                list.join(","),
                format!("featureGates in {path}"),
            ));
        }
    }
    Ok(out)
}

/// Whether a node of this k3s version reads the drop-in folder.
pub fn reads_dropins(version: K3sVersion) -> bool {
    K3sVersion::parse(CONFIG_DIR_SINCE).is_some_and(|since| version >= since)
}

/// What a probe asks to read the drop-ins.
pub fn probe(p: &mut Probe) {
    p.content_glob.insert(format!("{CONFIG_DIR}/*.conf"));
}

/// The operator's drop-ins (path, text) in the kubelet's order (by name);
/// k3s's own 00-k3s-defaults.conf is modelled by its defaults table.
pub fn dropins(state: &RemoteState) -> Vec<(String, String)> {
    let defaults = format!("{CONFIG_DIR}/00-k3s-defaults.conf");
    state
        .content
        .iter()
        .filter(|(p, _)| {
            p.starts_with(&format!("{CONFIG_DIR}/")) && p.ends_with(".conf") && **p != defaults
        })
        .map(|(p, text)| (p.clone(), String::from_utf8_lossy(text).into_owned()))
        .collect()
}

/// Settings of the operator's drop-ins that undo what k3s's defaults give
/// the CIS kubelet controls (khard's own kubelet flags are command-line
/// flags, which no drop-in overrides), each as a sentence naming the file
/// and the fix (docs/research/k3s-config-semantics.md K20).
pub fn weakened(dropins: &[(String, String)]) -> Result<Vec<String>, String> {
    const WEAK: &[(&str, &str, &str)] = &[
        (
            "anonymous-auth",
            "true",
            "anonymous requests to the kubelet (CIS 4.2.1)",
        ),
        (
            "authorization-mode",
            "AlwaysAllow",
            "every request authorized (CIS 4.2.2)",
        ),
    ];
    let mut out = Vec::new();
    let mut last: std::collections::BTreeMap<String, (String, String)> = Default::default();
    for (flag, value, origin) in settings(dropins)? {
        last.insert(flag, (value, origin));
    }
    for (flag, bad, what) in WEAK {
        if let Some((value, origin)) = last.get(*flag)
            && value.eq_ignore_ascii_case(bad)
        {
            out.push(format!(
                "{origin} turns on {what}, over k3s's default in 00-k3s-defaults.conf: remove it there"
            ));
        }
    }
    Ok(out)
}
