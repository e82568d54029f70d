//! A check that the lower layers of the crate (see the crate docs, "Inside
//! the crate") use nothing above them: it reads their sources.

use std::path::{Path, PathBuf};

/// The modules above the shared segments: none of the checked files may
/// name one.
const ABOVE_SHM: &[&str] = &[
    "process",
    "sync",
    "sharedctypes",
    "connection",
    "queue",
    "pool",
    "manager",
    "shared_memory",
    "py",
    "wire",
    "__internal",
];

/// The lowest modules: these may not name the shared segments either.
const ABOVE_FOUNDATIONS: &[&str] = &["shm", "handle"];

fn src(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path)
}

fn rust_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(src(dir))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no sources in {dir}");
    files
}

/// The first module of every `crate::` path in `text` (comments left out),
/// including each one inside a `crate::{…}` group.
fn crate_modules(text: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '{' => depth += 1,
                        '}' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            let mut depth = 0;
            let mut item = String::new();
            for c in group[..end].chars().chain([',']) {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        let name: String = item
                            .trim()
                            .chars()
                            .take_while(|c| c.is_alphanumeric() || *c == '_')
                            .collect();
                        found.push(name);
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
        } else {
            found.push(
                rest.chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect(),
            );
        }
    }
    found
}

fn upward_uses(files: &[PathBuf], forbidden: &[&str]) -> Vec<String> {
    let mut bad = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file).unwrap();
        for module in crate_modules(&text) {
            if forbidden.contains(&module.as_str()) {
                bad.push(format!("{} uses crate::{module}", file.display()));
            }
        }
    }
    bad
}

#[test]
fn the_paths_of_a_source_are_found_grouped_or_not() {
    let text = "use crate::sys;\nuse crate::{error::Error, sync::{a, b}, process};\n// crate::pool\nx(crate::queue::f());";
    assert_eq!(
        crate_modules(text),
        ["sys", "error", "sync", "process", "queue"]
    );
}

#[test]
fn shm_and_the_layers_below_it_use_nothing_above_them() {
    let foundations: Vec<PathBuf> = [
        "error.rs",
        "deadline.rs",
        "liveness.rs",
        "fork_sync.rs",
        "codec.rs",
    ]
    .iter()
    .map(|f| src(f))
    .chain(rust_files("sys"))
    .collect();
    let below: Vec<&str> = ABOVE_SHM.iter().chain(ABOVE_FOUNDATIONS).copied().collect();
    let mut bad = upward_uses(&foundations, &below);
    bad.extend(upward_uses(&rust_files("shm"), ABOVE_SHM));
    assert!(bad.is_empty(), "upward uses:\n{}", bad.join("\n"));
}
