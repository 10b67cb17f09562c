//! Why a host dropped out of a play segment before its tasks were decided.

use std::fmt;

/// A host-level failure of the engine: the host is reported unreachable
/// with this message and takes no further part in the run.
#[derive(Debug, Clone, PartialEq)]
pub enum HostError {
    /// The host has no live connection (it was never reached, or was lost).
    NotConnected,
    /// The exec could not be run or finished: the connection failed.
    Exec { what: &'static str, cause: String },
    /// The probe's output was cut at the output limit: what came back cannot
    /// be trusted to describe the host.
    ProbeTruncated,
    /// The probe ran but its output could not be read back.
    ProbeUnreadable { status: Option<u32>, stderr: String },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NotConnected => f.write_str("not connected"),
            HostError::Exec { what, cause } => write!(f, "{what}: {cause}"),
            HostError::ProbeTruncated => f.write_str("probe output exceeded the limit"),
            HostError::ProbeUnreadable { status, stderr } => {
                let err = if stderr.is_empty() {
                    "no output"
                } else {
                    stderr
                };
                write!(f, "probe failed (exit {status:?}): {err}")
            }
        }
    }
}

impl std::error::Error for HostError {}

/// A [`HostError`] with the host it happened on.
#[derive(Debug, Clone)]
pub struct HostFailure {
    pub host: String,
    pub error: HostError,
}
