//! One khard command, from settings to exit code.

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

/// `khard report`: a check-mode run whose output is the compliance per node.
pub fn report(mut s: Settings) -> Result<Exit> {
    s.check = true;
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
    match (compliance, s.format) {
        (true, format) => sinks.push(Box::new(Compliance {
            json: format == Format::Json,
            manual: manual_controls(&plans),
            out: stdout(),
        })),
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
        (false, Format::Json) => sinks.push(Box::new(Json { out: stdout() })),
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
    Ok(match summary.exit_code {
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

/// Controls the playbook's roles list as manual (`cis_manual_controls: {ID: why}`).
fn manual_controls(plans: &[PlayPlan]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for h in plans.iter().flat_map(|p| &p.hosts) {
        if let Some(serde_json::Value::Object(m)) = h.vars.get("cis_manual_controls") {
            for (id, why) in m {
                if !out.iter().any(|(i, _)| i == id) {
                    out.push((id.clone(), why.as_str().unwrap_or_default().to_owned()));
                }
            }
        }
    }
    out
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
                        .map(|(t, _)| serde_json::json!({"name": t.name, "cis": t.cis, "tags": t.tags}))
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
                    let cis = if t.cis.is_empty() {
                        String::new()
                    } else {
                        format!(" [CIS {}]", t.cis.join(", "))
                    };
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
