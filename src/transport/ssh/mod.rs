//! The SSH transport, on russh: one connection per host, host keys checked
//! against known_hosts (`known_hosts`), the user's ssh_config (`config`),
//! auth by ssh-agent and private key files (each key decrypted once per
//! run), jump hosts (ProxyJump) over direct-tcpip with the target's key
//! checked under the target's own name, and an exec that streams the script
//! on stdin. May not touch anything above the transport.

pub mod config;
pub mod known_hosts;
pub mod names;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use russh::client::{self, Handle};
use russh::keys::{Algorithm, PrivateKey, PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use russh::{ChannelMsg, Disconnect, Preferred};

use super::sudo::{Exec, Piece, drive};
use super::{Become, ExecOutput, Watch, command_line};
use crate::error::InputError;
use crate::shell::quote;
use crate::transport::ssh::known_hosts::{KnownHosts, Verdict, host_key_name};

/// Where and as whom to connect.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The inventory name (or the ssh config alias of a jump host), for messages.
    pub name: String,
    pub address: String,
    pub port: u16,
    pub user: String,
    /// Key files; none means ssh-agent and the usual ~/.ssh/id_* files.
    pub key_files: Vec<PathBuf>,
    /// Only the key files, not the agent's other keys (IdentitiesOnly).
    pub identities_only: bool,
    /// Jump hosts, first hop first (ProxyJump).
    pub jumps: Vec<Target>,
    /// A command whose stdin/stdout carry the connection (ProxyCommand; %h %p %r expanded).
    pub proxy_command: Option<String>,
    /// known_hosts of this host (ssh config UserKnownHostsFile), unless --known-hosts is given.
    pub known_hosts: Option<PathBuf>,
    /// From ssh config StrictHostKeyChecking: accept-new (or no) learns unknown keys.
    pub accept_new: bool,
    pub connect_timeout: Option<Duration>,
    pub keepalive: Option<Duration>,
}

/// What every connection of a run shares.
pub struct SshContext {
    /// --known-hosts: used for every host when given.
    forced_known_hosts: Option<PathBuf>,
    default_known_hosts: PathBuf,
    known_hosts: Mutex<HashMap<PathBuf, Arc<KnownHosts>>>,
    pub accept_new: bool,
    pub connect_timeout: Duration,
    /// Keys are decrypted once per run, not once per host.
    keys: Mutex<HashMap<PathBuf, Arc<PrivateKey>>>,
    /// Jump host connections, shared by every target behind them.
    jumps: tokio::sync::Mutex<HashMap<String, Arc<Handle<Checker>>>>,
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
    pub fn new(
        forced_known_hosts: Option<PathBuf>,
        accept_new: bool,
        connect_timeout: Duration,
    ) -> Result<SshContext> {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_default();
        let ctx = SshContext {
            forced_known_hosts,
            default_known_hosts: home.join(".ssh/known_hosts"),
            known_hosts: Mutex::new(HashMap::new()),
            accept_new,
            connect_timeout,
            keys: Mutex::new(HashMap::new()),
            jumps: tokio::sync::Mutex::new(HashMap::new()),
        };
        if let Some(p) = &ctx.forced_known_hosts {
            ctx.known_hosts_file(p)
                .map_err(|e| crate::error::InputError::new(format!("{}: {e}", p.display())))?;
        }
        Ok(ctx)
    }

    /// Each known_hosts file is parsed once per run.
    fn known_hosts_file(&self, path: &Path) -> std::io::Result<Arc<KnownHosts>> {
        let mut files = self.known_hosts.lock().expect("known_hosts files");
        if let Some(k) = files.get(path) {
            return Ok(k.clone());
        }
        let k = Arc::new(KnownHosts::load(path)?);
        files.insert(path.to_owned(), k.clone());
        Ok(k)
    }

    fn known_hosts_for(&self, target: &Target) -> Result<Arc<KnownHosts>, String> {
        let path = self
            .forced_known_hosts
            .clone()
            .or_else(|| target.known_hosts.clone())
            .unwrap_or_else(|| self.default_known_hosts.clone());
        self.known_hosts_file(&path)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Loads every key file the targets name, asking passphrases now: on
    /// the terminal, before any connection (and any progress display) starts,
    /// and outside every connect timeout. Skipped when an ssh-agent is there
    /// to answer instead (it is asked first at connect time).
    pub fn preload_keys<'a>(&self, targets: impl IntoIterator<Item = &'a Target>) -> Result<()> {
        if std::env::var_os("SSH_AUTH_SOCK").is_some() {
            return Ok(());
        }
        for t in targets {
            for path in t.jumps.iter().chain([t]).flat_map(|t| &t.key_files) {
                // A key file that is not there is that host's problem, found
                // when it connects (unreachable, as Ansible has it); the
                // others proceed.
                if !path.exists() {
                    continue;
                }
                self.key(path)?;
            }
        }
        Ok(())
    }

    fn key(&self, path: &Path) -> Result<Arc<PrivateKey>> {
        /// Largest private key file read (an RSA-16384 key is about 13 KiB).
        const MAX_KEY_BYTES: u64 = 1 << 20;
        if let Some(k) = self.keys.lock().expect("key cache").get(path) {
            return Ok(k.clone());
        }
        // A private key is a small regular file: not /dev/zero, not a FIFO.
        let meta = std::fs::metadata(path)
            .map_err(|e| InputError::new(format!("private key {}: {e}", path.display())))?;
        if !meta.is_file() || meta.len() > MAX_KEY_BYTES {
            return Err(InputError::new(format!(
                "private key {}: not a regular file of at most {} KiB",
                path.display(),
                MAX_KEY_BYTES >> 10
            ))
            .into());
        }
        let key = match russh::keys::load_secret_key(path, None) {
            Ok(k) => k,
            Err(russh::keys::Error::KeyIsEncrypted) => {
                // Asked once per key file per run, on the terminal; ssh-agent avoids the question.
                let prompt = format!("Enter passphrase for key {}: ", path.display());
                // Both are the operator's setup, found before any host is contacted: exit 5.
                let pass = rpassword::prompt_password(prompt).map_err(|_| {
                    InputError::new(format!("{} is encrypted and there is no terminal to ask its passphrase: load it into ssh-agent (ssh-add {})", path.display(), path.display()))
                })?;
                russh::keys::load_secret_key(path, Some(&pass)).map_err(|e| {
                    InputError::new(format!("cannot decrypt {}: {e}", path.display()))
                })?
            }
            Err(other) => bail!("cannot load private key {}: {other}", path.display()),
        };
        let key = Arc::new(key);
        self.keys
            .lock()
            .expect("key cache")
            .insert(path.to_owned(), key.clone());
        Ok(key)
    }

    fn config(&self, target: &Target, known: &KnownHosts, name: &str) -> Arc<client::Config> {
        Arc::new(client::Config {
            nodelay: true,
            keepalive_interval: Some(target.keepalive.unwrap_or(Duration::from_secs(15))),
            keepalive_max: 3,
            inactivity_timeout: None,
            preferred: preferred(&known.known_algorithms(name)),
            ..client::Config::default()
        })
    }

    /// The key checker for a target, named as known_hosts knows it.
    fn checker(&self, target: &Target) -> Result<(Checker, Arc<KnownHosts>), String> {
        let known = self.known_hosts_for(target)?;
        let checker = Checker {
            name: host_key_name(&target.address, target.port),
            known_hosts: known.clone(),
            accept_new: self.accept_new || target.accept_new,
            verdict: Arc::new(Mutex::new(None)),
            seen: Arc::new(Mutex::new(None)),
        };
        Ok((checker, known))
    }

    pub async fn connect(&self, target: &Target) -> Result<Session, ConnectError> {
        let fail = |msg: String| ConnectError(format!("{}: {msg}", target.name));
        let via = match target.jumps.is_empty() {
            true => None,
            false => Some(
                self.jump_chain(&target.jumps)
                    .await
                    .map_err(|e| fail(format!("jump host: {e}")))?,
            ),
        };
        let (handle, how) = self.open(target, via.as_deref()).await.map_err(fail)?;
        let chain: Vec<String> = target
            .jumps
            .iter()
            .map(|j| format!("{}@{}:{}", j.user, j.address, j.port))
            .collect();
        let via_text = if chain.is_empty() {
            String::new()
        } else {
            format!(", via {}", chain.join(" -> "))
        };
        let proxy = target
            .proxy_command
            .as_deref()
            .map(|p| format!(", ProxyCommand `{p}`"))
            .unwrap_or_default();
        Ok(Session {
            handle,
            _via: via,
            user: target.user.clone(),
            channels: AtomicUsize::new(0),
            description: format!(
                "{}@{}:{}, {how}{via_text}{proxy}",
                target.user, target.address, target.port
            ),
        })
    }

    /// Connects and authenticates to `target`, directly or through `via`.
    async fn open(
        &self,
        target: &Target,
        via: Option<&Handle<Checker>>,
    ) -> Result<(Handle<Checker>, String), String> {
        let (checker, known) = self.checker(target)?;
        let verdict = checker.verdict.clone();
        let seen = checker.seen.clone();
        let config = self.config(target, &known, &checker.name);
        let timeout = target.connect_timeout.unwrap_or(self.connect_timeout);
        let connected = async {
            match via {
                None if target.proxy_command.is_some() => {
                    let stream = proxy_stream(target).map_err(russh::Error::IO)?;
                    client::connect_stream(config, stream, checker).await
                }
                None => {
                    client::connect(config, (target.address.as_str(), target.port), checker).await
                }
                Some(jump) => {
                    let ch = jump
                        .channel_open_direct_tcpip(
                            target.address.clone(),
                            u32::from(target.port),
                            "127.0.0.1",
                            0,
                        )
                        .await?;
                    client::connect_stream(config, ch.into_stream(), checker).await
                }
            }
        };
        let mut handle = match tokio::time::timeout(timeout, connected).await {
            Err(_) => {
                return Err(format!(
                    "connect to {}:{} timed out after {}s",
                    target.address,
                    target.port,
                    timeout.as_secs()
                ));
            }
            Ok(Err(e)) => {
                return Err(verdict
                    .lock()
                    .expect("verdict")
                    .take()
                    .unwrap_or_else(|| describe(&e, target)));
            }
            Ok(Ok(h)) => h,
        };
        match tokio::time::timeout(timeout, self.authenticate(&mut handle, target)).await {
            Err(_) => Err("authentication timed out".into()),
            Ok(Err(e)) => Err(format!("{e:#}")),
            Ok(Ok(key)) => {
                let host_key = seen.lock().expect("seen").take().unwrap_or_default();
                Ok((handle, format!("{key}, host key {host_key}")))
            }
        }
    }

    /// The last hop of a jump chain, connected through the hops before it;
    /// shared by every target behind the same chain.
    async fn jump_chain(&self, hops: &[Target]) -> Result<Arc<Handle<Checker>>, String> {
        let mut cache = self.jumps.lock().await;
        let mut via: Option<Arc<Handle<Checker>>> = None;
        for (i, hop) in hops.iter().enumerate() {
            let key: Vec<String> = hops[..=i]
                .iter()
                .map(|h| format!("{}@{}:{}", h.user, h.address, h.port))
                .collect();
            let key = key.join(",");
            let next = match cache.get(&key).filter(|h| !h.is_closed()) {
                Some(h) => h.clone(),
                None => {
                    let h = Arc::new(
                        self.open(hop, via.as_deref())
                            .await
                            .map_err(|e| format!("{}: {e}", hop.name))?
                            .0,
                    );
                    cache.insert(key, h.clone());
                    h
                }
            };
            via = Some(next);
        }
        via.ok_or_else(|| "empty jump list".into())
    }

    /// Logs in; returns which key did it (for -vvv).
    async fn authenticate(&self, handle: &mut Handle<Checker>, target: &Target) -> Result<String> {
        let user = target.user.as_str();
        let use_agent = target.key_files.is_empty() || !target.identities_only;
        if use_agent
            && let Ok(mut agent) = russh::keys::agent::client::AgentClient::connect_env().await
        {
            for id in agent.request_identities().await.unwrap_or_default() {
                let key = id.public_key().into_owned();
                let hash = rsa_hash(handle, key.algorithm()).await?;
                let what = format!(
                    "ssh-agent key {} {}",
                    key.algorithm(),
                    key.fingerprint(russh::keys::HashAlg::Sha256)
                );
                if let Ok(r) = handle
                    .authenticate_publickey_with(user, key, hash, &mut agent)
                    .await
                    && r.success()
                {
                    return Ok(what);
                }
            }
        }
        let (files, optional) = match target.key_files.is_empty() {
            true => (default_key_files(), true),
            false => (target.key_files.clone(), false),
        };
        let mut tried = Vec::new();
        for path in files {
            if optional && !path.exists() {
                continue;
            }
            let key = self.key(&path)?;
            let hash = rsa_hash(handle, key.algorithm()).await?;
            let r = handle
                .authenticate_publickey(user, PrivateKeyWithHashAlg::new(key, hash))
                .await?;
            if r.success() {
                return Ok(format!("key {}", path.display()));
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

/// Starts a ProxyCommand (`sh -c`, with %h %p %r expanded) and returns its
/// stdout and stdin as one stream; it lives as long as the connection does.
fn proxy_stream(
    target: &Target,
) -> std::io::Result<impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> {
    let template = target.proxy_command.as_deref().unwrap_or_default();
    let mut cmd = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('%', Some(x @ ('h' | 'p' | 'r' | '%'))) => {
                chars.next();
                // Quoted, on top of the names' validation at plan time: a
                // token never becomes shell syntax.
                match x {
                    'h' => cmd.push_str(&quote(&target.address)),
                    'p' => cmd.push_str(&target.port.to_string()),
                    'r' => cmd.push_str(&quote(&target.user)),
                    _ => cmd.push('%'),
                }
            }
            _ => cmd.push(c),
        }
    }
    let mut child = tokio::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let (stdin, stdout) = (
        child.stdin.take().expect("piped"),
        child.stdout.take().expect("piped"),
    );
    // Reap the proxy when it ends (it ends when the connection closes its stdin).
    tokio::spawn(async move {
        let _ = child.wait().await;
    });
    Ok(tokio::io::join(stdout, stdin))
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

fn describe(e: &russh::Error, target: &Target) -> String {
    let (a, p) = (&target.address, target.port);
    match e {
        russh::Error::IO(io) => format!("cannot connect to {a}:{p}: {io}"),
        other => format!("ssh to {a}:{p}: {other}"),
    }
}

/// Checks the server's key against known_hosts; records why it refused.
struct Checker {
    name: String,
    known_hosts: Arc<KnownHosts>,
    accept_new: bool,
    verdict: Arc<Mutex<Option<String>>>,
    /// The fingerprint of the key the server presented (shown with -vvv).
    seen: Arc<Mutex<Option<String>>>,
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
        *self.seen.lock().expect("seen") = Some(format!(
            "{} {}",
            key.algorithm(),
            key.fingerprint(russh::keys::HashAlg::Sha256)
        ));
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
                "host key refused: the key of {} has CHANGED (possible man-in-the-middle); it does not match {file} line {line}. If the host was reinstalled, remove that line (ssh-keygen -f {file} -R {})",
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
    /// The jump host connection this session runs through, kept open while it lives.
    _via: Option<Arc<Handle<Checker>>>,
    user: String,
    channels: AtomicUsize,
    /// Address, user, key, host key and jump chain (shown with -vvv).
    pub description: String,
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
        watch: Watch<'_>,
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
            let (read, write) = channel.split();
            let mut exec = ChannelExec {
                read,
                write: Arc::new(write),
                sender: None,
            };
            let out = drive(&mut exec, script, r#become.escalation(&self.user), watch).await?;
            if let Some(s) = exec.sender.take() {
                let _ = s.await;
            }
            let _ = exec.write.close().await;
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

/// One SSH channel as an [`Exec`].
struct ChannelExec {
    read: russh::ChannelReadHalf,
    write: Arc<russh::ChannelWriteHalf<client::Msg>>,
    sender: Option<tokio::task::JoinHandle<()>>,
}

impl Exec for ChannelExec {
    async fn next(&mut self) -> Result<Option<Piece>> {
        while let Some(msg) = self.read.wait().await {
            return Ok(Some(match msg {
                ChannelMsg::Data { data } => Piece::Stdout(data.to_vec()),
                ChannelMsg::ExtendedData { data, ext: 1 } => Piece::Stderr(data.to_vec()),
                ChannelMsg::ExitStatus { exit_status } => Piece::Exit(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => {
                    Piece::Stderr(format!("killed by signal {signal_name:?}\n").into_bytes())
                }
                _ => continue,
            }));
        }
        Ok(None)
    }

    async fn write(&mut self, data: &[u8]) -> Result<()> {
        Ok(self.write.data_bytes(data.to_vec()).await?)
    }

    fn send_script(&mut self, script: Vec<u8>) {
        let write = self.write.clone();
        self.sender = Some(tokio::spawn(async move {
            // The script may exit before reading all its input; that is not a failure.
            let _ = write.data_bytes(script).await;
            let _ = write.eof().await;
        }));
    }

    async fn abort(&mut self) {
        let _ = self.write.eof().await;
        let _ = self.write.close().await;
    }
}
