//! Why a host dropped out of a play segment before its tasks were decided.

use std::fmt;

/// A host-level failure of the engine: the host is reported unreachable
/// with this message and takes no further part in the run.
#[derive(Debug, Clone, PartialEq)]
pub enum HostError {
    /// The host could not be reached (the connection's own message).
    Connect(String),
    /// The exec could not be run or finished: the connection failed.
    Exec { what: &'static str, cause: String },
    /// The probe's output was cut at the output limit: what came back cannot
    /// be trusted to describe the host.
    ProbeTruncated,
    /// The probe ran but its output could not be read back.
    ProbeUnreadable { status: Option<u32>, stderr: String },
    /// A file the probe read changed size between its `stat` and its read:
    /// what came back is not one state of the host.
    ProbeRaced,
    /// The host answered, but sudo refused to run the script as the become
    /// user: a failure of the host's setup, not of the connection.
    BecomeRefused { stderr: String },
    /// What the host reported rules it out (the domain's word, e.g. the
    /// version it runs contradicts the inventory): nothing is run on it.
    Refused { why: String },
}

impl HostError {
    /// Reported as unreachable (the connection failed), or as failed.
    pub fn unreachable(&self) -> bool {
        !matches!(
            self,
            HostError::BecomeRefused { .. } | HostError::Refused { .. }
        )
    }

    /// What a failure that is not unreachable is reported as.
    pub fn what(&self) -> &'static str {
        match self {
            HostError::BecomeRefused { .. } => "become",
            _ => "facts",
        }
    }
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::Connect(why) => f.write_str(why),
            HostError::Exec { what, cause } => write!(f, "{what}: {cause}"),
            HostError::ProbeTruncated => f.write_str("probe output exceeded the limit"),
            HostError::ProbeRaced => f.write_str(
                "a file changed while khard read it (its size differs from what stat said a moment before): nothing was decided on this host; run again",
            ),
            HostError::ProbeUnreadable { status, stderr } => {
                let err = if stderr.is_empty() {
                    "no output"
                } else {
                    stderr
                };
                match status {
                    Some(code) => write!(f, "probe failed (exit status {code}): {err}"),
                    None => write!(f, "probe failed (no exit status): {err}"),
                }
            }
            HostError::BecomeRefused { stderr } => {
                write!(f, "become (sudo) was refused: {}", stderr.trim_end())?;
                // sudo -n on a host whose sudoers asks for a password.
                if stderr.contains("a password is required") {
                    f.write_str(
                        " (this host's sudo asks for a password: give it with -K / --ask-become-pass or ansible_become_password, or allow NOPASSWD for this user in sudoers)",
                    )?;
                }
                Ok(())
            }
            HostError::Refused { why } => f.write_str(why),
        }
    }
}

impl std::error::Error for HostError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_needed_sudo_password_names_the_ways_to_give_one() {
        let e = HostError::BecomeRefused {
            stderr: "sudo: a password is required\n".into(),
        };
        let text = e.to_string();
        assert!(text.starts_with("become (sudo) was refused: sudo: a password is required (this host's sudo asks for a password: give it with -K"), "{text}");
        assert!(text.contains("NOPASSWD"), "{text}");
        let other = HostError::BecomeRefused {
            stderr: "sudo: user ops is not in the sudoers file".into(),
        };
        assert!(!other.to_string().contains("-K"));
    }
}

/// A [`HostError`] with the host it happened on.
#[derive(Debug, Clone)]
pub struct HostFailure {
    pub host: String,
    pub error: HostError,
}
