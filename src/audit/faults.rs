//! The faults an auditor found in the report, one test each: the verdict
//! must be the one the benchmark's own test gives on the node's evidence,
//! or unknown with the reason (issue 23, "what is wrong today").

use std::collections::BTreeMap;

use super::catalogue::{Control, load};
use super::evidence::Evidence;
use super::flags::{Node, component_flags};
use super::judge::{Judged, Verdict, judge};
use crate::k3s::config::{Source, merge};
use crate::k3s::version::K3sVersion;

fn control(profile: &str, id: &str) -> Control {
    let c = load(profile).unwrap();
    c.controls.iter().find(|c| c.id == id).unwrap().clone()
}

/// A server of `version` whose configuration is `config_yaml`, with
/// embedded etcd configured by `etcd_yaml`.
fn server(version: &str, config_yaml: &str, etcd_yaml: &str) -> Evidence {
    let effective = merge(&[Source {
        file: "/etc/rancher/k3s/config.yaml",
        text: config_yaml,
    }])
    .unwrap();
    let node = Node {
        version: K3sVersion::parse(version).unwrap(),
        embedded_etcd: true,
        kubelet_dropins: Vec::new(),
    };
    let mut ev = Evidence::unavailable("server", "");
    ev.missing = None;
    ev.version = Some(version.to_owned());
    ev.flags = component_flags(&effective, &node);
    ev.embedded_etcd = true;
    ev.etcd_config = Ok(serde_yaml::from_str(etcd_yaml).unwrap());
    ev.sysctl = BTreeMap::new();
    ev
}

fn verdict(profile: &str, id: &str, ev: &Evidence) -> Judged {
    judge(&control(profile, id), ev)
}

const ETCD_OFF: &str = "client-transport-security:\n  cert-file: /var/lib/rancher/k3s/server/tls/etcd/server-client.crt\n  key-file: /var/lib/rancher/k3s/server/tls/etcd/server-client.key\n  client-cert-auth: false\npeer-transport-security:\n  cert-file: /var/lib/rancher/k3s/server/tls/etcd/peer-server-client.crt\n  key-file: /var/lib/rancher/k3s/server/tls/etcd/peer-server-client.key\n  client-cert-auth: false\n";

/// As k3s writes it: client certificates required on both listeners.
const ETCD_ON: &str = "client-transport-security:\n  cert-file: /var/lib/rancher/k3s/server/tls/etcd/server-client.crt\n  key-file: /var/lib/rancher/k3s/server/tls/etcd/server-client.key\n  client-cert-auth: true\npeer-transport-security:\n  cert-file: /var/lib/rancher/k3s/server/tls/etcd/peer-server-client.crt\n  key-file: /var/lib/rancher/k3s/server/tls/etcd/peer-server-client.key\n  client-cert-auth: true\n";

/// Fault 1: the grep-style etcd items of k3s-cis-1.23, 1.24 and 1.7.
/// kube-bench greps the YAML for `--client-cert-auth` (never there) or for
/// `client-cert-auth` in the block the audit names, and compares its value.
#[test]
fn fault_1_etcd_client_cert_auth_false_fails_in_the_block_the_audit_reads() {
    let off = server("v1.24.17+k3s1", "", ETCD_OFF);
    let on = server("v1.24.17+k3s1", "", ETCD_ON);
    for profile in ["k3s-cis-1.23", "k3s-cis-1.24", "k3s-cis-1.7"] {
        for id in ["2.2", "2.5"] {
            let j = verdict(profile, id, &off);
            assert_eq!(j.verdict, Verdict::Fail, "{profile} {id}: {j:?}");
            assert!(
                j.found.contains("client-cert-auth") && j.found.contains("=false"),
                "{j:?}"
            );
            assert_eq!(
                verdict(profile, id, &on).verdict,
                Verdict::Pass,
                "{profile} {id}"
            );
        }
    }
    // Only the peer block off: 2.5 (peer) fails, 2.2 (client) passes.
    let peer_off = server(
        "v1.24.17+k3s1",
        "",
        "client-transport-security:\n  client-cert-auth: true\npeer-transport-security:\n  client-cert-auth: false\n",
    );
    for profile in ["k3s-cis-1.24", "k3s-cis-1.7"] {
        assert_eq!(verdict(profile, "2.2", &peer_off).verdict, Verdict::Pass);
        assert_eq!(verdict(profile, "2.5", &peer_off).verdict, Verdict::Fail);
    }
    // 2.4 reads the peer block's certificate files.
    let no_peer_certs = server(
        "v1.24.17+k3s1",
        "",
        "client-transport-security:\n  cert-file: /var/lib/rancher/k3s/server/tls/etcd/server-client.crt\n  key-file: /var/lib/rancher/k3s/server/tls/etcd/server-client.key\npeer-transport-security:\n  client-cert-auth: true\n",
    );
    assert_eq!(
        verdict("k3s-cis-1.7", "2.4", &no_peer_certs).verdict,
        Verdict::Fail
    );
    assert_eq!(
        verdict("k3s-cis-1.7", "2.1", &no_peer_certs).verdict,
        Verdict::Pass
    );
}

/// Fault 2: an API answer without the namespaces and binding every cluster
/// has is a question that did not work: unknown, never pass or fail.
#[test]
fn fault_2_an_empty_api_answer_is_unknown() {
    let mut ev = server("v1.30.6+k3s1", "", ETCD_ON);
    ev.service_accounts = Some(Ok(Vec::new()));
    ev.cluster_admin_bindings = Some(Ok(Vec::new()));
    for id in ["5.1.5", "5.1.1"] {
        let j = verdict("k3s-cis-1.10", id, &ev);
        assert_eq!(j.verdict, Verdict::Unknown, "{id}: {j:?}");
        assert!(j.why.contains("implausible API answer"), "{j:?}");
    }
    // A real answer is judged.
    ev.service_accounts = Some(Ok([
        "default",
        "kube-system",
        "kube-public",
        "kube-node-lease",
    ]
    .iter()
    .map(|ns| ((*ns).to_owned(), "false".to_owned()))
    .collect()));
    ev.cluster_admin_bindings = Some(Ok(vec!["cluster-admin".into()]));
    assert_eq!(verdict("k3s-cis-1.10", "5.1.5", &ev).verdict, Verdict::Pass);
    assert_eq!(verdict("k3s-cis-1.10", "5.1.1", &ev).verdict, Verdict::Pass);
}

/// Fault 3: no invented defaults. With authentication-config /
/// authorization-config k3s passes no anonymous-auth / authorization-mode;
/// k3s ≤ 1.21's insecure-port default is unconfirmed: unknown, not fail.
#[test]
fn fault_3_defaults_k3s_does_not_pass_are_unknown() {
    let ev = server(
        "v1.33.5+k3s1",
        "kube-apiserver-arg:\n  - authentication-config=/etc/rancher/k3s/authn.yaml\n  - authorization-config=/etc/rancher/k3s/authz.yaml\n",
        ETCD_ON,
    );
    for id in ["1.2.1", "1.2.6", "1.2.7", "1.2.8"] {
        let j = verdict("k3s-cis-1.12", id, &ev);
        assert_eq!(j.verdict, Verdict::Unknown, "{id}: {j:?}");
        assert!(j.why.contains("which khard does not read"), "{j:?}");
    }
    let plain = server("v1.33.5+k3s1", "", ETCD_ON);
    let j = verdict("k3s-cis-1.12", "1.2.1", &plain);
    assert_eq!(j.verdict, Verdict::Pass);
    assert!(j.found.contains("k3s default"), "{j:?}");

    let old = server("v1.20.15+k3s1", "", ETCD_ON);
    let j = verdict("cis-1.6", "1.2.19", &old);
    assert_eq!(j.verdict, Verdict::Unknown, "{j:?}");
    let set = server(
        "v1.20.15+k3s1",
        "kube-apiserver-arg: [insecure-port=0]\n",
        ETCD_ON,
    );
    assert_eq!(verdict("cis-1.6", "1.2.19", &set).verdict, Verdict::Pass);

    // k3s v1.32.0–v1.32.3 leave the read-only port open (k3s#12164): 4.2.4
    // fails there, passes before and after, and passes with khard's flag.
    let kubelet = |v: &str, yaml: &str| {
        let mut ev = server(v, yaml, ETCD_ON);
        ev.role = "agent".into();
        verdict("k3s-cis-1.12", "4.2.4", &ev).verdict
    };
    assert_eq!(kubelet("v1.32.2+k3s1", ""), Verdict::Fail);
    assert_eq!(kubelet("v1.32.5+k3s1", ""), Verdict::Pass);
    assert_eq!(
        kubelet("v1.32.2+k3s1", "kubelet-arg: [read-only-port=0]\n"),
        Verdict::Pass
    );
}

/// Fault 4 (last part): repeated admission-plugin flags accumulate, as
/// kube-apiserver's string slice does.
#[test]
fn fault_4_repeated_admission_plugins_accumulate() {
    let ev = server(
        "v1.30.6+k3s1",
        "kube-apiserver-arg:\n  - enable-admission-plugins=NodeRestriction\n  - enable-admission-plugins=AlwaysPullImages\n",
        ETCD_ON,
    );
    // 1.2.11 (AlwaysPullImages) sees the second item, 1.2.16 (NodeRestriction) the first.
    let c = load("k3s-cis-1.10").unwrap();
    for c in c
        .controls
        .iter()
        .filter(|c| c.title.contains("AlwaysPullImages") || c.title.contains("NodeRestriction"))
    {
        let j = judge(c, &ev);
        assert_eq!(j.verdict, Verdict::Pass, "{} {}: {j:?}", c.id, c.title);
        assert!(
            j.found.contains("NodeRestriction,AlwaysPullImages"),
            "{j:?}"
        );
    }
}

/// Fault 4: cis-1.6 1.1.20/1.1.21 audit `tls/` recursively (`find … -name
/// '*.key'`): a key k3s rewrote as 644 in tls/etcd/ fails 1.1.21.
#[test]
fn fault_4_keys_in_tls_subfolders_are_judged() {
    let mut ev = server("v1.20.15+k3s1", "", ETCD_ON);
    let file = |path: &str, mode: u32| super::evidence::FileFacts {
        path: path.to_owned(),
        mode,
        owner: "root".into(),
        group: "root".into(),
        is_file: true,
    };
    ev.files = vec![
        file("/var/lib/rancher/k3s/server/tls/server-ca.key", 0o600),
        file("/var/lib/rancher/k3s/server/tls/server-ca.crt", 0o644),
        file(
            "/var/lib/rancher/k3s/server/tls/etcd/peer-server-client.key",
            0o600,
        ),
        file(
            "/var/lib/rancher/k3s/server/tls/temporary-certs/apiserver-loopback-client__.crt",
            0o644,
        ),
    ];
    assert_eq!(verdict("cis-1.6", "1.1.21", &ev).verdict, Verdict::Pass);
    assert_eq!(verdict("cis-1.6", "1.1.20", &ev).verdict, Verdict::Pass);
    ev.files[2].mode = 0o644;
    let j = verdict("cis-1.6", "1.1.21", &ev);
    assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
    assert!(
        j.found.contains("tls/etcd/peer-server-client.key: 644"),
        "{j:?}"
    );
    // The certificates' control reads the .crt files only, here and below.
    assert_eq!(verdict("cis-1.6", "1.1.20", &ev).verdict, Verdict::Pass);
    ev.files[3].mode = 0o666;
    assert_eq!(verdict("cis-1.6", "1.1.20", &ev).verdict, Verdict::Fail);
}

/// Fault 5: judged on what runs. After a rollout that stopped, the config
/// file has the flag but the apiserver k3s started last lacks it: FAIL,
/// showing what the next start would bring.
#[test]
fn fault_5_flags_are_judged_on_the_running_process() {
    let mut ev = server(
        "v1.30.6+k3s1",
        "kube-apiserver-arg: [audit-log-maxage=30]\n",
        ETCD_ON,
    );
    assert_eq!(
        verdict("k3s-cis-1.10", "1.2.17", &ev).verdict,
        Verdict::Pass
    );
    let logged = super::evidence::parse_journal(
        "time=\"2026-12-07T10:00:00Z\" level=info msg=\"Running kube-apiserver --advertise-port=6443 --anonymous-auth=false --audit-log-maxage=1 --profiling=false\"\n",
    );
    let node = Node {
        version: K3sVersion::parse("v1.30.6+k3s1").unwrap(),
        embedded_etcd: true,
        kubelet_dropins: Vec::new(),
    };
    ev.running = super::flags::running_flags(&logged, &node).unwrap();
    let j = verdict("k3s-cis-1.10", "1.2.17", &ev);
    assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
    assert!(
        j.found
            .starts_with("--audit-log-maxage=1 (the \"Running kube-apiserver\" line"),
        "{j:?}"
    );
    assert!(
        j.found.contains("configured for the next start: --audit-log-maxage=30 (kube-apiserver-arg in /etc/rancher/k3s/config.yaml) (not active until k3s restarts)"),
        "{j:?}"
    );
    // A flag the running process has and the files agree on: plain pass.
    let j = verdict("k3s-cis-1.10", "1.2.15", &ev);
    assert!(!j.found.contains("next start"), "{j:?}");
    // Pending markers no longer make it unknown: what runs is known.
    ev.pending = vec!["restart k3s".into()];
    assert_eq!(
        verdict("k3s-cis-1.10", "1.2.17", &ev).verdict,
        Verdict::Fail
    );
    ev.running.clear();
    let j = verdict("k3s-cis-1.10", "1.2.17", &ev);
    assert_eq!(j.verdict, Verdict::Unknown, "{j:?}");
}

/// k3s ≥ 1.32 writes the kubelet's defaults to its config file: the
/// "Running kubelet" line lacks them, and they are not taken as absent.
#[test]
fn kubelet_defaults_in_the_config_file_count_beside_the_logged_line() {
    let mut ev = server("v1.33.5+k3s1", "", ETCD_ON);
    ev.role = "agent".into();
    let node = Node {
        version: K3sVersion::parse("v1.33.5+k3s1").unwrap(),
        embedded_etcd: false,
        kubelet_dropins: Vec::new(),
    };
    ev.running = super::flags::running_flags(
        &super::evidence::parse_journal(
            "level=info msg=\"Running kubelet --config-dir=/var/lib/rancher/k3s/agent/etc/kubelet.conf.d --hostname-override=a1 --read-only-port=0\"",
        ),
        &node,
    )
    .unwrap();
    let j = verdict("k3s-cis-1.12", "4.2.1", &ev);
    assert_eq!(j.verdict, Verdict::Pass, "{j:?}");
    assert!(
        j.found.contains(
            "k3s default in /var/lib/rancher/k3s/agent/etc/kubelet.conf.d/00-k3s-defaults.conf"
        ),
        "{j:?}"
    );
    assert_eq!(verdict("k3s-cis-1.12", "4.2.4", &ev).verdict, Verdict::Pass);
}

/// k3s ≥ 1.32 gives the kubelet `--config-dir` (agent/etc/kubelet.conf.d):
/// an operator's drop-in there that enables anonymous requests fails 4.2.1;
/// before 1.32 the folder is not read; a command-line flag still wins.
#[test]
fn kubelet_config_dropins_count_where_k3s_passes_the_folder() {
    let agent = |version: &str, config: &str, dropin: &str| {
        let effective = merge(&[Source {
            file: "/etc/rancher/k3s/config.yaml",
            text: config,
        }])
        .unwrap();
        let node = Node {
            version: K3sVersion::parse(version).unwrap(),
            embedded_etcd: false,
            kubelet_dropins: vec![(
                "/var/lib/rancher/k3s/agent/etc/kubelet.conf.d/50-local.conf".into(),
                dropin.into(),
            )],
        };
        let mut ev = server(version, config, ETCD_ON);
        ev.role = "agent".into();
        ev.flags = component_flags(&effective, &node);
        ev
    };
    let open = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nauthentication:\n  anonymous:\n    enabled: true\n";
    let j = verdict("k3s-cis-1.12", "4.2.1", &agent("v1.33.5+k3s1", "", open));
    assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
    assert!(
        j.found.contains("authentication.anonymous.enabled in /var/lib/rancher/k3s/agent/etc/kubelet.conf.d/50-local.conf"),
        "{j:?}"
    );
    assert_eq!(
        verdict("k3s-cis-1.10", "4.2.1", &agent("v1.31.4+k3s1", "", open)).verdict,
        Verdict::Pass,
        "no --config-dir before 1.32"
    );
    let flag_wins = agent(
        "v1.33.5+k3s1",
        "kubelet-arg: [anonymous-auth=false]\n",
        open,
    );
    assert_eq!(
        verdict("k3s-cis-1.12", "4.2.1", &flag_wins).verdict,
        Verdict::Pass
    );
    // A drop-in the kubelet could not parse leaves its flags unknown.
    let broken = agent("v1.33.5+k3s1", "", "authentication: [\n");
    let j = verdict("k3s-cis-1.12", "4.2.1", &broken);
    assert_eq!(j.verdict, Verdict::Unknown, "{j:?}");
    assert!(j.why.contains("50-local.conf"), "{j:?}");
}

/// Kernel values are read live and from the files that set them at boot: a
/// sysctl.d file that breaks the next boot fails protect-kernel-defaults
/// (the kubelet would refuse to start after a reboot), naming the file.
#[test]
fn a_sysctl_file_that_breaks_the_next_boot_fails_protect_kernel_defaults() {
    use crate::modules::sysctl_boot::BootValue;
    let mut ev = server("v1.24.17+k3s1", "protect-kernel-defaults: true\n", ETCD_ON);
    ev.sysctl = super::evidence::KERNEL_DEFAULTS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let boot = |value: &str| {
        Ok([(
            "vm.overcommit_memory".to_owned(),
            BootValue {
                value: value.into(),
                file: "/etc/sysctl.d/99-zz-tuning.conf".into(),
            },
        )]
        .into_iter()
        .collect())
    };
    ev.sysctl_boot = boot("1");
    assert_eq!(verdict("k3s-cis-1.24", "4.2.6", &ev).verdict, Verdict::Pass);
    ev.sysctl_boot = boot("0");
    let j = verdict("k3s-cis-1.24", "4.2.6", &ev);
    assert_eq!(j.verdict, Verdict::Fail, "{j:?}");
    assert!(
        j.found.contains(
            "the next boot sets vm.overcommit_memory=0 (/etc/sysctl.d/99-zz-tuning.conf), wants 1"
        ),
        "{j:?}"
    );
}

/// k3s-cis-1.7 4.1.7/4.1.8 audit the kubelet's client CA, which every
/// agent has (not the server CA, which left every 1.25 agent unknown).
#[test]
fn a_125_agent_is_judged_on_its_own_client_ca() {
    let mut ev = server("v1.25.16+k3s4", "", ETCD_ON);
    ev.role = "agent".into();
    ev.files = vec![super::evidence::FileFacts {
        path: "/var/lib/rancher/k3s/agent/client-ca.crt".into(),
        mode: 0o600,
        owner: "root".into(),
        group: "root".into(),
        is_file: true,
    }];
    assert_eq!(verdict("k3s-cis-1.7", "4.1.7", &ev).verdict, Verdict::Pass);
    assert_eq!(verdict("k3s-cis-1.7", "4.1.8", &ev).verdict, Verdict::Pass);
    ev.files[0].mode = 0o644;
    assert_eq!(verdict("k3s-cis-1.7", "4.1.7", &ev).verdict, Verdict::Fail);
}
