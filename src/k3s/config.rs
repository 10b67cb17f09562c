//! The effective k3s configuration of a node, as k3s itself computes it
//! (`pkg/configfilearg`): config.yaml first, then the drop-ins of
//! config.yaml.d/ (`*.yaml`, `*.yml`) in file-name order; a plain key
//! replaces what came before, `key+` appends; then the flags on the unit's
//! command line and in its environment file, which replace a list whole.
//! One function, used by the config task's diff, its conflict check and the
//! cross-server check of critical flags.

use std::collections::BTreeMap;

use crate::facts::{Probe, RemoteState};
use crate::k3s::version::K3sVersion;

/// One value of the effective configuration, and the file that set it.
#[derive(Debug, Clone, PartialEq)]
pub enum Setting {
    Scalar {
        value: String,
        from: String,
    },
    /// List items, each with the file that added it.
    List(Vec<(String, String)>),
}

/// Flag name → setting.
pub type Effective = BTreeMap<String, Setting>;

/// The file a configuration comes from, with its text.
pub struct Source<'a> {
    pub file: &'a str,
    pub text: &'a str,
}

/// The first release that reads config.yaml at all.
pub const CONFIG_FILE_SINCE: K3sVersion = K3sVersion::new(1, 19, 1);
/// The first release that reads config.yaml.d/ drop-ins with `key+` appends.
pub const DROPINS_SINCE: K3sVersion = K3sVersion::new(1, 21, 1);

fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.clone()),
        serde_yaml::Value::Bool(b) => Some(b.to_string()),
        serde_yaml::Value::Number(n) => Some(n.to_string()),
        serde_yaml::Value::Null => Some(String::new()),
        _ => None,
    }
}

fn items(v: &serde_yaml::Value) -> Vec<String> {
    match v {
        serde_yaml::Value::Sequence(s) => s.iter().filter_map(scalar_text).collect(),
        other => scalar_text(other).into_iter().collect(),
    }
}

/// Merges the files in order, as k3s does. A file that is not a YAML
/// mapping is an error naming it (k3s itself would refuse to start).
pub fn merge(sources: &[Source]) -> Result<Effective, String> {
    let mut out = Effective::new();
    for s in sources {
        let doc: serde_yaml::Value =
            serde_yaml::from_str(s.text).map_err(|e| format!("{}: not valid YAML: {e}", s.file))?;
        let map = match doc {
            serde_yaml::Value::Null => continue,
            serde_yaml::Value::Mapping(m) => m,
            _ => return Err(format!("{}: not a mapping of k3s flags", s.file)),
        };
        for (k, v) in map {
            let Some(key) = k.as_str() else { continue };
            let (name, append) = match key.strip_suffix('+') {
                Some(n) => (n, true),
                None => (key, false),
            };
            let from = s.file.to_owned();
            let new_items = || {
                items(&v)
                    .into_iter()
                    .map(|i| (i, from.clone()))
                    .collect::<Vec<_>>()
            };
            let setting = match (out.remove(name), append, &v) {
                (Some(old), true, _) => {
                    let mut list = match old {
                        Setting::List(l) => l,
                        Setting::Scalar { value, from } => vec![(value, from)],
                    };
                    list.extend(new_items());
                    Setting::List(list)
                }
                (_, _, serde_yaml::Value::Sequence(_)) => Setting::List(new_items()),
                (_, _, value) => Setting::Scalar {
                    value: scalar_text(value).unwrap_or_default(),
                    from,
                },
            };
            out.insert(name.to_owned(), setting);
        }
    }
    Ok(out)
}

/// Applies the flags of the unit's command line (or its environment file):
/// a list flag given there replaces the whole list from the files, a scalar
/// replaces the value.
pub fn apply_cli(effective: &mut Effective, file: &str, flags: &[String]) {
    let mut lists: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for flag in flags {
        let flag = flag.trim_start_matches('-');
        let (name, value) = flag.split_once('=').unwrap_or((flag, "true"));
        if name.ends_with("-arg") {
            lists
                .entry(name.to_owned())
                .or_default()
                .push((value.to_owned(), file.to_owned()));
        } else {
            effective.insert(
                name.to_owned(),
                Setting::Scalar {
                    value: value.to_owned(),
                    from: file.to_owned(),
                },
            );
        }
    }
    for (name, list) in lists {
        effective.insert(name, Setting::List(list));
    }
}

/// `khard`'s wanted configuration (a YAML mapping) as a drop-in in k3s's
/// append form: list keys become `key+:`, so the operator's own lists stay.
pub fn append_form(wanted: &str) -> Result<String, String> {
    let doc: serde_yaml::Value =
        serde_yaml::from_str(wanted).map_err(|e| format!("not valid YAML: {e}"))?;
    let mut out = serde_yaml::Mapping::new();
    if let serde_yaml::Value::Mapping(m) = doc {
        for (k, v) in m {
            let key = k.as_str().unwrap_or_default().trim_end_matches('+');
            let key = if v.is_sequence() {
                format!("{key}+")
            } else {
                key.to_owned()
            };
            out.insert(serde_yaml::Value::String(key), v);
        }
    }
    serde_yaml::to_string(&out).map_err(|e| e.to_string())
}

/// config.yaml with `wanted` merged in, for k3s releases without drop-ins:
/// every key and list item khard does not own stays; khard's list items are
/// appended where missing (an item `name=value` replaces the operator's item
/// of the same name), khard's scalars are set.
pub fn merge_into(existing: &str, wanted: &str) -> Result<String, String> {
    let mut doc: serde_yaml::Mapping = match serde_yaml::from_str(existing) {
        Ok(serde_yaml::Value::Mapping(m)) => m,
        Ok(serde_yaml::Value::Null) => serde_yaml::Mapping::new(),
        Ok(_) => return Err("config.yaml is not a mapping of k3s flags".into()),
        Err(e) => return Err(format!("config.yaml is not valid YAML: {e}")),
    };
    let wanted: serde_yaml::Mapping = match serde_yaml::from_str(wanted) {
        Ok(serde_yaml::Value::Mapping(m)) => m,
        _ => return Err("the wanted k3s config is not a mapping".into()),
    };
    for (k, v) in wanted {
        let key = serde_yaml::Value::String(k.as_str().unwrap_or_default().to_owned());
        match (&v, doc.get(&key).cloned()) {
            (serde_yaml::Value::Sequence(want), Some(have)) => {
                let mut list = items(&have);
                for w in want.iter().filter_map(scalar_text) {
                    let name = w.split('=').next().unwrap_or(&w).to_owned();
                    list.retain(|i| i.split('=').next() != Some(name.as_str()) || *i == w);
                    if !list.contains(&w) {
                        list.push(w);
                    }
                }
                let seq = list.into_iter().map(serde_yaml::Value::String).collect();
                doc.insert(key, serde_yaml::Value::Sequence(seq));
            }
            _ => {
                doc.insert(key, v);
            }
        }
    }
    serde_yaml::to_string(&doc).map_err(|e| e.to_string())
}

/// Where the effective configuration weakens what khard wants: a scalar
/// with another value, or a list item whose flag ends up with another value
/// (the last occurrence wins in the component) or missing. Each entry names
/// the file responsible and says how to fix it.
pub fn conflicts(effective: &Effective, wanted: &str, dropin: &str) -> Vec<String> {
    let Ok(serde_yaml::Value::Mapping(want)) = serde_yaml::from_str::<serde_yaml::Value>(wanted)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (k, v) in want {
        let name = k.as_str().unwrap_or_default().trim_end_matches('+');
        match (v, effective.get(name)) {
            (serde_yaml::Value::Sequence(items), setting) => {
                let list = match setting {
                    Some(Setting::List(l)) => l.clone(),
                    Some(Setting::Scalar { value, from }) => vec![(value.clone(), from.clone())],
                    None => Vec::new(),
                };
                for item in items.iter().filter_map(scalar_text) {
                    let flag = item.split('=').next().unwrap_or(&item);
                    let last = list
                        .iter()
                        .rev()
                        .find(|(i, _)| i.split('=').next() == Some(flag));
                    match last {
                        Some((i, _)) if *i == item => {}
                        Some((i, from)) => out.push(format!(
                            "{from} sets {name} `{i}` after khard's `{item}` ({dropin}), and the last one wins: remove it there"
                        )),
                        None => {
                            let by = list
                                .last()
                                .map(|(_, f)| f.as_str())
                                .unwrap_or("a later file");
                            out.push(format!(
                                "{by} replaces the whole {name} list, so khard's `{item}` ({dropin}) is dropped: write `{name}+:` there to append instead"
                            ));
                        }
                    }
                }
            }
            (value, setting) => {
                let want = scalar_text(&value).unwrap_or_default();
                match setting {
                    Some(Setting::Scalar { value, .. }) if *value == want => {}
                    Some(Setting::Scalar { value, from }) => out.push(format!(
                        "{from} sets {name}: {value}, weaker than khard's {name}: {want} ({dropin}): remove it there"
                    )),
                    Some(Setting::List(l)) => out.push(format!(
                        "{} sets {name} as a list; khard wants {name}: {want}",
                        l.last().map(|(_, f)| f.as_str()).unwrap_or("a file")
                    )),
                    None => out.push(format!("{name}: {want} ({dropin}) is not in effect")),
                }
            }
        }
    }
    out
}

/// The effective configuration as YAML (for the cross-server check).
/// The configuration one file gives on its own (a config.yaml khard writes whole).
pub fn from_file(text: &str) -> Result<Effective, String> {
    merge(&[Source {
        file: "config.yaml",
        text,
    }])
}

/// k3s's config file and its folder of drop-ins.
pub const CONFIG: &str = "/etc/rancher/k3s/config.yaml";
pub const DROPINS: &str = "/etc/rancher/k3s/config.yaml.d";

/// A file the probe brought back, as text.
pub fn file_text(state: &RemoteState, path: &str) -> Option<String> {
    state
        .content
        .get(path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The probe that [`effective`] needs: config.yaml, the drop-ins, the unit's files.
pub fn probe_config(p: &mut Probe, unit: &str) {
    p.content.insert(CONFIG.to_owned());
    p.content_glob.insert(format!("{DROPINS}/*.yaml"));
    p.content_glob.insert(format!("{DROPINS}/*.yml"));
    p.content.extend(crate::k3s::unit::unit_files(unit));
}

/// A node's effective k3s configuration from a probe: config.yaml, then
/// (with `dropins`) the drop-ins in name order, then the unit's overriding
/// flags. `planned` puts a file khard is about to write in place of what
/// the probe read there.
pub fn effective(
    state: &RemoteState,
    unit: &str,
    planned: Option<(&str, &str)>,
    dropins: bool,
) -> Result<Effective, String> {
    let text = |path: &str| -> Option<String> {
        match planned {
            Some((target, content)) if target == path => Some(content.to_owned()),
            _ => file_text(state, path),
        }
    };
    let mut files: Vec<(String, String)> = Vec::new();
    if let Some(c) = text(CONFIG) {
        files.push((CONFIG.to_owned(), c));
    }
    if dropins {
        // k3s reads every drop-in; one khard could not read makes any
        // answer about the node's configuration a guess.
        let unread = [format!("{DROPINS}/*.yaml"), format!("{DROPINS}/*.yml")];
        if unread.iter().any(|g| state.unread.contains(g)) {
            return Err(format!(
                "a drop-in in {DROPINS}/ could not be read (a link, a name with a newline, or over 256 KiB); k3s reads it, so the node's configuration cannot be known"
            ));
        }
        let mut found: Vec<(String, String)> = state
            .content
            .iter()
            .filter(|(p, _)| {
                let lower = p.to_ascii_lowercase();
                p.starts_with(&format!("{DROPINS}/"))
                    && !p[DROPINS.len() + 1..].contains('/')
                    && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
                    && planned.is_none_or(|(target, _)| *p != target)
            })
            .map(|(p, b)| (p.clone(), String::from_utf8_lossy(b).into_owned()))
            .collect();
        if let Some((target, content)) = planned.filter(|(t, _)| *t != CONFIG) {
            found.push((target.to_owned(), content.to_owned()));
        }
        found.sort_by(|a, b| a.0.cmp(&b.0));
        files.extend(found);
    }
    let sources: Vec<Source> = files
        .iter()
        .map(|(file, text)| Source { file, text })
        .collect();
    let mut effective = merge(&sources)?;
    for file in crate::k3s::unit::unit_files(unit) {
        if let Some(text) = file_text(state, &file) {
            let flags = crate::k3s::unit::overriding_flags(&text);
            apply_cli(&mut effective, &file, &flags);
        }
    }
    Ok(effective)
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPERATOR: &str = "cluster-init: true\ntoken: K10abc\ntls-san: [lb.example]\nkube-apiserver-arg:\n  - 'oidc-issuer-url=https://id.example'\n";
    const WANTED: &str =
        "protect-kernel-defaults: true\nkube-apiserver-arg:\n  - 'audit-log-maxage=30'\n";

    fn src<'a>(file: &'a str, text: &'a str) -> Source<'a> {
        Source { file, text }
    }

    #[test]
    fn merges_like_k3s_plain_replaces_plus_appends() {
        let dropin = append_form(WANTED).unwrap();
        assert!(dropin.contains("kube-apiserver-arg+:"), "{dropin}");
        let e = merge(&[src("config.yaml", OPERATOR), src("99-khard.yaml", &dropin)]).unwrap();
        let Some(Setting::List(args)) = e.get("kube-apiserver-arg") else {
            panic!("{e:?}")
        };
        let items: Vec<&str> = args.iter().map(|(i, _)| i.as_str()).collect();
        assert_eq!(
            items,
            ["oidc-issuer-url=https://id.example", "audit-log-maxage=30"]
        );
        assert!(
            e.contains_key("cluster-init") && e.contains_key("tls-san") && e.contains_key("token")
        );
        assert!(conflicts(&e, WANTED, "99-khard.yaml").is_empty());
    }

    #[test]
    fn a_later_file_or_the_unit_that_weakens_is_named() {
        let dropin = append_form(WANTED).unwrap();
        let later =
            "kube-apiserver-arg:\n  - 'feature-gates=X=true'\nprotect-kernel-defaults: false\n";
        let e = merge(&[
            src("config.yaml", OPERATOR),
            src("99-khard.yaml", &dropin),
            src("zz-ops.yaml", later),
        ])
        .unwrap();
        let c = conflicts(&e, WANTED, "99-khard.yaml");
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c.iter()
                .any(|m| m.contains("zz-ops.yaml replaces the whole kube-apiserver-arg list"))
        );
        assert!(
            c.iter()
                .any(|m| m.contains("zz-ops.yaml sets protect-kernel-defaults: false"))
        );
        let mut e = merge(&[src("99-khard.yaml", &dropin)]).unwrap();
        apply_cli(
            &mut e,
            "k3s.service",
            &["--kube-apiserver-arg=audit-log-maxage=1".into()],
        );
        let c = conflicts(&e, WANTED, "99-khard.yaml");
        assert!(
            c[0].contains("k3s.service sets kube-apiserver-arg `audit-log-maxage=1`"),
            "{c:?}"
        );
    }

    #[test]
    fn older_releases_get_a_merge_that_keeps_the_operators_keys() {
        let merged = merge_into(OPERATOR, WANTED).unwrap();
        let e = merge(&[src("config.yaml", &merged)]).unwrap();
        for key in [
            "cluster-init",
            "token",
            "tls-san",
            "protect-kernel-defaults",
        ] {
            assert!(e.contains_key(key), "{key}: {merged}");
        }
        assert!(merged.contains("oidc-issuer-url") && merged.contains("audit-log-maxage=30"));
        assert_eq!(merge_into(&merged, WANTED).unwrap(), merged, "idempotent");
        let weaker = merge_into("kube-apiserver-arg: ['audit-log-maxage=1']\n", WANTED).unwrap();
        assert!(
            !weaker.contains("maxage=1") && weaker.contains("maxage=30"),
            "{weaker}"
        );
    }

    #[test]
    fn versions() {
        let v = |s| K3sVersion::parse(s).unwrap();
        assert!(v("v1.19.0+k3s1") < CONFIG_FILE_SINCE);
        assert!(v("v1.19.1+k3s1") >= CONFIG_FILE_SINCE);
        assert!(v("v1.21.0+k3s1") < DROPINS_SINCE);
    }
}
