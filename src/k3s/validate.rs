//! Checks on rendered content before anything is written: a k3s config that
//! k3s would refuse (or silently half-ignore) never reaches a node.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::modules::{ContentKind, Shared};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Validate {
    /// YAML of k3s' config.yaml, with only keys valid for the node's role.
    K3sConfig,
    /// Kubernetes manifests: YAML documents with apiVersion, kind and metadata.name.
    Manifest,
    /// Any YAML.
    Yaml,
}

/// Flags `k3s agent` accepts. `k3s agent` exits on any other key in its
/// config file (k3s#5866), so an agent's config must use only these.
pub const AGENT_KEYS: &[&str] = &[
    "config",
    "debug",
    "v",
    "vmodule",
    "log",
    "alsologtostderr",
    "token",
    "token-file",
    "server",
    "data-dir",
    "node-name",
    "with-node-id",
    "node-label",
    "node-taint",
    "image-credential-provider-bin-dir",
    "image-credential-provider-config",
    "selinux",
    "lb-server-port",
    "protect-kernel-defaults",
    "container-runtime-endpoint",
    "default-runtime",
    "image-service-endpoint",
    "disable-default-registry-endpoint",
    "nonroot-devices",
    "pause-image",
    "snapshotter",
    "private-registry",
    "system-default-registry",
    "node-ip",
    "node-external-ip",
    "node-internal-dns",
    "node-external-dns",
    "resolv-conf",
    "flannel-iface",
    "flannel-conf",
    "flannel-cni-conf",
    "kubelet-arg",
    "kube-proxy-arg",
    "rootless",
    "prefer-bundled-bin",
    "docker",
    "vpn-auth",
    "vpn-auth-file",
    "disable-apiserver-lb",
    "enable-pprof",
    "airgap-extra-registry",
    "bind-address",
    "supervisor-metrics",
    "embedded-registry",
    "cloud-provider",
];

/// Flags only `k3s server` accepts (on top of the agent ones). A server skips
/// unknown keys with a warning (k3s#8266), which would silently drop a
/// misspelt hardening flag, so khard refuses keys in neither list.
pub const SERVER_KEYS: &[&str] = &[
    "write-kubeconfig",
    "write-kubeconfig-mode",
    "write-kubeconfig-group",
    "helm-job-image",
    "cluster-cidr",
    "service-cidr",
    "service-node-port-range",
    "cluster-dns",
    "cluster-domain",
    "flannel-backend",
    "flannel-ipv6-masq",
    "flannel-external-ip",
    "egress-selector-mode",
    "servicelb-namespace",
    "tls-san",
    "tls-san-security",
    "advertise-address",
    "advertise-port",
    "https-listen-port",
    "kube-apiserver-arg",
    "etcd-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "kube-cloud-controller-manager-arg",
    "datastore-endpoint",
    "datastore-cafile",
    "datastore-certfile",
    "datastore-keyfile",
    "etcd-expose-metrics",
    "etcd-disable-snapshots",
    "etcd-snapshot-name",
    "etcd-snapshot-schedule-cron",
    "etcd-snapshot-retention",
    "etcd-snapshot-dir",
    "etcd-snapshot-compress",
    "etcd-s3",
    "etcd-s3-endpoint",
    "etcd-s3-endpoint-ca",
    "etcd-s3-skip-ssl-verify",
    "etcd-s3-access-key",
    "etcd-s3-secret-key",
    "etcd-s3-session-token",
    "etcd-s3-config-secret",
    "etcd-s3-bucket",
    "etcd-s3-region",
    "etcd-s3-folder",
    "etcd-s3-proxy",
    "etcd-s3-config-secret",
    "etcd-s3-insecure",
    "etcd-s3-timeout",
    "default-local-storage-path",
    "disable",
    "disable-scheduler",
    "disable-cloud-controller",
    "disable-kube-proxy",
    "disable-network-policy",
    "disable-helm-controller",
    "cluster-init",
    "cluster-reset",
    "cluster-reset-restore-path",
    "secrets-encryption",
    "secrets-encryption-provider",
    "agent-token",
    "agent-token-file",
    "kine-tls",
    "system-default-registry",
    "enable-pprof",
    "embedded-registry",
    "supervisor-metrics",
    "kube-apiserver-arg",
    "etcd-arg",
    "disable-agent",
    "node-ip",
];

/// Keys of a k3s config that hold secrets; their values never appear in a diff.
/// k3s's flags that carry a credential (pkg/cli/cmds/server.go, agent.go:
/// the token flags, the datastore URL with its password, the S3 snapshot
/// credentials, the VPN auth string).
pub const SECRET_KEYS: &[&str] = &[
    "token",
    "agent-token",
    "datastore-endpoint",
    "etcd-s3-access-key",
    "etcd-s3-secret-key",
    "etcd-s3-session-token",
    "vpn-auth",
];

/// A k3s config with the values of [`SECRET_KEYS`] replaced, so that its
/// diff can be shown. The YAML is parsed to find them, whatever the style
/// (plain, quoted, `|` and `>-` blocks, flow mappings, nested, `key+:`):
/// the lines of each secret key's value are masked, then every secret value
/// (and each line and word of a multi-line one) wherever else it appears.
/// Text that does not parse is not shown at all.
pub fn mask_k3s_secrets(text: &str) -> String {
    use crate::secrets::REDACTED;
    if let Err(e) = crate::lang::yaml_bounds::check(text) {
        return format!("{REDACTED} ({e}: not shown, it may hold secrets)\n");
    }
    let Ok(doc) = serde_yaml::from_str::<serde_yaml::Value>(text) else {
        return format!("{REDACTED} (not valid YAML: not shown, it may hold secrets)\n");
    };
    let mut values = Vec::new();
    secret_values(&doc, false, &mut values);
    let mut out = String::with_capacity(text.len());
    // Indentation of the secret key whose value lines are being masked.
    let mut masking: Option<usize> = None;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        let indent = body.len() - body.trim_start_matches([' ', '-']).len();
        let blank = body.trim().is_empty() || body.trim_start().starts_with('#');
        if let Some(level) = masking {
            if blank || indent > level {
                continue;
            }
            masking = None;
        }
        let key = body
            .trim_start_matches([' ', '-'])
            .split(':')
            .next()
            .unwrap_or("")
            .trim()
            .trim_end_matches('+')
            .trim_matches(['"', '\'']);
        if body.contains(':') && !blank && SECRET_KEYS.contains(&key) {
            let (head, _) = body.split_once(':').expect("has a colon");
            out.push_str(&format!("{head}: {REDACTED}\n"));
            masking = Some(indent);
        } else {
            out.push_str(line);
        }
    }
    let mut pieces: Vec<&str> = Vec::new();
    for v in &values {
        pieces.push(v.as_str());
        pieces.extend(v.lines().map(str::trim));
        pieces.extend(v.split_whitespace());
    }
    pieces.retain(|p| p.len() >= 4);
    pieces.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in pieces {
        out = out.replace(p, REDACTED);
    }
    out
}

/// Every scalar under a secret key, at any depth.
fn secret_values(v: &serde_yaml::Value, under_secret: bool, out: &mut Vec<String>) {
    match v {
        serde_yaml::Value::Mapping(m) => {
            for (k, v) in m {
                let secret = under_secret
                    || k.as_str()
                        .is_some_and(|k| SECRET_KEYS.contains(&k.trim_end_matches('+')));
                secret_values(v, secret, out);
            }
        }
        serde_yaml::Value::Sequence(items) => {
            for i in items {
                secret_values(i, under_secret, out);
            }
        }
        serde_yaml::Value::Tagged(t) => secret_values(&t.value, under_secret, out),
        serde_yaml::Value::String(s) if under_secret => out.push(s.clone()),
        serde_yaml::Value::Number(n) if under_secret => out.push(n.to_string()),
        _ => {}
    }
}

/// The names `validate:` takes, as the file module's tasks write them.
pub const KINDS: &[&str] = &["k3s_config", "manifest", "yaml"];

/// The content kind named by a file task's `validate:`.
pub fn content_kind(name: &str) -> Option<Arc<dyn ContentKind>> {
    let kind = match name {
        "k3s_config" => Validate::K3sConfig,
        "manifest" => Validate::Manifest,
        "yaml" => Validate::Yaml,
        _ => return None,
    };
    Some(Arc::new(Checker::new(kind)))
}

/// A [`Validate`] with the answers it already gave: the same content for
/// the same kind of node is checked once per task (a fleet renders mostly
/// identical files).
#[derive(Debug)]
pub struct Checker {
    kind: Validate,
    seen: Mutex<HashMap<(String, String), Result<(), String>>>,
}

impl Checker {
    pub fn new(kind: Validate) -> Checker {
        Checker {
            kind,
            seen: Mutex::default(),
        }
    }
}

impl ContentKind for Checker {
    fn check(&self, content: &str, vars: &Map<String, Value>) -> Result<(), String> {
        let role = vars
            .get("k3s_role")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let key = (role, crate::facts::sha256_hex(content.as_bytes()));
        if let Some(r) = self.seen.lock().expect("validation cache").get(&key) {
            return r.clone();
        }
        let result = match self.kind {
            Validate::Yaml => parse_docs(content).map(|_| ()),
            Validate::Manifest => check_manifests(content),
            Validate::K3sConfig => check_k3s_config(content, &key.0),
        };
        self.seen
            .lock()
            .expect("validation cache")
            .insert(key, result.clone());
        result
    }

    fn mask(&self, text: &str) -> String {
        match self.kind {
            Validate::K3sConfig => mask_k3s_secrets(text),
            _ => text.to_owned(),
        }
    }

    fn shared(&self, content: &str) -> Option<Shared> {
        match self.kind {
            Validate::K3sConfig => crate::k3s::config::from_file(content)
                .ok()
                .map(|e| Arc::new(e) as Shared),
            _ => None,
        }
    }
}

/// Masks the secret keys of a k3s config in a change's content diff.
pub fn mask_k3s_diff(change: &mut Option<crate::modules::Change>) {
    crate::modules::mask_diff(change, &Checker::new(Validate::K3sConfig));
}

fn parse_docs(content: &str) -> Result<Vec<serde_yaml::Value>, String> {
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(content) {
        let value =
            serde_yaml::Value::deserialize(doc).map_err(|e| format!("not valid YAML: {e}"))?;
        docs.push(value);
    }
    Ok(docs)
}

/// A k3s config for a node of `role` ("server" or "agent").
pub fn check_k3s_config(content: &str, role: &str) -> Result<(), String> {
    let docs = parse_docs(content)?;
    let Some(doc) = docs.into_iter().find(|d| !d.is_null()) else {
        return Ok(());
    };
    let map = doc
        .as_mapping()
        .ok_or("a k3s config must be a mapping of flag names to values")?;
    for (key, value) in map {
        let key = key.as_str().ok_or("k3s config keys must be strings")?;
        let flag = key.strip_suffix('+').unwrap_or(key);
        let agent_ok = AGENT_KEYS.contains(&flag);
        if role == "agent" && !agent_ok {
            return Err(format!(
                "`{key}` is not a `k3s agent` flag; k3s agent would exit on it (keep server-only keys off agents)"
            ));
        }
        if !agent_ok && !SERVER_KEYS.contains(&flag) {
            return Err(format!(
                "`{key}` is not a k3s flag; k3s would skip it silently"
            ));
        }
        if flag.ends_with("-arg") {
            let items: Vec<&str> = match value {
                serde_yaml::Value::Sequence(s) => s.iter().filter_map(|v| v.as_str()).collect(),
                serde_yaml::Value::String(s) => vec![s.as_str()],
                _ => return Err(format!("`{key}` must be a list of \"name=value\" strings")),
            };
            let mut seen: Vec<&str> = Vec::new();
            for item in items {
                let name = item
                    .split('=')
                    .next()
                    .unwrap_or(item)
                    .trim_start_matches('-');
                if seen.contains(&name) {
                    return Err(format!(
                        "`{key}` sets `{name}` twice; the component would see a repeated flag"
                    ));
                }
                seen.push(name);
            }
        }
    }
    Ok(())
}

fn check_manifests(content: &str) -> Result<(), String> {
    let docs = parse_docs(content)?;
    for (i, doc) in docs.iter().enumerate().filter(|(_, d)| !d.is_null()) {
        let n = i + 1;
        let field = |k: &str| {
            doc.get(k)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
        };
        field("apiVersion").ok_or(format!("document {n} has no apiVersion"))?;
        let kind = field("kind").ok_or(format!("document {n} has no kind"))?;
        let name = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(|v| v.as_str())
            .ok_or(format!("document {n} ({kind}) has no metadata.name"))?;
        let rfc1123 = |s: &str| {
            !s.is_empty()
                && s.len() <= 253
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-.:".contains(c))
        };
        if !rfc1123(name) {
            return Err(format!(
                "document {n} ({kind}) has an invalid name `{name}`"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_keys_are_refused_on_agents() {
        let cfg = "protect-kernel-defaults: true\nkube-apiserver-arg:\n  - a=b\n";
        assert!(check_k3s_config(cfg, "server").is_ok());
        assert!(
            check_k3s_config(cfg, "agent")
                .unwrap_err()
                .contains("not a `k3s agent` flag")
        );
        assert!(check_k3s_config("kubelet-arg+:\n  - a=b\n", "agent").is_ok());
    }

    #[test]
    fn typos_and_repeated_args_are_refused() {
        assert!(
            check_k3s_config("kublet-arg: [a=b]\n", "server")
                .unwrap_err()
                .contains("not a k3s flag")
        );
        let twice = "kube-apiserver-arg:\n  - audit-log-path=/a\n  - audit-log-path=/b\n";
        assert!(
            check_k3s_config(twice, "server")
                .unwrap_err()
                .contains("twice")
        );
        assert!(
            check_k3s_config("a: [", "server")
                .unwrap_err()
                .contains("not valid YAML")
        );
    }

    #[test]
    fn masks_secret_keys_only() {
        let cfg =
            "server: 'https://x:6443'\ntoken: 'K10::s3cret'\nkubelet-arg:\n  - 'token=not-a-key'\n";
        let masked = mask_k3s_secrets(cfg);
        assert!(!masked.contains("s3cret"), "{masked}");
        assert!(
            masked.contains("token: [redacted]\n")
                && masked.contains("server: 'https://x:6443'")
                && masked.contains("token=not-a-key")
        );
    }

    /// One test per YAML style that can hold a secret.
    #[test]
    fn masks_secrets_in_every_yaml_style() {
        let styles = [
            "token: plain-s3cret-value\n",
            "token: 'single s3cret value'\n",
            "token: \"double s3cret value\"\n",
            "token: |\n  first-s3cret-line\n  second-s3cret-line\nnode-name: n1\n",
            "token: >-\n  folded s3cret\n  continues here\nnode-name: n1\n",
            "{token: flow-s3cret-value, node-name: n1}\n",
            "agent-token+: appended-s3cret\n",
            "datastore-endpoint: postgres://u:pa55s3cret@db:5432/k3s\n",
            "x: &a anchored-s3cret\ntoken: *a\n",
            "nested:\n  token: nested-s3cret-value\n",
        ];
        for text in styles {
            let masked = mask_k3s_secrets(text);
            assert!(!masked.contains("s3cret"), "{text:?} -> {masked:?}");
            assert!(masked.contains("[redacted]"), "{masked}");
        }
        let kept = mask_k3s_secrets("token: |\n  s3cret\nnode-name: n1\ntls-san: [a.example]\n");
        assert!(
            kept.contains("node-name: n1\ntls-san: [a.example]\n"),
            "{kept}"
        );
        assert!(mask_k3s_secrets("token: [unclosed s3cret\n").contains("not valid YAML"));
    }

    #[test]
    fn manifests_need_kind_and_name() {
        assert!(check_manifests("apiVersion: v1\nkind: X\nmetadata: {name: ok-1}\n---\n").is_ok());
        assert!(
            check_manifests("apiVersion: v1\nkind: X\nmetadata: {}\n")
                .unwrap_err()
                .contains("metadata.name")
        );
        assert!(check_manifests("apiVersion: v1\nkind: X\nmetadata: {name: Bad_Name}\n").is_err());
    }
}
