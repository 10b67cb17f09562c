//! Real Debian 12 nodes for the tests: qemu VMs (TCG) booted from the image
//! `scripts/vm/image` builds, reachable only on 127.0.0.1 (tests/vm/README.md).
//!
//! Real on a node: the Linux kernel and its /proc/sys, procps `sysctl`,
//! systemd (units, restarts), dash as /bin/sh, coreutils, OpenSSH.
//! Stand-in: k3s itself (tests/vm/guest/usr/local/bin/k3s), a script run by
//! the real systemd as `k3s.service` / `k3s-agent.service`.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub use crate::common::Run;
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A node: its name, role, k3s version and forwarded SSH port.
pub struct Node {
    pub name: String,
    pub role: String,
    pub version: String,
    pub port: u16,
}

/// VMs booted for one test; stopped (only their own qemu PIDs) on drop.
pub struct Vms {
    pub dir: PathBuf,
    pub nodes: Vec<Node>,
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn needs_root() {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    assert!(
        root,
        "VM tests need root (debootstrap, qemu): run scripts/test as root"
    );
}

impl Vms {
    /// Boots one VM per spec `name:role:version` (role server|agent|none,
    /// version `none` = k3s not installed), all at once.
    pub fn boot(specs: &[&str]) -> Vms {
        needs_root();
        let image = Command::new(repo().join("scripts/vm/image"))
            .output()
            .expect("scripts/vm/image");
        assert!(image.status.success(), "image: {}", text(&image));
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("khard-vms-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut vms = Vms {
            dir: dir.clone(),
            nodes: Vec::new(),
        };
        let mut boots = Vec::new();
        for spec in specs {
            let mut it = spec.split(':');
            let (name, role, version) = (
                it.next().unwrap().to_owned(),
                it.next().unwrap().to_owned(),
                it.next().unwrap().to_owned(),
            );
            let port = free_port();
            let child = Command::new(repo().join("scripts/vm/boot"))
                .arg(&dir)
                .arg(&name)
                .arg(port.to_string())
                .env("KHARD_VM_ROLE", &role)
                .env("KHARD_VM_K3S_VERSION", &version)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("scripts/vm/boot");
            boots.push((name.clone(), child));
            vms.nodes.push(Node {
                name,
                role,
                version,
                port,
            });
        }
        for (name, child) in boots {
            let out = child.wait_with_output().unwrap();
            assert!(out.status.success(), "boot {name}: {}", text(&out));
        }
        vms
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    pub fn key() -> PathBuf {
        repo().join("target/vm/keys/id_ed25519")
    }

    pub fn node(&self, name: &str) -> &Node {
        self.nodes.iter().find(|n| n.name == name).expect("a node")
    }

    /// An inventory of the nodes in k3s-ansible's shape (server / agent groups).
    pub fn inventory(&self, extra_vars: &str) -> PathBuf {
        let mut groups = String::new();
        for role in ["server", "agent"] {
            groups.push_str(&format!("    {role}:\n      hosts:\n"));
            for n in self.nodes.iter().filter(|n| n.role == role) {
                groups.push_str(&format!(
                    "        {}:\n          ansible_port: {}\n",
                    n.name, n.port
                ));
            }
        }
        let text = format!(
            "k3s_cluster:\n  children:\n{groups}  vars:\n    ansible_host: 127.0.0.1\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n{extra_vars}",
            Vms::key().display()
        );
        let path = self.dir.join("inventory.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `ssh` or `scp` with the options both need: strict host keys from
    /// the VMs' known_hosts, the tests' key, no prompts.
    fn client(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args([
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=yes",
            "-o",
        ])
        .arg(format!(
            "UserKnownHostsFile={}",
            self.known_hosts().display()
        ))
        .arg("-i")
        .arg(Vms::key());
        c
    }

    /// Runs a command on a node as root, through the real OpenSSH client.
    pub fn ssh(&self, node: &str, command: &str) -> Output {
        let port = self.node(node).port.to_string();
        self.client("ssh")
            .args(["-p", &port, "root@127.0.0.1", command])
            .output()
            .expect("ssh")
    }

    /// Like `ssh`, asserting success; returns stdout.
    pub fn sh(&self, node: &str, command: &str) -> String {
        let out = self.ssh(node, command);
        assert!(
            out.status.success(),
            "{node}: `{command}` failed: {}",
            text(&out)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies a local file to a node.
    pub fn copy(&self, node: &str, from: &Path, to: &str) {
        let port = self.node(node).port.to_string();
        let out = self
            .client("scp")
            .args(["-q", "-P", &port])
            .arg(from)
            .arg(format!("root@127.0.0.1:{to}"))
            .output()
            .expect("scp");
        assert!(out.status.success(), "scp: {}", text(&out));
    }

    /// How many times k3s (or k3s-agent) started on a node, per the stand-in's log.
    pub fn k3s_starts(&self, node: &str) -> Vec<String> {
        self.sh(
            node,
            "cat /var/log/khard-test/k3s-starts.log 2>/dev/null || true",
        )
        .lines()
        .map(str::to_owned)
        .collect()
    }

    /// khard against the nodes.
    pub fn khard(&self, inventory: &Path, args: &[&str]) -> Run {
        let out = Command::new(env!("CARGO_BIN_EXE_khard"))
            .arg("apply")
            .arg("-i")
            .arg(inventory)
            .arg("--known-hosts")
            .arg(self.known_hosts())
            .args(args)
            .env("HOME", &self.dir)
            .env_remove("SSH_AUTH_SOCK")
            .output()
            .expect("khard");
        Run::from(out)
    }
}

impl Drop for Vms {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/vm/stop"))
            .arg(&self.dir)
            .output();
        // The consoles stay only where a test failed, to look at.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
