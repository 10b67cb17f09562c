//! The one seam between the generic engine and planner and what khard is
//! for: k3s (`k3s::K3s` implements it). Through it the domain adds facts
//! (known from the inventory, or probed from a node), the fact sets a host
//! may turn out to have (so that every branch of the content is rendered
//! before any host is contacted), its checks on a host's variables, and its
//! check across the hosts of a run. The engine, the planner and the generic
//! modules know nothing else about k3s.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, Value};

use crate::facts::{Probe, RemoteState};
use crate::modules::Shared;
use crate::modules::error::TaskError;

pub type Vars = Map<String, Value>;

/// A host in the inventory, as the domain sees it before connecting.
pub struct InventoryHost<'a> {
    pub groups: &'a BTreeSet<String>,
    pub vars: &'a Vars,
}

/// What one host offers the check across hosts: its variables and what its
/// tasks shared (see [`crate::modules::ExtAction::shared`]).
pub struct HostShare<'a> {
    pub host: &'a str,
    pub vars: &'a Vars,
    pub shared: Vec<&'a Shared>,
}

pub trait Domain: Send + Sync {
    /// Variables known from the inventory alone (a host's role).
    fn inventory_facts(&self, host: &InventoryHost) -> Vars;

    /// Refuses, before any host is contacted, variables a play cannot run
    /// with on `host`; `used` names every variable the play reads. The
    /// message is whole (it names the host).
    fn check_host(&self, host: &str, vars: &Vars, used: &BTreeSet<String>) -> Result<(), String>;

    /// The variables the domain itself reads (beyond the tasks' templates):
    /// held to the same rules as those, e.g. no Jinja expression.
    fn variables(&self) -> &'static [&'static str] {
        &[]
    }

    /// Every variable set a host may have once probed, each with the
    /// domain's facts: the preflight renders every task under each.
    fn candidate_facts(&self, vars: &Vars) -> Vec<Vars>;

    /// Some set of facts, to render paths and guards before probing (they
    /// may not depend on probed facts; the engine checks that they did not).
    fn assumed_facts(&self, vars: &Vars) -> Vars;

    /// Adds the facts the domain reads on every node to a probe.
    fn probe_facts(&self, probe: &mut Probe);

    /// The variables with the facts the probe brought back; Err refuses
    /// the host before any of its tasks (what the node reported contradicts
    /// the inventory, or rules the host out), with the reason.
    fn with_facts(&self, vars: &Vars, state: &RemoteState) -> Result<Vars, String>;

    /// Names of the facts known only after probing.
    fn probed_facts(&self) -> &'static [&'static str];

    /// A clearer message for a task that failed because a probed fact is
    /// unknown on this host (None: the error says it well enough).
    fn explain(&self, vars: &Vars, error: &TaskError) -> Option<String>;

    /// Whether a task failed with `error` only because the node could not
    /// tell something it needs (check mode reports it unknown: drift that
    /// cannot be judged, not a failure).
    fn unknown_on_node(&self, _vars: &Vars, _error: &TaskError) -> bool {
        false
    }

    /// A label the report shows for the host (the benchmark it is numbered by).
    fn label(&self, vars: &Vars) -> Option<String>;

    /// Checks across the hosts of a play segment, from what their tasks
    /// shared: the hosts whose sharing tasks must fail, and why.
    fn check_across_hosts(&self, hosts: &[HostShare]) -> BTreeMap<String, String>;
}
