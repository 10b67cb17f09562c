//! khard: declarative, agentless hardening of k3s clusters to the CIS
//! Kubernetes Benchmark, over SSH. docs/architecture.md maps the tree.
//!
//! The library exists for the `khard` binary and the fuzz targets. Its
//! public surface is what they use: the command line ([`cli`], resolved
//! into [`settings`]), the two commands ([`app`]), exit codes and input
//! errors ([`error`]), and the parsers of user input ([`input`], [`lang`],
//! and [`fuzz`] for those that are otherwise private).
//! Everything else is private to the crate.
#![deny(unsafe_code)]

pub mod app;
mod audit;
pub mod cli;
mod domain;
mod engine;
pub mod error;
mod facts;
#[doc(hidden)]
pub mod fuzz;
pub mod input;
mod k3s;
pub mod lang;
mod layered_vars;
mod modules;
mod plan;
mod report;
mod secrets;
pub mod settings;
mod shell;
pub mod terminal;
#[cfg(test)]
mod testutil;
mod transport;
