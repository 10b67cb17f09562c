//! known_hosts, parsed once per run: plain and hashed (`|1|salt|hmac`)
//! entries, `[host]:port`, several key types per host, `@revoked` keys.
//! New keys (with --accept-new-host-keys) are appended by one writer at a time.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use hmac::{KeyInit, Mac};
use russh::keys::ssh_key::PublicKey;
use russh::keys::{Algorithm, parse_public_key_base64};

#[derive(Debug)]
struct Entry {
    line: usize,
    patterns: Vec<String>,
    revoked: bool,
    key: PublicKey,
}

/// What known_hosts says about a host's key.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    Known,
    /// No entry for this host at all.
    Unknown,
    /// An entry of the same type holds a different key: possibly an attack.
    Changed {
        line: usize,
    },
    /// The host has entries, but none for the key type it presented.
    OtherTypesKnown {
        types: Vec<String>,
    },
    Revoked {
        line: usize,
    },
}

impl Entry {
    /// Only plain names (no wildcard, negation or hash): it matches a host
    /// exactly when one of them is the host's name, letters in any case.
    fn plain(&self) -> bool {
        self.patterns
            .iter()
            .all(|p| !p.contains(['*', '?']) && !p.starts_with('!') && !p.starts_with("|1|"))
    }
}

/// The entries, and an index of the plain ones by name: with a line per
/// host, a fleet of N hosts would otherwise match N patterns per host
/// (N² in all; most of a 1000-host no-change run's own CPU).
#[derive(Default)]
struct Table {
    entries: Vec<Entry>,
    /// Lower-cased name → the plain entries naming it, in file order.
    by_name: HashMap<String, Vec<usize>>,
    /// Entries with a wildcard, a negation or a hashed name: matched one by one.
    scanned: Vec<usize>,
}

impl Table {
    fn new(entries: Vec<Entry>) -> Table {
        let mut table = Table::default();
        for e in entries {
            table.push(e);
        }
        table
    }

    fn push(&mut self, e: Entry) {
        let i = self.entries.len();
        if e.plain() {
            for p in &e.patterns {
                let at = self.by_name.entry(p.to_ascii_lowercase()).or_default();
                if at.last() != Some(&i) {
                    at.push(i);
                }
            }
        } else {
            self.scanned.push(i);
        }
        self.entries.push(e);
    }

    /// The entries that match `name`, in file order.
    fn matching<'a>(&'a self, name: &str) -> impl Iterator<Item = &'a Entry> {
        let mut at = self
            .by_name
            .get(&name.to_ascii_lowercase())
            .cloned()
            .unwrap_or_default();
        at.extend(
            self.scanned
                .iter()
                .copied()
                .filter(|&i| KnownHosts::matches(&self.entries[i], name)),
        );
        at.sort_unstable();
        at.into_iter().map(|i| &self.entries[i])
    }
}

pub struct KnownHosts {
    pub path: PathBuf,
    entries: Mutex<Table>,
    /// Serialises appends: 200 hosts learnt at once must not interleave lines.
    writer: Mutex<()>,
}

/// The name known_hosts uses: `host` on port 22, `[host]:port` otherwise.
pub fn host_key_name(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

fn pattern_matches(pattern: &str, name: &str) -> bool {
    if let Some(rest) = pattern.strip_prefix("|1|") {
        let Some((salt, hash)) = rest.split_once('|') else {
            return false;
        };
        let (Ok(salt), Ok(hash)) = (
            data_encoding::BASE64.decode(salt.as_bytes()),
            data_encoding::BASE64.decode(hash.as_bytes()),
        ) else {
            return false;
        };
        let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt) else {
            return false;
        };
        mac.update(name.as_bytes());
        return mac.verify_slice(&hash).is_ok();
    }
    crate::lang::glob::Glob::HOSTS.matches(pattern, name)
}

fn parse(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let mut fields = line.split_whitespace().peekable();
        let mut revoked = false;
        match fields.peek() {
            None => continue,
            Some(f) if f.starts_with('#') => continue,
            // Host CAs are not supported yet: such lines never match, so the host stays unknown.
            Some(&"@cert-authority") => continue,
            Some(&"@revoked") => {
                revoked = true;
                fields.next();
            }
            _ => {}
        }
        let (Some(hosts), Some(_kind), Some(b64)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let Ok(key) = parse_public_key_base64(b64) else {
            continue;
        };
        out.push(Entry {
            line: line_no,
            patterns: hosts.split(',').map(str::to_owned).collect(),
            revoked,
            key,
        });
    }
    out
}

impl KnownHosts {
    /// Parses known_hosts text (for the fuzz targets; `load` reads the file).
    pub fn from_text(path: &Path, text: &str) -> KnownHosts {
        KnownHosts {
            path: path.to_owned(),
            entries: Mutex::new(Table::new(parse(text))),
            writer: Mutex::new(()),
        }
    }

    pub fn load(path: &Path) -> std::io::Result<KnownHosts> {
        // A regular file of bounded size (not /dev/zero, not a FIFO);
        // /dev/null, as OpenSSH users write it, is an empty one.
        let text = match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Ok(_) if path == Path::new("/dev/null") => String::new(),
            Err(e) => return Err(e),
            Ok(_) => crate::input::inventory::read_utf8(path)
                .map_err(|e| std::io::Error::other(format!("{e:#}")))?,
        };
        Ok(KnownHosts {
            path: path.to_owned(),
            entries: Mutex::new(Table::new(parse(&text))),
            writer: Mutex::new(()),
        })
    }

    /// OpenSSH's rule for one entry: no negated pattern matches, and one
    /// of the others does.
    fn matches(e: &Entry, name: &str) -> bool {
        let negated = e.patterns.iter().any(|p| {
            p.strip_prefix('!')
                .is_some_and(|p| pattern_matches(p, name))
        });
        !negated
            && e.patterns
                .iter()
                .any(|p| !p.starts_with('!') && pattern_matches(p, name))
    }

    /// Key algorithms recorded for a host, so we can ask the server for one of those.
    pub fn known_algorithms(&self, name: &str) -> Vec<Algorithm> {
        let entries = self.entries.lock().expect("known_hosts lock");
        let mut algs: Vec<Algorithm> = Vec::new();
        for e in entries.matching(name).filter(|e| !e.revoked) {
            if !algs.contains(&e.key.algorithm()) {
                algs.push(e.key.algorithm());
            }
        }
        algs
    }

    pub fn check(&self, name: &str, key: &PublicKey) -> Verdict {
        let entries = self.entries.lock().expect("known_hosts lock");
        let mut types = Vec::new();
        let mut changed = None;
        // A revoked key is refused whatever else matches, in any order.
        if let Some(e) = entries
            .matching(name)
            .find(|e| e.revoked && e.key.key_data() == key.key_data())
        {
            return Verdict::Revoked { line: e.line };
        }
        for e in entries.matching(name) {
            let same_key = e.key.key_data() == key.key_data();
            if e.revoked {
                continue;
            }
            if same_key {
                return Verdict::Known;
            }
            if e.key.algorithm() == key.algorithm() {
                changed.get_or_insert(e.line);
            }
            types.push(e.key.algorithm().to_string());
        }
        match (changed, types.is_empty()) {
            (Some(line), _) => Verdict::Changed { line },
            (None, true) => Verdict::Unknown,
            (None, false) => Verdict::OtherTypesKnown { types },
        }
    }

    /// Appends `name key` to the file, once, with one writer at a time.
    pub fn learn(&self, name: &str, key: &PublicKey) -> std::io::Result<()> {
        use std::io::Write;
        // One line per host: a name with white space or a newline would
        // write a second (wildcard) trust line.
        if name.is_empty() || name.contains(|c: char| c.is_whitespace() || c.is_control()) {
            return Err(std::io::Error::other(format!(
                "refusing to write host name {name:?} to known_hosts"
            )));
        }
        let _guard = self.writer.lock().expect("known_hosts writer");
        if self.check(name, key) == Verdict::Known {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            // ~/.ssh is private, as ssh itself creates it.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)?;
        }
        let line = format!(
            "{name} {}\n",
            key.to_openssh().map_err(std::io::Error::other)?
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        let needs_newline = std::fs::read(&self.path)
            .map(|b| !b.is_empty() && !b.ends_with(b"\n"))
            .unwrap_or(false);
        let mut buf = Vec::new();
        if needs_newline {
            buf.push(b'\n');
        }
        buf.extend_from_slice(line.as_bytes());
        // One write call per line, so that even another process appending sees whole lines.
        f.write_all(&buf)?;
        f.sync_all()?;
        let mut entries = self.entries.lock().expect("known_hosts lock");
        let line_no = entries.entries.last().map(|e| e.line + 1).unwrap_or(1);
        entries.push(Entry {
            line: line_no,
            patterns: vec![name.to_owned()],
            revoked: false,
            key: key.clone(),
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIFaFNQ6NW0fb4D0qQqrL1ZyrcIMwwbnxXUQMdRLCDIFI";
    const ED2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIGDSy9SlBq9Da5zZ3cbUUYMgbdBwQK0lKgl9GHZ2uFD0";

    fn key(b64: &str) -> PublicKey {
        parse_public_key_base64(b64).unwrap()
    }

    fn hashed(name: &str) -> String {
        let salt = b"0123456789abcdefghij";
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt).unwrap();
        mac.update(name.as_bytes());
        let hash = mac.finalize().into_bytes();
        format!(
            "|1|{}|{}",
            data_encoding::BASE64.encode(salt),
            data_encoding::BASE64.encode(&hash)
        )
    }

    fn file(dir: &crate::testutil::TempDir, text: &str) -> KnownHosts {
        KnownHosts::load(&dir.file("known_hosts", text)).unwrap()
    }

    #[test]
    fn plain_hashed_and_port_forms() {
        let dir = crate::testutil::TempDir::new();
        let kh = file(
            &dir,
            &format!(
                "# comment\nnode1,10.0.0.1 ssh-ed25519 {ED}\n{} ssh-ed25519 {ED}\n[node3]:2222 ssh-ed25519 {ED}\n",
                hashed("node2")
            ),
        );
        assert_eq!(kh.check("node1", &key(ED)), Verdict::Known);
        assert_eq!(kh.check("10.0.0.1", &key(ED)), Verdict::Known);
        assert_eq!(kh.check("node2", &key(ED)), Verdict::Known);
        assert_eq!(
            kh.check(&host_key_name("node3", 2222), &key(ED)),
            Verdict::Known
        );
        assert_eq!(kh.check("node3", &key(ED)), Verdict::Unknown);
        assert_eq!(kh.check("node1", &key(ED2)), Verdict::Changed { line: 2 });
        assert_eq!(kh.check("node2", &key(ED2)), Verdict::Changed { line: 3 });
    }

    /// The index by name finds exactly the entries, in file order, that
    /// matching every entry one by one finds: plain names in any case,
    /// several per line, wildcards, negations, hashed names, ports.
    #[test]
    fn the_name_index_agrees_with_matching_every_entry() {
        let text = format!(
            "Node1,node2 ssh-ed25519 {ED}\n*.lab ssh-ed25519 {ED2}\nnode1 ssh-ed25519 {ED2}\n*,!node2 ssh-ed25519 {ED}\n{} ssh-ed25519 {ED}\n[node1]:2222 ssh-ed25519 {ED}\n@revoked NODE2 ssh-ed25519 {ED2}\n",
            hashed("node3")
        );
        let table = Table::new(parse(&text));
        for name in [
            "node1",
            "NODE1",
            "node2",
            "node3",
            "a.lab",
            "[node1]:2222",
            "node1 ",
            "other",
            "",
        ] {
            let indexed: Vec<usize> = table.matching(name).map(|e| e.line).collect();
            let scanned: Vec<usize> = table
                .entries
                .iter()
                .filter(|e| KnownHosts::matches(e, name))
                .map(|e| e.line)
                .collect();
            assert_eq!(indexed, scanned, "{name:?}");
        }
        let lines = |name| table.matching(name).map(|e| e.line).collect::<Vec<_>>();
        assert_eq!(lines("NODE1"), [1, 3, 4]);
        assert_eq!(lines("node2"), [1, 7]);
        assert_eq!(lines("node3"), [4, 5]);
    }

    #[test]
    fn learns_once_and_revokes() {
        let dir = crate::testutil::TempDir::new();
        let kh = file(&dir, &format!("@revoked * ssh-ed25519 {ED2}\n"));
        assert_eq!(kh.check("new", &key(ED2)), Verdict::Revoked { line: 1 });
        assert_eq!(kh.check("new", &key(ED)), Verdict::Unknown);
        kh.learn("new", &key(ED)).unwrap();
        kh.learn("new", &key(ED)).unwrap();
        assert_eq!(kh.check("new", &key(ED)), Verdict::Known);
        let text = std::fs::read_to_string(&kh.path).unwrap();
        assert_eq!(text.matches("new ssh-ed25519").count(), 1, "{text}");
        let reread = KnownHosts::load(&kh.path).unwrap();
        assert_eq!(reread.check("new", &key(ED)), Verdict::Known);
    }

    /// OpenSSH refuses a revoked key whatever else matches: a plain entry
    /// for the same key that comes first does not make it trusted.
    #[test]
    fn a_revoked_key_stays_revoked_after_a_plain_entry() {
        let dir = crate::testutil::TempDir::new();
        let kh = file(
            &dir,
            &format!("web1 ssh-ed25519 {ED2}\n@revoked * ssh-ed25519 {ED2}\n"),
        );
        assert_eq!(kh.check("web1", &key(ED2)), Verdict::Revoked { line: 2 });
    }

    #[test]
    fn a_new_known_hosts_folder_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = crate::testutil::TempDir::new();
        let path = dir.path().join("home/.ssh/known_hosts");
        let kh = KnownHosts::load(&path).unwrap();
        kh.learn("h1", &key(ED)).unwrap();
        let mode = std::fs::metadata(dir.path().join("home/.ssh"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(
            kh.learn("h2\n* ", &key(ED)).is_err(),
            "a newline would add a wildcard line"
        );
    }
}
