//! Command-line definitions only; [`crate::settings`] turns them into the
//! settings the rest of khard uses, so nothing downstream sees clap.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub const EXIT_CODES: &str = "\
Exit codes:
  0    success: every host ok; with --check, nothing would change
  2    --check found drift: changes are pending
  3    a task failed on at least one host
  4    a host was unreachable, or its host key was refused
  5    invalid input (flags, inventory, playbook, role or template); no host was contacted
  130  interrupted (Ctrl-C)";

#[derive(Parser, Debug)]
#[command(
    name = "khard",
    version,
    about = "Harden k3s clusters to the CIS Kubernetes Benchmark, agentless, over SSH",
    after_help = EXIT_CODES
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Apply a playbook (the built-in CIS playbook by default) to the inventory's hosts
    #[command(after_help = concat!(
        "Examples:\n",
        "  khard apply --check -i inventories/localhost.yaml          # show the plan for this machine\n",
        "  khard apply -i inventory.yaml                               # harden every node\n",
        "  khard apply -i inventory.yaml --check --diff --junit r.xml  # CI drift check\n",
        "  khard apply -i inventory.yaml site.yaml --limit 'server:!s3' --forks 50\n\n",
        "Exit codes: 0 ok (no drift), 2 drift (--check), 3 a task failed, 4 unreachable or host key refused,\n",
        "5 invalid input (nothing contacted), 130 interrupted",
    ))]
    Apply(ApplyArgs),

    /// CIS compliance per node: every control of the node's benchmark, judged from evidence read on the node (changes nothing)
    #[command(
        after_help = "Verdicts: pass, fail (scored), warn (unscored), accepted (an exception), manual, not applicable (with why), unknown (the evidence could not be read; never counted as pass).\n\
                      Exit codes: 0 the gate (--fail-on) passes, 2 it does not, 4 a host is unreachable, 5 bad input"
    )]
    Report(ReportArgs),

    /// Print a shell completion script: khard completions bash > /etc/bash_completion.d/khard
    /// The hosts, groups and variables as khard resolves them, in ansible-inventory's shapes (secrets masked)
    #[command(after_help = concat!(
        "Examples:\n",
        "  khard inventory -i inventory.yaml --graph\n",
        "  khard inventory -i inventory.yaml --host s1          # one host's variables\n",
        "  khard inventory -i inventory.yaml --list site.yaml   # with the playbook's group_vars/ and host_vars/",
    ))]
    Inventory(InventoryCommandArgs),

    /// Joins the JSON documents of a run's shards (--shard K/N) into one: one recap and exit code, or one compliance report
    #[command(after_help = concat!(
        "Examples:\n",
        "  khard merge shard-*.json                         # the recap of the whole fleet; exit code as one run\n",
        "  khard merge --format html -o report.html r*.json # the compliance report of every shard",
    ))]
    Merge(MergeArgs),

    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Where the hosts and what to run on them come from (every command).
#[derive(Args, Debug, Clone)]
pub struct InventoryArgs {
    /// Inventory: a file (YAML or INI), a folder of them, or `host1,host2,`;
    /// may be given more than once; default: ANSIBLE_INVENTORY or ansible.cfg's inventory
    #[arg(short, long, value_name = "FILE")]
    pub inventory: Vec<PathBuf>,

    /// Playbook file; without one, khard runs its built-in CIS hardening playbook
    #[arg(value_name = "PLAYBOOK")]
    pub playbook: Option<PathBuf>,

    /// Only these hosts: names, groups, globs; `a:b` union, `a:!b` exclusion, `a:&b` intersection
    #[arg(short, long, value_name = "PATTERN")]
    pub limit: Option<String>,

    /// Let --limit terms that match no host pass (by default each is an error)
    #[arg(long)]
    pub allow_empty_limit: bool,

    /// Extra variables, highest precedence: key=value, a YAML/JSON mapping, or @file.yaml
    #[arg(short, long = "extra-vars", value_name = "VARS")]
    pub extra_vars: Vec<String>,

    /// Only shard K of N of the hosts (stable by host name): N CI jobs, one shard each; `khard merge` joins their JSON
    #[arg(long, value_name = "K/N", value_parser = parse_shard)]
    pub shard: Option<(u32, u32)>,
}

/// `--shard K/N`: 1 <= K <= N.
fn parse_shard(s: &str) -> Result<(u32, u32), String> {
    let (k, n) = s
        .split_once('/')
        .ok_or_else(|| format!("`{s}` is not K/N (e.g. 2/3)"))?;
    let (k, n): (u32, u32) = (
        k.trim()
            .parse()
            .map_err(|_| format!("`{k}` is not a shard number"))?,
        n.trim()
            .parse()
            .map_err(|_| format!("`{n}` is not a number of shards"))?,
    );
    if n == 0 || k == 0 || k > n {
        return Err(format!("shard {k} of {n}: K counts from 1 to N"));
    }
    Ok((k, n))
}

/// How hosts are reached and logged in to (every command).
#[derive(Args, Debug, Clone)]
pub struct ConnectionArgs {
    /// How many hosts to work on at once (default 100, or ANSIBLE_FORKS / ansible.cfg's forks)
    #[arg(short, long, value_name = "N")]
    pub forks: Option<usize>,

    /// OpenSSH client config to read instead of ~/.ssh/config
    #[arg(short = 'F', long = "ssh-config", value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// known_hosts file to check host keys against
    #[arg(long, value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Trust and record the key of a host not yet in known_hosts (a changed key is always refused)
    #[arg(long)]
    pub accept_new_host_keys: bool,

    /// Run remote commands through sudo (sudo -n)
    #[arg(short, long = "become")]
    pub r#become: bool,

    /// Ask for the sudo password once (implies --become); it is sent on stdin only
    #[arg(short = 'K', long)]
    pub ask_become_pass: bool,

    /// Seconds to wait for a host to accept the connection and authenticate (Ansible's -T;
    /// default 10, or ANSIBLE_TIMEOUT / ansible.cfg's timeout)
    #[arg(short = 'T', long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,

    /// Log in as this user where the inventory sets none (Ansible's -u, remote_user)
    #[arg(short = 'u', long = "user", value_name = "USER")]
    pub remote_user: Option<String>,

    /// Private key file where the inventory sets none (Ansible's --private-key)
    #[arg(long = "private-key", alias = "key-file", value_name = "FILE")]
    pub private_key: Option<PathBuf>,

    /// Connection type where the inventory sets none: ssh or local (Ansible's -c)
    #[arg(short = 'c', long = "connection", value_name = "TYPE")]
    pub connection: Option<String>,

    /// Become this user instead of root (Ansible's --become-user)
    #[arg(long, value_name = "USER")]
    pub become_user: Option<String>,

    /// Seconds one remote exec may take before the host fails
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub timeout: u64,
}

/// ansible-vault passwords (every command).
#[derive(Args, Debug, Clone)]
pub struct VaultArgs {
    /// Ask for the ansible-vault password once (for `!vault` values and encrypted vars files)
    #[arg(long, alias = "ask-vault-password")]
    pub ask_vault_pass: bool,

    /// File holding the ansible-vault password, or an executable that prints it (repeatable)
    #[arg(long, value_name = "FILE")]
    pub vault_password_file: Vec<PathBuf>,

    /// A vault id and where its password comes from: `label@FILE`, `label@prompt`, or `FILE` (repeatable)
    #[arg(long, value_name = "[LABEL@]SOURCE")]
    pub vault_id: Vec<String>,
}

/// What is printed for people (every command).
#[derive(Args, Debug, Clone)]
pub struct OutputArgs {
    /// More detail: what changed and remote output
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Colours: auto (a terminal, and NO_COLOR unset), always, never
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    pub color: Color,

    /// Print only the recap
    #[arg(short, long)]
    pub quiet: bool,
}

/// `khard apply`: the shared groups and what only applying means.
#[derive(Args, Debug, Clone)]
pub struct ApplyArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub output: OutputArgs,

    /// Probe and compare only: change nothing, report what would change
    #[arg(short = 'C', long)]
    pub check: bool,

    /// Show a unified diff of every file that (would) change
    #[arg(short = 'D', long)]
    pub diff: bool,

    /// Only tasks with these tags or CIS control IDs (comma-separated)
    #[arg(short, long, value_delimiter = ',', value_name = "TAGS")]
    pub tags: Vec<String>,

    /// Skip tasks with these tags or CIS control IDs (comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "TAGS")]
    pub skip_tags: Vec<String>,

    /// Start at the first task with this name; earlier tasks are skipped (Ansible's --start-at-task)
    #[arg(long, value_name = "NAME")]
    pub start_at_task: Option<String>,

    /// Agents restarted at once in a rolling restart: a number or a percentage (sets k3s_agent_batch)
    #[arg(long, value_name = "N|N%")]
    pub agent_batch: Option<String>,

    /// Run notified handlers even on hosts where a later task failed
    #[arg(long)]
    pub force_handlers: bool,

    /// Also write a JUnit XML report to this file
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// List the hosts each play would run on, then exit
    #[arg(long)]
    pub list_hosts: bool,

    /// List the tasks of each play, then exit
    #[arg(long)]
    pub list_tasks: bool,

    /// List the tags of each play's tasks, then exit
    #[arg(long)]
    pub list_tags: bool,

    /// Check inventory, playbook, roles and templates without connecting, then exit
    #[arg(long)]
    pub syntax_check: bool,

    /// Output format on stdout
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
}

/// `khard merge`: the shards' documents and what to write.
#[derive(Args, Debug, Clone)]
pub struct MergeArgs {
    /// The JSON documents (`khard apply|report --format json`) of every shard
    #[arg(value_name = "FILE", required = true)]
    pub files: Vec<PathBuf>,

    /// Output format: human text, one JSON document, or (a report) one HTML page
    #[arg(long, value_enum, default_value_t = ReportFormat::Human)]
    pub format: ReportFormat,

    /// Write to FILE instead of stdout
    #[arg(short, long = "output", value_name = "FILE")]
    pub output_file: Option<PathBuf>,

    /// Also write JUnit XML
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// For reports: what makes the merge exit 2 (as `khard report --fail-on`)
    #[arg(long, value_enum, default_value_t = FailOn::Scored, value_name = "LEVEL")]
    pub fail_on: FailOn,
}

/// `khard inventory`: what to show (one of --list, --host, --graph).
#[derive(Args, Debug, Clone)]
#[command(group = clap::ArgGroup::new("view").required(true).args(["list", "host", "graph"]))]
pub struct InventoryCommandArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub vault: VaultArgs,

    /// Every group and host, with each host's variables (ansible-inventory --list)
    #[arg(long)]
    pub list: bool,

    /// One host's variables (ansible-inventory --host)
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// The groups as a tree (ansible-inventory --graph)
    #[arg(long)]
    pub graph: bool,

    /// Also read group_vars/ and host_vars/ of this folder, as a playbook's (ansible-inventory --playbook-dir)
    #[arg(long, value_name = "DIR")]
    pub playbook_dir: Option<PathBuf>,
}

/// `khard report`: the shared groups and where the report goes.
#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    #[command(flatten)]
    pub inventory: InventoryArgs,
    #[command(flatten)]
    pub connection: ConnectionArgs,
    #[command(flatten)]
    pub vault: VaultArgs,
    #[command(flatten)]
    pub output: OutputArgs,

    /// Report format: human text, one JSON document, or one self-contained HTML page
    #[arg(long, value_enum, default_value_t = ReportFormat::Human)]
    pub format: ReportFormat,

    /// Write the report to FILE instead of stdout
    #[arg(short, long = "output", value_name = "FILE")]
    pub output_file: Option<PathBuf>,

    /// Accepted exceptions (YAML: control, nodes, reason, expires, accepted_by): their failing controls become ACCEPTED until they expire
    #[arg(long, value_name = "FILE")]
    pub exceptions: Option<PathBuf>,

    /// What makes the report exit 2: scored failures (FAIL), also unscored ones (WARN), also unknown verdicts
    #[arg(long, value_enum, default_value_t = FailOn::Scored, value_name = "LEVEL")]
    pub fail_on: FailOn,

    /// Also write the report as JUnit XML: one testcase per control and node
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
}

/// `khard report --fail-on`: each level includes the ones before it.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum FailOn {
    /// A scored control fails
    Scored,
    /// A scored or unscored control fails
    Warn,
    /// A control fails or could not be judged
    Unknown,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Color {
    Auto,
    Always,
    Never,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum Format {
    Human,
    Json,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq)]
pub enum ReportFormat {
    Human,
    Json,
    /// One self-contained page
    Html,
}

/// ansible-playbook flags that khard does not have, and what to do instead:
/// said plainly, instead of clap's nearest-name hint (which pointed `-k`
/// at nothing useful and `--ask-pass` at `--ask-become-pass`).
const ANSIBLE_ONLY: &[(&str, &str)] = &[
    (
        "-k",
        "password logins are not supported: khard logs in with keys (ssh-agent, --private-key, the ssh config)",
    ),
    (
        "--ask-pass",
        "password logins are not supported: khard logs in with keys (ssh-agent, --private-key, the ssh config)",
    ),
    (
        "--connection-password-file",
        "password logins are not supported: khard logs in with keys",
    ),
    (
        "--step",
        "khard has no interactive step mode: use --check --diff to see each change first",
    ),
    (
        "--flush-cache",
        "khard keeps no fact cache: every run probes the hosts",
    ),
    ("--syntax", "did you mean --syntax-check?"),
    (
        "-M",
        "khard has no module path: its modules are built in (docs/format.md)",
    ),
    (
        "--module-path",
        "khard has no module path: its modules are built in (docs/format.md)",
    ),
];

/// The message for an ansible-playbook flag khard lacks, if `args` hold one.
pub fn ansible_only_flag(args: &[String]) -> Option<String> {
    args.iter()
        .skip(1)
        .take_while(|a| *a != "--")
        .find_map(|a| {
            let flag = a.split('=').next().unwrap_or(a);
            ANSIBLE_ONLY
                .iter()
                .find(|(f, _)| *f == flag)
                .map(|(f, why)| {
                    format!("{f} is an ansible-playbook flag that khard does not have: {why}")
                })
        })
}
