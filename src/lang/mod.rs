//! The small languages inside playbooks and inventories: `when:`
//! expressions, Handlebars templates, wildcard patterns, shell words.
//!
//! Owns: parsing and evaluating them, with errors that say which variable is
//! undefined ([`error::LangError`]). May not touch: files, hosts, or what a
//! task means; these are pure functions of text and variables.
pub mod error;
pub mod expr;
pub mod glob;
pub mod template;
pub mod words;
pub mod yaml11;
pub mod yaml_bounds;
