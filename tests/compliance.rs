//! `khard report` as an auditor tries it: nodes hardened by khard, then broken
//! by hand in distinct ways; each break must change exactly the verdicts of
//! the controls it affects, the way the benchmark's own test judges them, and
//! nothing else. Evidence that cannot be read is `unknown`, never `pass`.
//! The HTML page is rendered in a real browser (Debian's headless Chromium).

mod common;

use std::collections::BTreeSet;

use common::{Fleet, control, node, verdicts};

const V130: &str = "v1.30.6+k3s1";
const V124: &str = "v1.24.17+k3s1";
/// Before k3s passed its default TLS ciphers to kube-apiserver (k3s#6725).
const V124_OLD: &str = "v1.24.9+k3s1";
const HOSTS: [&str; 4] = ["s1", "s2", "s3", "a1"];

/// (host, control, verdict before, verdict after) for every control whose verdict changed.
type Changes = BTreeSet<(String, String, String, String)>;

/// A failing control is `fail` when the benchmark scores it and `warn` when
/// not (kube-bench's words): here both read "fail", and
/// `unscored_failures_are_warn` checks the label apart.
fn failing(verdict: &str) -> String {
    if verdict == "warn" { "fail" } else { verdict }.to_owned()
}

fn changes(before: &serde_json::Value, after: &serde_json::Value) -> Changes {
    let mut out = Changes::new();
    for host in HOSTS {
        let (b, a) = (verdicts(before, host), verdicts(after, host));
        for (id, v) in &b {
            if a[id] != *v {
                out.insert((host.into(), id.clone(), failing(v), failing(&a[id])));
            }
        }
    }
    out
}

/// The verdict of a failing control says whether the benchmark scores it.
fn unscored_failures_are_warn(doc: &serde_json::Value, host: &str, id: &str) {
    let c = control(doc, host, id);
    let want = if c["scored"] == true { "fail" } else { "warn" };
    assert_eq!(c["verdict"], want, "{c}");
    assert_eq!(c["label"], want.to_uppercase(), "{c}");
}

fn expect(list: &[(&str, &str, &str, &str)]) -> Changes {
    list.iter()
        .map(|(h, id, a, b)| (h.to_string(), id.to_string(), a.to_string(), b.to_string()))
        .collect()
}

fn found(doc: &serde_json::Value, host: &str, id: &str) -> String {
    control(doc, host, id)["found"].as_str().unwrap().to_owned()
}

#[test]
fn hand_broken_nodes_change_exactly_the_verdicts_they_affect() {
    let fleet = Fleet::up(&[
        &format!("s1:server:{V130}"),
        &format!("s2:server:{V124}"),
        &format!("s3:server:{V124_OLD}"),
        &format!("a1:agent:{V130}"),
        "bare:agent",
    ]);
    // Before any hardening the report already reads evidence, and says so.
    let (_, raw) = fleet.report(&["--limit", "s1,s2,s3,a1"]);
    unscored_failures_are_warn(&raw, "s1", "1.2.17");
    assert_eq!(
        control(&raw, "s1", "1.2.17")["scored"],
        false,
        "k3s-cis-1.10 does not score it"
    );
    unscored_failures_are_warn(&raw, "s2", "1.2.20");
    assert_eq!(found(&raw, "s1", "1.2.17"), "--audit-log-maxage not set");

    let run = fleet.apply(&["--limit", "s1,s2,s3,a1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let (_, base) = fleet.report(&["--limit", "s1,s2,s3,a1"]);
    assert_eq!(node(&base, "s1")["benchmark"], "k3s-cis-1.10");
    assert_eq!(node(&base, "s2")["benchmark"], "k3s-cis-1.24");
    for (host, id) in [
        ("s1", "1.2.17"),
        ("s1", "1.2.18"),
        ("s1", "1.1.13"),
        ("s1", "5.1.5"),
        ("s1", "5.1.1"),
        ("s1", "1.2.27"),
        ("s2", "1.2.20"),
        ("s2", "4.2.6"),
        ("s2", "1.2.30"),
        ("a1", "4.2.5"),
        // The newer benchmarks' items khard now sets: pod PID limit,
        // DenyServiceExternalIPs (k3s-cis-1.10 wants it set, k3s-cis-1.24 unset),
        // apiserver ciphers on a release that did not pass them itself.
        ("s1", "4.2.13"),
        ("a1", "4.2.13"),
        ("s1", "1.2.3"),
        ("s2", "1.2.3"),
        ("s2", "1.2.32"),
        ("s3", "1.2.32"),
    ] {
        assert_eq!(
            control(&base, host, id)["verdict"],
            "pass",
            "{host} {id} after the apply: {}",
            control(&base, host, id)
        );
    }
    assert_eq!(
        found(&base, "s1", "1.2.17"),
        "--audit-log-maxage=30 (kube-apiserver-arg in /etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml)"
    );
    assert!(found(&base, "s2", "1.2.32").ends_with("(k3s default)"));
    assert!(
        found(&base, "s3", "1.2.32")
            .ends_with("(kube-apiserver-arg in /etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml)"),
        "{}",
        found(&base, "s3", "1.2.32")
    );
    // Every control of the benchmark is listed once.
    for (host, total) in [("s1", 130), ("s2", 125), ("s3", 125), ("a1", 130)] {
        let ids: BTreeSet<String> = verdicts(&base, host).into_keys().collect();
        assert_eq!(ids.len(), total, "{host}");
        assert_eq!(node(&base, host)["totals"]["total"], total);
    }
    let report = |what: &str| {
        let (_, doc) = fleet.report(&["--limit", "s1,s2,s3,a1"]);
        eprintln!("after: {what}");
        doc
    };
    let config = fleet.path("s1", "/etc/rancher/k3s/config.yaml");
    let dropin = fleet.path("s1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml");
    let original_dropin = std::fs::read_to_string(&dropin).unwrap();

    // 1. A comment in config.yaml changes nothing.
    std::fs::write(
        &config,
        "# managed by hand, see the wiki\nnode-label: [team=infra]\n",
    )
    .unwrap();
    assert_eq!(changes(&base, &report("comment")), Changes::new());

    // 2. Weaker values in config.yaml: khard's drop-in comes after it and
    //    wins (k3s's order), so the node stays compliant, and the report says so.
    std::fs::write(
        &config,
        "protect-kernel-defaults: false\nkube-apiserver-arg:\n  - 'audit-log-maxage=1'\n",
    )
    .unwrap();
    assert_eq!(
        changes(&base, &report("weaker config.yaml")),
        Changes::new()
    );
    std::fs::remove_file(&config).unwrap();

    // 3. A flag removed from khard's drop-in.
    let without: String = original_dropin
        .lines()
        .filter(|l| !l.contains("audit-log-maxbackup"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&dropin, without).unwrap();
    let doc = report("removed flag");
    assert_eq!(
        changes(&base, &doc),
        expect(&[("s1", "1.2.18", "pass", "fail")])
    );
    assert_eq!(found(&doc, "s1", "1.2.18"), "--audit-log-maxbackup not set");
    std::fs::write(&dropin, &original_dropin).unwrap();

    // 4. A drop-in that sorts after khard's and weakens one flag.
    let local = fleet.path("s1", "/etc/rancher/k3s/config.yaml.d/99-zz-local.yaml");
    std::fs::write(&local, "kube-apiserver-arg+:\n  - 'audit-log-maxage=1'\n").unwrap();
    let doc = report("weakening drop-in");
    assert_eq!(
        changes(&base, &doc),
        expect(&[("s1", "1.2.17", "pass", "fail")])
    );
    assert_eq!(
        found(&doc, "s1", "1.2.17"),
        "--audit-log-maxage=1 (kube-apiserver-arg in /etc/rancher/k3s/config.yaml.d/99-zz-local.yaml)"
    );
    html_renders_in_chromium_with_the_json_totals(&fleet, &doc);
    std::fs::remove_file(&local).unwrap();

    // 4b. A drop-in khard cannot read (a link; k3s reads it): every verdict
    //     that depends on the configuration becomes unknown, none stays pass.
    let linked = fleet.path("s1", "/etc/rancher/k3s/config.yaml.d/98-linked.yaml");
    std::os::unix::fs::symlink("/etc/hostname", &linked).unwrap();
    let doc = report("linked drop-in");
    let changed = changes(&base, &doc);
    assert!(changed.len() > 20, "{changed:?}");
    for (host, id, _, after) in &changed {
        assert_eq!((host.as_str(), after.as_str()), ("s1", "unknown"), "{id}");
    }
    assert!(
        control(&doc, "s1", "1.2.17")["why"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{}",
        control(&doc, "s1", "1.2.17")
    );
    // The apply refuses too: its conflict check would be blind.
    let check = fleet.apply(&["--limit", "s1", "--check"]);
    assert_eq!(check.code, 3, "{}", check.all());
    assert!(
        check.stdout.contains("could not be read"),
        "{}",
        check.all()
    );
    std::fs::remove_file(&linked).unwrap();

    // 4c. A newline in a config value cannot forge a line of the text report.
    std::fs::write(
        &config,
        "kube-apiserver-arg:\n  - \"profiling=false\\n[PASS] 9.9.9 forged\"\n",
    )
    .unwrap();
    let text = fleet.run("report", &["--limit", "s1"]);
    assert!(!text.stdout.contains("\n[PASS] 9.9.9"), "{}", text.stdout);
    assert!(
        text.stdout
            .contains("profiling=false\\n[PASS] 9.9.9 forged"),
        "{}",
        text.stdout
    );
    std::fs::remove_file(&config).unwrap();

    // 5. A file mode opened up.
    let admin = fleet.path("s1", "/var/lib/rancher/k3s/server/cred/admin.kubeconfig");
    chmod(&admin, 0o644);
    let doc = report("file mode");
    assert_eq!(
        changes(&base, &doc),
        expect(&[("s1", "1.1.13", "pass", "fail")])
    );
    assert!(found(&doc, "s1", "1.1.13").contains("admin.kubeconfig: 644 root:root"));
    chmod(&admin, 0o600);

    // 6. A kernel parameter changed live: the 1.24 benchmark's protect-kernel-defaults
    //    control fails (the kubelet refuses to start on such a kernel); the 1.30
    //    benchmark has no such control, and its node says so in a note.
    for host in ["s1", "s2"] {
        std::fs::write(fleet.path(host, "/proc/sys/vm/overcommit_memory"), "0\n").unwrap();
    }
    let doc = report("sysctl");
    assert_eq!(
        changes(&base, &doc),
        expect(&[("s2", "4.2.6", "pass", "fail")])
    );
    assert!(found(&doc, "s2", "4.2.6").contains("vm.overcommit_memory=0, wants 1"));
    let notes = node(&doc, "s1")["notes"].to_string();
    assert!(notes.contains("vm.overcommit_memory=0"), "{notes}");
    for host in ["s1", "s2"] {
        std::fs::write(fleet.path(host, "/proc/sys/vm/overcommit_memory"), "1\n").unwrap();
    }

    // 7. A ClusterRoleBinding to cluster-admin that the benchmark does not list
    //    fails 5.1.1 where the benchmark scores it (k3s-cis-1.10); in
    //    k3s-cis-1.24 it is a human check.
    let bindings = fleet.dir.join("api/cluster-admin-bindings");
    std::fs::write(&bindings, "ops-team-admin\n").unwrap();
    let doc = report("cluster-admin binding");
    assert_eq!(
        changes(&base, &doc),
        expect(&[("s1", "5.1.1", "pass", "fail")])
    );
    assert!(found(&doc, "s1", "5.1.1").ends_with("ops-team-admin"));
    std::fs::remove_file(&bindings).unwrap();

    // 8. k3s stopped on s1: what needs the API is unknown there, never pass;
    //    what its configuration says still counts.
    std::fs::write(
        fleet.host_dir("s1").join("state/down_until"),
        "9000000000000000000\n",
    )
    .unwrap();
    let doc = report("k3s stopped");
    assert_eq!(
        changes(&base, &doc),
        expect(&[
            ("s1", "5.1.1", "pass", "unknown"),
            ("s1", "5.1.5", "pass", "unknown")
        ])
    );
    assert!(
        control(&doc, "s1", "5.1.5")["why"]
            .as_str()
            .unwrap()
            .contains("did not answer")
    );
    std::fs::remove_file(fleet.host_dir("s1").join("state/down_until")).unwrap();
    assert_eq!(changes(&base, &report("restored")), Changes::new());

    // 9. Weaker role variables: judged by the benchmark's thresholds (>= 30,
    //    >= 10, encryption configured), not by equality with khard's variables.
    let run = fleet.apply(&[
        "--limit",
        "s1,s2,s3,a1",
        "-e",
        "cis_audit_log_maxage=1 cis_audit_log_maxbackup=0 cis_secrets_encryption=false",
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    let doc = report("weak variables");
    assert_eq!(
        changes(&base, &doc),
        expect(&[
            ("s1", "1.2.17", "pass", "fail"),
            ("s1", "1.2.18", "pass", "fail"),
            ("s1", "1.2.27", "pass", "fail"),
            ("s1", "1.2.28", "pass", "fail"),
            ("s2", "1.2.20", "pass", "fail"),
            ("s2", "1.2.21", "pass", "fail"),
            ("s2", "1.2.30", "pass", "fail"),
            ("s2", "1.2.31", "pass", "fail"),
            ("s3", "1.2.20", "pass", "fail"),
            ("s3", "1.2.21", "pass", "fail"),
            ("s3", "1.2.30", "pass", "fail"),
            ("s3", "1.2.31", "pass", "fail"),
        ])
    );

    // 9b. What runs: the journal holds the arguments k3s gave the apiserver at
    //     its last start, from before the hardening (a rollout stopped before
    //     its restart). Those flags are judged, never the files' next start,
    //     and the report says what that start would bring.
    let run = fleet.apply(&["--limit", "s1,s2,s3,a1"]);
    assert_eq!(run.code, 0, "{}", run.all());
    let journal = fleet.host_dir("s1").join("state/journal.k3s");
    std::fs::write(
        &journal,
        "time=\"2026-12-07T09:58:01Z\" level=info msg=\"Running kube-apiserver --advertise-address=10.0.0.11 --advertise-port=6443 --allow-privileged=true --anonymous-auth=false --api-audiences=https://kubernetes.default.svc.cluster.local,k3s --authorization-mode=Node,RBAC --bind-address=127.0.0.1 --cert-dir=/var/lib/rancher/k3s/server/tls/temporary-certs --client-ca-file=/var/lib/rancher/k3s/server/tls/client-ca.crt --enable-admission-plugins=NodeRestriction --kubelet-certificate-authority=/var/lib/rancher/k3s/server/tls/server-ca.crt --kubelet-client-certificate=/var/lib/rancher/k3s/server/tls/client-kube-apiserver.crt --kubelet-client-key=/var/lib/rancher/k3s/server/tls/client-kube-apiserver.key --profiling=false --secure-port=6444 --service-account-key-file=/var/lib/rancher/k3s/server/tls/service.key --tls-cert-file=/var/lib/rancher/k3s/server/tls/serving-kube-apiserver.crt --tls-private-key-file=/var/lib/rancher/k3s/server/tls/serving-kube-apiserver.key\"\n",
    )
    .unwrap();
    let doc = report("unhardened apiserver still running");
    let changed = changes(&base, &doc);
    assert!(changed.len() >= 3, "{changed:?}");
    for (host, id, before, after) in &changed {
        assert_eq!(
            (host.as_str(), before.as_str(), after.as_str()),
            ("s1", "pass", "fail"),
            "{id}"
        );
    }
    let audit = found(&doc, "s1", "1.2.17");
    assert!(
        audit.starts_with("--audit-log-maxage not set; configured for the next start: --audit-log-maxage=30 (kube-apiserver-arg in /etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml) (not active until k3s restarts)"),
        "{audit}"
    );
    std::fs::remove_file(&journal).unwrap();
    assert_eq!(changes(&base, &report("journal gone")), Changes::new());

    // 10. A host that cannot be reached: listed, every judged control unknown, exit 4.
    let inventory = std::fs::read_to_string(fleet.inventory()).unwrap().replace(
        "    agent:\n      hosts:\n",
        "    agent:\n      hosts:\n        gone: { ansible_host: 127.0.9.9 }\n",
    );
    let with_gone = fleet.dir.join("with-gone.yaml");
    std::fs::write(&with_gone, inventory).unwrap();
    let kh = fleet.known_hosts();
    let run = fleet.khard(&[
        "report",
        "-i",
        with_gone.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--limit",
        "a1,gone",
        "--format",
        "json",
        "-T",
        "2",
    ]);
    assert_eq!(run.code, 4, "{}", run.all());
    let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let gone = node(&doc, "gone");
    assert_eq!(gone["benchmark"], "unknown", "not the newest: {gone}");
    assert_eq!(gone["controls"].as_array().unwrap().len(), 0, "{gone}");
    assert!(gone["notes"].to_string().contains("unreachable"), "{gone}");
    assert_eq!(node(&doc, "a1")["totals"]["fail"], 0);

    // 11. A node without k3s: no benchmark, nothing judged, and the gate fails.
    let (run, doc) = fleet.report(&["--limit", "bare"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let bare = node(&doc, "bare");
    assert_eq!(bare["benchmark"], "unknown", "{bare}");
    assert_eq!(bare["totals"]["pass"], 0, "{bare}");
    assert!(
        bare["notes"].to_string().contains("k3s is not installed"),
        "{bare}"
    );
}

fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// The HTML page of the same fleet, rendered by headless Chromium: the
/// rendered totals are the JSON's, the failing control is there, and the
/// page's security policy blocked nothing (it loads nothing from outside).
fn html_renders_in_chromium_with_the_json_totals(fleet: &Fleet, json: &serde_json::Value) {
    let page = fleet.dir.join("report.html");
    let run = fleet.run(
        "report",
        &[
            "--limit",
            "s1,s2,s3,a1",
            "--format",
            "html",
            "-o",
            page.to_str().unwrap(),
            // 1.2.17 fails unscored (WARN): only this gate fails the run on it.
            "--fail-on",
            "warn",
        ],
    );
    assert_eq!(run.code, 2, "{}", run.all());
    assert!(run.stdout.is_empty(), "-o writes the file only");
    let out = std::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!(
            "--user-data-dir={}",
            fleet.dir.join("chromium").display()
        ))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium is not installed: run scripts/test, which installs it");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("violates"),
        "the page tried to load something: {stderr}"
    );
    let fleet_totals = &json["fleet"];
    for what in [
        "total",
        "pass",
        "fail",
        "warn",
        "accepted",
        "manual",
        "not_applicable",
        "unknown",
    ] {
        let shown = format!("id=\"fleet-{what}\">{}<", fleet_totals[what]);
        assert!(dom.contains(&shown), "rendered {what} is not {shown}");
    }
    let row = dom
        .split("id=\"c-s1-1.2.17\" data-id=\"1.2.17\" data-verdict=\"warn\"")
        .nth(1)
        .expect("the failing (unscored) control is not on the page");
    let row = row.split("</tr>").next().unwrap();
    assert!(row.contains("99-zz-local.yaml"), "what was found is shown");
    // The remediation is on the page, not folded away (a printout has it),
    // and names the khard variable that sets the flag.
    assert!(row.contains("class=\"remediation\"><p>"), "{row}");
    assert!(!row.contains("<details"), "{row}");
    assert!(row.contains("cis_audit_log_maxage (now 30)"), "{row}");
    // Per-section totals, as kube-bench prints them.
    assert!(
        dom.contains("data-section=\"1.2 API Server\""),
        "no section totals"
    );
}

/// Every benchmark khard picks, from cis-1.6 (k3s 1.20) to k3s-cis-2.0 (1.34):
/// before the apply, controls khard remediates fail; after it, every one of
/// them passes (or does not apply, or is the benchmark's human check),
/// judged by the benchmark's test.
#[test]
fn every_benchmark_judges_its_managed_controls_before_and_after_an_apply() {
    let nodes = [
        ("v120", "v1.20.15+k3s1", "cis-1.6"),
        ("v123", "v1.23.17+k3s1", "k3s-cis-1.23"),
        ("v125", "v1.25.16+k3s4", "k3s-cis-1.7"),
        ("v126", "v1.26.15+k3s1", "k3s-cis-1.8"),
        ("v127", "v1.27.16+k3s1", "k3s-cis-1.9"),
        ("v128", "v1.28.15+k3s1", "k3s-cis-1.10"),
        // k3s#12164: v1.32.0-v1.32.3 leave the kubelet's read-only port open.
        ("v1322", "v1.32.2+k3s1", "k3s-cis-1.12"),
        ("v133", "v1.33.5+k3s1", "k3s-cis-1.12"),
        ("v134", "v1.34.1+k3s1", "k3s-cis-2.0"),
    ];
    let mut specs: Vec<String> = nodes
        .iter()
        .map(|(n, v, _)| format!("{n}:server:{v}"))
        .collect();
    specs.push("a134:agent:v1.34.1+k3s1".into());
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = Fleet::up(&specs);
    // Controls a khard task remediates (scored or not: the benchmark's test judges both).
    let managed = |doc: &serde_json::Value, host: &str| -> Vec<(String, String)> {
        node(doc, host)["controls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| !c["tasks"].as_array().unwrap().is_empty())
            .map(|c| {
                (
                    c["id"].as_str().unwrap().to_owned(),
                    c["verdict"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let (_, before) = fleet.report(&[]);
    for (host, _, benchmark) in nodes {
        assert_eq!(node(&before, host)["benchmark"], benchmark, "{host}");
        let failing = managed(&before, host)
            .into_iter()
            .filter(|(_, v)| v == "fail" || v == "warn")
            .count();
        assert!(
            failing > 0,
            "{host}: nothing managed fails before hardening"
        );
    }
    assert_eq!(control(&before, "v1322", "4.2.4")["verdict"], "fail");
    assert_eq!(control(&before, "v133", "4.2.4")["verdict"], "pass");
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 0, "{}", run.all());
    let (_, after) = fleet.report(&[]);
    assert_eq!(
        control(&after, "v1322", "4.2.4")["verdict"],
        "pass",
        "{}",
        control(&after, "v1322", "4.2.4")
    );
    for host in nodes.iter().map(|n| n.0).chain(["a134"]) {
        for (id, verdict) in managed(&after, host) {
            assert!(
                ["pass", "not_applicable", "manual"].contains(&verdict.as_str()),
                "{host} {id}: {verdict} after the apply: {}",
                control(&after, host, &id)
            );
        }
        assert_eq!(
            node(&after, host)["totals"]["fail"],
            node(&after, host)["controls"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["verdict"] == "fail")
                .count()
        );
    }
}
