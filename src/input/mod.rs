//! Input: what the user gives khard, read into plain data. Inventories
//! (YAML and INI, `group_vars/`, `host_vars/`, `--limit` patterns),
//! playbooks and roles, from disk or from the copy built into the binary.
//!
//! Owns: reading files, YAML with file:line:col errors, the data model of
//! hosts, groups, plays and tasks. May not touch: the network, templates'
//! rendering for a host (that is `plan` and `engine`), or any k3s knowledge
//! beyond the variables it reads.
pub mod ansible_cfg;
pub mod exceptions;
pub mod inventory;
pub mod passwords;
pub mod playbook;
pub mod source;
pub mod vault;
pub mod yaml;
