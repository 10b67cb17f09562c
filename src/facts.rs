//! The probe contract: what a task may ask a node ([`Probe`]: file metadata
//! and checksums, contents, live sysctl values, guard commands, read-only
//! queries, named facts) and what comes back ([`RemoteState`]). Modules,
//! the audit and the domain declare their needs here; the engine runs ONE
//! read-only script per host made from the merged request ([`Probe::script`])
//! and reads the answer with [`parse`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use crate::shell::{preamble, quote};

/// What the tasks of one host want to know.
#[derive(Debug, Default, Clone)]
pub struct Probe {
    /// Paths or globs (`*`, `?`) to `stat` (symlinks are reported as links).
    pub stat: BTreeSet<String>,
    /// Paths to `stat -L` (what a symbolic link points to), for `follow: true`.
    pub stat_follow: BTreeSet<String>,
    /// Files whose sha256 is needed.
    pub sha256: BTreeSet<String>,
    /// Files whose whole content is needed (for diffs, or to read a unit file).
    pub content: BTreeSet<String>,
    /// Globs (`*` in the last part) whose matching files' content is needed
    /// (a folder of drop-ins).
    pub content_glob: BTreeSet<String>,
    /// Sysctl keys (`vm.overcommit_memory`) whose live value is needed.
    pub sysctl: BTreeSet<String>,
    /// Read-only guard commands (`unless:`) whose exit status is needed.
    pub guards: Vec<String>,
    /// Read-only commands whose exit status and output (at most
    /// [`MAX_READ`] bytes of stdout) are needed (the compliance audit's API queries).
    pub reads: BTreeSet<String>,
    /// Named facts: a name (a plain identifier) and the read-only shell that
    /// prints its value on one line, or nothing when it is unknown. The
    /// domain asks for these (e.g. the version of the software on the node).
    pub facts: BTreeMap<String, String>,
    /// A file a fact's command needs readable, tested by the probe's own
    /// shell first: where it is missing the fact is unknown at the cost of
    /// no process (a fact's command runs in a subshell, one fork per node).
    pub fact_needs: BTreeMap<String, String>,
}

/// Where the engine records, on a host, the handlers a run notified and has
/// not finished (engine/pending.rs); the compliance audit reads it too.
pub const PENDING_DIR: &str = "/var/lib/khard/pending";

/// Most output a `reads` command brings back.
pub const MAX_READ: usize = 64 * 1024;

/// Largest file content a probe brings back; bigger files are compared by checksum only.
pub const MAX_CONTENT: u64 = 256 * 1024;

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    File,
    Dir,
    Link,
    Other(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Stat {
    pub kind: Kind,
    pub mode: u32,
    pub owner: String,
    pub group: String,
    /// Numeric ids, so that `owner: "0"` compares with what `stat` says.
    pub uid: String,
    pub gid: String,
    pub size: u64,
}

/// The answers of a probe.
#[derive(Debug, Default, Clone)]
pub struct RemoteState {
    pub stat: BTreeMap<String, Stat>,
    pub stat_follow: BTreeMap<String, Stat>,
    pub sha256: BTreeMap<String, String>,
    pub content: BTreeMap<String, Vec<u8>>,
    pub sysctl: BTreeMap<String, String>,
    /// Exit status of each guard command.
    pub guards: BTreeMap<String, i32>,
    /// Exit status and stdout of each `reads` command.
    pub reads: BTreeMap<String, (i32, String)>,
    /// `content_glob` patterns with a match whose content did not come back
    /// (a name with a newline, a link, a file over [`MAX_CONTENT`]).
    pub unread: BTreeSet<String>,
    /// The value of each fact that answered with a non-empty line.
    pub facts: BTreeMap<String, String>,
}

impl Probe {
    pub fn add_guard(&mut self, command: &str) -> usize {
        if let Some(i) = self.guards.iter().position(|g| g == command) {
            return i;
        }
        self.guards.push(command.to_owned());
        self.guards.len() - 1
    }

    /// Adds everything `other` asks.
    pub fn merge(&mut self, other: Probe) {
        self.stat.extend(other.stat);
        self.stat_follow.extend(other.stat_follow);
        self.sha256.extend(other.sha256);
        self.content.extend(other.content);
        self.content_glob.extend(other.content_glob);
        self.sysctl.extend(other.sysctl);
        for g in other.guards {
            self.add_guard(&g);
        }
        self.reads.extend(other.reads);
        self.facts.extend(other.facts);
        self.fact_needs.extend(other.fact_needs);
    }

    /// Whether everything `other` needs was asked by this probe (content aside,
    /// which only feeds diffs).
    pub fn covers(&self, other: &Probe) -> bool {
        other.stat.is_subset(&self.stat)
            && other.stat_follow.is_subset(&self.stat_follow)
            && other.sha256.is_subset(&self.sha256)
            && other.content_glob.is_subset(&self.content_glob)
            && other.sysctl.is_subset(&self.sysctl)
            && other.guards.iter().all(|g| self.guards.contains(g))
            && other.reads.is_subset(&self.reads)
            && other.facts.keys().all(|k| self.facts.contains_key(k))
    }

    /// The script: it only reads, never writes.
    pub fn script(&self, marker: &str) -> Vec<u8> {
        let mut s = preamble(marker);
        s.push_str("echo \"$M facts\"\nkhard_nl='\n'\n");
        // The first line of each answer, cut by the shell itself: `$( )` is
        // the one subshell (an `exit` in the command ends only it), and no
        // `head` process is spent per fact.
        for (name, command) in &self.facts {
            let run = format!("khard_f=$( {{ {command}\n}} </dev/null 2>/dev/null )");
            let run = match self.fact_needs.get(name) {
                Some(file) => format!("khard_f=''; if [ -r {} ]; then {run}; fi", quote(file)),
                None => run,
            };
            let _ = writeln!(
                s,
                "{run}; khard_f=${{khard_f%%\"$khard_nl\"*}}; echo {}=\"$khard_f\"",
                quote(name)
            );
        }
        let words = |set: &BTreeSet<String>| words(set.iter());
        self.files_script(&mut s);
        if !self.stat_follow.is_empty() {
            let _ = writeln!(
                s,
                "echo \"$M statfollow\"\nstat -L -c '%F|%a|%U|%G|%s|%u|%g|%n' -- {} 2>/dev/null",
                words(&self.stat_follow)
            );
        }
        // One grep for every key (a process per key was most of a no-change
        // probe's cost on a node): `PATH:LINE` for each line of each file
        // that could be read, nothing for one that could not. It reads
        // files whole, as cat did; never `read`: procfs answers end-of-file
        // at any non-zero offset, and dash's `read` takes one byte at a time.
        if !self.sysctl.is_empty() {
            let paths: Vec<String> = self.sysctl.iter().map(|k| quote(&sysctl_path(k))).collect();
            let _ = writeln!(
                s,
                "echo \"$M sysctl\"\ngrep -H -s -- '' {} </dev/null",
                paths.join(" ")
            );
        }
        for (i, guard) in self.guards.iter().enumerate() {
            let _ = writeln!(
                s,
                "( {guard}\n) </dev/null >/dev/null 2>&1; echo \"$M guard {i} $?\""
            );
        }
        // Output comes back as it is, after its status line: the command
        // runs without the marker (`M=` in its subshell; the nonce is in
        // no environment), so no line of it can be one. `$( )` is already
        // a subshell (an `exit` in the command ends only it) and strips the
        // final newlines; the shell measures the answer (LC_ALL=C: bytes),
        // so only one over MAX_READ costs a `head`.
        for (i, command) in self.reads.iter().enumerate() {
            let _ = writeln!(
                s,
                "khard_r=$( {{ M=; {command}\n}} </dev/null 2>/dev/null ); khard_s=$?; echo \"$M read {i} $khard_s\"\n\
                 if [ ${{#khard_r}} -le {MAX_READ} ]; then [ -z \"$khard_r\" ] || printf '%s\\n' \"$khard_r\"; else printf '%s' \"$khard_r\" | head -c {MAX_READ}; echo; fi"
            );
        }
        s.push_str("echo \"$M end\"\n");
        s.into_bytes()
    }
}

impl Probe {
    /// The files section: `stat`, content and sha256, in as few processes
    /// as a node can give them. ONE `stat` looks at every path asked (and
    /// at each content glob's matches); the regular files of at most
    /// MAX_CONTENT bytes among those whose content or checksum is wanted are
    /// read by ONE `od` (hex bytes: it takes many files, where `base64`
    /// takes one), and [`parse`] cuts the stream back into files by the
    /// sizes `stat` printed and hashes them itself; `sha256sum` runs only for what was
    /// not read. A process per file was most of a no-change probe's cost.
    /// Names are never script text: matches pass through variables.
    fn files_script(&self, s: &mut String) {
        if self.stat.is_empty()
            && self.content.is_empty()
            && self.content_glob.is_empty()
            && self.sha256.is_empty()
        {
            return;
        }
        // A sha256 entry may be a glob (left to the shell); a content path
        // is always a name, wildcards and all.
        let plain = |p: &&String| !p.contains(['*', '?', '\n']);
        // Read whole, by one stat line each: content, and sha256 files
        // (hashed here). A name with a newline cannot be one line of
        // `stat`'s answer: a named file with one is read alone (by its
        // index), a glob's match with one is reported unread.
        let wanted: BTreeSet<&String> = self
            .content
            .iter()
            .filter(|p| !p.contains('\n'))
            .chain(self.sha256.iter().filter(plain))
            .collect();
        for (i, path) in self.content.iter().enumerate() {
            if path.contains('\n') {
                let q = quote(path);
                let _ = writeln!(
                    s,
                    "if [ -f {q} ] && [ ! -L {q} ] && [ $(stat -c %s {q}) -le {MAX_CONTENT} ]; then echo \"$M content {i}\"; base64 {q}; fi"
                );
            }
        }
        let cases = wanted
            .iter()
            .map(|p| quote(p))
            .collect::<Vec<_>>()
            .join("|");
        s.push_str("set --\nkhard_gm=''\n");
        for (i, pattern) in self.content_glob.iter().enumerate() {
            // A match that is also a wanted name is looked at once; a glob
            // that matched nothing is itself, which is not there.
            let skip = if cases.is_empty() {
                String::new()
            } else {
                format!(" {cases}) continue;;")
            };
            let _ = writeln!(
                s,
                "for f in {}; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; case $f in *\"$khard_nl\"*) echo \"$M unread {i}\"; continue;;{skip} esac; khard_gm=$khard_gm$f$khard_nl; set -- \"$@\" \"$f\"; done",
                glob_words(pattern)
            );
        }
        // `stat`'s operands: what was asked to stat (globs expanded), and each
        // wanted name, quoted, unless it is already one of those.
        let mut operands = words(self.stat.iter());
        for name in &wanted {
            if !self.stat.contains(*name) || name.contains(['*', '?']) {
                operands.push(' ');
                operands.push_str(&quote(name));
            }
        }
        // Nothing to look at (only globs, which matched nothing): no `stat`.
        let guard = if operands.trim().is_empty() {
            "[ $# -eq 0 ] || "
        } else {
            ""
        };
        let _ = write!(
            s,
            "khard_cs=''\n{guard}khard_cs=$(stat -c '%F|%a|%U|%G|%s|%u|%g|%n' -- {} \"$@\" 2>/dev/null)\n\
             echo \"$M stat\"\n\
             [ -z \"$khard_cs\" ] || printf '%s\\n' \"$khard_cs\"\n\
             set --\n\
             khard_rd=$khard_nl\n\
             khard_l=$khard_cs\n\
             while [ -n \"$khard_l\" ]; do\n\
             \x20 khard_x=${{khard_l%%\"$khard_nl\"*}}\n\
             \x20 case $khard_l in *\"$khard_nl\"*) khard_l=${{khard_l#*\"$khard_nl\"}} ;; *) khard_l='' ;; esac\n\
             \x20 khard_n=${{khard_x#*|*|*|*|*|*|*|}}\n\
             \x20 case $khard_n in {cases}) ;; *) case $khard_nl$khard_gm in *\"$khard_nl$khard_n$khard_nl\"*) ;; *) continue ;; esac ;; esac\n\
             \x20 case $khard_x in 'regular file|'*|'regular empty file|'*) ;; *) continue ;; esac\n\
             \x20 khard_s=${{khard_x#*|*|*|*|}}; khard_s=${{khard_s%%|*}}\n\
             \x20 [ \"$khard_s\" -le {MAX_CONTENT} ] || continue\n\
             \x20 case $khard_rd in *\"$khard_nl$khard_n$khard_nl\"*) continue ;; esac\n\
             \x20 khard_rd=$khard_rd$khard_n$khard_nl\n\
             \x20 set -- \"$@\" \"$khard_n\"\n\
             done\n\
             echo \"$M cread\"\n\
             [ $# -eq 0 ] || printf '%s\\n' \"$@\"\n\
             echo \"$M cdata\"\n\
             [ $# -eq 0 ] || od -A n -t x1 -v -- \"$@\"\n\
             set --\n",
            operands,
            cases = if cases.is_empty() {
                "''".to_owned()
            } else {
                cases.clone()
            },
        );
        for path in &self.sha256 {
            if plain(&path) {
                let q = quote(path);
                let _ = writeln!(
                    s,
                    "case $khard_rd in *\"$khard_nl\"{q}\"$khard_nl\"*) ;; *) [ ! -f {q} ] || set -- \"$@\" {q} ;; esac"
                );
            } else {
                let _ = writeln!(s, "set -- \"$@\" {}", words(std::iter::once(path)));
            }
        }
        s.push_str("echo \"$M sha256\"\n[ $# -eq 0 ] || sha256sum -- \"$@\" 2>/dev/null\n");
    }
}

/// The entries of `map` (keyed by path) that the path glob `pattern`
/// matches, found from its literal prefix rather than by trying every key.
pub fn glob_range<'a, V>(
    map: &'a BTreeMap<String, V>,
    pattern: &'a str,
) -> impl Iterator<Item = (&'a String, &'a V)> {
    let prefix = &pattern[..pattern.find(['*', '?', '[']).unwrap_or(pattern.len())];
    use std::ops::Bound;
    map.range::<str, _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(path, _)| path.starts_with(prefix))
        .filter(move |(path, _)| crate::lang::glob::Glob::PATHS.matches(pattern, path))
}

/// Paths as shell words: globs left to the shell, the rest quoted.
fn words<'a>(paths: impl Iterator<Item = &'a String>) -> String {
    paths
        .map(|p| {
            if p.contains(['*', '?']) {
                glob_words(p)
            } else {
                quote(p)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// A glob for the shell: quoted except for its wildcards (`*`, `?`, and
/// `[…]` classes of letters and digits), so the remote shell expands it.
pub fn glob_words(pattern: &str) -> String {
    let mut out = String::new();
    let mut literal = String::new();
    let bytes = pattern.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let wild = match bytes[i] {
            b'*' | b'?' => Some(1),
            b'[' => crate::lang::glob::class_at(&bytes[i..]).map(|(_, len)| len),
            _ => None,
        };
        match wild {
            Some(len) => {
                if !literal.is_empty() {
                    out.push_str(&quote(&literal));
                    literal.clear();
                }
                out.push_str(&pattern[i..i + len]);
                i += len;
            }
            None => {
                let c = pattern[i..].chars().next().expect("in bounds");
                literal.push(c);
                i += c.len_utf8();
            }
        }
    }
    if !literal.is_empty() {
        out.push_str(&quote(&literal));
    }
    out
}

/// Parses probe output; `None` when the end marker is missing (the probe was cut short).
pub fn parse(marker: &str, stdout: &str, probe: &Probe) -> Option<RemoteState> {
    let mut state = RemoteState::default();
    let mut sysctl_paths: Vec<(String, &String)> =
        probe.sysctl.iter().map(|k| (sysctl_path(k), k)).collect();
    sysctl_paths.sort_by_key(|(path, _)| std::cmp::Reverse(path.len()));
    let mut section = String::new();
    let mut content_path = String::new();
    let mut content_b64 = String::new();
    // The `reads` command being collected: its index, status and text so far.
    let mut read: Option<(String, i32)> = None;
    let mut read_text = String::new();
    let mut ended = false;
    // The files the script read, in order, and their one hex stream.
    let mut read_names: Vec<String> = Vec::new();
    let mut content_stream = String::new();
    let flush_content = |state: &mut RemoteState, path: &mut String, b64: &mut String| {
        if !path.is_empty() {
            if let Ok(bytes) = data_encoding::BASE64.decode(b64.as_bytes()) {
                state.content.insert(std::mem::take(path), bytes);
            }
            path.clear();
            b64.clear();
        }
    };
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix(marker).and_then(|r| r.strip_prefix(' ')) {
            flush_content(&mut state, &mut content_path, &mut content_b64);
            flush_read(&mut state, &mut read, &mut read_text);
            if let Some(r) = rest.strip_prefix("read ") {
                let mut it = r.split(' ');
                let index = it.next().and_then(|i| i.parse::<usize>().ok());
                let code = it.next().and_then(|c| c.parse::<i32>().ok());
                if let (Some(cmd), Some(code)) =
                    (index.and_then(|i| probe.reads.iter().nth(i)), code)
                {
                    read = Some((cmd.clone(), code));
                }
                section = "read".into();
            } else if let Some(i) = rest.strip_prefix("unread ") {
                let pattern = i
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| probe.content_glob.iter().nth(i));
                state.unread.extend(pattern.cloned());
                section.clear();
            } else if let Some(i) = rest.strip_prefix("content ") {
                let path = i
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| probe.content.iter().nth(i));
                content_path = path.cloned().unwrap_or_default();
                section = "content".into();
            } else if let Some(g) = rest.strip_prefix("guard ") {
                let mut it = g.split(' ');
                let index = it.next().and_then(|i| i.parse::<usize>().ok());
                let code = it.next().and_then(|c| c.parse::<i32>().ok());
                if let (Some(cmd), Some(code)) = (index.and_then(|i| probe.guards.get(i)), code) {
                    state.guards.insert(cmd.clone(), code);
                }
                section.clear();
            } else if rest == "end" {
                ended = true;
            } else {
                section = rest.to_owned();
            }
            continue;
        }
        match section.as_str() {
            "facts" => {
                if let Some((k, v)) = line.split_once('=')
                    && !v.is_empty()
                {
                    state.facts.insert(k.to_owned(), v.to_owned());
                }
            }
            "stat" | "statfollow" => {
                let parts: Vec<&str> = line.splitn(8, '|').collect();
                if let [kind, mode, owner, group, size, uid, gid, path] = parts[..] {
                    let kind = match kind {
                        "regular file" | "regular empty file" => Kind::File,
                        "directory" => Kind::Dir,
                        "symbolic link" => Kind::Link,
                        other => Kind::Other(other.to_owned()),
                    };
                    let map = if section == "stat" {
                        &mut state.stat
                    } else {
                        &mut state.stat_follow
                    };
                    map.insert(
                        path.to_owned(),
                        Stat {
                            kind,
                            mode: u32::from_str_radix(mode, 8).unwrap_or(0),
                            owner: owner.to_owned(),
                            group: group.to_owned(),
                            uid: uid.to_owned(),
                            gid: gid.to_owned(),
                            size: size.parse().unwrap_or(0),
                        },
                    );
                }
            }
            "sha256" => {
                if let Some((hash, path)) = line.split_once("  ").or_else(|| line.split_once(" *"))
                {
                    state.sha256.insert(path.to_owned(), hash.to_owned());
                }
            }
            "sysctl" => {
                // Longest path first: a key's path is never a prefix of
                // another's followed by `:`, but a line is matched whole.
                if let Some((key, value)) = sysctl_paths.iter().find_map(|(path, key)| {
                    line.strip_prefix(path.as_str())
                        .and_then(|r| r.strip_prefix(':'))
                        .map(|v| (key, v))
                }) {
                    let joined = match state.sysctl.get(*key) {
                        Some(before) => format!("{before} {value}"),
                        None => value.to_owned(),
                    };
                    state
                        .sysctl
                        .insert((*key).clone(), normalize_sysctl(&joined));
                }
            }
            "cread" => read_names.push(line.to_owned()),
            "cdata" => content_stream.extend(line.split_ascii_whitespace()),
            "content" => content_b64.push_str(line.trim()),
            "read" => {
                read_text.push_str(line);
                read_text.push('\n');
            }
            _ => {}
        }
    }
    flush_content(&mut state, &mut content_path, &mut content_b64);
    flush_read(&mut state, &mut read, &mut read_text);
    if !ended {
        return None;
    }
    split_contents(&mut state, probe, &read_names, &content_stream)?;
    Some(state)
}

/// Cuts the content stream into the files the script read, by the sizes
/// `stat` printed, and hashes those whose sha256 was asked. A stream of
/// another length means a file changed size between the two: the probe is
/// not trusted (`None`), never a file cut short. A content glob's match
/// that was not read (a link, a special file, over MAX_CONTENT; folders
/// aside) is reported unread under its pattern.
fn split_contents(
    state: &mut RemoteState,
    probe: &Probe,
    read: &[String],
    stream: &str,
) -> Option<()> {
    let bytes = data_encoding::HEXLOWER_PERMISSIVE
        .decode(stream.as_bytes())
        .ok()?;
    let mut at = 0usize;
    for name in read {
        let size = usize::try_from(state.stat.get(name)?.size).ok()?;
        let content = bytes.get(at..at.checked_add(size)?)?;
        at += size;
        if probe.sha256.contains(name) {
            use sha2::Digest;
            let hash = data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(content));
            state.sha256.insert(name.clone(), hash);
        }
        state.content.insert(name.clone(), content.to_vec());
    }
    if at != bytes.len() {
        return None;
    }
    for pattern in &probe.content_glob {
        let unread = glob_range(&state.stat, pattern)
            .any(|(name, stat)| stat.kind != Kind::Dir && !state.content.contains_key(name));
        if unread {
            state.unread.insert(pattern.clone());
        }
    }
    Some(())
}

/// Stores the `reads` answer collected so far, if any.
fn flush_read(state: &mut RemoteState, read: &mut Option<(String, i32)>, text: &mut String) {
    if let Some((command, code)) = read.take() {
        // The newline the script printed after the answer is not the answer's.
        let answer = text.strip_suffix('\n').unwrap_or(text);
        state.reads.insert(command, (code, answer.to_owned()));
    }
    text.clear();
}

/// The procfs file of a sysctl key.
fn sysctl_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}

/// Multi-value sysctls (`32768\t60999`) compare with single spaces.
pub fn normalize_sysctl(v: &str) -> String {
    v.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The sha256 of `data` in lower-case hex, as `sha256sum` prints it.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The read path against the test machine's own, real /proc/sys (reading
    /// is harmless), under every shell a node may have as /bin/sh. Integer
    /// sysctls are the trap: procfs answers end-of-file at any non-zero
    /// offset, so dash's byte-by-byte `read` gets one digit.
    #[test]
    fn reads_the_real_proc_sys_whole_under_dash_bash_and_busybox() {
        let keys = [
            "kernel.keys.root_maxkeys",
            "kernel.panic",
            "vm.overcommit_memory",
            "net.ipv4.ip_local_port_range",
            "kernel.ostype",
        ];
        let mut p = Probe::default();
        p.sysctl.extend(keys.iter().map(|k| k.to_string()));
        let marker = crate::shell::new_marker();
        let script = String::from_utf8(p.script(&marker)).unwrap();
        let want: Vec<String> = keys
            .iter()
            .map(|k| {
                let path = format!("/proc/sys/{}", k.replace('.', "/"));
                normalize_sysctl(std::fs::read_to_string(path).unwrap().trim_end())
            })
            .collect();
        assert!(
            want[0].len() > 1,
            "root_maxkeys has several digits: {want:?}"
        );
        let shells: [&[&str]; 3] = [&["dash"], &["bash"], &["busybox", "sh"]];
        for shell in shells {
            let Ok(out) = std::process::Command::new(shell[0])
                .args(&shell[1..])
                .arg("-c")
                .arg(&script)
                .output()
            else {
                panic!("{shell:?} is not installed: run scripts/test, which installs it");
            };
            let state = parse(&marker, &String::from_utf8_lossy(&out.stdout), &p)
                .unwrap_or_else(|| panic!("{shell:?}: probe did not end"));
            let got: Vec<String> = keys.iter().map(|k| state.sysctl[*k].clone()).collect();
            assert_eq!(got, want, "{shell:?}");
        }
    }

    /// One grep reads every key: a key without a file is absent, not empty,
    /// and the keys' values do not mix.
    #[test]
    fn a_missing_sysctl_is_absent_and_values_stay_apart() {
        let mut p = Probe::default();
        for k in [
            "kernel.ostype",
            "kernel.khard_no_such_key",
            "kernel.osrelease",
        ] {
            p.sysctl.insert(k.into());
        }
        let marker = crate::shell::new_marker();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(String::from_utf8(p.script(&marker)).unwrap())
            .output()
            .unwrap();
        let state = parse(&marker, &String::from_utf8_lossy(&out.stdout), &p).unwrap();
        assert_eq!(state.sysctl["kernel.ostype"], "Linux");
        assert!(!state.sysctl.contains_key("kernel.khard_no_such_key"));
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(state.sysctl["kernel.osrelease"], release.trim_end());
    }

    /// A fact is the first line of its answer; one that exits or fails
    /// ends only itself, under every shell a node may have as /bin/sh.
    #[test]
    fn a_fact_is_its_first_line_and_cannot_end_the_probe() {
        let mut p = Probe::default();
        p.facts
            .insert("two".into(), "printf 'first\\nsecond\\n'".into());
        p.facts.insert("gone".into(), "exit 3".into());
        p.facts.insert("quiet".into(), "false".into());
        p.sysctl.insert("kernel.ostype".into());
        let marker = crate::shell::new_marker();
        let script = String::from_utf8(p.script(&marker)).unwrap();
        let shells: [&[&str]; 3] = [&["dash"], &["bash"], &["busybox", "sh"]];
        for shell in shells {
            let out = std::process::Command::new(shell[0])
                .args(&shell[1..])
                .arg("-c")
                .arg(&script)
                .output()
                .unwrap();
            let state = parse(&marker, &String::from_utf8_lossy(&out.stdout), &p)
                .unwrap_or_else(|| panic!("{shell:?}: the probe did not end"));
            assert_eq!(
                state.facts.get("two").map(String::as_str),
                Some("first"),
                "{shell:?}"
            );
            assert!(!state.facts.contains_key("gone") && !state.facts.contains_key("quiet"));
            assert_eq!(state.sysctl["kernel.ostype"], "Linux", "{shell:?}");
        }
    }

    /// A fact whose file is missing is unknown and its command never runs;
    /// with the file readable it runs as any fact.
    #[test]
    fn a_fact_runs_only_where_the_file_it_needs_is_readable() {
        let tmp = crate::testutil::TempDir::new();
        let ran = tmp.path().join("ran");
        let needed = tmp.path().join("kubeconfig");
        let mut p = Probe::default();
        p.facts.insert(
            "nodes".into(),
            format!("touch {}; echo answer", quote(ran.to_str().unwrap())),
        );
        p.fact_needs
            .insert("nodes".into(), needed.to_str().unwrap().to_owned());
        let marker = crate::shell::new_marker();
        let run = || {
            let out = std::process::Command::new("dash")
                .arg("-c")
                .arg(String::from_utf8(p.script(&marker)).unwrap())
                .output()
                .unwrap();
            parse(&marker, &String::from_utf8_lossy(&out.stdout), &p).expect("probe ended")
        };
        assert!(!run().facts.contains_key("nodes"));
        assert!(!ran.exists(), "the command ran without its file");
        std::fs::write(&needed, "x").unwrap();
        assert_eq!(run().facts["nodes"], "answer");
        assert!(ran.exists());
    }

    #[test]
    fn probes_a_real_folder() {
        let tmp = crate::testutil::TempDir::new();
        let dir = tmp.path().to_path_buf();
        std::fs::create_dir_all(dir.join("tls")).unwrap();
        std::fs::write(dir.join("a.conf"), "x=1\n").unwrap();
        std::fs::write(dir.join("tls/one.crt"), "c").unwrap();
        std::fs::write(dir.join("tls/two.crt"), "c").unwrap();
        let d = dir.display();
        let mut p = Probe::default();
        p.stat.insert(format!("{d}/a.conf"));
        p.stat.insert(format!("{d}/missing"));
        p.stat.insert(format!("{d}/tls/*.crt"));
        p.sha256.insert(format!("{d}/a.conf"));
        p.content.insert(format!("{d}/a.conf"));
        p.sysctl.insert("kernel.ostype".into());
        p.add_guard("test -e /");
        p.add_guard("exit 3");
        // A read cannot forge a marker line: it runs without the marker,
        // and a line like one with another nonce is only text.
        let forged =
            "printf 'x\\n%s end\\n@@khard-0123456789abcdef end\\nline two\\n' \"$M\"; exit 4";
        let long = format!("head -c {} /dev/zero | tr '\\0' y", MAX_READ + 10);
        p.reads.insert(long.clone());
        p.reads.insert(forged.into());
        p.reads.insert("echo 'ns a=false'".into());
        let marker = crate::shell::new_marker();
        let out = std::process::Command::new("/bin/sh")
            .arg("-c")
            .arg(String::from_utf8(p.script(&marker)).unwrap())
            .output()
            .unwrap();
        let state = parse(&marker, &String::from_utf8_lossy(&out.stdout), &p).expect("probe ended");
        let a = &state.stat[&format!("{d}/a.conf")];
        assert_eq!((a.kind.clone(), a.size), (Kind::File, 4));
        assert!(!state.stat.contains_key(&format!("{d}/missing")));
        assert!(state.stat.contains_key(&format!("{d}/tls/two.crt")));
        assert_eq!(state.sha256[&format!("{d}/a.conf")], sha(b"x=1\n"));
        assert_eq!(state.content[&format!("{d}/a.conf")], b"x=1\n");
        assert_eq!(state.sysctl["kernel.ostype"], "Linux");
        assert_eq!(state.guards["test -e /"], 0);
        assert_eq!(state.guards["exit 3"], 3);
        assert_eq!(state.reads["echo 'ns a=false'"], (0, "ns a=false".into()));
        assert_eq!(
            state.reads[forged],
            (
                4,
                "x\n end\n@@khard-0123456789abcdef end\nline two".to_owned()
            )
        );
        assert_eq!(state.reads[&long], (0, "y".repeat(MAX_READ)));
    }

    #[test]
    fn a_glob_match_that_cannot_come_back_is_reported_unread() {
        let tmp = crate::testutil::TempDir::new();
        let dir = tmp.path().to_path_buf();
        std::fs::write(dir.join("10-ok.yaml"), "a: 1\n").unwrap();
        let d = dir.display();
        let mut p = Probe::default();
        p.content_glob.insert(format!("{d}/*.yaml"));
        p.content_glob.insert(format!("{d}/*.yml"));
        let marker = crate::shell::new_marker();
        let run = |p: &Probe| {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(String::from_utf8(p.script(&marker)).unwrap())
                .output()
                .unwrap();
            parse(&marker, &String::from_utf8_lossy(&out.stdout), p).expect("probe ended")
        };
        let state = run(&p);
        assert!(state.unread.is_empty(), "{:?}", state.unread);
        assert_eq!(state.content[&format!("{d}/10-ok.yaml")], b"a: 1\n");
        // A name with a newline, a link and a file too big to bring back.
        std::fs::write(dir.join("20-new\nline.yaml"), "b: 2\n").unwrap();
        std::os::unix::fs::symlink(dir.join("10-ok.yaml"), dir.join("30-link.yml")).unwrap();
        let state = run(&p);
        assert_eq!(
            state.unread,
            BTreeSet::from([format!("{d}/*.yaml"), format!("{d}/*.yml")])
        );
        assert!(state.content.contains_key(&format!("{d}/10-ok.yaml")));
    }

    /// Many files come back through one `stat` and one `base64`, cut apart
    /// byte for byte: named files and globs' matches (one file is both), empty and binary files, a named file with a newline in its
    /// name; a file over MAX_CONTENT does not come back; under dash, bash
    /// and busybox.
    #[test]
    fn many_files_come_back_whole_under_dash_bash_and_busybox() {
        let tmp = crate::testutil::TempDir::new();
        let d = tmp.path().display().to_string();
        let files: [(&str, &[u8]); 5] = [
            ("a.conf", b"x=1\n"),
            ("empty.yaml", b""),
            ("bin.yaml", b"\0\xff\n\n@@khard-0000 end\n"),
            ("b|c.yaml", b"no final newline"),
            ("new\nline.conf", b"named\n"),
        ];
        for (name, content) in files {
            std::fs::write(tmp.path().join(name), content).unwrap();
        }
        let big = vec![b'z'; MAX_CONTENT as usize + 1];
        std::fs::write(tmp.path().join("big.yaml"), &big).unwrap();
        let mut p = Probe::default();
        p.content.insert(format!("{d}/a.conf"));
        p.content.insert(format!("{d}/bin.yaml"));
        p.content.insert(format!("{d}/new\nline.conf"));
        p.content.insert(format!("{d}/missing.conf"));
        p.content_glob.insert(format!("{d}/*.yaml"));
        // Checksums: of a file read anyway (hashed by khard), of one only
        // hashed (read too, and hashed by khard), of one too big to read
        // (by sha256sum on the node).
        p.sha256.insert(format!("{d}/a.conf"));
        p.sha256.insert(format!("{d}/sum-only"));
        p.sha256.insert(format!("{d}/big.yaml"));
        std::fs::write(tmp.path().join("sum-only"), b"s\n").unwrap();
        let marker = crate::shell::new_marker();
        let script = String::from_utf8(p.script(&marker)).unwrap();
        // Busybox's shell with its own applets too (an Alpine-like node):
        // its stat, od and sha256sum, whose output the parser reads.
        let applets = script
            .replace("$(stat ", "$(busybox stat ")
            .replace("|| od ", "|| busybox od ")
            .replace("|| sha256sum ", "|| busybox sha256sum ");
        let shells: [(&[&str], &String); 4] = [
            (&["dash"], &script),
            (&["bash"], &script),
            (&["busybox", "sh"], &script),
            (&["busybox", "sh"], &applets),
        ];
        assert_eq!(applets.matches("busybox ").count(), 4, "{applets}");
        for (shell, script) in shells {
            let Ok(out) = std::process::Command::new(shell[0])
                .args(&shell[1..])
                .arg("-c")
                .arg(script)
                .output()
            else {
                assert_ne!(shell[0], "dash", "dash is needed");
                continue;
            };
            let state = parse(&marker, &String::from_utf8_lossy(&out.stdout), &p)
                .unwrap_or_else(|| panic!("{shell:?}: {}", String::from_utf8_lossy(&out.stdout)));
            for (name, content) in files {
                assert_eq!(
                    state.content.get(&format!("{d}/{name}")).map(Vec::as_slice),
                    Some(content),
                    "{shell:?}: {name}"
                );
            }
            assert_eq!(state.content.len(), files.len() + 1, "{shell:?}");
            assert_eq!(
                state.sha256[&format!("{d}/a.conf")],
                sha(b"x=1\n"),
                "{shell:?}"
            );
            assert_eq!(
                state.sha256[&format!("{d}/sum-only")],
                sha(b"s\n"),
                "{shell:?}"
            );
            assert_eq!(
                state.sha256[&format!("{d}/big.yaml")],
                sha(&big),
                "{shell:?}"
            );
            assert_eq!(state.stat[&format!("{d}/bin.yaml")].size, 21, "{shell:?}");
            assert_eq!(
                state.unread,
                BTreeSet::from([format!("{d}/*.yaml")]),
                "{shell:?}"
            );
        }
    }

    /// A file named with a wildcard is read as that name, never as a glob
    /// (a file the glob would match is not read in its place); a match
    /// named like shell text is only a name.
    #[test]
    fn a_named_file_with_a_wildcard_is_that_file() {
        let tmp = crate::testutil::TempDir::new();
        std::fs::write(tmp.path().join("a*b.conf"), "star\n").unwrap();
        std::fs::write(tmp.path().join("axb.conf"), "other\n").unwrap();
        // And a glob's match whose name is shell text: a name, never run.
        let hostile = "q$(touch khard-x)'`id`.conf";
        std::fs::write(tmp.path().join(hostile), "q\n").unwrap();
        let name = format!("{}/a*b.conf", tmp.path().display());
        let mut p = Probe::default();
        p.content.insert(name.clone());
        p.content_glob
            .insert(format!("{}/q*.conf", tmp.path().display()));
        let marker = crate::shell::new_marker();
        let out = std::process::Command::new("dash")
            .arg("-c")
            .arg(String::from_utf8(p.script(&marker)).unwrap())
            .current_dir(tmp.path())
            .output()
            .unwrap();
        let state = parse(&marker, &String::from_utf8_lossy(&out.stdout), &p).unwrap();
        assert_eq!(state.content.len(), 2, "{:?}", state.content.keys());
        assert_eq!(state.content[&name], b"star\n");
        let hostile = format!("{}/{hostile}", tmp.path().display());
        assert_eq!(state.content[&hostile], b"q\n");
        assert!(!tmp.path().join("khard-x").exists(), "a name ran");
    }

    /// A file that changed size between `stat` and the read leaves a
    /// stream of another length: the probe is not trusted, no file is cut.
    #[test]
    fn a_file_that_changed_while_read_makes_the_probe_untrusted() {
        let mut p = Probe::default();
        p.content.insert("/a".into());
        p.content.insert("/b".into());
        let out = |stream: &[u8]| {
            format!(
                "@@k facts\n@@k stat\nregular file|644|root|root|2|0|0|/a\nregular file|644|root|root|3|0|0|/b\n@@k cread\n/a\n/b\n@@k cdata\n{}\n@@k end\n",
                data_encoding::HEXLOWER.encode(stream)
            )
        };
        let state = parse("@@k", &out(b"a\nbb\n"), &p).unwrap();
        assert_eq!(state.content["/a"], b"a\n");
        assert_eq!(state.content["/b"], b"bb\n");
        assert!(parse("@@k", &out(b"a\nbbb\n"), &p).is_none());
        assert!(parse("@@k", &out(b"a\nb"), &p).is_none());
    }

    fn sha(data: &[u8]) -> String {
        use sha2::Digest;
        data_encoding::HEXLOWER.encode(&sha2::Sha256::digest(data))
    }

    /// A probe that asks for no file starts no `stat`; one whose globs match
    /// nothing runs none either (a process is most of a probe's cost).
    #[test]
    fn no_file_asked_no_stat_run() {
        let mut p = Probe::default();
        p.facts.insert("v".into(), "echo 1".into());
        assert!(!String::from_utf8(p.script("@@m")).unwrap().contains("stat"));
        let tmp = crate::testutil::TempDir::new();
        p.content_glob
            .insert(format!("{}/*.yaml", tmp.path().display()));
        let script = String::from_utf8(p.script("@@m")).unwrap();
        let traced = std::process::Command::new("dash")
            .arg("-xc")
            .arg(&script)
            .output()
            .unwrap();
        let trace = String::from_utf8_lossy(&traced.stderr);
        assert!(
            !trace
                .lines()
                .any(|l| l.trim_start_matches('+').trim_start().starts_with("stat")),
            "{trace}"
        );
        let state = parse("@@m", &String::from_utf8_lossy(&traced.stdout), &p).unwrap();
        assert_eq!(state.facts["v"], "1");
        assert!(state.content.is_empty() && state.unread.is_empty());
    }

    #[test]
    fn a_cut_short_probe_is_not_trusted() {
        assert!(parse("@@k", "@@k facts\nversion=v1\n", &Probe::default()).is_none());
        let s = parse(
            "@@k",
            "@@k facts\nversion=v1.30.6+k3s1\n@@k end\n",
            &Probe::default(),
        )
        .unwrap();
        assert_eq!(s.facts["version"], "v1.30.6+k3s1");
    }
}
