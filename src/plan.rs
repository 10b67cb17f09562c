//! Compiling inventory + playbook into per-host plans: which hosts each play
//! runs on, their variables, how to reach them, and which tasks are selected.
//! Everything here is checked before any host is contacted.

use std::path::PathBuf;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::domain::{Domain, InventoryHost};
use crate::error::InputError;
use crate::input::inventory::{Host, Inventory};
use crate::input::playbook::{Play, Playbook, Task};
use crate::lang::glob::Glob;
use crate::modules::{Module, Render};
use crate::transport::Become;
use crate::transport::ssh::Target;
use crate::transport::ssh::config::SshConfig;

/// What the planner takes from the command line (built once from the settings).
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub inventory: PathBuf,
    pub ssh_config: Option<PathBuf>,
    pub limit: Option<String>,
    pub allow_empty_limit: bool,
    /// --shard K/N: only the hosts of shard K (1-based) of N.
    pub shard: Option<(u32, u32)>,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub start_at_task: Option<String>,
    /// Variables below everything (the built-in role defaults come later).
    pub default_vars: Map<String, Value>,
    /// `-e`: above everything.
    pub extra_vars: Map<String, Value>,
    /// `--become` / `-b`.
    pub r#become: bool,
    /// `-K`: wins over the inventory's become password.
    pub become_password: Option<std::sync::Arc<String>>,
}

#[derive(Debug, Clone)]
pub enum Reach {
    Local,
    Ssh(Box<Target>),
}

#[derive(Debug, Clone)]
pub struct HostPlan {
    pub name: String,
    /// Variables known before connecting: defaults < inventory < play vars < inventory facts < extra vars.
    /// Layered on the play's map of what no host sets (the role's defaults,
    /// play vars, extra vars) and shared: neither the fleet nor the engine's
    /// copies of a plan cost a copy of the variables every host has.
    pub vars: std::sync::Arc<crate::layered_vars::LayeredVars>,
    pub reach: Reach,
    pub r#become: Become,
}

#[derive(Debug)]
pub struct PlayPlan {
    pub index: usize,
    pub hosts: Vec<HostPlan>,
    /// Whether each task of the play is selected by --tags/--skip-tags.
    pub selected: Vec<bool>,
}

fn var<'a>(vars: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names.iter().find_map(|n| vars.get(*n))
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn expand_home(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default()
            .join(rest),
        None => PathBuf::from(p),
    }
}

/// How to reach a host: `ansible_*` (or `khard_*`) connection variables
/// first, then the OpenSSH client config for the host's alias (as ssh
/// itself would resolve `ansible_host`), then defaults.
pub fn reach(host: &Host, vars: &Map<String, Value>, ssh: &SshConfig) -> Result<Reach, String> {
    let connection = var(vars, &["khard_connection", "ansible_connection"])
        .map(text)
        .unwrap_or_else(|| "ssh".into());
    match connection.as_str() {
        "local" => return Ok(Reach::Local),
        "ssh" | "smart" | "paramiko" => {}
        other => {
            return Err(format!(
                "ansible_connection `{other}` is not supported (use ssh or local)"
            ));
        }
    }
    // The arguments Ansible's ssh plugin puts on ssh's command line, in its
    // order (ansible.cfg's ssh_args, then the common, then the extra ones):
    // OpenSSH takes the first value of each option, and the inventory's
    // port, user and key come before them all.
    let ssh_args: String = [
        "ansible_ssh_args",
        "ansible_ssh_common_args",
        "ansible_ssh_extra_args",
    ]
    .iter()
    .filter_map(|n| vars.get(*n))
    .map(text)
    .collect::<Vec<_>>()
    .join(" ");
    let option = |key: &str| {
        crate::transport::ssh::config::option_from_ssh_args(&ssh_args, key)
            .into_iter()
            .next()
    };
    let port_text = var(vars, &["khard_port", "ansible_port", "ansible_ssh_port"])
        .map(text)
        .or_else(|| option("port"));
    let port = match port_text {
        None => None,
        Some(t) => Some(
            t.parse::<u16>()
                .map_err(|_| format!("ansible_port `{t}` is not a port number"))?,
        ),
    };
    let alias = var(vars, &["khard_host", "ansible_host", "ansible_ssh_host"])
        .map(text)
        .unwrap_or_else(|| host.name.clone());
    let user = var(vars, &["khard_user", "ansible_user", "ansible_ssh_user"])
        .map(text)
        .or_else(|| option("user"));
    let keys: Vec<PathBuf> = match var(
        vars,
        &[
            "khard_private_key_file",
            "ansible_ssh_private_key_file",
            "ansible_private_key_file",
        ],
    ) {
        Some(v) => vec![expand_home(&text(v))],
        None => crate::transport::ssh::config::option_from_ssh_args(&ssh_args, "identityfile")
            .iter()
            .map(|k| expand_home(k))
            .collect(),
    };
    let mut target = ssh_target(&host.name, &alias, port, user, keys, ssh);
    let jump = var(vars, &["khard_proxy_jump"])
        .map(text)
        .or_else(|| option("proxyjump"))
        .or_else(|| ssh.host(&alias).proxy_jump);
    target.proxy_command = option("proxycommand").or(target.proxy_command);
    // Host key checking as the arguments ask (they outrank the ssh config).
    if let Some(file) = option("userknownhostsfile") {
        let first = file.split_whitespace().next().unwrap_or_default();
        target.known_hosts = Some(expand_home(first));
    }
    if let Some(mode) = option("stricthostkeychecking") {
        target.accept_new = matches!(
            mode.to_ascii_lowercase().as_str(),
            "accept-new" | "no" | "off"
        );
    }
    if let Some(t) = option("connecttimeout").and_then(|t| t.parse().ok()) {
        target.connect_timeout = Some(std::time::Duration::from_secs(t));
    }
    if let Some(t) = option("serveraliveinterval").and_then(|t| t.parse().ok()) {
        target.keepalive = Some(std::time::Duration::from_secs(t));
    }
    if let Some(spec) = jump.filter(|j| !j.eq_ignore_ascii_case("none")) {
        target.jumps = crate::transport::ssh::config::parse_jumps(&spec)?
            .into_iter()
            .map(|j| ssh_target(&j.host, &j.host, j.port, j.user, Vec::new(), ssh))
            .collect();
    }
    // Names reach a local shell (ProxyCommand's %h %r) and known_hosts:
    // refuse what OpenSSH refuses, before any connection.
    use crate::transport::ssh::names::{check_host, check_user};
    for t in std::iter::once(&target).chain(&target.jumps) {
        check_host(&t.address)?;
        check_user(&t.user)?;
    }
    Ok(Reach::Ssh(Box::new(target)))
}

/// A target from an alias: explicit values win over the ssh config's.
fn ssh_target(
    name: &str,
    alias: &str,
    port: Option<u16>,
    user: Option<String>,
    keys: Vec<PathBuf>,
    ssh: &SshConfig,
) -> Target {
    let c = ssh.host(alias);
    Target {
        name: name.to_owned(),
        address: c.hostname.clone().unwrap_or_else(|| alias.to_owned()),
        port: port.or(c.port).unwrap_or(22),
        user: user
            .or(c.user.clone())
            .unwrap_or_else(crate::transport::local::current_user),
        key_files: if keys.is_empty() {
            c.identity_files
                .into_iter()
                .filter(|p| p.exists())
                .collect()
        } else {
            keys
        },
        identities_only: c.identities_only,
        jumps: Vec::new(),
        proxy_command: c.proxy_command.clone(),
        known_hosts: c.known_hosts,
        accept_new: matches!(
            c.strict_host_key_checking.as_deref(),
            Some("accept-new" | "no" | "off")
        ),
        connect_timeout: c.connect_timeout.map(std::time::Duration::from_secs),
        keepalive: c.server_alive_interval.map(std::time::Duration::from_secs),
    }
}

/// Whether `--tags`/`--skip-tags` select a task. Tags match the task's tags
/// and its CIS control IDs, exactly or as a glob (`1.2.*`).
pub fn selected(task: &Task, tags: &[String], skip: &[String]) -> bool {
    let labels: Vec<&str> = task
        .tags
        .iter()
        .chain(task.all_cis())
        .map(String::as_str)
        .collect();
    let hit = |want: &String| labels.iter().any(|l| Glob::NAMES.matches(want, l));
    let included =
        tags.is_empty() || tags.iter().any(|t| t == "all" || hit(t)) || labels.contains(&"always");
    included && !skip.iter().any(hit)
}

/// The tasks `--tags`/`--skip-tags`/`--start-at-task` select, with every
/// task a selected one `needs` (its files and settings: a config pointing
/// at an admission file must not be written without it). A needed task
/// that `--skip-tags` leaves out is an error naming both.
fn whole_selection(play: &Play, start: usize, s: &Options) -> Result<Vec<bool>> {
    let mut sel: Vec<bool> = play
        .tasks
        .iter()
        .enumerate()
        .map(|(i, t)| i >= start && selected(t, &s.tags, &s.skip_tags))
        .collect();
    let by_name = |n: &str| play.tasks.iter().position(|t| t.name == n);
    let mut todo: Vec<usize> = (0..sel.len()).filter(|i| sel[*i]).collect();
    while let Some(i) = todo.pop() {
        for need in &play.tasks[i].needs {
            let Some(j) = by_name(need) else { continue };
            if sel[j] {
                continue;
            }
            let skipped = play.tasks[j]
                .tags
                .iter()
                .chain(play.tasks[j].all_cis())
                .any(|l| s.skip_tags.iter().any(|k| Glob::NAMES.matches(k, l)));
            if skipped {
                return Err(InputError::new(format!(
                    "--skip-tags leaves out `{need}`, which `{}` needs ({}); skip both or neither",
                    play.tasks[i].name, play.tasks[i].place
                ))
                .into());
            }
            sel[j] = true;
            todo.push(j);
        }
    }
    Ok(sel)
}

/// The variables of `host` in `play`, before probing.
pub fn static_vars(
    play: &Play,
    host: &Host,
    s: &Options,
    domain: &dyn Domain,
) -> Map<String, Value> {
    let extra = &s.extra_vars;
    let mut vars = s.default_vars.clone();
    vars.extend(play.defaults.clone());
    vars.extend(host.vars.clone());
    vars.extend(play.vars.clone());
    vars.insert("inventory_hostname".into(), Value::from(host.name.clone()));
    vars.insert(
        "group_names".into(),
        Value::from(host.groups.iter().cloned().collect::<Vec<_>>()),
    );
    vars.extend(domain.inventory_facts(&InventoryHost {
        groups: &host.groups,
        vars: &host.vars,
    }));
    vars.extend(extra.clone());
    vars
}

/// What every host of `play` has before its own layers: the map each
/// host's variables are layered on ([`static_vars`] without the host).
fn play_vars(play: &Play, s: &Options) -> Map<String, Value> {
    let mut vars = s.default_vars.clone();
    vars.extend(play.defaults.clone());
    vars.extend(play.vars.clone());
    vars.extend(s.extra_vars.clone());
    vars
}

/// The variables that decide how templates render, without the ones that
/// only say where a host is (its name and address).
fn preflight_key(vars: &Map<String, Value>) -> String {
    const WHERE: &[&str] = &[
        "inventory_hostname",
        "ansible_host",
        "ansible_ssh_host",
        "khard_host",
        "ansible_port",
        "ansible_ssh_port",
        "khard_port",
    ];
    let relevant: Map<String, Value> = vars
        .iter()
        .filter(|(k, _)| !WHERE.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::to_string(&relevant).unwrap_or_default()
}

/// Renders every task a host may run, for every era it may turn out to be,
/// so that an undefined variable or broken template stops the run before
/// any connection.
fn preflight(
    pb: &Playbook,
    play: &Play,
    host: &HostPlan,
    domain: &dyn Domain,
) -> Result<(), String> {
    for vars in domain.candidate_facts(&host.vars.merged()) {
        let ctx = crate::lang::template::Templates::context(&vars);
        for task in play.tasks.iter().chain(&play.handlers) {
            let mut holds = true;
            for w in &task.when {
                let v = w
                    .eval(&vars)
                    .map_err(|e| format!("{}: when: {e}", task.place))?;
                holds &= crate::lang::expr::truthy(&v);
            }
            if !holds || matches!(task.module, Module::FlushHandlers) {
                continue;
            }
            let r = Render {
                templates: &pb.templates,
                vars: &vars,
                ctx: &ctx,
                files: &task.files,
            };
            task.module.render(&r).map_err(|e| {
                // A template names its place already; say it once, and
                // suggest a defined variable for a misspelt one.
                let text = e.to_string();
                let mut text = if text.starts_with(&task.place) {
                    text
                } else {
                    format!("{}: {text}", task.place)
                };
                if let Some(var) = e.undefined_var()
                    && let Some(hint) =
                        crate::error::did_you_mean(var, vars.keys().map(String::as_str))
                {
                    text.push_str(&format!(" (did you mean `{hint}`?)"));
                }
                text
            })?;
        }
    }
    Ok(())
}

/// Variables khard reads to reach and log in to a host.
const CONNECTION_VARS: &[&str] = &[
    "ansible_host",
    "ansible_ssh_host",
    "ansible_port",
    "ansible_ssh_port",
    "ansible_user",
    "ansible_ssh_user",
    "ansible_connection",
    "ansible_ssh_private_key_file",
    "ansible_private_key_file",
    "ansible_ssh_common_args",
    "ansible_ssh_extra_args",
    "ansible_become",
    "ansible_become_user",
    "ansible_become_password",
    "ansible_become_pass",
];

/// khard's templates are Handlebars: a variable it uses that holds Jinja
/// (`{{ … }}`, `{% … %}`, as many Ansible inventories do) would be written
/// out literally. Refused before connecting, naming the variable and, where
/// the inventory or its vars files hold it, the file and line; variables
/// khard does not use are left alone.
fn check_no_jinja(
    host: &str,
    vars: &Map<String, Value>,
    used: &std::collections::BTreeSet<String>,
    inventory: &std::path::Path,
) -> Result<()> {
    let jinja = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.contains("{{") || s.contains("{%"))
    };
    if let Some((name, value)) = vars.iter().find(|(n, v)| used.contains(*n) && jinja(v)) {
        let place = find_definition(inventory, name)
            .map(|p| format!("{p}: "))
            .unwrap_or_default();
        return Err(InputError::new(format!(
            "{place}host {host}: variable `{name}` holds a Jinja expression ({}), which khard does not evaluate (its templates are Handlebars); give it a plain value",
            value.as_str().unwrap_or_default()
        ))
        .into());
    }
    Ok(())
}

/// `file:line` of the first line that sets `name` in the inventory or the
/// group_vars / host_vars beside it.
fn find_definition(inventory: &std::path::Path, name: &str) -> Option<String> {
    let dir = inventory.parent().unwrap_or(std::path::Path::new("."));
    let mut files = vec![inventory.to_path_buf()];
    for sub in ["group_vars", "host_vars"] {
        let Ok(entries) = std::fs::read_dir(dir.join(sub)) else {
            continue;
        };
        for e in entries.flatten() {
            match std::fs::read_dir(e.path()) {
                Ok(inner) => files.extend(inner.flatten().map(|i| i.path())),
                Err(_) => files.push(e.path()),
            }
        }
    }
    files.into_iter().find_map(|f| {
        let text = std::fs::read_to_string(&f).ok()?;
        let line = text.lines().position(|l| {
            let l = l.trim_start();
            l.starts_with(&format!("{name}:")) || l.starts_with(&format!("{name}="))
        })?;
        Some(format!("{}:{}", f.display(), line + 1))
    })
}

/// Builds the plans of every play, refusing bad input with a clear message.
pub fn plan(
    inv: &Inventory,
    pb: &Playbook,
    s: &Options,
    domain: &dyn Domain,
) -> Result<Vec<PlayPlan>> {
    let ssh = match &s.ssh_config {
        Some(path) => SshConfig::load(path)?,
        None => SshConfig::default_file()?,
    };
    // A set: each play's hosts are checked against it in constant time.
    let limit: Option<std::collections::HashSet<String>> = match &s.limit {
        Some(l) => Some(
            crate::input::inventory::pattern::select_with(inv, l, !s.allow_empty_limit)
                .map_err(|e| InputError::new(format!("--limit: {e}")))?
                .into_iter()
                .collect(),
        ),
        None => None,
    };
    if limit.as_ref().is_some_and(|l| l.is_empty()) {
        return Err(InputError::new("--limit selects no host").into());
    }
    for (flag, tags) in [("--tags", &s.tags), ("--skip-tags", &s.skip_tags)] {
        for t in tags.iter().filter(|t| *t != "all" && *t != "always") {
            let known = pb.plays.iter().flat_map(|p| &p.tasks).any(|task| {
                task.tags
                    .iter()
                    .chain(task.all_cis())
                    .any(|l| Glob::NAMES.matches(t, l))
            });
            if !known {
                return Err(InputError::new(format!(
                    "{flag}: no task has the tag or CIS control `{t}`"
                ))
                .into());
            }
        }
    }
    let mut checked = std::collections::HashSet::new();
    let mut var_bytes = 0usize;
    let nonce = crate::shell::new_marker()
        .trim_start_matches("@@khard-")
        .to_owned();
    let mut plans = Vec::new();
    for (index, play) in pb.plays.iter().enumerate() {
        let mut names =
            crate::input::inventory::pattern::select(inv, &play.hosts).map_err(|e| {
                InputError::new(format!("{}: play `{}`: hosts: {e}", pb.path, play.name))
            })?;
        if let Some(l) = &limit {
            names.retain(|n| l.contains(n.as_str()));
        }
        if let Some((k, n)) = s.shard {
            names.retain(|h| crate::report::merge::shard_of(h, n) == k - 1);
        }
        let mut hosts = Vec::new();
        // Names the play's templates, `when:`s and khard itself (to connect) use.
        let mut used = pb.templates.mentioned_names();
        used.extend(
            play.tasks
                .iter()
                .chain(&play.handlers)
                .flat_map(|t| &t.when)
                .flat_map(|w| w.variables()),
        );
        used.extend(CONNECTION_VARS.iter().map(|v| v.to_string()));
        let mut jinja_checked = used.clone();
        jinja_checked.extend(domain.variables().iter().map(|v| v.to_string()));
        let shared = std::sync::Arc::new(play_vars(play, s));
        for name in names {
            let host = inv.host(&name).expect("selected from the inventory");
            let vars = static_vars(play, host, s, domain);
            // Every host holds its own copy of the variables: one large
            // group variable over a large fleet adds up (OOM, not an error).
            var_bytes += crate::input::inventory::vars_bytes(&vars);
            if var_bytes > crate::input::inventory::MAX_VAR_BYTES {
                return Err(InputError::new(format!(
                    "the hosts' variables add up to more than {} MiB by host {name}; khard refuses them (a large variable is copied to every host of its group)",
                    crate::input::inventory::MAX_VAR_BYTES >> 20
                ))
                .into());
            }
            check_no_jinja(&name, &vars, &jinja_checked, &s.inventory)?;
            let reach = reach(host, &vars, &ssh)
                .map_err(|e| InputError::new(format!("host {name}: {e}")))?;
            domain
                .check_host(&name, &vars, &used)
                .map_err(InputError::new)?;
            // As in Ansible, the host's ansible_become wins over the play's
            // keyword; --become / -K on the command line win over both.
            let from_play = play.r#become || play.tasks.iter().any(|t| t.r#become == Some(true));
            let from_host = vars.get("ansible_become").map(crate::lang::expr::truthy);
            let inventory_password =
                var(&vars, &["ansible_become_password", "ansible_become_pass"]).map(text);
            if inventory_password
                .as_deref()
                .is_some_and(|p| p.contains(['\n', '\r']))
            {
                return Err(InputError::new(format!(
                    "host {name}: ansible_become_password holds a line break: sudo reads one line, and the rest would reach the node's shell; khard cannot send it safely"
                ))
                .into());
            }
            let hp = HostPlan {
                name: name.clone(),
                reach,
                r#become: Become {
                    enabled: s.r#become || from_host.unwrap_or(from_play),
                    user: vars.get("ansible_become_user").map(text),
                    // -K wins; otherwise the inventory's, as Ansible reads it
                    // (a secret: the redactor learns these variables).
                    password: s
                        .become_password
                        .clone()
                        .or_else(|| inventory_password.map(std::sync::Arc::new)),
                    nonce: nonce.clone(),
                },
                vars: std::sync::Arc::new(crate::layered_vars::LayeredVars::new(&shared, &vars)),
            };
            // Hosts whose variables differ only in how to reach them render the
            // same way: check each distinct set once (a fleet is mostly alike).
            if checked.insert((index, preflight_key(&vars))) {
                preflight(pb, play, &hp, domain).map_err(|e| {
                    // A template error may quote a rendered value: never a secret.
                    let mut redactor = crate::secrets::Redactor::default();
                    redactor.learn(&vars);
                    InputError::new(redactor.scrub(&format!("host {name}: {e}")))
                })?;
            }
            hosts.push(hp);
        }
        // --start-at-task: plays before the named task's run nothing, its own
        // starts there, later ones run whole (as ansible-playbook does).
        let start = match &s.start_at_task {
            None => 0,
            Some(name) => {
                // The name, or an fnmatch pattern of it (ansible-playbook's
                // `start_at == name or fnmatch(name, start_at)`).
                let first = pb.plays.iter().enumerate().find_map(|(pi, p)| {
                    p.tasks
                        .iter()
                        .position(|t| &t.name == name || Glob::NAMES.matches(name, &t.name))
                        .map(|ti| (pi, ti))
                });
                match first {
                    Some((pi, ti)) if pi == index => ti,
                    Some((pi, _)) if pi > index => play.tasks.len(),
                    Some(_) => 0,
                    None => {
                        let names = pb
                            .plays
                            .iter()
                            .flat_map(|p| &p.tasks)
                            .map(|t| t.name.as_str());
                        let hint = crate::error::did_you_mean(name, names)
                            .map(|h| format!(" (did you mean `{h}`?)"))
                            .unwrap_or_default();
                        return Err(InputError::new(format!(
                            "--start-at-task: no task is named `{name}`{hint}"
                        ))
                        .into());
                    }
                }
            }
        };
        let selected = whole_selection(play, start, s)?;
        plans.push(PlayPlan {
            index,
            hosts,
            selected,
        });
    }
    Ok(plans)
}

#[cfg(test)]
mod reach_tests {
    use super::*;
    use crate::input::inventory::Host;
    use std::path::Path;

    fn target(vars: serde_json::Value) -> Target {
        let host = Host {
            name: "n1".into(),
            vars: Map::new(),
            groups: Default::default(),
        };
        let vars = vars.as_object().unwrap().clone();
        match reach(&host, &vars, &SshConfig::default()).unwrap() {
            Reach::Ssh(t) => *t,
            Reach::Local => panic!("local"),
        }
    }

    /// The fleet's own Ansible style: host key checking from the arguments.
    #[test]
    fn ssh_arguments_set_known_hosts_checking_and_the_rest() {
        let t = target(serde_json::json!({
            "ansible_ssh_common_args": "-o UserKnownHostsFile=/etc/fleet/known_hosts -o StrictHostKeyChecking=yes -o ConnectTimeout=7 -o ServerAliveInterval=15 -p 2222 -l ops -i /keys/a -o IdentityFile=/keys/b",
        }));
        assert_eq!(
            t.known_hosts.as_deref(),
            Some(Path::new("/etc/fleet/known_hosts"))
        );
        assert!(!t.accept_new);
        assert_eq!(t.connect_timeout, Some(std::time::Duration::from_secs(7)));
        assert_eq!(t.keepalive, Some(std::time::Duration::from_secs(15)));
        assert_eq!((t.port, t.user.as_str()), (2222, "ops"));
        assert_eq!(
            t.key_files,
            [PathBuf::from("/keys/a"), PathBuf::from("/keys/b")]
        );
        let t = target(
            serde_json::json!({"ansible_ssh_extra_args": "-o StrictHostKeyChecking=accept-new"}),
        );
        assert!(t.accept_new);
    }

    /// OpenSSH takes an option's first value: ansible.cfg's ssh_args, then
    /// the common, then the extra arguments; the inventory's port, user and
    /// key come before them all.
    #[test]
    fn the_first_value_wins_and_inventory_variables_come_first() {
        let t = target(serde_json::json!({
            "ansible_ssh_args": "-o Port=2201",
            "ansible_ssh_common_args": "-o Port=2202 -o User=common",
            "ansible_ssh_extra_args": "-o Port=2203 -o User=extra",
        }));
        assert_eq!((t.port, t.user.as_str()), (2201, "common"));
        let t = target(serde_json::json!({
            "ansible_port": 22,
            "ansible_user": "root",
            "ansible_ssh_common_args": "-o Port=2202 -o User=common",
        }));
        assert_eq!((t.port, t.user.as_str()), (22, "root"));
        let bad = reach(
            &Host {
                name: "n1".into(),
                vars: Map::new(),
                groups: Default::default(),
            },
            serde_json::json!({"ansible_ssh_common_args": "-o Port=$(id)"})
                .as_object()
                .unwrap(),
            &SshConfig::default(),
        );
        assert!(bad.unwrap_err().contains("not a port number"));
    }
}
