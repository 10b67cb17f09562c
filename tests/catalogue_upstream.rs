//! The built-in benchmark catalogues (roles/cis_k3s/benchmarks/) against
//! the upstream check definitions they follow: kube-bench's or Rancher's
//! (rancher/security-scan) profiles, recorded with repository, path and
//! commit as digests in tests/fixtures/benchmark-upstream/. Every control's
//! ID, order, scoring, type, test items and audited files must equal the
//! upstream's, apart from the deliberate deviations listed with a reason in
//! roles/cis_k3s/benchmarks/deviations.yaml; a deviation that no longer
//! differs is stale and fails too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde_yaml::Value;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn load(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn field(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(text)
}

/// A test item as kube-bench reads it: flag, path, op, value, set (default true).
fn item(v: &Value) -> String {
    let set = v.get("set").and_then(Value::as_bool).unwrap_or(true);
    format!(
        "{{flag={} path={} op={} value={} set={set}}}",
        field(v, "flag").unwrap_or_default(),
        field(v, "path").unwrap_or_default(),
        field(v, "op").unwrap_or_default(),
        field(v, "value").unwrap_or_default(),
    )
}

fn tests_upstream(c: &Value) -> String {
    let items: Vec<String> = c
        .get("tests")
        .and_then(Value::as_sequence)
        .map(|s| s.iter().map(item).collect())
        .unwrap_or_default();
    match items.len() {
        0 => "none".into(),
        1 => items[0].clone(),
        _ => format!(
            "{}[{}]",
            field(c, "bin_op").unwrap_or_else(|| "and".into()),
            items.join(", ")
        ),
    }
}

fn tests_catalogue(c: &Value) -> String {
    let Some(t) = c.get("test") else {
        return "none".into();
    };
    let (op, items): (&str, Vec<String>) = if let Some(all) = t.get("all") {
        ("and", all.as_sequence().unwrap().iter().map(item).collect())
    } else if let Some(any) = t.get("any") {
        ("or", any.as_sequence().unwrap().iter().map(item).collect())
    } else {
        ("-", vec![item(t)])
    };
    if items.len() == 1 {
        items[0].clone()
    } else {
        format!("{op}[{}]", items.join(", "))
    }
}

/// What an upstream file audit reads: the folder `find` walks (recursive)
/// and its `-name` pattern, or the one file (a `$variable` resolved).
fn upstream_files(
    c: &Value,
    vars: &BTreeMap<String, String>,
) -> (Option<String>, bool, Option<String>) {
    let audit = field(c, "audit").unwrap_or_default();
    let words: Vec<&str> = audit.split_whitespace().collect();
    let name_pattern = words
        .windows(2)
        .filter(|w| w[0] == "-name")
        .map(|w| w[1].trim_matches('\'').to_owned())
        .next();
    if words.first() == Some(&"find") && words.len() > 1 && !words[1].starts_with('$') {
        let excluded = words.windows(3).any(|w| w[0] == "!" && w[1] == "-name");
        let pattern = if excluded { None } else { name_pattern };
        return (
            Some(words[1].trim_end_matches('/').to_owned()),
            true,
            pattern,
        );
    }
    for w in &words {
        if let Some(var) = w.strip_prefix('$') {
            return (vars.get(var).cloned(), false, None);
        }
        if w.starts_with('/') {
            return (Some((*w).to_owned()), false, None);
        }
    }
    (None, false, None)
}

/// What a catalogue target names, as src/audit/evidence.rs's file_targets reads it.
fn catalogue_files(c: &Value) -> (Option<String>, bool, String) {
    let target = field(c, "target").unwrap_or_default();
    let inner = target
        .split_once('(')
        .and_then(|(_, rest)| rest.split_once(')'))
        .map(|(inside, _)| inside.split([',', ' ']).next().unwrap_or("").to_owned())
        .filter(|p| p.starts_with('/'));
    let path = inner.or_else(|| {
        target
            .split_whitespace()
            .find(|w| w.starts_with('/'))
            .map(str::to_owned)
    });
    let mut recursive = target.contains("recursive");
    let path = path.map(|p| {
        if let Some(dir) = p.strip_suffix("/*") {
            recursive = true;
            dir.to_owned()
        } else {
            p.trim_end_matches('/').to_owned()
        }
    });
    (path, recursive, target)
}

fn type_of(c: &Value, key: &str) -> String {
    field(c, key).unwrap_or_else(|| "automated".into())
}

#[test]
fn every_catalogue_equals_its_upstream_apart_from_listed_deviations() {
    let deviations: Vec<Value> = serde_yaml::from_value(load(
        &root().join("roles/cis_k3s/benchmarks/deviations.yaml"),
    ))
    .unwrap();
    let listed: BTreeMap<(String, String, String), String> = deviations
        .iter()
        .map(|d| {
            let why = field(d, "why").unwrap_or_default();
            assert!(why.len() > 20, "a deviation needs a reason: {d:?}");
            (
                (
                    field(d, "profile").unwrap(),
                    field(d, "id").unwrap(),
                    field(d, "field").unwrap(),
                ),
                why,
            )
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut unlisted = Vec::new();
    let mut profiles = 0;
    let dir = root().join("tests/fixtures/benchmark-upstream");
    for profile in [
        "cis-1.6",
        "k3s-cis-1.23",
        "k3s-cis-1.24",
        "k3s-cis-1.7",
        "k3s-cis-1.8",
        "k3s-cis-1.9",
        "k3s-cis-1.10",
        "k3s-cis-1.11",
        "k3s-cis-1.12",
        "k3s-cis-2.0",
    ] {
        let digest_path = dir.join(format!("{profile}.yaml"));
        if !digest_path.exists() {
            unlisted.push(format!("{profile}: no upstream digest"));
            continue;
        }
        profiles += 1;
        let digest = load(&digest_path);
        let upstream = &digest["upstream"];
        for key in ["repo", "path", "commit"] {
            assert!(field(upstream, key).is_some(), "{profile}: upstream.{key}");
        }
        let catalogue = load(&root().join(format!("roles/cis_k3s/benchmarks/{profile}.yaml")));
        let source = field(&catalogue, "source").unwrap_or_default();
        assert!(
            source.contains(&field(upstream, "repo").unwrap()),
            "{profile}: the catalogue's source names another repository: {source}"
        );
        let vars: BTreeMap<String, String> =
            serde_yaml::from_value(digest.get("vars").cloned().unwrap_or(Value::Null))
                .unwrap_or_default();
        let up: Vec<&Value> = digest["controls"].as_sequence().unwrap().iter().collect();
        let ours: Vec<&Value> = catalogue["controls"]
            .as_sequence()
            .unwrap()
            .iter()
            .collect();
        let id = |c: &Value| field(c, "id").unwrap();
        let up_ids: Vec<String> = up.iter().map(|c| id(c)).collect();
        let our_ids: Vec<String> = ours.iter().map(|c| id(c)).collect();
        let mut diffs: Vec<(String, &str, String)> = Vec::new();
        for i in up_ids.iter().filter(|i| !our_ids.contains(i)) {
            diffs.push((i.clone(), "missing", "upstream control absent".into()));
        }
        for i in our_ids.iter().filter(|i| !up_ids.contains(i)) {
            diffs.push((i.clone(), "extra", "absent upstream".into()));
        }
        let common_up: Vec<&String> = up_ids.iter().filter(|i| our_ids.contains(i)).collect();
        let common_ours: Vec<&String> = our_ids.iter().filter(|i| up_ids.contains(i)).collect();
        if common_up != common_ours {
            diffs.push(("*".into(), "order", "not in upstream order".into()));
        }
        for u in &up {
            let Some(c) = ours.iter().find(|c| id(c) == id(u)) else {
                continue;
            };
            let i = id(u);
            let scored = |v: &Value| v.get("scored").and_then(Value::as_bool).unwrap_or(false);
            if scored(u) != scored(c) {
                diffs.push((i.clone(), "scored", format!("upstream {}", scored(u))));
            }
            if type_of(u, "type") != type_of(c, "kube_bench_type") {
                diffs.push((
                    i.clone(),
                    "type",
                    format!(
                        "upstream {}, catalogue {}",
                        type_of(u, "type"),
                        type_of(c, "kube_bench_type")
                    ),
                ));
            }
            let (a, b) = (tests_upstream(u), tests_catalogue(c));
            if a != b {
                diffs.push((
                    i.clone(),
                    "test",
                    format!("upstream {a}\n    catalogue {b}"),
                ));
            }
            let evidence = field(c, "evidence").unwrap_or_default();
            if evidence == "file_mode" || evidence == "file_owner" {
                let (upath, urec, upattern) = upstream_files(u, &vars);
                let (cpath, crec, target) = catalogue_files(c);
                let mut why = Vec::new();
                if upath.is_some() && cpath.is_some() && upath != cpath {
                    why.push(format!("path {upath:?} vs {cpath:?}"));
                }
                if urec != crec {
                    why.push(format!("upstream recursive {urec}, catalogue {crec}"));
                }
                if let Some(p) = upattern.filter(|p| !target.contains(p.as_str())) {
                    why.push(format!("upstream -name {p} not in the target"));
                }
                if !why.is_empty() {
                    diffs.push((i.clone(), "target", format!("{}: {target}", why.join("; "))));
                }
            }
        }
        for (i, f, text) in diffs {
            let key = (profile.to_owned(), i.clone(), f.to_owned());
            if listed.contains_key(&key) {
                seen.insert(key);
            } else {
                unlisted.push(format!("{profile} {i} {f}: {text}"));
            }
        }
    }
    for key in listed.keys().filter(|k| !seen.contains(*k)) {
        unlisted.push(format!("stale deviation (no difference found): {key:?}"));
    }
    assert!(unlisted.is_empty(), "{}", unlisted.join("\n"));
    assert_eq!(profiles, 10, "every profile has a digest");
}
