//! Modules: one file per generic task module (`file`, `directory`,
//! `sysctl`, `command`, `service`, `permissions`); a domain adds its own
//! through [`Extension`]. Each turns a task's
//! arguments into desired state for one host, says what it needs to know
//! about the host (`Args::probe`, defined once per module), compares (pure,
//! local `diff`), and writes the shell fragment that makes the change.
//!
//! Owns: the meaning of each module's arguments and its idempotence. May
//! not touch: connections, the report, other hosts; a module sees one host's
//! variables and probed state, nothing else.

pub mod command;
pub mod directory;
pub mod error;
pub mod file;
pub mod permissions;
pub mod render;
pub mod service;
pub mod sysctl;
pub mod sysctl_boot;

use serde::{Deserialize, Deserializer};

use crate::facts::{Kind, Probe, RemoteState, Stat};
use crate::lang::template::{Templates, Text};
use error::TaskError;
pub use render::{Files, Render};

/// A task's module with its arguments, as written.
#[derive(Debug, Clone)]
pub enum Module {
    File(file::Args),
    Directory(directory::Args),
    Sysctl(sysctl::Args),
    Command(command::Args),
    Service(service::Args),
    Permissions(permissions::Args),
    /// A module the domain adds.
    Ext(Box<dyn Extension>),
    FlushHandlers,
}

/// A module with its arguments rendered for one host.
#[derive(Debug, Clone)]
pub enum Action {
    File(file::Desired),
    Directory(directory::Desired),
    Sysctl(sysctl::Desired),
    Command(command::Desired),
    Service(service::Desired),
    Permissions(permissions::Desired),
    Ext(Box<dyn ExtAction>),
}

/// What would change, or changed, on a host.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Change {
    /// One line per difference: "mode 0644 → 0600", "vm.overcommit_memory (live) 0 → 1".
    pub details: Vec<String>,
    /// Before and after of a file's content, for --diff; None when not shown.
    pub content: Option<ContentDiff>,
    /// False when the outcome cannot be known without running it (an unguarded command).
    pub certain: bool,
    /// The shell that makes the change.
    pub script: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ContentDiff {
    pub path: String,
    /// None when the file does not exist yet, or its content was not brought back.
    pub before: Option<String>,
    pub after: String,
    /// True when the before/after must never be shown.
    pub secret: bool,
}

impl Action {
    /// None when the host is already as desired. Err fails the task before anything is written.
    pub fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError> {
        match self {
            Action::File(d) => d.diff(state),
            Action::Directory(d) => d.diff(state),
            Action::Sysctl(d) => d.diff(state),
            Action::Command(d) => Ok(d.diff(state)),
            Action::Service(d) => Ok(Some(d.change())),
            Action::Permissions(d) => Ok(d.diff(state)),
            Action::Ext(d) => d.diff(state),
        }
    }
}

impl Module {
    /// Registers every templated string with the template engine.
    pub fn compile(
        &mut self,
        t: &mut Templates,
        place: &str,
    ) -> Result<(), crate::error::InputError> {
        let mut texts: Vec<&mut Text> = Vec::new();
        match self {
            Module::File(a) => a.texts(&mut texts),
            Module::Directory(a) => a.texts(&mut texts),
            Module::Sysctl(a) => a.texts(&mut texts),
            Module::Command(a) => a.texts(&mut texts),
            Module::Service(a) => a.texts(&mut texts),
            Module::Permissions(a) => a.texts(&mut texts),
            Module::Ext(a) => texts.extend(a.texts()),
            Module::FlushHandlers => {}
        }
        for text in texts {
            *text = t.text(place, &text.raw)?;
        }
        Ok(())
    }

    /// What the module needs to know about a host. Each module renders only
    /// its paths and guards for this (cheap, and never dependent on probed
    /// facts), and the diff checks that the same request was covered.
    pub fn probe(&self, r: &Render, p: &mut Probe, want_content: bool) -> Result<(), TaskError> {
        match self {
            Module::File(a) => a.probe(r, p, want_content),
            Module::Sysctl(a) => a.probe(r, p, want_content),
            Module::Directory(a) => a.probe(r, p),
            Module::Permissions(a) => a.probe(r, p),
            Module::Command(a) => a.probe(r, p),
            Module::Ext(a) => a.probe(r, p),
            Module::Service(_) | Module::FlushHandlers => Ok(()),
        }
    }

    /// Renders the arguments for one host.
    pub fn render(&self, r: &Render) -> Result<Action, TaskError> {
        Ok(match self {
            Module::File(a) => Action::File(a.render(r)?),
            Module::Directory(a) => Action::Directory(a.render(r)?),
            Module::Sysctl(a) => Action::Sysctl(a.render(r)?),
            Module::Command(a) => Action::Command(a.render(r)?),
            Module::Service(a) => Action::Service(a.render(r)?),
            Module::Permissions(a) => Action::Permissions(a.render(r)?),
            Module::Ext(a) => Action::Ext(a.render(r)?),
            Module::FlushHandlers => return Err("meta tasks have no action".into()),
        })
    }
}

impl Module {
    /// A guard checks a precondition and remediates nothing: the controls
    /// it is tagged with are not fixed by it.
    pub fn is_guard(&self) -> bool {
        matches!(self, Module::Ext(e) if e.is_guard())
    }
}

/// What a task's action offers the domain's check across hosts (e.g. the
/// configuration a server will run with); the domain alone reads it.
pub type Shared = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// A module a domain adds, with the same parts as the built-in ones:
/// templated arguments, the probe request, rendering for one host.
pub trait Extension: std::fmt::Debug + Send + Sync {
    /// Every templated string, to be compiled at load.
    fn texts(&mut self) -> Vec<&mut Text>;
    /// What the module needs to know about a host (paths and guards only).
    fn probe(&self, r: &Render, p: &mut Probe) -> Result<(), TaskError>;
    /// The arguments rendered for one host.
    fn render(&self, r: &Render) -> Result<Box<dyn ExtAction>, TaskError>;
    /// See [`Module::is_guard`].
    fn is_guard(&self) -> bool {
        false
    }
    fn clone_box(&self) -> Box<dyn Extension>;
}

/// A domain module rendered for one host: the pure diff.
pub trait ExtAction: std::fmt::Debug + Send + Sync {
    /// As [`Action::diff`].
    fn diff(&self, state: &RemoteState) -> Result<Option<Change>, TaskError>;
    /// What this task contributes to the domain's check across hosts.
    fn shared(&self, _state: &RemoteState) -> Option<Shared> {
        None
    }
    fn clone_box(&self) -> Box<dyn ExtAction>;
}

impl Clone for Box<dyn Extension> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

impl Clone for Box<dyn ExtAction> {
    fn clone(&self) -> Self {
        self.clone_box()
    }
}

/// A kind of content a domain checks before it is written (`validate:` of
/// the file module) and shows masked in diffs (a config holding a token).
pub trait ContentKind: std::fmt::Debug + Send + Sync {
    /// Err says why the content must not be written to this host.
    fn check(
        &self,
        content: &str,
        vars: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), String>;
    /// The text as a diff may show it.
    fn mask(&self, text: &str) -> String {
        text.to_owned()
    }
    /// What a file of this kind offers the domain's check across hosts.
    fn shared(&self, _content: &str) -> Option<Shared> {
        None
    }
}

impl Action {
    /// What this task contributes to the domain's check across hosts.
    pub fn shared(&self, state: &RemoteState) -> Option<Shared> {
        match self {
            Action::Ext(d) => d.shared(state),
            Action::File(f) => f
                .kind
                .as_ref()
                .and_then(|k| k.shared(&String::from_utf8_lossy(&f.content))),
            _ => None,
        }
    }
}

/// Masks a change's content diff as `kind` shows it.
pub fn mask_diff(change: &mut Option<Change>, kind: &dyn ContentKind) {
    if let Some(d) = change.as_mut().and_then(|c| c.content.as_mut()) {
        d.after = kind.mask(&d.after);
        d.before = d.before.as_deref().map(|b| kind.mask(b));
    }
}

/// Deserializes a string (or number, or bool) as a [`Text`] to be compiled later.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Text, D::Error> {
    let v = serde_yaml::Value::deserialize(d)?;
    scalar(v)
        .map(Text::plain)
        .ok_or_else(|| serde::de::Error::custom("expected a string"))
}

pub fn opt_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Text>, D::Error> {
    text(d).map(Some)
}

fn scalar(v: serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parses a mode written as an octal string ("0600", "600", "0o600").
pub fn parse_mode(s: &str) -> Result<u32, String> {
    let digits = s.trim().trim_start_matches("0o");
    u32::from_str_radix(digits, 8)
        .ok()
        .filter(|m| *m <= 0o7777 && !digits.is_empty())
        .ok_or_else(|| {
            format!("mode `{s}` is not an octal mode such as \"0644\" (quote it in YAML)")
        })
}

/// A path to act on: absolute, one line, no backslashes (so probe output stays unambiguous).
pub fn check_path(p: &str) -> Result<String, TaskError> {
    if !p.starts_with('/') {
        return Err(TaskError::Refused(format!("path `{p}` must be absolute")));
    }
    if p.contains(['\n', '\r', '\\', '|', '\0']) || p.len() > 4096 {
        return Err(TaskError::Refused(format!(
            "path `{p}` contains a character khard refuses (newline, backslash or |)"
        )));
    }
    Ok(p.trim_end_matches('/').to_owned()).map(|s| if s.is_empty() { "/".into() } else { s })
}

/// Asks the probe for the metadata of a task's `path` (a glob is expanded on the host).
fn stat_path(r: &Render, p: &mut Probe, path: &Text) -> Result<(), TaskError> {
    p.stat.insert(check_path(&r.text(path)?)?);
    Ok(())
}

/// A user or group name (or numeric id) as chown takes it: never an option,
/// never shell text.
fn account(name: String) -> Result<String, TaskError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-' | '$' | '@'));
    if ok {
        Ok(name)
    } else {
        Err(format!("`{name}` is not a user or group name").into())
    }
}

/// Mode and owner wanted on a path. An owner or group left out is left
/// alone, as in Ansible: an existing file keeps its own, a new one gets the
/// remote user's.
#[derive(Debug, Clone, PartialEq)]
pub struct Perms {
    pub mode: u32,
    pub owner: Option<String>,
    pub group: Option<String>,
}

impl Perms {
    pub fn render(
        r: &Render,
        mode: &Option<Text>,
        owner: &Option<Text>,
        group: &Option<Text>,
        default: u32,
    ) -> Result<Perms, TaskError> {
        Ok(Perms {
            mode: r
                .opt(mode)?
                .map(|m| parse_mode(&m))
                .transpose()?
                .unwrap_or(default),
            owner: r.opt(owner)?.map(account).transpose()?,
            group: r.opt(group)?.map(account).transpose()?,
        })
    }

    /// root:root, for files khard owns whole (sysctl.d).
    pub fn root(mode: u32) -> Perms {
        Perms {
            mode,
            owner: Some("root".into()),
            group: Some("root".into()),
        }
    }

    /// The shell that sets the wanted owner and group of `path` (nothing
    /// for what is left alone); never through a symbolic link (`-h`).
    pub fn chown(&self, path: &str) -> String {
        use crate::shell::quote;
        let mut s = String::new();
        if let Some(o) = &self.owner {
            s.push_str(&format!("chown -h -- {} {}\n", quote(o), quote(path)));
        }
        if let Some(g) = &self.group {
            s.push_str(&format!("chgrp -h -- {} {}\n", quote(g), quote(path)));
        }
        s
    }

    /// The differences from `stat`, one line each, and the shell that fixes
    /// them. Unless `through_link` (a task's `follow: true`), the script
    /// first checks that `path` is still what the probe saw (no symbolic
    /// link swapped in since, the same kind and owner): chmod follows links.
    pub fn fix(&self, path: &str, stat: &Stat, through_link: bool) -> (Vec<String>, String) {
        use crate::shell::quote;
        let (mut details, mut script) = (Vec::new(), String::new());
        let kind = match stat.kind {
            Kind::Dir => "d",
            _ => "f",
        };
        if !through_link {
            script.push_str(&format!(
                "khard_unchanged {} {kind} {}\n",
                quote(path),
                quote(&stat.uid)
            ));
        }
        if stat.mode != self.mode {
            details.push(format!(
                "{path}: mode {:04o} → {:04o}",
                stat.mode, self.mode
            ));
            script.push_str(&format!("chmod {:04o} {}\n", self.mode, quote(path)));
        }
        let differs = |want: &Option<String>, name: &str, id: &str| {
            want.as_deref().is_some_and(|w| w != name && w != id)
        };
        let owner = differs(&self.owner, &stat.owner, &stat.uid);
        let group = differs(&self.group, &stat.group, &stat.gid);
        if owner || group {
            let want =
                |w: &Option<String>, have: &str| w.clone().unwrap_or_else(|| have.to_owned());
            details.push(format!(
                "{path}: owner {}:{} → {}:{}",
                stat.owner,
                stat.group,
                want(&self.owner, &stat.owner),
                want(&self.group, &stat.group)
            ));
            let only = Perms {
                mode: self.mode,
                owner: self.owner.clone().filter(|_| owner),
                group: self.group.clone().filter(|_| group),
            };
            script.push_str(&only.chown(path));
        }
        if details.is_empty() {
            script.clear();
        }
        (details, script)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_octal_text() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("600"), Ok(0o600));
        assert!(parse_mode("384x").is_err());
        assert!(parse_mode("0800").is_err());
    }

    #[test]
    fn paths_must_be_plain_and_absolute() {
        assert_eq!(check_path("/etc/x/").unwrap(), "/etc/x");
        assert!(check_path("etc/x").is_err());
        assert!(check_path("/etc/a\nb").is_err());
    }
}
