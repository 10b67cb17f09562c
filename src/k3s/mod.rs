//! What khard knows about k3s, in one place: facts derived from a node's
//! version (era, benchmark), validation of the k3s config and manifests
//! khard writes, which unit-file flags defeat config.yaml, and the flags
//! every server of a cluster must agree on.
//!
//! Owns: k3s knowledge as pure functions. May not touch: hosts, the engine's
//! state or the report; the engine and modules call in.
pub mod config;
pub mod config_task;
#[cfg(test)]
mod conformance;
pub mod critical_flags;
pub mod domain;
pub mod facts;
pub mod kubelet_config;
pub mod launch;
pub mod node_cidrs;
pub mod unit_task;
pub mod validate;
pub mod version;

pub use domain::K3s;
