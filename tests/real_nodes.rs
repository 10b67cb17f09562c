//! The built-in CIS playbook on real Debian 12 nodes (qemu VMs, see
//! tests/vm/mod.rs for what is real and what is a stand-in): the real
//! kernel's /proc/sys, the real `sysctl`, systemd doing the restarts, dash
//! as /bin/sh. The simulated fleet cannot show what these do differently.

mod common;
mod vm;

use vm::Vms;

const V130: &str = "v1.30.6+k3s1";
const V124: &str = "v1.24.17+k3s1";

/// The kernel parameters the role writes, with their wanted values.
const SYSCTLS: &[(&str, &str)] = &[
    ("vm.panic_on_oom", "0"),
    ("vm.overcommit_memory", "1"),
    ("kernel.panic", "10"),
    ("kernel.panic_on_oops", "1"),
    ("kernel.keys.root_maxkeys", "1000000"),
    ("kernel.keys.root_maxbytes", "25000000"),
];

/// The live value of each of the role's sysctls on a node, read by the real `sysctl`.
fn live(vms: &Vms, node: &str) -> Vec<(String, String)> {
    let keys: Vec<&str> = SYSCTLS.iter().map(|(k, _)| *k).collect();
    let out = vms.sh(node, &format!("sysctl -n {}", keys.join(" ")));
    keys.iter()
        .zip(out.lines())
        .map(|(k, v)| (k.to_string(), v.trim().to_owned()))
        .collect()
}

fn wanted() -> Vec<(String, String)> {
    SYSCTLS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Seconds since the epoch of the last k3s start on a node.
fn last_start(vms: &Vms, node: &str) -> f64 {
    let starts = vms.k3s_starts(node);
    let line = starts.last().expect("k3s started at boot");
    line.split_whitespace().next().unwrap().parse().unwrap()
}

#[test]
fn the_cis_playbook_converges_a_real_server_and_agents_and_repairs_live_drift() {
    let vms = Vms::boot(&[
        &format!("s1:server:{V130}"),
        &format!("a1:agent:{V130}"),
        &format!("a2:agent:{V130}"),
    ]);
    let inv = vms.inventory("");
    let nodes = ["s1", "a1", "a2"];
    let starts_before: Vec<usize> = nodes.iter().map(|n| vms.k3s_starts(n).len()).collect();

    // First apply: exit 0, the real kernel's live values are the file's.
    let run = vms.khard(&inv, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    for node in nodes {
        assert_eq!(live(&vms, node), wanted(), "{node}: live values");
        let file = vms.sh(node, "cat /etc/sysctl.d/90-kubelet.conf");
        for (k, v) in SYSCTLS {
            assert!(
                file.contains(&format!("{k} = {v}")) || file.contains(&format!("{k}={v}")),
                "{node}: {file}"
            );
        }
        assert!(run.recap(node).contains("failed=0"), "{}", run.all());
    }
    // Each node's own unit restarted once, by the real systemd, after the sysctls were live.
    for (i, node) in nodes.iter().enumerate() {
        let starts = vms.k3s_starts(node);
        assert_eq!(starts.len(), starts_before[i] + 1, "{node}: {starts:?}");
        let unit_arg = if *node == "s1" { " server" } else { " agent" };
        assert!(
            starts.last().unwrap().contains(unit_arg),
            "{node}: {starts:?}"
        );
        let written: f64 = vms
            .sh(node, "stat -c %Y /etc/sysctl.d/90-kubelet.conf")
            .trim()
            .parse()
            .unwrap();
        assert!(
            last_start(&vms, node) >= written,
            "{node}: restarted before the sysctls"
        );
    }
    assert!(vms.sh("s1", "systemctl is-active k3s").trim() == "active");

    // Second apply: nothing changes, nothing restarts; check mode agrees.
    let again = vms.khard(&inv, &[]);
    assert_eq!(again.code, 0, "{}", again.all());
    for (i, node) in nodes.iter().enumerate() {
        assert!(again.recap(node).contains("changed=0"), "{}", again.all());
        assert_eq!(
            vms.k3s_starts(node).len(),
            starts_before[i] + 1,
            "{node} restarted"
        );
    }
    let check = vms.khard(&inv, &["--check"]);
    assert_eq!(check.code, 0, "{}", check.all());

    // A value changed live with the real sysctl is drift, and apply repairs it.
    vms.sh("a1", "sysctl -qw vm.overcommit_memory=0");
    let drift = vms.khard(&inv, &["--check", "-v"]);
    assert_eq!(drift.code, 2, "{}", drift.all());
    assert!(
        drift.stdout.contains("vm.overcommit_memory (live): 0 → 1"),
        "{}",
        drift.all()
    );
    assert!(drift.recap("s1").contains("changed=0"), "{}", drift.all());
    let repair = vms.khard(&inv, &["--limit", "a1"]);
    assert_eq!(repair.code, 0, "{}", repair.all());
    assert_eq!(live(&vms, "a1"), wanted());

    // A value the real kernel refuses fails the task with the kernel's message.
    let bad = vms.dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "- hosts: a2\n  tasks:\n    - name: a value the kernel refuses\n      sysctl:\n        dest: /etc/sysctl.d/99-bad.conf\n        values: { kernel.panic: abc }\n",
    )
    .unwrap();
    let refused = vms.khard(&inv, &[bad.to_str().unwrap()]);
    assert_eq!(refused.code, 3, "{}", refused.all());
    assert!(
        refused
            .stdout
            .contains("failed: [a2] a value the kernel refuses")
            && refused.stdout.contains("Invalid argument"),
        "{}",
        refused.all()
    );
    assert_eq!(
        vms.sh("a2", "sysctl -n kernel.panic").trim(),
        "10",
        "the live value is untouched"
    );
}

/// A PodSecurityPolicy-era server (k3s 1.24), and the README's first command
/// (`khard apply --check -i inventories/localhost.yaml`) run ON the real
/// node: the live values it reports are the kernel's.
#[test]
fn a_psp_era_server_converges_and_the_readme_check_reads_the_real_kernel() {
    let vms = Vms::boot(&[&format!("old:server:{V124}")]);

    // The README's first command, on the node itself, before hardening.
    vms.copy(
        "old",
        std::path::Path::new(env!("CARGO_BIN_EXE_khard")),
        "/usr/local/bin/khard",
    );
    let localhost = vm::repo().join("inventories/localhost.yaml");
    vms.copy("old", &localhost, "/root/localhost.yaml");
    // Its pinned v1.30.6 is for a machine without k3s: this node answers
    // `k3s --version` with v1.24, and the version that runs decides.
    let pinned = vms.ssh("old", "cd /root && khard apply --check -i localhost.yaml");
    let stdout = String::from_utf8_lossy(&pinned.stdout);
    assert_eq!(pinned.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "k3s_version is pinned to v1.30.6+k3s1 for this host, but the node runs k3s {V124}"
        )),
        "{stdout}"
    );
    // -v shows each difference (the live values) under its task.
    let readme = vms.ssh(
        "old",
        &format!("cd /root && khard apply --check -v -i localhost.yaml -e k3s_version={V124}"),
    );
    let stdout = String::from_utf8_lossy(&readme.stdout);
    assert_eq!(readme.status.code(), Some(2), "drift expected: {stdout}");
    assert!(!stdout.contains("(missing)"), "{stdout}");
    for (key, value) in live(&vms, "old") {
        let want = SYSCTLS.iter().find(|(k, _)| *k == key).unwrap().1;
        if value != want {
            assert!(
                stdout.contains(&format!("{key} (live): {value} → {want}")),
                "{key} is {value} on the node: {stdout}"
            );
        }
    }

    let inv = vms.inventory("");
    let run = vms.khard(&inv, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(live(&vms, "old"), wanted());
    let policy = vms.sh(
        "old",
        "cat /var/lib/rancher/k3s/server/manifests/policy.yaml",
    );
    assert!(policy.contains("kind: PodSecurityPolicy"), "{policy}");
    assert_eq!(
        vms.k3s_starts("old").len(),
        2,
        "booted, then restarted once"
    );
    let again = vms.khard(&inv, &[]);
    assert!(again.recap("old").contains("changed=0"), "{}", again.all());
    let check = vms.khard(&inv, &["--check"]);
    assert_eq!(check.code, 0, "{}", check.all());

    // After hardening, the README's command on the node reports no kernel drift.
    let after = vms.ssh(
        "old",
        "cd /root && khard apply --check -v -i localhost.yaml",
    );
    let stdout = String::from_utf8_lossy(&after.stdout);
    assert!(!stdout.contains("(live)"), "{stdout}");

    // The compliance report on the node reads the real kernel: the 1.24
    // benchmark's protect-kernel-defaults control (4.2.6) passes after the
    // hardening, and fails once a protected parameter is changed live.
    let verdict_426 = || {
        let out = vms.ssh(
            "old",
            "cd /root && khard report --format json -i localhost.yaml",
        );
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("report JSON: {e}: {}", String::from_utf8_lossy(&out.stderr))
        });
        let node = &doc["nodes"][0];
        assert_eq!(node["benchmark"], "k3s-cis-1.24", "{node}");
        let c = node["controls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == "4.2.6")
            .unwrap()
            .clone();
        (
            c["verdict"].as_str().unwrap().to_owned(),
            c["found"].to_string(),
        )
    };
    assert_eq!(verdict_426().0, "pass");
    vms.sh("old", "sysctl -qw vm.overcommit_memory=0");
    let (verdict, found) = verdict_426();
    assert_eq!(verdict, "fail", "{found}");
    assert!(found.contains("vm.overcommit_memory=0, wants 1"), "{found}");
    vms.sh("old", "sysctl -qw vm.overcommit_memory=1");
    // A sysctl.d file that sorts after khard's and sets the value back: the
    // live kernel is right, the next boot (systemd-sysctl, real on this node)
    // is not, and the control says so.
    vms.sh(
        "old",
        "printf 'vm.overcommit_memory = 0\n' > /etc/sysctl.d/99-zz-tuning.conf",
    );
    let (verdict, found) = verdict_426();
    assert_eq!(verdict, "fail", "{found}");
    assert!(
        found.contains(
            "the next boot sets vm.overcommit_memory=0 (/etc/sysctl.d/99-zz-tuning.conf), wants 1"
        ),
        "{found}"
    );
    // The real systemd-sysctl agrees: it sets what the report said.
    vms.sh(
        "old",
        "/lib/systemd/systemd-sysctl && sysctl -n vm.overcommit_memory | grep -qx 0",
    );
    vms.sh(
        "old",
        "rm /etc/sysctl.d/99-zz-tuning.conf && /lib/systemd/systemd-sysctl",
    );
    assert_eq!(verdict_426().0, "pass");
}
