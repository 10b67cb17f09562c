//! Check mode for CI: exact drift detection, diffs, exit codes, JSON and
//! JUnit reports, host selection, and secrets that never leak.

mod common;

use common::Fleet;

const V130: &str = "v1.30.6+k3s1";
const V124: &str = "v1.24.17+k3s1";

fn mixed_fleet() -> Fleet {
    Fleet::up(&[
        &format!("s1:server:{V130}"),
        &format!("a1:agent:{V130}"),
        &format!("a2:agent:{V124}"),
    ])
}

#[test]
fn check_reports_drift_without_touching_anything_then_no_drift_after_apply() {
    let fleet = mixed_fleet();
    let before: Vec<_> = ["s1", "a1", "a2"]
        .iter()
        .map(|h| fleet.snapshot(h))
        .collect();

    let check = fleet.apply(&["--check", "--diff"]);
    assert_eq!(check.code, 2, "drift must exit 2: {}", check.all());
    for host in ["s1", "a1", "a2"] {
        assert!(check.count(host, "changed") > 0, "{}", check.all());
        assert!(
            fleet.restarts(host).is_empty(),
            "check mode restarted {host}"
        );
    }
    assert!(
        check
            .stdout
            .contains("would change: [s1] handler restart k3s"),
        "handlers that would run: {}",
        check.all()
    );
    assert!(
        check
            .stdout
            .contains("+++ after: /var/lib/rancher/k3s/server/psa.yaml"),
        "{}",
        check.all()
    );
    assert!(
        check.stdout.contains("vm.overcommit_memory (live): 0 → 1"),
        "{}",
        check.all()
    );
    let after: Vec<_> = ["s1", "a1", "a2"]
        .iter()
        .map(|h| fleet.snapshot(h))
        .collect();
    for (b, a) in before.iter().zip(&after) {
        assert!(b == a, "check mode changed a host's files");
    }

    let apply = fleet.apply(&[]);
    assert_eq!(apply.code, 0, "{}", apply.all());
    let check = fleet.apply(&["--check"]);
    assert_eq!(check.code, 0, "no drift after apply: {}", check.all());
    for host in ["s1", "a1", "a2"] {
        assert_eq!(check.count(host, "changed"), 0);
    }

    // A hand edit on one node is drift on that node only, with a diff that shows it.
    let path = fleet.path("a1", "/etc/sysctl.d/90-kubelet.conf");
    std::fs::write(
        &path,
        std::fs::read_to_string(&path)
            .unwrap()
            .replace("kernel.panic=10", "kernel.panic=0"),
    )
    .unwrap();
    let drift = fleet.apply(&["--check", "--diff"]);
    assert_eq!(drift.code, 2, "{}", drift.all());
    assert_eq!(drift.count("a1", "changed"), 1, "{}", drift.all());
    assert_eq!(drift.count("s1", "changed"), 0, "{}", drift.all());
    assert_eq!(drift.count("a2", "changed"), 0, "{}", drift.all());
    assert!(
        drift.stdout.contains("-kernel.panic=0") && drift.stdout.contains("+kernel.panic=10"),
        "{}",
        drift.all()
    );
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("kernel.panic=0"),
        "check mode repaired the file"
    );
}

#[test]
fn reports_parse_and_secrets_never_appear() {
    let fleet = mixed_fleet();
    let token = "K10f00dcafe::server:topsecret-token-value";
    let password = "hunter2-db-password";
    let junit = fleet.dir.join("report.xml");
    let extra = format!("k3s_token={token} db_password={password}");
    let json = fleet.apply(&[
        "--check",
        "--diff",
        "--format",
        "json",
        "--junit",
        junit.to_str().unwrap(),
        "-e",
        &extra,
    ]);
    assert_eq!(json.code, 2, "{}", json.all());
    let doc: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON document");
    assert_eq!(doc["exit_code"], 2);
    assert!(doc["check"].as_bool().unwrap());
    let events = doc["events"].as_array().unwrap();
    let sysctl = events
        .iter()
        .find(|e| e["host"] == "a2" && e["task"].as_str().unwrap().contains("Kernel parameters"))
        .expect("sysctl event");
    assert_eq!(sysctl["status"], "changed");
    // a2 runs k3s 1.24: its benchmark (k3s-cis-1.24) numbers protect-kernel-defaults 4.2.6.
    assert_eq!(sysctl["benchmark"], "k3s-cis-1.24");
    assert_eq!(sysctl["cis"], serde_json::json!(["4.2.6"]));
    assert!(sysctl["duration_ms"].is_u64());
    for host in ["s1", "a1", "a2"] {
        assert!(doc["recap"][host]["changed"].as_u64().unwrap() > 0);
    }

    let xml = std::fs::read_to_string(&junit).expect("junit written");
    let tree = roxmltree::Document::parse(&xml).expect("JUnit is well-formed XML");
    let cases: Vec<_> = tree
        .descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .collect();
    assert_eq!(cases.len(), events.len(), "one testcase per host x task");
    let drift = cases
        .iter()
        .filter(|c| {
            c.children()
                .any(|n| n.has_tag_name("failure") && n.attribute("type") == Some("drift"))
        })
        .count();
    assert!(drift > 0, "drift is a failure in check mode");
    assert!(cases.iter().any(|c| c.attribute("classname") == Some("a2")));

    // Apply for real, with diffs, then a failing play that handles a password.
    // khard writes its flags to a drop-in and never a token: the node's own
    // config.yaml (with its token) stays as it was.
    let own = fleet.path("s1", "/etc/rancher/k3s/config.yaml");
    std::fs::create_dir_all(own.parent().unwrap()).unwrap();
    std::fs::write(&own, format!("token: {token}\ncluster-init: true\n")).unwrap();
    let apply = fleet.apply(&["--diff", "-v", "-e", &extra]);
    assert_eq!(apply.code, 0, "{}", apply.all());
    assert!(
        !fleet
            .read("s1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .unwrap()
            .contains(token),
        "khard writes no token"
    );
    assert_eq!(
        std::fs::read_to_string(&own).unwrap(),
        format!("token: {token}\ncluster-init: true\n"),
        "the operator's config.yaml is untouched"
    );
    let play = format!(
        "{}/tests/fixtures/secret-play/site.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let secret_run = fleet.khard(&[
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        &play,
        "--diff",
        "-v",
        "-e",
        &extra,
    ]);
    assert_eq!(secret_run.code, 3, "{}", secret_run.all());
    assert!(
        secret_run.stdout.contains("[redacted]"),
        "{}",
        secret_run.all()
    );
    assert!(
        fleet
            .read("a1", "/etc/rancher/app.conf")
            .unwrap()
            .contains(password)
    );
    assert_eq!(
        fleet.mode("a1", "/etc/rancher/app.conf"),
        0o600,
        "a file holding a secret is owner-only"
    );
    let junit_text = std::fs::read_to_string(&junit).unwrap();
    for (what, text) in [
        ("json stdout", json.stdout.as_str()),
        ("json stderr", json.stderr.as_str()),
        ("junit", junit_text.as_str()),
        ("apply stdout", apply.stdout.as_str()),
        ("apply stderr", apply.stderr.as_str()),
        ("secret play stdout", secret_run.stdout.as_str()),
        ("secret play stderr", secret_run.stderr.as_str()),
    ] {
        assert!(
            !text.contains(token) && !text.contains("topsecret"),
            "token leaked in {what}"
        );
        assert!(
            !text.contains(password),
            "password leaked in {what}:\n{text}"
        );
    }
}

#[test]
fn limit_touches_only_the_selected_hosts() {
    let fleet = mixed_fleet();
    let listed = fleet.apply(&["--limit", "agent:!a2", "--list-hosts"]);
    assert_eq!(listed.code, 0, "{}", listed.all());
    assert!(
        listed.stdout.contains("a1")
            && !listed.stdout.contains("a2")
            && !listed.stdout.contains("s1")
    );
    let before_s1 = fleet.snapshot("s1");
    let before_a2 = fleet.snapshot("a2");
    let run = fleet.apply(&["--limit", "agent:!a2"]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        run.recap("s1").is_empty() && run.recap("a2").is_empty(),
        "{}",
        run.all()
    );
    assert!(
        fleet
            .read("a1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .is_some()
    );
    assert_eq!(fleet.snapshot("s1"), before_s1);
    assert_eq!(fleet.snapshot("a2"), before_a2);
    assert!(
        fleet.sshd_log("s1").matches("Accepted publickey").count() == 0,
        "s1 was contacted"
    );
    assert!(
        fleet.sshd_log("a1").contains("Accepted publickey"),
        "a1 was not contacted"
    );

    // Tags: only the kernel parameters on a2 (the config task is tagged kernel too, and skipped here).
    let tagged = fleet.apply(&["--limit", "a2", "--tags", "kernel", "--skip-tags", "config"]);
    assert_eq!(tagged.code, 0, "{}", tagged.all());
    assert!(fleet.read("a2", "/etc/sysctl.d/90-kubelet.conf").is_some());
    assert!(
        fleet
            .read("a2", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .is_none(),
        "--skip-tags config wrote the config"
    );
    let by_control = fleet.apply(&["--limit", "a2", "--tags", "4.2.6", "--list-tasks"]);
    assert!(
        by_control.stdout.contains("Kernel parameters")
            && !by_control.stdout.contains("Server kubeconfigs"),
        "{}",
        by_control.all()
    );
}
