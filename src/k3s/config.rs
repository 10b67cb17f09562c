//! The effective k3s configuration of a node, as k3s itself computes it
//! (`pkg/configfilearg`; rules K1–K14 of
//! docs/research/k3s-config-semantics.md, each with a test in
//! tests/k3s_semantics.rs): the config file k3s reads (K1), then the drop-ins
//! of `<file>.d/` whose names end `.yaml`/`.yml` in any case, dot files
//! included, in byte order (K4); a plain key replaces what came before, `key+`
//! appends (and sets an unset key), YAML 1.1 as yaml.v2 reads it (K6, K7);
//! then the flags on the unit's command line, appended after the config's
//! for list flags, the last one winning for the others (K9, K11).
//! One function, used by the config task's diff, its conflict check, the
//! cross-server check of critical flags and the audit.

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
/// The first release that reads config.yaml.d/ drop-ins (K5).
pub const DROPINS_READ_SINCE: K3sVersion = K3sVersion::new(1, 21, 0);
/// The first release whose drop-ins may append with `key+` (K5): khard
/// writes a drop-in from here on, and merges into config.yaml before.
pub const DROPINS_SINCE: K3sVersion = K3sVersion::new(1, 21, 1);

/// A scalar as k3s passes it on: strings trimmed (K6).
fn scalar_text(v: &serde_yaml::Value) -> Option<String> {
    match v {
        serde_yaml::Value::String(s) => Some(s.trim().to_owned()),
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

/// A YAML mapping's entries in order, duplicate keys kept (yaml.v2 reads a
/// mapping into a MapSlice; k3s then lets the later entry win, K6).
struct Entries(Vec<(serde_yaml::Value, serde_yaml::Value)>);

impl<'de> serde::Deserialize<'de> for Entries {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Entries;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a mapping of k3s flags")
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_none<E: serde::de::Error>(self) -> Result<Entries, E> {
                Ok(Entries(Vec::new()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> Result<Entries, A::Error> {
                let mut out = Vec::new();
                while let Some(entry) = m.next_entry()? {
                    out.push(entry);
                }
                Ok(Entries(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// The first YAML document of a file as k3s reads it (K6: only the first
/// document counts).
fn entries(file: &str, text: &str) -> Result<Vec<(serde_yaml::Value, serde_yaml::Value)>, String> {
    use serde::Deserialize;
    // A node's file: bounded before the parser sees it.
    crate::lang::yaml_bounds::check(text).map_err(|e| format!("{file}: {e}"))?;
    // A file of nothing but comments is an empty configuration.
    let blank = text
        .lines()
        .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#') || l.trim() == "---");
    let Some(doc) = serde_yaml::Deserializer::from_str(text)
        .next()
        .filter(|_| !blank)
    else {
        return Ok(Vec::new());
    };
    match Entries::deserialize(doc) {
        Ok(e) => Ok(e.0),
        Err(e) if e.to_string().contains("a mapping of k3s flags") => {
            Err(format!("{file}: not a mapping of k3s flags"))
        }
        Err(e) => Err(format!("{file}: not valid YAML: {e}")),
    }
}

/// YAML 1.1's booleans (yaml.v2): unquoted `yes`, `on`, `y` … are true.
/// serde_yaml reads YAML 1.2, where they are text: for k3s's bool flags
/// they are read as yaml.v2 would.
fn yaml11_bool(name: &str, value: &str) -> Option<bool> {
    if !crate::k3s::launch::is_bool_flag(name) {
        return None;
    }
    match value {
        "y" | "Y" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "true" | "True" | "TRUE" => {
            Some(true)
        }
        "n" | "N" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "false" | "False" | "FALSE" => {
            Some(false)
        }
        _ => None,
    }
}

/// Merges the files in order, as k3s does (K7): a plain key replaces what
/// came before, `key+` appends to it (and sets it when unset; with no value
/// it adds nothing). A file that is not a YAML mapping is an error naming it
/// (k3s itself would refuse to start).
pub fn merge(sources: &[Source]) -> Result<Effective, String> {
    let mut out = Effective::new();
    for s in sources {
        for (k, v) in entries(s.file, s.text)? {
            let Some(key) = scalar_text(&k) else { continue };
            let (name, append) = match key.strip_suffix('+') {
                Some(n) => (n.to_owned(), true),
                None => (key, false),
            };
            let from = s.file.to_owned();
            let new_items = || -> Vec<(String, String)> {
                match &v {
                    serde_yaml::Value::Null => Vec::new(),
                    v => items(v).into_iter().map(|i| (i, from.clone())).collect(),
                }
            };
            // `+` on a flag that is no list repeats the flag: the last wins (K7).
            let append = append && is_list_flag(&name);
            let setting = match (out.remove(&name), append, &v) {
                (Some(old), true, _) => {
                    let mut list = match old {
                        Setting::List(l) => l,
                        Setting::Scalar { value, from } => vec![(value, from)],
                    };
                    list.extend(new_items());
                    Setting::List(list)
                }
                (None, true, serde_yaml::Value::Null) => continue,
                (None, true, _) | (_, _, serde_yaml::Value::Sequence(_)) => {
                    Setting::List(new_items())
                }
                (_, _, value) => {
                    let text = scalar_text(value).unwrap_or_default();
                    Setting::Scalar {
                        value: yaml11_bool(&name, &text).map_or(text, |b| b.to_string()),
                        from,
                    }
                }
            };
            out.insert(name, setting);
        }
    }
    Ok(out)
}

/// Whether k3s holds a flag as a list (urfave/cli StringSlice): the
/// components' `*-arg` flags and the repeatable node and TLS settings.
pub fn is_list_flag(name: &str) -> bool {
    name.ends_with("-arg")
        || matches!(
            name,
            "tls-san" | "node-label" | "node-taint" | "disable" | "etcd-arg"
        )
}

/// The command line of the unit (K9, K11): a list flag's items are appended
/// after the config files' (k3s puts the config flags first and urfave/cli
/// appends every occurrence); for any other flag the last occurrence wins.
pub fn apply_cli(effective: &mut Effective, flags: &[(String, String, String)]) {
    for (name, value, from) in flags {
        if is_list_flag(name) {
            let item = (value.clone(), from.clone());
            match effective.remove(name) {
                Some(Setting::List(mut l)) => {
                    l.push(item);
                    effective.insert(name.clone(), Setting::List(l));
                }
                Some(Setting::Scalar { value: v, from: f }) => {
                    effective.insert(name.clone(), Setting::List(vec![(v, f), item]));
                }
                None => {
                    effective.insert(name.clone(), Setting::List(vec![item]));
                }
            }
        } else {
            effective.insert(
                name.clone(),
                Setting::Scalar {
                    value: value.clone(),
                    from: from.clone(),
                },
            );
        }
    }
}

/// Hidden aliases that fill the same list (K14): `kube-controller-arg` is
/// `kube-controller-manager-arg`, `kube-cloud-controller-arg` is
/// `kube-cloud-controller-manager-arg`. Folded in after the canonical
/// name's items.
fn fold_aliases(effective: &mut Effective) {
    for (alias, name) in [
        ("kube-controller-arg", "kube-controller-manager-arg"),
        (
            "kube-cloud-controller-arg",
            "kube-cloud-controller-manager-arg",
        ),
    ] {
        let Some(Setting::List(extra)) = effective.remove(alias) else {
            continue;
        };
        let mut list = match effective.remove(name) {
            Some(Setting::List(l)) => l,
            Some(Setting::Scalar { value, from }) => vec![(value, from)],
            None => Vec::new(),
        };
        list.extend(extra);
        effective.insert(name.to_owned(), Setting::List(list));
    }
}

/// An item of a `*-arg` list as k3s hands it to the component (K13):
/// exactly one leading `--` is dropped and the item split at its first
/// `=`; `name+=v` and `name-=v` still set `name`. Returns (name, value).
pub fn arg_item(item: &str) -> (String, String) {
    let item = item.trim();
    let item = item.strip_prefix("--").unwrap_or(item);
    let (name, value) = item.split_once('=').unwrap_or((item, ""));
    let name = name.strip_suffix(['+', '-']).unwrap_or(name);
    (name.to_owned(), value.to_owned())
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
    crate::lang::yaml_bounds::check(existing).map_err(|e| format!("config.yaml: {e}"))?;
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
                    let (flag, want) = arg_item(&item);
                    let last = list.iter().rev().find(|(i, _)| arg_item(i).0 == flag);
                    match last {
                        Some((i, _)) if arg_item(i).1 == want => {}
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
                let want = yaml11_bool(name, &want).map_or(want, |b| b.to_string());
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

/// k3s's default config file.
pub const CONFIG: &str = crate::k3s::launch::DEFAULT_CONFIG;

/// A file the probe brought back, as text.
pub fn file_text(state: &RemoteState, path: &str) -> Option<String> {
    state
        .content
        .get(path)
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

/// The globs of the drop-ins k3s reads beside `config` (K4): names ending
/// `.yaml` or `.yml` in any case, dot files included.
pub fn dropin_globs(config: &str) -> Vec<String> {
    let d = format!("{config}.d");
    let (yaml, yml) = ("[yY][aA][mM][lL]", "[yY][mM][lL]");
    vec![
        format!("{d}/*.{yaml}"),
        format!("{d}/*.{yml}"),
        format!("{d}/.*.{yaml}"),
        format!("{d}/.*.{yml}"),
        format!("{d}/.{yaml}"),
        format!("{d}/.{yml}"),
    ]
}

/// The probe that [`effective`] needs: the config file khard expects k3s
/// to read, its drop-ins, and how systemd starts the unit.
pub fn probe_config(p: &mut Probe, unit: &str, config: &str) {
    p.content.insert(config.to_owned());
    p.content_glob.extend(dropin_globs(config));
    crate::k3s::launch::probe(p, unit);
}

/// The configuration of a k3s that reads no config file (`--config=`, or a
/// release before v1.19.1): its command line, then its environment.
pub fn command_line_only(launch: &crate::k3s::launch::Launch) -> Effective {
    let mut e = Effective::new();
    apply_cli(&mut e, &launch.flags);
    add_env_defaults(&mut e, launch);
    fold_aliases(&mut e);
    e
}

/// The environment gives defaults: what the files and the command line did
/// not set (K10).
fn add_env_defaults(effective: &mut Effective, launch: &crate::k3s::launch::Launch) {
    for (name, value, from) in &launch.env_flags {
        effective
            .entry(name.clone())
            .or_insert_with(|| Setting::Scalar {
                value: value.clone(),
                from: from.clone(),
            });
    }
}

/// A node's effective k3s configuration from a probe: the config file,
/// then (with `dropins`) the drop-ins in name order, then the unit's
/// command line. `config` is the file khard read as k3s's; when the unit
/// makes k3s read another one (K3S_CONFIG_FILE, --config), or none, the
/// configuration cannot be known from what khard read, and that is the
/// error. `planned` puts a file khard is about to write in place of what
/// the probe read there.
pub fn effective(
    state: &RemoteState,
    unit: &str,
    config: &str,
    planned: Option<(&str, &str)>,
    dropins: bool,
) -> Result<Effective, String> {
    let launch = crate::k3s::launch::Launch::from_state(state, unit);
    if !launch.unread.is_empty() {
        return Err(format!(
            "the {unit} service needs files khard could not read ({}); its command line cannot be known",
            launch.unread.join(", ")
        ));
    }
    let set_in = launch.files.join(", ");
    // No unit (k3s not installed as one): nothing says where k3s reads, and
    // the configured file stands.
    if !launch.files.is_empty() {
        match launch.config_file.as_deref() {
            None => {
                return Err(format!(
                    "the {unit} service starts k3s with `--config=` ({set_in}): k3s reads no config file, so no hardening written to one takes effect; remove it"
                ));
            }
            Some(f) if f != config => {
                return Err(format!(
                    "the {unit} service makes k3s read its configuration from {f} (K3S_CONFIG_FILE or --config, {set_in}), not {config}: set k3s_config_file: {f} for this host, so that khard reads and writes where k3s does"
                ));
            }
            Some(_) => {}
        }
    }
    let text = |path: &str| -> Option<String> {
        match planned {
            Some((target, content)) if target == path => Some(content.to_owned()),
            _ => file_text(state, path),
        }
    };
    let mut files: Vec<(String, String)> = Vec::new();
    if let Some(c) = text(config) {
        files.push((config.to_owned(), c));
    }
    if dropins {
        // k3s reads every drop-in; one khard could not read makes any
        // answer about the node's configuration a guess.
        let globs = dropin_globs(config);
        if globs.iter().any(|g| state.unread.contains(g)) {
            return Err(format!(
                "a drop-in in {config}.d/ could not be read (a link, a name with a newline, or over 256 KiB); k3s reads it, so the node's configuration cannot be known"
            ));
        }
        let folder = format!("{config}.d/");
        let mut found: Vec<(String, String)> = state
            .content
            .iter()
            .filter(|(p, _)| {
                let lower = p.to_ascii_lowercase();
                p.starts_with(&folder)
                    && !p[folder.len()..].contains('/')
                    && (lower.ends_with(".yaml") || lower.ends_with(".yml"))
                    && planned.is_none_or(|(target, _)| *p != target)
            })
            .map(|(p, b)| (p.clone(), String::from_utf8_lossy(b).into_owned()))
            .collect();
        if let Some((target, content)) = planned.filter(|(t, _)| *t != config) {
            found.push((target.to_owned(), content.to_owned()));
        }
        // Byte order of the names, as Go sorts strings.
        found.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        files.extend(found);
    }
    let sources: Vec<Source> = files
        .iter()
        .map(|(file, text)| Source { file, text })
        .collect();
    let mut effective = merge(&sources)?;
    apply_cli(&mut effective, &launch.flags);
    add_env_defaults(&mut effective, &launch);
    fold_aliases(&mut effective);
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
        let item = |v: &str| {
            (
                "kube-apiserver-arg".to_owned(),
                v.to_owned(),
                "k3s.service".to_owned(),
            )
        };
        apply_cli(&mut e, &[item("audit-log-maxage=1")]);
        let c = conflicts(&e, WANTED, "99-khard.yaml");
        assert!(
            c[0].contains("k3s.service sets kube-apiserver-arg `audit-log-maxage=1`"),
            "{c:?}"
        );
        // An item on the command line is appended (K9): khard's stays.
        let mut e = merge(&[src("99-khard.yaml", &dropin)]).unwrap();
        apply_cli(&mut e, &[item("max-requests-inflight=800")]);
        assert!(conflicts(&e, WANTED, "99-khard.yaml").is_empty());
        // Items written as k3s normalises them still weaken (K13).
        for weak in [
            "--audit-log-maxage=1",
            "audit-log-maxage+=1",
            "  audit-log-maxage=1",
        ] {
            let mut e = merge(&[src("99-khard.yaml", &dropin)]).unwrap();
            apply_cli(&mut e, &[item(weak)]);
            assert_eq!(conflicts(&e, WANTED, "99-khard.yaml").len(), 1, "{weak}");
        }
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
