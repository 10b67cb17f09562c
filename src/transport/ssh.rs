//! The SSH transport, on russh: one connection per host, host keys checked
//! against known_hosts, auth by ssh-agent and private key files (each key
//! decrypted once per run), and an exec that streams the script on stdin.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use russh::client::{self, Handle};
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Preferred};

use super::sudo::Step;
use super::{Become, ExecOutput, command_line};
use crate::known_hosts::{KnownHosts, Verdict, host_key_name};

/// Where and as whom to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// The inventory name, for messages.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Explicit key files; none means ssh-agent and the usual ~/.ssh/id_* files.
    pub key_files: Vec<PathBuf>,
}

/// What every connection of a run shares.
pub struct SshContext {
    pub known_hosts: Arc<KnownHosts>,
    pub accept_new: bool,
    pub connect_timeout: Duration,
    /// Keys are decrypted once per run, not once per host.
    keys: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
}

/// Why a host could not be reached; all of these count as "unreachable".
#[derive(Debug)]
pub struct ConnectError(pub String);

impl std::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConnectError {}

impl SshContext {
    pub fn new(known_hosts: KnownHosts, accept_new: bool, connect_timeout: Duration) -> SshContext {
        SshContext {
            known_hosts: Arc::new(known_hosts),
            accept_new,
            connect_timeout,
            keys: Mutex::new(HashMap::new()),
        }
    }

    fn key(&self, path: &Path) -> Result<Arc<PrivateKey>> {
        if let Some(k) = self.keys.lock().expect("key cache").get(path) {
            return Ok(k.clone());
        }
        let key = russh::keys::load_secret_key(path, None).map_err(|e| match e {
            russh::keys::Error::KeyIsEncrypted => {
                anyhow!(
                    "{} is encrypted: load it into ssh-agent (ssh-add {})",
                    path.display(),
                    path.display()
                )
            }
            other => anyhow!("cannot load private key {}: {other}", path.display()),
        })?;
        let key = Arc::new(key);
        self.keys
            .lock()
            .expect("key cache")
            .insert(path.to_owned(), key.clone());
        Ok(key)
    }

    pub async fn connect(&self, target: &Target) -> Result<Session, ConnectError> {
        let fail = |msg: String| ConnectError(format!("{}: {msg}", target.name));
        let name = host_key_name(&target.address, target.port);
        let config = Arc::new(client::Config {
            nodelay: true,
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            inactivity_timeout: None,
            preferred: preferred(&self.known_hosts.known_algorithms(&name)),
            ..client::Config::default()
        });
        let verdict = Arc::new(Mutex::new(None));
        let handler = Checker {
            name: name.clone(),
            known_hosts: self.known_hosts.clone(),
            accept_new: self.accept_new,
            verdict: verdict.clone(),
        };
        let addr = (target.address.as_str(), target.port);
        let connecting = client::connect(config, addr, handler);
        let mut handle = match tokio::time::timeout(self.connect_timeout, connecting).await {
            Err(_) => {
                return Err(fail(format!(
                    "connect timed out after {}s",
                    self.connect_timeout.as_secs()
                )));
            }
            Ok(Err(e)) => {
                let refused = verdict.lock().expect("verdict").take();
                return Err(fail(refused.unwrap_or_else(|| describe(&e))));
            }
            Ok(Ok(h)) => h,
        };
        let auth =
            tokio::time::timeout(self.connect_timeout, self.authenticate(&mut handle, target));
        match auth.await {
            Err(_) => return Err(fail("authentication timed out".into())),
            Ok(Err(e)) => return Err(fail(format!("{e:#}"))),
            Ok(Ok(())) => {}
        }
        Ok(Session {
            handle,
            user: target.user.clone(),
            channels: AtomicUsize::new(0),
        })
    }

    async fn authenticate(&self, handle: &mut Handle<Checker>, target: &Target) -> Result<()> {
        let user = target.user.as_str();
        if target.key_files.is_empty()
            && let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await
        {
            for id in agent.request_identities().await.unwrap_or_default() {
                let key = id.public_key().into_owned();
                let hash = rsa_hash(handle, key.algorithm()).await?;
                if let Ok(r) = handle
                    .authenticate_publickey_with(user, key, hash, &mut agent)
                    .await
                    && r.success()
                {
                    return Ok(());
                }
            }
        }
        let files = if target.key_files.is_empty() {
            default_key_files()
        } else {
            target.key_files.clone()
        };
        let mut tried = Vec::new();
        for path in files {
            if target.key_files.is_empty() && !path.exists() {
                continue;
            }
            let key = self.key(&path)?;
            let hash = rsa_hash(handle, key.algorithm()).await?;
            let r = handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
                .await?;
            if r.success() {
                return Ok(());
            }
            tried.push(path.display().to_string());
        }
        if tried.is_empty() {
            bail!(
                "no key to log in as {user}: set ansible_ssh_private_key_file or load a key into ssh-agent"
            );
        }
        bail!(
            "{user}@{} refused the key(s) {}",
            target.address,
            tried.join(", ")
        )
    }
}

/// RSA keys need the SHA-2 signature that the server supports; `None`
/// would mean SHA-1 `ssh-rsa`, which OpenSSH ≥ 8.8 refuses.
async fn rsa_hash(
    handle: &Handle<Checker>,
    alg: Algorithm,
) -> Result<Option<russh::keys::HashAlg>> {
    if !alg.is_rsa() {
        return Ok(None);
    }
    Ok(handle.best_supported_rsa_hash().await?.flatten())
}

fn default_key_files() -> Vec<PathBuf> {
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    ["id_ed25519", "id_ecdsa", "id_rsa"]
        .iter()
        .map(|f| home.join(".ssh").join(f))
        .collect()
}

/// curve25519 first (cheap and universal); host key types already recorded
/// in known_hosts first, so a host known by its ECDSA key is not asked for
/// an Ed25519 one (which would look unknown).
fn preferred(known: &[Algorithm]) -> Preferred {
    let mut kex = vec![russh::kex::CURVE25519, russh::kex::CURVE25519_PRE_RFC_8731];
    kex.extend(
        Preferred::DEFAULT
            .kex
            .iter()
            .filter(|k| !kex.contains(k))
            .cloned()
            .collect::<Vec<_>>(),
    );
    let mut key: Vec<Algorithm> = known.to_vec();
    key.extend(
        Preferred::DEFAULT
            .key
            .iter()
            .filter(|a| !known.contains(a))
            .cloned(),
    );
    Preferred {
        kex: kex.into(),
        key: key.into(),
        ..Preferred::DEFAULT
    }
}

fn describe(e: &russh::Error) -> String {
    match e {
        russh::Error::IO(io) => format!("cannot connect: {io}"),
        other => format!("ssh: {other}"),
    }
}

/// Checks the server's key against known_hosts; records why it refused.
struct Checker {
    name: String,
    known_hosts: Arc<KnownHosts>,
    accept_new: bool,
    verdict: Arc<Mutex<Option<String>>>,
}

impl client::Handler for Checker {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.verdict.lock().expect("verdict") =
                Some("host certificates are not supported".into());
            return Ok(false);
        };
        let file = self.known_hosts.path.display();
        let refuse = |msg: String| {
            *self.verdict.lock().expect("verdict") = Some(msg);
            Ok(false)
        };
        match self.known_hosts.check(&self.name, key) {
            Verdict::Known => Ok(true),
            Verdict::Unknown if self.accept_new => match self.known_hosts.learn(&self.name, key) {
                Ok(()) => Ok(true),
                Err(e) => refuse(format!("cannot record the host key in {file}: {e}")),
            },
            Verdict::Unknown => refuse(format!(
                "host key refused: {} is not in {file} ({} {}); check the fingerprint, then run with --accept-new-host-keys or `ssh-keyscan` it into {file}",
                self.name,
                key.algorithm(),
                key.fingerprint(Default::default())
            )),
            Verdict::Changed { line } => refuse(format!(
                "host key refused: the key of {} has CHANGED (possible man-in-the-middle); it does not match {file} line {line}. If the host was reinstalled, remove that line (ssh-keygen -R {})",
                self.name, self.name
            )),
            Verdict::OtherTypesKnown { types } => refuse(format!(
                "host key refused: {file} has {} key(s) for {} but the server presented {}",
                types.join(", "),
                self.name,
                key.algorithm()
            )),
            Verdict::Revoked { line } => refuse(format!(
                "host key refused: the key of {} is revoked in {file} line {line}",
                self.name
            )),
        }
    }
}

pub struct Session {
    handle: Handle<Checker>,
    user: String,
    channels: AtomicUsize,
}

impl Session {
    pub fn channels(&self) -> usize {
        self.channels.load(Ordering::Relaxed)
    }

    pub async fn run(
        &self,
        script: &[u8],
        r#become: &Become,
        timeout: Duration,
    ) -> Result<ExecOutput> {
        let work = async {
            let channel = self
                .handle
                .channel_open_session()
                .await
                .context("opening a channel")?;
            self.channels.fetch_add(1, Ordering::Relaxed);
            channel
                .exec(true, command_line(r#become, &self.user))
                .await?;
            let (mut read, write) = channel.split();
            let write = Arc::new(write);
            let send_script = |write: Arc<russh::ChannelWriteHalf<client::Msg>>| {
                let script = script.to_vec();
                tokio::spawn(async move {
                    // The script may exit before reading all its input; that is not a failure.
                    let _ = write.data_bytes(script).await;
                    let _ = write.eof().await;
                })
            };
            let mut escalation = r#become.escalation(&self.user);
            let mut sender = escalation.is_none().then(|| send_script(write.clone()));
            let mut out = ExecOutput::default();
            while let Some(msg) = read.wait().await {
                let (data, to_stderr) = match msg {
                    ChannelMsg::Data { data } => (data.to_vec(), false),
                    ChannelMsg::ExtendedData { data, ext: 1 } => (data.to_vec(), true),
                    ChannelMsg::ExitStatus { exit_status } => {
                        out.status = Some(exit_status);
                        continue;
                    }
                    ChannelMsg::ExitSignal { signal_name, .. } => (
                        format!("killed by signal {signal_name:?}\n").into_bytes(),
                        true,
                    ),
                    _ => continue,
                };
                let Some((esc, password)) = escalation.as_mut() else {
                    out.push(&data, to_stderr);
                    continue;
                };
                match if to_stderr {
                    esc.on_stderr(&data)
                } else {
                    esc.on_stdout(&data)
                } {
                    Step::Wait => {}
                    Step::SendPassword => {
                        write
                            .data_bytes(format!("{password}\n").into_bytes())
                            .await?
                    }
                    Step::Escalated { output } => {
                        out.push(&output, false);
                        escalation = None;
                        sender = Some(send_script(write.clone()));
                    }
                    Step::Fail(why) => {
                        let _ = write.eof().await;
                        let _ = write.close().await;
                        bail!(why);
                    }
                }
            }
            if escalation.is_some() {
                bail!("sudo did not start the shell: {}", out.stderr_text());
            }
            if let Some(s) = sender {
                let _ = s.await;
            }
            let _ = write.close().await;
            Ok::<_, anyhow::Error>(out)
        };
        let out = tokio::time::timeout(timeout, work)
            .await
            .map_err(|_| anyhow!("timed out after {}s", timeout.as_secs()))??;
        if out.status.is_none() && self.handle.is_closed() {
            bail!("connection lost");
        }
        Ok(out)
    }

    pub async fn close(&self) {
        let _ = self
            .handle
            .disconnect(Disconnect::ByApplication, "", "en")
            .await;
    }
}
