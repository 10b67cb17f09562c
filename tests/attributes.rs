//! Ansible's attribute semantics on this machine (`ansible_connection:
//! local`, as root like the other real-host tests): what a task does not
//! set is left alone, numeric ids converge, missing parent folders are
//! created 0755, backups are readable by root only.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::Command;

fn dir(name: &str) -> common::Scratch {
    let d = common::Scratch::new(&format!("attr-{name}"));
    std::fs::write(
        d.join("inventory.yaml"),
        "all:\n  hosts:\n    here:\n      ansible_connection: local\n      ansible_become: false\n",
    )
    .unwrap();
    d
}

fn apply(d: &std::path::Path, play: &str) -> (i32, String) {
    let p = d.join("play.yaml");
    std::fs::write(&p, play.replace("DIR", &d.display().to_string())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_khard"))
        .arg("apply")
        .arg("-i")
        .arg(d.join("inventory.yaml"))
        .arg(&p)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn root() {
    let uid = std::fs::metadata("/proc/self").unwrap().uid();
    assert_eq!(uid, 0, "these tests chown files: run scripts/test as root");
}

#[test]
fn an_owner_left_out_is_left_alone_and_numeric_ids_converge() {
    root();
    let d = dir("owner");
    let f = d.join("kept");
    std::fs::write(&f, "old\n").unwrap();
    std::os::unix::fs::chown(&f, Some(65534), Some(65534)).unwrap();
    let play = "- hosts: all\n  tasks:\n    - name: content only\n      file: { dest: DIR/kept, content: \"new\\n\", mode: \"0640\" }\n    - name: numeric owner\n      file: { dest: DIR/numeric, content: \"x\\n\", owner: \"0\", group: \"0\" }\n";
    let (code, out) = apply(&d, play);
    assert_eq!(code, 0, "{out}");
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(
        (m.uid(), m.gid()),
        (65534, 65534),
        "owner and group left alone"
    );
    assert_eq!(std::fs::read_to_string(&f).unwrap(), "new\n");
    let (code, out) = apply(&d, play);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changed=0"), "owner \"0\" converges: {out}");
}

#[test]
fn missing_parents_are_0755_and_backups_root_only() {
    root();
    let d = dir("umask");
    let play = "- hosts: all\n  tasks:\n    - name: deep\n      file: { dest: DIR/a/b/c.conf, content: \"x\\n\", mode: \"0644\" }\n    - name: deep folder\n      directory: { path: DIR/p/q/r, mode: \"0700\" }\n";
    let (code, out) = apply(&d, play);
    assert_eq!(code, 0, "{out}");
    for parent in ["a", "a/b", "p", "p/q"] {
        let mode = std::fs::metadata(d.join(parent))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777;
        assert_eq!(mode, 0o755, "{parent}: {mode:o}");
    }
    let conf = d.join("token.yaml");
    std::fs::write(&conf, "token: s3cret\n").unwrap();
    std::fs::set_permissions(&conf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let play = "- hosts: all\n  tasks:\n    - name: replace with backup\n      file: { dest: DIR/token.yaml, content: \"x: 1\\n\", backup: true }\n";
    let (code, out) = apply(&d, play);
    assert_eq!(code, 0, "{out}");
    let folder = PathBuf::from(format!("/var/backups/khard{}", d.display()));
    let backup = std::fs::read_dir(&folder)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .next()
        .expect("a backup");
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o600, "{}", backup.display());
    let _ = std::fs::remove_dir_all(format!("/var/backups/khard{}", d.display()));
}
