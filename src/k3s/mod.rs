//! What khard knows about k3s.
pub mod critical_flags;
pub mod facts;
pub mod unit;
pub mod validate;
