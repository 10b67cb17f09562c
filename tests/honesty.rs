//! The report tells the truth at the edges: a chatty task, a failed task,
//! a task over its timeout. Every planned task appears exactly once, with
//! its real status, and later tasks and handlers are accounted for. Runs on
//! this machine through `ansible_connection: local` (the same scripts an SSH
//! host gets), in a folder of the test's own.

use std::path::PathBuf;
use std::process::Command;

struct Here {
    dir: PathBuf,
}

impl Here {
    fn new(name: &str) -> Here {
        let dir = std::env::temp_dir().join(format!("khard-honesty-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("inventory.yaml"),
            "all:\n  hosts:\n    here:\n      ansible_connection: local\n      ansible_become: false\n",
        )
        .unwrap();
        Here { dir }
    }

    fn run(&self, play: &str, args: &[&str]) -> (i32, String) {
        let p = self.dir.join("play.yaml");
        std::fs::write(&p, play.replace("DIR", &self.dir.display().to_string())).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_khard"))
            .arg("apply")
            .arg("-i")
            .arg(self.dir.join("inventory.yaml"))
            .args(args)
            .arg(&p)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    }
}

#[test]
fn a_task_printing_more_than_the_output_limit_keeps_its_status_and_later_tasks_run() {
    let here = Here::new("chatty");
    let play = r#"- hosts: all
  tasks:
    - name: chatty
      command: { cmd: "head -c 9437184 /dev/zero | tr '\\0' x" }
    - name: after
      file: { dest: DIR/after, content: "x\n" }
      notify: note
  handlers:
    - name: note
      command: { cmd: "touch DIR/handled" }
"#;
    let (code, out) = here.run(play, &["-vv"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("changed: [here] chatty"), "{out}");
    assert!(
        out.contains("[khard: output cut: 9437184 bytes"),
        "{}",
        &out[..out.len().min(2000)]
    );
    assert!(out.contains("changed: [here] after"), "{out}");
    assert!(here.dir.join("after").exists());
    assert!(
        here.dir.join("handled").exists(),
        "the handler was notified and ran"
    );
    assert!(
        out.len() < 1024 * 1024,
        "the output is capped: {} bytes",
        out.len()
    );
}

#[test]
fn tasks_after_a_failure_or_a_timeout_are_reported_as_not_run() {
    let here = Here::new("stop");
    let play = r#"- hosts: all
  tasks:
    - name: fails
      command: { cmd: "false" }
    - name: never written
      file: { dest: DIR/never, content: "x\n" }
    - name: never run
      command: { cmd: "touch DIR/ran" }
"#;
    let (code, out) = here.run(play, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("failed: [here] fails => failed with exit status 1 and printed nothing"),
        "{out}"
    );
    for task in ["never written", "never run"] {
        assert!(
            out.contains(&format!(
                "not run: [here] {task} => not run: an earlier task failed on this host"
            )),
            "{out}"
        );
    }
    assert!(out.contains("not_run=2"), "{out}");
    assert!(!here.dir.join("never").exists() && !here.dir.join("ran").exists());

    let slow = r#"- hosts: all
  tasks:
    - name: slow
      timeout: 1
      command: { cmd: "sleep 5" }
    - name: later
      file: { dest: DIR/later, content: "x\n" }
"#;
    let (code, out) = here.run(slow, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("failed: [here] slow => timed out after 1s"),
        "{out}"
    );
    assert!(
        out.contains("not run: [here] later => not run: an earlier task failed on this host"),
        "{out}"
    );
}

#[test]
fn an_unwritable_junit_path_is_refused_before_anything_changes() {
    let here = Here::new("junit");
    let play = "- hosts: all\n  tasks:\n    - name: write\n      file: { dest: DIR/written, content: \"x\\n\" }\n";
    let (code, out) = here.run(play, &["--junit", "/nonexistent-khard/r.xml"]);
    assert_eq!(code, 5, "{out}");
    assert!(out.contains("--junit /nonexistent-khard/r.xml"), "{out}");
    assert!(!here.dir.join("written").exists(), "nothing was applied");
}

/// A handler's `creates` / `unless` are honoured, and a `creates` glob
/// matches, as in Ansible.
#[test]
fn guards_hold_for_handlers_and_creates_globs_match() {
    let here = Here::new("guards");
    std::fs::write(here.dir.join("made-1.flag"), "").unwrap();
    let play = r#"- hosts: all
  tasks:
    - name: guarded by a glob
      command: { cmd: "touch DIR/task-ran", creates: "DIR/made-*.flag" }
    - name: notifies
      file: { dest: DIR/conf, content: "x\n" }
      notify: [by creates, by unless, unguarded]
  handlers:
    - name: by creates
      command: { cmd: "touch DIR/h1-ran", creates: "DIR/made-*.flag" }
    - name: by unless
      command: { cmd: "touch DIR/h2-ran", unless: "true" }
    - name: unguarded
      command: { cmd: "touch DIR/h3-ran", unless: "false" }
"#;
    let (code, out) = here.run(play, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("ok: [here] guarded by a glob"), "{out}");
    assert!(!here.dir.join("task-ran").exists());
    assert!(out.contains("skipped: [here] handler by creates"), "{out}");
    assert!(out.contains("skipped: [here] handler by unless"), "{out}");
    assert!(!here.dir.join("h1-ran").exists() && !here.dir.join("h2-ran").exists());
    assert!(here.dir.join("h3-ran").exists(), "{out}");
}

/// Output for people: skips whose `when:` is false are folded into a count
/// (listed with -v), a per-task summary says which hosts each task changed
/// or failed on, and -q keeps why something failed.
#[test]
fn output_folds_skips_summarises_tasks_and_quiet_keeps_failures() {
    let here = Here::new("output");
    let play = r#"- hosts: all
  tasks:
    - name: never here
      when: false
      command: { cmd: "true" }
    - name: writes
      file: { dest: DIR/w, content: "x\n" }
    - name: breaks
      command: { cmd: "echo broken >&2; false" }
"#;
    let (code, out) = here.run(play, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(!out.contains("skipped: [here] never here"), "{out}");
    assert!(
        out.contains("(1 skipped task(s) whose `when:` is false not shown; -v lists them)"),
        "{out}"
    );
    assert!(
        out.contains("TASK SUMMARY\nwrites: changed on 1 (here)\nbreaks: failed on 1 (here)"),
        "{out}"
    );
    let (_, verbose) = here.run(play, &["-v"]);
    assert!(verbose.contains("skipped: [here] never here"), "{verbose}");
    let (code, quiet) = here.run(play, &["-q"]);
    assert_eq!(code, 3, "{quiet}");
    assert!(quiet.contains("failed: [here] breaks => broken"), "{quiet}");
    assert!(
        !quiet.contains("TASK SUMMARY") && !quiet.contains("ok: [here]"),
        "{quiet}"
    );
}
