//! `khard merge`: the JSON documents of the shards of one run (`--shard
//! K/N` on N CI jobs) as the document of one run: every host once, one
//! recap and one exit code; or, for `khard report`, every node once, the
//! fleet's totals and one gate.

use super::{Summary, exit_code};
use crate::audit::NodeAudit;

/// What the shards' documents hold, together.
pub enum Merged {
    /// `khard apply --format json`.
    Run(Summary),
    /// `khard report --format json`: each node's audit.
    Compliance(Vec<NodeAudit>),
}

/// Merges documents read from files (name, parsed JSON); the names only
/// serve messages.
pub fn merge(docs: &[(String, serde_json::Value)]) -> Result<Merged, String> {
    if docs.is_empty() {
        return Err("no document to merge".into());
    }
    let kind = |v: &serde_json::Value| {
        if v.get("recap").is_some() {
            Some("run")
        } else if v.get("nodes").is_some() && v.get("fleet").is_some() {
            Some("report")
        } else {
            None
        }
    };
    let first = kind(&docs[0].1).ok_or_else(|| {
        format!(
            "{}: not a khard JSON document (apply or report --format json)",
            docs[0].0
        )
    })?;
    for (name, v) in docs {
        if kind(v) != Some(first) {
            return Err(format!(
                "{name}: not the same kind of document as {} (every shard runs the same command)",
                docs[0].0
            ));
        }
    }
    if first == "report" {
        let mut nodes: Vec<NodeAudit> = Vec::new();
        for (name, v) in docs {
            let part: Vec<NodeAudit> =
                serde_json::from_value(v["nodes"].clone()).map_err(|e| format!("{name}: {e}"))?;
            for mut n in part {
                if nodes.iter().any(|x| x.host == n.host) {
                    return Err(format!(
                        "{name}: node {} is in two shards' documents",
                        n.host
                    ));
                }
                for c in &mut n.controls {
                    c.label = c.verdict.label();
                }
                nodes.push(n);
            }
        }
        nodes.sort_by(|a, b| a.host.cmp(&b.host));
        return Ok(Merged::Compliance(nodes));
    }
    let mut out: Option<Summary> = None;
    let mut interrupted = false;
    for (name, v) in docs {
        let s: Summary = serde_json::from_value(v.clone()).map_err(|e| format!("{name}: {e}"))?;
        interrupted |= s.exit_code == crate::error::Exit::Interrupted.code();
        let Some(all) = out.as_mut() else {
            out = Some(s);
            continue;
        };
        if all.check != s.check {
            return Err(format!(
                "{name}: one shard ran with --check and another without"
            ));
        }
        for host in s.recap.keys() {
            if all.recap.contains_key(host) {
                return Err(format!("{name}: host {host} is in two shards' documents"));
            }
        }
        all.events.extend(s.events);
        all.recap.extend(s.recap);
        all.channels.extend(s.channels);
        all.duration_ms = all.duration_ms.max(s.duration_ms);
    }
    let mut all = out.expect("at least one document");
    all.exit_code = exit_code(&all.recap, all.check, interrupted).code();
    Ok(Merged::Run(all))
}

/// Which of N shards a host is in: a hash of its name (FNV-1a), so the
/// same host lands in the same shard on every run and whatever else the
/// inventory holds.
pub fn shard_of(host: &str, shards: u32) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % u64::from(shards)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn spread<'a>(hosts: impl Iterator<Item = &'a str>, shards: u32) -> BTreeMap<u32, usize> {
        let mut out = BTreeMap::new();
        for h in hosts {
            *out.entry(shard_of(h, shards)).or_default() += 1;
        }
        out
    }

    #[test]
    fn shards_are_stable_and_balanced() {
        let hosts: Vec<String> = (0..3000).map(|i| format!("node-{i:04}.example")).collect();
        let spread = spread(hosts.iter().map(String::as_str), 3);
        assert_eq!(spread.len(), 3);
        for n in spread.values() {
            assert!((900..=1100).contains(n), "{spread:?}");
        }
        assert_eq!(shard_of("s1", 3), shard_of("s1", 3));
    }

    #[test]
    fn merging_refuses_a_host_in_two_shards_and_mixed_documents() {
        let run = serde_json::json!({"check": true, "events": [], "recap": {"a": {"ok": 1, "changed": 0, "unknown": 0, "unreachable": 0, "failed": 0, "skipped": 0, "not_run": 0, "pending": 0}}, "channels": {}, "exit_code": 0, "duration_ms": 5});
        let e = merge(&[
            ("1.json".into(), run.clone()),
            ("2.json".into(), run.clone()),
        ]);
        assert!(e.err().unwrap().contains("host a is in two shards"));
        let report = serde_json::json!({"fleet": {}, "nodes": []});
        let e = merge(&[("1.json".into(), run), ("2.json".into(), report)]);
        assert!(e.err().unwrap().contains("not the same kind"));
    }
}
