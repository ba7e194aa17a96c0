//! The library's modules form layers, and every import points down: a
//! stage uses what is below it, never what is above it, so there is no
//! import cycle between stage folders. This reads `crate::<module>` paths
//! in the library's production code (test-only items are skipped) and
//! checks each against the layer table below, which is the diagram in
//! docs/architecture.md. Inside a folder, no two files import each other,
//! directly or around a loop (`super::` included); the core layer is a
//! crate of its own (`runner/core`), so it cannot use a stage at all.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use modules of lower layers only (and its
/// own folder); modules of one layer do not use each other.
const LAYERS: &[&[&str]] = &[
    &["events", "input", "text", "teardown", "cache", "process"],
    &["build"],
    &["setup"],
    &["vm"],
    &["image"],
    &["workspace"],
    &["steps"],
    &["suite"],
    &["record"],
    &["guest"],
    &["run"],
    &["explore"],
    &["coverage"],
    &["mutants"],
    &["report", "ui"],
];

fn layer(m: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&m))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The text without comments and without the items marked `#[cfg(test)]`
/// (a `use` up to its `;`, anything else up to its closing brace).
fn production_code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i].trim_start();
        if l.starts_with("#[cfg(test)]") {
            // Skip the attributed item.
            i += 1;
            let mut depth = 0i32;
            let mut opened = false;
            while i < lines.len() {
                let t = lines[i];
                if !opened && t.trim_end().ends_with(';') && !t.contains('{') {
                    i += 1;
                    break;
                }
                for c in t.chars() {
                    match c {
                        '{' => {
                            depth += 1;
                            opened = true;
                        }
                        '}' => depth -= 1,
                        _ => {}
                    }
                }
                i += 1;
                if opened && depth <= 0 {
                    break;
                }
            }
            continue;
        }
        if !l.starts_with("//") {
            out.push_str(lines[i]);
            out.push('\n');
        }
        i += 1;
    }
    out
}

/// (module, module it uses, file) for every `crate::<module>` path.
fn imports(src: &Path) -> Vec<(String, String, PathBuf)> {
    let re = regex::Regex::new(r"crate::([a-z_]+)").unwrap();
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let mut v = Vec::new();
    for f in files {
        let rel = f.strip_prefix(src).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy()
            .trim_end_matches(".rs")
            .to_string();
        // The binary's own modules and the crate root are above every layer.
        if ["cli", "main", "lib"].contains(&top.as_str()) {
            continue;
        }
        let code = production_code(&std::fs::read_to_string(&f).unwrap());
        for c in re.captures_iter(&code) {
            let used = c[1].to_string();
            if used != top {
                v.push((top.clone(), used, rel.to_path_buf()));
            }
        }
    }
    v
}

#[test]
fn every_import_points_down_the_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let all = imports(&src);
    assert!(
        all.len() > 50,
        "{} imports found: the scan is broken",
        all.len()
    );
    let mut bad = BTreeSet::new();
    for (from, to, file) in &all {
        match (layer(from), layer(to)) {
            (None, _) => {
                bad.insert(format!("{from} ({}) is in no layer", file.display()));
            }
            (_, None) => {
                bad.insert(format!("{to} (used by {}) is in no layer", file.display()));
            }
            (Some(a), Some(b)) if b >= a => {
                bad.insert(format!(
                    "{} uses crate::{to}: {from} is on layer {a}, {to} on layer {b}",
                    file.display()
                ));
            }
            _ => {}
        }
    }
    assert!(bad.is_empty(), "imports that point up or sideways:\n{}", {
        let v: Vec<String> = bad.into_iter().collect();
        v.join("\n")
    });
}

#[test]
fn the_scan_sees_an_upward_import_and_skips_test_items() {
    let code = "use crate::vm::Vm;\n\
                // crate::report in a comment\n\
                #[cfg(test)]\n\
                use crate::report::x;\n\
                #[cfg(test)]\n\
                mod tests {\n    use crate::run::y;\n    fn f() { if true { } }\n}\n\
                fn g() -> crate::record::CaseResult { todo!() }\n";
    let kept = production_code(code);
    assert!(kept.contains("crate::vm::Vm"), "{kept}");
    assert!(kept.contains("crate::record::CaseResult"), "{kept}");
    assert!(!kept.contains("crate::report"), "{kept}");
    assert!(!kept.contains("crate::run"), "{kept}");
    // An upward use is one the layer table refuses.
    assert!(layer("record") > layer("vm"));
    assert!(layer("report") > layer("run"));
}

/// The files of folder `dir` (by stem, `mod.rs` left out: a folder's
/// root declares its files and they use what it re-exports) and, for
/// each, the sibling files it names (`crate::<folder>::<file>` or
/// `super::<file>`) in production code.
fn sibling_imports(src: &Path, dir: &str) -> BTreeMap<String, BTreeSet<String>> {
    // A folder of the coexist crate names its siblings `crate::<folder>::`;
    // a crate of its own (`.`, its src/) names them `crate::`.
    let prefix = if dir == "." {
        "crate".to_string()
    } else {
        format!("crate::{dir}")
    };
    let re = regex::Regex::new(&format!(r"(?:{prefix}|super)::(\{{[^}}]*\}}|[a-z_]+)")).unwrap();
    let word = regex::Regex::new(r"\b[a-z_]+\b").unwrap();
    let files: BTreeMap<String, PathBuf> = std::fs::read_dir(src.join(dir))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .map(|p| (p.file_stem().unwrap().to_string_lossy().into_owned(), p))
        .filter(|(stem, _)| stem != "mod" && stem != "lib")
        .collect();
    let mut g = BTreeMap::new();
    for (stem, p) in &files {
        let code = production_code(&std::fs::read_to_string(p).unwrap());
        let used: BTreeSet<String> = re
            .captures_iter(&code)
            .flat_map(|c| {
                word.find_iter(&c[1])
                    .map(|m| m.as_str().to_string())
                    .collect::<Vec<_>>()
            })
            .filter(|w| w != stem && files.contains_key(w))
            .collect();
        g.insert(stem.clone(), used);
    }
    g
}

/// A cycle in `g`, if it has one (as the path that closes it).
fn cycle(g: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        g: &BTreeMap<String, BTreeSet<String>>,
        n: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == n) {
            let mut c = path[i..].to_vec();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(n) {
            return None;
        }
        path.push(n.to_string());
        for m in g.get(n).into_iter().flatten() {
            if let Some(c) = visit(g, m, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(n.to_string());
        None
    }
    let mut done = BTreeSet::new();
    g.keys()
        .find_map(|n| visit(g, n, &mut Vec::new(), &mut done))
}

#[test]
fn no_import_loop_between_the_files_of_a_folder() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut loops = Vec::new();
    let mut edges = 0;
    for e in std::fs::read_dir(&src).unwrap().flatten() {
        if !e.path().is_dir() {
            continue;
        }
        let dir = e.file_name().to_string_lossy().into_owned();
        let g = sibling_imports(&src, &dir);
        edges += g.values().map(BTreeSet::len).sum::<usize>();
        if let Some(c) = cycle(&g) {
            loops.push(format!("{dir}/: {}", c.join(" -> ")));
        }
    }
    assert!(
        edges > 20,
        "{edges} sibling imports found: the scan is broken"
    );
    assert!(loops.is_empty(), "import loops:\n{}", loops.join("\n"));
}

#[test]
fn the_loop_check_sees_a_loop() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("kbuild", vec!["source", "manifest"]),
        ("source", vec!["prebuilt"]),
        ("prebuilt", vec!["kbuild"]),
        ("manifest", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(
        cycle(&g).unwrap(),
        ["kbuild", "source", "prebuilt", "kbuild"]
    );
    let mut acyclic = g.clone();
    acyclic.get_mut("prebuilt").unwrap().clear();
    assert_eq!(cycle(&acyclic), None);
}
