//! A probe's answer as the engine keeps it: read whole from one exec's
//! output, and the one place that decides whether an earlier answer may
//! stand in for a new probe.

use crate::engine::error::HostError;
use crate::facts::{Probe, RemoteState, parse};

/// A probe and the host's answer to it. The only way to get one is from a
/// whole, readable probe output ([`Probed::from_output`]), so a cut-short
/// probe is never trusted.
#[derive(Debug, Clone)]
pub struct Probed {
    pub probe: Probe,
    pub state: RemoteState,
    /// Set once anything may have changed on the host since the probe ran.
    stale: bool,
}

impl Probed {
    /// Reads the answer to `probe` out of an exec's output.
    pub fn from_output(
        probe: Probe,
        marker: &str,
        out: &crate::transport::ExecOutput,
    ) -> Result<Probed, HostError> {
        if out.truncated {
            return Err(HostError::ProbeTruncated);
        }
        match parse(marker, &out.stdout_text(), &probe) {
            Some(state) => Ok(Probed {
                probe,
                state,
                stale: false,
            }),
            // The whole answer came back, but its files did not add up.
            None if out
                .stdout_text()
                .lines()
                .any(|l| l == format!("{marker} end")) =>
            {
                Err(HostError::ProbeRaced)
            }
            // sudo speaks first on stderr and exits 1 before our shell starts.
            None if out.stdout.is_empty() && out.stderr_text().starts_with("sudo:") => {
                Err(HostError::BecomeRefused {
                    stderr: out.stderr_text(),
                })
            }
            None => Err(HostError::ProbeUnreadable {
                status: out.status,
                stderr: out.stderr_text(),
            }),
        }
    }

    /// Marks the answer out of date: something ran on the host since.
    pub fn invalidate(&mut self) {
        self.stale = true;
    }

    /// The one place that decides whether a probe taken earlier may stand
    /// in for a new one: nothing ran on the host since, and it asked at
    /// least what `needs` asks.
    pub fn reusable_for(self, needs: &Probe) -> Option<Probed> {
        (!self.stale && self.probe.covers(needs)).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer whose files do not add up to the sizes `stat` gave (one
    /// changed in between) is refused, and says so.
    #[test]
    fn a_file_that_changed_while_read_is_named_as_such() {
        let mut p = Probe::default();
        p.content.insert("/a".into());
        let out = crate::transport::ExecOutput {
            status: Some(0),
            stdout: b"@@m facts\n@@m stat\nregular file|644|root|root|2|0|0|/a\n@@m cread\n/a\n@@m cdata\n 61 62 63\n@@m end\n".to_vec(),
            ..Default::default()
        };
        let err = Probed::from_output(p, "@@m", &out).unwrap_err();
        assert_eq!(err, HostError::ProbeRaced);
        assert!(err.to_string().contains("changed while khard read it"));
    }

    /// A probe answer cut at the output limit is never trusted, whoever ran
    /// it (the probe exec, or the tail of a handler's exec).
    #[test]
    fn a_cut_short_probe_is_refused() {
        let p = Probe::default();
        let marker = "@@m";
        let whole = crate::transport::ExecOutput {
            status: Some(0),
            stdout: format!("{marker} facts\n{marker} end\n").into_bytes(),
            ..Default::default()
        };
        assert!(Probed::from_output(p.clone(), marker, &whole).is_ok());
        let cut = crate::transport::ExecOutput {
            truncated: true,
            ..whole
        };
        assert_eq!(
            Probed::from_output(p, marker, &cut).unwrap_err(),
            HostError::ProbeTruncated
        );
    }
}
