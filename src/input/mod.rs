//! What the user gives khard: inventories, playbooks and roles, read from
//! disk (or from the copy built into the binary) into plain data.
pub mod inventory;
pub mod playbook;
pub mod source;
pub mod yaml;
