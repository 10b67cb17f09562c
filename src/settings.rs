//! Settings resolved from the command line: what the rest of khard reads.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use serde_json::{Map, Value};

use crate::cli::{ApplyArgs, Format};
use crate::error::InputError;

#[derive(Debug, Clone)]
pub struct Settings {
    pub inventory: PathBuf,
    pub playbook: Option<PathBuf>,
    pub check: bool,
    /// `khard report`: audit every node against its benchmark (the playbook is not run).
    pub audit: bool,
    /// -o: where `khard report` writes (stdout when unset).
    pub output: Option<PathBuf>,
    pub diff: bool,
    pub forks: usize,
    pub limit: Option<String>,
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
    /// The sudo password, asked once with -K; sent only on stdin after sudo's prompt.
    pub become_password: Option<std::sync::Arc<String>>,
    pub ask_become_pass: bool,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub force_handlers: bool,
    pub format: Format,
    pub junit: Option<PathBuf>,
    pub verbose: u8,
    pub quiet: bool,
    pub color: crate::cli::Color,
    pub list_hosts: bool,
    pub list_tasks: bool,
    pub syntax_check: bool,
}

impl Settings {
    pub fn from_args(a: &ApplyArgs) -> Result<Settings> {
        let ansible = crate::input::ansible_cfg::AnsibleDefaults::load();
        Settings::from_args_with(a, &ansible)
    }

    /// Like `from_args`, with the Ansible settings given: flags win over
    /// them, they win over khard's defaults.
    pub fn from_args_with(
        a: &ApplyArgs,
        ansible: &crate::input::ansible_cfg::AnsibleDefaults,
    ) -> Result<Settings> {
        let inventory = a.inventory.clone().or_else(|| ansible.inventory.clone()).ok_or_else(|| {
            InputError::new(
                "no inventory: give one with -i FILE (or set ANSIBLE_INVENTORY, or `inventory` in ansible.cfg)",
            )
        })?;
        let forks = a.forks.or(ansible.forks).unwrap_or(100);
        if forks == 0 {
            return Err(InputError::new("--forks must be at least 1").into());
        }
        let mut extra_vars = Map::new();
        for e in &a.extra_vars {
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
            playbook: a.playbook.clone(),
            check: a.check,
            audit: false,
            output: a.output.clone(),
            diff: a.diff,
            forks,
            default_vars: default_vars(a, ansible)?,
            start_at_task: a.start_at_task.clone(),
            vault: VaultSources {
                ask: a.ask_vault_pass,
                files: a.vault_password_file.clone(),
                ids: a.vault_id.clone(),
            },
            limit: a.limit.clone(),
            allow_empty_limit: a.allow_empty_limit,
            tags: a.tags.clone(),
            skip_tags: a.skip_tags.clone(),
            extra_vars,
            known_hosts: a.known_hosts.clone(),
            ssh_config: a.ssh_config.clone(),
            // host_key_checking = False: new hosts are learnt (a changed key is
            // still refused: khard never skips the check).
            accept_new_host_keys: a.accept_new_host_keys
                || ansible.host_key_checking == Some(false),
            r#become: a.r#become || a.ask_become_pass || ansible.r#become == Some(true),
            become_password: None,
            ask_become_pass: a.ask_become_pass,
            connect_timeout: Duration::from_secs(
                a.connect_timeout.or(ansible.timeout).unwrap_or(10).max(1),
            ),
            timeout: Duration::from_secs(a.timeout.max(1)),
            force_handlers: a.force_handlers,
            format: a.format,
            junit: a.junit.clone(),
            verbose: a.verbose,
            quiet: a.quiet,
            color: a.color,
            list_hosts: a.list_hosts,
            list_tasks: a.list_tasks,
            syntax_check: a.syntax_check,
        })
    }
}

/// Where ansible-vault passwords come from (--ask-vault-pass,
/// --vault-password-file, --vault-id).
#[derive(Debug, Clone, Default)]
pub struct VaultSources {
    pub ask: bool,
    pub files: Vec<PathBuf>,
    pub ids: Vec<String>,
}

impl VaultSources {
    /// Reads every password: files (an executable file is run and its first
    /// line taken, as Ansible does), and the terminal once where asked.
    pub fn secrets(&self) -> Result<Vec<crate::input::vault::Secret>> {
        use crate::input::vault::Secret;
        let mut out = Vec::new();
        let from = |source: &str| -> Result<String> {
            if source == "prompt" {
                return crate::app::ask_secret("Vault password: ", "--ask-vault-pass");
            }
            password_file(std::path::Path::new(source))
        };
        if self.ask {
            out.push(Secret {
                id: None,
                password: from("prompt")?,
            });
        }
        for f in &self.files {
            out.push(Secret {
                id: None,
                password: password_file(f)?,
            });
        }
        for spec in &self.ids {
            let (id, source) = match spec.split_once('@') {
                Some((id, source)) => (Some(id.to_owned()), source),
                None => (None, spec.as_str()),
            };
            out.push(Secret {
                id,
                password: from(source)?,
            });
        }
        Ok(out)
    }
}

/// A vault password file: its first line, or what it prints when executable.
fn password_file(path: &std::path::Path) -> Result<String> {
    use std::os::unix::fs::PermissionsExt;
    let name = path.display().to_string();
    let meta = std::fs::metadata(path)
        .map_err(|e| InputError::new(format!("vault password file {name}: {e}")))?;
    let text = if meta.permissions().mode() & 0o111 != 0 {
        let out = std::process::Command::new(path)
            .output()
            .map_err(|e| InputError::new(format!("vault password script {name}: {e}")))?;
        if !out.status.success() {
            return Err(InputError::new(format!(
                "vault password script {name} failed ({})",
                out.status
            ))
            .into());
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        crate::input::inventory::read_utf8(path)?
    };
    let password = text
        .lines()
        .next()
        .unwrap_or_default()
        .trim_end()
        .to_owned();
    if password.is_empty() {
        return Err(InputError::new(format!("vault password file {name} is empty")).into());
    }
    Ok(password)
}

/// Ansible's connection flags as the variables they stand for.
fn default_vars(
    a: &ApplyArgs,
    ansible: &crate::input::ansible_cfg::AnsibleDefaults,
) -> Result<Map<String, Value>> {
    let mut out = Map::new();
    if let Some(c) = &a.connection {
        if !matches!(c.as_str(), "ssh" | "local" | "smart") {
            return Err(
                InputError::new(format!("-c {c}: khard connects with ssh or local")).into(),
            );
        }
        out.insert("ansible_connection".into(), Value::from(c.clone()));
    }
    if let Some(u) = a.remote_user.as_ref().or(ansible.remote_user.as_ref()) {
        out.insert("ansible_user".into(), Value::from(u.clone()));
    }
    if let Some(k) = a.private_key.as_ref().or(ansible.private_key_file.as_ref()) {
        out.insert(
            "ansible_ssh_private_key_file".into(),
            Value::from(k.display().to_string()),
        );
    }
    if let Some(u) = a.become_user.as_ref().or(ansible.become_user.as_ref()) {
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
