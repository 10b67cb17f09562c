//! `khard inventory`: the hosts, groups and variables as khard resolved
//! them, in ansible-inventory's shapes (`--list` JSON, `--host` JSON,
//! `--graph` tree), so an operator can compare the two. Values that came
//! out of a vault are masked.

use serde_json::{Map, Value, json};

use super::Inventory;

/// What stands for a secret in the output.
pub const MASK: &str = "********";

/// A host's variables with every string a vault held masked.
fn masked(vars: &Map<String, Value>, secrets: &[String]) -> Value {
    fn mask(v: &Value, secrets: &[String]) -> Value {
        match v {
            Value::String(s)
                if secrets
                    .iter()
                    .any(|x| !x.is_empty() && s.contains(x.as_str())) =>
            {
                Value::from(MASK)
            }
            Value::Array(a) => Value::Array(a.iter().map(|v| mask(v, secrets)).collect()),
            Value::Object(o) => Value::Object(
                o.iter()
                    .map(|(k, v)| (k.clone(), mask(v, secrets)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }
    mask(&Value::Object(vars.clone()), secrets)
}

/// The children of a group in the order they were declared. Under `all`,
/// `ungrouped` first, then the groups no other group contains (as
/// ansible-core reconciles an inventory: an INI section that is also a
/// child of `[x:children]` is listed under x only).
fn children(inv: &Inventory, group: &str) -> Vec<String> {
    let mut out: Vec<String> = inv.groups[group].children.clone();
    if group == "all" {
        let nested = |c: &String| {
            inv.groups
                .iter()
                .any(|(name, g)| name != "all" && g.children.contains(c))
        };
        out.retain(|c| c != "ungrouped" && !nested(c));
        out.insert(0, "ungrouped".into());
    }
    out
}

/// ansible-inventory --list.
pub fn list(inv: &Inventory, secrets: &[String]) -> Value {
    let mut out = Map::new();
    let hostvars: Map<String, Value> = inv
        .hosts
        .iter()
        .map(|h| (h.name.clone(), masked(&h.vars, secrets)))
        .collect();
    out.insert("_meta".into(), json!({ "hostvars": hostvars }));
    for (name, g) in &inv.groups {
        let mut entry = Map::new();
        let kids = children(inv, name);
        if !kids.is_empty() {
            entry.insert("children".into(), kids.into());
        }
        if name != "all" && !g.hosts.is_empty() {
            entry.insert("hosts".into(), g.hosts.clone().into());
        }
        if !entry.is_empty() {
            out.insert(name.clone(), Value::Object(entry));
        }
    }
    Value::Object(out)
}

/// ansible-inventory --host HOST: its variables, or None for a host not in the inventory.
pub fn host(inv: &Inventory, name: &str, secrets: &[String]) -> Option<Value> {
    inv.host(name).map(|h| masked(&h.vars, secrets))
}

/// ansible-inventory --graph: `@group:` lines, children indented with `|--`.
pub fn graph(inv: &Inventory) -> String {
    fn walk(inv: &Inventory, group: &str, depth: usize, out: &mut String) {
        let pad = "  |".repeat(depth);
        if depth == 0 {
            out.push_str(&format!("@{group}:\n"));
        } else {
            out.push_str(&format!("{}--@{group}:\n", &pad[..pad.len()]));
        }
        for child in children(inv, group) {
            walk(inv, &child, depth + 1, out);
        }
        for h in &inv.groups[group].hosts {
            if group != "all" {
                out.push_str(&format!("{}  |--{h}\n", "  |".repeat(depth)));
            }
        }
    }
    let mut out = String::new();
    walk(inv, "all", 0, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(text: &str) -> Inventory {
        let dir = crate::testutil::TempDir::new();
        Inventory::load(&dir.file("hosts.yaml", text)).unwrap()
    }

    #[test]
    fn list_host_and_graph_in_ansible_inventorys_shapes() {
        let i = inv(
            "k3s_cluster:\n  children:\n    server:\n      hosts:\n        s1: {token: hunter2}\n    agent:\n      hosts:\n        a1:\n  vars:\n    k3s_version: v1.30.6+k3s1\n",
        );
        let l = list(&i, &["hunter2".into()]);
        assert_eq!(l["all"]["children"], json!(["ungrouped", "k3s_cluster"]));
        assert_eq!(l["k3s_cluster"]["children"], json!(["server", "agent"]));
        assert_eq!(l["server"]["hosts"], json!(["s1"]));
        assert_eq!(l["_meta"]["hostvars"]["s1"]["token"], MASK);
        assert_eq!(l["_meta"]["hostvars"]["a1"]["k3s_version"], "v1.30.6+k3s1");
        assert_eq!(host(&i, "s1", &[]).unwrap()["token"], "hunter2");
        assert!(host(&i, "nope", &[]).is_none());
        assert_eq!(
            graph(&i),
            "@all:\n  |--@ungrouped:\n  |--@k3s_cluster:\n  |  |--@server:\n  |  |  |--s1\n  |  |--@agent:\n  |  |  |--a1\n"
        );
    }
}
