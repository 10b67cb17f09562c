//! `khard apply` end to end against a fleet of real sshd hosts: the first
//! run converges every node to the guide's state, the second changes
//! nothing, and a hand edit is put back on that node only.

mod common;

use common::Fleet;

const V121: &str = "v1.21.14+k3s1";

fn guide(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/guide/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).expect("valid YAML")
}

#[test]
fn apply_converges_then_changes_nothing_then_repairs_only_the_edited_host() {
    let fleet = Fleet::up(&[
        &format!("s1:server:{V121}"),
        &format!("a1:agent:{V121}"),
        &format!("a2:agent:{V121}"),
    ]);

    // First apply: every node converges.
    let first = fleet.apply(&[]);
    assert_eq!(first.code, 0, "{}", first.all());
    for host in ["s1", "a1", "a2"] {
        assert_eq!(first.count(host, "failed"), 0, "{}", first.all());
        assert_eq!(first.count(host, "unreachable"), 0, "{}", first.all());
        assert!(first.count(host, "changed") > 0, "{}", first.all());
    }

    // Kernel parameters: the guide's four lines first, file 0644, live values set by the real sysctl.
    for host in ["s1", "a1", "a2"] {
        let sysctl = fleet
            .read(host, "/etc/sysctl.d/90-kubelet.conf")
            .expect("sysctl file");
        assert!(
            sysctl.starts_with(&guide("90-kubelet.conf")),
            "{host}: {sysctl}"
        );
        assert!(
            sysctl.ends_with(
                "kernel.keys.root_maxkeys=1000000\nkernel.keys.root_maxbytes=25000000\n"
            )
        );
        assert_eq!(fleet.mode(host, "/etc/sysctl.d/90-kubelet.conf"), 0o644);
        for (key, value) in [
            ("vm/panic_on_oom", "0"),
            ("vm/overcommit_memory", "1"),
            ("kernel/panic", "10"),
            ("kernel/panic_on_oops", "1"),
        ] {
            assert_eq!(
                fleet
                    .read(host, &format!("/proc/sys/{key}"))
                    .unwrap()
                    .trim(),
                value,
                "{host} {key}"
            );
        }
    }

    // Server: config with the guide's flags, policy.yaml byte for byte, audit folder 0700.
    let config = fleet
        .read("s1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
        .expect("server config");
    assert_eq!(
        fleet.mode("s1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml"),
        0o600
    );
    let cfg = yaml(&config);
    assert_eq!(
        cfg["protect-kernel-defaults"],
        serde_yaml::Value::Bool(true)
    );
    assert_eq!(cfg["secrets-encryption"], serde_yaml::Value::Bool(true));
    let api: Vec<&str> = cfg["kube-apiserver-arg+"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for want in [
        "audit-log-maxage=30",
        "audit-log-maxbackup=10",
        "audit-log-maxsize=100",
        "service-account-lookup=true",
        "enable-admission-plugins=NodeRestriction,PodSecurityPolicy,NamespaceLifecycle,ServiceAccount",
    ] {
        assert!(api.contains(&want), "missing {want} in {api:?}");
    }
    // k3s 1.21 is judged by cis-1.6, whose 1.2.26 fails any request-timeout duration.
    assert!(
        !api.iter().any(|a| a.starts_with("request-timeout")),
        "{api:?}"
    );
    assert!(
        api.iter()
            .any(|a| a.starts_with("audit-log-path=/var/lib/rancher/k3s/server/logs/"))
    );
    let kcm: Vec<&str> = cfg["kube-controller-manager-arg+"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        kcm.contains(&"terminated-pod-gc-threshold=10")
            && kcm.contains(&"use-service-account-credentials=true")
    );
    let kubelet: Vec<&str> = cfg["kubelet-arg+"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        kubelet.contains(&"streaming-connection-idle-timeout=5m")
            && kubelet.contains(&"make-iptables-util-chains=true")
            && kubelet.contains(&"read-only-port=0")
    );
    let policy = fleet
        .read("s1", "/var/lib/rancher/k3s/server/manifests/policy.yaml")
        .expect("policy.yaml");
    // The guide's own policy.yaml (tests/fixtures/guide/policy.yaml is its
    // text, copied from the K3s CIS Hardening Guide), plus only these
    // deliberate additions, and nothing of it removed.
    const ADDED: &[&str] = &[
        // Seccomp for the restricted policy (CIS 5.7.2 on the PSP era: pods
        // run with the runtime's default profile)...
        "  annotations:",
        "    seccomp.security.alpha.kubernetes.io/allowedProfileNames: 'docker/default,runtime/default'",
        "    seccomp.security.alpha.kubernetes.io/defaultProfileName: 'runtime/default'",
        // ...CSI inline and generic ephemeral volumes, which the restricted
        // PSP of Kubernetes' own examples allows and the guide omits...
        "    - 'csi'",
        "    - 'ephemeral'",
        // ...and any profile for the unrestricted system policy, which
        // otherwise refuses every pod that names one.
        "  annotations:",
        "    seccomp.security.alpha.kubernetes.io/allowedProfileNames: '*'",
    ];
    let guide_text = guide("policy.yaml");
    let diff = similar::TextDiff::from_lines(&guide_text, &policy);
    let (mut added, mut removed) = (Vec::new(), Vec::new());
    for change in diff.iter_all_changes() {
        let line = change.value().trim_end_matches('\n').to_owned();
        match change.tag() {
            similar::ChangeTag::Insert => added.push(line),
            similar::ChangeTag::Delete => removed.push(line),
            similar::ChangeTag::Equal => {}
        }
    }
    assert!(removed.is_empty(), "the guide's lines dropped: {removed:?}");
    assert_eq!(
        added, ADDED,
        "policy.yaml differs from the guide beyond the listed additions"
    );
    assert_eq!(
        fleet.mode("s1", "/var/lib/rancher/k3s/server/manifests/policy.yaml"),
        0o600
    );
    assert_eq!(fleet.mode("s1", "/var/lib/rancher/k3s/server/logs"), 0o700);

    // Agents: only agent keys, and no server files.
    for host in ["a1", "a2"] {
        let config = fleet
            .read(host, "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .expect("agent config");
        let cfg = yaml(&config);
        let keys: Vec<&str> = cfg
            .as_mapping()
            .unwrap()
            .keys()
            .map(|k| k.as_str().unwrap())
            .collect();
        assert!(
            keys.iter()
                .all(|k| ["protect-kernel-defaults", "kubelet-arg+"].contains(k)),
            "{host}: {keys:?}"
        );
        assert!(
            !fleet.path(host, "/var/lib/rancher/k3s/server").exists(),
            "{host} got server files"
        );
    }

    // One restart of the right service per node, after the kernel parameters were live.
    assert_eq!(fleet.restarts("s1").len(), 1, "{:?}", fleet.restarts("s1"));
    assert!(
        fleet.restarts("s1")[0].ends_with("restart k3s"),
        "{:?}",
        fleet.restarts("s1")
    );
    for host in ["a1", "a2"] {
        let r = fleet.restarts(host);
        assert!(
            r.len() == 1 && r[0].ends_with("restart k3s-agent"),
            "{host}: {r:?}"
        );
    }
    for host in ["s1", "a1", "a2"] {
        let restart_at: f64 = fleet.restarts(host)[0]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let live = std::fs::metadata(fleet.path(host, "/proc/sys/vm/overcommit_memory"))
            .unwrap()
            .modified()
            .unwrap();
        let live_at = live
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            live_at <= restart_at,
            "{host}: sysctl applied at {live_at}, restart at {restart_at}"
        );
    }

    // Second apply: nothing changes, nothing restarts; check mode agrees.
    // A no-change run costs one SSH channel per host: the probe.
    let second = fleet.apply(&["--format", "json"]);
    assert_eq!(second.code, 0, "{}", second.all());
    let doc: serde_json::Value = serde_json::from_str(&second.stdout).expect("JSON report");
    for host in ["s1", "a1", "a2"] {
        assert_eq!(doc["recap"][host]["changed"], 0, "{}", second.all());
        assert_eq!(
            doc["channels"][host], 1,
            "channels on a no-change run: {}",
            doc["channels"]
        );
        assert_eq!(fleet.restarts(host).len(), 1, "{host} restarted again");
    }
    // One host at a time works as well (no phase waits for a fork another phase holds).
    let check = fleet.apply(&["--check", "--forks", "1"]);
    assert_eq!(
        check.code,
        0,
        "check after apply must find no drift: {}",
        check.all()
    );

    // A hand edit on one agent's config: only that agent changes and restarts.
    let path = fleet.path("a2", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml");
    let edited = std::fs::read_to_string(&path).unwrap().replace(
        "streaming-connection-idle-timeout=5m",
        "streaming-connection-idle-timeout=0",
    );
    std::fs::write(&path, edited).unwrap();
    let repair = fleet.apply(&[]);
    assert_eq!(repair.code, 0, "{}", repair.all());
    assert_eq!(
        repair.count("a2", "changed"),
        2,
        "config put back + handler: {}",
        repair.all()
    );
    assert_eq!(repair.count("s1", "changed"), 0, "{}", repair.all());
    assert_eq!(repair.count("a1", "changed"), 0, "{}", repair.all());
    assert!(
        fleet
            .read("a2", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .unwrap()
            .contains("streaming-connection-idle-timeout=5m")
    );
    assert_eq!(fleet.restarts("a2").len(), 2);
    assert_eq!(fleet.restarts("a1").len(), 1);
    assert_eq!(fleet.restarts("s1").len(), 1);
}

/// Round trips per host do not grow with the number of tasks: a fresh apply
/// opens at most 4 SSH channels per host (probe, apply, restart with its
/// health gate and the next probe, apply), the same with every task twice.
#[test]
fn channels_per_host_are_fixed_whatever_the_number_of_tasks() {
    let fleet = Fleet::up(&[
        "s1:server:v1.30.6+k3s1",
        "a1:agent:v1.30.6+k3s1",
        "s2:server:v1.30.6+k3s1",
    ]);
    let channels = |run: &common::Run, host: &str| -> u64 {
        assert_eq!(run.code, 0, "{}", run.all());
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).expect("JSON report");
        doc["channels"][host]
            .as_u64()
            .unwrap_or_else(|| panic!("no channels for {host}: {}", doc["channels"]))
    };
    let once = fleet.apply(&["--format", "json", "--limit", "s1:a1"]);
    let (server, agent) = (channels(&once, "s1"), channels(&once, "a1"));
    assert!(
        server <= 4 && agent <= 4,
        "fresh apply: server {server}, agent {agent}"
    );
    // A copy of the role with every task (but the handler flush) twice.
    let role = fleet.dir.join("roles/twice");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("roles/cis_k3s");
    for sub in ["defaults", "handlers", "templates", "files", "tasks"] {
        std::fs::create_dir_all(role.join(sub)).unwrap();
        for e in std::fs::read_dir(src.join(sub)).unwrap() {
            let e = e.unwrap();
            std::fs::copy(e.path(), role.join(sub).join(e.file_name())).unwrap();
        }
    }
    let tasks: Vec<serde_yaml::Value> =
        serde_yaml::from_str(&std::fs::read_to_string(src.join("tasks/main.yaml")).unwrap())
            .unwrap();
    let mut doubled = Vec::new();
    for t in tasks {
        if t.get("meta").is_none() {
            let mut copy = t.clone();
            copy["name"] = format!("{} (again)", t["name"].as_str().unwrap()).into();
            doubled.push(copy);
        }
        doubled.push(t);
    }
    std::fs::write(
        role.join("tasks/main.yaml"),
        serde_yaml::to_string(&doubled).unwrap(),
    )
    .unwrap();
    let twice_play = fleet.dir.join("twice.yaml");
    std::fs::write(&twice_play, "- hosts: all\n  roles: [twice]\n").unwrap();
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let twice = fleet.khard(&[
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        twice_play.to_str().unwrap(),
        "--format",
        "json",
        "--limit",
        "s2",
    ]);
    assert_eq!(
        channels(&twice, "s2"),
        server,
        "every task twice on a fresh server"
    );
}
