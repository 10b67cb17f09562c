//! Settings resolved from the command line: what the rest of khard reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::cli::{ApplyArgs, ReportArgs, ReportFormat};
use crate::error::InputError;
use crate::input::passwords::VaultSources;
use crate::report::Format;

#[derive(Debug, Clone)]
pub struct Settings {
    /// The inventory sources (-i, in order); never empty.
    pub inventory: Vec<PathBuf>,
    pub playbook: Option<PathBuf>,
    pub check: bool,
    /// -o: where `khard report` writes (stdout when unset).
    pub output: Option<PathBuf>,
    pub diff: bool,
    pub forks: usize,
    pub limit: Option<String>,
    /// --shard K/N.
    pub shard: Option<(u32, u32)>,
    /// --allow-empty-limit: terms of --limit may match nothing.
    pub allow_empty_limit: bool,
    pub tags: Vec<String>,
    pub skip_tags: Vec<String>,
    pub extra_vars: Map<String, Value>,
    /// Connection defaults from Ansible's flags (-u, --private-key, -c,
    /// --become-user): the lowest precedence, below every inventory variable.
    pub default_vars: Map<String, Value>,
    /// ansible-vault password sources, in the order given.
    pub vault: VaultSources,
    /// --start-at-task: tasks before the first one of this name are skipped.
    pub start_at_task: Option<String>,
    /// --known-hosts: one file for every host; otherwise ssh config's or ~/.ssh/known_hosts.
    pub known_hosts: Option<PathBuf>,
    /// -F: the OpenSSH client config to read instead of ~/.ssh/config.
    pub ssh_config: Option<PathBuf>,
    pub accept_new_host_keys: bool,
    pub r#become: bool,
    pub ask_become_pass: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub force_handlers: bool,
    pub format: Format,
    pub junit: Option<PathBuf>,
    /// `khard report --exceptions`: accepted exceptions.
    pub exceptions: Option<PathBuf>,
    /// `khard report --fail-on`: what exits 2.
    pub gate: crate::report::compliance::Gate,
    pub verbose: u8,
    pub quiet: bool,
    pub color: crate::cli::Color,
    pub list_hosts: bool,
    pub list_tasks: bool,
    pub list_tags: bool,
    pub syntax_check: bool,
}

impl Settings {
    /// What the planner needs.
    pub fn plan_options(&self) -> crate::plan::Options {
        crate::plan::Options {
            inventory: self.inventory[0].clone(),
            ssh_config: self.ssh_config.clone(),
            limit: self.limit.clone(),
            allow_empty_limit: self.allow_empty_limit,
            shard: self.shard,
            tags: self.tags.clone(),
            skip_tags: self.skip_tags.clone(),
            start_at_task: self.start_at_task.clone(),
            default_vars: self.default_vars.clone(),
            extra_vars: self.extra_vars.clone(),
            r#become: self.r#become,
            become_password: None,
        }
    }

    /// What the engine needs: `check` is the command's (`khard report`
    /// always checks), the become password the one asked with -K.
    pub fn engine_options(
        &self,
        check: bool,
        become_password: Option<std::sync::Arc<String>>,
    ) -> crate::engine::Options {
        crate::engine::Options {
            check,
            diff: self.diff,
            force_handlers: self.force_handlers,
            forks: self.forks,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            known_hosts: self.known_hosts.clone(),
            accept_new_host_keys: self.accept_new_host_keys,
            become_password,
        }
    }

    pub fn from_args(a: &ApplyArgs) -> Result<Settings> {
        let ansible = crate::input::ansible_cfg::AnsibleDefaults::load();
        Settings::from_args_with(a, &ansible)
    }

    /// `khard report`'s settings: the shared groups of flags; nothing of
    /// applying (clap refuses those flags for this command).
    pub fn from_report_args(r: &ReportArgs) -> Result<Settings> {
        let as_apply = ApplyArgs {
            inventory: r.inventory.clone(),
            connection: r.connection.clone(),
            vault: r.vault.clone(),
            output: r.output.clone(),
            check: true,
            diff: false,
            tags: Vec::new(),
            skip_tags: Vec::new(),
            start_at_task: None,
            agent_batch: None,
            force_handlers: false,
            junit: None,
            list_hosts: false,
            list_tasks: false,
            list_tags: false,
            syntax_check: false,
            format: crate::cli::Format::Human,
        };
        let ansible = crate::input::ansible_cfg::AnsibleDefaults::load();
        let mut s = Settings::from_args_with(&as_apply, &ansible)?;
        s.format = match r.format {
            ReportFormat::Human => Format::Human,
            ReportFormat::Json => Format::Json,
            ReportFormat::Html => Format::Html,
        };
        s.output = r.output_file.clone();
        s.junit = r.junit.clone();
        s.exceptions = r.exceptions.clone();
        s.gate = gate(r.fail_on);
        Ok(s)
    }

    /// Like `from_args`, with the Ansible settings given: flags win over
    /// them, they win over khard's defaults.
    pub fn from_args_with(
        a: &ApplyArgs,
        ansible: &crate::input::ansible_cfg::AnsibleDefaults,
    ) -> Result<Settings> {
        let inventory: Vec<PathBuf> = if a.inventory.inventory.is_empty() {
            ansible.inventory.iter().cloned().collect()
        } else {
            a.inventory.inventory.clone()
        };
        let inventory = Some(inventory).filter(|i| !i.is_empty()).ok_or_else(|| {
            InputError::new(
                "no inventory: give one with -i FILE (or set ANSIBLE_INVENTORY, or `inventory` in ansible.cfg)",
            )
        })?;
        let forks = a.connection.forks.or(ansible.forks).unwrap_or(100);
        if forks == 0 {
            return Err(InputError::new("--forks must be at least 1").into());
        }
        // The vault's passwords before any input is read: `-e @vars.yml`,
        // inventories and vars files may be vaulted.
        let vault = vault_sources(&a.vault, ansible);
        crate::input::vault::set_secrets(vault.secrets()?);
        let mut extra_vars = Map::new();
        for e in &a.inventory.extra_vars {
            extra_vars.extend(parse_extra_vars(e)?);
        }
        if let Some(batch) = &a.agent_batch {
            let n = batch.trim().trim_end_matches('%');
            if n.parse::<u32>().map_or(true, |n| n == 0) {
                return Err(InputError::new(format!("--agent-batch `{batch}`: expected a number of agents or a percentage, e.g. 2 or 25%")).into());
            }
            // -e wins over the flag, as extra vars win over everything.
            extra_vars
                .entry("k3s_agent_batch")
                .or_insert(Value::String(batch.clone()));
        }
        Ok(Settings {
            inventory,
            playbook: a.inventory.playbook.clone(),
            check: a.check,
            output: None,
            diff: a.diff,
            forks,
            default_vars: default_vars(a, ansible)?,
            start_at_task: a.start_at_task.clone(),
            vault,
            limit: match a.inventory.limit.as_deref() {
                Some(l) if l.starts_with('@') => Some(limit_file(&l[1..])?),
                other => other.map(str::to_owned),
            },
            allow_empty_limit: a.inventory.allow_empty_limit,
            shard: a.inventory.shard,
            tags: a.tags.clone(),
            skip_tags: a.skip_tags.clone(),
            extra_vars,
            known_hosts: a.connection.known_hosts.clone(),
            ssh_config: a.connection.ssh_config.clone(),
            // host_key_checking = False: new hosts are learnt (a changed key is
            // still refused: khard never skips the check).
            accept_new_host_keys: a.connection.accept_new_host_keys
                || ansible.host_key_checking == Some(false),
            r#become: a.connection.r#become
                || a.connection.ask_become_pass
                || ansible.r#become == Some(true),
            ask_become_pass: a.connection.ask_become_pass,
            connect_timeout: Duration::from_secs(
                a.connection
                    .connect_timeout
                    .or(ansible.timeout)
                    .unwrap_or(10)
                    .max(1),
            ),
            timeout: Duration::from_secs(a.connection.timeout.max(1)),
            force_handlers: a.force_handlers,
            format: match a.format {
                crate::cli::Format::Human => Format::Human,
                crate::cli::Format::Json => Format::Json,
            },
            junit: a.junit.clone(),
            exceptions: None,
            gate: Default::default(),
            verbose: a.output.verbose,
            quiet: a.output.quiet,
            color: a.output.color,
            list_hosts: a.list_hosts,
            list_tasks: a.list_tasks,
            list_tags: a.list_tags,
            syntax_check: a.syntax_check,
        })
    }
}

/// `--fail-on` as the compliance report's gate.
pub fn gate(fail_on: crate::cli::FailOn) -> crate::report::compliance::Gate {
    use crate::report::compliance::Gate;
    match fail_on {
        crate::cli::FailOn::Scored => Gate::Scored,
        crate::cli::FailOn::Warn => Gate::Warn,
        crate::cli::FailOn::Unknown => Gate::Unknown,
    }
}

/// Where the vault passwords come from: ansible.cfg's identity list before
/// the command line's ids; its password file only when the command line
/// gives none (as in Ansible).
pub fn vault_sources(
    cli: &crate::cli::VaultArgs,
    ansible: &crate::input::ansible_cfg::AnsibleDefaults,
) -> VaultSources {
    VaultSources {
        ask: cli.ask_vault_pass,
        files: if cli.vault_password_file.is_empty() {
            ansible.vault_password_file.iter().cloned().collect()
        } else {
            cli.vault_password_file.clone()
        },
        ids: ansible
            .vault_identity_list
            .iter()
            .chain(&cli.vault_id)
            .cloned()
            .collect(),
    }
}

/// `--limit @FILE`, as ansible-playbook reads a retry file: one host or
/// pattern a line, all of them together.
fn limit_file(path: &str) -> Result<String> {
    let text = crate::input::inventory::read_utf8(std::path::Path::new(path))
        .map_err(|e| InputError::new(format!("--limit @{path}: {e:#}")))?;
    let patterns: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    if patterns.is_empty() {
        return Err(InputError::new(format!("--limit @{path}: the file names no host")).into());
    }
    Ok(patterns.join(","))
}

/// Ansible's connection flags as the variables they stand for.
fn default_vars(
    a: &ApplyArgs,
    ansible: &crate::input::ansible_cfg::AnsibleDefaults,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(c) = &a.connection.connection {
        if !matches!(c.as_str(), "ssh" | "local" | "smart") {
            return Err(
                InputError::new(format!("-c {c}: khard connects with ssh or local")).into(),
            );
        }
        out.insert("ansible_connection".into(), Value::from(c.clone()));
    }
    if let Some(u) = a
        .connection
        .remote_user
        .as_ref()
        .or(ansible.remote_user.as_ref())
    {
        out.insert("ansible_user".into(), Value::from(u.clone()));
    }
    if let Some(k) = a
        .connection
        .private_key
        .as_ref()
        .or(ansible.private_key_file.as_ref())
    {
        out.insert(
            "ansible_ssh_private_key_file".into(),
            Value::from(k.display().to_string()),
        );
    }
    if let Some(args) = &ansible.ssh_args {
        out.insert("ansible_ssh_args".into(), Value::from(args.clone()));
    }
    if let Some(u) = a
        .connection
        .become_user
        .as_ref()
        .or(ansible.become_user.as_ref())
    {
        out.insert("ansible_become_user".into(), Value::from(u.clone()));
    }
    Ok(out)
}

/// `-e key=value`, `-e '{"a": 1}'` / `-e 'a: 1'`, or `-e @file.yaml`.
pub fn parse_extra_vars(arg: &str) -> Result<Map<String, Value>> {
    if let Some(path) = arg.strip_prefix('@') {
        let text = crate::input::inventory::read_utf8(std::path::Path::new(path))?;
        let vars: Option<crate::input::yaml::Vars> = crate::input::yaml::parse(path, &text)?;
        return Ok(vars.unwrap_or_default().0);
    }
    let trimmed = arg.trim_start();
    if trimmed.starts_with('{') || (trimmed.contains(": ") && !trimmed.contains('=')) {
        let vars: crate::input::yaml::Vars = crate::input::yaml::parse("-e", arg)?;
        return Ok(vars.0);
    }
    let mut out = Map::new();
    for pair in
        crate::lang::words::texts(arg).map_err(|e| InputError::new(format!("-e `{arg}`: {e}")))?
    {
        let pair = pair.as_str();
        let (k, v) = pair.split_once('=').ok_or_else(|| {
            InputError::new(format!(
                "-e `{pair}`: expected key=value, a YAML mapping, or @file"
            ))
        })?;
        if k.is_empty() {
            return Err(InputError::new(format!("-e `{pair}`: empty variable name")).into());
        }
        out.insert(k.to_owned(), Value::String(v.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_vars_forms() {
        assert_eq!(parse_extra_vars("a=1 b=x").unwrap()["b"], "x");
        assert_eq!(parse_extra_vars("{\"n\": 3}").unwrap()["n"], 3);
        assert_eq!(parse_extra_vars("n: 3").unwrap()["n"], 3);
        assert!(parse_extra_vars("novalue").is_err());
        assert_eq!(
            parse_extra_vars("m='kind: [x' n=\"a b\"").unwrap()["m"],
            "kind: [x"
        );
        assert_eq!(parse_extra_vars("n=\"a b\"").unwrap()["n"], "a b");
    }
}
