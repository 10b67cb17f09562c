//! khard pointed at clusters that already run, in the states real ones are
//! in: a k3s-ansible HA server (cluster-init, tls-san, its own apiserver
//! args), a server on an external datastore, an agent with its name, IP,
//! labels and taints, the install script's unit and env file (K3S_TOKEN,
//! K3S_URL), an operator's own drop-in. After apply every original file is
//! as it was, the hardening is in effect (khard's drop-in appends to the
//! operator's lists), a second run changes nothing and check mode agrees;
//! a later drop-in that weakens a flag is reported, never overwritten.

mod common;

use common::Fleet;

const V130: &str = "v1.30.6+k3s1";
const V124: &str = "v1.24.17+k3s1";
const V126: &str = "v1.26.15+k3s1";
const V120: &str = "v1.20.15+k3s1";
const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml";

const HA_SERVER: &str = "cluster-init: true\ntoken: K10hatoken::server:s3cret\ntls-san:\n  - lb.example.com\n  - 10.0.0.100\nnode-ip: 10.0.0.11\nkube-apiserver-arg:\n  - 'oidc-issuer-url=https://id.example.com'\ndisable:\n  - traefik\nflannel-backend: vxlan\ncluster-cidr: 10.42.0.0/16\nservice-cidr: 10.43.0.0/16\n";
const DATASTORE_SERVER: &str = "datastore-endpoint: 'postgres://k3s:pa55@db.example.com:5432/k3s'\ntoken: K10dbtoken::server:s3cret\nnode-taint:\n  - 'CriticalAddonsOnly=true:NoExecute'\n";
const AGENT: &str = "server: https://lb.example.com:6443\ntoken: K10agenttoken::server:s3cret\nnode-name: worker-1\nnode-ip: 10.0.0.21\nnode-label:\n  - 'tier=web'\n  - 'zone=a'\nnode-taint:\n  - 'dedicated=web:NoSchedule'\nkubelet-arg:\n  - 'max-pods=150'\n";
const UNIT: &str = "[Unit]\nDescription=Lightweight Kubernetes\n[Service]\nType=notify\nEnvironmentFile=-/etc/default/%N\nEnvironmentFile=-/etc/systemd/system/k3s-agent.service.env\nExecStart=/usr/local/bin/k3s \\\n    agent \\\n\t'--node-label=role=worker' \\\n";
const UNIT_ENV: &str = "K3S_TOKEN='K10envtoken::server:s3cret'\nK3S_URL='https://10.0.0.11:6443'\n";
const OPERATOR_DROPIN: &str = "kubelet-arg+:\n  - 'image-gc-high-threshold=80'\n";

fn put(fleet: &Fleet, host: &str, path: &str, text: &str) {
    let p = fleet.path(host, path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

fn yaml(text: &str) -> serde_yaml::Value {
    serde_yaml::from_str(text).unwrap()
}

#[test]
fn existing_configs_keep_every_key_and_the_hardening_is_appended() {
    let fleet = Fleet::up(&[
        &format!("ha:server:{V130}"),
        &format!("db:server:{V124}"),
        &format!("w1:agent:{V130}"),
        &format!("mid:server:{V126}"),
    ]);
    let originals = [
        ("ha", "/etc/rancher/k3s/config.yaml", HA_SERVER),
        ("db", "/etc/rancher/k3s/config.yaml", DATASTORE_SERVER),
        ("w1", "/etc/rancher/k3s/config.yaml", AGENT),
        ("w1", "/etc/systemd/system/k3s-agent.service", UNIT),
        ("w1", "/etc/systemd/system/k3s-agent.service.env", UNIT_ENV),
        (
            "w1",
            "/etc/rancher/k3s/config.yaml.d/50-operator.yaml",
            OPERATOR_DROPIN,
        ),
    ];
    for (host, path, text) in originals {
        put(&fleet, host, path, text);
    }
    // Different clusters: the HA server and the datastore server disagree on
    // cluster-init and CIDRs on purpose.
    let hv = fleet.dir.join("host_vars");
    std::fs::create_dir_all(&hv).unwrap();
    std::fs::write(hv.join("ha.yaml"), "k3s_cluster_name: east\n").unwrap();
    std::fs::write(hv.join("db.yaml"), "k3s_cluster_name: west\n").unwrap();
    std::fs::write(hv.join("mid.yaml"), "k3s_cluster_name: middle\n").unwrap();

    let run = fleet.apply(&["--diff"]);
    assert_eq!(run.code, 0, "{}", run.all());
    for (host, path, text) in originals {
        assert_eq!(
            fleet.read(host, path).as_deref(),
            Some(text),
            "{host}:{path} changed"
        );
    }
    for secret in ["K10hatoken", "pa55", "K10agenttoken", "K10envtoken"] {
        assert!(
            !run.stdout.contains(secret) && !run.stderr.contains(secret),
            "{secret} leaked"
        );
    }
    // khard's drop-in: list keys in the append form, no token, no server.
    let ha = yaml(&fleet.read("ha", DROPIN).unwrap());
    assert!(
        common::yaml_list(&ha, "kube-apiserver-arg+").contains(&"audit-log-maxage=30".to_owned())
    );
    assert!(
        ha.get("kube-apiserver-arg").is_none()
            && ha.get("token").is_none()
            && ha.get("server").is_none()
    );
    let w1 = yaml(&fleet.read("w1", DROPIN).unwrap());
    assert!(
        common::yaml_list(&w1, "kubelet-arg+")
            .contains(&"streaming-connection-idle-timeout=5m".to_owned())
    );
    assert_eq!(fleet.mode("w1", DROPIN), 0o600);

    let again = fleet.apply(&[]);
    assert_eq!(again.code, 0, "{}", again.all());
    for host in ["ha", "db", "w1", "mid"] {
        assert_eq!(again.count(host, "changed"), 0, "{}", again.all());
    }
    let check = fleet.apply(&["--check"]);
    assert_eq!(check.code, 0, "{}", check.all());

    // A later drop-in that weakens a flag and replaces a list: reported with
    // the file and the fix, in apply and in check mode; nothing is overwritten.
    let weak = "protect-kernel-defaults: false\nkubelet-arg:\n  - 'max-pods=200'\n";
    put(
        &fleet,
        "w1",
        "/etc/rancher/k3s/config.yaml.d/zz-weak.yaml",
        weak,
    );
    for args in [&["--check"][..], &[][..]] {
        let r = fleet.apply(args);
        assert_eq!(r.code, 3, "{}", r.all());
        let line = r
            .stdout
            .lines()
            .find(|l| l.starts_with("failed: [w1]"))
            .unwrap_or_default()
            .to_owned();
        assert!(
            line.contains("zz-weak.yaml sets protect-kernel-defaults: false")
                && line.contains("zz-weak.yaml replaces the whole kubelet-arg list")
                && line.contains("kubelet-arg+:"),
            "{}",
            r.all()
        );
    }
    assert_eq!(
        fleet
            .read("w1", "/etc/rancher/k3s/config.yaml.d/zz-weak.yaml")
            .as_deref(),
        Some(weak)
    );

    // A list flag on the unit's command line is appended (k3s-ansible's
    // extra_agent_args): nothing conflicts, nothing changes.
    std::fs::remove_file(fleet.path("w1", "/etc/rancher/k3s/config.yaml.d/zz-weak.yaml")).unwrap();
    put(
        &fleet,
        "w1",
        "/etc/systemd/system/k3s-agent.service",
        &format!("{UNIT}\t'--kubelet-arg=max-pods=200' \\\n"),
    );
    let r = fleet.apply(&["--limit", "w1"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(r.count("w1", "changed"), 0, "{}", r.all());
    // A systemd drop-in of any name that resets ExecStart is what runs.
    put(
        &fleet,
        "w1",
        "/etc/systemd/system/k3s-agent.service.d/10-flags.conf",
        "[Service]\nExecStart=\nExecStart=/usr/local/bin/k3s agent --protect-kernel-defaults=False\n",
    );
    let r = fleet.apply(&["--limit", "w1", "--check"]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout
            .contains("k3s-agent.service.d/10-flags.conf: --protect-kernel-defaults=false"),
        "{}",
        r.all()
    );
}

/// k3s 1.19.1 - 1.21.0 reads no drop-ins: khard merges into config.yaml,
/// keeping every key and list item, with a backup; before 1.19.1 k3s reads no
/// config file at all, and the node fails before anything is written.
#[test]
fn older_releases_get_a_merge_and_the_oldest_a_clear_refusal() {
    let fleet = Fleet::up(&[
        &format!("old:server:{V120}"),
        "ancient:agent:v1.18.20+k3s1",
        &format!("linked:server:{V120}"),
    ]);
    put(&fleet, "old", "/etc/rancher/k3s/config.yaml", HA_SERVER);
    // A config.yaml khard cannot read whole (a link) is never merged blind.
    put(&fleet, "linked", "/etc/rancher/k3s/real.yaml", HA_SERVER);
    std::os::unix::fs::symlink(
        "real.yaml",
        fleet.path("linked", "/etc/rancher/k3s/config.yaml"),
    )
    .unwrap();
    put(&fleet, "ancient", "/etc/rancher/k3s/config.yaml", AGENT);
    let run = fleet.apply(&["--diff"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout.contains("token: [redacted]"),
        "the merged config's diff: {}",
        run.all()
    );
    assert!(!run.stdout.contains("K10hatoken"), "{}", run.all());
    let merged = yaml(&fleet.read("old", "/etc/rancher/k3s/config.yaml").unwrap());
    let original = yaml(HA_SERVER);
    for (k, v) in original.as_mapping().unwrap() {
        match v {
            serde_yaml::Value::Sequence(items) => {
                let now = common::yaml_list(&merged, k.as_str().unwrap());
                for i in items {
                    assert!(
                        now.contains(&i.as_str().unwrap().to_owned()),
                        "{k:?}: {now:?}"
                    );
                }
            }
            _ => assert_eq!(&merged[k], v, "{k:?}"),
        }
    }
    assert!(
        common::yaml_list(&merged, "kube-apiserver-arg")
            .contains(&"audit-log-maxage=30".to_owned())
    );
    assert!(
        fleet.read("old", DROPIN).is_none(),
        "k3s 1.20 reads no drop-in"
    );
    let again = fleet.apply(&["--limit", "old"]);
    assert_eq!(again.count("old", "changed"), 0, "{}", again.all());

    assert!(
        run.stdout.contains("failed: [ancient]") && run.stdout.contains("reads no config file"),
        "{}",
        run.all()
    );
    assert_eq!(
        fleet
            .read("ancient", "/etc/rancher/k3s/config.yaml")
            .as_deref(),
        Some(AGENT),
        "nothing written on k3s 1.18"
    );
    // Nothing at all: not the kernel settings either (the floor is checked
    // before the first task, from the version k3s reports).
    assert!(
        fleet
            .read("ancient", "/etc/sysctl.d/90-kubelet.conf")
            .is_none()
    );
}
