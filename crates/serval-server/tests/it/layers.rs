//! The server's modules are layered: each imports only from layers below its own. Declared once
//! here (and in `lib.rs`'s docs and ARCHITECTURE.md); this test reads every `crate::` path in
//! `src/` and fails on an import that points up or sideways, on a module missing from the list,
//! and on anything imported from the crate root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Top to bottom. Modules on one line are peers: they may not import each other.
const LAYERS: &[&[&str]] = &[
    &["http", "grpc", "sync", "triton_repo"],
    &["rollout"],
    &["conn"],
    &["state"],
    &["calls"],
    &["loader"],
    &["pipeline"],
    &["models"],
    &["auth"],
    &["table"],
    &["endpoint"],
    &["wire"],
    &["metrics"],
    &["offload", "memory"],
    &["error"],
    &["store_health", "config", "deadline"],
];

fn rank(module: &str) -> Option<usize> {
    LAYERS.iter().position(|layer| layer.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`None`: the crate root, `lib.rs`).
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let relative = file.strip_prefix(src).unwrap();
    let first = relative
        .components()
        .next()?
        .as_os_str()
        .to_str()?
        .to_string();
    match first.strip_suffix(".rs") {
        Some("lib") => None,
        Some(stem) => Some(stem.to_string()),
        None => Some(first),
    }
}

/// The first segment of every `crate::` path in `code` (comments skipped; `crate::{a, b::c}`
/// gives `a` and `b`).
fn crate_imports(code: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in code.lines() {
        let line = line.split("//").next().unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("crate::") {
            let before = rest[..at].chars().last();
            rest = &rest[at + "crate::".len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue; // e.g. `serval_crate::`
            }
            if let Some(group) = rest.strip_prefix('{') {
                let inner = group.split('}').next().unwrap_or("");
                for item in inner.split(',') {
                    let name = item.trim().split("::").next().unwrap_or("").trim();
                    if !name.is_empty() {
                        found.push(name.to_string());
                    }
                }
                continue;
            }
            let name: String = rest
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

#[test]
fn no_module_imports_from_a_layer_above_its_own() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut problems = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for file in &files {
        let Some(module) = module_of(&src, file) else {
            continue;
        };
        *seen.entry(module.clone()).or_default() += 1;
        let Some(own) = rank(&module) else {
            problems.push(format!("module '{module}' is not in LAYERS"));
            continue;
        };
        let code = std::fs::read_to_string(file).unwrap();
        for imported in crate_imports(&code) {
            if imported == module {
                continue;
            }
            let shown = file.strip_prefix(&src).unwrap().display();
            match rank(&imported) {
                None => problems.push(format!(
                    "{shown} uses crate::{imported}, which is not a layered module (nothing is \
                     imported from the crate root)"
                )),
                Some(theirs) if theirs <= own => problems.push(format!(
                    "{shown} (layer {own}: {module}) imports crate::{imported} (layer {theirs})"
                )),
                Some(_) => {}
            }
        }
    }
    for layer in LAYERS {
        for module in *layer {
            if !seen.contains_key(*module) {
                problems.push(format!("LAYERS names '{module}', which has no source file"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_reader_finds_every_form_of_crate_path() {
    let code = "use crate::a::b;\nuse crate::{c, d::e};\nlet x = crate::f::g();\n// crate::h\n";
    assert_eq!(crate_imports(code), ["a", "c", "d", "f"]);
}
