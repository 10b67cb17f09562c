//! Ansible host patterns, for play `hosts:` and `--limit`: names, groups and
//! globs, unions with `:` or `,`, `!` exclusion, `&` intersection, and group
//! slices such as `server[0]` or `agent[0:2]`.

use std::collections::BTreeSet;

use crate::input::inventory::Inventory;
use crate::lang::glob::Glob;

#[derive(Debug, Clone, PartialEq)]
enum Term {
    Include(String),
    Intersect(String),
    Exclude(String),
}

fn parse(pattern: &str) -> Result<Vec<Term>, String> {
    let mut terms = Vec::new();
    for raw in split_terms(pattern) {
        if raw.is_empty() {
            return Err(format!("empty term in host pattern `{pattern}`"));
        }
        if matches!(raw, "!" | "&") {
            return Err(format!(
                "`{raw}` needs a host or group after it in `{pattern}`"
            ));
        }
        let term = if let Some(t) = raw.strip_prefix('!') {
            Term::Exclude(t.to_owned())
        } else if let Some(t) = raw.strip_prefix('&') {
            Term::Intersect(t.to_owned())
        } else {
            Term::Include(raw.to_owned())
        };
        terms.push(term);
    }
    Ok(terms)
}

/// Splits on `,` and `:`, except for the `:` of a slice such as `agent[0:2]`.
fn split_terms(pattern: &str) -> Vec<&str> {
    let (mut out, mut start, mut depth) = (Vec::new(), 0, 0i32);
    for (i, c) in pattern.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' | ':' if depth == 0 => {
                out.push(pattern[start..i].trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(pattern[start..].trim());
    out
}

/// Hosts one term names, in inventory order.
fn resolve(inv: &Inventory, word: &str) -> Result<Vec<String>, String> {
    if word.starts_with('~') {
        return Err(format!(
            "regular-expression patterns (`{word}`) are not supported; use a glob"
        ));
    }
    let (name, slice) = match word.find('[') {
        Some(i) if word.ends_with(']') && !word[..i].is_empty() => {
            (&word[..i], Some(&word[i + 1..word.len() - 1]))
        }
        _ => (word, None),
    };
    let mut hosts: Vec<String> = if name == "all" || name == "*" {
        inv.hosts.iter().map(|h| h.name.clone()).collect()
    } else if inv.groups.contains_key(name) {
        inv.hosts
            .iter()
            .filter(|h| h.groups.contains(name))
            .map(|h| h.name.clone())
            .collect()
    } else if name.contains(['*', '?']) {
        let groups: Vec<&String> = inv
            .groups
            .keys()
            .filter(|g| Glob::NAMES.matches(name, g))
            .collect();
        inv.hosts
            .iter()
            .filter(|h| {
                Glob::NAMES.matches(name, &h.name) || groups.iter().any(|g| h.groups.contains(*g))
            })
            .map(|h| h.name.clone())
            .collect()
    } else {
        inv.hosts
            .iter()
            .filter(|h| h.name == name)
            .map(|h| h.name.clone())
            .collect()
    };
    if let Some(slice) = slice {
        hosts = apply_slice(&hosts, slice)
            .ok_or_else(|| format!("bad slice `[{slice}]` in `{word}`"))?;
    }
    Ok(hosts)
}

fn apply_slice(hosts: &[String], slice: &str) -> Option<Vec<String>> {
    let len = hosts.len() as i64;
    let index = |s: &str, default: i64| -> Option<i64> {
        if s.is_empty() {
            return Some(default);
        }
        let i: i64 = s.parse().ok()?;
        Some(if i < 0 { len + i } else { i })
    };
    match slice.split_once(':') {
        None => {
            let i = index(slice, 0)?;
            Some(
                hosts
                    .get(usize::try_from(i).ok()?)
                    .cloned()
                    .into_iter()
                    .collect(),
            )
        }
        Some((a, b)) => {
            let (a, b) = (
                index(a, 0)?.clamp(0, len),
                index(b, len - 1)?.clamp(-1, len - 1),
            );
            Some(if a > b {
                Vec::new()
            } else {
                hosts[a as usize..=b as usize].to_vec()
            })
        }
    }
}

/// Why a term selects nothing, with a did-you-mean among hosts and groups.
fn unmatched(inv: &Inventory, w: &str) -> String {
    let known = inv
        .hosts
        .iter()
        .map(|h| h.name.as_str())
        .chain(inv.groups.keys().map(String::as_str));
    let hint = crate::error::did_you_mean(w, known)
        .map(|h| format!(" (did you mean `{h}`?)"))
        .unwrap_or_default();
    if w.contains(['*', '?', '[']) || inv.groups.contains_key(w) {
        format!("`{w}` matches no host of the inventory{hint}")
    } else {
        format!("`{w}` is neither a host nor a group of the inventory{hint}")
    }
}

/// The hosts a pattern selects, in inventory order. An Include term that
/// names nothing known is an error (a typo would otherwise select nothing).
pub fn select(inv: &Inventory, pattern: &str) -> Result<Vec<String>, String> {
    select_with(inv, pattern, false)
}

/// Like [`select`], for `--limit`: with `strict`, every term must match at
/// least one host, exclusions and intersections included, since a typo in
/// `all:!sever1` would otherwise silently select every host.
pub fn select_with(inv: &Inventory, pattern: &str, strict: bool) -> Result<Vec<String>, String> {
    let terms = parse(pattern)?;
    if strict {
        for term in &terms {
            let (Term::Include(w) | Term::Intersect(w) | Term::Exclude(w)) = term;
            if resolve(inv, w)?.is_empty() {
                return Err(format!(
                    "{}; use --allow-empty-limit if that is intended",
                    unmatched(inv, w)
                ));
            }
        }
    }
    let mut included: BTreeSet<String> = BTreeSet::new();
    let mut has_include = false;
    for term in &terms {
        if let Term::Include(w) = term {
            has_include = true;
            let found = resolve(inv, w)?;
            if found.is_empty()
                && !w.contains(['*', '?', '['])
                && !inv.groups.contains_key(w.as_str())
            {
                return Err(unmatched(inv, w));
            }
            included.extend(found);
        }
    }
    if !has_include {
        included.extend(inv.hosts.iter().map(|h| h.name.clone()));
    }
    for term in &terms {
        match term {
            Term::Intersect(w) => {
                let keep: BTreeSet<String> = resolve(inv, w)?.into_iter().collect();
                included.retain(|h| keep.contains(h));
            }
            Term::Exclude(w) => {
                for h in resolve(inv, w)? {
                    included.remove(&h);
                }
            }
            Term::Include(_) => {}
        }
    }
    Ok(inv
        .hosts
        .iter()
        .filter(|h| included.contains(&h.name))
        .map(|h| h.name.clone())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv() -> Inventory {
        let dir = crate::testutil::TempDir::new();
        let p = dir.file(
            "inv.yaml",
            "k3s_cluster:\n  children:\n    server:\n      hosts: {s1: , s2: }\n    agent:\n      hosts: {a1: , a2: , a3: }\nother:\n  hosts: {x1: , s1: }\n",
        );
        Inventory::load(&p).unwrap()
    }

    #[test]
    fn unions_exclusions_intersections_globs_slices() {
        let inv = inv();
        assert_eq!(select(&inv, "server").unwrap(), ["s1", "s2"]);
        assert_eq!(select(&inv, "server:agent[0]").unwrap(), ["s1", "s2", "a1"]);
        assert_eq!(select(&inv, "k3s_cluster:!agent").unwrap(), ["s1", "s2"]);
        assert_eq!(select(&inv, "k3s_cluster:&other").unwrap(), ["s1"]);
        assert_eq!(select(&inv, "a*,x1").unwrap(), ["a1", "a2", "a3", "x1"]);
        assert_eq!(select(&inv, "agent[1:]").unwrap(), ["a2", "a3"]);
        assert_eq!(select(&inv, "agent[-1]").unwrap(), ["a3"]);
        assert_eq!(select(&inv, "all:!s*").unwrap(), ["a1", "a2", "a3", "x1"]);
        assert_eq!(select(&inv, "!agent").unwrap(), ["s1", "s2", "x1"]);
    }

    #[test]
    fn typos_and_bad_syntax_are_errors() {
        let inv = inv();
        assert!(
            select(&inv, "sever")
                .unwrap_err()
                .contains("did you mean `server`")
        );
        assert!(select(&inv, "server,,agent").is_err());
        assert!(select(&inv, "~s.*").is_err());
    }

    #[test]
    fn a_limit_term_that_matches_nothing_is_an_error_exclusions_included() {
        let inv = inv();
        let strict = |p: &str| select_with(&inv, p, true);
        assert!(
            strict("!nosuch")
                .unwrap_err()
                .contains("`nosuch` is neither a host nor a group")
        );
        assert!(strict("!").unwrap_err().contains("needs a host or group"));
        assert!(
            strict("all:!sever1")
                .unwrap_err()
                .contains("did you mean `server`")
        );
        assert!(strict("zz*").is_err(), "a glob matching nothing");
        assert!(strict("all:&nosuch").is_err());
        assert_eq!(strict("all:!s1").unwrap(), ["s2", "a1", "a2", "a3", "x1"]);
        assert_eq!(
            select_with(&inv, "all:!nosuch", false).unwrap().len(),
            6,
            "opt-in"
        );
    }
}
