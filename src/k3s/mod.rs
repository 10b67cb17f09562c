//! What khard knows about k3s.
pub mod facts;
pub mod validate;
