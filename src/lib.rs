//! khard: declarative, agentless hardening of k3s clusters to the CIS
//! Kubernetes Benchmark, over SSH. See docs/format.md and the README.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod error;
pub mod expr;
pub mod facts;
pub mod glob;
pub mod inventory;
pub mod inventory_ini;
pub mod known_hosts;
pub mod limits;
pub mod modules;
pub mod pattern;
pub mod plan;
pub mod playbook;
pub mod probe;
pub mod report;
pub mod run;
pub mod script;
pub mod secrets;
pub mod settings;
pub mod source;
pub mod ssh_config;
pub mod template;
#[cfg(test)]
pub mod testutil;
pub mod transport;
pub mod validate;
pub mod yaml;
