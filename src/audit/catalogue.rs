//! The benchmark catalogues (roles/cis_k3s/benchmarks/*.yaml, built into
//! the binary): every control of every kube-bench k3s profile, with its
//! title, the evidence its audit reads, its test and its remediation.

use std::sync::OnceLock;

use serde::Deserialize;

/// Profile name → catalogue text.
const CATALOGUES: &[(&str, &str)] = &[
    (
        "cis-1.6",
        include_str!("../../roles/cis_k3s/benchmarks/cis-1.6.yaml"),
    ),
    (
        "k3s-cis-1.23",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.23.yaml"),
    ),
    (
        "k3s-cis-1.24",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.24.yaml"),
    ),
    (
        "k3s-cis-1.7",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.7.yaml"),
    ),
    (
        "k3s-cis-1.8",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.8.yaml"),
    ),
    (
        "k3s-cis-1.9",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.9.yaml"),
    ),
    (
        "k3s-cis-1.10",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.10.yaml"),
    ),
    (
        "k3s-cis-1.11",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.11.yaml"),
    ),
    (
        "k3s-cis-1.12",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-1.12.yaml"),
    ),
    (
        "k3s-cis-2.0",
        include_str!("../../roles/cis_k3s/benchmarks/k3s-cis-2.0.yaml"),
    ),
];

/// The profile names khard knows, oldest first.
pub fn names() -> impl Iterator<Item = &'static str> {
    CATALOGUES.iter().map(|(n, _)| *n)
}

#[derive(Debug, Clone, Deserialize)]
pub struct Catalogue {
    pub profile: String,
    pub controls: Vec<Control>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Control {
    pub id: String,
    #[serde(default)]
    pub section: String,
    pub title: String,
    pub scored: bool,
    /// `manual` or `skip` where kube-bench declares it.
    #[serde(default)]
    pub kube_bench_type: Option<String>,
    /// What the audit reads: file_mode, file_owner, apiserver_arg, … api, none.
    pub evidence: String,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub test: Option<Test>,
    /// Why the control does not apply to k3s, when it does not.
    #[serde(default)]
    pub not_applicable: Option<String>,
    #[serde(default)]
    pub remediation: Option<String>,
    /// Upstream peculiarities, e.g. the value the audit echoes for an absent flag.
    #[serde(default)]
    pub note: Option<String>,
}

impl Control {
    /// The value kube-bench's audit prints for an absent flag, where the
    /// catalogue's note says it does ("The audit echoes --x=v when the flag
    /// is absent"; "echoes this same cipher list": the test's own value).
    pub fn absent_default(&self, flag: &str) -> Option<String> {
        let note = self.note.as_deref()?;
        if !note.contains("when the flag is absent") {
            return None;
        }
        if note.contains("this same cipher list") {
            let items = self.test.as_ref()?.items();
            return items.into_iter().find(|i| i.flag == flag)?.value.clone();
        }
        let echoed = note.split("echoes ").nth(1)?.split_whitespace().next()?;
        let (name, value) = echoed.split_once('=')?;
        (name == flag).then(|| value.to_owned())
    }
}

impl Test {
    /// Every item of the test, in order, whatever the nesting.
    pub fn items(&self) -> Vec<&Item> {
        match self {
            Test::All { all: t } | Test::Any { any: t } => t.iter().flat_map(Test::items).collect(),
            Test::Item(i) => vec![i],
        }
    }
}

/// kube-bench's `tests:` block: items combined with `and` (all) or `or` (any).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Test {
    All { all: Vec<Test> },
    Any { any: Vec<Test> },
    Item(Item),
}

/// One kube-bench test item: a flag that must be set (or not), or compare with `op`.
#[derive(Debug, Clone, Deserialize)]
pub struct Item {
    /// Empty for the etcd items of 1.8+, which name only a `path` in etcd's config file.
    #[serde(default)]
    pub flag: String,
    #[serde(default)]
    pub path: Option<String>,
    #[serde(default)]
    pub op: Option<String>,
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub set: Option<bool>,
}

/// The catalogue of a profile, parsed once per run (a fleet's report asks
/// for the same few on every node); None for a name khard does not know.
pub fn load(profile: &str) -> Option<&'static Catalogue> {
    static PARSED: [OnceLock<Catalogue>; CATALOGUES.len()] =
        [const { OnceLock::new() }; CATALOGUES.len()];
    let i = CATALOGUES.iter().position(|(n, _)| *n == profile)?;
    // The catalogues are part of the source tree and tested below: a parse
    // failure here is a bug in the build, not bad input.
    Some(PARSED[i].get_or_init(|| {
        serde_yaml::from_str(CATALOGUES[i].1).expect("built-in benchmark catalogue")
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_catalogue_parses_with_unique_ids_and_its_own_name() {
        for name in names() {
            let c = load(name).unwrap();
            assert_eq!(c.profile, name);
            assert!(c.controls.len() > 100, "{name}: {}", c.controls.len());
            let mut ids: Vec<&str> = c.controls.iter().map(|c| c.id.as_str()).collect();
            ids.sort();
            ids.dedup();
            assert_eq!(ids.len(), c.controls.len(), "{name}: duplicate IDs");
            for ctl in &c.controls {
                let automated = ctl.scored
                    && ctl.not_applicable.is_none()
                    && ctl.kube_bench_type.as_deref() != Some("manual");
                assert!(
                    !automated || ctl.test.is_some(),
                    "{name} {}: automated without a test",
                    ctl.id
                );
                // The operators test_eval implements as kube-bench does.
                for item in ctl.test.iter().flat_map(|t| t.items()) {
                    let known = [
                        "eq",
                        "noteq",
                        "gt",
                        "gte",
                        "lt",
                        "lte",
                        "has",
                        "nothave",
                        "valid_elements",
                        "bitmask",
                    ];
                    assert!(
                        item.op.as_deref().is_none_or(|op| known.contains(&op)),
                        "{name} {}: op {:?}",
                        ctl.id,
                        item.op
                    );
                }
            }
        }
        assert!(load("cis-9.9").is_none());
    }

    #[test]
    fn what_the_audit_echoes_for_an_absent_flag() {
        let c = load("cis-1.6").unwrap();
        let timeout = c.controls.iter().find(|c| c.id == "1.2.26").unwrap();
        assert_eq!(
            timeout.absent_default("--request-timeout").as_deref(),
            Some("60")
        );
        assert_eq!(timeout.absent_default("--profiling"), None);
    }
}
