//! Ansible's YAML inventory: groups with `hosts`, `children` and `vars`, the
//! implicit `all`, `group_vars/` and `host_vars/` beside the inventory and
//! beside the playbook, and Ansible's precedence (ansible-core's default
//! VARIABLE_PRECEDENCE, lowest first): the inventory file's `all` vars, its
//! other groups' vars (all < parent < child, then by name), group_vars/all
//! beside the inventory, then beside the playbook, the other group_vars/
//! files beside the inventory, then beside the playbook; for a host its
//! inventory vars, then host_vars/ beside the inventory, then the playbook.

pub mod ini;
pub mod pattern;
pub mod show;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::InputError;
use crate::input::yaml::{self, Ordered, Vars};

#[derive(Debug, Clone)]
pub struct Inventory {
    /// Hosts in the order they first appear in the inventory.
    pub hosts: Vec<Host>,
    pub groups: BTreeMap<String, Group>,
    /// Host name → its index in `hosts` (a lookup per host keeps planning linear).
    index: std::collections::HashMap<String, usize>,
}

#[derive(Debug, Clone, Default)]
pub struct Group {
    /// Hosts listed directly in this group.
    pub hosts: Vec<String>,
    pub children: Vec<String>,
    pub vars: Map<String, Value>,
}

#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    /// Inventory variables after precedence was applied.
    pub vars: Map<String, Value>,
    /// Every group the host belongs to, directly or through children, without `all`.
    pub groups: BTreeSet<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GroupYaml {
    #[serde(default)]
    hosts: Option<Ordered<Option<Vars>>>,
    #[serde(default)]
    vars: Option<Vars>,
    #[serde(default)]
    children: Option<Ordered<Option<GroupYaml>>>,
}

/// Collects groups and hosts while walking a parsed inventory, in order.
#[derive(Default)]
struct Builder {
    members: std::collections::HashSet<(String, String)>,
    host_order: Vec<String>,
    host_vars: BTreeMap<String, Map<String, Value>>,
    groups: BTreeMap<String, Group>,
}

/// Files of an inventory folder that are inventories (as Ansible skips
/// others): YAML, INI or extension-less, not hidden, not backups.
fn is_inventory_file(p: &Path) -> bool {
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let ext = p.extension().map(|e| e.to_string_lossy().to_lowercase());
    !name.starts_with('.')
        && !name.ends_with('~')
        && matches!(
            ext.as_deref(),
            None | Some("yaml" | "yml" | "ini" | "cfg" | "hosts")
        )
}

impl Builder {
    /// Adds one `-i` source: a comma-separated host list, a folder (every
    /// inventory file in it, in name order) or a file. Returns the folder its
    /// `group_vars/` and `host_vars/` are read from.
    fn add_source(&mut self, path: &Path) -> Result<PathBuf> {
        let spec = path.to_string_lossy();
        if !path.exists() && spec.contains(',') {
            for entry in spec.split(',').map(str::trim).filter(|h| !h.is_empty()) {
                let (host, port) = host_and_port(entry);
                let mut vars = Map::new();
                if let Some(port) = port {
                    vars.insert("ansible_port".into(), Value::from(port));
                }
                self.add_host("all", host, vars)
                    .map_err(|e| InputError::new(format!("-i {spec}: {e}")))?;
            }
            return Ok(PathBuf::from("."));
        }
        if path.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| InputError::in_file(&spec, e))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && is_inventory_file(p))
                .collect();
            files.sort();
            if files.is_empty() {
                return Err(
                    InputError::in_file(&spec, "a folder with no inventory file in it").into(),
                );
            }
            for f in &files {
                self.add_text(f, &read_utf8(f)?)?;
            }
            return Ok(path.to_path_buf());
        }
        let text = read_utf8(path)?;
        self.add_text(path, &text)?;
        Ok(path.parent().map(Path::to_path_buf).unwrap_or_default())
    }

    /// Adds one inventory file's hosts and groups (YAML or INI).
    fn add_text(&mut self, path: &Path, text: &str) -> Result<()> {
        let file = path.display().to_string();
        if crate::input::inventory::ini::looks_like_ini(text) {
            let ini = crate::input::inventory::ini::parse(&file, text)?;
            let err = |e: String| InputError::in_file(&file, e);
            for (group, pattern, vars) in ini.hosts {
                // Hosts before any section sit directly in `all` (Ansible's "ungrouped").
                let group = if group == "ungrouped" {
                    "all".to_owned()
                } else {
                    group
                };
                if group != "all" {
                    self.add_child("all", &group);
                }
                self.add_host(&group, &pattern, vars).map_err(err)?;
            }
            for (parent, child) in ini.children {
                if parent != "all" {
                    self.add_child("all", &parent);
                }
                self.add_child(&parent, &child);
            }
            for (group, vars) in ini.vars {
                self.group(&group).vars.extend(vars);
            }
            return Ok(());
        }
        let top: Ordered<Option<GroupYaml>> = yaml::parse(&file, text)?;
        for (name, raw) in top.0 {
            if name != "all" {
                self.add_child("all", &name);
            }
            self.walk(&name, raw.unwrap_or_default())
                .map_err(|e| InputError::in_file(&file, e))?;
        }
        Ok(())
    }

    fn group(&mut self, name: &str) -> &mut Group {
        self.groups.entry(name.to_owned()).or_default()
    }

    fn add_host(
        &mut self,
        group: &str,
        pattern: &str,
        vars: Map<String, Value>,
    ) -> Result<(), String> {
        for name in expand_host_range(pattern)? {
            if !self.host_vars.contains_key(&name) {
                // Many ranges under the per-range cap still add up.
                if self.host_order.len() as u64 >= MAX_INVENTORY_HOSTS {
                    return Err(format!(
                        "the inventory names more than {MAX_INVENTORY_HOSTS} hosts; khard refuses it"
                    ));
                }
                self.host_order.push(name.clone());
            }
            self.host_vars
                .entry(name.clone())
                .or_default()
                .extend(vars.clone());
            // A set beside the list: membership checks stay O(1) for big groups.
            if self.members.insert((group.to_owned(), name.clone())) {
                self.group(group).hosts.push(name);
            }
        }
        Ok(())
    }

    fn add_child(&mut self, parent: &str, child: &str) {
        self.group(child);
        let p = self.group(parent);
        if !p.children.iter().any(|c| c == child) {
            p.children.push(child.to_owned());
        }
    }

    fn walk(&mut self, name: &str, raw: GroupYaml) -> Result<(), String> {
        self.group(name);
        if let Some(vars) = raw.vars {
            self.group(name).vars.extend(vars.0);
        }
        for (host, vars) in raw.hosts.unwrap_or_default().0 {
            self.add_host(name, &host, vars.unwrap_or_default().0)?;
        }
        for (child, sub) in raw.children.unwrap_or_default().0 {
            self.add_child(name, &child);
            self.walk(&child, sub.unwrap_or_default())?;
        }
        Ok(())
    }
}

/// A host list entry as Ansible's host_list inventory plugin reads it
/// (`parse_address`): `host:port`, `[v6]:port`, or a bare name or
/// address (an IPv6 address without brackets has no port).
fn host_and_port(entry: &str) -> (&str, Option<u16>) {
    if let Some(rest) = entry.strip_prefix('[')
        && let Some((addr, tail)) = rest.split_once(']')
    {
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (addr, port);
    }
    match entry.split_once(':') {
        Some((host, port)) if !port.contains(':') => match port.parse() {
            Ok(p) => (host, Some(p)),
            Err(_) => (entry, None),
        },
        _ => (entry, None),
    }
}

impl Inventory {
    /// Loads an inventory as ansible-playbook's `-i` takes it: a file (YAML
    /// or INI), a folder (every inventory file in it, in name order), or a
    /// comma-separated host list (`host1,host2,`); plus `group_vars/` and
    /// `host_vars/` beside the file or in the folder.
    pub fn load(path: &Path) -> Result<Inventory> {
        Inventory::load_with(path, None)
    }

    /// [`Inventory::load`], with the playbook's folder: its `group_vars/`
    /// and `host_vars/` rank above the inventory's.
    pub fn load_with(path: &Path, playbook_dir: Option<&Path>) -> Result<Inventory> {
        Inventory::load_many(&[path.to_path_buf()], playbook_dir)
    }

    /// Several inventory sources (`-i a -i b`, as ansible-playbook takes
    /// them): their hosts and groups together, each source's `group_vars/`
    /// and `host_vars/` in the order given (a later source's win), then the
    /// playbook's.
    pub fn load_many(paths: &[PathBuf], playbook_dir: Option<&Path>) -> Result<Inventory> {
        let mut b = Builder::default();
        b.group("all");
        let mut dirs = Vec::new();
        for path in paths {
            dirs.push(b.add_source(path)?);
        }
        dirs.dedup();
        let mut all = Vec::new();
        for d in dirs {
            for v in vars_dirs(&d, None) {
                if !all.contains(&v) {
                    all.push(v);
                }
            }
        }
        if let Some(p) = playbook_dir {
            let last = all.last().cloned().unwrap_or_default();
            all.extend(vars_dirs(&last, Some(p)).into_iter().skip(1));
        }
        let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
        Inventory::build(b, &names.join(", "), &all)
    }

    /// Parses inventory text (YAML or INI) as if read from `path`; `group_vars/`
    /// and `host_vars/` are looked up beside `path`.
    pub fn from_text(path: &Path, text: &str) -> Result<Inventory> {
        let mut b = Builder::default();
        b.group("all");
        b.add_text(path, text)?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Inventory::build(b, &path.display().to_string(), &[dir])
    }

    /// `dirs`: where `group_vars/` and `host_vars/` are read, lowest first.
    fn build(b: Builder, file: &str, dirs: &[PathBuf]) -> Result<Inventory> {
        let depth = group_depths(&b.groups).map_err(|e| InputError::in_file(file, e))?;
        // Hosts that sit only in `all` belong to `ungrouped`, as in Ansible.
        let grouped: BTreeSet<&String> = b
            .groups
            .iter()
            .filter(|(n, _)| n.as_str() != "all")
            .flat_map(|(_, g)| g.hosts.iter())
            .collect();
        let ungrouped: Vec<String> = b
            .host_order
            .iter()
            .filter(|h| !grouped.contains(h))
            .cloned()
            .collect();
        let mut groups = b.groups;
        groups.entry("ungrouped".into()).or_default().hosts = ungrouped;
        let mut depth = depth;
        depth.entry("ungrouped".into()).or_insert(1);

        // Per folder (inventory, then playbook): each group's group_vars/ file.
        let mut group_files: Vec<BTreeMap<&str, Map<String, Value>>> = Vec::new();
        for dir in dirs {
            let mut files = BTreeMap::new();
            for name in groups.keys() {
                files.insert(name.as_str(), vars_file(&dir.join("group_vars"), name)?);
            }
            group_files.push(files);
        }

        let mut hosts = Vec::new();
        let mut var_bytes = 0usize;
        let member_of_all = memberships(&groups);
        for name in &b.host_order {
            let member_of = member_of_all.get(name).cloned().unwrap_or_default();
            // The host's groups but `all`, as ansible-core sorts them (depth, then name).
            let mut ordered: Vec<&String> = member_of.iter().filter(|g| *g != "all").collect();
            ordered.sort_by_key(|g| (depth.get(*g).copied().unwrap_or(0), (*g).clone()));
            let mut vars = groups["all"].vars.clone();
            for g in &ordered {
                vars.extend(groups[*g].vars.clone());
            }
            for files in &group_files {
                vars.extend(files["all"].clone());
            }
            for files in &group_files {
                for g in &ordered {
                    vars.extend(files[g.as_str()].clone());
                }
            }
            vars.extend(b.host_vars[name].clone());
            for dir in dirs {
                vars.extend(vars_file(&dir.join("host_vars"), name)?);
            }
            // Every host holds its own copy of its groups' variables: one
            // large variable over a large fleet adds up (it ran out of memory).
            var_bytes += vars_bytes(&vars);
            if var_bytes > MAX_VAR_BYTES {
                return Err(InputError::new(format!(
                    "{file}: the hosts' variables add up to more than {} MiB by host {name}; khard refuses them (a large variable is copied to every host of its group)",
                    MAX_VAR_BYTES >> 20
                ))
                .into());
            }
            let groups_of_host = member_of.into_iter().filter(|g| g != "all").collect();
            hosts.push(Host {
                name: name.clone(),
                vars,
                groups: groups_of_host,
            });
        }
        let index = hosts
            .iter()
            .enumerate()
            .map(|(i, h)| (h.name.clone(), i))
            .collect();
        Ok(Inventory {
            hosts,
            groups,
            index,
        })
    }

    pub fn host(&self, name: &str) -> Option<&Host> {
        self.index.get(name).map(|&i| &self.hosts[i])
    }
}

/// Where `group_vars/` and `host_vars/` are read, lowest first: beside the
/// inventory, then beside the playbook (once when they are the same folder).
fn vars_dirs(inventory_dir: &Path, playbook_dir: Option<&Path>) -> Vec<PathBuf> {
    let mut dirs = vec![inventory_dir.to_path_buf()];
    if let Some(p) = playbook_dir {
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if !same(inventory_dir, p) {
            dirs.push(p.to_path_buf());
        }
    }
    dirs
}

/// For every host, each group that contains it, directly or through its
/// children: direct memberships once, then each group's ancestors (linear in
/// the inventory's size; cycles were refused by `group_depths`).
fn memberships(groups: &BTreeMap<String, Group>) -> BTreeMap<String, BTreeSet<String>> {
    let mut parents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (name, g) in groups {
        for c in &g.children {
            parents.entry(c.as_str()).or_default().push(name.as_str());
        }
    }
    let mut ancestors: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for name in groups.keys() {
        let mut seen = BTreeSet::new();
        let mut stack = vec![name.as_str()];
        while let Some(g) = stack.pop() {
            if seen.insert(g.to_owned()) {
                stack.extend(parents.get(g).into_iter().flatten().copied());
            }
        }
        ancestors.insert(name.as_str(), seen);
    }
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (name, g) in groups {
        for h in &g.hosts {
            out.entry(h.clone())
                .or_default()
                .extend(ancestors[name.as_str()].iter().cloned());
        }
    }
    out
}

/// Depth of each group below `all` (longest path), refusing cycles.
fn group_depths(groups: &BTreeMap<String, Group>) -> Result<BTreeMap<String, usize>, String> {
    fn visit(
        groups: &BTreeMap<String, Group>,
        name: &str,
        d: usize,
        stack: &mut Vec<String>,
        depth: &mut BTreeMap<String, usize>,
    ) -> Result<(), String> {
        if let Some(pos) = stack.iter().position(|s| s == name) {
            let mut cycle = stack[pos..].to_vec();
            cycle.push(name.to_owned());
            return Err(format!("groups form a cycle: {}", cycle.join(" -> ")));
        }
        let entry = depth.entry(name.to_owned()).or_insert(0);
        *entry = (*entry).max(d);
        stack.push(name.to_owned());
        for child in &groups[name].children {
            visit(groups, child, d + 1, stack, depth)?;
        }
        stack.pop();
        Ok(())
    }
    let mut depth = BTreeMap::new();
    visit(groups, "all", 0, &mut Vec::new(), &mut depth)?;
    Ok(depth)
}

/// Reads `dir/NAME`, `dir/NAME.yml`, `dir/NAME.yaml`, `dir/NAME.json`, or every
/// YAML file in the folder `dir/NAME/` in name order.
fn vars_file(dir: &Path, name: &str) -> Result<Map<String, Value>> {
    let mut vars = Map::new();
    let base = dir.join(name);
    let mut files: Vec<PathBuf> = ["", ".yml", ".yaml", ".json"]
        .iter()
        .map(|ext| PathBuf::from(format!("{}{ext}", base.display())))
        .filter(|p| p.is_file())
        .collect();
    if base.is_dir() {
        let mut inner: Vec<PathBuf> = std::fs::read_dir(&base)
            .with_context(|| format!("reading {}", base.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file())
            .collect();
        inner.sort();
        files.extend(inner);
    }
    for file in files {
        let text = read_utf8(&file)?;
        let parsed: Option<Vars> = yaml::parse(&file.display().to_string(), &text)?;
        vars.extend(parsed.unwrap_or_default().0);
    }
    Ok(vars)
}

/// Reads a file the user gave us, as UTF-8, with errors that name it.
/// Largest input file khard reads (inventory, playbook, vars, ssh config).
pub const MAX_INPUT_BYTES: u64 = 16 * 1024 * 1024;

/// Reads a regular file of at most [`MAX_INPUT_BYTES`]: a FIFO would hang
/// and `/dev/zero` would never end, so anything else is refused by name.
pub fn read_utf8(path: &Path) -> Result<String> {
    use std::io::Read;
    let name = path.display().to_string();
    // Look before opening: opening a FIFO for reading blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(|e| InputError::in_file(&name, e))?;
    if !meta.is_file() {
        return Err(InputError::in_file(&name, "not a regular file").into());
    }
    let file = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .map_err(|e| InputError::in_file(&name, e))?
    };
    let mut bytes = Vec::new();
    file.take(MAX_INPUT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| InputError::in_file(&name, e))?;
    if bytes.len() as u64 > MAX_INPUT_BYTES {
        return Err(InputError::in_file(
            &name,
            format!(
                "larger than {} MiB; khard refuses it",
                MAX_INPUT_BYTES >> 20
            ),
        )
        .into());
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        let line = e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1;
        InputError::at(&path.display().to_string(), line, 1, "not valid UTF-8")
    })?;
    // A whole file encrypted with ansible-vault (group_vars/all/vault.yml).
    if crate::input::vault::is_vault(&text) {
        return crate::input::vault::decrypt(&text)
            .map_err(|e| InputError::in_file(&name, e).into());
    }
    Ok(text)
}

/// Most hosts one host range may name.
pub const MAX_RANGE_HOSTS: u64 = 100_000;
/// Most bytes of variables all hosts together may hold (each host keeps
/// its own copy of its groups' variables).
pub const MAX_VAR_BYTES: usize = 256 << 20;

/// The bytes of text in a host's variables (what a copy costs).
pub fn vars_bytes(vars: &Map<String, Value>) -> usize {
    fn bytes(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(bytes).sum(),
            Value::Object(m) => m.iter().map(|(k, v)| k.len() + bytes(v)).sum(),
            _ => 8,
        }
    }
    vars.iter().map(|(k, v)| k.len() + bytes(v)).sum()
}
/// Most hosts in one inventory, all ranges and files together.
pub const MAX_INVENTORY_HOSTS: u64 = 200_000;

/// Expands Ansible host ranges: `node[01:20]`, `web[a:c]`, `db[1:9:2]`.
pub fn expand_host_range(pattern: &str) -> Result<Vec<String>, String> {
    let (Some(open), Some(close)) = (pattern.find('['), pattern.find(']')) else {
        return Ok(vec![pattern.to_owned()]);
    };
    if close < open {
        return Err(format!("bad host range `{pattern}`"));
    }
    let (prefix, inner, suffix) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let parts: Vec<&str> = inner.split(':').collect();
    let bad = || format!("bad host range `{pattern}`: expected [start:end] or [start:end:step]");
    if parts.len() < 2 || parts.len() > 3 {
        return Err(bad());
    }
    let step: usize = match parts.get(2) {
        Some(s) => s.parse().map_err(|_| bad())?,
        None => 1,
    };
    if step == 0 {
        return Err(bad());
    }
    let mut out = Vec::new();
    let tails = expand_host_range(suffix)?;
    let count = |n: u64| (n / step as u64 + 1).saturating_mul(tails.len() as u64);
    let too_many = |n: u64| {
        (count(n) > MAX_RANGE_HOSTS)
            .then(|| format!("host range `{pattern}` names more than {MAX_RANGE_HOSTS} hosts"))
    };
    if let (Ok(a), Ok(b)) = (parts[0].parse::<u64>(), parts[1].parse::<u64>())
        && let Some(e) = too_many(b.saturating_sub(a))
    {
        return Err(e);
    }
    let items: Vec<String> = match (parts[0].parse::<u64>(), parts[1].parse::<u64>()) {
        (Ok(a), Ok(b)) if a <= b => {
            let width = if parts[0].starts_with('0') {
                parts[0].len()
            } else {
                0
            };
            (a..=b)
                .step_by(step)
                .map(|n| format!("{n:0width$}"))
                .collect()
        }
        _ => {
            let (a, b) = (
                parts[0].chars().collect::<Vec<_>>(),
                parts[1].chars().collect::<Vec<_>>(),
            );
            if a.len() != 1 || b.len() != 1 || a[0] > b[0] || !a[0].is_ascii_alphabetic() {
                return Err(bad());
            }
            (a[0]..=b[0]).step_by(step).map(|c| c.to_string()).collect()
        }
    };
    for item in items {
        for tail in &tails {
            out.push(format!("{prefix}{item}{tail}"));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Inventory {
        let dir = crate::testutil::TempDir::new();
        Inventory::load(&dir.file("inv.yaml", text)).unwrap()
    }

    const K3S_ANSIBLE: &str = r#"---
k3s_cluster:
  children:
    server:
      hosts:
        192.16.35.11:
    agent:
      hosts:
        192.16.35.12:
        192.16.35.13:
  vars:
    ansible_port: 22
    ansible_user: debian
    k3s_version: v1.30.2+k3s1
    token: "changeme!"
    api_endpoint: "{{ hostvars[groups['server'][0]]['ansible_host'] | default(groups['server'][0]) }}"
    extra_server_args: ""
"#;

    #[test]
    fn loads_k3s_ansible_sample_shape() {
        let inv = load(K3S_ANSIBLE);
        let names: Vec<&str> = inv.hosts.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["192.16.35.11", "192.16.35.12", "192.16.35.13"]);
        let server = inv.host("192.16.35.11").unwrap();
        assert!(server.groups.contains("server") && server.groups.contains("k3s_cluster"));
        assert_eq!(server.vars["ansible_user"], "debian");
    }

    #[test]
    fn precedence_all_parent_child_host() {
        let inv = load(
            "all:\n  vars: {v: all, a: all}\n  children:\n    parent:\n      vars: {v: parent, p: parent}\n      children:\n        child:\n          vars: {v: child}\n          hosts:\n            h1: {v: host}\n            h2:\n",
        );
        let h1 = inv.host("h1").unwrap();
        assert_eq!(h1.vars["v"], "host");
        let h2 = inv.host("h2").unwrap();
        assert_eq!(h2.vars["v"], "child");
        assert_eq!(h2.vars["p"], "parent");
        assert_eq!(h2.vars["a"], "all");
    }

    #[test]
    fn refuses_cycles_and_unknown_keys() {
        let dir = crate::testutil::TempDir::new();
        let p = dir.file(
            "cycle.yaml",
            "a:\n  children:\n    b:\n      children:\n        a:\n",
        );
        let err = Inventory::load(&p).unwrap_err().to_string();
        assert!(err.contains("cycle"), "{err}");
        std::fs::write(&p, "a:\n  hots:\n    h1:\n").unwrap();
        let err = Inventory::load(&p).unwrap_err().to_string();
        assert!(
            err.contains(":2:3:") && err.contains("did you mean `hosts`"),
            "{err}"
        );
    }

    #[test]
    fn expands_ranges() {
        assert_eq!(
            expand_host_range("node[01:03]").unwrap(),
            ["node01", "node02", "node03"]
        );
        assert_eq!(
            expand_host_range("w[a:c].x").unwrap(),
            ["wa.x", "wb.x", "wc.x"]
        );
        assert_eq!(expand_host_range("n[1:5:2]").unwrap(), ["n1", "n3", "n5"]);
        assert!(expand_host_range("n[5:1]").is_err());
    }

    #[test]
    fn huge_ranges_fifos_and_endless_files_are_refused() {
        let mut b = Builder::default();
        let mut all = Ok(());
        for g in 0..3 {
            all = all.and_then(|()| b.add_host("g", &format!("r{g}-[1:99999]"), Map::new()));
        }
        assert!(all.unwrap_err().contains("more than 200000 hosts"));
        let e = expand_host_range("node[1:100000000]").unwrap_err();
        assert!(e.contains("more than 100000 hosts"), "{e}");
        assert!(
            expand_host_range("n[1:100][1:100000]").is_err(),
            "nested ranges multiply"
        );
        let err = read_utf8(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("/dev/zero: not a regular file"), "{err}");
        let dir = crate::testutil::TempDir::new();
        let fifo = dir.path().join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let err = read_utf8(&fifo).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    /// Linear, as a ratio of two sizes (never an absolute time, which a
    /// loaded machine breaks): ten times the hosts may cost at most about
    /// ten times the time; a quadratic expansion costs a hundred.
    /// As Ansible's host_list plugin: `-i '127.0.0.1:22001,'` is port 22001.
    #[test]
    fn host_list_entries_carry_their_port() {
        assert_eq!(host_and_port("127.0.0.1:22001"), ("127.0.0.1", Some(22001)));
        assert_eq!(host_and_port("[::1]:2222"), ("::1", Some(2222)));
        assert_eq!(host_and_port("fe80::1"), ("fe80::1", None));
        assert_eq!(host_and_port("node1"), ("node1", None));
        let inv = Inventory::load(Path::new("a.example:2201,b.example,")).unwrap();
        let a = inv.host("a.example").unwrap();
        assert_eq!(a.vars.get("ansible_port"), Some(&Value::from(2201)));
        assert!(
            inv.host("b.example")
                .unwrap()
                .vars
                .get("ansible_port")
                .is_none()
        );
    }

    #[test]
    fn a_large_flat_group_expands_in_linear_time() {
        let time = |n: usize| {
            let text =
                format!("all:\n  children:\n    agent:\n      hosts:\n        node[1:{n}]:\n");
            let started = std::time::Instant::now();
            let inv = load(&text);
            assert_eq!(inv.hosts.len(), n);
            started.elapsed().as_secs_f64()
        };
        time(2_000); // warm-up
        let (small, large) = (time(2_000), time(20_000));
        assert!(
            large < 40.0 * small,
            "2000 hosts: {small}s, 20000: {large}s"
        );
    }
}
