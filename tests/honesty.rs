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

impl Drop for Here {
    /// Removed when the test ends well (kept after a failure, to look at).
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
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
    // Folded into one line per reason, so the failure stays in sight; -v
    // lists each task.
    assert!(
        out.contains("not run: an earlier task failed on this host: 2 task(s) on 1 host (here); -v lists them"),
        "{out}"
    );
    assert!(out.contains("not_run=2"), "{out}");
    let (_, verbose) = here.run(play, &["-v"]);
    for task in ["never written", "never run"] {
        assert!(
            verbose.contains(&format!(
                "not run: [here] {task} => not run: an earlier task failed on this host"
            )),
            "{verbose}"
        );
    }
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
        out.contains("not run: an earlier task failed on this host: 1 task(s) on 1 host (here)"),
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

/// Text from a node or from input never reaches the terminal raw (issue
/// 24): every C0 and C1 control and an OSC and CSI sequence, through task
/// names, remote output (-vv), a failure's message, a --diff, and an error
/// printed before anything runs. Only line breaks and tabs remain.
#[test]
fn control_characters_from_nodes_and_input_are_shown_never_sent() {
    let here = Here::new("controls");
    // Every control but \n and \t, as printf escapes for the remote shell.
    let all: String = (1u32..0x20)
        .chain([0x7f])
        .filter(|c| *c != 0x0a && *c != 0x09)
        .map(|c| format!("\\\\{c:03o}"))
        .collect();
    let forge = "\\\\033]0;pwned\\\\007\\\\r\\\\033[2K\\\\033[8mPLAY RECAP";
    // C1 controls CSI and NEL, as UTF-8.
    let c1 = "\\\\302\\\\2332J\\\\302\\\\205";
    let play = format!(
        r#"
- hosts: all
  tasks:
    - name: "named \u001b[31mred\u001b[0m"
      command: {{ cmd: "printf '{all}{forge}\n{c1}'" }}
    - name: content
      file: {{ dest: DIR/out.txt, content: "\u001b]0;title\u0007\n" }}
    - name: fails
      command: {{ cmd: "printf '{forge}'; exit 3" }}
"#
    );
    let (code, out) = here.run(&play, &["-vv", "--diff"]);
    assert_eq!(code, 3, "{out}");
    let raw: Vec<char> = out
        .chars()
        .filter(|c| {
            (c.is_control() && *c != '\n' && *c != '\t') || ('\u{80}'..='\u{9f}').contains(c)
        })
        .collect();
    assert!(raw.is_empty(), "raw controls {raw:?} in:\n{out}");
    assert!(
        out.contains("\\e]0;pwned\\x07\\r\\e[2K\\e[8mPLAY RECAP"),
        "{out}"
    );
    assert!(out.contains("named \\e[31mred\\e[0m"), "{out}");
    assert!(out.contains("\\x9b2J\\x85"), "{out}");
    // An input error, printed before anything runs.
    let bad = "- hosts: all\n  tasks:\n    - name: t\n      file: { dest: /tmp/x, src: \"\\u001b[2Jmissing\" }\n";
    let (code, out) = here.run(bad, &[]);
    assert_eq!(code, 5, "{out}");
    assert!(!out.contains('\u{1b}'), "{out}");
    assert!(out.contains("\\e[2Jmissing"), "{out}");
}

/// Races between the probe and the apply (issue 24): a task earlier in the
/// same apply swaps what a later task's probe saw. chmod and chown act on
/// what the probe saw or refuse; a write never lands inside a folder
/// swapped in for its file; `follow: true` on a link whose folder is
/// missing says so.
#[test]
fn what_is_swapped_in_after_the_probe_is_refused_not_followed() {
    use std::os::unix::fs::PermissionsExt;
    let here = Here::new("races");
    let d = here.dir.to_path_buf();
    std::fs::create_dir_all(d.join("dir")).unwrap();
    for f in ["victim", "perm", "out"] {
        std::fs::write(d.join(f), "old\n").unwrap();
        std::fs::set_permissions(d.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(d.join("dir"), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(d.join("gone/target"), d.join("dangling")).unwrap();
    let play = r#"
- hosts: all
  tasks:
    - name: swap
      command: { cmd: "rm DIR/perm && ln -s DIR/victim DIR/perm && rm DIR/out && mkdir DIR/out && mv DIR/dir DIR/dir.real && ln -s DIR/victim DIR/dir" }
    - name: permissions
      permissions: { path: DIR/perm, mode: "0600" }
    - name: file
      file: { dest: DIR/out, content: "new\n" }
    - name: directory
      directory: { path: DIR/dir, mode: "0700" }
    - name: follow
      file: { dest: DIR/dangling, content: "x\n", follow: true }
"#;
    // Each task on its own: a failure stops the host's later tasks.
    let (code, out) = here.run(play, &[]);
    assert_eq!(code, 3, "{out}");
    assert!(
        out.contains("perm became a symbolic link after khard read it; left alone"),
        "{out}"
    );
    let mode = |p: &str| std::fs::metadata(d.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("victim"), 0o644, "chmod went through the link: {out}");
    for (name, task, want) in [
        (
            "file",
            "    - name: file\n      file: { dest: DIR/out, content: \"new\\n\" }\n",
            "cannot overwrite directory",
        ),
        (
            "directory",
            "    - name: directory\n      directory: { path: DIR/dir, mode: \"0700\" }\n",
            "dir became a symbolic link",
        ),
        (
            "follow",
            "    - name: follow\n      file: { dest: DIR/dangling, content: \"x\\n\", follow: true }\n",
            "whose folder does not exist",
        ),
    ] {
        // Probe before the swap: the swap runs as the play's first task.
        let _ = std::fs::remove_file(d.join("perm"));
        std::fs::write(d.join("perm"), "old\n").unwrap();
        if name == "file" {
            let _ = std::fs::remove_dir_all(d.join("out"));
            std::fs::write(d.join("out"), "old\n").unwrap();
        }
        if name == "directory" {
            let _ = std::fs::remove_file(d.join("dir"));
            let _ = std::fs::rename(d.join("dir.real"), d.join("dir"));
        }
        let swap = match name {
            "file" => "rm DIR/out && mkdir DIR/out",
            "directory" => "mv DIR/dir DIR/dir.real && ln -s DIR/victim DIR/dir",
            _ => "true",
        };
        let play = format!(
            "- hosts: all\n  tasks:\n    - name: swap\n      command: {{ cmd: \"{swap}\" }}\n{task}"
        );
        let (code, out) = here.run(&play, &[]);
        assert_eq!(code, 3, "{name}: {out}");
        assert!(out.contains(want), "{name}: {out}");
        assert!(!out.contains("printed nothing"), "{name}: {out}");
    }
    assert!(
        std::fs::read_dir(d.join("out")).unwrap().next().is_none(),
        "the write landed inside the swapped-in folder"
    );
    assert_eq!(mode("victim"), 0o644);
}
