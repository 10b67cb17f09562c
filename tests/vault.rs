//! ansible-vault, with files made by the real `ansible-vault`
//! (tests/fixtures/vault/): a vaulted vars file in group_vars and a
//! `!vault |` value in the inventory decrypt with --vault-password-file or
//! --vault-id; the plain value reaches the host, never the output; a wrong
//! password is a clear error before anything runs (exit 5).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vault")
}

fn setup(name: &str) -> common::Scratch {
    let d = common::Scratch::new(&format!("vault-{name}"));
    std::fs::create_dir_all(d.join("group_vars/all")).unwrap();
    std::fs::copy(
        fixtures().join("vars-1.1.yml"),
        d.join("group_vars/all/vault.yml"),
    )
    .unwrap();
    let inline = std::fs::read_to_string(fixtures().join("inline.yml")).unwrap();
    // k3s-ansible's pre-2023 layout (master/node), this machine as the master.
    std::fs::write(
        d.join("hosts.yml"),
        format!(
            "k3s_cluster:\n  children:\n    master:\n      hosts:\n        here:\n          ansible_connection: local\n          ansible_become: false\n          {}\n    node:\n      hosts: {{}}\n",
            inline.trim_end().replace('\n', "\n          ")
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("play.yml"),
        format!(
            "- hosts: all\n  tasks:\n    - name: token file\n      file: {{ dest: {}/token, content: \"{{{{k3s_token}}}}\\n\", mode: \"0600\" }}\n",
            d.display()
        ),
    )
    .unwrap();
    d
}

fn khard(d: &Path, args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .args(args)
        .current_dir(d)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn vaulted_files_and_values_decrypt_and_stay_secret() {
    let d = setup("ok");
    let pw = fixtures().join("password");
    let pw = pw.to_str().unwrap();
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "hosts.yml",
            "--vault-password-file",
            pw,
            "--diff",
            "-vv",
            "play.yml",
        ],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(d.join("token")).unwrap(),
        "K10vaulted::server:s3cret\n",
        "the plain value reaches the host"
    );
    for secret in ["K10vaulted", "s3cret-become-pw", "$ANSIBLE_VAULT"] {
        assert!(!out.contains(secret), "{secret} in the output: {out}");
    }
    // --vault-id with the label of the inline value, and the password from a script.
    let script = d.join("pw.sh");
    std::fs::write(&script, format!("#!/bin/sh\ncat {pw}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o700)).unwrap();
    let id = format!("prod@{}", script.display());
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "hosts.yml",
            "--vault-id",
            &id,
            "--check",
            "play.yml",
        ],
    );
    assert_eq!(code, 0, "{out}");
}

#[test]
fn a_wrong_or_missing_vault_password_stops_before_anything_runs() {
    let d = setup("wrong");
    let bad = d.join("bad-password");
    std::fs::write(&bad, "not-it\n").unwrap();
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "hosts.yml",
            "--vault-password-file",
            bad.to_str().unwrap(),
            "play.yml",
        ],
    );
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("wrong password"), "{out}");
    assert!(!d.join("token").exists());
    let (code, out) = khard(&d, &["apply", "-i", "hosts.yml", "play.yml"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("no vault password was given"), "{out}");
    assert!(!d.join("token").exists());
}

/// Every value of a vaulted vars file is a secret, however deep (issue 24):
/// a nested mapping's value and a list item never reach -vv output, JSON or
/// JUnit; a decrypted value in an input error or in a --diff header path is
/// redacted too.
#[test]
fn nested_vault_values_are_secrets_wherever_they_travel() {
    let d = setup("nested");
    std::fs::copy(
        fixtures().join("vars-nested-1.1.yml"),
        d.join("group_vars/all/nested.yml"),
    )
    .unwrap();
    let pw = fixtures().join("password");
    let pw = pw.to_str().unwrap();
    std::fs::write(
        d.join("nested.yml"),
        format!(
            "- hosts: all\n  tasks:\n    - name: echo\n      command: {{ cmd: \"echo {{{{creds.password}}}} {{{{tokens.[0]}}}}\" }}\n    - name: file named by a secret\n      file: {{ dest: \"{}/{{{{db_password}}}}.txt\", content: \"x\\n\" }}\n",
            d.display()
        ),
    )
    .unwrap();
    let junit = d.join("junit.xml");
    for format in ["human", "json"] {
        let (code, out) = khard(
            &d,
            &[
                "apply",
                "-i",
                "hosts.yml",
                "--vault-password-file",
                pw,
                "-vv",
                "--diff",
                "--format",
                format,
                "--junit",
                junit.to_str().unwrap(),
                "nested.yml",
            ],
        );
        assert_eq!(code, 0, "{out}");
        let junit = std::fs::read_to_string(&junit).unwrap();
        for secret in ["N3sted-S3cret-pw", "L1st-T0ken-value", "Db-S3cret-pass"] {
            assert!(!out.contains(secret), "{format}: {secret} in: {out}");
            assert!(!junit.contains(secret), "{secret} in the JUnit: {junit}");
        }
        assert!(out.contains("[redacted]"), "{out}");
    }
    assert!(
        d.join("Db-S3cret-pass.txt").exists(),
        "the value reaches the host"
    );
    // An input error that quotes a decrypted value.
    std::fs::write(
        d.join("bad.yml"),
        format!(
            "- hosts: all\n  tasks:\n    - name: t\n      file: {{ dest: {}/m, content: x, mode: \"{{{{db_password}}}}\" }}\n",
            d.display()
        ),
    )
    .unwrap();
    let (code, out) = khard(
        &d,
        &[
            "apply",
            "-i",
            "hosts.yml",
            "--vault-password-file",
            pw,
            "bad.yml",
        ],
    );
    assert_ne!(code, 0, "{out}");
    assert!(!out.contains("Db-S3cret-pass"), "{out}");
}

/// Where Ansible users keep their vault passwords (issue 25.3): a vaulted
/// `-e @file`, a password script named by a relative path in a vault id,
/// ansible.cfg's `vault_password_file` / `vault_identity_list` and their
/// environment variables; and the message's English when none is given.
#[test]
fn vault_passwords_from_every_place_ansible_reads_them() {
    let d = setup("sources");
    // The inventory's inline value is vault id `prod`; move the vaulted vars
    // file out of group_vars to give it as `-e @`.
    std::fs::rename(d.join("group_vars/all/vault.yml"), d.join("secrets.yml")).unwrap();
    let pw = fixtures().join("password");
    let pw = pw.to_str().unwrap();
    // --check: exit 2 says the token file would be written, so the
    // vaulted value decrypted.
    let run = |args: &[&str]| {
        let mut all = vec!["apply", "-i", "hosts.yml", "--check", "-e", "@secrets.yml"];
        all.extend_from_slice(args);
        all.push("play.yml");
        khard(&d, &all)
    };
    let (code, out) = run(&["--vault-password-file", pw]);
    assert_eq!(code, 2, "a vaulted -e @file: {out}");

    // A script named relative to the current folder, not looked up on $PATH.
    std::fs::write(d.join("prod-client.sh"), format!("#!/bin/sh\ncat '{pw}'\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.join("prod-client.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    let (code, out) = run(&["--vault-id", "prod@prod-client.sh"]);
    assert_eq!(code, 2, "a relative password script: {out}");

    // ansible.cfg beside the run, and the environment.
    std::fs::write(
        d.join("ansible.cfg"),
        format!("[defaults]\nvault_password_file = {pw}\n"),
    )
    .unwrap();
    let (code, out) = run(&[]);
    assert_eq!(code, 2, "ansible.cfg vault_password_file: {out}");
    std::fs::write(
        d.join("ansible.cfg"),
        "[defaults]\nvault_identity_list = prod@prod-client.sh\n",
    )
    .unwrap();
    let (code, out) = run(&[]);
    assert_eq!(code, 2, "ansible.cfg vault_identity_list: {out}");
    std::fs::remove_file(d.join("ansible.cfg")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .args([
            "apply",
            "-i",
            "hosts.yml",
            "--check",
            "-e",
            "@secrets.yml",
            "play.yml",
        ])
        .current_dir(&d)
        .env("ANSIBLE_VAULT_PASSWORD_FILE", pw)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No password at all: one plain sentence naming every way to give one.
    let (code, out) = run(&[]);
    assert_eq!(code, 5, "{out}");
    assert!(
        out.contains("it holds ansible-vault data, and no vault password was given (--ask-vault-pass, --vault-password-file, --vault-id, or vault_password_file in ansible.cfg)"),
        "{out}"
    );
}
