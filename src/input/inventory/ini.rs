//! Ansible's INI inventory: `[group]` sections of host lines with inline
//! variables, `[group:vars]`, `[group:children]`, and host ranges such as
//! `node[01:20]`. It builds the same model as the YAML form.

use serde_json::{Map, Value};

use crate::error::InputError;

/// One section's content, as parsed.
#[derive(Debug, Default)]
pub struct IniInventory {
    /// (group, host pattern, inline vars), in file order.
    pub hosts: Vec<(String, String, Map<String, Value>)>,
    pub children: Vec<(String, String)>,
    pub vars: Vec<(String, Map<String, Value>)>,
}

/// True when the text looks like an INI inventory rather than YAML.
pub fn looks_like_ini(text: &str) -> bool {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';') && *l != "---")
        .is_some_and(|l| l.starts_with('[') || (!l.contains(':') && !l.starts_with('-')))
}

/// A value as Ansible reads it from INI: numbers and booleans as such, the rest as text.
fn literal(raw: &str) -> Value {
    let unquoted = raw
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .or_else(|| raw.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')));
    if let Some(s) = unquoted {
        return Value::String(s.to_owned());
    }
    if let Ok(i) = raw.parse::<i64>() {
        return Value::from(i);
    }
    match raw {
        "true" | "True" => Value::Bool(true),
        "false" | "False" => Value::Bool(false),
        _ => Value::String(raw.to_owned()),
    }
}

/// Splits `a=1 b="x y"` into pairs; a quoted value stays a string.
fn pairs(line: &str) -> Result<Vec<(String, Value)>, String> {
    let words = crate::lang::words::split(line).map_err(|e| e.to_string())?;
    words
        .into_iter()
        .map(|w| {
            let (k, v) = w
                .text
                .split_once('=')
                .ok_or_else(|| format!("`{}` is not key=value", w.text))?;
            let value = if w.quoted {
                Value::String(v.to_owned())
            } else {
                literal(v)
            };
            Ok((k.to_owned(), value))
        })
        .collect()
}

pub fn parse(file: &str, text: &str) -> Result<IniInventory, InputError> {
    let mut inv = IniInventory::default();
    let mut section = ("ungrouped".to_owned(), "hosts");
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        let at = |msg: String| InputError::at(file, i + 1, 1, msg);
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(head) = line.strip_prefix('[') {
            let head = head
                .strip_suffix(']')
                .ok_or_else(|| at(format!("`{line}`: a section header ends with ]")))?;
            let (name, kind) = match head.split_once(':') {
                None => (head, "hosts"),
                Some((n, "vars")) => (n, "vars"),
                Some((n, "children")) => (n, "children"),
                Some((_, other)) => {
                    return Err(at(format!(
                        "unknown section kind `:{other}` (use :vars or :children)"
                    )));
                }
            };
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(at(format!("bad group name `{name}`")));
            }
            section = (name.to_owned(), kind);
            continue;
        }
        match section.1 {
            "hosts" => {
                let (host, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                let vars = pairs(rest).map_err(&at)?.into_iter().collect();
                inv.hosts.push((section.0.clone(), host.to_owned(), vars));
            }
            "children" => inv.children.push((section.0.clone(), line.to_owned())),
            _ => {
                let (k, v) = line
                    .split_once('=')
                    .ok_or_else(|| at(format!("`{line}` is not key=value")))?;
                // Group vars in INI are strings unless quoted otherwise, as in Ansible.
                let v = v.trim();
                let value = literal(v);
                let mut m = Map::new();
                m.insert(k.trim().to_owned(), value);
                inv.vars.push((section.0.clone(), m));
            }
        }
    }
    Ok(inv)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_k3s_ansible_ini() {
        let text = "[server]\n192.16.35.11 k3s_role=server\n\n[agent]\nnode[01:02] ansible_port=2222 note=\"a b\"\n\n[k3s_cluster:children]\nserver\nagent\n\n[all:vars]\nansible_user=debian\n";
        assert!(looks_like_ini(text));
        assert!(!looks_like_ini("k3s_cluster:\n  children:\n"));
        let inv = parse("inv.ini", text).unwrap();
        assert_eq!(inv.hosts.len(), 2);
        assert_eq!(inv.hosts[1].2["ansible_port"], 2222);
        assert_eq!(inv.hosts[1].2["note"], "a b");
        assert_eq!(
            inv.children,
            vec![
                ("k3s_cluster".into(), "server".into()),
                ("k3s_cluster".into(), "agent".into())
            ]
        );
        assert_eq!(inv.vars[0].1["ansible_user"], "debian");
        let err = parse("x.ini", "[a:bad]\n").unwrap_err();
        assert!(err.message.starts_with("x.ini:1:1:"), "{}", err.message);
    }
}
