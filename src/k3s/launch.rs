//! How systemd starts k3s, as systemd and k3s read it (rules K1, K9–K12,
//! K17–K19 of docs/research/k3s-config-semantics.md): the unit file is the
//! first `<unit>.service` in /etc, /run, /usr/local/lib, /usr/lib (and /lib,
//! the same folder on merged-/usr Debian); its drop-ins `<unit>.service.d/
//! *.conf` from every one of those folders apply after it in file-name
//! order, a name in a higher folder masking the same name lower down; an
//! empty `ExecStart=` resets the command line; `Environment=` and
//! `EnvironmentFile=` set variables (the env file never adds a flag by
//! itself) that `$VAR` / `${VAR}` on ExecStart expand. From the command line
//! this takes k3s's subcommand, its flags in order (`-flag` equals
//! `--flag`; `--flag value` for flags that take one) and where k3s reads its
//! config file (`K3S_CONFIG_FILE` beats `--config`/`-c`).

use std::collections::BTreeMap;

use crate::facts::{Probe, RemoteState};

/// Where systemd looks for units, highest priority first.
pub const UNIT_DIRS: &[&str] = &[
    "/etc/systemd/system",
    "/run/systemd/system",
    "/usr/local/lib/systemd/system",
    "/usr/lib/systemd/system",
    "/lib/systemd/system",
];

/// k3s's default config file.
pub const DEFAULT_CONFIG: &str = "/etc/rancher/k3s/config.yaml";

/// k3s flags that take no value on the command line (Go's BoolFlag): in
/// `--flag value` the value is a separate argument, not the flag's.
const BOOL_FLAGS: &[&str] = &[
    "protect-kernel-defaults",
    "secrets-encryption",
    "cluster-init",
    "cluster-reset",
    "disable-agent",
    "disable-apiserver",
    "disable-controller-manager",
    "disable-scheduler",
    "disable-etcd",
    "disable-cloud-controller",
    "disable-kube-proxy",
    "disable-network-policy",
    "disable-helm-controller",
    "disable-default-registry-endpoint",
    "embedded-registry",
    "supervisor-metrics",
    "selinux",
    "rootless",
    "prefer-bundled-bin",
    "debug",
    "with-node-id",
    "etcd-expose-metrics",
    "etcd-disable-snapshots",
    "etcd-s3",
    "etcd-s3-insecure",
    "etcd-s3-skip-ssl-verify",
    "flannel-ipv6-masq",
    "flannel-external-ip",
    "egress-selector-mode-disabled",
    "enable-pprof",
    "vpn-auth",
    "alsologtostderr",
    "help",
    "h",
];

/// What the probe must read to know how k3s is started.
pub fn probe(p: &mut Probe, unit: &str) {
    for dir in UNIT_DIRS {
        p.content.insert(format!("{dir}/{unit}.service"));
        p.content_glob
            .insert(format!("{dir}/{unit}.service.d/*.conf"));
    }
    // The env files the install script and the distributions use; any other
    // EnvironmentFile= a unit names is reported as unread (see `Launch::unread`).
    for file in env_files_read(unit) {
        p.content.insert(file);
    }
}

/// The environment files khard reads for a unit.
fn env_files_read(unit: &str) -> Vec<String> {
    vec![
        format!("/etc/systemd/system/{unit}.service.env"),
        format!("/etc/default/{unit}"),
        format!("/etc/sysconfig/{unit}"),
    ]
}

/// How k3s is started on a node.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Launch {
    /// The unit file and the drop-ins that apply, in the order applied.
    pub files: Vec<String>,
    /// `server` or `agent` (empty when the unit starts no k3s).
    pub subcommand: String,
    /// The flags after the subcommand, in order: (name, value, the file that
    /// set the command line). A bare flag has the value `true`.
    pub flags: Vec<(String, String, String)>,
    /// Where k3s reads its config file; None when `--config=` turns it off.
    pub config_file: Option<String>,
    /// Flags given by the unit's environment (K10): defaults only, which
    /// the config file and the command line override.
    pub env_flags: Vec<(String, String, String)>,
    /// Files the unit needs that khard did not read (an EnvironmentFile
    /// elsewhere, a drop-in that could not come back): its answer is a guess.
    pub unread: Vec<String>,
}

/// A file the probe brought back, as text.
fn text(state: &RemoteState, path: &str) -> Option<String> {
    state
        .content
        .get(path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

impl Launch {
    /// Reads the unit from a probe (see [`probe`]). Without a unit file the
    /// launch is empty (k3s not installed as this unit).
    pub fn from_state(state: &RemoteState, unit: &str) -> Launch {
        let mut launch = Launch::default();
        let Some(main) = UNIT_DIRS
            .iter()
            .map(|d| format!("{d}/{unit}.service"))
            .find(|f| state.content.contains_key(f))
        else {
            launch.config_file = Some(DEFAULT_CONFIG.into());
            return launch;
        };
        // Drop-ins: by file name across the folders, the highest folder's copy.
        let mut dropins: BTreeMap<String, String> = BTreeMap::new();
        for dir in UNIT_DIRS.iter().rev() {
            let folder = format!("{dir}/{unit}.service.d/");
            if state.unread.contains(&format!("{folder}*.conf")) {
                launch.unread.push(format!("{folder}*.conf"));
            }
            for path in state.content.keys() {
                if let Some(name) = path.strip_prefix(&folder)
                    && !name.contains('/')
                    && name.ends_with(".conf")
                {
                    dropins.insert(name.to_owned(), path.clone());
                }
            }
        }
        launch.files.push(main);
        launch.files.extend(dropins.into_values());
        let read = env_files_read(unit);
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        let mut exec: Option<(String, String)> = None;
        for file in launch.files.clone() {
            let body = text(state, &file).unwrap_or_default();
            for (key, value) in service_entries(&body) {
                match key.as_str() {
                    "ExecStart" if value.trim().is_empty() => exec = None,
                    "ExecStart" => exec = Some((value, file.clone())),
                    "Environment" => {
                        for word in words(&value) {
                            if let Some((k, v)) = word.split_once('=') {
                                env.insert(k.to_owned(), v.to_owned());
                            }
                        }
                    }
                    "EnvironmentFile" => {
                        let optional = value.starts_with('-');
                        let path = value
                            .trim_start_matches('-')
                            .replace("%N", unit)
                            .replace("%n", &format!("{unit}.service"));
                        match text(state, &path) {
                            Some(t) => env.extend(env_file(&t)),
                            None if read.contains(&path) => {
                                if !optional {
                                    launch.unread.push(path);
                                }
                            }
                            None => launch.unread.push(path),
                        }
                    }
                    _ => {}
                }
            }
        }
        let argv = match &exec {
            Some((line, _)) => expand(&words(line), &env),
            None => Vec::new(),
        };
        let from = exec.map(|(_, f)| f).unwrap_or_default();
        let mut args = argv.iter().skip(1).map(String::as_str);
        launch.subcommand = args
            .by_ref()
            .find(|a| !a.starts_with('-'))
            .unwrap_or_default()
            .to_owned();
        let rest: Vec<&str> = args.collect();
        launch.flags = flags(&rest, &from);
        launch.config_file = config_file(&env, &launch.flags);
        launch.env_flags = ENV_FLAGS
            .iter()
            .filter_map(|(var, flag)| {
                let value = env.get(*var)?;
                Some(((*flag).to_owned(), value.clone(), format!("${var}")))
            })
            .collect();
        launch
    }
}

/// The environment variables k3s reads as flag values (K10: the flags
/// declaring `EnvVar` in k3s's pkg/cli/cmds; none of the `*-arg` lists,
/// `protect-kernel-defaults` or `secrets-encryption`).
const ENV_FLAGS: &[(&str, &str)] = &[
    ("K3S_TOKEN", "token"),
    ("K3S_TOKEN_FILE", "token-file"),
    ("K3S_AGENT_TOKEN", "agent-token"),
    ("K3S_AGENT_TOKEN_FILE", "agent-token-file"),
    ("K3S_URL", "server"),
    ("K3S_DATA_DIR", "data-dir"),
    ("K3S_KUBECONFIG_OUTPUT", "write-kubeconfig"),
    ("K3S_KUBECONFIG_MODE", "write-kubeconfig-mode"),
    ("K3S_KUBECONFIG_GROUP", "write-kubeconfig-group"),
    ("K3S_CLUSTER_INIT", "cluster-init"),
    ("K3S_CLUSTER_RESET", "cluster-reset"),
    ("K3S_DATASTORE_ENDPOINT", "datastore-endpoint"),
    ("K3S_DATASTORE_CAFILE", "datastore-cafile"),
    ("K3S_DATASTORE_CERTFILE", "datastore-certfile"),
    ("K3S_DATASTORE_KEYFILE", "datastore-keyfile"),
    ("K3S_SYSTEM_DEFAULT_REGISTRY", "system-default-registry"),
    ("K3S_NODE_NAME", "node-name"),
    ("K3S_SELINUX", "selinux"),
    ("K3S_LB_SERVER_PORT", "lb-server-port"),
    ("K3S_RESOLV_CONF", "resolv-conf"),
    ("K3S_VPN_AUTH", "vpn-auth"),
    ("K3S_VPN_AUTH_FILE", "vpn-auth-file"),
];

/// K1: `K3S_CONFIG_FILE` (not empty) beats `--config`/`-c`, which beats the
/// default; `--config=` (empty) turns config loading off.
fn config_file(
    env: &BTreeMap<String, String>,
    flags: &[(String, String, String)],
) -> Option<String> {
    if let Some(f) = env.get("K3S_CONFIG_FILE").filter(|f| !f.is_empty()) {
        return Some(f.clone());
    }
    match flags
        .iter()
        .rev()
        .find(|(n, _, _)| n == "config" || n == "c")
    {
        Some((_, v, _)) if v.is_empty() => None,
        Some((_, v, _)) => Some(v.clone()),
        None => Some(DEFAULT_CONFIG.into()),
    }
}

/// K11/K12: the flags of a k3s command line, in order.
fn flags(args: &[&str], from: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let word = args[i];
        i += 1;
        let Some(flag) = word
            .strip_prefix("--")
            .or_else(|| word.strip_prefix('-'))
            .filter(|f| !f.is_empty())
        else {
            continue;
        };
        let (name, value) = match flag.split_once('=') {
            Some((n, v)) => (n.to_owned(), v.to_owned()),
            None if BOOL_FLAGS.contains(&flag) => (flag.to_owned(), "true".to_owned()),
            None => {
                let v = args.get(i).map(|s| s.to_string()).unwrap_or_default();
                i += 1;
                (flag.to_owned(), v)
            }
        };
        let value = if BOOL_FLAGS.contains(&name.as_str()) {
            parse_bool(&value).map_or(value, |b| b.to_string())
        } else {
            value
        };
        out.push((name, value, from.to_owned()));
    }
    out
}

/// Whether k3s reads `name` as a bool flag.
pub fn is_bool_flag(name: &str) -> bool {
    BOOL_FLAGS.contains(&name)
}

/// Go's strconv.ParseBool: what a bool flag's `=V` may be.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// `Key=value` lines of a unit's `[Service]` section, backslash
/// continuations joined, comments dropped.
fn service_entries(body: &str) -> Vec<(String, String)> {
    let joined = body.replace("\\\n", " ");
    let mut section = String::new();
    let mut out = Vec::new();
    for line in joined.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            section = line.to_owned();
            continue;
        }
        if section == "[Service]"
            && let Some((k, v)) = line.split_once('=')
        {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

/// An environment file (systemd.exec(5)): `KEY=value` lines, `#`/`;`
/// comments, values optionally quoted.
fn env_file(body: &str) -> Vec<(String, String)> {
    body.replace("\\\n", "")
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
        .filter_map(|l| {
            let (k, v) = l.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
                .unwrap_or(v);
            Some((k.trim().to_owned(), v.to_owned()))
        })
        .collect()
}

/// Splits a command line as systemd does: whitespace, with single and
/// double quotes (a prefix such as `-`, `@`, `+` on the binary is dropped).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), '\\') => word.extend(chars.next()),
            (Some(_), c) => word.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, '\\') => {
                word.extend(chars.next());
                any = true;
            }
            (None, c) if c.is_whitespace() => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            (None, c) => {
                word.push(c);
                any = true;
            }
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    if let Some(first) = out.first_mut() {
        *first = first
            .trim_start_matches(['-', '@', '+', '!', ':'])
            .to_owned();
    }
    out
}

/// `$VAR` alone as a word splits into words at whitespace; `${VAR}` inside
/// a word is replaced in place (systemd.service(5), "Command lines").
fn expand(argv: &[String], env: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for word in argv {
        if let Some(name) = word.strip_prefix('$').filter(|n| !n.starts_with('{')) {
            let value = env.get(name).map(String::as_str).unwrap_or_default();
            out.extend(value.split_whitespace().map(str::to_owned));
            continue;
        }
        let mut w = word.clone();
        for (k, v) in env {
            w = w.replace(&format!("${{{k}}}"), v);
        }
        out.push(w);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Launch {
        /// The last value of a flag on the command line.
        fn flag(&self, name: &str) -> Option<&str> {
            self.flags
                .iter()
                .rev()
                .find(|(n, _, _)| n == name)
                .map(|(_, v, _)| v.as_str())
        }
    }

    fn state(files: &[(&str, &str)]) -> RemoteState {
        let mut s = RemoteState::default();
        for (p, t) in files {
            s.content.insert((*p).to_owned(), t.as_bytes().to_vec());
        }
        s
    }

    const UNIT: &str = "[Service]\nType=notify\nEnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/systemd/system/k3s.service.env\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kube-apiserver-arg=audit-log-path=/x' \\\n    --node-ip 10.0.0.1 \\\n    -protect-kernel-defaults=0\n";

    #[test]
    fn reads_the_install_scripts_unit() {
        let l = Launch::from_state(&state(&[("/etc/systemd/system/k3s.service", UNIT)]), "k3s");
        assert_eq!(l.subcommand, "server");
        let flags: Vec<(&str, &str)> = l
            .flags
            .iter()
            .map(|(n, v, _)| (n.as_str(), v.as_str()))
            .collect();
        assert_eq!(
            flags,
            [
                ("kube-apiserver-arg", "audit-log-path=/x"),
                ("node-ip", "10.0.0.1"),
                ("protect-kernel-defaults", "false"),
            ]
        );
        assert_eq!(l.config_file.as_deref(), Some(DEFAULT_CONFIG));
        assert!(l.unread.is_empty(), "{:?}", l.unread);
    }

    #[test]
    fn dropins_reset_and_replace_the_command_line_in_name_order() {
        let l = Launch::from_state(
            &state(&[
                ("/etc/systemd/system/k3s.service", UNIT),
                (
                    "/usr/lib/systemd/system/k3s.service.d/10-flags.conf",
                    "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s server --secrets-encryption=false\n",
                ),
                (
                    "/etc/systemd/system/k3s.service.d/20-env.conf",
                    "[Service]\nEnvironment=K3S_CONFIG_FILE=/opt/k3s.yaml\n",
                ),
            ]),
            "k3s",
        );
        assert_eq!(l.flag("secrets-encryption"), Some("false"));
        assert_eq!(l.flag("protect-kernel-defaults"), None);
        assert_eq!(l.config_file.as_deref(), Some("/opt/k3s.yaml"));
        assert_eq!(
            l.files,
            [
                "/etc/systemd/system/k3s.service",
                "/usr/lib/systemd/system/k3s.service.d/10-flags.conf",
                "/etc/systemd/system/k3s.service.d/20-env.conf"
            ]
        );
    }

    #[test]
    fn env_files_set_variables_never_flags() {
        let unit = "[Service]\nEnvironmentFile=-/etc/systemd/system/k3s.service.env\nExecStart=/usr/local/bin/k3s server $K3S_EXTRA --config ${CFG}\n";
        let env = "K3S_TOKEN=s3cret\nEXTRA=\"--protect-kernel-defaults=false\"\nK3S_EXTRA=--kubelet-arg=max-pods=50 --debug\nCFG='/srv/k3s.yaml'\n";
        let l = Launch::from_state(
            &state(&[
                ("/etc/systemd/system/k3s.service", unit),
                ("/etc/systemd/system/k3s.service.env", env),
            ]),
            "k3s",
        );
        assert_eq!(l.flag("protect-kernel-defaults"), None);
        assert_eq!(l.flag("kubelet-arg"), Some("max-pods=50"));
        assert_eq!(l.flag("debug"), Some("true"));
        assert_eq!(l.config_file.as_deref(), Some("/srv/k3s.yaml"));
    }

    #[test]
    fn an_env_file_elsewhere_is_unread_not_ignored() {
        let unit = "[Service]\nEnvironmentFile=/opt/k3s/env\nExecStart=/usr/local/bin/k3s server\n";
        let l = Launch::from_state(&state(&[("/etc/systemd/system/k3s.service", unit)]), "k3s");
        assert_eq!(l.unread, ["/opt/k3s/env"]);
    }

    #[test]
    fn booleans_parse_as_go_does() {
        for (v, want) in [
            ("1", "true"),
            ("t", "true"),
            ("False", "false"),
            ("F", "false"),
        ] {
            let f = flags(&[&format!("--secrets-encryption={v}")], "u");
            assert_eq!(f[0].1, want, "{v}");
        }
        assert_eq!(flags(&["--secrets-encryption=yes"], "u")[0].1, "yes");
        // A bool flag does not take the next word; others do.
        let f = flags(&["--cluster-init", "false", "--node-ip", "10.0.0.1"], "u");
        assert_eq!(f[0], ("cluster-init".into(), "true".into(), "u".into()));
        assert_eq!(f[1], ("node-ip".into(), "10.0.0.1".into(), "u".into()));
    }
}
