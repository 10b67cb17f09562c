//! Ansible semantics users rely on, and key types: handlers on failure,
//! any_errors_fatal, check mode with commands, the secrets-encryption guard.

mod common;

use std::process::Command;

use common::Fleet;

const V: &str = "v1.30.6+k3s1";

fn play(fleet: &Fleet, name: &str, text: &str) -> String {
    let p = fleet.dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn apply_play(fleet: &Fleet, play: &str, extra: &[&str]) -> common::Run {
    let (inv, kh) = (fleet.inventory(), fleet.known_hosts());
    let mut args = vec![
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        play,
    ];
    args.extend_from_slice(extra);
    fleet.khard(&args)
}

#[test]
fn ecdsa_and_rsa_keys_log_in() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}")]);
    let addr = fleet.hosts[0].1.clone();
    for (kind, bits) in [("ecdsa", "256"), ("rsa", "3072")] {
        let key = fleet.dir.join(format!("id_{kind}"));
        assert!(
            Command::new("ssh-keygen")
                .args([
                    "-q",
                    "-t",
                    kind,
                    "-b",
                    bits,
                    "-N",
                    "",
                    "-f",
                    key.to_str().unwrap()
                ])
                .status()
                .unwrap()
                .success()
        );
        let mut auth = std::fs::read_to_string(fleet.dir.join("authorized_keys")).unwrap();
        auth.push_str(&std::fs::read_to_string(key.with_extension("pub")).unwrap());
        std::fs::write(fleet.dir.join("authorized_keys"), auth).unwrap();
        let inv = fleet.dir.join(format!("{kind}.yaml"));
        std::fs::write(&inv, format!("all:\n  hosts:\n    s1: {{ansible_host: {addr}, ansible_user: root, k3s_role: server, ansible_ssh_private_key_file: {}}}\n", key.display())).unwrap();
        let run = fleet.khard(&[
            "apply",
            "-i",
            inv.to_str().unwrap(),
            "--known-hosts",
            fleet.known_hosts().to_str().unwrap(),
            "--check",
        ]);
        assert_eq!(run.code, 2, "{kind}: {}", run.all());
    }
}

#[test]
fn check_mode_reports_unguarded_commands_as_unknown_and_runs_none() {
    let fleet = Fleet::up(&[&format!("a1:agent:{V}")]);
    let p = play(
        &fleet,
        "cmd.yaml",
        "- hosts: all\n  tasks:\n    - name: unguarded\n      command: touch /etc/rancher/ran\n    - name: guarded and done\n      command: { cmd: touch /etc/rancher/ran2, creates: /etc/rancher }\n",
    );
    let run = apply_play(&fleet, &p, &["--check"]);
    assert_eq!(
        run.code,
        2,
        "an unknown outcome counts as drift: {}",
        run.all()
    );
    assert!(
        run.stdout.contains("unknown: [a1] unguarded")
            && run.stdout.contains("ok: [a1] guarded and done"),
        "{}",
        run.all()
    );
    assert!(
        fleet.read("a1", "/etc/rancher/ran").is_none(),
        "check mode ran a command"
    );
}

#[test]
fn handlers_do_not_run_after_a_later_failure_unless_forced() {
    let fleet = Fleet::up(&[&format!("a1:agent:{V}")]);
    let text = "- hosts: all\n  tasks:\n    - name: change\n      file: { dest: /etc/rancher/f, content: \"{{v}}\\n\" }\n      notify: restart it\n    - name: fail\n      command: exit 1\n  handlers:\n    - name: restart it\n      service: { name: k3s-agent, state: restarted }\n";
    let p = play(&fleet, "h.yaml", text);
    let run = apply_play(&fleet, &p, &["-e", "v=1"]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        fleet.restarts("a1").is_empty(),
        "handler ran on a failed host"
    );
    let forced = apply_play(&fleet, &p, &["-e", "v=2", "--force-handlers"]);
    assert_eq!(forced.code, 3, "{}", forced.all());
    assert_eq!(
        fleet.restarts("a1").len(),
        1,
        "--force-handlers runs notified handlers"
    );
}

#[test]
fn any_errors_fatal_writes_nothing_anywhere_when_one_host_fails_first() {
    let fleet = Fleet::up(&[
        &format!("a1:agent:{V}"),
        &format!("a2:agent:{V}"),
        &format!("a3:agent:{V}"),
    ]);
    // On a2 the destination folder is a file: its task fails before anything is written.
    std::fs::write(fleet.path("a2", "/etc/rancher/conf"), "not a folder").unwrap();
    let text = "- hosts: all\n  any_errors_fatal: true\n  tasks:\n    - name: folder\n      directory: { path: /etc/rancher/conf }\n    - name: file\n      file: { dest: /etc/rancher/other, content: \"x\\n\" }\n";
    let p = play(&fleet, "fatal.yaml", text);
    let run = apply_play(&fleet, &p, &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    for h in ["a1", "a3"] {
        assert!(
            !fleet.path(h, "/etc/rancher/conf").exists()
                && fleet.read(h, "/etc/rancher/other").is_none(),
            "{h} was written"
        );
    }
    assert!(run.stdout.contains("not applied"), "{}", run.all());
    // Without it, the healthy hosts go ahead.
    let lenient = play(
        &fleet,
        "lenient.yaml",
        &text.replace("  any_errors_fatal: true\n", ""),
    );
    let run = apply_play(&fleet, &lenient, &[]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        fleet.read("a1", "/etc/rancher/other").is_some()
            && fleet.read("a3", "/etc/rancher/other").is_some()
    );
}

#[test]
fn secrets_encryption_is_not_switched_on_for_a_running_cluster_without_opt_in() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}"), &format!("s2:server:{V}")]);
    for s in ["s1", "s2"] {
        std::fs::create_dir_all(fleet.path(s, "/var/lib/rancher/k3s/server")).unwrap();
        std::fs::write(
            fleet.path(s, "/var/lib/rancher/k3s/server/token"),
            "K10existing\n",
        )
        .unwrap();
    }
    let run = fleet.apply(&[]);
    assert_eq!(run.code, 3, "{}", run.all());
    assert!(
        run.stdout.contains("without secrets encryption"),
        "{}",
        run.all()
    );
    assert!(
        fleet
            .read("s1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .is_none(),
        "config written despite the guard"
    );
    let opted = fleet.apply(&["-e", "cis_secrets_encryption_on_running_cluster=true"]);
    assert_eq!(opted.code, 0, "{}", opted.all());
    assert!(
        fleet
            .read("s1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .unwrap()
            .contains("secrets-encryption: true")
    );
}

#[test]
fn symbolic_links_are_not_written_through_unless_the_task_says_follow() {
    let fleet = Fleet::up(&[&format!("a1:agent:{V}")]);
    std::fs::write(fleet.path("a1", "/etc/rancher/real.conf"), "old\n").unwrap();
    std::os::unix::fs::symlink(
        "/etc/rancher/real.conf",
        fleet.path("a1", "/etc/rancher/link.conf"),
    )
    .unwrap();
    let task = |follow: bool| {
        format!(
            "- hosts: all\n  tasks:\n    - name: through the link\n      file: {{ dest: /etc/rancher/link.conf, content: \"new\\n\", follow: {follow} }}\n"
        )
    };
    let refused = apply_play(&fleet, &play(&fleet, "nofollow.yaml", &task(false)), &[]);
    assert_eq!(refused.code, 3, "{}", refused.all());
    assert!(
        refused.stdout.contains("symbolic link"),
        "{}",
        refused.all()
    );
    assert_eq!(fleet.read("a1", "/etc/rancher/real.conf").unwrap(), "old\n");

    let p = play(&fleet, "follow.yaml", &task(true));
    let run = apply_play(&fleet, &p, &[]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert_eq!(fleet.read("a1", "/etc/rancher/real.conf").unwrap(), "new\n");
    assert!(
        std::fs::symlink_metadata(fleet.path("a1", "/etc/rancher/link.conf"))
            .unwrap()
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    let again = apply_play(&fleet, &p, &[]);
    assert!(
        again.code == 0 && again.recap("a1").contains("changed=0"),
        "{}",
        again.all()
    );
}
