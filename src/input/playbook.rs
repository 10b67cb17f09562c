//! Plays, roles and tasks: loaded from disk or from the built-in copies, with
//! every template compiled and every file read before any host is contacted.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Result;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::error::{InputError, did_you_mean};
use crate::input::source::{self, Dir};
use crate::input::yaml::{self, OneOrMany, Vars};
use crate::k3s::{config_task as k3s_config, unit_task as k3s_unit};
use crate::lang::expr::Expr;
use crate::lang::template::{Templates, Text};
use crate::modules::{Files, Module, command, directory, file, permissions, service, sysctl};

pub struct Playbook {
    /// How the user sees the playbook's path.
    pub path: String,
    pub plays: Vec<Play>,
    pub templates: Templates,
}

#[derive(Debug)]
pub struct Play {
    pub name: String,
    pub hosts: String,
    pub r#become: bool,
    pub any_errors_fatal: bool,
    pub max_fail_percentage: Option<f64>,
    /// Role defaults, lowest precedence.
    pub defaults: Map<String, Value>,
    pub vars: Map<String, Value>,
    pub tasks: Vec<Task>,
    pub handlers: Vec<Task>,
}

#[derive(Debug, Clone)]
pub struct Task {
    pub name: String,
    /// `file:line` where the task is written.
    pub place: String,
    pub when: Vec<Expr>,
    pub notify: Vec<String>,
    /// Names of tasks of the same play that must run with this one (khard's
    /// own keyword): selecting it by tag or CIS ID selects them too.
    pub needs: Vec<String>,
    pub tags: Vec<String>,
    /// CIS control IDs in the numbering of the seed guide (CIS 1.6).
    pub cis: Vec<String>,
    /// The same controls in other benchmarks' numbering, where it differs.
    pub cis_by_benchmark: BTreeMap<String, Vec<String>>,
    pub r#become: Option<bool>,
    pub timeout: Option<u64>,
    pub run_once: bool,
    /// Handlers: how many hosts run it at once ("1", "5", "25%"); all when unset.
    pub throttle: Option<Text>,
    /// Handlers: wait until each host of a batch is healthy before the next batch.
    pub health: Option<Health>,
    pub module: Module,
    /// The files and templates of the role (or playbook) the task came from.
    pub files: Arc<Files>,
}

/// Reads the `files/` and `templates/` of a role or playbook folder.
fn load_files(base: &Dir, templates: &mut Templates) -> Result<Files> {
    let mut f = Files {
        origin: base.display(),
        ..Files::default()
    };
    for (rel, path) in base.join("files").list() {
        f.files.insert(rel, path.read()?.unwrap_or_default());
    }
    for (rel, path) in base.join("templates").list() {
        let name = match &path {
            Dir::Disk(p) => p.display().to_string(),
            Dir::Builtin(p) => p.clone(),
        };
        templates.add_file(&name, &path.read()?.unwrap_or_default())?;
        f.templates.insert(rel, name);
    }
    Ok(f)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlayYaml {
    #[serde(default)]
    name: Option<String>,
    hosts: String,
    #[serde(
        default,
        rename = "become",
        deserialize_with = "crate::input::yaml::bool11"
    )]
    r#become: bool,
    #[serde(default, deserialize_with = "crate::input::yaml::bool11")]
    any_errors_fatal: bool,
    #[serde(default)]
    max_fail_percentage: Option<f64>,
    /// Accepted for compatibility with Ansible playbooks; khard gathers what it needs.
    #[serde(default, deserialize_with = "crate::input::yaml::opt_bool11")]
    #[allow(dead_code)]
    gather_facts: Option<bool>,
    #[serde(default)]
    vars: Vars,
    #[serde(default)]
    roles: Vec<RoleRef>,
    #[serde(default)]
    tasks: Vec<TaskYaml>,
    #[serde(default)]
    handlers: Vec<TaskYaml>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RoleRef {
    Name(String),
    Full {
        role: String,
        #[serde(default)]
        vars: Vars,
    },
}

/// `cis:` is a list of control IDs, or a mapping of benchmark name to IDs
/// (`{cis-1.6: [1.2.22], k3s-cis-1.9: [1.2.16]}`), whose `cis-1.6` entry (or
/// `default`) is the list shown when a node's benchmark has no entry.
#[derive(Debug, Clone, Default)]
pub struct Cis {
    pub default: Vec<String>,
    pub by_benchmark: BTreeMap<String, Vec<String>>,
}

impl<'de> Deserialize<'de> for Cis {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_yaml::Value::deserialize(d)?;
        if let serde_yaml::Value::Mapping(map) = v {
            let mut cis = Cis::default();
            for (k, v) in map {
                let k = k
                    .as_str()
                    .ok_or_else(|| serde::de::Error::custom("benchmark names are strings"))?
                    .to_owned();
                let ids: OneOrMany = serde_yaml::from_value(v).map_err(serde::de::Error::custom)?;
                if k == "cis-1.6" || k == "default" {
                    cis.default = ids.0.clone();
                }
                cis.by_benchmark.insert(k, ids.0);
            }
            return Ok(cis);
        }
        let ids: OneOrMany = serde_yaml::from_value(v).map_err(serde::de::Error::custom)?;
        Ok(Cis {
            default: ids.0,
            by_benchmark: BTreeMap::new(),
        })
    }
}

impl Task {
    /// The control IDs of this task in a node's benchmark. A task whose IDs
    /// are given per benchmark covers none in a benchmark it does not name
    /// (falling back to another numbering would name the wrong controls).
    pub fn cis_for(&self, benchmark: Option<&str>) -> &[String] {
        match benchmark {
            Some(b) if !self.cis_by_benchmark.is_empty() => {
                self.cis_by_benchmark.get(b).map_or(&[], Vec::as_slice)
            }
            _ => &self.cis,
        }
    }

    /// Every ID in every numbering, for --tags.
    pub fn all_cis(&self) -> impl Iterator<Item = &String> {
        self.cis
            .iter()
            .chain(self.cis_by_benchmark.values().flatten())
    }
}

/// A health gate: `command` must exit 0 (and print `expect`, when given)
/// within `timeout` seconds, tried every `interval` seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    #[serde(deserialize_with = "crate::modules::text")]
    pub command: Text,
    #[serde(default, deserialize_with = "crate::modules::opt_text")]
    pub expect: Option<Text>,
    #[serde(default, deserialize_with = "crate::modules::opt_text")]
    pub interval: Option<Text>,
    #[serde(default, deserialize_with = "crate::modules::opt_text")]
    pub timeout: Option<Text>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, try_from = "TaskFields")]
struct TaskYaml(Task);

/// Every key a task may have; exactly one module key must be set.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskFields {
    name: Option<String>,
    when: Option<OneOrMany>,
    notify: Option<OneOrMany>,
    needs: Option<OneOrMany>,
    tags: Option<OneOrMany>,
    cis: Option<Cis>,
    #[serde(
        rename = "become",
        default,
        deserialize_with = "crate::input::yaml::opt_bool11"
    )]
    r#become: Option<bool>,
    timeout: Option<u64>,
    #[serde(default, deserialize_with = "crate::input::yaml::opt_bool11")]
    run_once: Option<bool>,
    throttle: Option<crate::input::yaml::Scalar>,
    health: Option<Health>,
    #[serde(default, alias = "ansible.builtin.file")]
    file: Option<file::Args>,
    directory: Option<directory::Args>,
    #[serde(default, alias = "ansible.posix.sysctl")]
    sysctl: Option<sysctl::Args>,
    #[serde(default, alias = "ansible.builtin.command")]
    command: Option<command::Args>,
    #[serde(
        default,
        alias = "ansible.builtin.service",
        alias = "ansible.builtin.systemd",
        alias = "ansible.builtin.systemd_service"
    )]
    service: Option<service::Args>,
    permissions: Option<permissions::Args>,
    k3s_unit: Option<k3s_unit::Args>,
    k3s_config: Option<k3s_config::Args>,
    #[serde(default, alias = "ansible.builtin.meta")]
    meta: Option<String>,
}

pub const MODULE_NAMES: &[&str] = &[
    "file",
    "directory",
    "sysctl",
    "command",
    "service",
    "permissions",
    "k3s_unit",
    "k3s_config",
    "meta",
];

impl TryFrom<TaskFields> for TaskYaml {
    type Error = String;

    fn try_from(f: TaskFields) -> Result<Self, String> {
        let mut modules = Vec::new();
        if let Some(mut a) = f.file {
            a.check()?;
            if let Some(name) = &a.validate {
                a.kind = Some(crate::k3s::validate::content_kind(name).ok_or_else(|| {
                    format!(
                        "unknown validate `{name}` (khard knows {})",
                        crate::k3s::validate::KINDS.join(", ")
                    )
                })?);
            }
            modules.push(Module::File(a));
        }
        if let Some(a) = f.directory {
            modules.push(Module::Directory(a));
        }
        if let Some(a) = f.sysctl {
            modules.push(Module::Sysctl(a));
        }
        if let Some(a) = f.command {
            modules.push(Module::Command(a));
        }
        if let Some(a) = f.service {
            modules.push(Module::Service(a));
        }
        if let Some(a) = f.permissions {
            modules.push(Module::Permissions(a));
        }
        if let Some(a) = f.k3s_unit {
            modules.push(Module::Ext(Box::new(a)));
        }
        if let Some(a) = f.k3s_config {
            modules.push(Module::Ext(Box::new(a)));
        }
        if let Some(m) = f.meta {
            if m != "flush_handlers" {
                return Err(format!(
                    "unknown meta action `{m}` (khard knows `flush_handlers`)"
                ));
            }
            modules.push(Module::FlushHandlers);
        }
        let name = f.name.unwrap_or_default();
        let module = match modules.len() {
            1 => modules.pop().expect("one"),
            0 => {
                return Err(format!(
                    "task `{name}` has no module; use one of {}",
                    MODULE_NAMES.join(", ")
                ));
            }
            _ => return Err(format!("task `{name}` has more than one module")),
        };
        let when = f
            .when
            .unwrap_or_default()
            .0
            .iter()
            .map(|w| Expr::parse(w).map_err(|e| format!("when `{w}`: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TaskYaml(Task {
            name,
            place: String::new(),
            when,
            notify: f.notify.unwrap_or_default().0,
            needs: f.needs.unwrap_or_default().0,
            tags: f.tags.unwrap_or_default().0,
            cis: f.cis.clone().unwrap_or_default().default,
            cis_by_benchmark: f.cis.unwrap_or_default().by_benchmark,
            r#become: f.r#become,
            timeout: f.timeout,
            run_once: f.run_once.unwrap_or(false),
            throttle: f.throttle.map(|s| Text::plain(s.0)),
            health: f.health,
            module,
            files: Arc::default(),
        }))
    }
}

/// Registers every templated string of a task with the template engine.
fn compile_task(task: &mut Task, templates: &mut Templates) -> Result<(), InputError> {
    task.module.compile(templates, &task.place)?;
    let place = task.place.clone();
    let mut texts: Vec<&mut Text> = task.throttle.iter_mut().collect();
    if let Some(h) = task.health.as_mut() {
        texts.push(&mut h.command);
        texts.extend(
            [&mut h.expect, &mut h.interval, &mut h.timeout]
                .into_iter()
                .flatten(),
        );
    }
    for t in texts {
        *t = templates.text(&place, &t.raw)?;
    }
    Ok(())
}

/// Where a role's folder is: beside the playbook, beside its folder, or built in.
fn find_role(playbook_dir: &Dir, name: &str) -> Option<Dir> {
    [
        playbook_dir.join("roles").join(name),
        source::parent(playbook_dir).join("roles").join(name),
        Dir::Builtin(format!("roles/{name}")),
    ]
    .into_iter()
    .find(Dir::exists)
}

/// Reads a YAML list of tasks from `file` (a role's tasks/main.yaml).
fn load_tasks(file: &Dir, files: &Arc<Files>, templates: &mut Templates) -> Result<Vec<Task>> {
    let Some(text) = file.read()? else {
        return Ok(Vec::new());
    };
    let display = file.display();
    let parsed: Option<Vec<TaskYaml>> = yaml::parse(&display, &text)?;
    let lines = yaml::item_lines(&text);
    let mut tasks = Vec::new();
    for (i, TaskYaml(mut task)) in parsed.unwrap_or_default().into_iter().enumerate() {
        task.place = format!("{display}:{}", lines.get(i).copied().unwrap_or(1));
        task.files = files.clone();
        compile_task(&mut task, templates)?;
        tasks.push(task);
    }
    Ok(tasks)
}

impl Playbook {
    /// Loads a playbook; `None` loads the built-in CIS playbook.
    pub fn load(path: Option<&std::path::Path>) -> Result<Playbook> {
        let file = match path {
            Some(p) => Dir::Disk(p.to_path_buf()),
            None => Dir::Builtin(source::DEFAULT_PLAYBOOK.into()),
        };
        let display = file.display();
        let text = file
            .read()?
            .ok_or_else(|| InputError::in_file(&display, "no such playbook file"))?;
        Playbook::from_text(&file, &text)
    }

    /// Parses playbook text as if read from `file` (roles are looked up beside it).
    pub fn from_text(file: &Dir, text: &str) -> Result<Playbook> {
        let display = file.display();
        let raw: Vec<PlayYaml> = yaml::parse(&display, text)?;
        let dir = source::parent(file);
        let play_lines = yaml::item_lines(text);
        let mut templates = Templates::default();
        let mut plays = Vec::new();
        for (i, raw) in raw.into_iter().enumerate() {
            let line = play_lines.get(i).copied().unwrap_or(1);
            let place = format!("{display}:{line}");
            // Each of the play's own tasks named by its own line.
            let task_places = |key: &str| -> Vec<String> {
                yaml::key_item_lines(text, line, key)
                    .into_iter()
                    .map(|l| format!("{display}:{l}"))
                    .collect()
            };
            let places = [task_places("tasks"), task_places("handlers")];
            plays.push(load_play(raw, &dir, &place, &places, &mut templates)?);
        }
        Ok(Playbook {
            path: display,
            plays,
            templates,
        })
    }
}

/// `task_places`: the place of each of the play's own tasks and handlers
/// (file:line), where found.
fn load_play(
    raw: PlayYaml,
    dir: &Dir,
    place: &str,
    task_places: &[Vec<String>; 2],
    templates: &mut Templates,
) -> Result<Play> {
    let mut defaults = Map::new();
    let mut vars = Map::new();
    let mut tasks = Vec::new();
    let mut handlers = Vec::new();
    for role in &raw.roles {
        let (name, role_vars) = match role {
            RoleRef::Name(n) => (n.as_str(), None),
            RoleRef::Full { role, vars } => (role.as_str(), Some(vars)),
        };
        let base = find_role(dir, name).ok_or_else(|| {
            // Suggest among the roles that exist beside the playbook and built in.
            let mut known: Vec<String> = [dir.join("roles"), source::parent(dir).join("roles")]
                .iter()
                .flat_map(|d| d.list())
                .filter_map(|(rel, _)| rel.split('/').next().map(str::to_owned))
                .collect();
            known.push("cis_k3s".into());
            let hint = crate::error::did_you_mean(name, known.iter().map(String::as_str))
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            InputError::new(format!(
                "{place}: role `{name}` not found in roles/ beside the playbook, nor built in{hint}"
            ))
        })?;
        let files = Arc::new(load_files(&base, templates)?);
        if let Some(d) = base.join("defaults").find_yaml("main") {
            let text = d.read()?.unwrap_or_default();
            let parsed: Option<Vars> = yaml::parse(&d.display(), &text)?;
            defaults.extend(parsed.unwrap_or_default().0);
        }
        if let Some(v) = role_vars {
            vars.extend(v.0.clone());
        }
        if let Some(t) = base.join("tasks").find_yaml("main") {
            tasks.extend(load_tasks(&t, &files, templates)?);
        }
        if let Some(h) = base.join("handlers").find_yaml("main") {
            handlers.extend(load_tasks(&h, &files, templates)?);
        }
    }
    vars.extend(raw.vars.0);
    let own_files = Arc::new(load_files(dir, templates)?);
    for ((list, raw_tasks), places) in [(&mut tasks, raw.tasks), (&mut handlers, raw.handlers)]
        .into_iter()
        .zip(task_places)
    {
        // The lines are trusted only when they count the tasks exactly.
        let exact = places.len() == raw_tasks.len();
        for (i, TaskYaml(mut task)) in raw_tasks.into_iter().enumerate() {
            task.place = match places.get(i) {
                Some(p) if exact => format!("{p} (task `{}`)", task.name),
                _ => format!("{place} (task {} `{}`)", i + 1, task.name),
            };
            task.files = own_files.clone();
            compile_task(&mut task, templates)?;
            list.push(task);
        }
    }
    check_references(&tasks, &handlers)?;
    Ok(Play {
        name: raw.name.unwrap_or_else(|| raw.hosts.clone()),
        hosts: raw.hosts,
        r#become: raw.r#become,
        any_errors_fatal: raw.any_errors_fatal,
        max_fail_percentage: raw.max_fail_percentage,
        defaults,
        vars,
        tasks,
        handlers,
    })
}

/// `name`, given to `keyword` of `task`, is one of `names`; else an error
/// at the task's place, with the closest name.
fn known(task: &Task, keyword: &str, name: &str, names: &[&str], missing: &str) -> Result<()> {
    if names.contains(&name) {
        return Ok(());
    }
    let hint = did_you_mean(name, names.iter().copied())
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    Err(InputError::new(format!(
        "{}: {keyword} `{name}`: {missing}{hint}",
        task.place
    ))
    .into())
}

/// Every `notify` names a handler, every `needs` a task of the play, and
/// every static `src`/`template` exists.
fn check_references(tasks: &[Task], handlers: &[Task]) -> Result<()> {
    let names: Vec<&str> = handlers.iter().map(|h| h.name.as_str()).collect();
    let task_names: Vec<&str> = tasks.iter().map(|t| t.name.as_str()).collect();
    for task in tasks.iter().chain(handlers) {
        for n in &task.needs {
            known(
                task,
                "needs",
                n,
                &task_names,
                "no task of that name in this play",
            )?;
        }
        for n in &task.notify {
            known(task, "notify", n, &names, "no handler of that name")?;
        }
        if let Module::File(a) = &task.module {
            for (folder, t) in [("files", &a.src), ("templates", &a.template)] {
                if let Some(t) = t.as_ref().filter(|t| !t.is_template())
                    && !task.files.has(folder, &t.raw)
                {
                    let all: Vec<String> = Vec::new();
                    return Err(InputError::new(format!(
                        "{}: {}",
                        task.place,
                        task.files.missing(folder, &t.raw, all.iter())
                    ))
                    .into());
                }
            }
        }
    }
    Ok(())
}
