//! `khard report --exceptions FILE`: the accepted exceptions, read with
//! errors that name the file and line. A list of entries:
//!
//! ```yaml
//! - control: "1.2.9"            # the control's ID
//!   nodes: "server-*"           # node name pattern (default: every node)
//!   benchmark: k3s-cis-1.10     # optional: only in this benchmark
//!   reason: EventRateLimit breaks the nightly batch import (TICKET-412)
//!   expires: 2027-03-31         # the last day it holds (UTC)
//!   accepted_by: jane.doe@example.com
//! ```

use std::path::Path;

use anyhow::Result;

use crate::audit::catalogue;
use crate::audit::exceptions::{Exception, is_date};
use crate::error::{InputError, did_you_mean};

pub fn load(path: &Path) -> Result<Vec<Exception>> {
    let name = path.display().to_string();
    let text = crate::input::inventory::read_utf8(path)?;
    crate::lang::yaml_bounds::check(&text).map_err(|e| InputError::in_file(&name, e))?;
    // serde_yaml reads an unquoted 2027-03-31 as a string; a number-like
    // control ID (1.2 is a float) is quoted by the check below's hint.
    let list: Option<Vec<serde_yaml::Value>> = crate::input::yaml::parse(&name, &text)?;
    let lines = crate::input::yaml::item_lines(&text);
    let mut out = Vec::new();
    for (i, raw) in list.unwrap_or_default().into_iter().enumerate() {
        let line = lines.get(i).copied().unwrap_or(1);
        let at = |msg: String| InputError::at(&name, line, 1, msg);
        let mut e: Exception = serde_yaml::from_value(stringify_control(raw))
            .map_err(|err| at(format!("exception {}: {err}", i + 1)))?;
        e.line = line;
        for (field, value) in [
            ("control", &e.control),
            ("reason", &e.reason),
            ("accepted_by", &e.accepted_by),
            ("nodes", &e.nodes),
        ] {
            if value.trim().is_empty() {
                return Err(at(format!("`{field}` is empty: say it, an auditor reads it")).into());
            }
        }
        if !is_date(&e.expires) {
            return Err(at(format!(
                "expires: `{}` is not a date: write the last day it holds as YYYY-MM-DD",
                e.expires
            ))
            .into());
        }
        if let Some(b) = &e.benchmark
            && catalogue::load(b).is_none()
        {
            let hint = did_you_mean(b, catalogue::names())
                .map(|h| format!(" (did you mean `{h}`?)"))
                .unwrap_or_default();
            return Err(at(format!("benchmark `{b}` is not one khard knows{hint}")).into());
        }
        let benchmarks: Vec<&str> = match &e.benchmark {
            Some(b) => vec![b.as_str()],
            None => catalogue::names().collect(),
        };
        let known = benchmarks.iter().any(|b| {
            catalogue::load(b).is_some_and(|c| c.controls.iter().any(|c| c.id == e.control))
        });
        if !known {
            return Err(at(format!(
                "control `{}` is in no benchmark{}",
                e.control,
                e.benchmark
                    .as_ref()
                    .map(|b| format!(" named `{b}`"))
                    .unwrap_or_default()
            ))
            .into());
        }
        out.push(e);
    }
    Ok(out)
}

/// `control: 1.2` is a YAML float and `control: 4` an integer: take their
/// text, as the operator meant an ID.
fn stringify_control(mut raw: serde_yaml::Value) -> serde_yaml::Value {
    if let Some(map) = raw.as_mapping_mut() {
        for key in ["control", "expires"] {
            if let Some(v) = map.get_mut(key)
                && let serde_yaml::Value::Number(n) = v
            {
                *v = serde_yaml::Value::String(n.to_string());
            }
        }
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_text(text: &str) -> Result<Vec<Exception>> {
        let dir = crate::testutil::TempDir::new();
        load(&dir.file("exceptions.yaml", text))
    }

    #[test]
    fn reads_entries_with_their_lines() {
        let list = load_text(
            "# accepted\n- control: \"1.2.9\"\n  nodes: server-*\n  reason: batch jobs\n  expires: 2027-03-31\n  accepted_by: jane\n- control: 4.2.4\n  reason: r\n  expires: 2027-01-01\n  accepted_by: ops\n",
        )
        .unwrap();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].line, 2);
        assert_eq!(list[1].line, 7);
        assert_eq!(list[1].nodes, "*");
        assert_eq!(list[1].control, "4.2.4");
    }

    #[test]
    fn bad_entries_name_the_file_and_line() {
        let err = |t: &str| load_text(t).unwrap_err().to_string();
        let e = err("- control: \"1.2.9\"\n  reason: r\n  expires: 31.03.2027\n  accepted_by: j\n");
        assert!(
            e.contains("exceptions.yaml:1:1") && e.contains("YYYY-MM-DD"),
            "{e}"
        );
        let e = err("- control: \"1.2.9\"\n  reason: r\n  expires: 2027-03-31\n  acepted_by: j\n");
        assert!(e.contains("acepted_by"), "{e}");
        let e = err("- control: \"9.9.9\"\n  reason: r\n  expires: 2027-03-31\n  accepted_by: j\n");
        assert!(e.contains("in no benchmark"), "{e}");
        let e = err(
            "- control: \"1.2.9\"\n  benchmark: k3s-cis-1.01\n  reason: r\n  expires: 2027-03-31\n  accepted_by: j\n",
        );
        assert!(e.contains("did you mean"), "{e}");
        let e =
            err("- control: \"1.2.9\"\n  reason: ''\n  expires: 2027-03-31\n  accepted_by: j\n");
        assert!(e.contains("`reason` is empty"), "{e}");
        let e = err("- control: [\n");
        assert!(e.contains("exceptions.yaml:"), "{e}");
    }
}
