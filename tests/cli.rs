//! The command line without a fleet: help, shipped inventories and
//! playbooks, and the safe demo against this machine.

use std::process::Command;

mod common;

use common::Scratch;

fn khard(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// An inventory of one server at 127.0.0.1:9 (nothing listens: a test that
/// must stop before connecting fails loudly if it connects), with `extra`
/// as more of its variables.
fn unreachable_inventory(dir: &std::path::Path, extra: &str) -> std::path::PathBuf {
    let inv = dir.join("inv.yaml");
    std::fs::write(
        &inv,
        format!("all:\n  hosts:\n    n1:\n      ansible_host: 127.0.0.1\n      ansible_port: 9\n      k3s_role: server\n{extra}"),
    )
    .unwrap();
    inv
}

#[test]
fn help_documents_exit_codes() {
    let (code, out, _) = khard(&["--help"]);
    assert_eq!(code, 0);
    for needle in [
        "0 ",
        "2 ",
        "3 ",
        "4 ",
        "5 ",
        "drift",
        "unreachable",
        "invalid input",
    ] {
        assert!(out.contains(needle), "--help lacks {needle}: {out}");
    }
    let (code, out, _) = khard(&["apply", "--help"]);
    assert_eq!(code, 0);
    assert!(
        out.contains("--check") && out.contains("Exit codes"),
        "{out}"
    );
    let (code, out, _) = khard(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("khard "), "{out}");
}

#[test]
fn shipped_inventories_and_playbook_load() {
    for (inv, hosts) in [
        (
            "inventories/example.yaml",
            vec![
                "192.0.2.11 (server)",
                "192.0.2.12 (agent)",
                "192.0.2.13 (agent)",
            ],
        ),
        (
            "inventories/vagrant.yaml",
            vec![
                "192.168.56.10 (server)",
                "192.168.56.11 (agent)",
                "192.168.56.12 (agent)",
            ],
        ),
        ("inventories/localhost.yaml", vec!["localhost (server)"]),
    ] {
        let (code, out, err) = khard(&["apply", "-i", inv, "--list-hosts"]);
        assert_eq!(code, 0, "{inv}: {err}");
        for h in hosts {
            assert!(out.contains(h), "{inv}: {h} missing in {out}");
        }
        let (code, out, err) = khard(&["apply", "-i", inv, "--syntax-check"]);
        assert_eq!(code, 0, "{inv}: {err}");
        assert!(out.contains("no issues found"), "{out}");
    }
    let (code, out, err) = khard(&[
        "apply",
        "-i",
        "inventories/example.yaml",
        "playbooks/cis-hardening.yaml",
        "--list-tasks",
    ]);
    assert_eq!(code, 0, "{err}");
    // IDs per benchmark: the numbering a node of that benchmark is reported in.
    assert!(
        out.contains("Kernel parameters")
            && out.contains("[CIS cis-1.6, k3s-cis-1.23, k3s-cis-1.24: 4.2.6]"),
        "{out}"
    );
    assert!(
        out.contains("[CIS cis-1.6: 1.2.22; k3s-cis-1.23, k3s-cis-1.24: 1.2.19; k3s-cis-1.7: 1.2.18; k3s-cis-1.8: 1.2.17; k3s-cis-1.9, k3s-cis-1.10, k3s-cis-1.11, k3s-cis-1.12, k3s-cis-2.0: 1.2.16]"),
        "the audit log folder task in every numbering: {out}"
    );
    let (_, one, _) = khard(&[
        "apply",
        "-i",
        "inventories/example.yaml",
        "--list-tasks",
        "-e",
        "cis_benchmark=k3s-cis-1.9",
    ]);
    assert!(
        one.contains("API audit log folder (/var/lib/rancher/k3s/server/logs) [CIS 1.2.16]"),
        "one benchmark named: {one}"
    );
}

/// The README's main job: check mode against this machine changes nothing
/// and answers "drift" (2) or "in sync" (0), never an error.
#[test]
fn the_safe_demo_runs_in_check_mode() {
    let (code, out, err) = khard(&["apply", "--check", "-i", "inventories/localhost.yaml"]);
    assert!(code == 0 || code == 2, "exit {code}: {out}\n{err}");
    assert!(
        out.contains("PLAY RECAP") && out.contains("localhost"),
        "{out}"
    );
    assert!(
        out.contains("failed=0") && out.contains("unreachable=0"),
        "{out}\n{err}"
    );
}

#[test]
fn report_outputs_are_checked_before_any_host_is_contacted() {
    // html and -o are `khard report`'s: clap refuses them for apply.
    let (code, _, err) = khard(&[
        "apply",
        "-i",
        "inventories/example.yaml",
        "--format",
        "html",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("invalid value 'html'"), "{err}");
    let (code, _, err) = khard(&["apply", "-i", "inventories/example.yaml", "-o", "r.html"]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("unexpected argument '-o'"), "{err}");
    let (code, _, err) = khard(&[
        "report",
        "-i",
        "inventories/example.yaml",
        "--format",
        "html",
        "-o",
        "/nonexistent/folder/report.html",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("-o /nonexistent/folder/report.html"), "{err}");
    let (code, _, err) = khard(&[
        "report",
        "-i",
        "inventories/example.yaml",
        "--format",
        "htm",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("html"), "clap lists the formats: {err}");
}

#[test]
fn a_misspelt_benchmark_is_refused_with_a_hint() {
    let (code, _, err) = khard(&[
        "apply",
        "-i",
        "inventories/example.yaml",
        "--list-tasks",
        "-e",
        "cis_benchmark=k3s-cis-1.1O",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("cis_benchmark `k3s-cis-1.1O` is not a benchmark khard knows (did you mean `k3s-cis-1.10`?)"),
        "{err}"
    );
}

/// `khard report` changes nothing and runs no task: a flag that only means
/// something to `apply` is refused by name, before anything is read.
#[test]
fn report_refuses_the_flags_of_apply() {
    for flags in [
        &["--check"][..],
        &["--diff"],
        &["--tags", "1.2.16"],
        &["--skip-tags", "sysctl"],
        &["--force-handlers"],
        &["--start-at-task", "x"],
        &["--agent-batch", "2"],
        &["--list-tasks"],
    ] {
        let mut args = vec!["report", "-i", "inventories/localhost.yaml"];
        args.extend_from_slice(flags);
        let (code, out, err) = khard(&args);
        assert_eq!(code, 5, "{flags:?}: {err}");
        assert!(
            err.contains(&format!("unexpected argument '{}'", flags[0])),
            "{flags:?}: {err}"
        );
        assert!(out.is_empty(), "{flags:?}: {out}");
    }
    assert!(
        !std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("r.xml")
            .exists()
    );
    // The shared groups are still there.
    let (code, out, err) = khard(&["report", "--help"]);
    assert_eq!(code, 0, "{err}");
    for flag in [
        "--limit",
        "--known-hosts",
        "--vault-id",
        "--format",
        "--output",
        "-K",
    ] {
        assert!(out.contains(flag), "report --help lacks {flag}: {out}");
    }
}

/// A report that cannot be written is an error of its own, not a good run
/// that printed nothing (this machine, read-only, as the README's demo).
#[test]
fn a_report_that_cannot_be_written_fails_with_a_message() {
    let (code, out, err) = khard(&[
        "report",
        "-i",
        "inventories/localhost.yaml",
        "--format",
        "json",
        "-o",
        "/dev/full",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        err.contains("the compliance report could not be written to /dev/full"),
        "{err}"
    );
    assert!(err.contains("No space left on device"), "{err}");
    // The same report to a writable file is whole JSON, and exits by its verdicts.
    let dir = Scratch::new("cli-report");
    let file = dir.join("r.json");
    let (code, _, err) = khard(&[
        "report",
        "-i",
        "inventories/localhost.yaml",
        "--format",
        "json",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert!(code == 0 || code == 2, "{err}");
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert!(doc.is_object(), "{doc}");
}

/// An encrypted private key and no terminal to ask its passphrase is the
/// operator's setup: exit 5 before any host is contacted.
#[test]
fn an_encrypted_key_without_a_terminal_is_invalid_input() {
    let dir = Scratch::new("cli-key");
    let key = dir.join("id_ed25519");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "s3cret-pass", "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is installed by scripts/test");
    assert!(made.success());
    // Port 9 on loopback: nothing is contacted anyway (the key is loaded first).
    let inv = unreachable_inventory(
        &dir,
        &format!(
            "      ansible_ssh_private_key_file: {}
",
            key.display()
        ),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .args(["apply", "--check", "-i"])
        .arg(&inv)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(
        err.contains("is encrypted and there is no terminal to ask its passphrase"),
        "{err}"
    );
    assert!(!err.contains("s3cret-pass"), "{err}");
}

/// A become password with a line break cannot be sent safely (sudo reads
/// one line; the rest would reach the node's shell as root): refused before
/// any host is contacted, from the inventory and from -K alike.
#[test]
fn a_become_password_with_a_line_break_is_refused() {
    let dir = Scratch::new("cli-become");
    let inv = unreachable_inventory(
        &dir,
        "      ansible_become_password: \"pw\\ntouch /tmp/khard-become-ran\"\n",
    );
    let (code, _, err) = khard(&["apply", "--check", "-i", inv.to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("host n1: ansible_become_password holds a line break"),
        "{err}"
    );
    assert!(
        !err.contains("touch /tmp"),
        "the password is not echoed: {err}"
    );
    let plain = unreachable_inventory(&dir, "");
    let out = {
        use std::io::Write;
        let mut child = Command::new(env!("CARGO_BIN_EXE_khard"))
            .args(["apply", "--check", "-K", "-i", plain.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"pw\rtouch /tmp/khard-become-ran\n")
            .unwrap();
        child.wait_with_output().unwrap()
    };
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(5), "{err}");
    assert!(err.contains("-K: the password holds a line break"), "{err}");
    assert!(!std::path::Path::new("/tmp/khard-become-ran").exists());
}

/// A node's drop-in of 256 KiB of nested flow brackets is refused unread
/// (the YAML scanner once spent minutes on it: bench/hostile-yaml.sh times
/// it), and without a k3s unit the configured k3s_config_file stands.
#[test]
fn a_hostile_dropin_is_refused_before_the_yaml_parser_sees_it() {
    let dir = Scratch::new("cli-hostile");
    std::fs::create_dir_all(dir.join("config.yaml.d")).unwrap();
    std::fs::write(dir.join("config.yaml"), "").unwrap();
    let e = format!("k3s_config_file={}", dir.join("config.yaml").display());
    let args = [
        "apply",
        "--check",
        "-i",
        "inventories/localhost.yaml",
        "-e",
        &e,
    ];
    let (code, out, err) = khard(&args);
    assert!(
        code == 2 || code == 0,
        "no unit: the configured file stands: {out}{err}"
    );
    std::fs::write(
        dir.join("config.yaml.d/50-hostile.yaml"),
        format!("a: {}", "[".repeat(256 * 1024 - 3)),
    )
    .unwrap();
    let (code, out, err) = khard(&args);
    assert_eq!(code, 3, "{out}{err}");
    assert!(
        out.contains("50-hostile.yaml: YAML nested deeper than 32 flow collections"),
        "{out}"
    );
}

/// Operator-side files are bounded (issue 24): /dev/zero as a private key
/// is refused before any host is contacted, not read until memory runs out.
#[test]
fn a_private_key_that_is_no_file_is_refused() {
    let dir = Scratch::new("cli-zero");
    let inv = unreachable_inventory(&dir, "      ansible_ssh_private_key_file: /dev/zero\n");
    let (code, _, err) = khard(&["apply", "--check", "-i", inv.to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("private key /dev/zero: not a regular file of at most 1024 KiB"),
        "{err}"
    );
    // The same for known_hosts; /dev/null, as OpenSSH users write it, is empty.
    let plain = unreachable_inventory(&dir, "");
    let (code, _, err) = khard(&[
        "apply",
        "--check",
        "-i",
        plain.to_str().unwrap(),
        "--known-hosts",
        "/dev/zero",
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("/dev/zero: not a regular file"), "{err}");
    let (code, _, err) = khard(&[
        "apply",
        "--check",
        "-i",
        plain.to_str().unwrap(),
        "--known-hosts",
        "/dev/null",
    ]);
    assert_eq!(code, 4, "unreachable, not refused: {err}");
}

/// One large group variable over a large fleet is copied to every host:
/// past a total the inventory is refused with the limit, not run out of
/// memory (a 500 KB variable over 20 000 hosts took 10 GB).
#[test]
fn variables_that_add_up_past_the_limit_are_refused() {
    let dir = Scratch::new("cli-bigvars");
    let inv = dir.join("inv.yaml");
    std::fs::write(
        &inv,
        format!(
            "all:\n  vars:\n    k3s_role: agent\n    blob: \"{}\"\n  hosts:\n    n[1:2000]:\n      ansible_host: 127.0.0.1\n",
            "x".repeat(600 * 1024)
        ),
    )
    .unwrap();
    let (code, _, err) = khard(&["apply", "--list-hosts", "-i", inv.to_str().unwrap()]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("the hosts' variables add up to more than 256 MiB"),
        "{err}"
    );
}

/// `-i 'host:port,'` as ansible-playbook reads it (host_list's
/// parse_address): the port is the host's, not part of its name (khard
/// dialled `127.0.0.1:9:22`).
#[test]
fn a_host_list_entry_carries_its_port() {
    let (code, out, err) = khard(&[
        "apply",
        "--check",
        "-i",
        "127.0.0.1:9,",
        "-e",
        "k3s_role=server",
    ]);
    assert_eq!(code, 4, "{out}{err}");
    assert!(
        out.contains("127.0.0.1:9") && !out.contains(":9:22"),
        "{out}"
    );
}

/// Ansible's own arguments to file and sysctl are answered with khard's
/// equivalents, at their line (issue 25.7).
#[test]
fn ansible_module_arguments_point_at_khards_equivalents() {
    let dir = Scratch::new("cli-ansible-args");
    let inv = unreachable_inventory(&dir, "");
    for (task, hint) in [
        (
            "ansible.builtin.file: { path: /etc/x, state: directory }",
            "khard's `file` writes a whole file at `dest`, and its `directory` module makes folders at `path`",
        ),
        (
            "file: { dest: /etc/x, state: directory }",
            "a folder is the `directory` module",
        ),
        (
            "ansible.posix.sysctl: { name: vm.overcommit_memory, value: 1 }",
            "khard's `sysctl` writes a whole file: `dest` and `values: { name: value }`",
        ),
    ] {
        let play = dir.join("play.yaml");
        std::fs::write(
            &play,
            format!("- hosts: all\n  tasks:\n    - name: t\n      {task}\n"),
        )
        .unwrap();
        let (code, _, err) = khard(&[
            "apply",
            "--check",
            "-i",
            inv.to_str().unwrap(),
            play.to_str().unwrap(),
        ]);
        assert_eq!(code, 5, "{task}: {err}");
        assert!(err.contains(hint), "{task}: {err}");
        assert!(err.contains("play.yaml:4:"), "{task}: {err}");
    }
    // A play's `serial:` points at khard's own batching.
    let play = dir.join("serial.yaml");
    std::fs::write(&play, "- hosts: all\n  serial: 2\n  tasks: []\n").unwrap();
    let (code, _, err) = khard(&[
        "apply",
        "--check",
        "-i",
        inv.to_str().unwrap(),
        play.to_str().unwrap(),
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("serial.yaml:2:") && err.contains("agents by k3s_agent_batch"),
        "{err}"
    );
}

/// `--list-tags` as ansible-playbook has it: the tags of the selected
/// tasks, each once, in text and JSON (issue 25.7).
#[test]
fn list_tags_lists_the_selected_tasks_tags() {
    let (code, out, err) = khard(&["apply", "-i", "inventories/localhost.yaml", "--list-tags"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("tags: admission, audit, config,"), "{out}");
    let (code, out, err) = khard(&[
        "apply",
        "-i",
        "inventories/localhost.yaml",
        "--list-tags",
        "-t",
        "kernel",
        "--format",
        "json",
    ]);
    assert_eq!(code, 0, "{err}");
    // -t kernel selects the kernel parameters and the config tasks that set
    // protect-kernel-defaults (with what they need), not the rest.
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    let tags = doc[0]["tags"].as_array().unwrap();
    assert!(tags.contains(&serde_json::json!("kernel")), "{doc}");
    for other in ["permissions", "serviceaccounts"] {
        assert!(!tags.contains(&serde_json::json!(other)), "{doc}");
    }
}

/// `--limit @retry.txt` as ansible-playbook reads it: a host or pattern a
/// line (issue 25.7).
#[test]
fn limit_reads_a_retry_file() {
    let dir = Scratch::new("cli-retry");
    let retry = dir.join("retry.txt");
    std::fs::write(&retry, "# from a failed run\nlocalhost\n\n").unwrap();
    let at = format!("@{}", retry.display());
    let (code, out, err) = khard(&[
        "apply",
        "-i",
        "inventories/localhost.yaml",
        "--list-hosts",
        "-l",
        &at,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("localhost"), "{out}");
    let missing = format!("@{}", dir.join("none.txt").display());
    let (code, _, err) = khard(&[
        "apply",
        "-i",
        "inventories/localhost.yaml",
        "--list-hosts",
        "-l",
        &missing,
    ]);
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("--limit @") && err.contains("none.txt"),
        "{err}"
    );
}

/// Namespace names reach manifests (the PSP era names a binding after
/// each): anything Kubernetes would not take as a name is refused first.
#[test]
fn exempt_namespaces_must_be_namespace_names() {
    for variable in ["cis_psa_exempt_namespaces", "cis_psp_servicelb_namespaces"] {
        for bad in [
            r#"["system-upgrade", "x\ny: 1"]"#,
            r#"["Shop"]"#,
            r#"["-a"]"#,
            r#""kube-system""#,
        ] {
            let vars = format!(r#"{{"{variable}": {bad}}}"#);
            let (code, _, err) = khard(&[
                "apply",
                "--check",
                "-i",
                "inventories/localhost.yaml",
                "-e",
                &vars,
            ]);
            assert_eq!(code, 5, "{bad}: {err}");
            assert!(err.contains(variable), "{bad}: {err}");
        }
    }
}

/// `cis_netpol_node_cidrs` is `auto` or CIDRs: a typo or a shell word is
/// refused by name before any host is contacted.
#[test]
fn node_cidrs_must_be_auto_or_cidrs() {
    for bad in [
        r#""10.42.0.0/16""#,
        r#"["10.42.0.0"]"#,
        r#"["10.42.0.0/33"]"#,
        r#"["$(touch /tmp/khard-x)/32"]"#,
        r#""Auto""#,
    ] {
        let vars = format!(r#"{{"cis_netpol_node_cidrs": {bad}}}"#);
        let (code, _, err) = khard(&[
            "apply",
            "--check",
            "-i",
            "inventories/localhost.yaml",
            "-e",
            &vars,
        ]);
        assert_eq!(code, 5, "{bad}: {err}");
        assert!(err.contains("cis_netpol_node_cidrs"), "{bad}: {err}");
    }
    assert!(!std::path::Path::new("/tmp/khard-x").exists());
}

/// `--shard` takes K/N with 1 <= K <= N; anything else is refused by name.
#[test]
fn shard_typos_are_refused() {
    for bad in ["0/3", "4/3", "1/0", "x", "1-3", "$(touch /tmp/x)/3"] {
        let (code, _, err) = khard(&[
            "apply",
            "--list-hosts",
            "-i",
            "inventories/localhost.yaml",
            "--shard",
            bad,
        ]);
        assert_eq!(code, 5, "{bad}: {err}");
        assert!(err.contains("--shard"), "{bad}: {err}");
    }
    let (code, out, err) = khard(&[
        "apply",
        "--list-hosts",
        "-i",
        "inventories/localhost.yaml",
        "--shard",
        "1/1",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("localhost"), "{out}");
}
