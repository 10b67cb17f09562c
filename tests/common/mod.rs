//! Test fleets of real OpenSSH servers (tests/fleet/fleet.sh), one network
//! namespace per fleet, and helpers to run the khard binary against them.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Fleet {
    pub dir: PathBuf,
    pub netns: String,
    /// (name, address, role, version)
    pub hosts: Vec<(String, String, String, String)>,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether this machine can run fleets (root, namespaces, sshd). Without
/// them the fleet tests fail with the reason (never a silent pass).
fn can_run() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout == b"0\n")
        .unwrap_or(false);
    if !root {
        return Err("not root".into());
    }
    if !Path::new("/usr/sbin/sshd").exists() {
        return Err("no /usr/sbin/sshd (install openssh-server)".into());
    }
    Ok(())
}

impl Fleet {
    /// Brings up a fleet; `specs` are `name:role[:version]`. Where fleets
    /// cannot run (not root, no sshd) the test FAILS, saying why: a test that
    /// ran nothing is never reported as passed.
    pub fn up(specs: &[&str]) -> Fleet {
        Fleet::up_with(specs, &[])
    }

    /// Like `up`, with fleet.sh options before the specs, e.g.
    /// `["--restart-down", "1"]` or `["--bastion", "bastion"]` (a jump host
    /// topology: see `bastion` and `khard_in_runner`).
    pub fn up_with(specs: &[&str], options: &[&str]) -> Fleet {
        if let Err(why) = can_run() {
            panic!(
                "this test needs a fleet of real sshd hosts, which cannot run here: {why}. \
                 Run scripts/test as root (it installs what fleets need), or `cargo test --lib` \
                 for the unit tests alone"
            );
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let id = format!("{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(format!("khard-fleet-{id}"));
        let _ = std::fs::remove_dir_all(&dir);
        let netns = format!("khard-t{id}");
        let mut cmd = Command::new(repo().join("tests/fleet/fleet.sh"));
        cmd.arg("up")
            .arg(&dir)
            .arg("--netns")
            .arg(&netns)
            .args(options)
            .args(specs);
        let out = cmd.output().expect("running fleet.sh");
        let mut fleet = Fleet {
            dir: dir.clone(),
            netns,
            hosts: Vec::new(),
        };
        assert!(
            out.status.success(),
            "fleet.sh up failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tsv = std::fs::read_to_string(dir.join("hosts.tsv")).expect("hosts.tsv");
        fleet.hosts = tsv
            .lines()
            .map(|l| {
                let f: Vec<&str> = l.split('\t').collect();
                (
                    f[0].to_owned(),
                    f[1].to_owned(),
                    f[2].to_owned(),
                    f.get(3).copied().unwrap_or("").to_owned(),
                )
            })
            .collect();
        fleet
    }

    pub fn inventory(&self) -> PathBuf {
        self.dir.join("inventory.yaml")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.dir.join("known_hosts")
    }

    /// Runs khard inside the fleet's network namespace.
    pub fn khard(&self, args: &[&str]) -> Run {
        khard_in(&self.netns, args)
    }

    /// Runs khard inside the runner network namespace of a `--bastion` fleet,
    /// from where only the bastion's veth address is reachable.
    pub fn khard_in_runner(&self, args: &[&str]) -> Run {
        let ns = std::fs::read_to_string(self.dir.join("runner-netns"))
            .expect("runner-netns (fleet not brought up with --bastion?)");
        khard_in(ns.trim(), args)
    }

    /// (name, veth address) of the bastion of a `--bastion` fleet.
    pub fn bastion(&self) -> Option<(String, String)> {
        let s = std::fs::read_to_string(self.dir.join("bastion")).ok()?;
        let (name, addr) = s.trim_end().split_once('\t')?;
        Some((name.to_owned(), addr.to_owned()))
    }

    /// `khard VERB -i <fleet inventory> --known-hosts <fleet known_hosts> ARGS`.
    pub fn run(&self, verb: &str, args: &[&str]) -> Run {
        let inv = self.inventory();
        let kh = self.known_hosts();
        let mut all = vec![
            verb,
            "-i",
            inv.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
        ];
        all.extend_from_slice(args);
        self.khard(&all)
    }

    /// `khard apply` on the fleet.
    pub fn apply(&self, args: &[&str]) -> Run {
        self.run("apply", args)
    }

    /// `khard report --format json` on the fleet, and its parsed document.
    pub fn report(&self, args: &[&str]) -> (Run, serde_json::Value) {
        let mut all = vec!["--format", "json"];
        all.extend_from_slice(args);
        let run = self.run("report", &all);
        let doc = serde_json::from_str(&run.stdout)
            .unwrap_or_else(|e| panic!("report JSON: {e}\n{}", run.all()));
        (run, doc)
    }

    pub fn host_dir(&self, host: &str) -> PathBuf {
        self.dir.join("hosts").join(host)
    }

    /// The real path of `path` as the host sees it (e.g. /etc/rancher/k3s/config.yaml).
    pub fn path(&self, host: &str, path: &str) -> PathBuf {
        self.host_dir(host)
            .join("fs")
            .join(path.trim_start_matches('/'))
    }

    pub fn read(&self, host: &str, path: &str) -> Option<String> {
        std::fs::read_to_string(self.path(host, path)).ok()
    }

    pub fn mode(&self, host: &str, path: &str) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(self.path(host, path))
            .expect("stat")
            .permissions()
            .mode()
            & 0o7777
    }

    pub fn log(&self, host: &str, name: &str) -> String {
        std::fs::read_to_string(self.host_dir(host).join("log").join(name)).unwrap_or_default()
    }

    /// The host's sshd log (LogLevel INFO: one "Accepted publickey" per login).
    pub fn sshd_log(&self, host: &str) -> String {
        std::fs::read_to_string(self.host_dir(host).join("sshd.log")).expect("sshd.log")
    }

    /// Lines of the systemctl shim's log that restart something.
    pub fn restarts(&self, host: &str) -> Vec<String> {
        self.log(host, "systemctl.log")
            .lines()
            .filter(|l| l.contains("restart"))
            .map(str::to_owned)
            .collect()
    }

    /// Every file under the host's private folders, with content, for "nothing was touched" checks.
    pub fn snapshot(&self, host: &str) -> Vec<(String, Vec<u8>, u32)> {
        fn walk(base: &Path, dir: &Path, out: &mut Vec<(String, Vec<u8>, u32)>) {
            use std::os::unix::fs::PermissionsExt;
            let Ok(entries) = std::fs::read_dir(dir) else {
                return;
            };
            for e in entries.flatten() {
                let p = e.path();
                let meta = std::fs::symlink_metadata(&p).unwrap();
                let rel = p.strip_prefix(base).unwrap().display().to_string();
                if meta.is_dir() {
                    out.push((rel, Vec::new(), meta.permissions().mode()));
                    walk(base, &p, out);
                } else {
                    out.push((
                        rel,
                        std::fs::read(&p).unwrap_or_default(),
                        meta.permissions().mode(),
                    ));
                }
            }
        }
        let mut out = Vec::new();
        let base = self.host_dir(host).join("fs");
        walk(&base, &base, &mut out);
        out.sort();
        out
    }

    pub fn names(&self, role: &str) -> Vec<String> {
        self.hosts
            .iter()
            .filter(|h| h.2 == role)
            .map(|h| h.0.clone())
            .collect()
    }
}

impl Fleet {
    /// Starts khard in the fleet's netns in the background (stdin, stdout, stderr piped).
    pub fn spawn_khard(&self, args: &[&str], env: &[(&str, &str)]) -> std::process::Child {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns, env!("CARGO_BIN_EXE_khard")])
            .args(args)
            .env("NO_COLOR", "1")
            .env_remove("SSH_AUTH_SOCK");
        for (k, v) in env {
            cmd.env(k, v);
        }
        use std::process::Stdio;
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting khard")
    }

    /// khard with extra environment and `stdin` typed into it.
    pub fn khard_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
        let mut child = self.spawn_khard(args, env);
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// khard in a pseudo-terminal (util-linux `script`), with `input` typed
    /// after a moment (for passphrase prompts); colours left to khard.
    pub fn khard_in_pty(&self, args: &[&str], input: Option<&str>) -> Run {
        let cmd = format!(
            "ip netns exec {} {} {}",
            self.netns,
            env!("CARGO_BIN_EXE_khard"),
            args.join(" ")
        );
        use std::io::{Read, Write};
        use std::process::Stdio;
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("NO_COLOR")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting script");
        let mut stdin = child.stdin.take().unwrap();
        // Output is read as it comes, so input is typed when khard asks
        // for it (its prompt ends with ": "), never after a fixed time.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let reader = {
            let seen = seen.clone();
            let mut out = child.stdout.take().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = out.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    seen.lock().unwrap().extend_from_slice(&buf[..n]);
                }
            })
        };
        if let Some(text) = input {
            for _ in 0..600 {
                if String::from_utf8_lossy(&seen.lock().unwrap()).contains(": ") {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            stdin.write_all(text.as_bytes()).unwrap();
        }
        drop(stdin);
        let mut out = child.wait_with_output().unwrap();
        reader.join().unwrap();
        out.stdout = seen.lock().unwrap().clone();
        Run::from(out)
    }
}

/// Runs khard inside network namespace `netns`.
fn khard_in(netns: &str, args: &[&str]) -> Run {
    let out = Command::new("ip")
        .args(["netns", "exec", netns, env!("CARGO_BIN_EXE_khard")])
        .args(args)
        .env("NO_COLOR", "1")
        .env_remove("SSH_AUTH_SOCK")
        .output()
        .expect("running khard");
    Run::from(out)
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("tests/fleet/fleet.sh"))
            .arg("down")
            .arg(&self.dir)
            .output();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// What one khard run printed and returned.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// The recap line of a host, e.g. "ok=8 changed=3 unreachable=0 failed=0 skipped=1".
    pub fn recap(&self, host: &str) -> String {
        let after = self.stdout.split("PLAY RECAP").nth(1).unwrap_or("");
        after
            .lines()
            .find(|l| l.split_whitespace().next() == Some(host))
            .map(|l| {
                l.split_once(':')
                    .map(|x| x.1)
                    .unwrap_or("")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }

    /// A counter from the recap of a host.
    pub fn count(&self, host: &str, what: &str) -> usize {
        self.recap(host)
            .split_whitespace()
            .find_map(|kv| {
                kv.strip_prefix(&format!("{what}="))
                    .and_then(|v| v.parse().ok())
            })
            .unwrap_or_else(|| panic!("no {what} in recap of {host}:\n{}", self.all()))
    }

    pub fn all(&self) -> String {
        format!(
            "exit {}\n--- stdout\n{}\n--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A node of a `khard report` document.
pub fn node<'a>(doc: &'a serde_json::Value, host: &str) -> &'a serde_json::Value {
    doc["nodes"]
        .as_array()
        .and_then(|n| n.iter().find(|n| n["host"] == host))
        .unwrap_or_else(|| panic!("no node {host} in the report: {doc}"))
}

/// One control of a node in a `khard report` document.
pub fn control<'a>(doc: &'a serde_json::Value, host: &str, id: &str) -> &'a serde_json::Value {
    node(doc, host)["controls"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["id"] == id))
        .unwrap_or_else(|| panic!("no control {id} on {host}"))
}

/// Verdict of every control of a node: ID → verdict.
pub fn verdicts(doc: &serde_json::Value, host: &str) -> std::collections::BTreeMap<String, String> {
    node(doc, host)["controls"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["id"].as_str().unwrap().to_owned(),
                c["verdict"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The string items of a YAML list under `key` (empty when absent).
pub fn yaml_list(v: &serde_yaml::Value, key: &str) -> Vec<String> {
    v.get(key)
        .and_then(serde_yaml::Value::as_sequence)
        .map(|s| {
            s.iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A folder of a test's own under the temp dir, removed when the test ends
/// well (kept after a failure, to look at): the suite leaves nothing behind
/// (scripts/test checks).
pub struct Scratch(PathBuf);

impl Scratch {
    pub fn new(what: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("khard-{what}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Scratch(d)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
