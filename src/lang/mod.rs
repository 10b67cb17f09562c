//! The small languages inside playbooks and inventories.
pub mod error;
pub mod expr;
pub mod glob;
pub mod template;
pub mod words;
