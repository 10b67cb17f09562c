//! `ansible_connection: local`: the same scripts, run on this machine.

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;

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
        let mut stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let script = script.to_vec();
        let work = async move {
            let writer = async move {
                // A script that exits early closes its stdin; that is not our error.
                let _ = stdin.write_all(&script).await;
                drop(stdin);
            };
            let mut out = ExecOutput::default();
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let (_, ra, rb) = tokio::join!(
                writer,
                stdout.read_to_end(&mut a),
                stderr.read_to_end(&mut b)
            );
            ra?;
            rb?;
            out.push(&a, false);
            out.push(&b, true);
            let status = child.wait().await?;
            out.status = status.code().map(|c| c as u32);
            Ok::<_, anyhow::Error>(out)
        };
        tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| anyhow::anyhow!("timed out after {}s", timeout.as_secs()))?
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
