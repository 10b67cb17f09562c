//! One khard command, from settings to exit code.

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Instant;

use anyhow::Result;

use crate::cli::Format;
use crate::engine::Runner;
use crate::error::Exit;
use crate::input::inventory::Inventory;
use crate::input::playbook::Playbook;
use crate::plan::{PlayPlan, plan};
use crate::report::compliance::Compliance;
use crate::report::redact::Redactor;
use crate::report::{Report, Sink, human::Human, json::Json, junit::Junit};
use crate::settings::Settings;

/// `khard apply`: load, check everything, then run. Returns the exit code.
pub fn apply(s: Settings) -> Result<Exit> {
    run(s, false)
}

/// `khard report`: every node's audit against its benchmark (one read-only
/// probe per node, nothing changed); the output is the compliance per node
/// and for the fleet.
pub fn report(mut s: Settings) -> Result<Exit> {
    s.check = true;
    s.audit = true;
    run(s, true)
}

fn run(s: Settings, compliance: bool) -> Result<Exit> {
    let started = Instant::now();
    // Vault passwords before any input is read: inventories and vars files may be vaulted.
    crate::input::vault::set_secrets(s.vault.secrets()?);
    let inventory = Inventory::load(&s.inventory)?;
    let playbook = Playbook::load(s.playbook.as_deref())?;
    let mut plans = plan(&inventory, &playbook, &s)?;
    if s.syntax_check {
        println!(
            "{}: no issues found ({} play(s), {} host(s) checked)",
            playbook.path,
            plans.len(),
            inventory.hosts.len()
        );
        return Ok(Exit::Ok);
    }
    if s.list_hosts || s.list_tasks {
        list(&playbook, &plans, &s);
        return Ok(Exit::Ok);
    }
    let mut s = s;
    let mut redactor = Redactor::default();
    if s.ask_become_pass {
        let password = std::sync::Arc::new(ask_password()?);
        redactor.add(&password);
        for h in plans.iter_mut().flat_map(|p| &mut p.hosts) {
            h.r#become.password = Some(password.clone());
        }
        s.become_password = Some(password);
    }
    for h in plans.iter().flat_map(|p| &p.hosts) {
        redactor.learn(&h.vars);
    }
    // Whatever came out of a vault is a secret, whatever its variable's name.
    for v in crate::input::vault::decrypted() {
        redactor.add(&v);
    }
    let stdout = || Box::new(std::io::stdout());
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    if !compliance && (s.format == Format::Html || s.output.is_some()) {
        return Err(crate::error::InputError::new(
            "--format html and -o/--output are for `khard report`".to_owned(),
        )
        .into());
    }
    match (compliance, s.format) {
        (true, format) => {
            let out: Box<dyn Write + Send> = match &s.output {
                // Opened now: an unwritable path fails before any host is contacted.
                Some(path) => Box::new(std::fs::File::create(path).map_err(|e| {
                    crate::error::InputError::new(format!("-o {}: {e}", path.display()))
                })?),
                None => stdout(),
            };
            sinks.push(Box::new(Compliance { format, out }))
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
        (false, Format::Json | Format::Html) => sinks.push(Box::new(Json { out: stdout() })),
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
        sinks.push(Box::new(Junit { path: path.clone() }));
    }
    let report = Report::new(redactor, s.check, s.diff, sinks);
    // One descriptor per connection: a large fleet needs more than the default soft limit.
    crate::transport::fd_limit::raise_open_files();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runner = Runner::new(s, playbook, report)?;
    runner.preload_keys(&plans)?;
    let interrupted = runner.interrupted.clone();
    // Ctrl-C: start nothing new, let what runs finish (remote writes are atomic), print the recap.
    runtime.spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            interrupted.store(true, std::sync::atomic::Ordering::Relaxed);
            eprintln!("khard: interrupted: finishing what runs, starting nothing new (Ctrl-C again to stop at once)");
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(Exit::Interrupted.code());
            }
        }
    });
    let channels = runtime.block_on(runner.run(&plans));
    let stopped = runner
        .interrupted
        .load(std::sync::atomic::Ordering::Relaxed);
    let summary = runner.report.finish(channels, started.elapsed(), stopped);
    let code = if compliance && !stopped && summary.exit_code != Exit::Unreachable.code() {
        crate::report::compliance::exit_code(&summary.audits)
    } else {
        summary.exit_code
    };
    Ok(match code {
        0 => Exit::Ok,
        2 => Exit::Drift,
        3 => Exit::Failed,
        4 => Exit::Unreachable,
        _ => Exit::Interrupted,
    })
}

/// The sudo password: from the terminal without echo, or one line of stdin
/// when there is no terminal (CI, tests).
fn ask_password() -> Result<String> {
    ask_secret("BECOME password: ", "-K")
}

/// A secret from the terminal without echo, or one line of stdin when there
/// is no terminal (CI, tests); `flag` names the option in errors.
pub fn ask_secret(prompt: &str, flag: &str) -> Result<String> {
    let from_tty = rpassword::prompt_password(prompt);
    let password = match from_tty {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim_end_matches(['\n', '\r']).to_owned()
        }
    };
    if password.is_empty() {
        return Err(crate::error::InputError::new(format!("{flag}: empty password")).into());
    }
    Ok(password)
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
