//! Green means hardened (issue 22): khard's word about a node follows what
//! k3s runs, as k3s's own code reads its files (docs/research/
//! k3s-config-semantics.md). Each test starts from a state real clusters are
//! in and checks apply, --check and report against it.

mod common;

use common::{Fleet, control};

const V130: &str = "v1.30.6+k3s1";
const DROPINS: &str = "/etc/rancher/k3s/config.yaml.d";

fn put(fleet: &Fleet, host: &str, path: &str, text: &str) {
    let p = fleet.path(host, path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Case 2 (K1): K3S_CONFIG_FILE in the unit's environment moves the config
/// file and its drop-in folder. khard refuses to write where k3s never
/// reads, names the file, and hardens once told (k3s_config_file).
#[test]
fn a_moved_config_file_is_followed_not_ignored() {
    let fleet = Fleet::up(&[&format!("s1:server:{V130}")]);
    let alt = "/etc/rancher/k3s/alt.yaml";
    put(&fleet, "s1", alt, "protect-kernel-defaults: false\n");
    put(
        &fleet,
        "s1",
        "/etc/systemd/system/k3s.service.env",
        &format!("K3S_TOKEN=K10secret\nK3S_CONFIG_FILE={alt}\n"),
    );
    let unit = fleet
        .read("s1", "/etc/systemd/system/k3s.service")
        .unwrap_or_default();
    if !unit.contains("EnvironmentFile=-/etc/systemd/system/k3s.service.env") {
        put(
            &fleet,
            "s1",
            "/etc/systemd/system/k3s.service",
            "[Service]\nType=notify\nEnvironmentFile=-/etc/systemd/system/k3s.service.env\nExecStart=/usr/local/bin/k3s server\n",
        );
    }
    for args in [&["--check"][..], &[][..]] {
        let run = fleet.apply(args);
        assert_eq!(run.code, 3, "{}", run.all());
        assert!(
            run.stdout
                .contains(&format!("set k3s_config_file: {alt} for this host")),
            "{}",
            run.all()
        );
    }
    assert!(
        fleet
            .read("s1", &format!("{DROPINS}/99-khard-cis.yaml"))
            .is_none()
    );
    // Told where k3s reads, khard writes its drop-in beside that file (read
    // after it, so its `true` wins over the file's `false`).
    let e = format!("k3s_config_file={alt}");
    let run = fleet.apply(&["-e", &e]);
    assert_eq!(run.code, 0, "{}", run.all());
    let written = fleet
        .read("s1", &format!("{alt}.d/99-khard-cis.yaml"))
        .expect("the drop-in beside the moved file");
    assert!(
        written.contains("protect-kernel-defaults: true"),
        "{written}"
    );
    assert!(
        fleet
            .read("s1", &format!("{DROPINS}/99-khard-cis.yaml"))
            .is_none()
    );
    let check = fleet.apply(&["--check", "-e", &e]);
    assert_eq!(check.code, 0, "{}", check.all());
}

/// Case 4 (K4) and 6 (K6): k3s reads drop-ins named .YAML or .Yml and dot
/// files, and YAML 1.1's `off` as false: a weakening one is found by apply
/// and by the report alike.
#[test]
fn every_dropin_k3s_reads_counts_in_every_spelling() {
    let fleet = Fleet::up(&[&format!("s1:server:{V130}")]);
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    for (name, text, named) in [
        (
            "ZZ-ops.YAML",
            "protect-kernel-defaults: off\n",
            "ZZ-ops.YAML sets protect-kernel-defaults: false",
        ),
        (
            "zz-ops.yml",
            "kube-apiserver-arg+:\n  - '--audit-log-maxage=1'\n",
            "zz-ops.yml sets kube-apiserver-arg `--audit-log-maxage=1`",
        ),
    ] {
        let path = format!("{DROPINS}/{name}");
        put(&fleet, "s1", &path, text);
        let check = fleet.apply(&["--check"]);
        assert_eq!(check.code, 3, "{name}: {}", check.all());
        assert!(check.stdout.contains(named), "{name}: {}", check.all());
        // The report reads the same files the same way (case 5: apply and
        // report agree on a weakening item however it is written).
        if name == "zz-ops.yml" {
            let (_, doc) = fleet.report(&[]);
            let maxage = control(&doc, "s1", "1.2.17");
            assert_eq!(
                maxage["verdict"], "warn",
                "unscored in k3s-cis-1.10: {maxage}"
            );
        }
        std::fs::remove_file(fleet.path("s1", &path)).unwrap();
    }
    // A dot file sorts before khard's drop-in (its items come first), and k3s
    // reads it: what it sets that khard does not is in the report.
    let dot = format!("{DROPINS}/.ops.Yml");
    put(
        &fleet,
        "s1",
        &dot,
        "kube-apiserver-arg+:\n  - 'anonymous-auth=true'\n",
    );
    let (_, doc) = fleet.report(&[]);
    let anon = control(&doc, "s1", "1.2.1");
    assert_eq!(anon["verdict"], "fail", "{anon}");
    assert!(
        anon["found"].as_str().unwrap().contains(".ops.Yml"),
        "{anon}"
    );
    std::fs::remove_file(fleet.path("s1", &dot)).unwrap();
    // What k3s does not read: another extension, a subfolder.
    put(
        &fleet,
        "s1",
        &format!("{DROPINS}/zz.yaml.bak"),
        "protect-kernel-defaults: false\n",
    );
    put(
        &fleet,
        "s1",
        &format!("{DROPINS}/old/zz.yaml"),
        "protect-kernel-defaults: false\n",
    );
    let check = fleet.apply(&["--check"]);
    assert_eq!(check.code, 0, "{}", check.all());
}

/// Case 8: a pinned k3s_version (k3s-ansible's version to install) that
/// disagrees with the node's real one fails that node, naming both, before
/// anything is written; report and apply judge by the same real version.
#[test]
fn a_pin_that_contradicts_the_node_fails_it_before_any_write() {
    let fleet = Fleet::up(&[&format!("s1:server:{V130}"), &format!("s2:server:{V130}")]);
    let run = fleet.apply(&["-l", "s1", "-e", "k3s_version=v1.22.3+k3s1"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout.contains("k3s_version is pinned to v1.22.3+k3s1 for this host, but the node runs k3s v1.30.6+k3s1"),
        "{}",
        run.all()
    );
    assert!(fleet.read("s1", "/etc/sysctl.d/90-kubelet.conf").is_none());
    assert!(
        fleet
            .read("s1", &format!("{DROPINS}/99-khard-cis.yaml"))
            .is_none()
    );
    assert!(fleet.restarts("s1").is_empty());
    // The same pin as the node: fine.
    let run = fleet.apply(&["-l", "s2", "-e", &format!("k3s_version={V130}")]);
    assert_eq!(run.code, 0, "{}", run.all());
    let (_, doc) = fleet.report(&["-e", "k3s_version=v1.22.3+k3s1"]);
    assert_eq!(
        common::node(&doc, "s1")["benchmark"],
        "k3s-cis-1.10",
        "the report judges by the real version"
    );
    assert_eq!(control(&doc, "s2", "1.2.17")["verdict"], "pass");
}

/// Case 11: the content check renders every branch before any host is
/// contacted: a typo in the k3s >= 1.32 branch fails --syntax-check.
#[test]
fn syntax_check_renders_every_version_branch() {
    let dir = std::env::temp_dir().join(format!("khard-branches-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let inv = dir.join("inv.yaml");
    std::fs::write(
        &inv,
        "all:\n  hosts:\n    n1:\n      ansible_connection: local\n      k3s_role: server\n",
    )
    .unwrap();
    let play = |body: &str| {
        let p = dir.join("pb.yaml");
        std::fs::write(
            &p,
            format!("- hosts: all\n  tasks:\n    - name: t\n      file:\n        dest: /tmp/khard-never-written\n        content: \"{body}\"\n"),
        )
        .unwrap();
        p
    };
    let khard = |pb: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_khard"))
            .args(["apply", "--syntax-check", "-i"])
            .arg(&inv)
            .arg(pb)
            .output()
            .unwrap()
    };
    let ok = khard(&play("{{#if (gte k3s_minor 32)}}new{{else}}old{{/if}}"));
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    for branch in [
        "{{#if (gte k3s_minor 32)}}{{tpyo_var}}{{/if}}",
        "{{#if (eq cis_benchmark \\\"k3s-cis-1.11\\\")}}{{tpyo_var}}{{/if}}",
        "{{#unless k3s_apiserver_default_ciphers}}{{tpyo_var}}{{/unless}}",
    ] {
        let out = khard(&play(branch));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(5), "{branch}: {err}");
        assert!(err.contains("tpyo_var"), "{branch}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/khard-never-written").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Case 9: selecting by tag or CIS ID is whole: the config task brings the
/// files and settings its flags point at (audit policy, psa.yaml, kernel
/// parameters); a needed task left out by --skip-tags is refused.
#[test]
fn a_selection_by_cis_id_brings_what_the_flags_point_at() {
    let fleet = Fleet::up(&[&format!("s1:server:{V130}"), &format!("a1:agent:{V130}")]);
    let refused = fleet.apply(&["-t", "1.2.16", "--skip-tags", "network"]);
    assert_eq!(refused.code, 5, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("--skip-tags leaves out `k3s server data folder`"),
        "{}",
        refused.all()
    );
    assert!(
        fleet
            .read("s1", &format!("{DROPINS}/99-khard-cis.yaml"))
            .is_none()
    );
    let run = fleet.apply(&["-t", "1.2.16", "-l", "s1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dropin = fleet
        .read("s1", &format!("{DROPINS}/99-khard-cis.yaml"))
        .expect("the config");
    for (path, named) in [
        (
            "/var/lib/rancher/k3s/server/psa.yaml",
            "admission-control-config-file",
        ),
        (
            "/var/lib/rancher/k3s/server/audit.yaml",
            "audit-policy-file",
        ),
        ("/etc/sysctl.d/90-kubelet.conf", "protect-kernel-defaults"),
    ] {
        assert!(dropin.contains(named), "{dropin}");
        assert!(
            fleet.read("s1", path).is_some(),
            "{path} not written with the config"
        );
    }
    assert_eq!(fleet.restarts("s1").len(), 1, "{}", run.all());
    // Tasks the config does not need stay unselected.
    assert!(
        fleet
            .read(
                "s1",
                "/var/lib/rancher/k3s/server/manifests/cis-network-policies.yaml"
            )
            .is_none()
    );
    assert!(fleet.restarts("a1").is_empty());
}

/// Case 3: an agent whose service is k3s-node.service (k3s-ansible, older
/// install scripts) is read and restarted under that name, or refused
/// naming it; never hardened against a unit that does not exist.
#[test]
fn an_agent_unit_by_another_name_is_found() {
    let fleet = Fleet::up(&[&format!("a1:agent:{V130}")]);
    put(
        &fleet,
        "a1",
        "/etc/systemd/system/k3s-node.service",
        "[Service]\nExecStart=/usr/local/bin/k3s agent --protect-kernel-defaults=false\n",
    );
    let check = fleet.apply(&["--check"]);
    assert_eq!(check.code, 3, "{}", check.all());
    assert!(
        check.stdout.contains(
            "k3s runs here as k3s-node.service, not k3s-agent.service: set k3s_agent_unit: k3s-node"
        ),
        "{}",
        check.all()
    );
    let named = fleet.apply(&["--check", "-e", "k3s_agent_unit=k3s-node"]);
    assert_eq!(named.code, 3, "{}", named.all());
    assert!(
        named
            .stdout
            .contains("k3s-node.service: --protect-kernel-defaults=false"),
        "{}",
        named.all()
    );
    put(
        &fleet,
        "a1",
        "/etc/systemd/system/k3s-node.service",
        "[Service]\nExecStart=/usr/local/bin/k3s agent\n",
    );
    let run = fleet.apply(&["-e", "k3s_agent_unit=k3s-node"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let restarts = fleet.restarts("a1");
    assert!(
        restarts.len() == 1 && restarts[0].contains("k3s-node"),
        "{restarts:?}"
    );
}

/// Case 6: the servers of a cluster must agree on critical flags as k3s
/// runs them: a flag on one server's command line counts.
#[test]
fn a_critical_flag_on_a_units_command_line_counts_across_servers() {
    let fleet = Fleet::up(&[&format!("s1:server:{V130}"), &format!("s2:server:{V130}")]);
    put(
        &fleet,
        "s2",
        "/etc/systemd/system/k3s.service",
        "[Service]\nExecStart=/usr/local/bin/k3s server --cluster-cidr=10.52.0.0/16\n",
    );
    let run = fleet.apply(&["--check"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout
            .contains("cluster-cidr: s1=(unset), s2=10.52.0.0/16"),
        "{}",
        run.all()
    );
}

/// k3s >= 1.32 gives the kubelet `--config-dir` (agent/etc/kubelet.conf.d):
/// an operator's drop-in there that turns anonymous requests on undoes
/// k3s's default. The config check refuses it, naming the file, and the
/// report fails 4.2.1 on it; on 1.31 the folder is not read (issue 28).
#[test]
fn a_kubelet_config_dropin_that_enables_anonymous_auth_is_caught() {
    let fleet = Fleet::up(&["a1:agent:v1.33.5+k3s1", "a0:agent:v1.31.4+k3s1"]);
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dropin = "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/50-local.conf";
    let open = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: true\n";
    for host in ["a1", "a0"] {
        put(&fleet, host, dropin, open);
    }
    let check = fleet.apply(&["--check"]);
    assert_eq!(check.code, 3, "{}", check.all());
    assert!(
        check.stdout.contains(&format!(
            "authentication.anonymous.enabled in {dropin} turns on anonymous requests to the kubelet (CIS 4.2.1)"
        )),
        "{}",
        check.all()
    );
    assert!(
        !check.stdout.contains("failed: [a0]"),
        "1.31 reads no drop-ins: {}",
        check.all()
    );
    let (_, doc) = fleet.report(&[]);
    let c = control(&doc, "a1", "4.2.1");
    assert_eq!(c["verdict"], "fail", "{c}");
    assert!(
        c["found"].as_str().unwrap().contains("50-local.conf"),
        "{c}"
    );
    assert_eq!(control(&doc, "a0", "4.2.1")["verdict"], "pass");
}
