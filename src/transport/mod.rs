//! Transport: running a script on a host, over SSH (one connection per
//! host, one channel per exec; `ssh/`) or on this machine
//! (`ansible_connection: local`). Either way the command is a constant
//! `/bin/sh -s` (behind sudo with become) and the script arrives on stdin;
//! `sudo` holds the one exec loop both use.
//!
//! Owns: connections, authentication, host keys, ssh_config, sudo, output
//! limits. May not touch: what the scripts mean; it moves bytes and exit
//! statuses.

pub mod fd_limit;
pub mod local;
pub mod ssh;
pub mod sudo;

use std::time::Duration;

/// Most output one exec may bring back; more fails the exec instead of
/// letting one host fill our memory.
pub const MAX_OUTPUT: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct ExecOutput {
    pub status: Option<u32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// More than [`MAX_OUTPUT`] came back; the rest was dropped.
    pub truncated: bool,
}

impl ExecOutput {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).trim().to_owned()
    }

    pub(crate) fn push(&mut self, data: &[u8], to_stderr: bool) {
        let room = MAX_OUTPUT.saturating_sub(self.stdout.len() + self.stderr.len());
        if data.len() > room {
            self.truncated = true;
        }
        let buf = if to_stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        buf.extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// How to get root (or another user) on the host.
#[derive(Debug, Clone, Default)]
pub struct Become {
    pub enabled: bool,
    /// Defaults to root.
    pub user: Option<String>,
    /// The sudo password (-K), sent on stdin after sudo's prompt, never in argv or env.
    pub password: Option<std::sync::Arc<String>>,
    /// Random per run, for sudo's prompt and the escalation marker.
    pub nonce: String,
}

impl Become {
    fn target(&self) -> &str {
        self.user.as_deref().unwrap_or("root")
    }

    fn needed(&self, login_user: &str) -> bool {
        self.enabled && login_user != self.target()
    }

    /// The password protocol, when escalating with a password.
    pub fn escalation(
        &self,
        login_user: &str,
    ) -> Option<(sudo::Escalation, std::sync::Arc<String>)> {
        let password = self.password.clone().filter(|_| self.needed(login_user))?;
        Some((sudo::Escalation::new(&self.nonce), password))
    }
}

/// The command line of every exec: a constant, so nothing we generate is
/// parsed by the login shell.
pub fn command_line(r#become: &Become, login_user: &str) -> String {
    if !r#become.needed(login_user) {
        return "/bin/sh -s".into();
    }
    if let Some((e, _)) = r#become.escalation(login_user) {
        return e.command(r#become.target());
    }
    format!(
        "sudo -n -H -u {} -- /bin/sh -s",
        crate::shell::quote(r#become.target())
    )
}

/// Sees the script's stdout as it arrives (for progress), before the exec ends.
pub type Watch<'a> = &'a (dyn Fn(&[u8]) + Send + Sync);

/// A live connection to one host.
pub enum Connection {
    Ssh(ssh::Session),
    Local(local::Local),
}

impl Connection {
    /// Runs `script` with `/bin/sh -s`; Err means the connection failed, not the script.
    pub async fn run(
        &self,
        script: &[u8],
        r#become: &Become,
        timeout: Duration,
    ) -> anyhow::Result<ExecOutput> {
        self.run_watched(script, r#become, timeout, &|_| {}).await
    }

    /// Like [`Connection::run`], showing stdout to `watch` as it arrives.
    pub async fn run_watched(
        &self,
        script: &[u8],
        r#become: &Become,
        timeout: Duration,
        watch: Watch<'_>,
    ) -> anyhow::Result<ExecOutput> {
        match self {
            Connection::Ssh(s) => s.run(script, r#become, timeout, watch).await,
            Connection::Local(l) => l.run(script, r#become, timeout, watch).await,
        }
    }

    /// How the host was reached, for -vvv.
    pub fn describe(&self) -> String {
        match self {
            Connection::Ssh(s) => s.description.clone(),
            Connection::Local(l) => format!("local, as {}", l.user),
        }
    }

    /// Exec channels opened so far (always 0 for local).
    pub fn channels(&self) -> usize {
        match self {
            Connection::Ssh(s) => s.channels(),
            Connection::Local(_) => 0,
        }
    }

    pub async fn close(&self) {
        if let Connection::Ssh(s) = self {
            s.close().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sudo_only_when_needed() {
        let b = Become {
            enabled: true,
            ..Become::default()
        };
        assert_eq!(command_line(&b, "root"), "/bin/sh -s");
        assert_eq!(
            command_line(&b, "debian"),
            "sudo -n -H -u 'root' -- /bin/sh -s"
        );
        assert_eq!(command_line(&Become::default(), "debian"), "/bin/sh -s");
    }

    #[test]
    fn output_is_capped() {
        let mut out = ExecOutput::default();
        out.push(&vec![b'x'; MAX_OUTPUT + 10], false);
        assert!(out.truncated);
        assert_eq!(out.stdout.len(), MAX_OUTPUT);
    }
}
