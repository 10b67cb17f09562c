//! One khard command, from settings to exit code.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Result;

use crate::audit::evidence::{self, Evidence};
use crate::audit::{Fix, NodeAudit, audit_node, benchmark_for};
use crate::domain::Domain;
use crate::engine::Runner;
use crate::engine::probe_all::Answer;
use crate::error::Exit;
use crate::facts::RemoteState;
use crate::input::inventory::Inventory;
use crate::input::playbook::Playbook;
use crate::k3s::K3s;
use crate::plan::{HostPlan, PlayPlan, plan};
use crate::report::compliance::Compliance;
use crate::report::{Format, Report, Sink, human::Human, json::Json, junit::Junit};
use crate::secrets::Redactor;
use crate::settings::Settings;

/// `khard apply`: load, check everything, then run. Returns the exit code.
pub fn apply(s: Settings) -> Result<Exit> {
    run(s, false)
}

/// `khard report`: every node's audit against its benchmark (one read-only
/// probe per node, nothing changed); the output is the compliance per node
/// and for the fleet.
pub fn report(s: Settings) -> Result<Exit> {
    run(s, true)
}

/// `khard inventory`: the inventory as khard resolves it, in
/// ansible-inventory's shapes; nothing is contacted.
pub fn inventory(a: &crate::cli::InventoryCommandArgs) -> Result<Exit> {
    let ansible = crate::input::ansible_cfg::AnsibleDefaults::load();
    let paths: Vec<std::path::PathBuf> = if a.inventory.inventory.is_empty() {
        ansible.inventory.iter().cloned().collect()
    } else {
        a.inventory.inventory.clone()
    };
    let paths = Some(paths).filter(|p| !p.is_empty()).ok_or_else(|| {
            crate::error::InputError::new(
                "no inventory: give one with -i FILE (or set ANSIBLE_INVENTORY, or `inventory` in ansible.cfg)",
            )
        })?;
    let sources = crate::settings::vault_sources(&a.vault, &ansible);
    crate::input::vault::set_secrets(sources.secrets()?);
    let playbook_dir = a.playbook_dir.clone().or_else(|| {
        a.inventory.playbook.as_deref().map(|p| {
            p.parent()
                .unwrap_or(std::path::Path::new("."))
                .to_path_buf()
        })
    });
    let inv = Inventory::load_many(&paths, playbook_dir.as_deref())?;
    let secrets = crate::input::vault::decrypted();
    use crate::input::inventory::show;
    let text = if let Some(name) = &a.host {
        let vars = show::host(&inv, name, &secrets).ok_or_else(|| {
            crate::error::InputError::new(format!("--host {name}: no such host in the inventory"))
        })?;
        serde_json::to_string_pretty(&vars)? + "\n"
    } else if a.graph {
        show::graph(&inv)
    } else {
        serde_json::to_string_pretty(&show::list(&inv, &secrets))? + "\n"
    };
    std::io::stdout().write_all(crate::terminal::lines(&text).as_bytes())?;
    Ok(Exit::Ok)
}

/// `khard merge`: the JSON documents of a run's shards as one run's (see
/// `report::merge`): written in the format asked, with the exit code the
/// whole run would have had.
pub fn merge(a: &crate::cli::MergeArgs) -> Result<Exit> {
    use crate::report::merge::{Merged, merge};
    let mut docs = Vec::new();
    for f in &a.files {
        let name = f.display().to_string();
        let text = crate::input::inventory::read_utf8(f)?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| crate::error::InputError::new(format!("{name}: {e}")))?;
        docs.push((name, v));
    }
    let merged = merge(&docs).map_err(crate::error::InputError::new)?;
    let gate = crate::settings::gate(a.fail_on);
    let mut out: Box<dyn Write + Send> = match &a.output_file {
        Some(p) => Box::new(
            std::fs::File::create(p)
                .map_err(|e| crate::error::InputError::new(format!("-o {}: {e}", p.display())))?,
        ),
        None => Box::new(std::io::stdout()),
    };
    let code = match merged {
        Merged::Compliance(audits) => {
            let doc = crate::report::compliance::document(&audits);
            match a.format {
                crate::cli::ReportFormat::Json => {
                    serde_json::to_writer_pretty(&mut out, &doc)?;
                    writeln!(out)?;
                }
                crate::cli::ReportFormat::Html => {
                    out.write_all(crate::report::compliance::page(&doc).as_bytes())?
                }
                crate::cli::ReportFormat::Human => crate::report::compliance::text(&doc, &mut out)?,
            }
            if let Some(j) = &a.junit {
                std::fs::write(j, crate::report::junit::render_audits(&audits, gate))?;
            }
            crate::report::compliance::exit_code(&audits, gate)
        }
        Merged::Run(summary) => {
            match a.format {
                crate::cli::ReportFormat::Json => {
                    serde_json::to_writer_pretty(&mut out, &summary)?;
                    writeln!(out)?;
                }
                crate::cli::ReportFormat::Html => {
                    return Err(crate::error::InputError::new(
                        "--format html is for compliance reports; a run merges to text or json",
                    )
                    .into());
                }
                crate::cli::ReportFormat::Human => {
                    use crate::report::Sink;
                    let mut human = Human {
                        verbose: 0,
                        diff: false,
                        quiet: false,
                        color: false,
                        out: std::mem::replace(&mut out, Box::new(std::io::sink())),
                        progress: None,
                        waits: Default::default(),
                        tasks: Default::default(),
                    };
                    for e in &summary.events {
                        human.event(e);
                    }
                    human
                        .finish(&summary)
                        .map_err(crate::error::InputError::new)?;
                }
            }
            if let Some(j) = &a.junit {
                std::fs::write(j, crate::report::junit::render(&summary))?;
            }
            summary.exit_code
        }
    };
    out.flush()?;
    Ok(Exit::from_run_code(code))
}

/// The domain khard runs for: k3s, numbered by the benchmarks it knows.
fn domain() -> Arc<dyn Domain> {
    Arc::new(K3s {
        benchmarks: crate::audit::catalogue::names().collect(),
    })
}

fn run(s: Settings, compliance: bool) -> Result<Exit> {
    let started = Instant::now();
    // Read now: a bad exceptions file fails before any host is contacted.
    let exceptions = match &s.exceptions {
        Some(path) => crate::input::exceptions::load(path)?,
        None => Vec::new(),
    };
    // group_vars/ and host_vars/ beside the playbook rank above the inventory's.
    let playbook_dir = s
        .playbook
        .as_deref()
        .map(|p| p.parent().unwrap_or(std::path::Path::new(".")));
    let inventory = Inventory::load_many(&s.inventory, playbook_dir)?;
    let playbook = Playbook::load(s.playbook.as_deref())?;
    let domain = domain();
    let mut plans = plan(&inventory, &playbook, &s.plan_options(), domain.as_ref())?;
    if s.syntax_check {
        println!(
            "{}: no issues found ({} play(s), {} host(s) checked)",
            playbook.path,
            plans.len(),
            inventory.hosts.len()
        );
        return Ok(Exit::Ok);
    }
    if s.list_hosts || s.list_tasks || s.list_tags {
        list(&playbook, &plans, &s);
        return Ok(Exit::Ok);
    }
    let mut redactor = Redactor::default();
    let mut become_password = None;
    if s.ask_become_pass {
        let password = Arc::new(ask_password()?);
        redactor.add(&password);
        for h in plans.iter_mut().flat_map(|p| &mut p.hosts) {
            h.r#become.password = Some(password.clone());
        }
        become_password = Some(password);
    }
    for h in plans.iter().flat_map(|p| &p.hosts) {
        redactor.learn(&h.vars.merged());
    }
    // Whatever came out of a vault is a secret, whatever its variable's name.
    for v in crate::input::vault::decrypted() {
        redactor.add(&v);
    }
    let stdout = || Box::new(std::io::stdout());
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    match (compliance, s.format) {
        (true, format) => {
            let to = s
                .output
                .as_ref()
                .map_or("stdout".to_owned(), |p| p.display().to_string());
            let out: Box<dyn Write + Send> = match &s.output {
                // Opened now: an unwritable path fails before any host is contacted.
                Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
                    crate::error::InputError::new(format!("-o {}: {e}", path.display()))
                })?),
                None => stdout(),
            };
            sinks.push(Box::new(Compliance { to, format, out }))
        }
        (false, Format::Human) => {
            use std::io::IsTerminal;
            let tty = std::io::stdout().is_terminal();
            let color = match s.color {
                crate::cli::Color::Always => true,
                crate::cli::Color::Never => false,
                crate::cli::Color::Auto => {
                    tty && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                }
            };
            sinks.push(Box::new(Human {
                verbose: s.verbose,
                diff: s.diff,
                quiet: s.quiet,
                color,
                out: stdout(),
                progress: (tty && !s.quiet).then(crate::report::human::Progress::new),
                waits: Default::default(),
                tasks: Default::default(),
            }))
        }
        (false, Format::Json | Format::Html) => {
            sinks.push(Box::new(Json::new(stdout(), s.check || compliance)))
        }
    }
    if let Some(path) = &s.junit {
        // Found unwritable now, before any host is changed, not after.
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|e| {
                crate::error::InputError::new(format!("--junit {}: {e}", path.display()))
            })?;
        sinks.push(Box::new(Junit {
            path: path.clone(),
            gate: compliance.then_some(s.gate),
        }));
    }
    let check = s.check || compliance;
    let report = Report::new(redactor, check, s.diff, sinks);
    // One descriptor per connection: a large fleet needs more than the default soft limit.
    crate::transport::fd_limit::raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runner = Runner::new(
        s.engine_options(check, become_password),
        domain.clone(),
        playbook,
        report,
    )?;
    runner.preload_keys(&plans)?;
    let interrupted = runner.interrupted.clone();
    let report = runner.report.clone();
    // Ctrl-C: start nothing new, let what runs finish (remote writes are
    // atomic), print the recap. Said at once, above any progress bars; a
    // second Ctrl-C stops at once, still with the recap of what was reported.
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
            let first = "khard: interrupted: finishing what runs, starting nothing new (Ctrl-C again to stop at once)";
            eprintln!("{first}");
            report.note(first);
            if tokio::signal::ctrl_c().await.is_ok() {
                let now = "khard: stopped at once: the recap covers what was reported; a host may be left mid-task (every file khard writes is either old or new)";
                eprintln!("{now}");
                report.note(now);
                let _ = report.finish(BTreeMap::new(), started.elapsed(), true);
                std::process::exit(Exit::Interrupted.code());
            }
        }
    });
    let channels = if compliance {
        // `khard report` judges evidence only: probing the playbook's tasks
        // first would cost every host a round trip whose answer goes unused.
        let today = crate::report::compliance::today();
        let flag_variables = FlagVariables::default();
        // Each node is judged as its answer arrives (the tokio workers spread
        // that CPU work over the cores); only its audit is kept, never every
        // node's state at once.
        let judge = |h: &HostPlan, answer: Answer| {
            let mut audit = audit_host(
                &runner,
                domain.as_ref(),
                &plans,
                &flag_variables,
                h,
                &answer,
            );
            crate::audit::exceptions::apply(&mut audit, &exceptions, &today);
            audit
        };
        let (audits, channels) = runtime.block_on(runner.probe_all(
            &plans,
            &|h| evidence::probe(role_of(h), config_of(h)),
            &judge,
        ));
        for audit in audits {
            runner.report.audit(audit);
        }
        channels
    } else {
        runtime.block_on(runner.run(&plans))
    };
    let stopped = runner
        .interrupted
        .load(std::sync::atomic::Ordering::Relaxed);
    let (summary, unwritten) = runner.report.finish(channels, started.elapsed(), stopped);
    if !unwritten.is_empty() {
        for why in &unwritten {
            eprintln!("khard: {why}");
        }
        return Ok(Exit::Failed);
    }
    let code = if compliance && !stopped && summary.exit_code != Exit::Unreachable.code() {
        crate::report::compliance::exit_code(&summary.audits, s.gate)
    } else {
        summary.exit_code
    };
    Ok(Exit::from_run_code(code))
}

/// The variables the templates write as each flag's value, looked up once
/// per flag and run (every node asks the same).
#[derive(Default)]
struct FlagVariables(std::sync::Mutex<HashMap<String, Vec<String>>>);

impl FlagVariables {
    fn of(&self, templates: &crate::lang::template::Templates, flag: &str) -> Vec<String> {
        let mut memo = self.0.lock().expect("flag variables");
        memo.entry(flag.to_owned())
            .or_insert_with(|| templates.variables_after(&format!("{flag}=")))
            .clone()
    }
}

/// The sudo password: from the terminal without echo, or one line of stdin
/// when there is no terminal (CI, tests).
fn ask_password() -> Result<String> {
    let password = crate::input::passwords::ask_secret("BECOME password: ", "-K")?;
    if password.contains(['\n', '\r']) {
        return Err(crate::error::InputError::new(
            "-K: the password holds a line break: sudo reads one line, and the rest would reach the node's shell; khard cannot send it safely",
        )
        .into());
    }
    Ok(password)
}

/// The tags of a play's selected tasks, sorted, each once (as
/// ansible-playbook's --list-tags; CIS IDs, which select too, are in
/// --list-tasks).
fn tags_of(play: &crate::input::playbook::Play, selected: &[bool]) -> Vec<String> {
    let mut tags: Vec<String> = play
        .tasks
        .iter()
        .zip(selected)
        .filter(|(_, sel)| **sel)
        .flat_map(|(t, _)| t.tags.iter().cloned())
        .collect();
    tags.sort();
    tags.dedup();
    tags
}

fn list(pb: &Playbook, plans: &[PlayPlan], s: &Settings) {
    let mut out = std::io::stdout().lock();
    if s.format == Format::Json {
        let role = |h: &crate::plan::HostPlan| {
            h.vars
                .get("k3s_role")
                .and_then(|v| v.as_str())
                .unwrap_or("")
                .to_owned()
        };
        let plays: Vec<serde_json::Value> = plans
            .iter()
            .map(|p| {
                let play = &pb.plays[p.index];
                let mut o = serde_json::json!({"play": play.name, "pattern": play.hosts});
                if s.list_hosts {
                    o["hosts"] = p
                        .hosts
                        .iter()
                        .map(|h| serde_json::json!({"name": h.name, "k3s_role": role(h)}))
                        .collect();
                }
                if s.list_tags {
                    o["tags"] = tags_of(play, &p.selected).into();
                }
                if s.list_tasks {
                    o["tasks"] = play
                        .tasks
                        .iter()
                        .zip(&p.selected)
                        .filter(|(t, sel)| **sel && !matches!(t.module, crate::modules::Module::FlushHandlers))
                        .map(|(t, _)| serde_json::json!({"name": t.name, "cis": cis_by_benchmark(t, s), "tags": t.tags}))
                        .collect();
                }
                o
            })
            .collect();
        let _ = writeln!(out, "{}", serde_json::Value::Array(plays));
        return;
    }
    for p in plans {
        let play = &pb.plays[p.index];
        let _ = writeln!(out, "play: {} (hosts: {})", play.name, play.hosts);
        if s.list_hosts {
            let _ = writeln!(out, "  hosts ({}):", p.hosts.len());
            for h in &p.hosts {
                let role = h
                    .vars
                    .get("k3s_role")
                    .and_then(|v| v.as_str())
                    .unwrap_or("");
                let _ = writeln!(out, "    {} ({role})", h.name);
            }
        }
        if s.list_tags {
            let _ = writeln!(out, "  tags: {}", tags_of(play, &p.selected).join(", "));
        }
        if s.list_tasks {
            let _ = writeln!(out, "  tasks:");
            for (t, sel) in play.tasks.iter().zip(&p.selected) {
                if *sel && !matches!(t.module, crate::modules::Module::FlushHandlers) {
                    let cis = cis_text(t, s);
                    let tags = if t.tags.is_empty() {
                        String::new()
                    } else {
                        format!(" tags: {}", t.tags.join(","))
                    };
                    let _ = writeln!(out, "    {}{cis}{tags}", t.name);
                }
            }
        }
    }
}

/// A task's control IDs in each benchmark (only the one named with
/// `-e cis_benchmark=…`, when given): the numbering `khard report`, the JSON
/// and the JUnit use for a node of that benchmark.
fn cis_by_benchmark(
    t: &crate::input::playbook::Task,
    s: &Settings,
) -> BTreeMap<String, Vec<String>> {
    let only = s.extra_vars.get("cis_benchmark").and_then(|v| v.as_str());
    crate::audit::catalogue::names()
        .filter(|b| only.is_none_or(|o| o == *b))
        .map(|b| (b.to_owned(), t.cis_for(Some(b)).to_vec()))
        .filter(|(_, ids)| !ids.is_empty())
        .collect()
}

/// ` [CIS 1.1.13, 1.1.14]` when every benchmark numbers the task alike,
/// else ` [CIS cis-1.6: 1.2.22; k3s-cis-1.9, k3s-cis-1.10: 1.2.16]`.
fn cis_text(t: &crate::input::playbook::Task, s: &Settings) -> String {
    let by = cis_by_benchmark(t, s);
    let mut groups: Vec<(Vec<&str>, &Vec<String>)> = Vec::new();
    for (b, ids) in &by {
        match groups.iter_mut().find(|(_, g)| *g == ids) {
            Some((names, _)) => names.push(b),
            None => groups.push((vec![b], ids)),
        }
    }
    let named = s.extra_vars.contains_key("cis_benchmark");
    let all = crate::audit::catalogue::names().count();
    match groups.as_slice() {
        [] => String::new(),
        [(names, ids)] if named || names.len() == all => format!(" [CIS {}]", ids.join(", ")),
        _ => {
            // In catalogue order, oldest first.
            let order: Vec<&str> = crate::audit::catalogue::names().collect();
            let mut parts: Vec<(usize, String)> = groups
                .iter()
                .map(|(names, ids)| {
                    let first = names
                        .iter()
                        .filter_map(|n| order.iter().position(|o| o == n))
                        .min()
                        .unwrap_or(0);
                    let mut names = names.clone();
                    names.sort_by_key(|n| order.iter().position(|o| o == n));
                    (first, format!("{}: {}", names.join(", "), ids.join(", ")))
                })
                .collect();
            parts.sort();
            let parts: Vec<String> = parts.into_iter().map(|(_, p)| p).collect();
            format!(" [CIS {}]", parts.join("; "))
        }
    }
}

/// A host's k3s role as the audit reads it (an agent's controls by default).
fn role_of(h: &HostPlan) -> &str {
    h.vars
        .get("k3s_role")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("agent")
}

/// The k3s config file of a host: `k3s_config_file`, else k3s's default.
fn config_of(h: &HostPlan) -> &str {
    h.vars
        .get("k3s_config_file")
        .and_then(serde_json::Value::as_str)
        .unwrap_or(crate::k3s::config::CONFIG)
}

/// Judges one node's evidence against its benchmark. The tasks that
/// remediate a control there: in a play of this host, carrying the control's
/// ID in this benchmark, and not ruled out by their `when:` on this node
/// (another era's config task is not); a guard remediates nothing.
fn audit_host(
    runner: &Runner,
    domain: &dyn Domain,
    plans: &[PlayPlan],
    flag_variables: &FlagVariables,
    h: &HostPlan,
    answer: &Answer,
) -> NodeAudit {
    let role = role_of(h);
    let empty = RemoteState::default();
    let (ev, state) = match answer {
        Ok(state) => (Evidence::from_state(role, config_of(h), state), state),
        Err(why) => (Evidence::unavailable(role, why), &empty),
    };
    let var = |name: &str| h.vars.get(name).and_then(serde_json::Value::as_str);
    // The version read on the node decides; a node that could not be asked
    // has no benchmark unless cis_benchmark names one.
    let benchmark = benchmark_for(var("cis_benchmark"), ev.version.as_deref());
    // A node the domain refuses still gets its audit, from its own evidence.
    let planned = h.vars.merged();
    let vars = domain.with_facts(&planned, state).unwrap_or(planned);
    // Control ID → the tasks that remediate it here, in play order (one
    // pass over the tasks, not one per control).
    let mut remediating: HashMap<&str, Vec<&str>> = HashMap::new();
    let plays = plans
        .iter()
        .filter(|p| p.hosts.iter().any(|x| x.name == h.name))
        .map(|p| &runner.playbook.plays[p.index]);
    for task in plays.flat_map(|p| &p.tasks) {
        if task.module.is_guard() {
            continue;
        }
        let ids = task.cis_for(benchmark.as_deref());
        if ids.is_empty() {
            continue;
        }
        let ruled_out = task
            .when
            .iter()
            .any(|w| matches!(w.eval(&vars), Ok(v) if !crate::lang::expr::truthy(&v)));
        if ruled_out {
            continue;
        }
        for id in ids {
            let names = remediating.entry(id.as_str()).or_default();
            if !names.contains(&task.name.as_str()) {
                names.push(&task.name);
            }
        }
    }
    let fix = |c: &crate::audit::catalogue::Control| -> Fix {
        let Some(names) = remediating.get(c.id.as_str()) else {
            return Fix::default();
        };
        // The variables a template writes as the value of a flag the test reads.
        let mut variables = Vec::new();
        for item in c.test.iter().flat_map(|t| t.items()) {
            let flag = item.flag.trim_start_matches('-');
            if flag.is_empty() {
                continue;
            }
            for name in flag_variables.of(&runner.playbook.templates, flag) {
                let now = vars
                    .get(&name)
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    })
                    .unwrap_or_else(|| "unset".into());
                let text = format!("{name} (now {})", crate::terminal::one_line(&now));
                if !variables.contains(&text) {
                    variables.push(text);
                }
            }
        }
        Fix {
            tasks: names.iter().map(|n| (*n).to_owned()).collect(),
            variables,
        }
    };
    audit_node(&h.name, benchmark.as_deref(), &ev, &fix)
}
