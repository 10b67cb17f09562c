//! OpenSSH client configuration (`~/.ssh/config`, or `-F FILE`): Host
//! blocks with patterns, the options khard uses, first value wins as in
//! OpenSSH. `Match` blocks apply for the criteria `all`, `host`,
//! `originalhost`, `localuser`, `canonical` and `final`; a block with any
//! other criterion (`exec`, `user`, ...) is skipped. `Include` is followed.

use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::InputError;
use crate::lang::glob::Glob;

#[derive(Debug, Clone, Default)]
struct Block {
    /// Host patterns; `!pattern` negates. Empty for the lines before any Host.
    patterns: Vec<String>,
    /// Lower-case keyword and its arguments.
    options: Vec<(String, Vec<String>)>,
    /// A `Match` block's criteria (keyword, argument), all of which must hold.
    criteria: Option<Vec<(String, String)>>,
}

#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    blocks: Vec<Block>,
    /// Files read so far, Includes counted: a fan-out of Includes is capped
    /// in total, not only in depth.
    files: usize,
}

/// Most files one ssh_config may read, its Includes together.
const MAX_FILES: usize = 256;

/// What the config says about one host alias.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostConfig {
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    pub identity_files: Vec<PathBuf>,
    pub identities_only: bool,
    pub proxy_jump: Option<String>,
    pub proxy_command: Option<String>,
    pub known_hosts: Option<PathBuf>,
    /// `yes`, `accept-new`, `no`/`off`, or `ask` (treated as yes).
    pub strict_host_key_checking: Option<String>,
    pub connect_timeout: Option<u64>,
    pub server_alive_interval: Option<u64>,
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// `~` and the tokens OpenSSH expands in file names that khard can know.
fn expand(path: &str, host: &str) -> PathBuf {
    let p = path
        .replace("%d", &home().display().to_string())
        .replace("%h", host)
        .replace("%%", "%");
    match p.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(p),
    }
}

impl Block {
    fn matches(&self, alias: &str) -> bool {
        if let Some(criteria) = &self.criteria {
            return criteria.iter().all(|(k, arg)| match k.as_str() {
                "all" | "canonical" | "final" => true,
                "host" | "originalhost" => pattern_list(arg, alias),
                "localuser" => pattern_list(arg, &crate::transport::local::current_user()),
                _ => false,
            });
        }
        if self.patterns.is_empty() {
            return true;
        }
        let negated = self.patterns.iter().any(|p| {
            p.strip_prefix('!')
                .is_some_and(|p| Glob::HOSTS.matches(p, alias))
        });
        !negated
            && self
                .patterns
                .iter()
                .any(|p| !p.starts_with('!') && Glob::HOSTS.matches(p, alias))
    }
}

impl SshConfig {
    /// The user's `~/.ssh/config`, or nothing when it does not exist.
    pub fn default_file() -> Result<SshConfig> {
        let path = home().join(".ssh/config");
        if path.is_file() {
            SshConfig::load(&path)
        } else {
            Ok(SshConfig::default())
        }
    }

    pub fn load(path: &Path) -> Result<SshConfig> {
        let mut cfg = SshConfig {
            blocks: vec![Block::default()],
            files: 0,
        };
        cfg.read(path, 0)?;
        Ok(cfg)
    }

    /// Parses config text as if read from `path` (Include is followed).
    pub fn from_text(path: &Path, text: &str) -> Result<SshConfig> {
        let mut cfg = SshConfig {
            blocks: vec![Block::default()],
            files: 0,
        };
        cfg.read_text(path, text, 0)?;
        Ok(cfg)
    }

    fn read(&mut self, path: &Path, depth: usize) -> Result<()> {
        self.files += 1;
        if self.files > MAX_FILES {
            return Err(InputError::new(format!(
                "{}: the ssh config and its Includes read more than {MAX_FILES} files; khard refuses it",
                path.display()
            ))
            .into());
        }
        let text = crate::input::inventory::read_utf8(path)?;
        self.read_text(path, &text, depth)
    }

    fn read_text(&mut self, path: &Path, text: &str, depth: usize) -> Result<()> {
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at =
                |message: String| InputError::at(&path.display().to_string(), i + 1, 1, message);
            let (key, rest) = crate::lang::words::ssh_option(line);
            if key.is_empty() {
                return Err(at(format!("`{line}` has no keyword")).into());
            }
            let key = key.to_ascii_lowercase();
            let w = if key == "proxycommand" {
                // A command line: kept as written, `=` and quotes included.
                vec![rest.to_owned()]
            } else {
                crate::lang::words::texts(rest).map_err(|e| at(e.to_string()))?
            };
            match key.as_str() {
                "host" => self.blocks.push(Block {
                    patterns: w,
                    ..Block::default()
                }),
                "match" => {
                    let mut criteria = Vec::new();
                    let mut it = w.into_iter();
                    while let Some(k) = it.next() {
                        let k = k.to_ascii_lowercase();
                        let arg = if matches!(k.as_str(), "all" | "canonical" | "final") {
                            String::new()
                        } else {
                            it.next().unwrap_or_default()
                        };
                        criteria.push((k, arg));
                    }
                    self.blocks.push(Block {
                        criteria: Some(criteria),
                        ..Block::default()
                    });
                }
                "include" if depth < 8 => {
                    for pattern in w {
                        let full = expand(&pattern, "");
                        let full = if full.is_absolute() {
                            full
                        } else {
                            home().join(".ssh").join(full)
                        };
                        for file in glob_files(&full) {
                            self.read(&file, depth + 1)?;
                        }
                    }
                }
                _ if w.is_empty() => return Err(at(format!("`{key}` needs a value")).into()),
                _ => self
                    .blocks
                    .last_mut()
                    .expect("a block")
                    .options
                    .push((key, w)),
            }
        }
        Ok(())
    }

    /// The settings for `alias`: for each option, the first value found in
    /// the blocks that match, in file order.
    pub fn host(&self, alias: &str) -> HostConfig {
        let mut h = HostConfig::default();
        let mut seen: Vec<&str> = Vec::new();
        for block in self.blocks.iter().filter(|b| b.matches(alias)) {
            for (key, args) in &block.options {
                // IdentityFile accumulates; everything else keeps its first value.
                if key != "identityfile" && seen.contains(&key.as_str()) {
                    continue;
                }
                seen.push(key);
                let first = args[0].clone();
                match key.as_str() {
                    "hostname" => h.hostname = Some(first.replace("%h", alias)),
                    "user" => h.user = Some(first),
                    "port" => h.port = first.parse().ok(),
                    "identityfile" => h.identity_files.push(expand(&first, alias)),
                    "identitiesonly" => h.identities_only = first.eq_ignore_ascii_case("yes"),
                    "proxyjump" if !first.eq_ignore_ascii_case("none") => {
                        h.proxy_jump = Some(first)
                    }
                    "proxycommand" if !first.eq_ignore_ascii_case("none") => {
                        h.proxy_command = Some(first)
                    }
                    "userknownhostsfile" if !first.eq_ignore_ascii_case("none") => {
                        h.known_hosts = Some(expand(&first, alias))
                    }
                    "stricthostkeychecking" => {
                        h.strict_host_key_checking = Some(first.to_ascii_lowercase())
                    }
                    "connecttimeout" => h.connect_timeout = first.parse().ok(),
                    "serveraliveinterval" => h.server_alive_interval = first.parse().ok(),
                    _ => {}
                }
            }
        }
        h
    }
}

/// An OpenSSH pattern list (`a,b,!c`): some pattern matches and no negated one does.
fn pattern_list(list: &str, text: &str) -> bool {
    let parts: Vec<&str> = list.split(',').collect();
    let negated = parts.iter().any(|p| {
        p.strip_prefix('!')
            .is_some_and(|p| Glob::HOSTS.matches(p, text))
    });
    !negated
        && parts
            .iter()
            .any(|p| !p.starts_with('!') && Glob::HOSTS.matches(p, text))
}

/// Files matching a path whose last part may hold `*`.
fn glob_files(path: &Path) -> Vec<PathBuf> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if !name.contains('*') {
        return vec![path.to_path_buf()]
            .into_iter()
            .filter(|p| p.is_file())
            .collect();
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_file()
                && Glob::NAMES.matches(&name, &p.file_name().unwrap_or_default().to_string_lossy())
        })
        .collect();
    out.sort();
    out
}

/// One hop of a ProxyJump list: `[user@]host[:port]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Jump {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Parses `ProxyJump` / `-J` values: `user@bastion:2222,other`.
pub fn parse_jumps(spec: &str) -> Result<Vec<Jump>, String> {
    spec.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|hop| {
            let hop = hop.strip_prefix("ssh://").unwrap_or(hop);
            let (user, rest) = match hop.rsplit_once('@') {
                Some((u, r)) => (Some(u.to_owned()), r),
                None => (None, hop),
            };
            let (host, port) = match rest.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') => (
                    h,
                    Some(
                        p.parse::<u16>()
                            .map_err(|_| format!("bad port in jump host `{hop}`"))?,
                    ),
                ),
                _ => (rest, None),
            };
            if host.is_empty() {
                return Err(format!("bad jump host `{hop}`"));
            }
            Ok(Jump {
                user,
                host: host.trim_matches(['[', ']']).to_owned(),
                port,
            })
        })
        .collect()
}

/// The `-o` options in Ansible's `ansible_ssh_common_args`, split as
/// Ansible does (shell quoting), each as (key, value); and `-J` as ProxyJump.
fn ssh_args_options(args: &str) -> Vec<(String, String)> {
    let words = crate::lang::words::texts(args).unwrap_or_default();
    let mut out = Vec::new();
    let mut it = words.iter();
    while let Some(a) = it.next() {
        let option = match a.as_str() {
            "-o" | "-J" => it.next().map(String::as_str),
            _ => a.strip_prefix("-o").or(a.strip_prefix("-J")),
        };
        if let Some(key) = ["-i", "-p", "-l"].iter().position(|f| a.as_str() == *f) {
            // ssh's own short flags for what `-o` also sets.
            if let Some(v) = it.next() {
                let name = ["identityfile", "port", "user"][key];
                out.push((name.to_owned(), v.clone()));
            }
            continue;
        }
        let Some(option) = option else { continue };
        if a.starts_with("-J") {
            out.push(("proxyjump".to_owned(), option.to_owned()));
        } else {
            let (k, v) = crate::lang::words::ssh_option(option);
            out.push((k.to_ascii_lowercase(), v.to_owned()));
        }
    }
    out
}

/// The value OpenSSH takes for option `key` (lower case) from ssh's
/// arguments: the first one given (`ssh -o A=1 -o A=2` uses 1), or every
/// one for options that accumulate (`IdentityFile`).
pub fn option_from_ssh_args(args: &str, key: &str) -> Vec<String> {
    let values = ssh_args_options(args)
        .into_iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v);
    if key == "identityfile" {
        values.collect()
    } else {
        values.take(1).collect()
    }
}

/// The ProxyCommand in Ansible's `ansible_ssh_common_args` (`-o ProxyCommand="ssh -W %h:%p gw"`).
pub fn proxy_command_from_ssh_args(args: &str) -> Option<String> {
    ssh_args_options(args)
        .into_iter()
        .find_map(|(k, v)| (k == "proxycommand").then_some(v))
}

/// The ProxyJump in Ansible's `ansible_ssh_common_args` (`-o ProxyJump=...`, `-J ...`).
pub fn jump_from_ssh_args(args: &str) -> Option<String> {
    ssh_args_options(args)
        .into_iter()
        .find_map(|(k, v)| (k == "proxyjump").then_some(v))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Includes fanning out (3 per file, 8 deep: 9841 files) are capped in
    /// total, not only in depth.
    #[test]
    fn an_include_fan_out_is_capped_in_total() {
        let dir = crate::testutil::TempDir::new();
        let d = dir.path();
        for f in ["a", "b", "c"] {
            std::fs::write(
                d.join(f),
                format!("Include {0}/a {0}/b {0}/c\n", d.display()),
            )
            .unwrap();
        }
        let e = SshConfig::load(&d.join("a")).unwrap_err();
        assert!(format!("{e:#}").contains("more than 256 files"), "{e:#}");
    }

    #[test]
    fn first_value_wins_and_patterns_match() {
        let dir = crate::testutil::TempDir::new();
        let p = dir.file(
            "config",
            "Host web-*\n  User deploy\n  IdentityFile ~/.ssh/web\nHost web-1 !web-2\n  HostName 10.0.0.1\n  Port 2222\n  User ignored\nHost *\n  User fallback\n  IdentityFile ~/.ssh/id_ed25519\n  StrictHostKeyChecking accept-new\n  ProxyJump admin@bastion:2200\nMatch host x\n  User never\nMatch host db,!db-old\n  Port 5022\nMatch exec \"true\"\n  Port 1\n",
        );
        let cfg = SshConfig::load(&p).unwrap();
        let h = cfg.host("web-1");
        assert_eq!(h.user.as_deref(), Some("deploy"));
        assert_eq!(h.hostname.as_deref(), Some("10.0.0.1"));
        assert_eq!(h.port, Some(2222));
        assert_eq!(h.identity_files.len(), 2);
        assert_eq!(h.strict_host_key_checking.as_deref(), Some("accept-new"));
        let h2 = cfg.host("web-2");
        assert_eq!(h2.hostname, None);
        assert_eq!(cfg.host("db").user.as_deref(), Some("fallback"));
        assert_eq!(cfg.host("db").port, Some(5022), "Match host applies");
        assert_eq!(
            cfg.host("db-old").port,
            None,
            "negated in the Match list; exec is never evaluated"
        );
    }

    #[test]
    fn jump_specs() {
        assert_eq!(
            parse_jumps("admin@bastion:2200,gw").unwrap(),
            vec![
                Jump {
                    user: Some("admin".into()),
                    host: "bastion".into(),
                    port: Some(2200)
                },
                Jump {
                    user: None,
                    host: "gw".into(),
                    port: None
                }
            ]
        );
        assert_eq!(
            jump_from_ssh_args("-o ProxyJump=ops@jump.example -o Foo=bar").as_deref(),
            Some("ops@jump.example")
        );
        assert_eq!(
            jump_from_ssh_args("-J ops@jump").as_deref(),
            Some("ops@jump")
        );
        assert_eq!(jump_from_ssh_args("-o StrictHostKeyChecking=no"), None);
        assert_eq!(
            proxy_command_from_ssh_args(r#"-o ProxyCommand="ssh -W %h:%p -q user@gw""#).as_deref(),
            Some("ssh -W %h:%p -q user@gw")
        );
    }

    #[test]
    fn a_line_without_a_keyword_is_an_error_naming_the_line() {
        let dir = crate::testutil::TempDir::new();
        let p = dir.file("config", "Host a\n=\n");
        let err = SshConfig::load(&p).unwrap_err().to_string();
        assert!(
            err.contains("config:2:1") && err.contains("no keyword"),
            "{err}"
        );
        let p = dir.file("config2", "Host 'open\n");
        let err = SshConfig::load(&p).unwrap_err().to_string();
        assert!(err.contains("unterminated quote"), "{err}");
    }

    #[test]
    fn options_in_ssh_args_keep_their_equals_signs() {
        assert_eq!(
            proxy_command_from_ssh_args("-o 'ProxyCommand=ssh -o A=b -W %h:%p gw'").as_deref(),
            Some("ssh -o A=b -W %h:%p gw")
        );
        assert_eq!(
            jump_from_ssh_args("-oProxyJump=a@b").as_deref(),
            Some("a@b")
        );
    }
}
