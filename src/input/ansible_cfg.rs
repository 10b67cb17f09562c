//! The Ansible settings khard honours, found where Ansible finds them: the
//! `ANSIBLE_*` environment variables first, then the first ansible.cfg of
//! `$ANSIBLE_CONFIG`, `./ansible.cfg`, `~/.ansible.cfg`,
//! `/etc/ansible/ansible.cfg`. Command-line flags win over both. As in
//! Ansible (config/manager.py `find_ini_config_file`, CVE-2018-10875), the
//! working directory's ansible.cfg is ignored, with a warning, when that
//! directory is world-writable: anyone could have planted it.

use std::path::{Path, PathBuf};

/// Settings from ansible.cfg and the environment; None: not set there.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct AnsibleDefaults {
    pub inventory: Option<PathBuf>,
    pub remote_user: Option<String>,
    pub private_key_file: Option<PathBuf>,
    pub forks: Option<usize>,
    pub host_key_checking: Option<bool>,
    pub timeout: Option<u64>,
    pub r#become: Option<bool>,
    pub become_user: Option<String>,
    /// `[ssh_connection] ssh_args` / ANSIBLE_SSH_ARGS: the first arguments
    /// of every ssh command Ansible runs (variable `ansible_ssh_args`).
    pub ssh_args: Option<String>,
    /// `vault_password_file` / ANSIBLE_VAULT_PASSWORD_FILE: used when no
    /// password file is given on the command line.
    pub vault_password_file: Option<PathBuf>,
    /// `vault_identity_list` / ANSIBLE_VAULT_IDENTITY_LIST: vault ids
    /// (`label@source`) before those of the command line.
    pub vault_identity_list: Vec<String>,
    /// The ansible.cfg read, if any (for messages).
    pub file: Option<PathBuf>,
}

fn truthy(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "yes" | "y" | "on" | "true" => Some(true),
        "0" | "no" | "n" | "off" | "false" => Some(false),
        _ => None,
    }
}

/// A comma-separated list of vault ids (`dev@dev.txt, prod@prompt`).
fn identity_list(v: &str) -> Vec<String> {
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default()
}

fn expand(p: &str) -> PathBuf {
    match p.strip_prefix("~/") {
        Some(rest) => home().join(rest),
        None => PathBuf::from(p),
    }
}

impl AnsibleDefaults {
    /// Reads the environment and the first ansible.cfg found.
    pub fn load() -> AnsibleDefaults {
        let cwd_cfg = PathBuf::from("ansible.cfg");
        let world_writable = {
            use std::os::unix::fs::PermissionsExt;
            std::fs::metadata(".").is_ok_and(|m| m.permissions().mode() & 0o002 != 0)
        };
        if world_writable && cwd_cfg.exists() {
            let cwd = std::env::current_dir().unwrap_or_default();
            eprintln!(
                "khard: warning: khard is being run in a world-writable directory ({}), ignoring its ansible.cfg (as Ansible does)",
                cwd.display()
            );
        }
        let candidates = [
            std::env::var_os("ANSIBLE_CONFIG").map(PathBuf::from),
            (!world_writable).then_some(cwd_cfg),
            Some(home().join(".ansible.cfg")),
            Some(PathBuf::from("/etc/ansible/ansible.cfg")),
        ];
        let file = candidates.into_iter().flatten().find(|p| p.is_file());
        let mut d = match &file {
            Some(f) => std::fs::read_to_string(f)
                .map(|t| AnsibleDefaults::from_cfg(&t, f))
                .unwrap_or_default(),
            None => AnsibleDefaults::default(),
        };
        d.file = file;
        d.apply_env(|k| std::env::var(k).ok());
        d
    }

    /// ansible.cfg's `[defaults]` and `[privilege_escalation]` keys khard uses.
    pub fn from_cfg(text: &str, file: &Path) -> AnsibleDefaults {
        let mut d = AnsibleDefaults::default();
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut section = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with(['#', ';']) {
                continue;
            }
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.trim().to_owned();
                continue;
            }
            let Some((k, v)) = line.split_once('=') else {
                continue;
            };
            let (k, v) = (k.trim(), v.trim());
            match (section.as_str(), k) {
                ("defaults", "inventory" | "hostfile") => {
                    // Relative to the ansible.cfg, as Ansible reads it.
                    let first = v.split(',').next().unwrap_or(v).trim();
                    let p = expand(first);
                    d.inventory = Some(if p.is_relative() { dir.join(p) } else { p });
                }
                ("defaults", "remote_user") => d.remote_user = Some(v.to_owned()),
                ("defaults", "private_key_file") => d.private_key_file = Some(expand(v)),
                ("defaults", "forks") => d.forks = v.parse().ok(),
                ("defaults", "host_key_checking") => d.host_key_checking = truthy(v),
                ("defaults", "timeout") => d.timeout = v.parse().ok(),
                ("privilege_escalation", "become") => d.r#become = truthy(v),
                ("privilege_escalation", "become_user") => d.become_user = Some(v.to_owned()),
                ("ssh_connection", "ssh_args") => d.ssh_args = Some(v.to_owned()),
                ("defaults", "vault_password_file") => {
                    let p = expand(v);
                    d.vault_password_file = Some(if p.is_relative() { dir.join(p) } else { p });
                }
                ("defaults", "vault_identity_list") => d.vault_identity_list = identity_list(v),
                _ => {}
            }
        }
        d
    }

    /// The `ANSIBLE_*` variables, which win over ansible.cfg.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) {
        if let Some(v) = env("ANSIBLE_SSH_ARGS") {
            self.ssh_args = Some(v);
        }
        if let Some(v) = env("ANSIBLE_VAULT_PASSWORD_FILE") {
            self.vault_password_file = Some(expand(&v));
        }
        if let Some(v) = env("ANSIBLE_VAULT_IDENTITY_LIST") {
            self.vault_identity_list = identity_list(&v);
        }
        if let Some(v) = env("ANSIBLE_INVENTORY") {
            self.inventory = Some(expand(v.split(',').next().unwrap_or(&v).trim()));
        }
        if let Some(v) = env("ANSIBLE_REMOTE_USER") {
            self.remote_user = Some(v);
        }
        if let Some(v) = env("ANSIBLE_PRIVATE_KEY_FILE") {
            self.private_key_file = Some(expand(&v));
        }
        if let Some(v) = env("ANSIBLE_FORKS").and_then(|v| v.parse().ok()) {
            self.forks = Some(v);
        }
        if let Some(v) = env("ANSIBLE_HOST_KEY_CHECKING").and_then(|v| truthy(&v)) {
            self.host_key_checking = Some(v);
        }
        if let Some(v) = env("ANSIBLE_TIMEOUT").and_then(|v| v.parse().ok()) {
            self.timeout = Some(v);
        }
        if let Some(v) = env("ANSIBLE_BECOME").and_then(|v| truthy(&v)) {
            self.r#become = Some(v);
        }
        if let Some(v) = env("ANSIBLE_BECOME_USER") {
            self.become_user = Some(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cfg_then_environment() {
        let cfg = "[defaults]\ninventory = inventories/prod.yml\nremote_user = deploy\nforks = 20\nhost_key_checking = False\ntimeout = 30\n\n[privilege_escalation]\nbecome = True\nbecome_user = root\n";
        let mut d = AnsibleDefaults::from_cfg(cfg, Path::new("/proj/ansible.cfg"));
        assert_eq!(
            d.inventory,
            Some(PathBuf::from("/proj/inventories/prod.yml"))
        );
        assert_eq!(
            (d.remote_user.as_deref(), d.forks, d.timeout),
            (Some("deploy"), Some(20), Some(30))
        );
        assert_eq!((d.host_key_checking, d.r#become), (Some(false), Some(true)));
        d.apply_env(|k| (k == "ANSIBLE_REMOTE_USER").then(|| "ops".to_owned()));
        assert_eq!(
            d.remote_user.as_deref(),
            Some("ops"),
            "the environment wins"
        );
    }
}
