//! Handlers notified but not yet run are state on the host, not memory: a
//! task that changes something and notifies a handler leaves a marker in
//! the same step as the change (`/var/lib/khard/pending/<id>`), and the
//! handler removes it only once it has run and passed its health gate. A
//! rollout that stopped (a failed gate, Ctrl-C, a lost connection) is then
//! still known at the next run: the probe finds the marker, `--check`
//! reports the handler as pending (drift), and `apply` finishes the rollout
//! through the same gate.

use serde_json::{Map, Value};

use crate::facts::{Probe, RemoteState};
use crate::input::playbook::{Play, Task};
use crate::shell::quote;

/// Where the markers live on a host.
const DIR: &str = crate::facts::PENDING_DIR;

/// The marker of one handler of one play.
pub fn marker(play: &Play, handler: &Task) -> String {
    let id = crate::facts::sha256_hex(format!("{}\0{}", play.name, handler.name).as_bytes());
    format!("{DIR}/{}", &id[..16])
}

/// Shell that records the handlers `task` notifies as pending, those whose
/// `when:` holds for the host (a handler that will not run there is owed
/// nothing). Best effort: a run without the rights to write there (a
/// playbook that needs no root) only loses the memory of an interrupted
/// rollout, never the task.
pub fn mark(play: &Play, task: &Task, vars: &Map<String, Value>) -> String {
    let mut s = String::new();
    let runs = |h: &&Task| task.notify.contains(&h.name) && !super::diff::when_known_false(h, vars);
    for h in play.handlers.iter().filter(runs) {
        s.push_str(&format!(
            "\n{{ {{ [ -d {dir} ] || mkdir -p {dir}; }} && printf '%s\\n' {name} >{path}; }} 2>/dev/null || :",
            dir = quote(DIR),
            name = quote(&h.name),
            path = quote(&marker(play, h)),
        ));
    }
    s
}

/// Shell that clears a handler's marker once it has run and is healthy.
pub fn clear(play: &Play, handler: &Task) -> String {
    format!("\nrm -f -- {}", quote(&marker(play, handler)))
}

/// Asks the probe about every handler's marker.
pub fn probe(play: &Play, probe: &mut Probe) {
    probe
        .stat
        .extend(play.handlers.iter().map(|h| marker(play, h)));
}

/// The handlers a host still owes from an earlier run, by index.
pub fn pending(play: &Play, state: &RemoteState) -> Vec<usize> {
    play.handlers
        .iter()
        .enumerate()
        .filter(|(_, h)| state.stat.contains_key(&marker(play, h)))
        .map(|(i, _)| i)
        .collect()
}
