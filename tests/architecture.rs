//! The promises of docs/architecture.md, checked on the source itself:
//! arrows between the parts of `src/` go one way only (no circle, none up
//! the layers), and the generic engine, planner and modules say nothing of
//! k3s (the domain reaches them through `domain::Domain`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The parts of `src/`, bottom first: a part may use only those before it
/// (docs/architecture.md draws the same order).
const LAYERS: &[&[&str]] = &[
    &[
        "error",
        "secrets",
        "shell",
        "terminal",
        "cli",
        "layered_vars",
    ],
    &["lang"],
    &["facts"],
    &["modules"],
    &["domain"],
    &["k3s"],
    &["audit"],
    &["input"],
    &["transport"],
    &["report"],
    &["plan"],
    &["engine"],
    &["settings"],
    &["app"],
    &["fuzz", "main", "lib", "testutil"],
];

/// Parts that must know nothing of k3s: its paths, roles, versions, flags.
const GENERIC: &[&str] = &["engine", "plan", "modules"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The part a file belongs to: its folder under src/, or its own name.
fn part(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel
        .components()
        .next()
        .unwrap()
        .as_os_str()
        .to_string_lossy();
    first.trim_end_matches(".rs").to_owned()
}

/// The code of a file without comments and without its unit tests.
fn code(text: &str) -> String {
    let text = match text.find("#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The parts named by `crate::x` paths, also inside `use crate::{x, y::z}`.
fn uses(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            for item in group.split(',') {
                let name = ident(item.trim());
                if !name.is_empty() {
                    out.insert(name);
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out
}

fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in all {
        let from = part(&src, &f);
        let used = uses(&code(&std::fs::read_to_string(&f).unwrap()));
        let entry = edges.entry(from.clone()).or_default();
        entry.extend(used.into_iter().filter(|u| *u != from));
    }
    edges
}

fn layer(part: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&part))
        .unwrap_or_else(|| panic!("src/{part} is in no layer of tests/architecture.rs"))
}

#[test]
fn every_arrow_goes_down_the_layers() {
    let mut up = Vec::new();
    for (from, tos) in graph() {
        for to in tos {
            if layer(&to) >= layer(&from) && !LAYERS[layer(&from)].contains(&"main") {
                up.push(format!("{from} -> {to}"));
            }
        }
    }
    assert!(up.is_empty(), "imports that run back up: {up:?}");
}

#[test]
fn the_import_graph_has_no_circle() {
    let g = graph();
    // Depth-first search; a node met again while on the stack closes a circle.
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = stack.iter().position(|s| s == n) {
            return Some(stack[i..].to_vec());
        }
        if !done.insert(n.to_owned()) {
            return None;
        }
        stack.push(n.to_owned());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, stack, done) {
                return Some(c);
            }
        }
        stack.pop();
        None
    }
    let mut done = BTreeSet::new();
    for n in g.keys() {
        let circle = visit(&g, n, &mut Vec::new(), &mut done);
        assert!(circle.is_none(), "a circle of imports: {circle:?}");
    }
}

#[test]
fn the_generic_engine_knows_nothing_of_k3s() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut found = Vec::new();
    for f in all
        .iter()
        .filter(|f| GENERIC.contains(&part(&src, f).as_str()))
    {
        let text = std::fs::read_to_string(f).unwrap();
        for (n, line) in text.lines().enumerate() {
            let l = line.to_ascii_lowercase();
            if ["k3s", "rancher", "kubelet", "apiserver", "cis_"]
                .iter()
                .any(|w| l.contains(w))
            {
                found.push(format!("{}:{}: {line}", f.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "k3s knowledge outside k3s/ and audit/:\n{}",
        found.join("\n")
    );
}

/// The checker itself sees what it must: an import up and a circle.
#[test]
fn the_checker_sees_imports_in_every_form() {
    let u = uses("use crate::a::b;\nuse crate::{c, d::e};\nlet x = crate::f::g();\n// crate::h\n");
    assert_eq!(
        u,
        ["a", "c", "d", "f", "h"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
    assert!(!code("// crate::h\nlet y = 1;").contains("crate::h"));
    assert!(layer("engine") > layer("modules"));
}
