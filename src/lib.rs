//! khard: declarative, agentless hardening of k3s clusters to the CIS
//! Kubernetes Benchmark, over SSH. See docs/architecture.md for the map.
#![deny(unsafe_code)]

pub mod app;
pub mod cli;
pub mod engine;
pub mod error;
pub mod input;
pub mod k3s;
pub mod lang;
pub mod modules;
pub mod plan;
pub mod report;
pub mod settings;
#[cfg(test)]
pub mod testutil;
pub mod transport;
