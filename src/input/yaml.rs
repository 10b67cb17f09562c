//! YAML loading with errors that name file, line and column, suggest a fix
//! for misspelt keys, and keep the order of mappings.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde_json::Value;

use crate::error::{InputError, did_you_mean};
pub use crate::lang::yaml11::{Ordered, bool11, opt_bool11};

/// Parses `text` (the contents of `file`) into `T`, with YAML merge keys
/// (`<<: *defaults`) applied as PyYAML and so Ansible apply them (keys of
/// the mapping win over merged ones).
pub fn parse<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, InputError> {
    if has_merge_key(text) {
        return parse_merged(file, text);
    }
    serde_yaml::from_str(text).map_err(|e| {
        // A variable's own error (a !vault value that does not decrypt) is
        // placed by serde_yaml at its mapping: point at the variable's line.
        if let Some((line, column)) = variable_line(text, &e) {
            let mut message = e.to_string();
            if let Some(pos) = message.find(" at line ") {
                message.truncate(pos);
            }
            return InputError::at(file, line, column, message);
        }
        let mut err = located(file, &e);
        // serde_yaml says "cannot start any token" for a tab: name it.
        let line = e
            .location()
            .and_then(|l| text.lines().nth(l.line().saturating_sub(1)));
        if line.is_some_and(|l| l.contains('\t')) {
            err.message
                .push_str(" (the line holds a tab: YAML indents with spaces only)");
        }
        err
    })
}

/// Line and column of the variable an error names (`variable `NAME`: …`):
/// the first `NAME:` key after the place serde_yaml reported.
fn variable_line(text: &str, e: &serde_yaml::Error) -> Option<(usize, usize)> {
    let message = e.to_string();
    let name = message.split("variable `").nth(1)?.split('`').next()?;
    let from = e.location().map_or(0, |l| l.line().saturating_sub(1));
    text.lines()
        .enumerate()
        .skip(from)
        .find(|(_, l)| l.trim_start().starts_with(&format!("{name}:")))
        .map(|(i, l)| (i + 1, l.len() - l.trim_start().len() + 1))
}

/// A `<<` key somewhere: the text is read as a value first, merged, then
/// typed (serde_yaml 0.9 keeps `<<` as a plain key otherwise).
fn has_merge_key(text: &str) -> bool {
    text.lines().any(|l| {
        let t = l.trim_start().trim_start_matches("- ");
        t.starts_with("<<") && t[2..].trim_start().starts_with(':')
    })
}

fn parse_merged<T: DeserializeOwned>(file: &str, text: &str) -> Result<T, InputError> {
    let mut value: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| located(file, &e))?;
    value
        .apply_merge()
        .map_err(|e| InputError::in_file(file, format!("merge key (`<<`): {e}")))?;
    serde_yaml::from_value(value).map_err(|e| {
        // A typed error after merging has no position; the same error
        // without merging usually has one, and names the same key.
        match serde_yaml::from_str::<T>(text) {
            Err(located_err) if located_err.to_string() == e.to_string() => {
                located(file, &located_err)
            }
            _ => InputError::in_file(file, e),
        }
    })
}

/// Turns a serde_yaml error into "file:line:col: message", with a "did you
/// mean" hint for unknown keys.
pub fn located(file: &str, err: &serde_yaml::Error) -> InputError {
    let mut message = err.to_string();
    // serde_yaml appends " at line L column C"; we put the place in front instead.
    if let Some(pos) = message.find(" at line ") {
        message.truncate(pos);
    }
    if let Some(hint) = ansible_equivalent(&message) {
        message.push_str(&format!(" ({hint})"));
    } else if let Some(hint) = suggestion(&message) {
        message.push_str(&format!(" (did you mean `{hint}`?)"));
    }
    match err.location() {
        Some(loc) => InputError::at(file, loc.line(), loc.column(), message),
        None => InputError::in_file(file, message),
    }
}

/// Ansible's own arguments to the modules khard has under another shape
/// (ansible.builtin.file, ansible.posix.sysctl): what to write instead.
fn ansible_equivalent(message: &str) -> Option<&'static str> {
    let file = message.contains("`dest`") && message.contains("`content`");
    let sysctl = message.contains("`values`");
    let word = |w: &str| message.contains(&format!("unknown field `{w}`"));
    let variant = |w: &str| message.contains(&format!("unknown variant `{w}`"));
    if file && word("path") {
        Some(
            "Ansible's file module takes `path`; khard's `file` writes a whole file at `dest`, and its `directory` module makes folders at `path`",
        )
    } else if word("serial") && message.contains("`any_errors_fatal`") {
        Some(
            "khard batches what a batch is for, the restarts: servers one at a time, agents by k3s_agent_batch (--agent-batch), each batch gated on health; its other work runs on every host at once",
        )
    } else if variant("directory") || variant("touch") || variant("link") || variant("hard") {
        Some(
            "khard's `file` has `state: present` or `absent`; a folder is the `directory` module, a link is left to the node",
        )
    } else if sysctl && (word("name") || word("value")) {
        Some(
            "Ansible's sysctl sets one `name` to a `value`; khard's `sysctl` writes a whole file: `dest` and `values: { name: value }`",
        )
    } else if sysctl && word("sysctl_file") {
        Some("khard's `sysctl` names its file `dest`")
    } else if sysctl && (word("reload") || word("sysctl_set")) {
        Some("khard's `sysctl` always loads its file (sysctl -p) and checks the live values")
    } else {
        None
    }
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" messages.
fn suggestion(message: &str) -> Option<String> {
    let rest = message
        .split_once("unknown field `")
        .or_else(|| message.split_once("unknown variant `"))
        .map(|(_, r)| r)?;
    let (word, expected) = rest.split_once('`')?;
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    did_you_mean(word, candidates).map(str::to_owned)
}

/// Converts a YAML value into the JSON value model used for variables and templates.
pub fn to_json(value: serde_yaml::Value) -> Value {
    use serde_yaml::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                n.as_f64().map(Value::from).unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (scalar_key(k), to_json(v)))
                .collect(),
        ),
        Y::Tagged(tagged) => to_json(tagged.value),
    }
}

/// Like [`to_json`], decrypting `!vault` values (ansible-vault).
pub fn to_json_decrypting(value: serde_yaml::Value) -> Result<Value, String> {
    use serde_yaml::Value as Y;
    Ok(match value {
        Y::Tagged(t) if t.tag == "vault" => match t.value {
            Y::String(envelope) => Value::String(
                crate::input::vault::decrypt(&envelope)
                    .map_err(|e| format!("a !vault value: {e}"))?,
            ),
            _ => {
                return Err("a !vault value must be a string (`!vault |` and the envelope)".into());
            }
        },
        Y::Sequence(items) => Value::Array(
            items
                .into_iter()
                .map(to_json_decrypting)
                .collect::<Result<_, _>>()?,
        ),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| Ok((scalar_key(k), to_json_decrypting(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => to_json(other),
    })
}

fn scalar_key(key: serde_yaml::Value) -> String {
    match key {
        serde_yaml::Value::String(s) => s,
        other => serde_yaml::to_string(&other)
            .unwrap_or_default()
            .trim_end()
            .to_owned(),
    }
}

/// Variables as written in YAML: an ordered mapping of names to values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vars(pub serde_json::Map<String, Value>);

impl<'de> Deserialize<'de> for Vars {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let ordered = Ordered::<serde_yaml::Value>::deserialize(deserializer)?;
        let mut vars = serde_json::Map::new();
        for (k, v) in ordered.0 {
            let v = to_json_decrypting(v)
                .map_err(|e| serde::de::Error::custom(format!("variable `{k}`: {e}")))?;
            vars.insert(k, v);
        }
        Ok(Vars(vars))
    }
}

/// A scalar (string, number or bool) taken as its text.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar(pub String);

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match serde_yaml::Value::deserialize(deserializer)? {
            serde_yaml::Value::String(s) => Ok(Scalar(s)),
            serde_yaml::Value::Number(n) => Ok(Scalar(n.to_string())),
            serde_yaml::Value::Bool(b) => Ok(Scalar(b.to_string())),
            _ => Err(de::Error::custom("expected a string or a number")),
        }
    }
}

/// A string, or a list of strings (`notify: x` or `notify: [x, y]`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OneOrMany(pub Vec<String>);

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Numbers such as CIS control IDs (1.2.3 parses as a string, 4.2 as a float)
        // are accepted as their text.
        let value = serde_yaml::Value::deserialize(deserializer)?;
        let scalar = |v: &serde_yaml::Value| -> Option<String> {
            match v {
                serde_yaml::Value::String(s) => Some(s.clone()),
                serde_yaml::Value::Number(n) => Some(n.to_string()),
                serde_yaml::Value::Bool(b) => Some(b.to_string()),
                _ => None,
            }
        };
        if let Some(s) = scalar(&value) {
            return Ok(OneOrMany(vec![s]));
        }
        match value {
            serde_yaml::Value::Null => Ok(OneOrMany(Vec::new())),
            serde_yaml::Value::Sequence(items) => items
                .iter()
                .map(|v| {
                    scalar(v)
                        .ok_or_else(|| de::Error::custom("expected a string or a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(OneOrMany),
            _ => Err(de::Error::custom("expected a string or a list of strings")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Play {
        hosts: String,
        vars: Option<Vars>,
    }

    #[test]
    fn unknown_key_names_place_and_suggests() {
        let err = parse::<Vec<Play>>("site.yaml", "- hosts: all\n  vasr: {}\n").unwrap_err();
        assert!(err.message.starts_with("site.yaml:2:3:"), "{}", err.message);
        assert!(
            err.message.contains("unknown field `vasr`"),
            "{}",
            err.message
        );
        assert!(
            err.message.contains("did you mean `vars`?"),
            "{}",
            err.message
        );
    }

    #[test]
    fn ordered_keeps_order_and_refuses_duplicates() {
        let m: Ordered<u32> = serde_yaml::from_str("b: 1\na: 2\n").unwrap();
        assert_eq!(m.0, vec![("b".into(), 1), ("a".into(), 2)]);
        let err = parse::<Ordered<u32>>("x.yaml", "a: 1\na: 2\n").unwrap_err();
        assert!(err.message.contains("duplicate"), "{}", err.message);
        assert!(err.message.starts_with("x.yaml:"), "{}", err.message);
    }

    #[test]
    fn one_or_many_takes_numbers_as_text() {
        let v: OneOrMany = serde_yaml::from_str("[1.2.22, 4.2, x]").unwrap();
        assert_eq!(v.0, vec!["1.2.22", "4.2", "x"]);
    }
}

/// The 1-based line of each item of the top-level sequence in `text`, for
/// error messages about items that parsed but make no sense (serde_yaml does
/// not keep positions). Items are lines starting with `- ` at the indentation
/// of the first item.
pub fn item_lines(text: &str) -> Vec<usize> {
    let mut indent = None;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let depth = line.len() - trimmed.len();
        if !(trimmed.starts_with("- ") || trimmed == "-") {
            continue;
        }
        match indent {
            None => {
                indent = Some(depth);
                out.push(i + 1);
            }
            Some(d) if d == depth => out.push(i + 1),
            _ => {}
        }
    }
    out
}

/// The 1-based lines of the items of the list under `key:` (`tasks`,
/// `handlers`) of the mapping that starts at line `from` (a play): the
/// first such key after `from`, its items at their first item's
/// indentation, until a line less indented than them.
pub fn key_item_lines(text: &str, from: usize, key: &str) -> Vec<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let depth = |l: &str| l.len() - l.trim_start().len();
    let head = format!("{key}:");
    let Some(start) = (from.saturating_sub(1)..lines.len()).find(|&i| {
        let t = lines[i].trim_start().trim_start_matches("- ");
        t == head || t.starts_with(&format!("{head} "))
    }) else {
        return Vec::new();
    };
    let key_depth = depth(lines[start]);
    let mut item_depth = None;
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(start + 1) {
        let t = line.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let d = depth(line);
        if d < key_depth || (d == key_depth && !t.starts_with("- ")) {
            break;
        }
        if t.starts_with("- ") || t == "-" {
            match item_depth {
                None => {
                    item_depth = Some(d);
                    out.push(i + 1);
                }
                Some(id) if id == d => out.push(i + 1),
                Some(id) if d < id => break,
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod merge_tests {
    use super::*;

    #[test]
    fn merge_keys_apply_and_the_mappings_own_keys_win() {
        let text = "base: &base\n  k3s_role: agent\n  port: 22\nhost:\n  <<: *base\n  k3s_role: server\nlist:\n  - <<: [*base]\n    extra: 1\n";
        let v: serde_json::Value = parse("f.yaml", text).unwrap();
        assert_eq!(v["host"]["k3s_role"], "server");
        assert_eq!(v["host"]["port"], 22);
        assert!(v["host"].get("<<").is_none());
        assert_eq!(v["list"][0]["port"], 22);
        // A scalar to merge is an error naming the file.
        let e = parse::<serde_json::Value>("f.yaml", "a:\n  <<: 3\n").unwrap_err();
        assert!(e.to_string().starts_with("f.yaml: merge key"), "{e}");
        // Errors keep their place where the merge does not change them.
        let e = parse::<Vec<u32>>("f.yaml", "- <<: {}\n- x\n").unwrap_err();
        assert!(e.to_string().starts_with("f.yaml"), "{e}");
    }
}

#[cfg(test)]
mod variable_line_tests {
    use super::*;

    /// A vaulted value that cannot be decrypted is placed at its own line.
    #[test]
    fn a_variables_error_points_at_the_variable() {
        let text = "all:\n  vars:\n    a: 1\n    secret: !vault |\n      $ANSIBLE_VAULT;1.1;AES256\n      6162\n";
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct G {
            vars: Vars,
        }
        let e = parse::<std::collections::BTreeMap<String, G>>("inv.yml", text).unwrap_err();
        assert!(e.message.starts_with("inv.yml:4:5: "), "{}", e.message);
        assert!(
            e.message.contains("variable `secret`: a !vault value:"),
            "{}",
            e.message
        );
    }
}

#[cfg(test)]
mod key_item_line_tests {
    #[test]
    fn the_lines_of_a_plays_tasks_and_handlers() {
        let text = "- hosts: all\n  tasks:\n    - name: a\n      command: x\n\n    # note\n    - name: b\n      file: {}\n  handlers:\n  - name: h\n- hosts: b\n  tasks:\n  - name: c\n";
        assert_eq!(super::key_item_lines(text, 1, "tasks"), [3, 7]);
        assert_eq!(super::key_item_lines(text, 1, "handlers"), [10]);
        assert_eq!(super::key_item_lines(text, 11, "tasks"), [13]);
    }
}

#[cfg(test)]
mod item_line_tests {
    #[test]
    fn finds_top_level_items() {
        let text = "---\n# c\n- name: a\n  x:\n    - nested\n- name: b\n";
        assert_eq!(super::item_lines(text), vec![3, 6]);
    }
}

#[cfg(test)]
mod bool_tests {
    #[derive(serde::Deserialize)]
    struct T {
        #[serde(deserialize_with = "super::bool11")]
        b: bool,
    }

    #[test]
    fn yaml_1_1_booleans_as_ansible_reads_them() {
        for (text, want) in [
            ("yes", true),
            ("No", false),
            ("ON", true),
            ("off", false),
            ("true", true),
            ("y", true),
        ] {
            let t: T = serde_yaml::from_str(&format!("b: {text}")).unwrap();
            assert_eq!(t.b, want, "{text}");
        }
        assert!(serde_yaml::from_str::<T>("b: maybe").is_err());
    }
}
