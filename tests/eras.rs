//! CIS content for every k3s era, chosen per node from `k3s --version`, and
//! the compliance report by control ID before and after hardening.

mod common;

use common::{Fleet, control, node};

const V124: &str = "v1.24.17+k3s1";
const V130: &str = "v1.30.6+k3s1";
const V126: &str = "v1.26.15+k3s1";

fn fleet() -> Fleet {
    Fleet::up(&[
        &format!("old:server:{V124}"),
        &format!("new:server:{V130}"),
        &format!("mid:server:{V126}"),
        &format!("a-old:agent:{V124}"),
        &format!("a-new:agent:{V130}"),
    ])
}

fn args(cfg: &serde_yaml::Value, key: &str) -> Vec<String> {
    cfg[key]
        .as_sequence()
        .map(|s| s.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// Every YAML document of a file parses; returns them.
fn docs(text: &str) -> Vec<serde_yaml::Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).expect("valid YAML"))
        .collect()
}

#[test]
fn each_node_gets_its_eras_content_and_the_report_turns_from_fail_to_pass() {
    let fleet = fleet();

    let (before, doc) = fleet.report(&[]);
    assert_eq!(
        before.code,
        2,
        "an unhardened fleet fails controls: {}",
        before.all()
    );
    // Before: controls that khard remediates fail on every node.
    for host in ["old", "new", "mid", "a-old", "a-new"] {
        let failing_managed = node(&doc, host)["controls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| {
                (c["verdict"] == "fail" || c["verdict"] == "warn")
                    && !c["tasks"].as_array().unwrap().is_empty()
            })
            .count();
        assert!(failing_managed > 0, "{host}: {}", node(&doc, host));
    }
    assert_eq!(node(&doc, "new")["benchmark"], "k3s-cis-1.10");
    assert_eq!(node(&doc, "old")["benchmark"], "k3s-cis-1.24");

    // "new" was upgraded from 1.24: its old PSP-era manifest must go.
    let old_policy = fleet.path("new", "/var/lib/rancher/k3s/server/manifests/policy.yaml");
    std::fs::create_dir_all(old_policy.parent().unwrap()).unwrap();
    std::fs::write(
        &old_policy,
        "apiVersion: policy/v1beta1\nkind: PodSecurityPolicy\nmetadata: {name: old}\n",
    )
    .unwrap();

    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        !old_policy.exists(),
        "the PSP-era policy.yaml stayed on a 1.30 server"
    );
    assert!(
        fleet
            .path(
                "new",
                "/var/backups/khard/var/lib/rancher/k3s/server/manifests"
            )
            .exists(),
        "no backup of the removed manifest"
    );

    // PSP era (1.24): the guide's policy.yaml and PSP admission; no psa.yaml.
    assert!(
        fleet
            .read(
                "old",
                "/var/lib/rancher/k3s/server/manifests/cis-svclb-psp.yaml"
            )
            .is_some(),
        "svclb-psp on a 1.24 server (pitfall P11)"
    );
    let old = docs(
        &fleet
            .read("old", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .unwrap(),
    )
    .remove(0);
    let api = args(&old, "kube-apiserver-arg+");
    assert!(
        api.iter().any(|a| a.contains("PodSecurityPolicy")),
        "{api:?}"
    );
    assert!(
        fleet
            .read("old", "/var/lib/rancher/k3s/server/manifests/policy.yaml")
            .is_some()
    );
    assert!(
        fleet
            .read("old", "/var/lib/rancher/k3s/server/psa.yaml")
            .is_none(),
        "psa.yaml on a 1.24 node"
    );
    // The PSA era's exempt namespaces may use the unrestricted PSP here too:
    // system-upgrade-controller's privileged hostPath jobs are admitted.
    let manifests: Vec<serde_yaml::Value> = ["policy.yaml", "cis-psp-exemptions.yaml"]
        .iter()
        .flat_map(|f| {
            docs(
                &fleet
                    .read("old", &format!("/var/lib/rancher/k3s/server/manifests/{f}"))
                    .unwrap_or_else(|| panic!("{f} on the 1.24 server")),
            )
        })
        .collect();
    let privileged = |names: &[String]| {
        manifests.iter().any(|p| {
            p["kind"] == "PodSecurityPolicy"
                && names.iter().any(|n| p["metadata"]["name"] == n.as_str())
                && p["spec"]["privileged"] == true
                && p["spec"]["volumes"]
                    .as_sequence()
                    .is_some_and(|v| v.iter().any(|v| v == "*" || v == "hostPath"))
        })
    };
    // The upgrade jobs: created by the job controller, run as system-upgrade's account.
    for user in [
        ("kube-system", "job-controller"),
        ("system-upgrade", "system-upgrade"),
    ] {
        let usable = psps_for(&manifests, "system-upgrade", user);
        assert!(
            privileged(&usable),
            "no PSP admits a privileged hostPath pod of {user:?} in system-upgrade: {usable:?}"
        );
    }
    // Anywhere else only the restricted one: for the namespace's own pods,
    // and for the pods kube-system's controllers create there (Deployments,
    // DaemonSets, Jobs), which a cluster-wide binding to kube-system's
    // service accounts would have let through.
    for user in [
        ("shop", "default"),
        ("kube-system", "replicaset-controller"),
        ("kube-system", "daemon-set-controller"),
    ] {
        let usable = psps_for(&manifests, "shop", user);
        assert!(!privileged(&usable), "{user:?} in shop: {usable:?}");
    }

    // PSA eras: psa.yaml with a non-empty EventRateLimit, no PodSecurityPolicy anywhere.
    for host in ["new", "mid"] {
        let cfg = docs(
            &fleet
                .read(host, "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
                .unwrap(),
        )
        .remove(0);
        let api = args(&cfg, "kube-apiserver-arg+");
        assert!(
            api.contains(
                &"admission-control-config-file=/var/lib/rancher/k3s/server/psa.yaml".to_owned()
            ),
            "{host}: {api:?}"
        );
        assert!(api.iter().any(|a| a.starts_with("enable-admission-plugins=") && a.contains("EventRateLimit")));
        let psa = docs(
            &fleet
                .read(host, "/var/lib/rancher/k3s/server/psa.yaml")
                .unwrap(),
        )
        .remove(0);
        let plugins = psa["plugins"].as_sequence().unwrap();
        let erl = plugins
            .iter()
            .find(|p| p["name"] == "EventRateLimit")
            .expect("EventRateLimit config");
        assert!(
            !erl["configuration"]["limits"]
                .as_sequence()
                .unwrap()
                .is_empty(),
            "empty limits stop the apiserver"
        );
        assert!(
            fleet
                .read(host, "/var/lib/rancher/k3s/server/manifests/policy.yaml")
                .is_none()
        );
        // Live files only: the backup of the removed PSP-era manifest is meant to stay.
        for file in fleet
            .snapshot(host)
            .into_iter()
            .filter(|f| !f.0.starts_with("var/backups"))
        {
            assert!(
                !String::from_utf8_lossy(&file.1).contains("kind: PodSecurityPolicy"),
                "{host}: PSP in {}",
                file.0
            );
        }
        let netpol = fleet
            .read(
                host,
                "/var/lib/rancher/k3s/server/manifests/cis-network-policies.yaml",
            )
            .unwrap();
        assert!(
            netpol.contains("kubernetes.io/metadata.name") && netpol.contains("k8s-app: kube-dns")
        );
        // Every *-arg lists each flag once.
        for key in [
            "kube-apiserver-arg+",
            "kube-controller-manager-arg+",
            "kubelet-arg+",
        ] {
            let names: Vec<String> = args(&cfg, key)
                .iter()
                .map(|a| a.split('=').next().unwrap().to_owned())
                .collect();
            let mut dedup = names.clone();
            dedup.sort();
            dedup.dedup();
            assert_eq!(names.len(), dedup.len(), "{host} {key}: {names:?}");
        }
    }
    let new = docs(
        &fleet
            .read("new", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .unwrap(),
    )
    .remove(0);
    assert!(
        args(&new, "kube-apiserver-arg+")
            .contains(&"service-account-extend-token-expiration=false".to_owned()),
        "≥1.29 arg"
    );
    let mid = docs(
        &fleet
            .read("mid", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .unwrap(),
    )
    .remove(0);
    assert!(
        !args(&mid, "kube-apiserver-arg+")
            .iter()
            .any(|a| a.starts_with("service-account-extend-token-expiration"))
    );

    // Agents: agent keys only, their era's kubelet args.
    for host in ["a-old", "a-new"] {
        let cfg = docs(
            &fleet
                .read(host, "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
                .unwrap(),
        )
        .remove(0);
        assert!(
            cfg.get("kube-apiserver-arg+").is_none() && cfg.get("secrets-encryption").is_none(),
            "{host}"
        );
    }
    assert!(
        args(
            &docs(
                &fleet
                    .read("a-old", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
                    .unwrap()
            )[0],
            "kubelet-arg+"
        )
        .contains(&"make-iptables-util-chains=true".to_owned())
    );

    // Default service accounts patched once, from one server, in the cluster's API.
    for ns in ["default", "kube-public", "kube-node-lease"] {
        let patched: Vec<&str> = ["old", "new", "mid"]
            .into_iter()
            .filter(|h| {
                fleet.log(h, "k3s.log").lines().any(|l| {
                    l.contains("kubectl patch serviceaccount default")
                        && l.contains(&format!("-n {ns} "))
                        && l.ends_with("=> ok")
                })
            })
            .collect();
        assert_eq!(patched.len(), 1, "{ns} patched on {patched:?}");
        let api = std::fs::read_to_string(fleet.dir.join(format!("api/sa.{ns}.default")));
        assert_eq!(api.unwrap().trim(), "false");
    }

    // A second run changes nothing; the report now passes every managed control.
    let again = fleet.apply(&[]);
    assert_eq!(again.code, 0, "{}", again.all());
    for host in ["old", "new", "mid", "a-old", "a-new"] {
        assert_eq!(again.count(host, "changed"), 0, "{}", again.all());
    }
    // After: every control a khard task remediates passes (or does not
    // apply to the node); the rest keep the verdicts of the evidence.
    let (_, doc) = fleet.report(&[]);
    for host in ["old", "new", "mid", "a-old", "a-new"] {
        let n = node(&doc, host);
        for c in n["controls"].as_array().unwrap() {
            let managed = !c["tasks"].as_array().unwrap().is_empty();
            let v = c["verdict"].as_str().unwrap();
            if managed && c["scored"] == true {
                assert!(
                    v == "pass" || v == "not_applicable" || v == "manual",
                    "{host}: {} is {v} after the apply: {c}",
                    c["id"]
                );
            }
        }
        let server = n["role"] == "server";
        let least = if server { 40 } else { 10 };
        assert!(
            n["totals"]["pass"].as_u64().unwrap() >= least,
            "{host}: {}",
            n["totals"]
        );
        assert_eq!(n["totals"]["manual"].as_u64().unwrap() > 0, server);
        let listed = n["controls"].as_array().unwrap().len() as u64;
        assert_eq!(n["totals"]["total"].as_u64().unwrap(), listed);
    }
}

/// How k3s itself reads its unit (docs/research/k3s-config-semantics.md,
/// K9, K11, K12): a list flag on ExecStart (k3s-ansible's
/// `extra_server_args`, INSTALL_K3S_EXEC) is appended after the config's
/// items, so the node hardens; a later item for the same flag, or a bool
/// turned off in any spelling Go accepts, wins over the config and fails the
/// node before anything is written, in apply and in the report alike.
#[test]
fn a_unit_list_flag_is_appended_and_what_it_overrides_fails_the_node() {
    let fleet = Fleet::up(&[&format!("s1:server:{V130}"), &format!("s2:server:{V130}")]);
    let unit = fleet.path("s1", "/etc/systemd/system/k3s.service");
    let with = |flags: &str| {
        format!("[Service]\nExecStart=/usr/local/bin/k3s \\\n    server \\\n{flags}\n")
    };
    std::fs::write(
        &unit,
        with("\t'--kube-apiserver-arg=max-requests-inflight=800'"),
    )
    .unwrap();
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fleet.restarts("s1").len(), 1, "{}", run.all());
    let (_, doc) = fleet.report(&[]);
    assert_eq!(control(&doc, "s1", "1.2.17")["verdict"], "pass");
    let check = fleet.apply(&["--check"]);
    assert_eq!(check.code, 0, "{}", check.all());

    // A bool turned off with one dash and Go's `0`: the unit wins over config.yaml.
    std::fs::write(&unit, with("    -protect-kernel-defaults=0")).unwrap();
    let restarts = fleet.restarts("s1").len();
    for args in [&["--check"][..], &[][..]] {
        let run = fleet.apply(args);
        assert_eq!(run.code, 3, "{}", run.all());
        assert!(
            run.stdout
                .contains("/etc/systemd/system/k3s.service: --protect-kernel-defaults=false"),
            "{}",
            run.all()
        );
    }
    assert_eq!(fleet.restarts("s1").len(), restarts, "s1 restarted");

    // A later item for one of khard's flags is the one kube-apiserver keeps.
    std::fs::write(&unit, with("\t'--kube-apiserver-arg=audit-log-maxage=1'")).unwrap();
    let run = fleet.apply(&["--check"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout.contains(
            "/etc/systemd/system/k3s.service sets kube-apiserver-arg `audit-log-maxage=1`"
        ),
        "{}",
        run.all()
    );
    let (_, doc) = fleet.report(&[]);
    let maxage = control(&doc, "s1", "1.2.17");
    // Unscored in this benchmark: kube-bench's WARN.
    assert_eq!(maxage["verdict"], "warn", "{maxage}");
    assert!(
        maxage["found"]
            .as_str()
            .unwrap()
            .contains("/etc/systemd/system/k3s.service"),
        "{maxage}"
    );
}

#[test]
fn servers_that_disagree_on_critical_flags_are_refused_and_unknown_versions_explained() {
    let fleet = Fleet::up(&[
        &format!("s1:server:{V130}"),
        &format!("s2:server:{V130}"),
        "bare:agent",
    ]);
    let hv = fleet.dir.join("host_vars");
    std::fs::create_dir_all(&hv).unwrap();
    std::fs::write(hv.join("s2.yaml"), "cis_secrets_encryption: false\n").unwrap();
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout.contains("disagree")
            && run.stdout.contains("secrets-encryption: s1=true, s2=false"),
        "{}",
        run.all()
    );
    for s in ["s1", "s2"] {
        assert!(
            fleet
                .read(s, "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
                .is_none(),
            "{s} got a config"
        );
    }
    // The agent without k3s and without k3s_version: tasks that need the version fail and say why.
    assert!(
        run.stdout.contains("k3s version of this host is unknown"),
        "{}",
        run.all()
    );
    assert!(
        fleet
            .read("bare", "/etc/sysctl.d/90-kubelet.conf")
            .is_some(),
        "version-independent tasks still run"
    );
    // Servers of two different clusters may differ.
    std::fs::write(hv.join("s1.yaml"), "k3s_cluster_name: east\n").unwrap();
    std::fs::write(
        hv.join("s2.yaml"),
        "cis_secrets_encryption: false\nk3s_cluster_name: west\n",
    )
    .unwrap();
    let two = fleet.apply(&["--limit", "s1:s2"]);
    assert_eq!(two.code, 0, "{}", two.all());
    assert!(
        fleet
            .read("s2", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .unwrap()
            .contains("secrets-encryption: false")
    );
}

/// The manifests khard writes pass kubernetes-validate (installed by scripts/test)
/// against the schemas of the node's Kubernetes version.
#[test]
fn manifests_validate_against_the_kubernetes_schemas_of_their_era() {
    let tool = |v: &str| {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
            "target/kubernetes-validate-{v}/bin/kubernetes-validate"
        ))
    };
    if !tool("1.24.0").exists() || !tool("1.37.0").exists() {
        panic!("kubernetes-validate is not installed: run scripts/test, which installs it");
    }
    let fleet = Fleet::up(&[&format!("old:server:{V124}"), &format!("new:server:{V130}")]);
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let manifests = "/var/lib/rancher/k3s/server/manifests";
    for (host, release, k8s, files) in [
        (
            "old",
            "1.24.0",
            "1.24.0",
            vec![
                "policy.yaml",
                "cis-network-allowances.yaml",
                "cis-svclb-psp.yaml",
            ],
        ),
        ("new", "1.37.0", "1.30.0", vec!["cis-network-policies.yaml"]),
    ] {
        for file in files {
            let path = fleet.path(host, &format!("{manifests}/{file}"));
            assert!(path.exists(), "{host}: no {file}");
            let out = std::process::Command::new(tool(release))
                .args(["--strict", "-k", k8s])
                .arg(&path)
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && !text.contains("ERROR"),
                "{host} {file}:\n{text}"
            );
        }
    }
}

/// The PodSecurityPolicies the PSP admission plugin lets `user` give a pod
/// in `namespace` (RBAC `use` on podsecuritypolicies, asked in the pod's
/// namespace): ClusterRoleBindings anywhere and RoleBindings of that
/// namespace, whose subjects name the user's service account or a group it
/// is in (`system:serviceaccounts[:NS]`, `system:authenticated`).
fn psps_for(manifests: &[serde_yaml::Value], namespace: &str, user: (&str, &str)) -> Vec<String> {
    let kind = |m: &serde_yaml::Value, k: &str| m["kind"].as_str() == Some(k);
    let groups = [
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{}", user.0),
        "system:authenticated".to_owned(),
    ];
    let subject_is_user =
        |binding: &serde_yaml::Value, s: &serde_yaml::Value| match s["kind"].as_str() {
            Some("Group") => groups.iter().any(|g| s["name"].as_str() == Some(g)),
            Some("ServiceAccount") => {
                let ns = s["namespace"]
                    .as_str()
                    .or(binding["metadata"]["namespace"].as_str());
                ns == Some(user.0) && s["name"].as_str() == Some(user.1)
            }
            _ => false,
        };
    let roles: Vec<&str> = manifests
        .iter()
        .filter(|b| {
            kind(b, "ClusterRoleBinding")
                || (kind(b, "RoleBinding")
                    && b["metadata"]["namespace"].as_str() == Some(namespace))
        })
        .filter(|b| {
            b["subjects"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|s| subject_is_user(b, s))
        })
        .filter_map(|b| b["roleRef"]["name"].as_str())
        .collect();
    manifests
        .iter()
        .filter(|m| {
            kind(m, "ClusterRole")
                && roles.contains(&m["metadata"]["name"].as_str().unwrap_or_default())
        })
        .flat_map(|r| r["rules"].as_sequence().cloned().unwrap_or_default())
        .filter(|rule| {
            rule["verbs"]
                .as_sequence()
                .is_some_and(|v| v.iter().any(|v| v == "use"))
        })
        .flat_map(|rule| {
            rule["resourceNames"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect()
}

/// Does PodSecurityPolicy `name` admit a ServiceLB pod (NET_ADMIN, a host port)?
fn admits_servicelb(manifests: &[serde_yaml::Value], name: &str) -> bool {
    manifests.iter().any(|m| {
        m["kind"] == "PodSecurityPolicy"
            && m["metadata"]["name"] == name
            && (m["spec"]["privileged"] == true
                || (m["spec"]["allowedCapabilities"]
                    .as_sequence()
                    .is_some_and(|c| c.iter().any(|c| c == "NET_ADMIN" || c == "*"))
                    && m["spec"]["hostPorts"]
                        .as_sequence()
                        .is_some_and(|p| !p.is_empty())))
    })
}

/// k3s before v1.23.8 runs a LoadBalancer Service's ServiceLB pods in the
/// Service's namespace: there the DaemonSet controller (k3s's
/// kube-controller-manager uses service-account credentials) may give them
/// the svclb-psp; nobody else gets it, and releases that run them in
/// kube-system get no such binding.
#[test]
fn servicelb_pods_in_a_services_namespace_are_admitted_on_releases_before_the_move() {
    let fleet = Fleet::up(&["early:server:v1.23.6+k3s1", "moved:server:v1.23.8+k3s1"]);
    let run = fleet.apply(&[
        "-e",
        r#"{"cis_psp_servicelb_namespaces": ["default", "shop"]}"#,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let manifests = |host: &str| -> Vec<serde_yaml::Value> {
        [
            "policy.yaml",
            "cis-psp-exemptions.yaml",
            "cis-svclb-psp.yaml",
        ]
        .iter()
        .flat_map(|f| {
            docs(
                &fleet
                    .read(host, &format!("/var/lib/rancher/k3s/server/manifests/{f}"))
                    .unwrap_or_else(|| panic!("{f} on {host}")),
            )
        })
        .collect()
    };
    let early = manifests("early");
    let controller = ("kube-system", "daemon-set-controller");
    for ns in ["default", "shop"] {
        let usable = psps_for(&early, ns, controller);
        assert!(
            usable.iter().any(|p| admits_servicelb(&early, p)),
            "svclb pods refused in {ns}: {usable:?}"
        );
    }
    // Not in a namespace the operator did not list, and never for a user's own pods.
    for (ns, user) in [
        ("other", controller),
        ("default", ("default", "default")),
        ("shop", ("shop", "app")),
    ] {
        let usable = psps_for(&early, ns, user);
        assert!(
            !usable.iter().any(|p| admits_servicelb(&early, p)),
            "{user:?} in {ns}: {usable:?}"
        );
    }
    // After the move the pods run in kube-system as the svclb account: no binding elsewhere.
    let moved = manifests("moved");
    assert!(
        !psps_for(&moved, "default", controller)
            .iter()
            .any(|p| admits_servicelb(&moved, p))
    );
    assert!(
        psps_for(&moved, "kube-system", ("kube-system", "svclb"))
            .iter()
            .any(|p| admits_servicelb(&moved, p))
    );
    let second = fleet.apply(&[
        "-e",
        r#"{"cis_psp_servicelb_namespaces": ["default", "shop"]}"#,
    ]);
    assert_eq!(second.code, 0, "{}", second.all());
    assert_eq!(second.count("early", "changed"), 0, "{}", second.all());
}
