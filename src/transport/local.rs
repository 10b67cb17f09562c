//! `ansible_connection: local`: the same scripts, run on this machine.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command};

use super::sudo::{Exec, Piece, drive};
use super::{Become, ExecOutput, Watch, command_line};

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
        watch: Watch<'_>,
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
        let mut exec = ChildExec {
            stdin: child.stdin.take(),
            stdout: child.stdout.take(),
            stderr: child.stderr.take(),
            child,
            writer: None,
        };
        let escalation = r#become.escalation(&self.user);
        let work = async move {
            let mut out = drive(&mut exec, script, escalation, watch).await?;
            if let Some(w) = exec.writer.take() {
                let _ = w.await;
            }
            out.status = exec.child.wait().await?.code().map(|c| c as u32);
            Ok::<_, anyhow::Error>(out)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {}s", timeout.as_secs()))?
    }
}

/// A local child process as an [`Exec`].
struct ChildExec {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<ChildStdout>,
    stderr: Option<ChildStderr>,
    writer: Option<tokio::task::JoinHandle<()>>,
}

impl Exec for ChildExec {
    async fn next(&mut self) -> Result<Option<Piece>> {
        let (mut obuf, mut ebuf) = ([0u8; 8192], [0u8; 8192]);
        loop {
            let (o_open, e_open) = (self.stdout.is_some(), self.stderr.is_some());
            if !o_open && !e_open {
                return Ok(None);
            }
            tokio::select! {
                n = read(&mut self.stdout, &mut obuf), if o_open => match n? {
                    0 => self.stdout = None,
                    n => return Ok(Some(Piece::Stdout(obuf[..n].to_vec()))),
                },
                n = read(&mut self.stderr, &mut ebuf), if e_open => match n? {
                    0 => self.stderr = None,
                    n => return Ok(Some(Piece::Stderr(ebuf[..n].to_vec()))),
                },
            }
        }
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        if let Some(w) = self.stdin.as_mut() {
            w.write_all(data).await?;
        }
        Ok(())
    }

    fn send_script(&mut self, script: Vec<u8>) {
        if let Some(mut stdin) = self.stdin.take() {
            self.writer = Some(tokio::spawn(async move {
                // A script that exits early closes its stdin; that is not our error.
                let _ = stdin.write_all(&script).await;
            }));
        }
    }

    async fn abort(&mut self) {
        let _ = self.child.kill().await;
    }
}

async fn read(
    from: &mut Option<impl AsyncReadExt + Unpin>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match from {
        Some(r) => r.read(buf).await,
        None => Ok(0),
    }
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
