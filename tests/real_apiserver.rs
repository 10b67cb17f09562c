//! khard's hardening held against a REAL kube-apiserver (issue 21's
//! fallback: the Go module proxy refuses k3s's own module and its
//! kubernetes fork, so the lab builds upstream kube-apiserver v1.33 from
//! k8s.io/kubernetes and runs it on Debian's etcd; lab/kube/README.md).
//!
//! A fleet server at k3s v1.33 is hardened by khard; the kube-apiserver
//! items of the drop-in khard wrote, with the files they name (psa.yaml,
//! audit.yaml, the audit log folder) where khard wrote them, are given to the
//! real apiserver on top of k3s's own defaults, as k3s hands them over
//! (scripts/kube/smoke). The apiserver must accept every flag and file, and
//! each setting must do what the benchmark wants of it.

mod common;

use common::Fleet;

const V133: &str = "v1.33.5+k3s1";
const DROPIN: &str = "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml";

#[test]
fn a_real_kube_apiserver_runs_with_what_khard_wrote() {
    let fleet = Fleet::up(&[&format!("s1:server:{V133}")]);
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let dropin: serde_yaml::Value =
        serde_yaml::from_str(&fleet.read("s1", DROPIN).expect("khard's drop-in")).unwrap();
    let apiserver = common::yaml_list(&dropin, "kube-apiserver-arg+");
    assert!(
        apiserver
            .iter()
            .any(|i| i.starts_with("admission-control-config-file="))
            && apiserver
                .iter()
                .any(|i| i.starts_with("audit-policy-file=")),
        "{apiserver:?}"
    );
    // The node's paths, where the fleet keeps that node's files.
    let node_root = fleet.path("s1", "/var/lib/rancher/");
    let args: Vec<String> = apiserver
        .iter()
        .map(|i| i.replace("/var/lib/rancher/", node_root.to_str().unwrap()))
        .collect();
    let dir = std::env::temp_dir().join(format!("khard-real-apiserver-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let args_file = dir.join("kube-apiserver-args");
    std::fs::write(&args_file, args.join("\n") + "\n").unwrap();
    let encryption = dropin.get("secrets-encryption") == Some(&serde_yaml::Value::Bool(true));
    assert!(encryption, "khard sets secrets-encryption: {dropin:?}");
    let manifests = fleet.path("s1", "/var/lib/rancher/k3s/server/manifests");
    assert!(
        std::fs::read_dir(&manifests).unwrap().count() > 0,
        "khard wrote no manifest"
    );

    let out =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kube/smoke"))
            .arg(&args_file)
            .arg(&manifests)
            .env("KHARD_SECRETS_ENCRYPTION", "true")
            .env("KHARD_NODES_OUTPUT", nodes_output())
            .output()
            .expect("scripts/kube/smoke runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for check in [
        "every flag accepted",
        "ok   admission plugin PodSecurity loaded",
        "ok   admission plugin EventRateLimit loaded",
        "ok   privileged pod refused in default (PodSecurity restricted)",
        "ok   privileged pod admitted in kube-system (exempt)",
        "ok   Service with externalIPs refused (DenyServiceExternalIPs)",
        "ok   Secret stored encrypted in etcd",
        "ok   kubectl lists the nodes' pod CIDRs and InternalIPs on one line",
        "ok   audit log grows",
        "ok   cis-network-policies.yaml accepted by a server-side dry run",
    ] {
        assert!(stderr.contains(check), "no `{check}`:\n{stderr}");
    }
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
    // The audit log khard's flags name is where khard made its folder.
    let log = fleet.path("s1", "/var/lib/rancher/k3s/server/logs/audit.log");
    assert!(std::fs::metadata(&log).unwrap().len() > 0);
}

/// The `-o` argument of khard's node-address fact (FACT_COMMAND in
/// src/k3s/node_cidrs.rs, a Rust string), as its shell passes it.
fn nodes_output() -> String {
    let source = include_str!("../src/k3s/node_cidrs.rs");
    let command = source
        .split("pub const FACT_COMMAND: &str = \"")
        .nth(1)
        .expect("FACT_COMMAND");
    let start = command.find("-o '").expect("-o in the fact") + 4;
    let len = command[start..].find('\'').expect("closing quote");
    command[start..start + len].replace("\\\"", "\"")
}
