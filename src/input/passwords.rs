//! Passwords from the person at the terminal or from files they name: the
//! sudo and vault prompts, and vault password files and scripts. The one
//! place that talks to the terminal for input; called once, before a run.

use std::path::PathBuf;

use anyhow::Result;

use crate::error::InputError;

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
                return ask_secret("Vault password: ", "--ask-vault-pass");
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
        // A relative path names a file here, never a command on $PATH
        // (`--vault-id prod@prod-client.sh`, as Ansible reads it).
        let runnable = if path.is_relative() && path.components().count() == 1 {
            std::path::Path::new(".").join(path)
        } else {
            path.to_path_buf()
        };
        let out = std::process::Command::new(&runnable)
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
        return Err(InputError::new(format!("{flag}: empty password")).into());
    }
    Ok(password)
}
