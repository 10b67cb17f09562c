//! Nothing reaches a shell unquoted: shell syntax in every inventory,
//! playbook and command-line value that khard puts into a script, a guard,
//! a ProxyCommand or known_hosts. Each run targets this machine through
//! `ansible_connection: local` (the same scripts an SSH host gets) or an
//! SSH target khard must refuse before connecting; the proof is a marker
//! file that must never appear, in apply and in `--check --diff`.

use std::path::{Path, PathBuf};
use std::process::Command;

struct Sweep {
    dir: PathBuf,
}

impl Drop for Sweep {
    /// Removed when the test ends well (kept after a failure, to look at).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl Sweep {
    fn new(name: &str) -> Sweep {
        let dir = std::env::temp_dir().join(format!("khard-sweep-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Sweep { dir }
    }

    fn marker(&self) -> PathBuf {
        self.dir.join("pwned")
    }

    /// Shell syntax that creates the marker if any shell ever runs it.
    fn payloads(&self) -> Vec<String> {
        let m = self.marker().display().to_string();
        vec![
            format!("$(touch {m})"),
            format!("`touch {m}`"),
            format!(";touch {m};"),
            format!("'; touch {m}; '"),
            format!("\"; touch {m}; \""),
            format!("\ntouch {m}\n"),
            format!("-o ProxyCommand=touch {m}"),
            format!("|touch {m}"),
            format!("&& touch {m}"),
        ]
    }

    fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    fn khard(&self, args: &[&str]) -> (i32, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_khard"))
            .args(args)
            .env("HOME", &self.dir)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn assert_clean(&self, what: &str, out: &str) {
        assert!(
            !self.marker().exists(),
            "{what} ran shell syntax from a value:\n{out}"
        );
    }
}

fn yaml(s: &str) -> String {
    serde_json::to_string(s).unwrap()
}

const LOCAL: &str =
    "all:\n  hosts:\n    here:\n      ansible_connection: local\n      ansible_become: false\n";

/// Every module argument that becomes part of a script, with each payload,
/// in `--check --diff` and in apply.
#[test]
fn shell_syntax_in_task_arguments_never_runs() {
    let s = Sweep::new("tasks");
    let inv = s.write("inventory.yaml", LOCAL);
    let d = s.dir.display();
    // The sweep proves something only if its runs reach the host: a control
    // value first (valid for every argument, so every template must reach
    // the host),
    // then the payloads, counting the runs that reached the host.
    let mut payloads = vec!["0644".to_owned()];
    payloads.extend(s.payloads());
    let (mut runs, mut reached) = (0, 0);
    for (i, p) in payloads.into_iter().enumerate() {
        let reached_before = reached;
        let q = yaml(&p);
        let dest = yaml(&format!("{d}/f{i}-{p}"));
        let tasks = [
            format!("file: {{ dest: {dest}, content: {q} }}"),
            format!(
                "file: {{ dest: {}, content: x, owner: {q} }}",
                yaml(&format!("{d}/o{i}"))
            ),
            format!(
                "file: {{ dest: {}, content: x, group: {q} }}",
                yaml(&format!("{d}/g{i}"))
            ),
            format!(
                "file: {{ dest: {}, content: x, mode: {q} }}",
                yaml(&format!("{d}/m{i}"))
            ),
            format!(
                "directory: {{ path: {} }}",
                yaml(&format!("{d}/dir{i}-{p}"))
            ),
            format!(
                "permissions: {{ path: {}, mode: \"0600\" }}",
                yaml(&format!("{d}/f{i}-{p}"))
            ),
            format!(
                "sysctl: {{ dest: {}, values: {{ {q}: 1 }} }}",
                yaml(&format!("{d}/s{i}.conf"))
            ),
            format!(
                "sysctl: {{ dest: {}, values: {{ kernel.panic: {q} }} }}",
                yaml(&format!("{d}/v{i}.conf"))
            ),
            format!(
                "command: {{ cmd: \"true\", creates: {} }}",
                yaml(&format!("{d}/c{i}-{p}"))
            ),
            format!("service: {{ name: {q}, state: restarted }}"),
            format!("k3s_unit: {{ unit: {q} }}"),
        ];
        for task in tasks {
            let play = s.write(
                "play.yaml",
                &format!("- hosts: all\n  tasks:\n    - name: sweep\n      {task}\n"),
            );
            // Apply first, then check: `--diff` reads back files that exist.
            for mode in [&[][..], &["--check", "--diff"][..]] {
                let mut args = vec!["apply", "-i", inv.to_str().unwrap()];
                args.extend_from_slice(mode);
                args.push(play.to_str().unwrap());
                let (code, out) = s.khard(&args);
                s.assert_clean(&format!("{task} {mode:?}"), &out);
                let at_host = code != 5 && out.contains("[here]");
                if i == 0 {
                    assert!(
                        at_host,
                        "the control run of `{task}` never reached the host: {out}"
                    );
                }
                runs += 1;
                reached += usize::from(at_host);
            }
        }
        // Refusing a value at input is safe too, but every payload must
        // have met a real shell, quoted, somewhere (file content at least).
        assert!(
            reached > reached_before,
            "no run with {p:?} reached the host"
        );
    }
    eprintln!("{reached} of {runs} runs reached the host, none ran a payload");
}

/// Inventory and command-line values: host names, addresses, users, ports,
/// extra vars used in a path, --limit and --tags.
#[test]
fn shell_syntax_in_inventory_and_cli_values_never_runs() {
    let s = Sweep::new("inventory");
    let d = s.dir.display();
    let play = s.write(
        "play.yaml",
        &format!("- hosts: all\n  tasks:\n    - name: uses a var\n      file: {{ dest: \"{d}/x{{{{v}}}}\", content: x }}\n"),
    );
    for p in s.payloads() {
        let q = yaml(&p);
        let inventories = [
            format!("all:\n  hosts:\n    {q}:\n      ansible_connection: local\n"),
            format!(
                "all:\n  hosts:\n    h1:\n      ansible_host: {q}\n      ansible_connection: ssh\n"
            ),
            format!(
                "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n      ansible_user: {q}\n"
            ),
            format!(
                "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n      ansible_port: {q}\n"
            ),
            format!(
                "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n      ansible_ssh_common_args: {}\n",
                yaml(&format!("-o ProxyJump={p}"))
            ),
            format!("all:\n  hosts:\n    h1:\n      ansible_connection: local\n      v: {q}\n"),
            // ProxyCommand's %h and %r reach a local `sh -c` (CVE-2023-51385's class).
            format!(
                "all:\n  hosts:\n    h1:\n      ansible_host: {q}\n      ansible_ssh_common_args: '-o ProxyCommand=\"nc %h %p\"'\n"
            ),
            format!(
                "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n      ansible_user: {q}\n      ansible_ssh_common_args: '-o ProxyCommand=\"echo %r >/dev/null\"'\n"
            ),
        ];
        for inv_text in inventories {
            let inv = s.write("inventory.yaml", &inv_text);
            for extra in [
                &["--check", "--diff"][..],
                &["--accept-new-host-keys", "--connect-timeout", "2"][..],
            ] {
                let mut args = vec!["apply", "-i", inv.to_str().unwrap()];
                args.extend_from_slice(extra);
                args.push(play.to_str().unwrap());
                let (_, out) = s.khard(&args);
                s.assert_clean(&inv_text, &out);
            }
        }
        let inv = s.write("inventory.yaml", LOCAL);
        let ev = format!("v={p}");
        for args in [
            vec![
                "apply",
                "-i",
                inv.to_str().unwrap(),
                "-e",
                &ev,
                play.to_str().unwrap(),
            ],
            vec![
                "apply",
                "-i",
                inv.to_str().unwrap(),
                "--limit",
                &p,
                play.to_str().unwrap(),
            ],
            vec![
                "apply",
                "-i",
                inv.to_str().unwrap(),
                "--tags",
                &p,
                play.to_str().unwrap(),
            ],
        ] {
            let (_, out) = s.khard(&args);
            s.assert_clean(&format!("{args:?}"), &out);
        }
    }
    // known_hosts holds no line the sweep wrote.
    let kh = Path::new(&s.dir).join(".ssh/known_hosts");
    if let Ok(text) = std::fs::read_to_string(&kh) {
        assert!(!text.contains("touch"), "{text}");
    }
}

/// The reported regression: a path with `$(…)` in `--check --diff` ran the
/// command; now it is a file name like any other, written and found again.
#[test]
fn a_path_with_shell_syntax_is_just_a_name() {
    let s = Sweep::new("path");
    let inv = s.write("inventory.yaml", LOCAL);
    let m = s.marker();
    let dest = format!("{}/a$(touch {})", s.dir.display(), m.display());
    let play = s.write(
        "play.yaml",
        &format!("- hosts: all\n  tasks:\n    - name: odd name\n      file: {{ dest: {}, content: \"hello\\n\" }}\n", yaml(&dest)),
    );
    let args = |extra: &[&'static str]| {
        let mut a = vec!["apply".to_owned(), "-i".into(), inv.display().to_string()];
        a.extend(extra.iter().map(|s| s.to_string()));
        a.push(play.display().to_string());
        a
    };
    let run = |a: Vec<String>| {
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        s.khard(&a)
    };
    let (code, out) = run(args(&["--check", "--diff"]));
    assert_eq!(code, 2, "{out}");
    s.assert_clean("check", &out);
    let (code, out) = run(args(&[]));
    assert_eq!(code, 0, "{out}");
    s.assert_clean("apply", &out);
    assert_eq!(std::fs::read_to_string(&dest).unwrap(), "hello\n");
    let (code, out) = run(args(&["--check", "--diff"]));
    assert_eq!(code, 0, "in sync: {out}");
    s.assert_clean("check after apply", &out);
}
