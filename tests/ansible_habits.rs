//! What Ansible users bring: their flags, YAML 1.1 booleans, fully
//! qualified module names, k3s-ansible's older group names, and flags
//! khard does not have, which say so.

mod common;

use std::process::Command;

use common::Fleet;

fn khard(dir: &std::path::Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn scratch(name: &str) -> common::Scratch {
    common::Scratch::new(&format!("habits-{name}"))
}

#[test]
fn yaml_1_1_booleans_fqcn_modules_start_at_task_and_dash_c_local() {
    let d = scratch("play");
    // No ansible_connection in the inventory: `-c local` supplies it.
    std::fs::write(
        d.join("inv.yaml"),
        "all:\n  hosts:\n    here:\n      ansible_become: no\n",
    )
    .unwrap();
    std::fs::write(
        d.join("play.yaml"),
        format!(
            "- hosts: all\n  become: no\n  gather_facts: no\n  any_errors_fatal: yes\n  tasks:\n    - name: first\n      ansible.builtin.command: {{ cmd: \"touch {0}/first\" }}\n    - name: second\n      ansible.builtin.command:\n        cmd: \"touch {0}/second\"\n        creates: {0}/second\n      run_once: Yes\n    - name: third\n      file: {{ dest: {0}/third, content: \"x\\n\", backup: on }}\n",
            d.display()
        ),
    )
    .unwrap();
    let (code, out) = khard(
        &d,
        &["apply", "-i", "inv.yaml", "play.yaml", "--syntax-check"],
    );
    assert_eq!(code, 0, "{out}");
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "inv.yaml",
            "-c",
            "local",
            "--start-at-task",
            "second",
            "play.yaml",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        !d.join("first").exists(),
        "--start-at-task skipped the first task: {out}"
    );
    assert!(
        d.join("second").exists() && d.join("third").exists(),
        "{out}"
    );
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "inv.yaml",
            "-c",
            "local",
            "--start-at-task",
            "secnd",
            "play.yaml",
        ],
    );
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("did you mean `second`"), "{out}");
    // A pattern, as ansible-playbook takes it (fnmatch): `th*` is the third.
    std::fs::remove_file(d.join("third")).unwrap();
    std::fs::remove_file(d.join("second")).unwrap();
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "inv.yaml",
            "-c",
            "local",
            "--start-at-task",
            "th*",
            "play.yaml",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        d.join("third").exists() && !d.join("second").exists(),
        "--start-at-task 'th*' starts at `third`: {out}"
    );
    let (code, out) = khard(&d, &["apply", "-i", "inv.yaml", "-c", "winrm", "play.yaml"]);
    assert_eq!(code, 5, "{out}");
    let (code, out) = khard(&d, &["apply", "-i", "inv.yaml", "play.yaml", "--step"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("--step is an ansible-playbook flag that khard does not have"),
        "{out}"
    );
    let (code, out) = khard(&d, &["apply", "-i", "inv.yaml", "-k", "play.yaml"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("password logins are not supported"), "{out}");
}

#[test]
fn pre_2023_k3s_ansible_groups_and_hosts_without_a_role() {
    let d = scratch("groups");
    std::fs::write(
        d.join("hosts.ini"),
        "[master]\n10.0.0.1\n\n[node]\n10.0.0.2\n10.0.0.3\n\n[k3s_cluster:children]\nmaster\nnode\n",
    )
    .unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "hosts.ini", "--list-hosts"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("10.0.0.1 (server)") && out.contains("10.0.0.2 (agent)"),
        "{out}"
    );
    std::fs::write(d.join("odd.yaml"), "all:\n  hosts:\n    lonely:\n").unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "odd.yaml", "--check"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("host lonely has no k3s role")
            && out.contains("master")
            && out.contains("node"),
        "{out}"
    );
}

/// `-u` and `--private-key` stand in where the inventory names no user or
/// key, as ansible-playbook's do.
#[test]
fn dash_u_and_private_key_fill_in_for_the_inventory() {
    let fleet = Fleet::up(&["s1:server:v1.30.6+k3s1"]);
    let inv = fleet.dir.join("bare.yaml");
    let text = std::fs::read_to_string(fleet.inventory()).unwrap();
    let bare: String = text
        .lines()
        .filter(|l| !l.contains("ansible_user") && !l.contains("ansible_ssh_private_key_file"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&inv, bare).unwrap();
    let key = fleet.dir.join("id_ed25519");
    let kh = fleet.known_hosts();
    let run = fleet.khard(&[
        "apply",
        "-i",
        inv.to_str().unwrap(),
        "--known-hosts",
        kh.to_str().unwrap(),
        "--check",
        "-u",
        "root",
        "--private-key",
        key.to_str().unwrap(),
        "-vvv",
    ]);
    assert!(run.stdout.contains("unreachable=0"), "{}", run.all());
    // -vvv: how the host was reached, down to the key and the host key's fingerprint.
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("connected: [s1]"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("root@127.0.1.1:22")
            && line.contains(&format!("key {}", key.display()))
            && line.contains("host key ssh-ed25519 SHA256:"),
        "{}",
        run.all()
    );
}

/// A k3s-ansible inventory keeps its Jinja strings: those khard does not use
/// stay untouched, one it uses is refused with file:line, also by
/// --syntax-check.
#[test]
fn jinja_in_a_variable_khard_uses_is_refused_with_its_place() {
    let d = scratch("jinja");
    std::fs::write(
        d.join("inv.yml"),
        "k3s_cluster:\n  children:\n    server:\n      hosts:\n        10.0.0.1:\n  vars:\n    api_endpoint: \"{{ hostvars[groups['server'][0]]['ansible_host'] | default(groups['server'][0]) }}\"\n    k3s_version: v1.30.6+k3s1\n",
    )
    .unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "inv.yml", "--syntax-check"]);
    assert_eq!(code, 0, "an unused Jinja variable is left alone: {out}");
    std::fs::write(
        d.join("inv.yml"),
        "k3s_cluster:\n  children:\n    server:\n      hosts:\n        s1:\n          ansible_host: \"{{ lookup('env', 'S1') }}\"\n",
    )
    .unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "inv.yml", "--syntax-check"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("inv.yml:6: host s1: variable `ansible_host` holds a Jinja expression"),
        "{out}"
    );
    // k3s_version, which khard itself reads, from a group_vars file.
    std::fs::write(
        d.join("inv.yml"),
        "k3s_cluster:\n  children:\n    server:\n      hosts:\n        s1:\n",
    )
    .unwrap();
    std::fs::create_dir_all(d.join("group_vars")).unwrap();
    std::fs::write(
        d.join("group_vars/k3s_cluster.yml"),
        "# pinned per environment\nk3s_version: \"{{ k3s_release }}\"\n",
    )
    .unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "inv.yml", "--syntax-check"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains(
            "group_vars/k3s_cluster.yml:2: host s1: variable `k3s_version` holds a Jinja expression"
        ),
        "{out}"
    );
}

/// Messages say what a user needs: a tab named as a tab, a close role name,
/// the address and port that refused.
#[test]
fn messages_name_tabs_roles_and_addresses() {
    let d = scratch("messages");
    std::fs::write(d.join("tab.yml"), "all:\n\thosts:\n    a:\n").unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "tab.yml", "--list-hosts"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("tab.yml:2:1") && out.contains("holds a tab"),
        "{out}"
    );
    std::fs::write(d.join("inv.yml"), "all:\n  hosts:\n    h1:\n      ansible_host: 127.0.0.1\n      ansible_port: 1\n      k3s_role: agent\n").unwrap();
    std::fs::write(d.join("r.yml"), "- hosts: all\n  roles: [cis_k3z]\n").unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "inv.yml", "r.yml", "--syntax-check"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("did you mean `cis_k3s`"), "{out}");
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "inv.yml",
            "--check",
            "--known-hosts",
            "/dev/null",
        ],
    );
    assert_eq!(code, 4, "{out}");
    assert!(out.contains("cannot connect to 127.0.0.1:1"), "{out}");
}

/// `-i` as ansible-playbook takes it: a comma list, or a folder of
/// inventories (with its group_vars); `--list-hosts --format json`.
#[test]
fn inventory_as_a_host_list_or_a_folder_and_lists_as_json() {
    let d = scratch("inventories");
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "10.0.0.1,10.0.0.2,",
            "--list-hosts",
            "--format",
            "json",
            "-e",
            "k3s_role=agent",
        ],
    );
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v[0]["hosts"][1]["name"], "10.0.0.2", "{out}");
    assert_eq!(v[0]["hosts"][0]["k3s_role"], "agent", "{out}");
    let inv = d.join("inventory");
    std::fs::create_dir_all(inv.join("group_vars")).unwrap();
    std::fs::write(inv.join("10-servers.ini"), "[server]\ns1\n").unwrap();
    std::fs::write(inv.join("20-agents.yml"), "agent:\n  hosts:\n    a1:\n").unwrap();
    std::fs::write(
        inv.join("group_vars/agent.yml"),
        "k3s_version: v1.24.17+k3s1\n",
    )
    .unwrap();
    std::fs::write(inv.join("README.md"), "not an inventory\n").unwrap();
    let (code, out) = khard(&d, &["apply", "-i", "inventory", "--list-hosts"]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("s1 (server)") && out.contains("a1 (agent)"),
        "{out}"
    );
    let (code, out) = khard(
        &d,
        &["apply", "-i", "inventory", "--list-tasks", "--limit", "a1"],
    );
    assert_eq!(code, 0, "{out}");
}

/// ansible.cfg and the ANSIBLE_* variables, found where Ansible finds them.
#[test]
fn ansible_cfg_and_environment_supply_defaults() {
    let d = scratch("cfg");
    std::fs::write(
        d.join("cfg-hosts.yml"),
        "server:\n  hosts:\n    from-cfg:\n",
    )
    .unwrap();
    std::fs::write(
        d.join("env-hosts.yml"),
        "server:\n  hosts:\n    from-env:\n",
    )
    .unwrap();
    let (code, out) = khard(&d, &["apply", "--list-hosts"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("no inventory"), "{out}");
    std::fs::write(
        d.join("ansible.cfg"),
        "[defaults]\ninventory = cfg-hosts.yml\nremote_user = deploy\nforks = 7\n",
    )
    .unwrap();
    let (code, out) = khard(&d, &["apply", "--list-hosts"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("from-cfg (server)"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .args(["apply", "--list-hosts"])
        .current_dir(&d)
        .env("ANSIBLE_INVENTORY", d.join("env-hosts.yml"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("from-env (server)"),
        "the environment wins: {text}"
    );
}

/// An ansible.cfg planted in a world-writable directory (/tmp) is ignored,
/// with Ansible's warning: its inventory, ProxyCommand, user and host-key
/// settings never reach a run (CVE-2018-10875).
#[test]
fn ansible_cfg_in_a_world_writable_directory_is_ignored() {
    use std::os::unix::fs::PermissionsExt;
    let d = scratch("world-writable");
    std::fs::write(
        d.join("planted.yaml"),
        "all:\n  hosts:\n    evil:\n      ansible_ssh_common_args: \"-o ProxyCommand='touch /tmp/khard-planted-cfg-ran'\"\n",
    )
    .unwrap();
    std::fs::write(
        d.join("ansible.cfg"),
        "[defaults]\ninventory = planted.yaml\nhost_key_checking = False\n",
    )
    .unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let (code, out) = khard(&d, &["apply", "--check"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("world-writable directory") && out.contains("ignoring its ansible.cfg"),
        "{out}"
    );
    assert!(out.contains("no inventory"), "{out}");
    assert!(!std::path::Path::new("/tmp/khard-planted-cfg-ran").exists());
    // The same folder, not world-writable: read as before.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_, out) = khard(&d, &["apply", "--list-hosts"]);
    assert!(out.contains("evil"), "{out}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// The fleet's own Ansible inventory style: host key checking set in
/// `ansible_ssh_common_args` (no --known-hosts): khard checks the keys
/// against that file, as ssh would, and refuses a host whose key is not in
/// it; `accept-new` learns the key into it. Against real sshd hosts.
#[test]
fn ssh_arguments_choose_the_known_hosts_file() {
    let fleet = Fleet::up(&["s1:server:v1.30.6+k3s1"]);
    let kh = fleet.known_hosts();
    let inv = std::fs::read_to_string(fleet.inventory()).unwrap();
    let with_args = |args: &str| {
        let path = fleet.dir.join("ssh-args.yaml");
        std::fs::write(
            &path,
            inv.replacen(
                "  vars:\n",
                &format!("  vars:\n    ansible_ssh_common_args: '{args}'\n"),
                1,
            ),
        )
        .unwrap();
        fleet.khard(&[
            "apply",
            "--check",
            "-i",
            path.to_str().unwrap(),
            "--limit",
            "s1",
        ])
    };
    let run = with_args(&format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
        kh.display()
    ));
    assert!(matches!(run.code, 0 | 2), "{}", run.all());
    // Another known_hosts file, without the host: refused, naming that file.
    let other = fleet.dir.join("other_known_hosts");
    std::fs::write(&other, "").unwrap();
    let run = with_args(&format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=yes",
        other.display()
    ));
    assert_eq!(run.code, 4, "{}", run.all());
    assert!(
        run.all().contains(&other.display().to_string()),
        "{}",
        run.all()
    );
    // accept-new learns the key into that file.
    let run = with_args(&format!(
        "-o UserKnownHostsFile={} -o StrictHostKeyChecking=accept-new",
        other.display()
    ));
    assert!(matches!(run.code, 0 | 2), "{}", run.all());
    assert!(!std::fs::read_to_string(&other).unwrap().is_empty());
}

/// An undefined variable in a task: named once with the task's own line,
/// with the defined variable it was probably meant to be.
#[test]
fn an_undefined_variable_names_its_task_line_once_with_a_suggestion() {
    let d = scratch("undefined");
    std::fs::write(
        d.join("inv.yml"),
        "all:\n  hosts:\n    here:\n      ansible_connection: local\n      ansible_become: false\n      cis_audit_log_maxage: 30\n",
    )
    .unwrap();
    std::fs::write(
        d.join("play.yml"),
        format!(
            "- hosts: all\n  tasks:\n    - name: ok\n      command: {{ cmd: \"true\" }}\n\n    - name: write\n      file: {{ dest: {}/out, content: \"{{{{ cis_audit_log_maxag }}}}\\n\" }}\n",
            d.display()
        ),
    )
    .unwrap();
    let (code, out) = khard(&d, &["apply", "--check", "-i", "inv.yml", "play.yml"]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("play.yml:6 (task `write`): in `{{ cis_audit_log_maxag }}\\n`: variable `cis_audit_log_maxag` is not defined (did you mean `cis_audit_log_maxage`?)"),
        "{out}"
    );
    assert_eq!(out.matches("play.yml:").count(), 1, "the place once: {out}");
    assert!(!d.join("out").exists());
}
