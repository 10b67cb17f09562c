//! The apply script: one script of every change of a host, and its output read back per task.
//!
//! Every remote exec runs a constant `/bin/sh -s` and gets its script on
//! stdin, so the login shell never parses anything we generate and file
//! contents never appear on a command line. Output sections are delimited by
//! markers carrying a random per-run nonce, so remote output cannot forge them.

use std::fmt::Write as _;

use crate::shell::preamble;

/// Shell functions the apply script uses.
///
/// `khard_write DEST MODE OWNER GROUP BACKUP FOLLOW [TEXT]` writes TEXT (or base64 content on stdin) and
/// replaces DEST atomically: a temp file in the same folder (so rename is
/// atomic), content, owner and mode set on the temp file, fsync, rename, fsync
/// of the folder. The temp file is removed on any failure or signal, so an
/// interrupted run leaves the old file or the new one, never half of either.
pub const FUNCTIONS: &str = r#"khard_write() {
  d=$1
  # FOLLOW ($6 = 1): write the file a symbolic link points to, not the link.
  if [ "${6:-0}" = 1 ] && [ -L "$d" ]; then
    d=$(readlink -f -- "$d") || { echo "$1 is a symbolic link to $(readlink -- "$1"), whose folder does not exist"; return 1; }
  fi
  dir=${d%/*}; [ -n "$dir" ] || dir=/
  if [ -L "$d" ]; then echo "$d is a symbolic link; khard does not write through links"; return 1; fi
  # Missing parents get 0755, not the scripts' umask 077.
  [ -d "$dir" ] || (umask 022 && mkdir -p -- "$dir") || return 1
  t=$(mktemp "$dir/.khard.XXXXXX") || return 1
  trap 'rm -f "$t"' EXIT HUP INT TERM
  # TEXT ($7) is written by the shell's own printf; without it, the content
  # is base64 on stdin (it holds a NUL byte, which no shell word can).
  if [ $# -ge 7 ]; then printf '%s' "$7" > "$t" || return 1; else base64 -d > "$t" || return 1; fi
  # OWNER/GROUP "" = left alone: an existing file keeps its own.
  o=$3; g=$4
  if [ -e "$d" ] && { [ -z "$o" ] || [ -z "$g" ]; }; then
    og=$(stat -c %u:%g -- "$d") || return 1
    [ -n "$o" ] || o=${og%:*}
    [ -n "$g" ] || g=${og#*:}
  fi
  # One chown for both: OWNER:GROUP, or :GROUP for the group alone.
  if [ -n "$o$g" ]; then chown -- "$o${g:+:$g}" "$t" || return 1; fi
  # mktemp made it 0600 (under the scripts' umask 077): chmod only for another mode.
  [ "$2" = 0600 ] || chmod "$2" "$t" || return 1
  sync "$t" || return 1
  if [ "$5" = 1 ] && [ -e "$d" ]; then khard_backup "$d" || return 1; fi
  # -T: a folder swapped in for DEST since the probe is not written into.
  mv -fT "$t" "$d" || return 1
  trap - EXIT HUP INT TERM
  sync "$dir"
}
khard_health() {
  # TIMEOUT INTERVAL COMMAND [EXPECT]: wait until COMMAND succeeds (and prints EXPECT).
  # The clock starts at the first failed check: one that passes at once
  # reads none (khard times the whole wait itself).
  start=''; n=0; out=""
  while :; do
    n=$((n + 1))
    # Each try is bounded too: a check that hangs must not outlive the gate's timeout.
    # `|| s=$?`: tasks run under set -e, which a failing check must not trip.
    s=0; out=$(timeout 30 /bin/sh -c "$3" </dev/null 2>&1) || s=$?
    if [ $s -eq 0 ] && { [ -z "$4" ] || [ "$out" = "$4" ]; }; then
      echo "healthy at check $n"; return 0
    fi
    # 126/127: the check cannot run at all (a command is missing): waiting cannot help.
    if [ $s -eq 126 ] || [ $s -eq 127 ]; then
      echo "the health check cannot run (exit $s): $out"; return 1
    fi
    if [ -z "$start" ]; then
      start=$(date +%s)
    elif [ $(( $(date +%s) - start )) -ge "${1%%.*}" ]; then
      echo "not healthy within ${1}s (last answer: $out)"; return 1
    fi
    sleep "$2"
  done
}
khard_unchanged() {
  # PATH KIND(f|d) UID: still what the probe saw, or refuse: chmod follows
  # symbolic links, so one swapped in since would redirect the change.
  if [ -L "$1" ]; then echo "$1 became a symbolic link after khard read it; left alone"; return 1; fi
  case $2 in d) [ -d "$1" ] ;; *) [ -f "$1" ] ;; esac || { echo "$1 is no longer what khard read; left alone"; return 1; }
  [ "$(stat -c %u -- "$1")" = "$3" ] || { echo "$1 changed owner after khard read it; left alone"; return 1; }
}
khard_backup() {
  # Readable by root only, whatever the original's mode: a backup may hold a token.
  b="/var/backups/khard$1.$(date +%Y%m%dT%H%M%S)"
  (umask 077 && mkdir -p -- "${b%/*}") && cp -p -- "$1" "$b" && chmod 0600 "$b" && echo "backup: $b"
}
khard_sysctl_check() {
  # KEY VALUE [KEY VALUE]...: every live value after sysctl -p, read by one
  # grep (PATH:LINE) as the probe reads them; never `read`: procfs gives
  # dash's byte-by-byte `read` one character.
  nl='
'
  n=$# k=1
  for a; do
    if [ $k = 1 ]; then set -- "$@" "/proc/sys/$a"; fi
    k=$((1 - k))
  done
  v=$(shift "$n"; grep -H -s -- '' "$@" </dev/null) || :
  while [ "$n" -gt 0 ]; do
    p=/proc/sys/$1 want=$2 got='' found=''
    shift 2; n=$((n - 2))
    rest=$v
    while [ -n "$rest" ]; do
      line=${rest%%"$nl"*}
      case $rest in *"$nl"*) rest=${rest#*"$nl"} ;; *) rest='' ;; esac
      case $line in "$p:"*) got="$got ${line#"$p:"}" found=1 ;; esac
    done
    [ -n "$found" ] || { echo "$p cannot be read after sysctl -p"; return 1; }
    # The value's words joined by one space, as sysctl prints it.
    set -f; khard_words $got; set +f
    if [ "$khard_w" != "$want" ]; then
      echo "${p#/proc/sys/} is '$khard_w' after sysctl -p, expected '$want' (another sysctl file may override it)"; return 1
    fi
  done
}
khard_words() { khard_w="$*"; }
"#;

/// Most output of one task that comes back; the rest is cut, with a note.
pub const TASK_OUTPUT_CAP: usize = 64 * 1024;

/// Builds the one script that applies every change of a host, in order,
/// stopping at the first failure.
#[derive(Clone)]
pub struct ApplyScript {
    text: String,
    /// The delimiter of a timed task's heredoc: the run's random marker in
    /// it, so no body (file text is written as a shell word) can end it early.
    task_eof: String,
}

impl ApplyScript {
    pub fn new(marker: &str) -> ApplyScript {
        let mut text = preamble(marker);
        text.push_str(FUNCTIONS);
        let _ = write!(
            text,
            "khard_o=$(mktemp) || exit 1\ntrap 'rm -f \"$khard_o\"' EXIT\n\
             khard_output() {{\n\
             \x20 [ -s \"$khard_o\" ] || return 0\n\
             \x20 n=$(wc -c <\"$khard_o\")\n\
             \x20 head -c {TASK_OUTPUT_CAP} \"$khard_o\"\n\
             \x20 if [ \"$n\" -gt {TASK_OUTPUT_CAP} ]; then echo; echo \"[khard: output cut: $n bytes, the first {TASK_OUTPUT_CAP} shown]\"; fi\n\
             \x20 printf '\\n%s eol\\n' \"$M\"\n\
             }}\n"
        );
        let nonce: String = marker.chars().filter(char::is_ascii_alphanumeric).collect();
        ApplyScript {
            text,
            task_eof: format!("KHARD_TASK_EOF_{nonce}"),
        }
    }

    /// Adds task number `index`; `body` is shell that fails with a non-zero status.
    /// Its output (stdout and stderr) is captured as the task's output.
    pub fn task(&mut self, index: usize, body: &str) {
        self.task_with_timeout(index, body, None);
    }

    /// Like [`ApplyScript::task`], with fd 3 open on the exec's own stdout,
    /// so the body can say where it is while it runs (`echo "$M …" >&3`).
    /// The body must close fd 3 for anything long-lived it starts (`3>&-`):
    /// a daemon holding it would keep the exec open.
    pub fn task_reporting(&mut self, index: usize, body: &str) {
        let run = format!("(\nset -e\n{body}\n) 3>&1 </dev/null >\"$khard_o\" 2>&1\nr=$?\n");
        self.push_task(index, &run);
    }

    /// Like [`ApplyScript::task`]; with a timeout the body runs under
    /// coreutils `timeout`, read from fd 3 so that stdin stays /dev/null and
    /// no payload ever appears on a command line.
    pub fn task_with_timeout(&mut self, index: usize, body: &str, timeout: Option<u64>) {
        // Output goes to a file first and comes back capped at
        // TASK_OUTPUT_CAP bytes, so a chatty task neither fills the
        // transport's limit nor hides the markers of the tasks after it.
        let run = match timeout {
            None => format!("(\nset -e\n{body}\n) </dev/null >\"$khard_o\" 2>&1\nr=$?\n"),
            Some(secs) => format!(
                "timeout -k 5 {secs} /bin/sh -c 'set -e; . /dev/fd/3' 3<<'{eof}' </dev/null >\"$khard_o\" 2>&1\n{FUNCTIONS}{body}\n{eof}\nr=$?\n[ $r -ne 124 ] || echo \"timed out after {secs}s\" >>\"$khard_o\"\n",
                eof = self.task_eof
            ),
        };
        self.push_task(index, &run);
    }

    /// Frames `run` (which sets `r`) with the begin/ok/fail markers.
    fn push_task(&mut self, index: usize, run: &str) {
        let _ = write!(
            self.text,
            "echo \"$M begin {index}\"\n{run}khard_output\nif [ $r -ne 0 ]; then echo \"$M fail {index} $r\"; exit 1; fi\necho \"$M ok {index}\"\n"
        );
    }

    pub fn finish(self) -> Vec<u8> {
        let mut text = self.text;
        let _ = writeln!(text, "echo \"$M end\"");
        text.into_bytes()
    }
}

/// What the apply exec reported for one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRun {
    pub index: usize,
    pub ok: bool,
    pub output: String,
}

/// Splits the apply output into per-task results, in order. A task that began
/// but has neither `ok` nor `fail` was cut short (connection lost).
pub fn parse_apply(marker: &str, stdout: &str) -> (Vec<TaskRun>, bool) {
    let mut runs: Vec<TaskRun> = Vec::new();
    let mut finished = false;
    let mut current: Option<TaskRun> = None;
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix(marker).and_then(|r| r.strip_prefix(' ')) else {
            if let Some(run) = current.as_mut() {
                run.output.push_str(line);
                run.output.push('\n');
            }
            continue;
        };
        let mut words = rest.split(' ');
        match (
            words.next(),
            words.next().and_then(|n| n.parse::<usize>().ok()),
        ) {
            (Some("begin"), Some(index)) => {
                current = Some(TaskRun {
                    index,
                    ok: false,
                    output: String::new(),
                });
            }
            (Some(state @ ("ok" | "fail")), Some(index)) => {
                if let Some(mut run) = current.take().filter(|r| r.index == index) {
                    run.ok = state == "ok";
                    // Every failure carries a message, even a silent `false`.
                    if !run.ok && run.output.trim().is_empty() {
                        let status = words.next().unwrap_or("?");
                        run.output =
                            format!("failed with exit status {status} and printed nothing");
                    }
                    runs.push(run);
                }
            }
            // khard_output's closing line: it printed a newline before the
            // marker so that the marker starts a line without a `tail` to
            // see how the output ended; take that newline back.
            (Some("eol"), _) => {
                if let Some(run) = current.as_mut()
                    && run.output.ends_with("\n\n")
                {
                    run.output.pop();
                }
            }
            (Some("end"), _) => finished = true,
            _ => {}
        }
    }
    if let Some(run) = current {
        runs.push(run);
    }
    (runs, finished)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shell::{new_marker, quote, with_payload};

    #[test]
    fn quotes_everything() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's $HOME"), r"'it'\''s $HOME'");
    }

    #[test]
    fn runs_a_real_apply_script() {
        let tmp = crate::testutil::TempDir::new();
        let dir = tmp.path().to_path_buf();
        let dest = dir.join("out.conf");
        let marker = new_marker();
        let mut s = ApplyScript::new(&marker);
        let me = std::process::Command::new("id")
            .arg("-un")
            .output()
            .unwrap();
        let user = String::from_utf8_lossy(&me.stdout).trim().to_owned();
        let group = String::from_utf8_lossy(
            &std::process::Command::new("id")
                .arg("-gn")
                .output()
                .unwrap()
                .stdout,
        )
        .trim()
        .to_owned();
        let write = format!(
            "khard_write {} 0640 {} {} 0 0",
            quote(dest.to_str().unwrap()),
            quote(&user),
            quote(&group)
        );
        s.task(0, &with_payload(&write, b"hello 'world'\n"));
        s.task(1, "echo doing; false");
        s.task(2, "echo never");
        let mut t = ApplyScript::new(&marker);
        t.task_with_timeout(0, "echo started; sleep 5", Some(1));
        // A timed write whose text holds a line like the heredoc's delimiter.
        let mut u = ApplyScript::new(&marker);
        let timed = dir.join("timed.conf");
        let write = format!(
            "khard_write {} 0600 '' '' 0 0",
            quote(timed.to_str().unwrap())
        );
        u.task_with_timeout(
            0,
            &with_payload(&write, b"x\nKHARD_TASK_EOF\ny\n"),
            Some(30),
        );
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(String::from_utf8(u.finish()).unwrap())
            .output()
            .unwrap();
        let (runs, finished) = parse_apply(&marker, &String::from_utf8_lossy(&out.stdout));
        assert!(finished && runs[0].ok, "{runs:?}");
        assert_eq!(std::fs::read(&timed).unwrap(), b"x\nKHARD_TASK_EOF\ny\n");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(String::from_utf8(t.finish()).unwrap())
            .output()
            .unwrap();
        let (runs, _) = parse_apply(&marker, &String::from_utf8_lossy(&out.stdout));
        assert!(
            !runs[0].ok && runs[0].output.contains("timed out after 1s"),
            "{runs:?}"
        );
        let out = std::process::Command::new("/bin/sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(&s.finish())?;
                c.wait_with_output()
            })
            .unwrap();
        let (runs, finished) = parse_apply(&marker, &String::from_utf8_lossy(&out.stdout));
        assert!(!finished);
        assert_eq!(runs.len(), 2);
        assert!(runs[0].ok && !runs[1].ok);
        assert_eq!(runs[1].output, "doing\n");
        assert_eq!(std::fs::read(&dest).unwrap(), b"hello 'world'\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&dest).unwrap().permissions().mode() & 0o7777,
            0o640
        );
        let leftovers: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".khard")
            })
            .collect();
        assert!(leftovers.is_empty());
    }

    /// Text goes in as a shell word, binary (a NUL byte) as base64 on
    /// stdin; both land byte for byte, with the owner alone, the group
    /// alone, or an existing file's own kept.
    #[test]
    fn writes_text_and_binary_content_exactly() {
        let tmp = crate::testutil::TempDir::new();
        let marker = new_marker();
        let mut s = ApplyScript::new(&marker);
        let id = |flag: &str| {
            let out = std::process::Command::new("id").arg(flag).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().to_owned()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let cases: [(&str, &[u8], &str, &str); 4] = [
            (
                "text",
                b"a 'quoted' $(touch x) `b` \\n\nno final newline",
                &uid,
                "",
            ),
            ("binary", b"\0\xff\x01\n", "", &gid),
            ("empty", b"", "", ""),
            ("newlines", b"\n\n", &uid, &gid),
        ];
        for (i, (name, content, owner, group)) in cases.iter().enumerate() {
            let dest = tmp.path().join(name);
            std::fs::write(&dest, b"old").unwrap();
            let cmd = format!(
                "khard_write {} 0600 {} {} 0 0",
                quote(dest.to_str().unwrap()),
                quote(owner),
                quote(group)
            );
            s.task(i, &with_payload(&cmd, content));
        }
        for shell in ["sh", "bash"] {
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(String::from_utf8(s.clone().finish()).unwrap())
                .current_dir(tmp.path())
                .output()
                .unwrap();
            let (runs, finished) = parse_apply(&marker, &String::from_utf8_lossy(&out.stdout));
            assert!(finished && runs.iter().all(|r| r.ok), "{shell}: {runs:?}");
            for (name, content, _, _) in cases {
                assert_eq!(
                    std::fs::read(tmp.path().join(name)).unwrap(),
                    content,
                    "{shell}: {name}"
                );
            }
            assert!(!tmp.path().join("x").exists(), "{shell}: the text ran");
        }
    }

    /// The live check after `sysctl -p` reads the real /proc/sys, every key
    /// by one grep: a multi-word value (tabs in the file) compares by its
    /// words, a wrong value and a missing key fail with their names.
    #[test]
    fn the_live_sysctl_check_reads_every_key_at_once() {
        let printk = std::fs::read_to_string("/proc/sys/kernel/printk").unwrap();
        let printk = printk.split_whitespace().collect::<Vec<_>>().join(" ");
        let run = |shell: &str, args: &str| {
            let out = std::process::Command::new(shell)
                .arg("-c")
                .arg(format!("{FUNCTIONS}khard_sysctl_check {args}"))
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        };
        for shell in ["dash", "bash"] {
            let ok = format!("kernel/ostype Linux kernel/printk '{printk}'");
            assert_eq!(run(shell, &ok), (true, String::new()), "{shell}");
            let (good, out) = run(shell, "kernel/ostype Linux kernel/printk '9 9 9 9'");
            assert!(!good, "{shell}");
            assert_eq!(
                out,
                format!(
                    "kernel/printk is '{printk}' after sysctl -p, expected '9 9 9 9' (another sysctl file may override it)\n"
                )
            );
            let (good, out) = run(shell, "kernel/ostype Linux no/such/key 1");
            assert!(!good, "{shell}");
            assert_eq!(
                out,
                "/proc/sys/no/such/key cannot be read after sysctl -p\n"
            );
        }
    }

    /// The markers start a line whatever a task printed: output without a
    /// final newline (printf, kubectl -o jsonpath, curl), binary output, and
    /// output that carries the marker's text mid-line.
    #[test]
    fn markers_start_a_line_whatever_a_task_prints() {
        let marker = new_marker();
        let mut s = ApplyScript::new(&marker);
        s.task(0, "printf 'no newline'");
        s.task(1, &format!("printf 'x{marker} ok 1'"));
        s.task(2, "printf '\\000\\377\\033[2J'");
        s.task(3, "echo last");
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(String::from_utf8(s.finish()).unwrap())
            .output()
            .unwrap();
        let (runs, finished) = parse_apply(&marker, &String::from_utf8_lossy(&out.stdout));
        assert!(finished, "{runs:?}");
        assert_eq!(runs.len(), 4, "{runs:?}");
        assert!(runs.iter().all(|r| r.ok), "{runs:?}");
        assert_eq!(runs[0].output, "no newline\n");
        assert_eq!(runs[1].output, format!("x{marker} ok 1\n"));
        assert_eq!(runs[3].output, "last\n");
    }

    #[test]
    fn a_silent_failure_still_says_how_it_failed() {
        let out = "@@m begin 3\n@@m fail 3 1\n";
        let (runs, finished) = parse_apply("@@m", out);
        assert!(!finished && !runs[0].ok);
        assert_eq!(
            runs[0].output,
            "failed with exit status 1 and printed nothing"
        );
    }

    /// A health check whose command does not exist fails at once with the
    /// shell's message, instead of waiting out the timeout; under `set -e`, as
    /// tasks run, a failing try does not end the wait either.
    #[test]
    fn a_health_check_that_cannot_run_fails_at_once() {
        let run = |check: &str| {
            let script = format!("set -e\n{FUNCTIONS}khard_health 300 0.1 {}\n", quote(check));
            let started = std::time::Instant::now();
            let out = std::process::Command::new("dash")
                .arg("-c")
                .arg(script)
                .output()
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                started.elapsed(),
            )
        };
        let (code, out, took) = run("no-such-command-khard");
        assert_eq!(code, Some(1), "{out}");
        assert!(
            out.contains("cannot run (exit 127)") && out.contains("not found"),
            "{out}"
        );
        assert!(took < std::time::Duration::from_secs(10), "{took:?}");
        let flag = crate::testutil::TempDir::new();
        let f = flag.path().join("up");
        let (code, out, _) = run(&format!(
            "test -e {0} || {{ touch {0}; exit 1; }}",
            f.display()
        ));
        assert_eq!(code, Some(0), "{out}");
        assert!(out.contains("healthy at check 2"), "{out}");
    }
}
