//! kube-bench's test semantics (check/test.go: testItem.evaluate,
//! compareOp): an item says a flag must be set or not, or compares its
//! value with `op`; items combine with all/any. A flag that is absent fails
//! every comparison. `regex` is not supported (no catalogue uses it, which
//! tests/catalogue_upstream.rs keeps true): it never passes.

use super::catalogue::{Item, Test};

/// What an audit found for one flag: its value and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub value: String,
    pub origin: String,
}

/// Whether `test` passes, given how to look a flag up.
pub fn passes(test: &Test, lookup: &dyn Fn(&Item) -> Option<Found>) -> bool {
    match test {
        Test::All { all } => all.iter().all(|t| passes(t, lookup)),
        Test::Any { any } => any.iter().any(|t| passes(t, lookup)),
        Test::Item(item) => item_passes(item, lookup(item).as_ref()),
    }
}

fn item_passes(item: &Item, found: Option<&Found>) -> bool {
    // kube-bench's testItem.evaluate: `set: false` asks for absence, and
    // then any `op` is not looked at; `set: true` (the default) with an op
    // compares a present value, else asks for presence.
    if !item.set.unwrap_or(true) {
        return found.is_none();
    }
    match (&item.op, found) {
        (Some(op), Some(found)) => compare(op, &found.value, item.value.as_deref().unwrap_or("")),
        (_, found) => found.is_some(),
    }
}

/// kube-bench's comparison operators.
pub fn compare(op: &str, value: &str, want: &str) -> bool {
    let number = |s: &str| s.trim().parse::<i64>().ok();
    match op {
        "eq" => {
            // kube-bench compares true/false without case.
            let lower = value.to_ascii_lowercase();
            let v = if lower == "true" || lower == "false" {
                lower.as_str()
            } else {
                value
            };
            v == want
        }
        "noteq" => {
            // The same case rule as eq, negated (compareOp).
            let lower = value.to_ascii_lowercase();
            let v = if lower == "true" || lower == "false" {
                lower.as_str()
            } else {
                value
            };
            v != want
        }
        "gt" | "gte" | "lt" | "lte" => match (number(value), number(want)) {
            (Some(v), Some(w)) => match op {
                "gt" => v > w,
                "gte" => v >= w,
                "lt" => v < w,
                _ => v <= w,
            },
            _ => false,
        },
        "has" => value.contains(want),
        "nothave" => !value.contains(want),
        "valid_elements" => {
            // splitAndRemoveLastSeparator + allElementsValid: a trailing comma
            // is dropped; both empty is valid, one empty is not.
            let split = |s: &str| -> Vec<String> {
                let s = s.trim().trim_end_matches(',');
                if s.is_empty() {
                    Vec::new()
                } else {
                    s.split(',').map(|e| e.trim().to_owned()).collect()
                }
            };
            let (have, allowed) = (split(value), split(want));
            match (have.is_empty(), allowed.is_empty()) {
                (true, true) => true,
                (true, false) | (false, true) => false,
                _ => have.iter().all(|e| allowed.contains(e)),
            }
        }
        // The file's permission bits are a subset of the allowed ones.
        "bitmask" => match (
            u32::from_str_radix(value.trim(), 8),
            u32::from_str_radix(want.trim(), 8),
        ) {
            (Ok(v), Ok(max)) => v & max == v,
            _ => false,
        },
        _ => false,
    }
}

/// The test in words: `--audit-log-maxage >= 30`, `--token-auth-file not set`.
pub fn describe(test: &Test) -> String {
    match test {
        Test::All { all } => all.iter().map(describe).collect::<Vec<_>>().join(" and "),
        Test::Any { any } => {
            let parts: Vec<String> = any.iter().map(describe).collect();
            format!("either {}", parts.join(", or "))
        }
        Test::Item(item) => {
            let name = item_name(item);
            let want = item.value.clone().unwrap_or_default();
            // kube-bench looks for the flag in the audit's output: a file test
            // `{flag: '644', op: eq}` means the mode is exactly 644.
            let mode = name.len() == 3 && name.chars().all(|c| c.is_ascii_digit());
            match item.op.as_deref() {
                Some("eq") if mode => format!("permissions exactly {want}"),
                None if item.set == Some(false) => format!("{name} not set"),
                None => format!("{name} set"),
                Some("eq") => format!("{name} = {want}"),
                Some("noteq") => format!("{name} ≠ {want}"),
                Some("gt") => format!("{name} > {want}"),
                Some("gte") => format!("{name} >= {want}"),
                Some("lt") => format!("{name} < {want}"),
                Some("lte") => format!("{name} <= {want}"),
                Some("has") => format!("{name} includes {want}"),
                Some("nothave") => format!("{name} does not include {want}"),
                Some("valid_elements") => format!("{name} only from {want}"),
                Some("bitmask") => format!("{name} {want} or stricter"),
                Some(other) => format!("{name} {other} {want}"),
            }
        }
    }
}

/// The item's flag, or its config-file path where it names none.
pub fn item_name(item: &Item) -> String {
    if item.flag.is_empty() {
        item.path.clone().unwrap_or_default()
    } else {
        item.flag.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(yaml: &str) -> Test {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn with(flags: &[(&str, &str)]) -> impl Fn(&Item) -> Option<Found> {
        let flags: Vec<(String, String)> = flags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |item: &Item| {
            flags
                .iter()
                .find(|(k, _)| *k == item.flag)
                .map(|(_, v)| Found {
                    value: v.clone(),
                    origin: "test".into(),
                })
        }
    }

    #[test]
    fn thresholds_as_kube_bench_states_them() {
        let maxage = t("{flag: --audit-log-maxage, op: gte, value: '30'}");
        assert!(!passes(&maxage, &with(&[("--audit-log-maxage", "1")])));
        assert!(passes(&maxage, &with(&[("--audit-log-maxage", "30")])));
        assert!(passes(&maxage, &with(&[("--audit-log-maxage", "365")])));
        assert!(!passes(&maxage, &with(&[])), "absent fails a comparison");
        assert!(!passes(&maxage, &with(&[("--audit-log-maxage", "lots")])));
        assert_eq!(describe(&maxage), "--audit-log-maxage >= 30");
    }

    #[test]
    fn set_any_all_has_nothave() {
        let unset = t("{flag: --token-auth-file, set: false}");
        assert!(passes(&unset, &with(&[])));
        assert!(!passes(&unset, &with(&[("--token-auth-file", "/x")])));
        let any = t(
            "any:\n- {flag: --bind-address, op: eq, value: 127.0.0.1}\n- {flag: --bind-address, set: false}\n",
        );
        assert!(passes(&any, &with(&[])));
        assert!(passes(&any, &with(&[("--bind-address", "127.0.0.1")])));
        assert!(!passes(&any, &with(&[("--bind-address", "0.0.0.0")])));
        let all = t("all:\n- {flag: --a, set: true}\n- {flag: --b, set: true}\n");
        assert!(!passes(&all, &with(&[("--a", "x")])));
        assert!(passes(&all, &with(&[("--a", "x"), ("--b", "y")])));
        let has = t("{flag: --authorization-mode, op: has, value: Node}");
        assert!(passes(
            &has,
            &with(&[("--authorization-mode", "Node,RBAC")])
        ));
        let nothave = t("{flag: --authorization-mode, op: nothave, value: AlwaysAllow}");
        assert!(!passes(
            &nothave,
            &with(&[("--authorization-mode", "AlwaysAllow")])
        ));
        let eq = t("{flag: --profiling, op: eq, value: 'false'}");
        assert!(passes(&eq, &with(&[("--profiling", "False")])));
        let noteq = t("{flag: --profiling, op: noteq, value: 'true'}");
        assert!(
            !passes(&noteq, &with(&[("--profiling", "True")])),
            "case as eq"
        );
        assert!(passes(&noteq, &with(&[("--profiling", "false")])));
        // `set: false` with an op: kube-bench asks for absence only.
        let unset_op = t("{flag: --x, op: eq, value: '1', set: false}");
        assert!(passes(&unset_op, &with(&[])));
        assert!(!passes(&unset_op, &with(&[("--x", "1")])));
    }

    #[test]
    fn ciphers_and_permissions() {
        let ciphers = t("{flag: --tls-cipher-suites, op: valid_elements, value: 'A,B,C'}");
        assert!(passes(&ciphers, &with(&[("--tls-cipher-suites", "A,C")])));
        assert!(!passes(&ciphers, &with(&[("--tls-cipher-suites", "A,D")])));
        assert!(
            passes(&ciphers, &with(&[("--tls-cipher-suites", "A, C,")])),
            "trailing comma"
        );
        assert!(
            !passes(&ciphers, &with(&[("--tls-cipher-suites", "")])),
            "empty"
        );
        let mode = t("{flag: permissions, op: bitmask, value: '600'}");
        assert!(passes(&mode, &with(&[("permissions", "600")])));
        assert!(passes(&mode, &with(&[("permissions", "400")])));
        assert!(!passes(&mode, &with(&[("permissions", "644")])));
        assert!(!passes(&mode, &with(&[("permissions", "700")])));
        assert_eq!(describe(&mode), "permissions 600 or stricter");
    }
}
