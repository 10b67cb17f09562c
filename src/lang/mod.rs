//! The small languages inside playbooks and inventories.
pub mod expr;
pub mod glob;
pub mod template;
