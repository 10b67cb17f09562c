//! The k3s service's unit and environment files: which of their flags
//! defeat config.yaml. k3s lets a list flag repeated on its command line
//! replace the whole list from the config file, and a scalar flag there wins
//! over the file's value.

/// Repeatable flags whose command-line use replaces the config file's list,
/// and scalar flags whose command-line value would undo a hardening value.
const LIST_FLAGS: &[&str] = &[
    "kube-apiserver-arg",
    "kube-controller-manager-arg",
    "kube-scheduler-arg",
    "kubelet-arg",
    "kube-proxy-arg",
    "etcd-arg",
    "kube-cloud-controller-manager-arg",
];
const UNDOING_FLAGS: &[&str] = &["protect-kernel-defaults=false", "secrets-encryption=false"];

/// The files that make up a unit's command line: the unit, its env file
/// (the install script's), a drop-in override, and the distributions'
/// environment files.
pub fn unit_files(unit: &str) -> Vec<String> {
    vec![
        format!("/etc/systemd/system/{unit}.service"),
        format!("/etc/systemd/system/{unit}.service.env"),
        format!("/etc/systemd/system/{unit}.service.d/override.conf"),
        format!("/etc/default/{unit}"),
        format!("/etc/sysconfig/{unit}"),
    ]
}

/// Flags in a unit file or environment file that override the config file.
pub fn overriding_flags(text: &str) -> Vec<String> {
    // Join systemd's backslash continuations so one ExecStart is one line.
    let joined = text.replace("\\\n", " ");
    let mut out = Vec::new();
    for line in joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';'))
    {
        for word in line.split_whitespace() {
            let word = word
                .trim_start_matches("ExecStart=")
                .trim_matches(['\'', '"']);
            let Some(flag) = word.strip_prefix("--") else {
                continue;
            };
            let name = flag.split('=').next().unwrap_or(flag);
            if LIST_FLAGS.contains(&name) || UNDOING_FLAGS.contains(&flag) {
                out.push(format!("--{flag}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_flags_that_replace_config_lists() {
        let unit = "[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n\t'--kube-apiserver-arg=audit-log-path=/x' \\\n    '--node-ip=10.0.0.1' \\\n    --protect-kernel-defaults=false\n";
        assert_eq!(
            overriding_flags(unit),
            [
                "--kube-apiserver-arg=audit-log-path=/x",
                "--protect-kernel-defaults=false"
            ]
        );
        assert!(
            overriding_flags("ExecStart=/usr/local/bin/k3s server --node-ip 10.0.0.1\n").is_empty()
        );
        assert_eq!(
            overriding_flags("K3S_ARGS=\"--kubelet-arg=max-pods=50\"\n").len(),
            0,
            "only flags as words"
        );
        assert_eq!(
            overriding_flags("EXTRA=--kubelet-arg=max-pods=50\n").len(),
            0
        );
        assert_eq!(overriding_flags("# --kubelet-arg=x\n").len(), 0);
    }
}
