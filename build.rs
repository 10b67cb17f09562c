//! Embeds `playbooks/` and `roles/` into the binary, so that `cargo install`
//! alone gives a working tool with the built-in CIS playbook.

use std::fmt::Write as _;
use std::path::Path;

fn collect(dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            collect(&path, out);
        } else {
            out.push(path.to_string_lossy().into_owned());
        }
    }
}

fn main() {
    let root = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let mut files = Vec::new();
    for top in ["playbooks", "roles"] {
        println!("cargo:rerun-if-changed={top}");
        collect(&Path::new(&root).join(top), &mut files);
    }
    let mut code = String::from("pub static FILES: &[(&str, &str)] = &[\n");
    for file in files {
        let rel = file.strip_prefix(&format!("{root}/")).unwrap_or(&file);
        writeln!(code, "    ({rel:?}, include_str!({file:?})),").unwrap();
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("embedded.rs");
    std::fs::write(out, code).unwrap();
}
