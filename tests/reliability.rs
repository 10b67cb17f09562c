//! Reliability and security promises against real sshd hosts: host keys,
//! privilege, careful writes, faults, interrupts and bad input.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Fleet, Run};

const V: &str = "v1.30.6+k3s1";
const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

fn accepted(fleet: &Fleet, host: &str) -> usize {
    fleet.sshd_log(host).matches("Accepted publickey").count()
}

/// khard apply with a given known_hosts file.
fn apply_with_known_hosts(fleet: &Fleet, known_hosts: &std::path::Path, extra: &[&str]) -> Run {
    let inv = fleet.inventory();
    let mut args = vec![
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        known_hosts.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    fleet.khard(&args)
}

#[test]
fn host_keys_unknown_refused_changed_refused_new_learnt_once() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}"), &format!("a1:agent:{V}")]);
    let before = fleet.snapshot("s1");

    // Unknown: refused, nothing written, a message that says how to trust it.
    let empty = fleet.dir.join("empty_known_hosts");
    std::fs::write(&empty, "").unwrap();
    let run = apply_with_known_hosts(&fleet, &empty, &[]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stdout.contains("host key refused") && run.stdout.contains("--accept-new-host-keys"),
        "{}",
        run.all()
    );
    assert_eq!(fleet.snapshot("s1"), before);
    assert_eq!(accepted(&fleet, "s1"), 0);

    // Changed: refused even with --accept-new-host-keys, naming file and line.
    let other = fleet.dir.join("other_key");
    Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-f",
            other.to_str().unwrap(),
        ])
        .status()
        .unwrap();
    let pubkey = std::fs::read_to_string(other.with_extension("pub")).unwrap();
    let addr = &fleet.hosts.iter().find(|h| h.0 == "s1").unwrap().1;
    let changed = fleet.dir.join("changed_known_hosts");
    let real = std::fs::read_to_string(fleet.known_hosts()).unwrap();
    let a1_line = real
        .lines()
        .find(|l| !l.starts_with(&format!("{addr} ")))
        .unwrap();
    std::fs::write(
        &changed,
        format!(
            "# managed by hand\n{addr} {}{a1_line}\n",
            pubkey
                .split_whitespace()
                .take(2)
                .collect::<Vec<_>>()
                .join(" ")
                + "\n"
        ),
    )
    .unwrap();
    let run = apply_with_known_hosts(&fleet, &changed, &["--accept-new-host-keys"]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stdout.contains("CHANGED")
            && run
                .stdout
                .contains(&format!("{} line 2", changed.display())),
        "{}",
        run.all()
    );
    assert_eq!(fleet.snapshot("s1"), before);
    assert!(
        run.recap("a1").contains("unreachable=0"),
        "the other host still ran: {}",
        run.all()
    );
}

#[test]
fn accept_new_learns_each_of_many_hosts_exactly_once() {
    let fleet = Fleet::up(&["--count", "30", "--version", V]);
    let learnt = fleet.dir.join("learnt_known_hosts");
    let run = apply_with_known_hosts(&fleet, &learnt, &["--accept-new-host-keys", "--check"]);
    assert_eq!(run.code, 2, "{}", run.all());
    let text = std::fs::read_to_string(&learnt).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 30, "{text}");
    for (_, addr, _, _) in &fleet.hosts {
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.split_whitespace().next() == Some(addr.as_str()))
                .count(),
            1,
            "{addr}"
        );
    }
    assert!(
        lines.iter().all(|l| l.split_whitespace().count() == 3),
        "interleaved lines: {text}"
    );
    // Strict again with the learnt file: every host is known.
    let strict = apply_with_known_hosts(&fleet, &learnt, &["--check"]);
    assert_eq!(strict.code, 2, "{}", strict.all());
    assert_eq!(
        std::fs::read_to_string(&learnt).unwrap(),
        text,
        "strict mode wrote to known_hosts"
    );
}

/// A non-root login user with sudo: passwordless on one host, with a password on another.
#[test]
fn sudo_with_and_without_password_and_a_wrong_password_stops_after_one_host() {
    let fleet = Fleet::up(&[
        &format!("nopw:server:{V}"),
        &format!("pw1:agent:{V}"),
        &format!("pw2:agent:{V}"),
    ]);
    let user = "khardtest";
    let password = "correct-horse-battery-42";
    if Command::new("id")
        .arg(user)
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        assert!(
            Command::new("useradd")
                .args(["-m", "-s", "/bin/sh", user])
                .status()
                .unwrap()
                .success()
        );
    }
    let mut chpasswd = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    chpasswd
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{user}:{password}\n").as_bytes())
        .unwrap();
    assert!(chpasswd.wait().unwrap().success());
    for (host, rule) in [("nopw", "NOPASSWD: ALL"), ("pw1", "ALL"), ("pw2", "ALL")] {
        let f = fleet.path(host, "/etc/sudoers.d/khardtest");
        std::fs::write(&f, format!("{user} ALL=(ALL) {rule}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o440)).unwrap();
    }
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let base = [
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "-e",
        "ansible_user=khardtest",
        "--tags",
        "kernel",
        "--skip-tags",
        "config",
    ];

    // Without a password: sudo -n works where no password is needed.
    let mut args = base.to_vec();
    args.extend(["--limit", "nopw", "--become"]);
    let run = fleet.khard(&args);
    assert_eq!(run.code, 0, "{}", run.all());
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        std::fs::metadata(fleet.path("nopw", "/etc/sysctl.d/90-kubelet.conf"))
            .unwrap()
            .uid(),
        0
    );

    // A wrong password: tried on the first host only.
    let with_password = |pw: &str, limit: &str| -> Run {
        let mut args = base.to_vec();
        args.extend(["--limit", limit, "-K"]);
        fleet.khard_with(&args, &[], &format!("{pw}\n"))
    };
    let wrong = with_password("not-the-password", "pw1:pw2");
    assert_eq!(wrong.code, 3, "{}", wrong.all());
    assert!(
        wrong.stdout.contains("rejected") && wrong.stdout.contains("no other host was tried"),
        "{}",
        wrong.all()
    );
    assert_eq!(
        accepted(&fleet, "pw2"),
        0,
        "pw2 was contacted after a wrong password"
    );
    assert!(fleet.read("pw1", "/etc/sysctl.d/90-kubelet.conf").is_none());

    // The right password: asked once, works on both.
    let right = with_password(password, "pw1:pw2");
    assert_eq!(right.code, 0, "{}", right.all());
    for h in ["pw1", "pw2"] {
        assert!(
            fleet.read(h, "/etc/sysctl.d/90-kubelet.conf").is_some(),
            "{h}"
        );
    }
    // Missing sudo rights: the host answered, sudo refused. Failed (exit 3)
    // with sudo's own message, not unreachable.
    let mut args = base.to_vec();
    args.extend(["--limit", "pw1", "--become"]);
    let refused = fleet.khard(&args);
    assert_eq!(refused.code, 3, "{}", refused.all());
    assert!(
        refused
            .stdout
            .contains("failed: [pw1] become => become (sudo) was refused: sudo:")
            && !refused.stdout.contains("Some("),
        "{}",
        refused.all()
    );
    // The real sudo asked for a password: the message says how to give one.
    assert!(
        refused
            .stdout
            .contains("give it with -K / --ask-become-pass")
            && refused.stdout.contains("NOPASSWD"),
        "{}",
        refused.all()
    );

    // ansible_become_password from the inventory (vars), as Ansible reads it.
    std::fs::remove_file(fleet.path("pw2", "/etc/sysctl.d/90-kubelet.conf")).unwrap();
    let pw_var = format!("ansible_become_password={password}");
    let mut args = base.to_vec();
    args.extend(["--limit", "pw2", "--become", "-e", &pw_var]);
    let from_vars = fleet.khard(&args);
    assert_eq!(from_vars.code, 0, "{}", from_vars.all());
    assert!(fleet.read("pw2", "/etc/sysctl.d/90-kubelet.conf").is_some());
    // A wrong one from the inventory: sudo answered and refused, a failure
    // of that host (exit 3), not unreachable.
    let mut args = base.to_vec();
    args.extend([
        "--limit",
        "pw2",
        "--become",
        "-e",
        "ansible_become_password=not-the-password",
    ]);
    let wrong_var = fleet.khard(&args);
    assert_eq!(wrong_var.code, 3, "{}", wrong_var.all());
    assert!(
        wrong_var
            .stdout
            .contains("failed: [pw2] become => become (sudo) was refused"),
        "{}",
        wrong_var.all()
    );

    for r in [&wrong, &right, &refused, &from_vars] {
        assert!(
            !r.stdout.contains(password) && !r.stderr.contains(password),
            "password leaked: {}",
            r.all()
        );
    }
}

#[test]
fn a_host_that_dies_mid_run_is_reported_while_the_others_finish() {
    let fleet = Fleet::up(&[
        &format!("h1:agent:{V}"),
        &format!("h2:agent:{V}"),
        &format!("h3:agent:{V}"),
    ]);
    let play = fleet.dir.join("slow.yaml");
    // The slow task says when it runs: the host dies mid-run, not before.
    std::fs::write(&play, "- hosts: all\n  tasks:\n    - name: slow\n      command: \"touch /etc/rancher/started && sleep 3\"\n    - name: after\n      file: { dest: /etc/rancher/done, content: \"x\\n\" }\n").unwrap();
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let child = fleet.spawn_khard(
        &[
            "apply",
            "-i",
            inv.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            play.to_str().unwrap(),
        ],
        &[],
    );
    wait_until("h2's slow task started", || {
        fleet.read("h2", "/etc/rancher/started").is_some()
    });
    let pid = std::fs::read_to_string(fleet.host_dir("h2").join("sshd.pid")).unwrap();
    Command::new("kill")
        .args(["-9", pid.trim()])
        .status()
        .unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(run.recap("h2").contains("unreachable=1"), "{}", run.all());
    for h in ["h1", "h3"] {
        assert!(
            run.recap(h).contains("failed=0") && run.recap(h).contains("unreachable=0"),
            "{}",
            run.all()
        );
        assert!(
            fleet.read(h, "/etc/rancher/done").is_some(),
            "{h} did not finish"
        );
    }
}

#[test]
fn a_read_only_or_full_folder_keeps_the_old_file() {
    let fleet = Fleet::up(&[
        &format!("ro:agent:{V}"),
        &format!("full:agent:{V}"),
        &format!("ok:agent:{V}"),
    ]);
    // Read-only: an immutable folder (even root cannot create the temp file in it).
    let old = "vm.overcommit_memory=0\n";
    std::fs::write(fleet.path("ro", "/etc/sysctl.d/90-kubelet.conf"), old).unwrap();
    let dir = fleet.path("ro", "/etc/sysctl.d");
    assert!(
        Command::new("chattr")
            .arg("+i")
            .arg(&dir)
            .status()
            .unwrap()
            .success()
    );
    // Full: a tiny file system over /etc/rancher inside the host's mount namespace, filled up.
    let pid = std::fs::read_to_string(fleet.host_dir("full").join("sshd.pid")).unwrap();
    let nsenter = |cmd: &str| {
        Command::new("nsenter")
            .args(["-t", pid.trim(), "-m", "sh", "-c", cmd])
            .output()
            .unwrap()
    };
    let out = nsenter(
        "mount -t tmpfs -o size=64k tmpfs /etc/rancher && mkdir /etc/rancher/k3s && printf 'old: config\\n' > /etc/rancher/k3s/config.yaml && (dd if=/dev/zero of=/etc/rancher/fill bs=1k count=200 2>/dev/null; true)",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let run = fleet.apply(&[]);
    let _ = Command::new("chattr").arg("-i").arg(&dir).status();
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.recap("ro").contains("failed=1") && run.recap("full").contains("failed=1"),
        "{}",
        run.all()
    );
    assert!(run.recap("ok").contains("failed=0"), "{}", run.all());
    assert_eq!(
        std::fs::read_to_string(fleet.path("ro", "/etc/sysctl.d/90-kubelet.conf")).unwrap(),
        old
    );
    let inside = nsenter("cat /etc/rancher/k3s/config.yaml; ls -a /etc/rancher/k3s");
    let inside = String::from_utf8_lossy(&inside.stdout);
    assert!(inside.starts_with("old: config\n"), "{inside}");
    assert!(!inside.contains(".khard"), "temp file left: {inside}");
    assert!(
        fleet
            .snapshot("ro")
            .iter()
            .all(|(p, _, _)| !p.contains(".khard"))
    );
    assert!(
        fleet.restarts("full").is_empty() && fleet.restarts("ro").is_empty(),
        "a failed host restarted k3s"
    );
}

#[test]
fn sigint_mid_run_leaves_every_file_old_or_new_and_no_temp_files() {
    let specs: Vec<String> = (1..=6).map(|i| format!("n{i}:agent:{V}")).collect();
    let specs: Vec<&str> = specs.iter().map(String::as_str).collect();
    let fleet = Fleet::up_with(&specs, &["--restart-down", "1"]);
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let args = [
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--agent-batch",
        "1",
        "-e",
        "k3s_health_interval=0.2",
    ];
    let child = fleet.spawn_khard(&args, &[]);
    // The rollout restarts one agent at a time, ~1 s each: interrupt it
    // once it has begun (a restart was counted), so "mid-rollout" is true.
    let restarts = || -> usize {
        (1..=6)
            .map(|i| fleet.restarts(&format!("n{i}")).len())
            .sum()
    };
    wait_until("the rollout's first restart", || restarts() >= 1);
    Command::new("pkill")
        .args([
            "-INT",
            "-f",
            &format!("{} apply -i {}", env!("CARGO_BIN_EXE_khard"), inv.display()),
        ])
        .status()
        .unwrap();
    let run = Run::from(child.wait_with_output().unwrap());
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        run.stdout.contains("PLAY RECAP"),
        "the recap is printed: {}",
        run.all()
    );
    let restarted = restarts();
    assert!(
        (1..6).contains(&restarted),
        "{restarted} restarts: the rollout had begun and stopped at Ctrl-C"
    );
    // The agents Ctrl-C kept from their restart are pending (changed, not
    // restarted), as after a failure, never skipped or failed.
    let pending = run
        .stdout
        .lines()
        .filter(|l| {
            l.starts_with("pending: [n") && l.contains("=> interrupted before this host's turn")
        })
        .count();
    assert!(pending >= 1, "{}", run.all());
    assert!(!run.stdout.contains("skipped: [n"), "{}", run.all());
    let reference = fleet
        .read("n1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
        .expect("written before the rollout");
    for i in 1..=6 {
        let host = format!("n{i}");
        if let Some(cfg) = fleet.read(&host, "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml") {
            assert_eq!(cfg, reference, "{host} has a partial file");
        }
        assert!(
            fleet
                .snapshot(&host)
                .iter()
                .all(|(p, _, _)| !p.contains(".khard")),
            "{host}: temp file left"
        );
    }
}

/// A second Ctrl-C stops at once, and still prints the recap of what was
/// reported (it used to exit 130 with nothing).
#[test]
fn a_second_ctrl_c_stops_at_once_with_the_recap() {
    let fleet = Fleet::up_with(&[&format!("s1:server:{V}")], &["--restart-down", "30"]);
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let args = [
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "-e",
        "k3s_health_interval=0.2 k3s_health_timeout=60",
    ];
    let child = fleet.spawn_khard(&args, &[]);
    // The restart keeps the API down 30 s: khard waits in the health gate.
    wait_until("the restart", || !fleet.restarts("s1").is_empty());
    let pattern = format!("{} apply -i {}", env!("CARGO_BIN_EXE_khard"), inv.display());
    let int = || {
        Command::new("pkill")
            .args(["-INT", "-f", &pattern])
            .status()
            .unwrap()
    };
    int();
    std::thread::sleep(Duration::from_millis(500));
    int();
    let started = std::time::Instant::now();
    let run = Run::from(child.wait_with_output().unwrap());
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "it did not stop at once"
    );
    assert_eq!(run.code, 130, "{}", run.all());
    assert!(
        run.stderr.contains("khard: stopped at once"),
        "{}",
        run.all()
    );
    assert!(run.stdout.contains("PLAY RECAP"), "{}", run.all());
    assert!(run.stdout.contains("s1 "), "{}", run.all());
}

/// A private key file missing for one host makes that host unreachable;
/// the others proceed (as in Ansible), instead of the whole run stopping.
#[test]
fn a_missing_key_file_fails_only_its_host() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}"), &format!("a1:agent:{V}")]);
    let inv = std::fs::read_to_string(fleet.inventory()).unwrap();
    let missing = fleet.dir.join("no-such-key");
    let inv = inv.replacen(
        "a1: {",
        &format!(
            "a1: {{ ansible_ssh_private_key_file: {}, ",
            missing.display()
        ),
        1,
    );
    assert!(inv.contains("no-such-key"), "{inv}");
    let path = fleet.dir.join("missing-key.yaml");
    std::fs::write(&path, inv).unwrap();
    let kh = fleet.known_hosts();
    let run = fleet.khard(&[
        "apply",
        "--check",
        "-i",
        path.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stdout.contains("unreachable: [a1]") && run.stdout.contains("no-such-key"),
        "{}",
        run.all()
    );
    let s1 = run
        .stdout
        .lines()
        .find(|l| l.starts_with("s1 ") && l.contains(" : ok="))
        .unwrap_or_else(|| panic!("{}", run.all()));
    assert!(
        s1.contains("unreachable=0") && !s1.contains("ok=0 "),
        "{s1}"
    );
}

#[test]
fn bad_input_is_refused_before_any_connection() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}")]);
    let inv = fleet.inventory();
    let kh = fleet.known_hosts();
    let bad = |name: &str| format!("{FIXTURES}/bad/{name}");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["-i".into(), bad("inv-malformed.yaml")],
            "inv-malformed.yaml:2:",
        ),
        (
            vec!["-i".into(), bad("inv-unknown-key.yaml")],
            "did you mean `hosts`",
        ),
        (vec!["-i".into(), bad("inv-cycle.yaml")], "cycle"),
        (
            vec!["-i".into(), bad("inv-duplicate-group.yaml")],
            "duplicate key `a`",
        ),
        (
            vec!["-i".into(), bad("inv-bad-port.yaml")],
            "not a port number",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-unknown-module.yaml"),
            ],
            "did you mean `file`",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-wrong-type.yaml"),
            ],
            "play-wrong-type.yaml:2:",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-undefined-var.yaml"),
            ],
            "`nope` is not defined",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-missing-role.yaml"),
            ],
            "role `no_such_role` not found",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-missing-template.yaml"),
            ],
            "no templates/missing.hbs",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-bad-when.yaml"),
            ],
            "play-bad-when.yaml:3:5: .[0].tasks: when `k3s_role ==`",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-unknown-handler.yaml"),
            ],
            "did you mean `restart k3s`",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                bad("play-not-utf8.yaml"),
            ],
            "play-not-utf8.yaml:3:1: not valid UTF-8",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                "--limit".into(),
                "s1:nosuch".into(),
            ],
            "`nosuch` is neither a host nor a group",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                "--tags".into(),
                "no-such-tag".into(),
            ],
            "no task has the tag",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                "--forks".into(),
                "0".into(),
            ],
            "--forks",
        ),
        (
            vec![
                "-i".into(),
                inv.display().to_string(),
                "--bogus-flag".into(),
            ],
            "--bogus-flag",
        ),
    ];
    for (args, expect) in cases {
        let mut all: Vec<&str> = vec!["apply", "--known-hosts", kh.to_str().unwrap()];
        all.extend(args.iter().map(String::as_str));
        let run = fleet.khard(&all);
        assert_eq!(run.code, 5, "{args:?}: {}", run.all());
        assert!(
            run.stderr.contains(expect),
            "{args:?}: expected `{expect}` in:\n{}",
            run.stderr
        );
    }
    assert_eq!(
        accepted(&fleet, "s1"),
        0,
        "a host was contacted despite bad input"
    );
    // The count above can see a connection: a valid run makes exactly one.
    let ok = fleet.apply(&["--check"]);
    assert_eq!(ok.code, 2, "{}", ok.all());
    assert_eq!(accepted(&fleet, "s1"), 1, "one connection per host per run");
}

#[test]
fn timeouts_fail_the_slow_task_and_the_silent_host_only() {
    let fleet = Fleet::up(&[&format!("h1:agent:{V}"), &format!("h2:agent:{V}")]);
    // A task over its own timeout fails with a clear message, and fast.
    let play = fleet.dir.join("timeout.yaml");
    std::fs::write(
        &play,
        "- hosts: all\n  tasks:\n    - name: quick\n      file: { dest: /etc/rancher/quick, content: \"x\\n\" }\n    - name: slow\n      timeout: 1\n      command: sleep 30\n",
    )
    .unwrap();
    let (inv, kh) = (fleet.inventory(), fleet.known_hosts());
    // The proof that the timeout acted is coreutils' own word, not a clock.
    let run = fleet.khard(&[
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        play.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout
            .contains("failed: [h1] slow => timed out after 1s"),
        "{}",
        run.all()
    );
    assert!(fleet.read("h1", "/etc/rancher/quick").is_some());

    // A host that accepts TCP but never speaks SSH is unreachable after --connect-timeout;
    // the others are not held up.
    let silent = "127.0.9.9";
    let listener = Command::new("ip")
        .args(["netns", "exec", &fleet.netns, "python3", "-c"])
        .arg(format!("import socket,time\ns=socket.socket()\ns.bind(('{silent}',22))\ns.listen(5)\nc=s.accept()\ntime.sleep(60)\n"))
        .spawn()
        .unwrap();
    wait_until("the silent listener", || {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &fleet.netns,
                "ss",
                "-Hltn",
                &format!("src {silent}:22"),
            ])
            .output()
            .is_ok_and(|o| !o.stdout.is_empty())
    });
    let inv2 = fleet.dir.join("with-silent.yaml");
    let text = std::fs::read_to_string(&inv).unwrap().replace(
        "  vars:\n",
        &format!("  hosts:\n    silent: {{ ansible_host: {silent}, k3s_role: agent }}\n  vars:\n"),
    );
    std::fs::write(&inv2, text).unwrap();
    // The proof that the connect timeout acted is khard's message naming it
    // (the listener accepts and stays silent for 60 s), not a clock.
    let run = fleet.khard(&[
        "apply",
        "-i",
        inv2.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--check",
        "--connect-timeout",
        "2",
        "--tags",
        "kernel",
        "--skip-tags",
        "config",
    ]);
    let mut listener = listener;
    let _ = listener.kill();
    let _ = listener.wait();
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.stdout.contains(
            "unreachable: [silent] connect => silent: connect to 127.0.9.9:22 timed out after 2s"
        ),
        "{}",
        run.all()
    );
    assert!(
        run.recap("h1").contains("unreachable=0") && run.recap("h2").contains("unreachable=0"),
        "{}",
        run.all()
    );
}

/// Waits for an event the test can see (a file, a count, a port), never a
/// fixed time; gives up after 60 s with what it waited for.
fn wait_until(what: &str, done: impl Fn() -> bool) {
    for _ in 0..600 {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("waited 60 s for {what}");
}
