//! One khard command, from settings to exit code.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;

use crate::cli::Format;
use crate::error::Exit;
use crate::inventory::Inventory;
use crate::plan::{PlayPlan, plan};
use crate::playbook::Playbook;
use crate::report::compliance::Compliance;
use crate::report::{Report, Sink, human::Human, json::Json, junit::Junit};
use crate::run::Runner;
use crate::secrets::Redactor;
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
    let inventory = Inventory::load(&s.inventory)?;
    let playbook = Playbook::load(s.playbook.as_deref())?;
    let plans = plan(&inventory, &playbook, &s)?;
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
    let mut redactor = Redactor::default();
    for h in plans.iter().flat_map(|p| &p.hosts) {
        redactor.learn(&h.vars);
    }
    let stdout = || Box::new(std::io::stdout());
    let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
    match (compliance, s.format) {
        (true, format) => sinks.push(Box::new(Compliance {
            json: format == Format::Json,
            manual: manual_controls(&plans),
            out: stdout(),
        })),
        (false, Format::Human) => sinks.push(Box::new(Human {
            verbose: s.verbose > 0,
            diff: s.diff,
            quiet: s.quiet,
            out: stdout(),
        })),
        (false, Format::Json) => sinks.push(Box::new(Json { out: stdout() })),
    }
    if let Some(path) = &s.junit {
        sinks.push(Box::new(Junit { path: path.clone() }));
    }
    let report = Report::new(redactor, s.check, s.diff, sinks);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let runner = Runner::new(s, playbook, report)?;
    let channels = runtime.block_on(runner.run(&plans));
    let summary = runner.report.finish(channels, started.elapsed(), false);
    Ok(match summary.exit_code {
        0 => Exit::Ok,
        2 => Exit::Drift,
        3 => Exit::Failed,
        4 => Exit::Unreachable,
        _ => Exit::Interrupted,
    })
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
