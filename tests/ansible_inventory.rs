//! khard and ansible-core resolve the same hosts, groups and variables:
//! `ansible-inventory --list/--graph` (ansible-core 2.19 in
//! target/ansible-venv, installed by scripts/test) against
//! `khard inventory` on the fixtures of tests/fixtures/ansible-inventories/
//! (k3s-ansible's current and pre-2023 layouts, the precedence of every
//! variable source, YAML merge keys) and the project's own inventories.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fixture(rel: &str) -> PathBuf {
    root().join("tests/fixtures/ansible-inventories").join(rel)
}

fn ansible(args: &[&str]) -> String {
    let bin = root().join("target/ansible-venv/bin/ansible-inventory");
    assert!(
        bin.exists(),
        "{} is missing: run scripts/test, which installs ansible-core",
        bin.display()
    );
    let home = tempdir();
    let out = Command::new(&bin)
        .args(args)
        .env("ANSIBLE_HOME", &home)
        .env("ANSIBLE_CONFIG", home.join("none.cfg"))
        .env("ANSIBLE_LOCALHOST_WARNING", "false")
        .env("ANSIBLE_INVENTORY_UNPARSED_WARNING", "false")
        .env("PYTHONWARNINGS", "ignore")
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&home);
    assert!(
        out.status.success(),
        "ansible-inventory {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn khard(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .arg("inventory")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "khard inventory {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tempdir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "khard-ansible-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The parts both tools define: every host's variables, and each group's
/// hosts and children.
fn comparable(mut doc: Value) -> Value {
    if let Some(meta) = doc.get_mut("_meta").and_then(Value::as_object_mut) {
        meta.remove("profile");
    }
    doc
}

fn same(args: &[&str]) {
    let a: Value = serde_json::from_str(&ansible(args)).unwrap();
    let k: Value = serde_json::from_str(&khard(args)).unwrap();
    assert_eq!(comparable(k), comparable(a), "{args:?}");
}

#[test]
fn k3s_ansible_layouts_resolve_as_ansible_resolves_them() {
    for inv in ["k3s-ansible/inventory.yml", "k3s-ansible-2022/hosts.ini"] {
        let path = fixture(inv);
        let p = path.to_str().unwrap();
        same(&["-i", p, "--list"]);
        assert_eq!(
            khard(&["-i", p, "--graph"]),
            ansible(&["-i", p, "--graph"]),
            "{inv}"
        );
    }
}

#[test]
fn every_variable_source_ranks_as_in_ansible() {
    let inv = fixture("precedence/inventory/hosts.yaml");
    let playbooks = fixture("precedence/playbooks");
    let (i, p) = (inv.to_str().unwrap(), playbooks.to_str().unwrap());
    same(&["-i", i, "--list"]);
    same(&["-i", i, "--list", "--playbook-dir", p]);
    for host in ["s1", "s2", "a1"] {
        same(&["-i", i, "--playbook-dir", p, "--host", host]);
    }
    // What the fixture is there to show (group_vars/ outrank the inventory
    // file's group vars; the playbook's outrank the inventory's).
    let s2: Value = serde_json::from_str(&khard(&["-i", i, "--host", "s2"])).unwrap();
    assert_eq!(s2["level"], "host_vars-s2");
    let a1: Value =
        serde_json::from_str(&khard(&["-i", i, "--playbook-dir", p, "--host", "a1"])).unwrap();
    assert_eq!(a1["level"], "playbook-group_vars-agent");
    assert_eq!(a1["cluster_only"], "from-group_vars-k3s_cluster");
}

/// `-i` given twice: hosts, groups and variables together, a later
/// source's values winning, as ansible-inventory merges them.
#[test]
fn two_inventory_sources_merge_as_in_ansible() {
    let a = fixture("k3s-ansible/inventory.yml");
    let b = fixture("precedence/inventory/hosts.yaml");
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    same(&["-i", a, "-i", b, "--list"]);
    same(&["-i", b, "-i", a, "--list"]);
    assert_eq!(
        khard(&["-i", a, "-i", b, "--graph"]),
        ansible(&["-i", a, "-i", b, "--graph"])
    );
}

#[test]
fn merge_keys_resolve_as_in_ansible() {
    let inv = fixture("merge-keys/inventory.yaml");
    same(&["-i", inv.to_str().unwrap(), "--list"]);
}

#[test]
fn the_projects_inventories_resolve_as_in_ansible() {
    for inv in [
        "inventories/example.yaml",
        "inventories/vagrant.yaml",
        "inventories/localhost.yaml",
    ] {
        let path = root().join(inv);
        same(&["-i", path.to_str().unwrap(), "--list"]);
    }
}
