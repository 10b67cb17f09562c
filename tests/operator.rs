//! The operator's world: ssh config and a bastion, ssh-agent, an encrypted
//! key, INI inventories, progress in a terminal and plain lines in CI.

mod common;

use std::process::Command;

use common::Fleet;

const V: &str = "v1.30.6+k3s1";

fn addr(fleet: &Fleet, host: &str) -> String {
    fleet.hosts.iter().find(|h| h.0 == host).unwrap().1.clone()
}

#[test]
fn ssh_config_aliases_and_proxyjump_through_a_bastion() {
    let fleet = Fleet::up_with(
        &[
            "bastion:agent",
            &format!("s1:server:{V}"),
            &format!("a1:agent:{V}"),
        ],
        &["--bastion", "bastion"],
    );
    let (_, veth) = fleet.bastion().expect("bastion");
    let key = fleet.dir.join("id_ed25519");
    let kh = fleet.known_hosts();
    let cfg = fleet.dir.join("ssh_config");
    std::fs::write(
        &cfg,
        format!(
            "Host jumpbox\n  HostName {veth}\n  User root\n  IdentityFile {k}\nHost node-*\n  User root\n  IdentityFile {k}\n  ProxyJump jumpbox\n  StrictHostKeyChecking yes\nHost node-s1\n  HostName {s1}\nHost node-a1\n  HostName {a1}\n",
            k = key.display(),
            s1 = addr(&fleet, "s1"),
            a1 = addr(&fleet, "a1"),
        ),
    )
    .unwrap();
    let inv = fleet.dir.join("aliases.yaml");
    std::fs::write(&inv, "k3s_cluster:\n  children:\n    server:\n      hosts:\n        s1: {ansible_host: node-s1}\n    agent:\n      hosts:\n        a1: {ansible_host: node-a1}\n").unwrap();

    // The targets cannot be reached directly from the runner's network.
    let direct = fleet.khard_in_runner(&[
        "apply",
        "-i",
        fleet.inventory().to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--limit",
        "s1:a1",
        "--check",
    ]);
    assert_eq!(
        direct.code,
        4,
        "targets must be unreachable directly: {}",
        direct.all()
    );

    let run = fleet.khard_in_runner(&[
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "-F",
        cfg.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}", run.all());
    assert!(
        fleet
            .read("s1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
            .is_some()
            && fleet
                .read("a1", "/etc/rancher/k3s/config.yaml.d/99-khard-cis.yaml")
                .is_some()
    );
    assert!(
        fleet
            .sshd_log("bastion")
            .contains("Accepted publickey for root"),
        "the bastion was not used"
    );

    // The same bastion from an Ansible inventory variable, the jump's key from the ssh config.
    let cfg2 = fleet.dir.join("ssh_config_jump_only");
    std::fs::write(
        &cfg2,
        format!("Host {veth}\n  IdentityFile {}\n", key.display()),
    )
    .unwrap();
    let inv2 = fleet.dir.join("common_args.yaml");
    std::fs::write(
        &inv2,
        format!(
            "all:\n  hosts:\n    s1: {{ansible_host: {}, k3s_role: server}}\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n    ansible_ssh_common_args: '-o ProxyJump=root@{veth}'\n",
            addr(&fleet, "s1"),
            key.display()
        ),
    )
    .unwrap();
    let again = fleet.khard_in_runner(&[
        "apply",
        "-i",
        inv2.to_str().unwrap(),
        "-F",
        cfg2.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(
        again.code,
        0,
        "nothing left to change, through the bastion: {}",
        again.all()
    );
    // Two hops: the bastion, then a1 (reachable only from inside), then s1.
    let a1_sessions = fleet.sshd_log("a1").matches("Accepted publickey").count();
    let cfg3 = fleet.dir.join("ssh_config_two_hops");
    std::fs::write(
        &cfg3,
        format!(
            "Host {veth} {a1}\n  IdentityFile {k}\n",
            a1 = addr(&fleet, "a1"),
            k = key.display()
        ),
    )
    .unwrap();
    let inv3 = fleet.dir.join("two_hops.yaml");
    std::fs::write(
        &inv3,
        format!(
            "all:\n  hosts:\n    s1: {{ansible_host: {}, k3s_role: server}}\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {}\n    khard_proxy_jump: 'root@{veth},root@{}'\n",
            addr(&fleet, "s1"),
            key.display(),
            addr(&fleet, "a1")
        ),
    )
    .unwrap();
    let hops = fleet.khard_in_runner(&[
        "apply",
        "-i",
        inv3.to_str().unwrap(),
        "-F",
        cfg3.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(hops.code, 0, "through two hops: {}", hops.all());
    assert_eq!(
        fleet.sshd_log("a1").matches("Accepted publickey").count(),
        a1_sessions + 1,
        "a1 was the second hop"
    );

    // Ansible's documented bastion recipe: a ProxyCommand with OpenSSH's `ssh -W`.
    let inv4 = fleet.dir.join("proxy_command.yaml");
    std::fs::write(
        &inv4,
        format!(
            "all:\n  hosts:\n    s1: {{ansible_host: {}, k3s_role: server}}\n  vars:\n    ansible_user: root\n    ansible_ssh_private_key_file: {k}\n    ansible_ssh_common_args: '-o ProxyCommand=\"ssh -i {k} -o UserKnownHostsFile={kh} -o StrictHostKeyChecking=yes -o BatchMode=yes -W %h:%p root@{veth}\"'\n",
            addr(&fleet, "s1"),
            k = key.display(),
            kh = kh.display(),
        ),
    )
    .unwrap();
    let bastion_logins = fleet
        .sshd_log("bastion")
        .matches("Accepted publickey")
        .count();
    let proxied = fleet.khard_in_runner(&[
        "apply",
        "-i",
        inv4.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--check",
    ]);
    assert_eq!(proxied.code, 0, "through a ProxyCommand: {}", proxied.all());
    assert_eq!(
        fleet
            .sshd_log("bastion")
            .matches("Accepted publickey")
            .count(),
        bastion_logins + 1,
        "the ProxyCommand went through the bastion"
    );
}

#[test]
fn ssh_agent_and_an_encrypted_key() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}"), &format!("a1:agent:{V}")]);
    let kh = fleet.known_hosts();
    let home = fleet.dir.join("emptyhome");
    std::fs::create_dir_all(&home).unwrap();
    // An inventory without a key file: the agent must provide it.
    let inv = fleet.dir.join("agent.yaml");
    std::fs::write(&inv, format!("all:\n  hosts:\n    s1: {{ansible_host: {}}}\n    a1: {{ansible_host: {}}}\n  vars: {{ansible_user: root, k3s_role: agent}}\n", addr(&fleet, "s1"), addr(&fleet, "a1"))).unwrap();
    let sock = fleet.dir.join("agent.sock");
    let agent = Command::new("ssh-agent")
        .arg("-a")
        .arg(&sock)
        .output()
        .unwrap();
    assert!(agent.status.success());
    let agent_pid = String::from_utf8_lossy(&agent.stdout)
        .split("SSH_AGENT_PID=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let added = Command::new("ssh-add")
        .arg(fleet.dir.join("id_ed25519"))
        .env("SSH_AUTH_SOCK", &sock)
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "{}",
        String::from_utf8_lossy(&added.stderr)
    );
    let with_agent = fleet.khard_with(
        &[
            "apply",
            "-i",
            inv.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            "--check",
        ],
        &[
            ("SSH_AUTH_SOCK", sock.to_str().unwrap()),
            ("HOME", home.to_str().unwrap()),
        ],
        "",
    );
    Command::new("kill").arg(&agent_pid).status().unwrap();
    assert_eq!(with_agent.code, 2, "{}", with_agent.all());
    let without = fleet.khard_with(
        &[
            "apply",
            "-i",
            inv.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            "--check",
        ],
        &[("HOME", home.to_str().unwrap())],
        "",
    );
    assert_eq!(
        without.code,
        4,
        "no agent and no key: unreachable: {}",
        without.all()
    );
    assert!(
        without.stdout.contains("no key to log in"),
        "{}",
        without.all()
    );

    // An encrypted key: its passphrase is asked once, on the terminal, for
    // both hosts, before any connection starts: typed 1.5 s after the prompt,
    // longer than the 1 s connect timeout, it still reaches both hosts.
    let enc = fleet.dir.join("id_encrypted");
    assert!(
        Command::new("ssh-keygen")
            .args([
                "-q",
                "-t",
                "ed25519",
                "-N",
                "open sesame",
                "-f",
                enc.to_str().unwrap()
            ])
            .status()
            .unwrap()
            .success()
    );
    let mut auth = std::fs::read_to_string(fleet.dir.join("authorized_keys")).unwrap();
    auth.push_str(&std::fs::read_to_string(enc.with_extension("pub")).unwrap());
    std::fs::write(fleet.dir.join("authorized_keys"), auth).unwrap();
    let inv2 = fleet.dir.join("encrypted.yaml");
    std::fs::write(&inv2, format!("all:\n  hosts:\n    s1: {{ansible_host: {}}}\n    a1: {{ansible_host: {}}}\n  vars: {{ansible_user: root, k3s_role: agent, ansible_ssh_private_key_file: {}}}\n", addr(&fleet, "s1"), addr(&fleet, "a1"), enc.display())).unwrap();
    let args = [
        "apply",
        "-i",
        inv2.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--check",
        "--connect-timeout",
        "1",
    ];
    let run = fleet.khard_in_pty(&args, Some("open sesame\n"));
    assert!(run.stdout.contains("PLAY RECAP"), "{}", run.all());
    assert_eq!(
        run.stdout.matches("Enter passphrase").count(),
        1,
        "asked once: {}",
        run.all()
    );
    assert!(
        run.stdout.contains("unreachable=0") && !run.stdout.contains("unreachable=1"),
        "{}",
        run.all()
    );
}

#[test]
fn ini_and_yaml_inventories_give_the_same_plan() {
    let fleet = Fleet::up(&[
        &format!("s1:server:{V}"),
        &format!("a1:agent:{V}"),
        &format!("a2:agent:{V}"),
    ]);
    let key = fleet.dir.join("id_ed25519");
    let ini = fleet.dir.join("inventory.ini");
    std::fs::write(
        &ini,
        format!(
            "# the k3s-ansible layout, in INI\n[server]\ns1 ansible_host={}\n\n[agent]\na1 ansible_host={}\na2 ansible_host={}\n\n[k3s_cluster:children]\nserver\nagent\n\n[k3s_cluster:vars]\nansible_user=root\nansible_ssh_private_key_file={}\n",
            addr(&fleet, "s1"),
            addr(&fleet, "a1"),
            addr(&fleet, "a2"),
            key.display()
        ),
    )
    .unwrap();
    let kh = fleet.known_hosts();
    let plan = |inv: &std::path::Path| -> (String, Vec<(String, String, String)>) {
        let listed = fleet.khard(&["apply", "-i", inv.to_str().unwrap(), "--list-hosts"]);
        assert_eq!(listed.code, 0, "{}", listed.all());
        let run = fleet.khard(&[
            "apply",
            "-i",
            inv.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            "--check",
            "--format",
            "json",
        ]);
        assert_eq!(run.code, 2, "{}", run.all());
        let doc: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let mut events: Vec<(String, String, String)> = doc["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["host"].as_str().unwrap().into(),
                    e["task"].as_str().unwrap().into(),
                    e["status"].as_str().unwrap().into(),
                )
            })
            .collect();
        events.sort();
        (listed.stdout, events)
    };
    let from_yaml = plan(&fleet.inventory());
    let from_ini = plan(&ini);
    assert_eq!(from_yaml.0, from_ini.0, "--list-hosts differs");
    assert_eq!(from_yaml.1, from_ini.1, "the plans differ");
}

#[test]
fn progress_in_a_terminal_plain_lines_without_one() {
    let fleet = Fleet::up(&[&format!("s1:server:{V}"), &format!("a1:agent:{V}")]);
    let plain = fleet.apply(&["--check"]);
    assert_eq!(plain.code, 2, "{}", plain.all());
    assert!(
        !plain.stdout.contains('\x1b'),
        "escape codes without a terminal: {:?}",
        plain.stdout
    );
    let (inv, kh) = (fleet.inventory(), fleet.known_hosts());
    let tty = fleet.khard_in_pty(
        &[
            "apply",
            "-i",
            inv.to_str().unwrap(),
            "--known-hosts",
            kh.to_str().unwrap(),
            "--check",
        ],
        None,
    );
    let out = &tty.stdout;
    assert!(
        out.contains("\x1b[") && out.contains(" steps"),
        "no progress drawn in a terminal: {out:?}"
    );
    assert!(out.contains("PLAY RECAP"), "{out}");
    let quiet = fleet.apply(&["--check", "-q"]);
    assert!(
        !quiet.stdout.contains("would change") && quiet.stdout.contains("PLAY RECAP"),
        "{}",
        quiet.all()
    );
    let verbose = fleet.apply(&["--check", "-v"]);
    assert!(
        verbose
            .stdout
            .contains("/etc/sysctl.d/90-kubelet.conf: create"),
        "{}",
        verbose.all()
    );
}

#[test]
fn completions_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(env!("CARGO_BIN_EXE_khard"))
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains("khard") && text.contains("apply") && text.contains("check"),
            "{shell}"
        );
    }
}
