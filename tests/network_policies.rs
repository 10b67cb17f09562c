//! The NetworkPolicies khard writes, judged by a NetworkPolicy evaluator of
//! the project's own (Kubernetes' semantics: a pod is isolated for ingress
//! once a policy of its namespace selects it; then a connection needs a rule
//! of a selecting policy whose peers and ports match; podSelector,
//! namespaceSelector, both, ipBlock with except; matchLabels and
//! matchExpressions; kube-router always admits the pod's own node) over a
//! realistic k3s cluster: every flow k3s needs is allowed, cross-namespace
//! pod traffic is denied, in the PSA era (cis-network-policies.yaml) and the
//! PSP era (the guide's policy.yaml with cis-network-allowances.yaml), with
//! the nodes' own flannel addresses as the admitted node sources (issue 28).

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::Fleet;
use serde_yaml::Value;

/// A pod, or a node (hostNetwork processes, SNATed traffic: `node` set).
#[derive(Clone, Debug)]
struct Src {
    name: &'static str,
    namespace: &'static str,
    labels: &'static [(&'static str, &'static str)],
    ip: Ipv4Addr,
    node: usize,
    is_node: bool,
}

const fn pod(
    name: &'static str,
    namespace: &'static str,
    labels: &'static [(&'static str, &'static str)],
    ip: [u8; 4],
    node: usize,
) -> Src {
    Src {
        name,
        namespace,
        labels,
        ip: Ipv4Addr::new(ip[0], ip[1], ip[2], ip[3]),
        node,
        is_node: false,
    }
}

/// Two nodes: pod CIDRs 10.42.0.0/24 and 10.42.1.0/24 (flannel's address
/// is .0 of each, the bridge .1; pods from .2).
const CLUSTER: &[Src] = &[
    pod(
        "coredns",
        "kube-system",
        &[("k8s-app", "kube-dns")],
        [10, 42, 0, 3],
        0,
    ),
    pod(
        "traefik",
        "kube-system",
        &[("app.kubernetes.io/name", "traefik")],
        [10, 42, 0, 4],
        0,
    ),
    pod(
        "metrics-server",
        "kube-system",
        &[("k8s-app", "metrics-server")],
        [10, 42, 0, 5],
        0,
    ),
    pod(
        "local-path-provisioner",
        "kube-system",
        &[("app", "local-path-provisioner")],
        [10, 42, 0, 6],
        0,
    ),
    pod(
        "svclb-traefik",
        "kube-system",
        &[("svccontroller.k3s.cattle.io/svcname", "traefik")],
        [10, 42, 1, 8],
        1,
    ),
    pod("web", "default", &[("app", "web")], [10, 42, 1, 4], 1),
    pod("web-2", "default", &[("app", "web")], [10, 42, 0, 9], 0),
    pod("untrusted", "shop", &[("app", "shop")], [10, 42, 1, 7], 1),
    pod(
        "prometheus",
        "monitoring",
        &[("app", "prometheus")],
        [10, 42, 0, 7],
        0,
    ),
];

fn find(name: &str) -> Src {
    CLUSTER.iter().find(|p| p.name == name).unwrap().clone()
}

/// Node N's flannel address: NodePort and other-node host traffic arrive from it.
fn node_source(node: usize) -> Src {
    Src {
        name: "node",
        namespace: "",
        labels: &[],
        ip: Ipv4Addr::new(10, 42, node as u8, 0),
        node,
        is_node: true,
    }
}

fn labels_match(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_mapping) {
        for (k, v) in m {
            if labels.get(k.as_str().unwrap()).map(String::as_str) != v.as_str() {
                return false;
            }
        }
    }
    for e in selector
        .get("matchExpressions")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        let key = e["key"].as_str().unwrap();
        let values: Vec<&str> = e
            .get("values")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let have = labels.get(key);
        let ok = match e["operator"].as_str().unwrap() {
            "In" => have.is_some_and(|v| values.contains(&v.as_str())),
            "NotIn" => have.is_none_or(|v| !values.contains(&v.as_str())),
            "Exists" => have.is_some(),
            "DoesNotExist" => have.is_none(),
            other => panic!("operator {other}"),
        };
        if !ok {
            return false;
        }
    }
    true
}

fn pod_labels(p: &Src) -> BTreeMap<String, String> {
    p.labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn ns_labels(ns: &str) -> BTreeMap<String, String> {
    // The apiserver labels every namespace with its name (Kubernetes >= 1.21).
    [("kubernetes.io/metadata.name".to_owned(), ns.to_owned())].into()
}

fn in_cidr(ip: Ipv4Addr, cidr: &str) -> bool {
    let (net, bits) = cidr.split_once('/').unwrap();
    let (net, bits): (Ipv4Addr, u32) = (net.parse().unwrap(), bits.parse().unwrap());
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn peer_matches(peer: &Value, policy_ns: &str, src: &Src) -> bool {
    if let Some(block) = peer.get("ipBlock") {
        let inside = in_cidr(src.ip, block["cidr"].as_str().unwrap());
        let excepted = block
            .get("except")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .any(|c| in_cidr(src.ip, c.as_str().unwrap()));
        return inside && !excepted;
    }
    if src.is_node {
        return false; // pod and namespace selectors select pods only
    }
    let ns_ok = match peer.get("namespaceSelector") {
        Some(sel) => labels_match(sel, &ns_labels(src.namespace)),
        None => src.namespace == policy_ns,
    };
    let pod_ok = peer
        .get("podSelector")
        .is_none_or(|sel| labels_match(sel, &pod_labels(src)));
    ns_ok && pod_ok
}

fn port_matches(rule: &Value, port: u16) -> bool {
    match rule.get("ports").and_then(Value::as_sequence) {
        None => true,
        Some(ports) if ports.is_empty() => true,
        Some(ports) => ports.iter().any(|p| {
            p.get("port")
                .is_none_or(|v| v.as_u64() == Some(u64::from(port)))
        }),
    }
}

/// Whether `src` may open a connection to `dst:port` under `policies`.
fn allowed(policies: &[Value], src: &Src, dst: &Src, port: u16) -> bool {
    // kube-router admits everything from the destination pod's own node.
    if src.is_node && src.node == dst.node {
        return true;
    }
    let selecting: Vec<&Value> = policies
        .iter()
        .filter(|p| p["kind"] == "NetworkPolicy" && p["metadata"]["namespace"] == dst.namespace)
        .filter(|p| {
            let types = p["spec"].get("policyTypes").and_then(Value::as_sequence);
            let ingress = types.is_none_or(|t| t.iter().any(|t| t == "Ingress"));
            ingress && labels_match(&p["spec"]["podSelector"], &pod_labels(dst))
        })
        .collect();
    if selecting.is_empty() {
        return true;
    }
    selecting.iter().any(|p| {
        p["spec"]
            .get("ingress")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .any(|rule| {
                let from = rule.get("from").and_then(Value::as_sequence);
                let peers_ok = match from {
                    None => true,
                    Some(peers) if peers.is_empty() => true,
                    Some(peers) => peers.iter().any(|peer| {
                        peer_matches(peer, p["metadata"]["namespace"].as_str().unwrap(), src)
                    }),
                };
                peers_ok && port_matches(rule, port)
            })
    })
}

fn documents(text: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

/// The cluster with pod network 10.NET.0.0/16 (k3s's default NET is 42;
/// `cluster-cidr` moves it).
fn in_network(mut src: Src, net: u8) -> Src {
    let [a, _, c, d] = src.ip.octets();
    src.ip = Ipv4Addr::new(a, net, c, d);
    src
}

/// Every flow k3s needs (allowed) and the cross-namespace pod flows CIS
/// 5.3.2 isolates (denied), in the pod network 10.NET.0.0/16.
fn check_matrix(era: &str, policies: &[Value], net: u8) {
    let find = |name: &str| in_network(find(name), net);
    let node_source = |node: usize| in_network(node_source(node), net);
    let ok = [
        (
            "DNS from another namespace",
            find("untrusted"),
            find("coredns"),
            53,
        ),
        ("DNS from default", find("web"), find("coredns"), 53),
        (
            "the ingress controller to an app",
            find("traefik"),
            find("web"),
            8080,
        ),
        (
            "ServiceLB to the ingress controller",
            find("svclb-traefik"),
            find("traefik"),
            80,
        ),
        (
            "a NodePort from the other node",
            node_source(0),
            find("web"),
            8080,
        ),
        (
            "the apiserver on the other node to metrics-server",
            node_source(1),
            find("metrics-server"),
            10250,
        ),
        (
            "the kubelet's probes (same node)",
            node_source(1),
            find("web"),
            8080,
        ),
        ("pods of one namespace", find("web-2"), find("web"), 8080),
        (
            "host traffic from the other node to CoreDNS",
            node_source(1),
            find("coredns"),
            53,
        ),
    ];
    let denied = [
        (
            "another namespace to an app in default",
            find("untrusted"),
            find("web"),
            8080,
        ),
        (
            "another namespace to local-path-provisioner",
            find("untrusted"),
            find("local-path-provisioner"),
            8080,
        ),
        (
            "monitoring to CoreDNS metrics",
            find("prometheus"),
            find("coredns"),
            9153,
        ),
        (
            "another namespace to local-path-provisioner's other port",
            find("untrusted"),
            find("local-path-provisioner"),
            9000,
        ),
    ];
    let mut wrong = Vec::new();
    for (what, src, dst, port) in &ok {
        if !allowed(policies, src, dst, *port) {
            wrong.push(format!(
                "denied but needed: {what} ({} -> {}:{port})",
                src.name, dst.name
            ));
        }
    }
    for (what, src, dst, port) in &denied {
        if allowed(policies, src, dst, *port) {
            wrong.push(format!(
                "allowed but isolated by CIS 5.3.2: {what} ({} -> {}:{port})",
                src.name, dst.name
            ));
        }
    }
    assert!(wrong.is_empty(), "{era}:\n{}", wrong.join("\n"));
}

fn read_policies(fleet: &Fleet, host: &str, files: &[&str]) -> Vec<Value> {
    files
        .iter()
        .flat_map(|f| {
            documents(
                &fleet
                    .read(host, &format!("/var/lib/rancher/k3s/server/manifests/{f}"))
                    .unwrap_or_else(|| panic!("{f} on {host}")),
            )
        })
        .collect()
}

const PSA_FILES: &[&str] = &["cis-network-policies.yaml"];
const PSP_FILES: &[&str] = &["policy.yaml", "cis-network-allowances.yaml"];

/// The fleet's API state: the nodes as `k3s kubectl get nodes` lists them.
fn api_nodes(fleet: &Fleet) -> std::path::PathBuf {
    fleet.host_dir("psa").join("../../api/nodes")
}

/// By default (`cis_netpol_node_cidrs: auto`) the policies admit the nodes
/// the cluster's API lists, each by its flannel address and InternalIP: every
/// flow k3s needs works and other namespaces' pods stay out, in both eras.
#[test]
fn the_policies_allow_what_k3s_needs_and_isolate_namespaces_in_both_eras() {
    let fleet = Fleet::up(&["psa:server:v1.30.6+k3s1", "psp:server:v1.24.17+k3s1"]);
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let psa = read_policies(&fleet, "psa", PSA_FILES);
    check_matrix("PSA era", &psa, 42);
    check_matrix("PSP era", &read_policies(&fleet, "psp", PSP_FILES), 42);
    let text = fleet
        .read(
            "psa",
            "/var/lib/rancher/k3s/server/manifests/cis-network-policies.yaml",
        )
        .unwrap();
    for source in [
        "10.42.0.0/32",
        "10.42.1.0/32",
        "127.0.1.1/32",
        "127.0.1.2/32",
    ] {
        assert!(
            text.contains(&format!("cidr: \"{source}\"")),
            "{source}:\n{text}"
        );
    }
    assert!(!text.contains("10.42.0.0/16"), "{text}");
    // The operator may still choose the pod network as a whole: the
    // evaluator sees every pod admitted, which is why it is not the default.
    let run = fleet.apply(&[
        "--limit",
        "psa",
        "-e",
        r#"{"cis_netpol_node_cidrs": ["10.42.0.0/16"]}"#,
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let wide = read_policies(&fleet, "psa", PSA_FILES);
    assert!(allowed(&wide, &find("untrusted"), &find("web"), 8080));
}

/// A cluster with `cluster-cidr: 10.52.0.0/16`: the nodes' pod CIDRs are in
/// it, so are the admitted addresses, and the matrix holds in that network.
/// A node that joins changes the policies on the next run (drift in check
/// mode first); with the API down nothing is written and the task says why.
#[test]
fn a_custom_cluster_cidr_and_a_new_node_follow_the_cluster() {
    let fleet = Fleet::up(&["psa:server:v1.30.6+k3s1", "psp:server:v1.24.17+k3s1"]);
    std::fs::write(
        api_nodes(&fleet),
        "10.52.0.0/24 127.0.1.1 10.52.1.0/24 127.0.1.2 \n",
    )
    .unwrap();
    // As k3s-ansible writes it: the cluster's network in config.yaml.
    for host in ["psa", "psp"] {
        let config = fleet.path(host, "/etc/rancher/k3s/config.yaml");
        std::fs::create_dir_all(config.parent().unwrap()).unwrap();
        std::fs::write(
            &config,
            "cluster-cidr: 10.52.0.0/16\nservice-cidr: 10.53.0.0/16\n",
        )
        .unwrap();
    }
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    check_matrix(
        "PSA era, 10.52/16",
        &read_policies(&fleet, "psa", PSA_FILES),
        52,
    );
    check_matrix(
        "PSP era, 10.52/16",
        &read_policies(&fleet, "psp", PSP_FILES),
        52,
    );
    assert!(
        !read_policies(&fleet, "psa", PSA_FILES)
            .iter()
            .any(|p| serde_yaml::to_string(p).unwrap().contains("10.42.")),
        "nothing of the default network is left"
    );
    let check = fleet.apply(&["--check"]);
    assert_eq!(check.code, 0, "no drift after apply: {}", check.all());

    // A third node joins: check mode shows the drift, apply admits it.
    std::fs::write(
        api_nodes(&fleet),
        "10.52.0.0/24 127.0.1.1 10.52.1.0/24 127.0.1.2 10.52.2.0/24 127.0.1.3 \n",
    )
    .unwrap();
    let check = fleet.apply(&["--check", "--limit", "psa"]);
    assert_eq!(check.code, 2, "drift: {}", check.all());
    assert_eq!(check.count("psa", "changed"), 1, "{}", check.all());
    let run = fleet.apply(&["--limit", "psa"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let policies = fleet
        .read(
            "psa",
            "/var/lib/rancher/k3s/server/manifests/cis-network-policies.yaml",
        )
        .unwrap();
    assert!(policies.contains("cidr: \"10.52.2.0/32\""), "{policies}");

    // The API does not answer: check mode cannot judge the policy (unknown,
    // which is drift, not "no drift"), apply refuses to write it (failed);
    // the file stays as it was, and both say why.
    std::fs::write(
        fleet.host_dir("psa").join("state/down_until"),
        "9000000000000000000\n",
    )
    .unwrap();
    for (mode, code, status) in [("--check", 2, "unknown"), ("--diff", 3, "failed")] {
        let run = fleet.apply(&["--limit", "psa", mode]);
        assert_eq!(run.code, code, "{mode}: {}", run.all());
        assert!(
            run.stdout
                .contains(&format!("{status}: [psa] CIS NetworkPolicies"))
                && run
                    .stdout
                    .contains("are unknown: the cluster's API did not answer"),
            "{mode}: {}",
            run.all()
        );
        if mode == "--check" {
            assert!(
                run.stdout.contains(
                    "CIS NetworkPolicies (cis-network-policies.yaml, k3s >= 1.25): unknown on 1 (psa)"
                ),
                "the task summary says unknown, not would change: {}",
                run.all()
            );
        }
        let now = fleet
            .read(
                "psa",
                "/var/lib/rancher/k3s/server/manifests/cis-network-policies.yaml",
            )
            .unwrap();
        assert_eq!(now, policies, "{mode}: untouched");
    }
}

/// The evaluator itself: isolation only once selected, ipBlock except,
/// ports, and both selectors in one peer.
#[test]
fn the_evaluator_follows_kubernetes_semantics() {
    let p = documents(
        "kind: NetworkPolicy\nmetadata: {name: a, namespace: default}\nspec:\n  podSelector: {matchLabels: {app: web}}\n  ingress:\n  - from:\n    - ipBlock: {cidr: 10.42.0.0/16, except: [10.42.1.0/24]}\n    ports: [{port: 8080}]\n  - from:\n    - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: shop}}\n      podSelector: {matchLabels: {app: nope}}\n",
    );
    let web = find("web");
    assert!(
        allowed(&p, &find("prometheus"), &web, 8080),
        "10.42.0.7 in the block"
    );
    assert!(
        !allowed(&p, &find("prometheus"), &web, 9090),
        "another port"
    );
    assert!(
        !allowed(&p, &find("untrusted"), &web, 8080),
        "10.42.1.7 excepted; label mismatch"
    );
    assert!(
        allowed(&p, &find("untrusted"), &find("coredns"), 53),
        "not selected: not isolated"
    );
}
