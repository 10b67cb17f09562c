//! `ansible_connection: local`: the same scripts, run on this machine.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

use super::sudo::Step;
use super::{Become, ExecOutput, command_line};

pub struct Local {
    pub user: String,
}

impl Local {
    pub fn new() -> Local {
        Local {
            user: current_user(),
        }
    }

    pub async fn run(
        &self,
        script: &[u8],
        r#become: &Become,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let line = command_line(r#become, &self.user);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec {line}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("starting /bin/sh")?;
        let mut stdin = Some(child.stdin.take().expect("piped"));
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let mut escalation = r#become.escalation(&self.user);
        let work = async move {
            let mut writer = None;
            if escalation.is_none() {
                writer = Some(send(stdin.take().expect("stdin"), script.to_vec()));
            }
            let mut out = ExecOutput::default();
            let (mut obuf, mut ebuf) = ([0u8; 8192], [0u8; 8192]);
            let (mut o_open, mut e_open) = (true, true);
            while o_open || e_open {
                let (data, to_stderr) = tokio::select! {
                    n = stdout.read(&mut obuf), if o_open => match n? { 0 => { o_open = false; continue } n => (obuf[..n].to_vec(), false) },
                    n = stderr.read(&mut ebuf), if e_open => match n? { 0 => { e_open = false; continue } n => (ebuf[..n].to_vec(), true) },
                };
                let Some((esc, password)) = escalation.as_mut() else {
                    out.push(&data, to_stderr);
                    continue;
                };
                match esc.on_output(&data, to_stderr) {
                    Step::Wait => {}
                    Step::SendPassword => {
                        if let Some(w) = stdin.as_mut() {
                            w.write_all(format!("{password}\n").as_bytes()).await?;
                        }
                    }
                    Step::Escalated { output } => {
                        out.push(&output, false);
                        escalation = None;
                        writer = stdin.take().map(|w| send(w, script.to_vec()));
                    }
                    Step::Fail(why) => {
                        let _ = child.kill().await;
                        anyhow::bail!(why);
                    }
                }
            }
            if escalation.is_some() {
                anyhow::bail!("sudo did not start the shell: {}", out.stderr_text());
            }
            if let Some(w) = writer {
                let _ = w.await;
            }
            let status = child.wait().await?;
            out.status = status.code().map(|c| c as u32);
            Ok::<_, anyhow::Error>(out)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {}s", timeout.as_secs()))?
    }
}

/// Writes the script to the shell's stdin, then closes it.
fn send(mut stdin: tokio::process::ChildStdin, script: Vec<u8>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A script that exits early closes its stdin; that is not our error.
        let _ = stdin.write_all(&script).await;
    })
}

impl Default for Local {
    fn default() -> Self {
        Local::new()
    }
}

/// The user khard runs as, by uid (not $USER, which can lie).
pub fn current_user() -> String {
    let uid = effective_uid();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_owned())
            })
        })
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| "root".into())
}

/// The owner of /proc/self is our effective uid; this avoids an unsafe libc call.
pub fn effective_uid() -> u32 {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m))
        .unwrap_or(0)
}
